//! The cron scheduler. Every `gabbro serve` node runs this loop; each
//! (trigger, scheduled time) fires at most once because the `cron_fires`
//! primary key decides which node's transaction creates the work order
//! (`gabbro_store::cron::fire`). Times are UTC, standard 5-field
//! expressions.
//!
//! Missed-fire policy (the server was down, or the loop fell behind): every
//! schedule time after the trigger's last handled time (or its last change)
//! and before now is handled once. The latest of them fires — at once, even
//! if late — and the earlier ones are recorded as `missed` rows in
//! `cron_fires` (at most [`MAX_MISSED_ROWS`] per catch-up, the most recent),
//! logged with their count and counted in `gabbro_cron_fires_total{outcome="missed"}`.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use gabbro_store::cron::{self, CronTrigger};

use crate::state::AppState;

/// How often the loop looks for due times. Cron's resolution is a minute;
/// a few seconds of lateness is the price of a loop this simple.
pub const TICK: Duration = Duration::from_secs(5);

/// Most `missed` rows written for one catch-up; the rest are only counted.
pub const MAX_MISSED_ROWS: usize = 100;

/// Schedule times of `expr` in (after, until], oldest first; stops early
/// after `cap` + 1 times (the last one is kept: it is the one that fires).
pub fn due_times(
    expr: &str,
    after_us: i64,
    until_us: i64,
    cap: usize,
) -> Result<(Vec<i64>, usize), String> {
    let cron = croner::Cron::from_str(expr).map_err(|e| e.to_string())?;
    let Some(start) = DateTime::<Utc>::from_timestamp_micros(after_us) else {
        return Ok((Vec::new(), 0));
    };
    let mut times: Vec<i64> = Vec::new();
    let mut total = 0usize;
    for t in cron.iter_after(start) {
        let us = t.timestamp_micros();
        if us > until_us {
            break;
        }
        total += 1;
        times.push(us);
        if times.len() > cap + 1 {
            times.remove(0);
        }
        if total > 1_000_000 {
            break;
        }
    }
    Ok((times, total))
}

/// Handle every trigger once: fire what is due.
pub async fn tick(state: &AppState) -> Result<usize, gabbro_store::StoreError> {
    let triggers = {
        let mut c = state.store.read().await?;
        let mut conn = c.reborrow();
        cron::list_triggers(&mut conn).await?
    };
    let mut fired = 0;
    for trigger in triggers {
        match tick_trigger(state, &trigger).await {
            Ok(true) => fired += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(trigger = %trigger.id, error = %e, "cron: could not fire"),
        }
    }
    Ok(fired)
}

async fn tick_trigger(
    state: &AppState,
    trigger: &CronTrigger,
) -> Result<bool, gabbro_store::StoreError> {
    let (last, now) = {
        let mut c = state.store.read().await?;
        let mut conn = c.reborrow();
        (
            cron::last_scheduled(&mut conn, &trigger.id).await?,
            gabbro_store::db_now_us(&mut conn).await?,
        )
    };
    // Only times after the trigger was last changed (created, enabled,
    // edited) and after the last time already handled.
    let after = last.unwrap_or(i64::MIN).max(trigger.updated_at);
    let (mut times, total) = match due_times(&trigger.cron_expression, after, now, MAX_MISSED_ROWS)
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(trigger = %trigger.id, expression = %trigger.cron_expression, error = %e, "cron: invalid expression");
            return Ok(false);
        }
    };
    let Some(scheduled_at) = times.pop() else {
        return Ok(false);
    };
    let missed = times;
    let missed_total = total.saturating_sub(1);
    let t = trigger.clone();
    let missed_rows = missed.clone();
    let outcome = state
        .store
        .write(move |mut c| {
            Box::pin(async move {
                cron::fire(
                    &mut c,
                    &t,
                    scheduled_at,
                    &missed_rows,
                    gabbro_store::now_us(),
                )
                .await
            })
        })
        .await?;
    let Some(fired) = outcome else {
        return Ok(false); // another node handled it
    };
    if missed_total > 0 {
        tracing::warn!(
            trigger = %trigger.id,
            missed = missed_total,
            recorded = missed.len(),
            "cron: schedule times passed while no node was running; recorded as missed, firing the latest"
        );
        for _ in 0..missed_total {
            state.metrics.cron_fire("missed");
        }
    }
    state.metrics.cron_fire("fired");
    state.work_available.notify_waiters();
    tracing::info!(
        trigger = %trigger.id,
        scheduled_at = %crate::api::iso(Some(scheduled_at)),
        work_order = %fired.work_order_id,
        input = if fired.reused_output { "last successful output of the first job" } else { "{}" },
        "cron fired"
    );
    Ok(true)
}

/// The loop: tick every [`TICK`] until `stop` turns true.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&state).await {
            tracing::warn!(error = %e, "cron: tick failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {},
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000;

    #[test]
    fn every_minute_over_five_minutes_gives_five_times_oldest_first() {
        let start = 1_700_000_000 * 1_000_000 - (1_700_000_000 * 1_000_000) % MINUTE;
        let (times, total) = due_times("* * * * *", start, start + 5 * MINUTE, 100).unwrap();
        assert_eq!(total, 5);
        assert_eq!(
            times,
            (1..=5).map(|i| start + i * MINUTE).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_long_outage_keeps_the_latest_times_and_counts_all() {
        let start = 1_700_000_000 * 1_000_000 - (1_700_000_000 * 1_000_000) % MINUTE;
        let (times, total) = due_times("* * * * *", start, start + 1000 * MINUTE, 10).unwrap();
        assert_eq!(total, 1000);
        assert_eq!(times.len(), 11);
        assert_eq!(*times.last().unwrap(), start + 1000 * MINUTE);
    }

    #[test]
    fn invalid_expressions_are_errors() {
        assert!(due_times("every minute", 0, MINUTE, 1).is_err());
    }
}
