//! The run inspector: steps in order, live logs (SSE), dataclips as
//! formatted JSON (a prefix only; the full body is a streamed download) and
//! retry from any step.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::stream::{self, Stream};

use super::Nav;
use crate::UiState;
use crate::access::{Role, project_access};
use crate::error::{UiError, UiResult, html};
use crate::forms::FormData;
use crate::jsonfmt;
use crate::queries::runs::{self as q, DataclipPreview, LogLine, RunDetail, StepRow};
use crate::session::User;
use crate::time::{format_duration_us, format_us};

/// Lines rendered into the page; the rest arrive over the stream.
const INITIAL_LOG_LINES: i64 = 2_000;
const STREAM_BATCH: i64 = 500;
const STREAM_POLL: Duration = Duration::from_millis(400);

pub struct DataclipView {
    pub title: String,
    pub id: String,
    pub pretty: String,
    pub bytes: i64,
    pub truncated: bool,
    pub wiped: bool,
}

fn dataclip_view(title: String, d: DataclipPreview) -> DataclipView {
    DataclipView {
        title,
        pretty: d.prefix.as_deref().map(jsonfmt::pretty).unwrap_or_default(),
        truncated: d.truncated(),
        bytes: d.bytes,
        wiped: d.wiped || d.prefix.is_none(),
        id: d.id,
    }
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    nav: Option<Nav>,
    csrf: String,
    project_id: String,
    project_name: String,
    can_edit: bool,
    run: RunDetail,
    steps: Vec<StepRow>,
    logs: Vec<LogLine>,
    logs_capped: bool,
    dataclips: Vec<DataclipView>,
}

impl RunPage {
    fn when(&self, us: &Option<i64>) -> String {
        us.map(format_us).unwrap_or_default()
    }

    fn queued_at(&self) -> String {
        format_us(self.run.inserted_at)
    }

    fn duration(&self, s: &StepRow) -> String {
        match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => format_duration_us(b - a),
            (Some(_), None) => "running".into(),
            _ => String::new(),
        }
    }

    fn log_time(&self, l: &LogLine) -> String {
        format_us(l.timestamp)
    }

    fn last_ts(&self) -> String {
        self.logs
            .last()
            .map(|l| l.timestamp.to_string())
            .unwrap_or_default()
    }

    fn last_id(&self) -> String {
        self.logs.last().map(|l| l.id.clone()).unwrap_or_default()
    }
}

pub async fn show(
    State(state): State<UiState>,
    user: User,
    Path((pid, rid)): Path<(String, String)>,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    let run = q::run(state.pool(), &p.id, &rid).await?;
    let steps = q::steps(state.pool(), &run.id).await?;
    let logs = q::log_lines_after(state.pool(), &run.id, None, INITIAL_LOG_LINES + 1).await?;
    let logs_capped = logs.len() as i64 > INITIAL_LOG_LINES;
    let logs: Vec<LogLine> = logs.into_iter().take(INITIAL_LOG_LINES as usize).collect();
    let mut dataclips = Vec::new();
    if let Some(id) = &run.dataclip_id
        && let Some(d) = q::dataclip_preview(state.pool(), &p.id, id).await?
    {
        dataclips.push(dataclip_view("Input of the run".into(), d));
    }
    for (i, s) in steps.iter().enumerate() {
        if let Some(id) = &s.output_dataclip_id
            && let Some(d) = q::dataclip_preview(state.pool(), &p.id, id).await?
        {
            dataclips.push(dataclip_view(
                format!("Output of step {} ({})", i + 1, s.job_name),
                d,
            ));
        }
    }
    html(RunPage {
        nav: Nav::of(&user),
        csrf: user.csrf.clone(),
        can_edit: p.can_edit(),
        project_id: p.id,
        project_name: p.name,
        run,
        steps,
        logs,
        logs_capped,
        dataclips,
    })
}

struct StreamState {
    state: UiState,
    run_id: String,
    cursor: Option<(i64, String)>,
    pending: VecDeque<Event>,
    done: bool,
    first: bool,
}

/// `GET .../runs/{rid}/logs?after_ts=&after_id=`: Server-Sent Events, one
/// `log` event per new line (JSON), a `state` event when the run's state
/// changes, and `end` once the run is final and every line has been sent.
pub async fn log_stream(
    State(state): State<UiState>,
    user: User,
    Path((pid, rid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> UiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let p = project_access(&state, &user, &pid).await?;
    let run = q::run(state.pool(), &p.id, &rid).await?;
    let qs = FormData::parse(query.unwrap_or_default().as_bytes());
    let cursor = match (
        qs.get("after_ts").and_then(|t| t.parse::<i64>().ok()),
        qs.get("after_id"),
    ) {
        (Some(ts), Some(id)) => Some((ts, id.to_string())),
        _ => None,
    };
    let st = StreamState {
        state,
        run_id: run.id,
        cursor,
        pending: VecDeque::new(),
        done: false,
        first: true,
    };
    let s = stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            if !st.first {
                tokio::time::sleep(STREAM_POLL).await;
            }
            st.first = false;
            // Read the state before the lines: a run seen final here has
            // written all its lines, so an empty batch after it means the end.
            let run_state = q::run_state(st.state.pool(), &st.run_id).await.ok();
            let lines = match q::log_lines_after(
                st.state.pool(),
                &st.run_id,
                st.cursor.clone(),
                STREAM_BATCH,
            )
            .await
            {
                Ok(l) => l,
                Err(_) => {
                    st.done = true;
                    st.pending.push_back(
                        Event::default()
                            .event("error")
                            .data("the database could not answer"),
                    );
                    continue;
                }
            };
            let got = lines.len() as i64;
            for l in lines {
                st.cursor = Some((l.timestamp, l.id.clone()));
                if let Ok(json) = serde_json::to_string(&l) {
                    st.pending
                        .push_back(Event::default().event("log").data(json));
                }
            }
            if let Some(rs) = run_state {
                st.pending
                    .push_back(Event::default().event("state").data(rs.clone()));
                if got < STREAM_BATCH && q::FINAL_RUN_STATES.contains(&rs.as_str()) {
                    st.pending.push_back(Event::default().event("end").data(rs));
                    st.done = true;
                }
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}

pub async fn retry(
    State(state): State<UiState>,
    user: User,
    Path((pid, rid)): Path<(String, String)>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Editor)?;
    let step_id = form.text("step_id");
    let new_run = q::retry_from_step(state.pool(), &p.id, &rid, &step_id, &user.id).await?;
    state.notify_run_enqueued();
    Ok(Redirect::to(&format!("/projects/{}/runs/{new_run}", p.id)).into_response())
}

/// The whole dataclip as a download, read from the database one chunk at a
/// time so the server never holds more than a chunk of it.
pub async fn download_dataclip(
    State(state): State<UiState>,
    user: User,
    Path((pid, did)): Path<(String, String)>,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    if !q::dataclip_exists(state.pool(), &p.id, &did).await? {
        return Err(UiError::NotFound);
    }
    let filename = format!(
        "dataclip-{}.json",
        did.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
    );
    let project_id = p.id.clone();
    let chunks = stream::unfold(Some(1i64), move |next| {
        let state = state.clone();
        let project_id = project_id.clone();
        let did = did.clone();
        async move {
            let start = next?;
            match q::dataclip_chunk(state.pool(), &project_id, &did, start).await {
                Ok(Some(chunk)) => {
                    let n = chunk.chars().count() as i64;
                    let next = (n == q::DATACLIP_CHUNK_CHARS).then_some(start + n);
                    Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next))
                }
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
