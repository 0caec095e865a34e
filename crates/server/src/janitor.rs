//! The lease janitor loop (issue 5 item 3, design.md §6): every
//! `--janitor-period` it applies the store's lease rules
//! ([`gabbro_store::Store::janitor_sweep`]) — unjoined claims go back to
//! `available`, silent or overrunning runs become `lost` — wakes the workers
//! when runs were requeued, and logs and counts what it did.
//!
//! Silence is counted only from `up_since`: when this orchestrator came up
//! and, after the database was unreachable, when it came back (heartbeats
//! could not be recorded meanwhile). On PostgreSQL one node sweeps at a time
//! (a transaction-scoped advisory lock; the store's row locks would make
//! concurrent sweeps harmless anyway, this only saves the duplicate work).

use std::time::Duration;

use gabbro_store::{Db, JanitorReport, LeaseConfig, StoreError};
use tokio::sync::watch;

use crate::state::AppState;

/// Advisory lock key for the sweep ("gabbroJ1" in ASCII); no other part of
/// gabbro takes advisory locks with it.
pub const SWEEP_LOCK_KEY: i64 = 0x6761_6262_726f_4a31;

/// `gabbro serve`'s janitor flags. Defaults and their reasons are in
/// docs/operations.md ("Leases and the janitor").
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct JanitorArgs {
    /// Seconds between janitor sweeps.
    #[arg(long, env = "GABBRO_JANITOR_PERIOD", default_value = "15", value_parser = parse_seconds)]
    pub janitor_period: Duration,
    /// Seconds a claimed run may wait for its worker to join its channel
    /// before it goes back to `available`.
    #[arg(long, env = "GABBRO_CLAIM_LEASE", default_value = "30", value_parser = parse_seconds)]
    pub claim_lease: Duration,
    /// Seconds a joined or started run's worker may be silent (counted only
    /// while this orchestrator is up) before the run is `lost`.
    #[arg(long, env = "GABBRO_RUN_LEASE", default_value = "90", value_parser = parse_seconds)]
    pub run_lease: Duration,
    /// Seconds past a run's timeout after which it is `lost` whatever else.
    #[arg(long, env = "GABBRO_LOST_GRACE", default_value = "10", value_parser = parse_seconds)]
    pub lost_grace: Duration,
}

impl Default for JanitorArgs {
    /// The same values as the flags' defaults (a test pins that).
    fn default() -> Self {
        JanitorArgs {
            janitor_period: Duration::from_secs(15),
            claim_lease: Duration::from_secs(30),
            run_lease: Duration::from_secs(90),
            lost_grace: Duration::from_secs(10),
        }
    }
}

/// A positive number of seconds, fractions allowed ("0.5", "30").
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!(
            "`{text}`: give a positive number of seconds (at most 1e9)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What the janitor runs with, resolved from [`JanitorArgs`].
#[derive(Debug, Clone, Copy)]
pub struct JanitorConfig {
    pub period: Duration,
    pub leases: LeaseConfig,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        JanitorConfig::from(&JanitorArgs::default())
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl From<&JanitorArgs> for JanitorConfig {
    fn from(a: &JanitorArgs) -> Self {
        JanitorConfig {
            period: a.janitor_period,
            leases: LeaseConfig {
                claim_lease_us: micros(a.claim_lease),
                run_lease_us: micros(a.run_lease),
                grace_us: micros(a.lost_grace),
                // Runs without a timeout of their own: the store's default.
                ..LeaseConfig::default()
            },
        }
    }
}

/// The database clock now ([`gabbro_store::db_now_us`]).
async fn db_now(state: &AppState) -> Result<i64, StoreError> {
    let mut c = state.store.read().await?;
    gabbro_store::db_now_us(&mut c.reborrow()).await
}

/// One sweep: the store's rules under the PostgreSQL advisory lock (if
/// another node holds it, this node skips the sweep: `Ok(None)`). Wakes
/// workers for requeued runs and logs and counts each requeued or lost run.
pub async fn sweep(
    state: &AppState,
    cfg: &JanitorConfig,
    up_since_us: i64,
) -> Result<Option<JanitorReport>, StoreError> {
    let report = match state.store.db() {
        Db::Postgres(pool) => {
            // Transaction-scoped: released on commit, rollback or a dropped
            // connection, so a crashed node never keeps it.
            let mut tx = pool.begin().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(SWEEP_LOCK_KEY)
                .fetch_one(&mut *tx)
                .await?;
            if !got {
                return Ok(None);
            }
            let out = state.store.janitor_sweep(&cfg.leases, up_since_us).await;
            let _ = tx.rollback().await;
            out?
        }
        Db::Sqlite(_) => state.store.janitor_sweep(&cfg.leases, up_since_us).await?,
    };
    for id in &report.requeued {
        tracing::info!(run_id = %id, "janitor: claim lease expired before the worker joined; run back to available");
        state.metrics.janitor_action("requeued");
    }
    for (id, error_type) in &report.lost {
        tracing::warn!(run_id = %id, error_type = %error_type, "janitor: run marked lost");
        state.metrics.janitor_action("lost");
    }
    for id in &report.retried {
        tracing::info!(run_id = %id, "janitor: lost run retried (project retries lost runs)");
        state.metrics.janitor_action("retried");
    }
    if !report.requeued.is_empty() || !report.retried.is_empty() {
        state.work_available.notify_waiters();
    }
    Ok(Some(report))
}

/// The loop: sweep every period until `stop` turns true. `up_since` starts
/// at the database clock when the loop starts and is moved forward to when
/// the database answers again after a failed sweep.
pub async fn run(state: AppState, cfg: JanitorConfig, mut stop: watch::Receiver<bool>) {
    let mut up_since: Option<i64> = None;
    loop {
        if up_since.is_none() {
            match db_now(&state).await {
                Ok(now) => {
                    tracing::info!(
                        period_s = cfg.period.as_secs_f64(),
                        claim_lease_s = cfg.leases.claim_lease_us as f64 / 1e6,
                        run_lease_s = cfg.leases.run_lease_us as f64 / 1e6,
                        "janitor: counting worker silence from now"
                    );
                    up_since = Some(now);
                }
                Err(e) => tracing::warn!(error = %e, "janitor: database unreachable"),
            }
        }
        if let Some(since) = up_since
            && let Err(e) = sweep(&state, &cfg, since).await
        {
            tracing::warn!(error = %e, "janitor: sweep failed; silence will be counted again from when the database answers");
            up_since = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.period) => {},
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

    #[test]
    fn seconds_accept_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "x", "NaN", "inf", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn config_carries_the_flags_in_microseconds() {
        let c = JanitorConfig::default();
        assert_eq!(c.period, Duration::from_secs(15));
        assert_eq!(c.leases.claim_lease_us, 30_000_000);
        assert_eq!(c.leases.run_lease_us, 90_000_000);
        assert_eq!(c.leases.grace_us, 10_000_000);
    }
}
