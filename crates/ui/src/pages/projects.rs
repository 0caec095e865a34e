//! The project list and a project's overview.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::Nav;
use crate::UiState;
use crate::access::project_access;
use crate::error::{UiResult, html};
use crate::queries::{self, ProjectRow, WorkflowRow};
use crate::session::User;

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    nav: Option<Nav>,
    projects: Vec<ProjectRow>,
}

pub async fn list(State(state): State<UiState>, user: User) -> UiResult<Response> {
    let projects = queries::projects_for(state.pool(), &user.id, user.is_superuser).await?;
    html(ProjectsPage {
        nav: Nav::of(&user),
        projects,
    })
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectPage {
    nav: Option<Nav>,
    project_id: String,
    project_name: String,
    role: &'static str,
    workflows: Vec<WorkflowRow>,
}

pub async fn show(
    State(state): State<UiState>,
    user: User,
    Path(pid): Path<String>,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    let workflows = queries::workflows_of(state.pool(), &p.id).await?;
    html(ProjectPage {
        nav: Nav::of(&user),
        project_id: p.id,
        project_name: p.name,
        role: p.role.as_str(),
        workflows,
    })
}
