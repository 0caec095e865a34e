//! The HTTP routes this crate serves. [`ROUTES`] is the one list: the router
//! is built from it and the OpenAPI document is checked against it (a test
//! fails if either has a route the other lacks).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use crate::state::AppState;
use crate::{api, openapi, provision, webhook};

/// (method, path, handler). Paths use axum's `{param}` syntax, as OpenAPI.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("get", "/health", get(health)),
        ("get", "/metrics", get(metrics)),
        ("get", "/api/openapi.json", get(openapi::serve)),
        ("get", "/i/{id}", get(webhook::check)),
        ("post", "/i/{id}", post(webhook::receive)),
        ("post", "/api/provision", post(provision::create)),
        ("get", "/api/provision/{id}", get(provision::show)),
        ("get", "/api/projects", get(api::list_projects)),
        ("get", "/api/projects/{id}", get(api::show_project)),
        (
            "get",
            "/api/projects/{id}/workflows",
            get(api::list_workflows),
        ),
        ("get", "/api/workflows/{id}", get(api::show_workflow)),
        ("get", "/api/work_orders", get(api::list_work_orders)),
        ("get", "/api/work_orders/{id}", get(api::show_work_order)),
        ("get", "/api/runs/{id}", get(api::show_run)),
        ("get", "/api/runs/{id}/log_lines", get(api::run_log_lines)),
        ("get", "/api/dataclips/{id}", get(api::show_dataclip)),
    ]
}

/// The routes of this crate, not yet given their state: other crates
/// (worker socket, UI) `merge` theirs before [`Router::with_state`].
pub fn api_router() -> Router<AppState> {
    let mut merged: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (_, path, handler) in routes() {
        match merged.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => {
                let taken = std::mem::take(existing);
                *existing = taken.merge(handler);
            }
            None => merged.push((path, handler)),
        }
    }
    merged
        .into_iter()
        .fold(Router::new(), |r, (path, h)| r.route(path, h))
}

/// The whole HTTP surface of this crate with its state, and the web UI.
pub fn router(state: AppState) -> Router {
    let ui = web_ui(&state);
    // Webhook bodies are limited and streamed by the handler itself; the
    // provisioning document gets axum's default extractor limit raised.
    let app = api_router()
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes.max(2 * 1024 * 1024),
        ))
        .with_state(state);
    match ui {
        Some(ui) => app.merge(gabbro_ui::router(ui)),
        None => app,
    }
}

/// The web UI (crates/ui) on the same database, with its search indexer.
fn web_ui(state: &AppState) -> Option<gabbro_ui::UiState> {
    match gabbro_ui::UiState::connect_lazy(&state.config.db_url, Some(state.config.encryption_key))
    {
        Ok(ui) => {
            // A retry or rerun from the UI wakes this node's workers at once.
            let wake = state.work_available.clone();
            let ui = ui.on_run_enqueued(move || wake.notify_waiters());
            // The queue dashboard lists the workers connected to this node.
            let workers = state.workers.clone();
            let ui = ui.with_workers(move || {
                workers
                    .list()
                    .into_iter()
                    .map(|w| gabbro_ui::WorkerInfo {
                        name: w.name,
                        capacity: w.capacity,
                        active_runs: w.active_runs,
                    })
                    .collect()
            });
            if tokio::runtime::Handle::try_current().is_ok() {
                gabbro_ui::spawn_indexer(ui.clone());
            }
            Some(ui)
        }
        Err(e) => {
            tracing::error!(error = %e, "the web UI is off: it cannot use the database URL");
            None
        }
    }
}

/// 200 as soon as the API accepts requests (the admin files exist by then).
async fn health() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

#[derive(sqlx::FromRow)]
struct StateCount {
    state: String,
    n: i64,
}

async fn metrics(State(state): State<AppState>) -> Response {
    let counts: Vec<StateCount> = match state.store.read().await {
        Ok(mut c) => {
            let mut conn = c.reborrow();
            gabbro_store::fetch_all!(
                conn,
                StateCount,
                "SELECT state, COUNT(*) AS n FROM runs GROUP BY state"
            )
            .unwrap_or_default()
        }
        Err(_) => Vec::new(),
    };
    let counts: Vec<(String, i64)> = counts.into_iter().map(|c| (c.state, c.n)).collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&counts),
    )
        .into_response()
}
