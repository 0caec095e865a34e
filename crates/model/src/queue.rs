//! Queue names and a claimer's queue preference (Lightning's "Fast Lanes").

/// The queue names.
pub mod queues {
    /// Manual runs and retries.
    pub const MANUAL: &str = "manual";
    /// Synchronous webhooks.
    pub const FAST_LANE: &str = "fast_lane";
    /// Everything else.
    pub const DEFAULT: &str = "default";
    /// In a preference list: every other queue.
    pub const WILDCARD: &str = "*";
}

/// A claimer's ordered queue list, e.g. `["manual", "*"]`. Without `*` it
/// filters (only the named queues); with `*` every queue is eligible and the
/// list orders them (named ones at their position, the rest at `*`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePreference {
    names: Vec<String>,
}

impl Default for QueuePreference {
    /// Lightning's default, `["manual", "*"]`.
    fn default() -> Self {
        QueuePreference::new(["manual", "*"])
    }
}

impl QueuePreference {
    /// From an ordered list of names (empty = `["*"]`). Duplicates keep
    /// their first position.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut out: Vec<String> = Vec::new();
        for n in names {
            let n = n.into();
            if !out.contains(&n) {
                out.push(n);
            }
        }
        if out.is_empty() {
            out.push(queues::WILDCARD.to_string());
        }
        QueuePreference { names: out }
    }

    /// Parses a worker workloop spec such as `manual>*` or `fast_lane`.
    pub fn parse(spec: &str) -> Self {
        QueuePreference::new(spec.split('>').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// The names in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// True when the list contains `*`.
    pub fn has_wildcard(&self) -> bool {
        self.names.iter().any(|n| n == queues::WILDCARD)
    }

    /// The named queues (without `*`).
    pub fn named(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != queues::WILDCARD)
    }

    /// The claim order of `queue` (lower first), or `None` if this claimer
    /// does not take it.
    pub fn rank(&self, queue: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n == queue)
            .or_else(|| self.names.iter().position(|n| n == queues::WILDCARD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_wildcard_it_filters() {
        let p = QueuePreference::new(["fast_lane"]);
        assert_eq!(p.rank("fast_lane"), Some(0));
        assert_eq!(p.rank("default"), None);
        assert!(!p.has_wildcard());
    }

    #[test]
    fn with_wildcard_it_orders() {
        let p = QueuePreference::parse("manual>*");
        assert_eq!(p.rank("manual"), Some(0));
        assert_eq!(p.rank("default"), Some(1));
        assert_eq!(p.rank("fast_lane"), Some(1));
        let p = QueuePreference::new(["*", "manual"]);
        assert_eq!(p.rank("manual"), Some(1));
        assert_eq!(p.rank("default"), Some(0));
    }

    #[test]
    fn empty_means_everything() {
        let p = QueuePreference::new(Vec::<String>::new());
        assert_eq!(p.rank("anything"), Some(0));
        assert_eq!(QueuePreference::default().names(), ["manual", "*"]);
    }
}
