//! One module per area of the UI; each handler checks the session, the
//! visitor's role and (for forms) the CSRF token before doing anything.

pub mod assets;
pub mod auth;
pub mod credentials;
pub mod history;
pub mod members;
pub mod projects;
pub mod queue;
pub mod runs;
pub mod workflows;

use crate::session::AnyUser;

/// The header's signed-in part, shared by every page template.
pub struct Nav {
    pub email: String,
    pub csrf: String,
    pub is_superuser: bool,
}

impl Nav {
    pub fn of(user: &AnyUser) -> Option<Nav> {
        Some(Nav {
            email: user.email.clone(),
            csrf: user.csrf.clone(),
            is_superuser: user.is_superuser,
        })
    }
}
