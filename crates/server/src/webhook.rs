//! `POST /i/<trigger id or custom path>`: Lightning's webhook endpoint.
//!
//! Answers (Lightning's codes): 200 `{"work_order_id"}` once stored, with
//! `x-meta-work-order-id`/`x-meta-run-id`; 404 unknown trigger; 403
//! `trigger_disabled`; 401 auth required but absent, 404 wrong credentials;
//! 415 a content type that is not JSON or a form; 400 malformed JSON; 413
//! body over `--max-dataclip-size-mb`; 503 + Retry-After when overloaded or
//! the database is unavailable.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::ingest::{self, WebhookTrigger};
use crate::state::AppState;

/// Headers never stored in the input dataclip (they carry secrets).
const PRIVATE_HEADERS: [&str; 3] = ["authorization", "x-api-key", "cookie"];

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `GET /i/<id>`: tells a person with a browser that the webhook exists.
pub async fn check(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match ingest::find_trigger(&state.store, &id).await {
        Ok(Some(_)) => reply(
            StatusCode::OK,
            json!({"message": "gabbro webhook trigger found. POST to this URL to start the workflow."}),
        ),
        Ok(None) => reply(StatusCode::NOT_FOUND, json!({"error": "Webhook not found"})),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let resp = handle(&state, &id, query, headers, body).await;
    state
        .metrics
        .webhook_answered(resp.status().as_u16(), started.elapsed());
    resp
}

async fn handle(
    state: &AppState,
    id: &str,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let trigger = match ingest::find_trigger(&state.store, id).await {
        Ok(Some(t)) => t,
        Ok(None) => return reply(StatusCode::NOT_FOUND, json!({"error": "Webhook not found"})),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some(denied) = check_auth(state, &trigger, &headers) {
        return denied;
    }
    if !trigger.enabled {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"error": "trigger_disabled", "message": "This trigger is disabled; enable it to accept requests at this URL."}),
        );
    }
    let kind = match body_kind(&headers) {
        Some(k) => k,
        None => {
            return reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({"error": "unsupported_media_type", "message": "send application/json or application/x-www-form-urlencoded"}),
            );
        }
    };
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large(limit);
    }
    let (bytes, _permits) = match read_body(state, body, declared, limit).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let body_json = match to_json_text(kind, &bytes) {
        Ok(text) => text,
        Err(msg) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "malformed_body", "message": msg}),
            );
        }
    };
    drop(bytes);
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 255);
    let request = request_json(id, query.as_deref(), &headers);
    let incoming = gabbro_store::WebhookIngest {
        trigger_id: trigger.id,
        body: body_json,
        request,
        idempotency_key,
        options: None,
        queue: None,
    };
    match state.store.ingest_webhook(incoming).await {
        Ok(done) => {
            if !done.existing {
                state.work_available.notify_waiters();
            }
            let mut resp = reply(StatusCode::OK, json!({"work_order_id": done.work_order_id}));
            if let Ok(v) = HeaderValue::from_str(&done.work_order_id) {
                resp.headers_mut().insert("x-meta-work-order-id", v);
            }
            if let Ok(run) = HeaderValue::from_str(&done.run_id) {
                resp.headers_mut().insert("x-meta-run-id", run);
            }
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn too_large(limit: usize) -> Response {
    reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        json!({"error": "payload_too_large", "message": format!("the body is larger than {} MiB", limit / (1024 * 1024))}),
    )
}

fn overloaded() -> Response {
    let mut resp = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "overloaded", "message": "too many webhook bodies in flight; retry shortly", "retry_after": 1}),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

#[derive(Clone, Copy)]
enum BodyKind {
    Json,
    Form,
    /// No Content-Type: JSON if there is a body, `{}` if none.
    Unspecified,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Some(BodyKind::Unspecified);
    };
    let ct = ct
        .to_str()
        .ok()?
        .split(';')
        .next()?
        .trim()
        .to_ascii_lowercase();
    if ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json")) {
        Some(BodyKind::Json)
    } else if ct == "application/x-www-form-urlencoded" {
        Some(BodyKind::Form)
    } else {
        None
    }
}

/// Read the body, never more than `limit` bytes, holding memory permits
/// (1 per KiB) for what is read. Answers 413 past the limit, 503 when the
/// memory budget for bodies in flight is spent.
async fn read_body(
    state: &AppState,
    body: Body,
    declared: Option<usize>,
    limit: usize,
) -> Result<(Vec<u8>, Vec<OwnedSemaphorePermit>), Response> {
    let mut permits = Vec::new();
    // Take memory permits for `bytes` more bytes; false when the budget is spent.
    let mut take = |bytes: usize| -> bool {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if kib == 0 {
            return true;
        }
        match state.webhook_memory.clone().try_acquire_many_owned(kib) {
            Ok(p) => {
                permits.push(p);
                true
            }
            Err(_) => false,
        }
    };
    let mut buf = Vec::new();
    if let Some(n) = declared {
        if !take(n) {
            return Err(overloaded());
        }
        buf.reserve_exact(n);
    }
    let mut held = declared.unwrap_or(0);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "message": format!("could not read the body: {e}")}),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
        if buf.len() > held {
            if !take(buf.len() - held) {
                return Err(overloaded());
            }
            held = buf.len();
        }
    }
    Ok((buf, permits))
}

/// The body as the JSON text to store.
fn to_json_text(kind: BodyKind, bytes: &[u8]) -> Result<String, String> {
    match kind {
        BodyKind::Unspecified if bytes.iter().all(u8::is_ascii_whitespace) => Ok("{}".into()),
        BodyKind::Json | BodyKind::Unspecified => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| "the body is not UTF-8".to_string())?;
            if text.trim().is_empty() {
                return Ok("{}".into());
            }
            // Validate without building a tree; keep the bytes as sent.
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| format!("malformed JSON: {e}"))?;
            if text.contains("\"configuration\"") {
                return strip_configuration(text);
            }
            Ok(text.to_string())
        }
        BodyKind::Form => {
            let mut map = Map::new();
            for (k, v) in form_urlencoded::parse(bytes) {
                map.insert(k.into_owned(), Value::String(v.into_owned()));
            }
            Ok(Value::Object(map).to_string())
        }
    }
}

/// Lightning drops a top-level `configuration` key from dataclips (it is
/// where credentials live in a job's state).
fn strip_configuration(text: &str) -> Result<String, String> {
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let removed = value
        .as_object_mut()
        .and_then(|obj| obj.remove("configuration"))
        .is_some();
    Ok(if removed {
        value.to_string()
    } else {
        text.to_string()
    })
}

/// `{method, path, query_params, headers}` as Lightning records it: the path
/// as its segments, header names lower-case, secrets left out.
fn request_json(id: &str, query: Option<&str>, headers: &HeaderMap) -> String {
    let mut query_params = Map::new();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            query_params.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let mut hs = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if PRIVATE_HEADERS.contains(&name) {
            continue;
        }
        hs.insert(
            name.to_string(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    json!({
        "method": Method::POST.as_str(),
        "path": ["i", id],
        "query_params": query_params,
        "headers": hs,
    })
    .to_string()
}

/// Webhook auth (Lightning's): without credentials 401; with wrong ones 404,
/// so a caller cannot learn that the webhook exists.
fn check_auth(state: &AppState, trigger: &WebhookTrigger, headers: &HeaderMap) -> Option<Response> {
    let kind = trigger.auth_type.as_deref()?;
    let secret = trigger
        .auth_secret_encrypted
        .as_deref()
        .and_then(|s| crate::vault::decrypt(&state.config.encryption_key, s).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let unauthorized = || reply(StatusCode::UNAUTHORIZED, json!({"error": "Unauthorized"}));
    let not_found = || reply(StatusCode::NOT_FOUND, json!({"error": "Webhook not found"}));
    match kind {
        "api" => match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            None => Some(unauthorized()),
            Some(given)
                if secret
                    .as_deref()
                    .is_some_and(|s| constant_time_eq(s.as_bytes(), given.as_bytes())) =>
            {
                None
            }
            Some(_) => Some(not_found()),
        },
        "basic" => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            match given {
                None => Some(unauthorized()),
                Some(pair) => {
                    let expected = format!(
                        "{}:{}",
                        trigger.auth_username.as_deref().unwrap_or(""),
                        secret.unwrap_or_default()
                    );
                    if constant_time_eq(expected.as_bytes(), pair.as_bytes()) {
                        None
                    } else {
                        Some(not_found())
                    }
                }
            }
        }
        _ => Some(not_found()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
