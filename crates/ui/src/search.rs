//! Text search over work orders' input dataclips, indexed asynchronously:
//! webhook ingest writes nothing extra; [`spawn_indexer`] later reads new
//! work orders' inputs (a 64 KiB prefix each) and records their words in
//! `ui_search_terms`. History searches read that index, and check the few
//! work orders the indexer has not reached yet directly (see
//! `queries::runs::history`), so results never miss fresh work orders.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::{AnyPool, Row};

use crate::UiState;
use crate::error::UiResult;
use crate::time::now_us;

/// Words longer than this are not indexed (and cannot be searched).
const MAX_WORD_CHARS: usize = 64;
/// At most this many distinct words of one input are indexed.
const MAX_WORDS: usize = 2_000;
/// Work orders indexed per transaction.
const BATCH: i64 = 500;
/// The indexer stays this far behind "now", so work orders whose
/// transactions commit slightly out of order are not skipped.
const LAG_US: i64 = 2_000_000;

/// The distinct lower-cased words of `text`: runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    let mut set = BTreeSet::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        if w.is_empty() || w.chars().count() > MAX_WORD_CHARS {
            continue;
        }
        set.insert(w.to_lowercase());
        if set.len() >= MAX_WORDS {
            break;
        }
    }
    set.into_iter().collect()
}

/// The indexer's position: every work order up to it (in the scan order
/// inserted_at ASC, id DESC) is indexed. None before the first batch.
pub async fn progress(pool: &AnyPool) -> UiResult<Option<(i64, String)>> {
    let row = sqlx::query("SELECT inserted_at, work_order_id FROM ui_search_progress WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    row.map(|r| Ok((r.try_get("inserted_at")?, r.try_get("work_order_id")?)))
        .transpose()
}

/// Indexes the next batch of work orders; returns how many it indexed.
pub async fn index_batch(pool: &AnyPool) -> UiResult<usize> {
    let from = progress(pool).await?;
    let (ts, id) = from.clone().unwrap_or((i64::MIN, String::new()));
    // inserted_at ASC, id DESC is work_orders_inserted read backwards.
    let rows = sqlx::query(
        "SELECT wo.id, wo.inserted_at, substr(d.body, 1, 65536) AS prefix FROM work_orders wo \
         LEFT JOIN dataclips d ON d.id = wo.dataclip_id \
         WHERE wo.inserted_at >= $1 AND (wo.inserted_at > $2 OR wo.id < $3) AND wo.inserted_at < $4 \
         ORDER BY wo.inserted_at, wo.id DESC LIMIT $5",
    )
    .bind(ts)
    .bind(ts)
    .bind(if from.is_some() { id } else { "\u{10ffff}".to_string() })
    .bind(now_us() - LAG_US)
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    let Some(last) = rows.last() else {
        return Ok(0);
    };
    let last_ts: i64 = last.try_get("inserted_at")?;
    let last_id: String = last.try_get("id")?;
    let mut tx = crate::queries::write_tx(pool).await?;
    for r in &rows {
        let wo_id: String = r.try_get("id")?;
        let at: i64 = r.try_get("inserted_at")?;
        let prefix: Option<String> = r.try_get("prefix")?;
        for w in words(prefix.as_deref().unwrap_or("")) {
            sqlx::query("INSERT INTO ui_search_terms (term, inserted_at, work_order_id) VALUES ($1, $2, $3)")
                .bind(w)
                .bind(at)
                .bind(&wo_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    // The words and the new position commit together: a crash re-indexes
    // nothing twice and skips nothing.
    let moved = sqlx::query(
        "UPDATE ui_search_progress SET inserted_at = $1, work_order_id = $2 WHERE id = 1",
    )
    .bind(last_ts)
    .bind(&last_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        sqlx::query(
            "INSERT INTO ui_search_progress (id, inserted_at, work_order_id) VALUES (1, $1, $2)",
        )
        .bind(last_ts)
        .bind(&last_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Ingest counts as busy while a work order arrived within this window.
const QUIET_US: i64 = 1_000_000;
/// Under a steady stream of webhooks the indexer still takes a batch after
/// deferring this long, so the index keeps up slowly rather than never.
const MAX_DEFER: Duration = Duration::from_secs(30);

/// Did a work order arrive in the last [`QUIET_US`]? (One probe of the
/// `work_orders_inserted` index.)
async fn ingest_busy(pool: &AnyPool) -> UiResult<bool> {
    let newest: Option<i64> = sqlx::query("SELECT MAX(inserted_at) AS newest FROM work_orders")
        .fetch_one(pool)
        .await?
        .try_get("newest")?;
    Ok(newest.is_some_and(|t| t > now_us() - QUIET_US))
}

/// Runs the indexer until the task is dropped or aborted: a batch at a
/// time, resting when it has caught up. Run one per database (a second
/// one would only race to the same position; its batch fails to commit or
/// repeats words, which searches tolerate).
///
/// Indexing must not slow webhook ingest (issue 6): on SQLite its batches
/// hold the one write lock that the store's group-commit writer needs. So
/// it indexes while ingest is quiet, defers while webhooks are arriving (at
/// most [`MAX_DEFER`] at a time), and after each batch rests four times as
/// long as the batch took, so it never holds the lock more than a fifth of
/// the time. Searches stay correct meanwhile: work orders past the
/// indexer's position are checked directly.
pub fn spawn_indexer(state: UiState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut deferred = Duration::ZERO;
        loop {
            match ingest_busy(state.pool()).await {
                Ok(true) if deferred < MAX_DEFER => {
                    let pause = Duration::from_millis(250);
                    tokio::time::sleep(pause).await;
                    deferred += pause;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "ui: search indexer could not probe ingest"),
            }
            deferred = Duration::ZERO;
            let started = std::time::Instant::now();
            match index_batch(state.pool()).await {
                Ok(n) if n as i64 == BATCH => {
                    let rest = (started.elapsed() * 4).max(Duration::from_millis(20));
                    tokio::time::sleep(rest).await
                }
                Ok(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "ui: search indexer batch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_lowercased_distinct_alphanumeric_runs() {
        assert_eq!(
            super::words(r#"{"name":"Ada Lovelace","city":"Zanzibar-42","note":"ADA"}"#),
            vec!["42", "ada", "city", "lovelace", "name", "note", "zanzibar"]
        );
        assert!(super::words("%_ ").is_empty());
    }
}
