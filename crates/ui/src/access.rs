//! Project roles (owner > admin > editor > viewer) and the one check every
//! project page and action goes through.

use sqlx::Row;

use crate::UiState;
use crate::error::{UiError, UiResult};
use crate::session::User;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
    Owner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// A project as the pages show it, with the visitor's role in it.
#[derive(Debug, Clone)]
pub struct ProjectAccess {
    pub id: String,
    pub name: String,
    pub role: Role,
}

impl ProjectAccess {
    pub fn can_edit(&self) -> bool {
        self.role >= Role::Editor
    }

    /// Refuses an action that needs at least `min`.
    pub fn require(&self, min: Role) -> UiResult<()> {
        if self.role >= min {
            Ok(())
        } else {
            Err(UiError::Forbidden(format!(
                "Your role in this project is {}; this needs {} or above.",
                self.role.as_str(),
                min.as_str()
            )))
        }
    }
}

/// The visitor's access to project `project_id`. Superusers are owners of
/// every project; anyone else needs a `project_users` row. A project the
/// visitor cannot see answers "not found", so ids cannot be probed.
pub async fn project_access(
    state: &UiState,
    user: &User,
    project_id: &str,
) -> UiResult<ProjectAccess> {
    let row = sqlx::query(
        "SELECT p.id, p.name, pu.role FROM projects p \
         LEFT JOIN project_users pu ON pu.project_id = p.id AND pu.user_id = $2 \
         WHERE p.id = $1",
    )
    .bind(project_id)
    .bind(&user.id)
    .fetch_optional(state.pool())
    .await?
    .ok_or(UiError::NotFound)?;
    let role = if user.is_superuser {
        Role::Owner
    } else {
        let r: Option<String> = row.try_get("role")?;
        r.as_deref()
            .and_then(Role::parse)
            .ok_or(UiError::NotFound)?
    };
    Ok(ProjectAccess {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role,
    })
}
