//! The failure-rate threshold of passive detection: a backend failing a large share of real
//! requests is taken out even when its failures never come in a row (a backend failing one
//! request in three never makes `passive_fall` or `status_fall` consecutive ones).
//!
//! Counted per backend in a window that opens at the first failure after the previous one has
//! expired: a success costs one relaxed atomic add and never reads the clock; a failure reads
//! the time given to it. A crossing starts a new window, so one burst takes a backend out once.

use holdfast_config::FailureRatePolicy;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// One backend's counts.
#[derive(Debug)]
pub struct FailureRate {
    policy: FailureRatePolicy,
    epoch: Instant,
    /// Start of the current window, in milliseconds since `epoch`.
    window_start: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
}

impl FailureRate {
    pub fn new(policy: FailureRatePolicy, epoch: Instant) -> Self {
        FailureRate {
            policy,
            epoch,
            window_start: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// A request the backend served.
    #[inline]
    pub fn success(&self) {
        if self.policy.percent != 0 {
            self.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request the backend failed, at `now`: the failures and requests of the window when
    /// this one takes the share to the threshold (with enough requests), else `None`.
    pub fn failure(&self, now: Instant) -> Option<(u32, u32)> {
        let policy = &self.policy;
        if policy.percent == 0 {
            return None;
        }
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let start = self.window_start.load(Ordering::Relaxed);
        let window_ms = u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(start) >= window_ms
            && self
                .window_start
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.requests.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let crossed = requests >= policy.min_requests
            && u64::from(failures) * 100 >= u64::from(policy.percent) * u64::from(requests);
        if !crossed {
            return None;
        }
        self.window_start.store(now_ms, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        Some((failures, requests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rate(percent: u32, min_requests: u32, window_s: u64) -> (FailureRate, Instant) {
        let epoch = Instant::now();
        let policy = FailureRatePolicy {
            percent,
            min_requests,
            window: Duration::from_secs(window_s),
        };
        (FailureRate::new(policy, epoch), epoch)
    }

    #[test]
    fn one_failure_in_three_crosses_a_quarter_once_enough_requests_came() {
        let (r, t0) = rate(25, 20, 10);
        let mut crossed = None;
        for i in 1..=30u32 {
            if i % 3 == 0 {
                if let Some(c) = r.failure(t0 + Duration::from_millis(u64::from(i))) {
                    crossed = Some((i, c));
                    break;
                }
            } else {
                r.success();
            }
        }
        // Request 21 is the 7th failure: 7 of 21 (33 %), the first time with 20 requests.
        assert_eq!(crossed, Some((21, (7, 21))));
    }

    #[test]
    fn a_low_share_never_crosses() {
        let (r, t0) = rate(25, 20, 10);
        for i in 1..=1000u32 {
            if i % 5 == 0 {
                assert_eq!(r.failure(t0 + Duration::from_millis(u64::from(i))), None);
            } else {
                r.success();
            }
        }
    }

    #[test]
    fn too_few_requests_never_cross() {
        let (r, t0) = rate(25, 20, 10);
        for i in 0..19 {
            assert_eq!(r.failure(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.failure(t0), Some((20, 20)));
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let (r, t0) = rate(50, 4, 10);
        assert_eq!(r.failure(t0), None);
        assert_eq!(r.failure(t0), None);
        assert_eq!(r.failure(t0), None);
        // 11 s later: a new window; the three old failures do not count.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(r.failure(later), None);
        r.success();
        r.success();
        r.success();
        // 2 of 5 (40 %), then 3 of 6 (50 %).
        assert_eq!(r.failure(later), None);
        assert_eq!(r.failure(later), Some((3, 6)));
    }

    #[test]
    fn off_at_zero_percent() {
        let (r, t0) = rate(0, 1, 10);
        for _ in 0..100 {
            assert_eq!(r.failure(t0), None);
        }
    }
}
