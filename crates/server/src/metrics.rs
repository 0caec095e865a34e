//! Prometheus metrics, served as text at `/metrics`. Counters and histograms
//! are atomics kept here; queue depth is read from the database at scrape
//! time (the partial indexes on unfinished runs keep that cheap).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds in seconds, for latencies from 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// A cumulative latency histogram.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let wrap = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{wrap} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{wrap} {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Time from a webhook request's arrival to its answer, by status code.
    pub webhook_latency: Histogram,
    webhook_responses: Mutex<BTreeMap<u16, u64>>,
    /// Time a worker's `claim` took to answer (observed by the worker socket).
    pub claim_latency: Histogram,
    /// Runs that reached a final state on this node, by state.
    runs_finished: Mutex<BTreeMap<String, u64>>,
    /// Cron fires by outcome (fired | missed).
    cron_fires: Mutex<BTreeMap<String, u64>>,
    /// Janitor actions by kind (requeued | lost | retried).
    janitor_actions: Mutex<BTreeMap<String, u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_insert(0) += 1;
    }
}

impl Metrics {
    pub fn webhook_answered(&self, status: u16, took: Duration) {
        self.webhook_latency.observe(took);
        bump(&self.webhook_responses, status);
    }

    /// Called by whoever finishes a run (the worker socket's ledger calls).
    pub fn run_finished(&self, state: &str) {
        bump(&self.runs_finished, state.to_string());
    }

    pub fn cron_fire(&self, outcome: &str) {
        bump(&self.cron_fires, outcome.to_string());
    }

    pub fn janitor_action(&self, action: &str) {
        bump(&self.janitor_actions, action.to_string());
    }

    /// The exposition text; `runs_by_state` is the database's current count
    /// of runs per state.
    pub fn render(&self, runs_by_state: &[(String, i64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP gabbro_runs Runs in the database by state (queue depth for available/claimed/started).\n");
        out.push_str("# TYPE gabbro_runs gauge\n");
        for state in ["available", "claimed", "started"] {
            let n = runs_by_state
                .iter()
                .find(|(s, _)| s == state)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = writeln!(out, "gabbro_runs{{state=\"{state}\"}} {n}");
        }
        for (state, n) in runs_by_state
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "available" | "claimed" | "started"))
        {
            let _ = writeln!(out, "gabbro_runs{{state=\"{state}\"}} {n}");
        }
        out.push_str("# HELP gabbro_runs_finished_total Runs that reached a final state through this node since it started.\n");
        out.push_str("# TYPE gabbro_runs_finished_total counter\n");
        if let Ok(m) = self.runs_finished.lock() {
            for (state, n) in m.iter() {
                let _ = writeln!(out, "gabbro_runs_finished_total{{state=\"{state}\"}} {n}");
            }
        }
        out.push_str("# HELP gabbro_webhook_duration_seconds Webhook request to answer.\n");
        out.push_str("# TYPE gabbro_webhook_duration_seconds histogram\n");
        self.webhook_latency
            .render(&mut out, "gabbro_webhook_duration_seconds", "");
        out.push_str("# HELP gabbro_webhook_responses_total Webhook answers by status code.\n");
        out.push_str("# TYPE gabbro_webhook_responses_total counter\n");
        if let Ok(m) = self.webhook_responses.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(out, "gabbro_webhook_responses_total{{code=\"{code}\"}} {n}");
            }
        }
        out.push_str("# HELP gabbro_claim_duration_seconds Worker claim request to answer.\n");
        out.push_str("# TYPE gabbro_claim_duration_seconds histogram\n");
        self.claim_latency
            .render(&mut out, "gabbro_claim_duration_seconds", "");
        out.push_str("# HELP gabbro_cron_fires_total Cron schedule times handled by this node, by outcome.\n");
        out.push_str("# TYPE gabbro_cron_fires_total counter\n");
        if let Ok(m) = self.cron_fires.lock() {
            for (outcome, n) in m.iter() {
                let _ = writeln!(out, "gabbro_cron_fires_total{{outcome=\"{outcome}\"}} {n}");
            }
        }
        out.push_str("# HELP gabbro_janitor_runs_total Runs the lease janitor on this node requeued, marked lost or retried.\n");
        out.push_str("# TYPE gabbro_janitor_runs_total counter\n");
        if let Ok(m) = self.janitor_actions.lock() {
            for (action, n) in m.iter() {
                let _ = writeln!(out, "gabbro_janitor_runs_total{{action=\"{action}\"}} {n}");
            }
        }
        out
    }
}
