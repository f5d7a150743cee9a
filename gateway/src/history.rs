//! The last minutes of each pool, kept by the process for the status page's charts: requests
//! and 5xx answers per second, sampled from the pool's counters once a second into a bounded
//! ring. A plain type; the sampling task only reads counters and calls [`History::sample`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Seconds kept per pool.
pub const SECONDS: usize = 300;

/// One pool's ring: per second, requests answered and how many of them were 5xx.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ring {
    /// The counters at the last sample, to take the next one's difference from.
    last: Option<(u64, u64)>,
    pub requests: VecDeque<u64>,
    pub errors: VecDeque<u64>,
}

impl Ring {
    /// Takes the pool's counters now (`all`, `errors`): the difference from the last sample
    /// is one second's worth. The first sample only sets the start; a counter that went back
    /// (a new process) counts from zero.
    pub fn sample(&mut self, all: u64, errors: u64) {
        if let Some((last_all, last_errors)) = self.last {
            let delta = |now: u64, then: u64| now.checked_sub(then).unwrap_or(now);
            self.requests.push_back(delta(all, last_all));
            self.errors.push_back(delta(errors, last_errors));
            while self.requests.len() > SECONDS {
                self.requests.pop_front();
                self.errors.pop_front();
            }
        }
        self.last = Some((all, errors));
    }
}

/// Every pool's ring, by name (a pool a reload removed is forgotten at the next sample).
#[derive(Debug, Default)]
pub struct History {
    pools: Mutex<HashMap<String, Ring>>,
}

impl History {
    /// One sample of every pool: `(name, requests so far, 5xx so far)`.
    pub fn sample<'a>(&self, pools: impl IntoIterator<Item = (&'a str, u64, u64)>) {
        let mut rings = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut seen = Vec::new();
        for (name, all, errors) in pools {
            rings
                .entry(name.to_string())
                .or_default()
                .sample(all, errors);
            seen.push(name.to_string());
        }
        rings.retain(|name, _| seen.contains(name));
    }

    /// A pool's ring, oldest second first.
    pub fn of(&self, pool: &str) -> Option<Ring> {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(pool)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_per_second_differences_and_its_bound() {
        let mut r = Ring::default();
        r.sample(100, 3); // the start
        assert!(r.requests.is_empty());
        r.sample(150, 3);
        r.sample(150, 3);
        r.sample(210, 13);
        assert_eq!(Vec::from(r.requests.clone()), vec![50, 0, 60]);
        assert_eq!(Vec::from(r.errors.clone()), vec![0, 0, 10]);
        r.sample(5, 1); // counters that went back: a new process
        assert_eq!(r.requests.back(), Some(&5));
        for i in 0..1000 {
            r.sample(i * 2, 0);
        }
        assert_eq!(r.requests.len(), SECONDS);
        assert_eq!(r.requests.back(), Some(&2));
    }

    #[test]
    fn pools_come_and_go_with_the_config() {
        let h = History::default();
        h.sample([("app", 0, 0), ("api", 0, 0)]);
        h.sample([("app", 10, 1), ("api", 4, 0)]);
        assert_eq!(h.of("app").map(|r| Vec::from(r.requests)), Some(vec![10]));
        h.sample([("app", 12, 1)]);
        assert!(h.of("api").is_none(), "removed by a reload");
    }
}
