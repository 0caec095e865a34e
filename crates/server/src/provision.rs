//! `POST /api/provision` and `GET /api/provision/<project id>`: Lightning's
//! provisioning API, which OpenFn's `openfn deploy` and `gabbro deploy` use.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use gabbro_deploy::parse_document;
use gabbro_store::provision::{self, ProvisionOutcome};

use crate::auth::ApiUser;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    user: ApiUser,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    let doc = parse_document(&value).map_err(ApiError::Invalid)?;
    if !crate::api::may_edit(&state, &user, &doc.id).await? {
        return Err(ApiError::Forbidden(
            "you may not provision this project".into(),
        ));
    }
    let empty =
        crate::vault::encrypt(&state.config.encryption_key, b"{}").map_err(ApiError::Internal)?;
    let user_id = user.id.clone();
    let outcome = state
        .store
        .write(move |mut c| {
            Box::pin(async move {
                let outcome = provision::apply(&mut c, &doc, &empty).await?;
                if let ProvisionOutcome::Applied { project_id, created: true, .. } = &outcome {
                    gabbro_store::exec!(
                        c,
                        "INSERT INTO project_users (project_id, user_id, role) VALUES ($1, $2, 'owner') ON CONFLICT DO NOTHING",
                        project_id,
                        &user_id
                    )?;
                }
                Ok(outcome)
            })
        })
        .await?;
    match outcome {
        ProvisionOutcome::Invalid(errors) => Err(ApiError::Invalid(errors)),
        ProvisionOutcome::Applied {
            project_id,
            created,
            new_snapshots,
        } => {
            tracing::info!(project = %project_id, created, snapshots = new_snapshots.len(), "provisioned");
            let doc = load(&state, &project_id).await?;
            let mut resp = (StatusCode::CREATED, axum::Json(json!({"data": doc}))).into_response();
            if let Ok(v) = format!("/api/provision/{project_id}").parse() {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !crate::api::is_member(&state, &user, &id, false).await? {
        return Err(ApiError::NotFound(format!("project {id} not found")));
    }
    let doc = load(&state, &id).await?;
    Ok(axum::Json(json!({"data": doc})).into_response())
}

async fn load(state: &AppState, id: &str) -> Result<gabbro_deploy::ProjectDocument, ApiError> {
    let mut c = state.store.read().await?;
    let mut conn = c.reborrow();
    provision::load(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project {id} not found")))
}
