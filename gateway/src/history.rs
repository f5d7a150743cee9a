//! The last minutes of each pool, kept by the process for the status page: per second, the
//! requests answered, the 5xx among them, what failed on the way by the class of error
//! Cloudflare would have shown (520 to 525), rescues and hedges; sampled from the pool's
//! counters once a second into a bounded ring. A plain type; the sampling task only reads
//! counters and calls [`History::sample`].

use holdfast_health::TrafficFailure;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Seconds kept per pool.
pub const SECONDS: usize = 300;

/// What is counted, in the order of [`Counts`].
pub const SERIES: [&str; 10] = [
    "requests", "errors", "520", "521", "522", "523", "524", "525", "rescued", "hedged",
];

/// A pool's counters (totals so far), or one second's worth of them, in [`SERIES`] order.
pub type Counts = [u64; SERIES.len()];

/// The error Cloudflare would have shown for a failed attempt. A connect that failed
/// (`connect`) is 521 refused, 522 timed out, 523 no route, 525 TLS, 520 otherwise; a request
/// that got no answer is 524 when it timed out, 520 otherwise.
pub fn would_be(failure: TrafficFailure, connect: bool) -> u16 {
    match (failure, connect) {
        (TrafficFailure::Refused, true) => 521,
        (TrafficFailure::Timeout, true) => 522,
        (TrafficFailure::NoRoute, true) => 523,
        (TrafficFailure::Tls, _) => 525,
        (TrafficFailure::Timeout, false) => 524,
        _ => 520,
    }
}

/// Where a failure of an attempt counts: the series of [`would_be`]'s code.
pub fn class(failure: TrafficFailure, connect: bool) -> usize {
    let code = would_be(failure, connect);
    SERIES
        .iter()
        .position(|s| s.parse() == Ok(code))
        .unwrap_or(2)
}

/// One pool's ring: per second, how much of each series.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ring {
    /// The counters at the last sample, to take the next one's difference from.
    last: Option<Counts>,
    pub seconds: VecDeque<Counts>,
}

impl Ring {
    /// Takes the pool's counters now: the difference from the last sample is one second's
    /// worth. The first sample only sets the start; a counter that went back (a new process)
    /// counts from zero.
    pub fn sample(&mut self, now: Counts) {
        if let Some(last) = self.last {
            let mut second = [0; SERIES.len()];
            for (i, s) in second.iter_mut().enumerate() {
                *s = now[i].checked_sub(last[i]).unwrap_or(now[i]);
            }
            self.seconds.push_back(second);
            while self.seconds.len() > SECONDS {
                self.seconds.pop_front();
            }
        }
        self.last = Some(now);
    }

    /// One series, oldest second first.
    pub fn series(&self, name: &str) -> Vec<u64> {
        let Some(i) = SERIES.iter().position(|s| *s == name) else {
            return Vec::new();
        };
        self.seconds.iter().map(|c| c[i]).collect()
    }

    /// Every series summed over the last `seconds`.
    pub fn last(&self, seconds: usize) -> Counts {
        let mut sum = [0; SERIES.len()];
        for c in self.seconds.iter().rev().take(seconds) {
            for (s, v) in sum.iter_mut().zip(c) {
                *s += v;
            }
        }
        sum
    }

    /// As `/status` shows it: the charts' series, and the last minute's totals.
    pub fn json(&self) -> Value {
        let minute = self.last(60);
        let totals: serde_json::Map<String, Value> = SERIES
            .iter()
            .zip(minute)
            .map(|(name, n)| (name.to_string(), n.into()))
            .collect();
        json!({
            "requests": self.series("requests"),
            "errors": self.series("errors"),
            "last_minute": totals,
        })
    }
}

/// Every pool's ring, by name (a pool a reload removed is forgotten at the next sample).
#[derive(Debug, Default)]
pub struct History {
    pools: Mutex<HashMap<String, Ring>>,
}

impl History {
    /// One sample of every pool: its name and counters.
    pub fn sample<'a>(&self, pools: impl IntoIterator<Item = (&'a str, Counts)>) {
        let mut rings = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut seen = Vec::new();
        for (name, counts) in pools {
            rings.entry(name.to_string()).or_default().sample(counts);
            seen.push(name.to_string());
        }
        rings.retain(|name, _| seen.contains(name));
    }

    /// A pool's ring.
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

    fn counts(requests: u64, errors: u64, c521: u64) -> Counts {
        let mut c = [0; SERIES.len()];
        c[0] = requests;
        c[1] = errors;
        c[3] = c521;
        c
    }

    #[test]
    fn a_ring_keeps_per_second_differences_and_its_bound() {
        let mut r = Ring::default();
        r.sample(counts(100, 3, 0)); // the start
        assert!(r.seconds.is_empty());
        r.sample(counts(150, 3, 2));
        r.sample(counts(150, 3, 2));
        r.sample(counts(210, 13, 7));
        assert_eq!(r.series("requests"), vec![50, 0, 60]);
        assert_eq!(r.series("errors"), vec![0, 0, 10]);
        assert_eq!(r.last(2)[3], 5, "521s in the last two seconds");
        assert_eq!(r.json()["last_minute"]["521"], 7);
        r.sample(counts(5, 1, 0)); // counters that went back: a new process
        assert_eq!(r.series("requests").last(), Some(&5));
        for i in 0..1000 {
            r.sample(counts(i * 2, 0, 0));
        }
        assert_eq!(r.seconds.len(), SECONDS);
        assert_eq!(r.series("requests").last(), Some(&2));
    }

    #[test]
    fn pools_come_and_go_with_the_config() {
        let h = History::default();
        h.sample([("app", counts(0, 0, 0)), ("api", counts(0, 0, 0))]);
        h.sample([("app", counts(10, 1, 0)), ("api", counts(4, 0, 0))]);
        assert_eq!(h.of("app").map(|r| r.series("requests")), Some(vec![10]));
        h.sample([("app", counts(12, 1, 0))]);
        assert!(h.of("api").is_none(), "removed by a reload");
    }

    #[test]
    fn failures_count_as_the_error_cloudflare_would_show() {
        use TrafficFailure::*;
        let cases = [
            ((Refused, true), "521"),
            ((Timeout, true), "522"),
            ((NoRoute, true), "523"),
            ((Tls, true), "525"),
            ((Reset, true), "520"),
            ((Other, true), "520"),
            ((Timeout, false), "524"),
            ((Reset, false), "520"),
            ((BadResponse, false), "520"),
        ];
        for ((failure, connect), code) in cases {
            assert_eq!(
                SERIES[class(failure, connect)],
                code,
                "{failure:?} {connect}"
            );
        }
    }
}
