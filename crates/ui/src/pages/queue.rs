//! The queue dashboard (superusers): runs by state, throughput over the last
//! hour, the oldest available run, connected workers.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::Nav;
use crate::error::{UiError, UiResult, html};
use crate::queries::runs::{QueueStats, queue_stats};
use crate::session::User;
use crate::time::{format_duration_us, format_us, now_us};
use crate::{UiState, WorkerInfo};

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    nav: Option<Nav>,
    stats: QueueStats,
    finished_total: i64,
    oldest: Option<(String, String, String, String)>,
    workers: Option<Vec<WorkerInfo>>,
}

impl QueuePage {
    fn heard(&self, us: &Option<i64>) -> String {
        us.map(|t| format!("{} UTC", format_us(t)))
            .unwrap_or_default()
    }
}

pub async fn dashboard(State(state): State<UiState>, user: User) -> UiResult<Response> {
    if !user.is_superuser {
        return Err(UiError::Forbidden(
            "The queue dashboard is for administrators.".into(),
        ));
    }
    let stats = queue_stats(state.pool()).await?;
    let finished_total = stats.finished_last_hour.iter().map(|(_, n)| n).sum();
    let now = now_us();
    let oldest = stats.oldest_available.clone().map(|(id, project, at)| {
        (
            id,
            project,
            format_us(at),
            format_duration_us((now - at).max(0)),
        )
    });
    html(QueuePage {
        nav: Nav::of(&user),
        stats,
        finished_total,
        oldest,
        workers: state.workers(),
    })
}
