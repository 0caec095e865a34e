//! gabbro's web UI: plain server-rendered HTML (askama templates, escaped by
//! default) with a little vanilla JavaScript, no front-end build.
//!
//! The server merges [`router`] into its own router. Pages read and write the
//! database through an [`sqlx::AnyPool`] with portable SQL (the schema in
//! `crates/store/migrations`), so one code path serves SQLite and PostgreSQL.
//!
//! Pages: sign-in and password change, projects, workflow diagram, job
//! editor, triggers on/off, history with rerun, run inspector with live logs
//! and retry, credentials, queue dashboard. See `docs/ui.md`.

pub mod access;
pub mod diagram;
pub mod error;
pub mod escape;
pub mod forms;
pub mod jsonfmt;
mod pages;
pub mod password;
pub mod queries;
pub mod search;
pub mod session;
pub mod throttle;
pub mod time;
pub mod vault;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use sqlx::AnyPool;

pub use password::{hash_password, verify_password};
pub use search::spawn_indexer;

/// A worker connected to this orchestrator, as the queue dashboard shows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub name: String,
    pub capacity: u32,
    pub active_runs: u32,
}

type Hook = Arc<dyn Fn() + Send + Sync>;
type WorkersHook = Arc<dyn Fn() -> Vec<WorkerInfo> + Send + Sync>;

struct Inner {
    pool: AnyPool,
    encryption_key: Option<[u8; 32]>,
    secure_cookies: bool,
    run_enqueued: Option<Hook>,
    workers: Option<WorkersHook>,
    throttle: Arc<throttle::SignInThrottle>,
}

/// Everything the pages need; cheap to clone.
#[derive(Clone)]
pub struct UiState {
    inner: Arc<Inner>,
}

impl UiState {
    /// `encryption_key` is the credentials key (the server's
    /// `--encryption-key`); without it credential pages refuse to save.
    pub fn new(pool: AnyPool, encryption_key: Option<[u8; 32]>) -> Self {
        UiState {
            inner: Arc::new(Inner {
                pool,
                encryption_key,
                secure_cookies: false,
                run_enqueued: None,
                workers: None,
                throttle: Arc::default(),
            }),
        }
    }

    /// A state whose pool connects on first use to `db_url` (the same URL
    /// the store opened: `sqlite://PATH` or `postgres://…`). Synchronous, so
    /// the server can build it while assembling its router. The store must
    /// have run the migrations (it does in `Store::connect`).
    pub fn connect_lazy(db_url: &str, encryption_key: Option<[u8; 32]>) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(8)
            .connect_lazy(db_url)
            .map_err(|e| format!("the UI cannot use the database URL: {e}"))?;
        Ok(UiState::new(pool, encryption_key))
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                pool: shared.pool.clone(),
                encryption_key: shared.encryption_key,
                secure_cookies: shared.secure_cookies,
                run_enqueued: shared.run_enqueued.clone(),
                workers: shared.workers.clone(),
                throttle: shared.throttle.clone(),
            },
        };
        f(&mut inner);
        UiState {
            inner: Arc::new(inner),
        }
    }

    /// Adds `Secure` to cookies: set it when gabbro is served over HTTPS
    /// (directly or behind a proxy). Off by default because the default
    /// listener is plain HTTP on 127.0.0.1.
    pub fn with_secure_cookies(self, on: bool) -> Self {
        self.with(|i| i.secure_cookies = on)
    }

    /// Called after the UI enqueues runs (retry, rerun), so the server can
    /// wake its claim loop / NOTIFY workers at once.
    pub fn on_run_enqueued(self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.with(|i| i.run_enqueued = Some(Arc::new(hook)))
    }

    /// Lists connected workers for the queue dashboard (the worker socket
    /// owns that knowledge).
    pub fn with_workers(self, hook: impl Fn() -> Vec<WorkerInfo> + Send + Sync + 'static) -> Self {
        self.with(|i| i.workers = Some(Arc::new(hook)))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    pub fn encryption_key(&self) -> Option<&[u8; 32]> {
        self.inner.encryption_key.as_ref()
    }

    pub fn secure_cookies(&self) -> bool {
        self.inner.secure_cookies
    }

    pub(crate) fn throttle(&self) -> &throttle::SignInThrottle {
        &self.inner.throttle
    }

    pub(crate) fn notify_run_enqueued(&self) {
        if let Some(h) = &self.inner.run_enqueued {
            h();
        }
    }

    pub(crate) fn workers(&self) -> Option<Vec<WorkerInfo>> {
        self.inner.workers.as_ref().map(|h| h())
    }
}

/// The UI's routes, to be merged into the server's router. Paths: `/`,
/// `/sign-in`, `/sign-out`, `/password`, `/projects/...`, `/queue`,
/// `/ui/static/...`.
pub fn router(state: UiState) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(auth::root))
        .route("/sign-in", get(auth::sign_in_form).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route(
            "/password",
            get(auth::password_form).post(auth::change_password),
        )
        .route("/ui/static/app.js", get(assets::app_js))
        .route("/ui/static/app.css", get(assets::app_css))
        .route("/projects", get(projects::list))
        .route("/projects/{pid}", get(projects::show))
        .route("/projects/{pid}/workflows/{wid}", get(workflows::show))
        .route(
            "/projects/{pid}/triggers/{tid}/enabled",
            post(workflows::set_trigger_enabled),
        )
        .route(
            "/projects/{pid}/jobs/{jid}",
            get(workflows::job_form).post(workflows::save_job),
        )
        .route("/projects/{pid}/history", get(history::list))
        .route("/projects/{pid}/history/rerun", post(history::rerun))
        .route("/projects/{pid}/runs/{rid}", get(runs::show))
        .route("/projects/{pid}/runs/{rid}/logs", get(runs::log_stream))
        .route("/projects/{pid}/runs/{rid}/retry", post(runs::retry))
        .route(
            "/projects/{pid}/dataclips/{did}/download",
            get(runs::download_dataclip),
        )
        .route(
            "/projects/{pid}/credentials",
            get(credentials::list).post(credentials::create),
        )
        .route(
            "/projects/{pid}/credentials/{cid}",
            get(credentials::edit_form).post(credentials::update),
        )
        .route(
            "/projects/{pid}/credentials/{cid}/delete",
            post(credentials::delete),
        )
        .route(
            "/projects/{pid}/members",
            get(members::list).post(members::set_role),
        )
        .route("/users", get(members::users).post(members::create_user))
        .route("/queue", get(queue::dashboard))
        .with_state(state)
}
