//! Finding the webhook trigger behind `/i/<id or custom path>`. Storing the
//! request is the store's `Store::ingest_webhook` (one transaction, group
//! commit on SQLite).

use gabbro_store::{Store, StoreError, fetch_optional};

/// A webhook trigger as the ingest path needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookTrigger {
    pub id: String,
    pub enabled: bool,
    pub workflow_id: String,
    pub project_id: String,
    pub auth_type: Option<String>,
    pub auth_username: Option<String>,
    pub auth_secret_encrypted: Option<String>,
}

/// Find the live webhook trigger answering at `/i/<id_or_path>`.
pub async fn find_trigger(
    store: &Store,
    id_or_path: &str,
) -> Result<Option<WebhookTrigger>, StoreError> {
    let mut c = store.read().await?;
    let mut conn = c.reborrow();
    Ok(fetch_optional!(
        conn,
        WebhookTrigger,
        "SELECT t.id, t.enabled, t.workflow_id, w.project_id, t.auth_type, t.auth_username, t.auth_secret_encrypted \
         FROM triggers t JOIN workflows w ON w.id = t.workflow_id \
         WHERE (t.id = $1 OR t.custom_path = $1) AND t.type = 'webhook' AND w.deleted_at IS NULL \
         ORDER BY CASE WHEN t.id = $1 THEN 0 ELSE 1 END LIMIT 1",
        id_or_path
    )?)
}
