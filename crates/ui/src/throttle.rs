//! Sign-in throttling: after [`MAX_FAILURES`] wrong passwords for one email
//! within [`WINDOW`], further attempts for it are refused until the window
//! has passed, so a password cannot be guessed at argon2's full speed.
//! In memory, per server node: a restart forgets, which only helps a guesser
//! by one window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Emails remembered at most (oldest entries are dropped first).
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl SignInThrottle {
    /// Seconds to wait before `email` may try again, if it is locked out.
    pub fn locked_for(&self, email: &str) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(email) {
            Some((n, since)) if *n >= MAX_FAILURES && since.elapsed() < WINDOW => {
                Some((WINDOW - since.elapsed()).as_secs().max(1))
            }
            _ => None,
        }
    }

    pub fn record_failure(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED
            && !map.contains_key(email)
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let entry = map.entry(email.to_string()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn record_success(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_success_clears() {
        let t = SignInThrottle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.record_failure("a@x");
        }
        assert!(t.locked_for("a@x").is_none());
        t.record_failure("a@x");
        assert!(t.locked_for("a@x").is_some());
        assert!(t.locked_for("b@x").is_none());
        t.record_success("a@x");
        assert!(t.locked_for("a@x").is_none());
    }
}
