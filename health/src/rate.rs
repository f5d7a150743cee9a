//! The failure-rate threshold of passive detection: a backend failing a large share of real
//! requests is taken out even when its failures never come in a row (a backend failing one
//! request in three never makes `passive_fall` or `status_fall` consecutive ones).
//!
//! Counted per backend in a window that opens at the first failure after the previous one has
//! expired, so a backend that does not fail costs nothing but a relaxed load of a line nobody
//! writes: successes are counted only while the window holds a failure (a shared counter
//! written by every request would bounce between the cores). A failure reads the time given to
//! it; every 256th success counted checks whether the window has expired. A crossing starts a
//! new window, so one burst takes a backend out once.

use holdfast_config::FailureRatePolicy;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// One backend's counts, on cache lines of their own (they are written while a backend fails,
/// beside the health flags every request reads).
#[derive(Debug)]
#[repr(align(128))]
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
        if self.failures.load(Ordering::Relaxed) == 0 {
            return; // no failure in the window: nothing to weigh
        }
        let counted = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if counted % 256 == 0 {
            self.expire(Instant::now());
        }
    }

    /// Closes the window once it is over, so that successes stop being counted.
    fn expire(&self, now: Instant) {
        let start = self.window_start.load(Ordering::Relaxed);
        if self.millis(now).saturating_sub(start) >= self.window_millis() {
            self.failures.store(0, Ordering::Relaxed);
            self.requests.store(0, Ordering::Relaxed);
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn window_millis(&self) -> u64 {
        u64::try_from(self.policy.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// A request the backend failed, at `now`: the failures and requests of the window when
    /// this one takes the share to the threshold (with enough requests), else `None`.
    pub fn failure(&self, now: Instant) -> Option<(u32, u32)> {
        let policy = &self.policy;
        if policy.percent == 0 {
            return None;
        }
        let now_ms = self.millis(now);
        let start = self.window_start.load(Ordering::Relaxed);
        if now_ms.saturating_sub(start) >= self.window_millis()
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
        // Counting starts at the first failure (request 3): request 24 is the 8th failure, 8 of
        // 22 counted (36 %); request 21 was 7 of 19, too few.
        assert_eq!(crossed, Some((24, (8, 22))));
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
    fn successes_count_only_while_the_window_holds_a_failure() {
        let (r, t0) = rate(50, 4, 10);
        for _ in 0..100 {
            r.success();
        }
        // The 100 successes before any failure weigh nothing: 1 of 1, then 2 of 3, 3 of 4.
        assert_eq!(r.failure(t0), None);
        r.success();
        assert_eq!(r.failure(t0), None);
        assert_eq!(r.failure(t0), Some((3, 4)));
    }

    #[test]
    fn off_at_zero_percent() {
        let (r, t0) = rate(0, 1, 10);
        for _ in 0..100 {
            assert_eq!(r.failure(t0), None);
        }
    }
}
