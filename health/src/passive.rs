//! Passive detection: what real requests tell about one backend. Pure state, no I/O and no
//! clock (time is given to [`Passive::observe`]), so every rule is tested directly.
//!
//! Each attempt of a request ends in one [`Attempt`] outcome, and only what the backend itself
//! did counts: a visitor that closes its connection, stalls its body or sends one the backend
//! refuses early never reaches this type (the data path reports the backend's answer as an
//! answer, whatever its status). Three rules read the outcomes:
//!
//! | rule | counts | resets | takes the backend out |
//! |---|---|---|---|
//! | failure streak | failed connects, connections broken before an answer, answers that are not HTTP | an answer | at `passive_fall` in a row |
//! | status streak | answers with a `retry_on_status` status | any other answer | at `status_fall` in a row |
//! | failure rate | every failure above, `retry_on_status` answers included | the window's end | at `percent` % of at least `min_requests` in `window` |
//!
//! A successful connect is not an answer: a backend that accepts connections and then resets
//! every request still makes a streak. An ejection that a request's content could have brought
//! about (anything after the request went out: a broken connection, a bad answer, a status, a
//! rate) is [`Ejection::bounded`]: the pool lets it happen only while it keeps enough backends
//! (see [`may_eject`]). A failed connect is not: nothing of the request was sent.

use crate::state::{Reason, TrafficFailure};
use holdfast_config::FailureRatePolicy;
use std::time::Instant;

/// How one attempt at a backend ended, as far as its health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The connection could not be opened (refused, timed out, no route, TLS): nothing was
    /// sent.
    ConnectFailed(TrafficFailure),
    /// The request went out and no answer came: the connection broke (`Reset`), stayed silent
    /// past its deadline (`Timeout`), or what came back is not HTTP (`BadResponse`).
    Broken(TrafficFailure),
    /// An answer with a status the pool retries on (502, 503, 504 by default).
    RetryableStatus,
    /// Any other answer, whatever its status: a 4xx is the backend doing its job.
    Answered,
}

impl Attempt {
    fn is_failure(self) -> bool {
        !matches!(self, Attempt::Answered)
    }
}

/// The thresholds of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassivePolicy {
    /// Failed connects and broken connections in a row that take a backend out.
    pub passive_fall: u32,
    /// `retry_on_status` answers in a row that take a backend out.
    pub status_fall: u32,
    pub failure_rate: FailureRatePolicy,
}

/// A backend passive detection wants out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub reason: Reason,
    /// Subject to the pool's ejection cap: what the request carried could have caused it.
    pub bounded: bool,
    /// For the failure rate: failures and requests counted in the window.
    pub rate: Option<(u32, u32)>,
}

impl Ejection {
    /// The reason, as in metrics and logs (`reset`, `bad_status`, `failure_rate`...).
    pub fn label(&self) -> &'static str {
        match self.reason {
            Reason::Traffic(kind) => kind.as_str(),
            Reason::FailureRate => "failure_rate",
            Reason::ChecksPassed | Reason::CheckFailed(_) => "check",
        }
    }
}

/// The failure-rate window: opened by a failure, so a backend that does not fail counts
/// nothing.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    requests: u32,
    failures: u32,
}

/// The passive detector of one backend.
#[derive(Debug, Clone)]
pub struct Passive {
    policy: PassivePolicy,
    failures: u32,
    bad_statuses: u32,
    window: Option<Window>,
}

impl Passive {
    pub fn new(policy: PassivePolicy) -> Self {
        Passive {
            policy,
            failures: 0,
            bad_statuses: 0,
            window: None,
        }
    }

    /// Whether a good answer would change nothing: no streak and no open window. While it
    /// holds, the data path need not report good answers at all.
    pub fn is_idle(&self) -> bool {
        self.failures == 0 && self.bad_statuses == 0 && self.window.is_none()
    }

    /// The thresholds it works with.
    pub fn policy(&self) -> PassivePolicy {
        self.policy
    }

    /// Failed connects and broken connections in a row so far.
    pub fn failure_streak(&self) -> u32 {
        self.failures
    }

    /// Forgets every count (the backend came back, or a new policy applies).
    pub fn reset(&mut self) {
        self.failures = 0;
        self.bad_statuses = 0;
        self.window = None;
    }

    /// Takes in one attempt's outcome, at `now`: the ejection it calls for, if any. The streak
    /// or window that called for it starts again.
    pub fn observe(&mut self, attempt: Attempt, now: Instant) -> Option<Ejection> {
        let rate = self.count(attempt.is_failure(), now);
        let streak = match attempt {
            Attempt::Answered => {
                self.failures = 0;
                self.bad_statuses = 0;
                None
            }
            Attempt::RetryableStatus => {
                self.bad_statuses = self.bad_statuses.saturating_add(1);
                (self.bad_statuses >= self.policy.status_fall.max(1)).then(|| {
                    self.bad_statuses = 0;
                    Ejection {
                        reason: Reason::Traffic(TrafficFailure::BadStatus),
                        bounded: true,
                        rate: None,
                    }
                })
            }
            Attempt::ConnectFailed(kind) | Attempt::Broken(kind) => {
                self.failures = self.failures.saturating_add(1);
                (self.failures >= self.policy.passive_fall.max(1)).then(|| {
                    self.failures = 0;
                    Ejection {
                        reason: Reason::Traffic(kind),
                        bounded: matches!(attempt, Attempt::Broken(_)),
                        rate: None,
                    }
                })
            }
        };
        streak.or(rate.map(|counts| Ejection {
            reason: Reason::FailureRate,
            bounded: true,
            rate: Some(counts),
        }))
    }

    /// Counts one request for the failure rate; the failures and requests of the window when
    /// this one takes it to the threshold.
    fn count(&mut self, failed: bool, now: Instant) -> Option<(u32, u32)> {
        let policy = self.policy.failure_rate;
        if policy.percent == 0 {
            return None;
        }
        let expired = |w: &Window| now.saturating_duration_since(w.start) >= policy.window;
        if self.window.as_ref().is_some_and(expired) {
            self.window = None;
        }
        let window = match (&mut self.window, failed) {
            (Some(window), _) => window,
            (None, false) => return None, // no failure in the window: nothing to weigh
            (None, true) => self.window.insert(Window {
                start: now,
                requests: 0,
                failures: 0,
            }),
        };
        window.requests = window.requests.saturating_add(1);
        if !failed {
            return None;
        }
        window.failures = window.failures.saturating_add(1);
        let (failures, requests) = (window.failures, window.requests);
        let crossed = requests >= policy.min_requests
            && u64::from(failures) * 100 >= u64::from(policy.percent) * u64::from(requests);
        if !crossed {
            return None;
        }
        self.window = None;
        Some((failures, requests))
    }
}

/// Whether a pool of `total` backends, `out` of them already unusable and `usable_others` usable
/// besides this one, may let passive detection take one more out on a bounded ejection: never
/// the last that can serve, and never past `max_percent` % of the pool out (one always may go,
/// so that a pool of two can lose its broken one). Like Envoy's `max_ejection_percent`: a
/// visitor whose requests make backends fail can cost the pool a share of its backends at most.
pub fn may_eject(total: usize, out: usize, usable_others: usize, max_percent: u32) -> bool {
    if usable_others == 0 {
        return false;
    }
    out == 0 || (out + 1) * 100 <= total.saturating_mul(max_percent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Attempt::*;
    use TrafficFailure::*;

    fn at(ms: u64) -> Instant {
        use std::sync::OnceLock;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    fn passive(passive_fall: u32, status_fall: u32, percent: u32) -> Passive {
        Passive::new(PassivePolicy {
            passive_fall,
            status_fall,
            failure_rate: FailureRatePolicy {
                percent,
                min_requests: 20,
                window: Duration::from_secs(10),
            },
        })
    }

    /// Feeds `outcomes` in order, 1 ms apart; the index and ejection of each that called for
    /// one.
    fn run(p: &mut Passive, outcomes: &[Attempt]) -> Vec<(usize, Reason, bool)> {
        outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, &o)| p.observe(o, at(i as u64)).map(|e| (i, e.reason, e.bounded)))
            .collect()
    }

    /// (passive_fall, status_fall, outcomes, ejections: (index, reason, bounded))
    type Case = (
        u32,
        u32,
        &'static [Attempt],
        &'static [(usize, Reason, bool)],
    );

    #[test]
    fn the_rules_as_a_table() {
        const BS: Reason = Reason::Traffic(BadStatus);
        let cases: &[Case] = &[
            // One refused connect with the default passive_fall of 1: out, not bounded.
            (
                1,
                5,
                &[ConnectFailed(Refused)],
                &[(0, Reason::Traffic(Refused), false)],
            ),
            // A broken connection is bounded: the request went out.
            (1, 5, &[Broken(Reset)], &[(0, Reason::Traffic(Reset), true)]),
            (
                1,
                5,
                &[Broken(BadResponse)],
                &[(0, Reason::Traffic(BadResponse), true)],
            ),
            // passive_fall 3: an answer in between resets the streak.
            (
                3,
                5,
                &[
                    Broken(Reset),
                    Broken(Reset),
                    Answered,
                    Broken(Reset),
                    Broken(Reset),
                ],
                &[],
            ),
            (
                3,
                5,
                &[ConnectFailed(Timeout), Broken(Timeout), Broken(Reset)],
                &[(2, Reason::Traffic(Reset), true)],
            ),
            // A 4xx or any non-retryable status is an answer: it never counts.
            (1, 1, &[Answered, Answered, Answered], &[]),
            // status_fall 3 whatever passive_fall is (issue 14 #6: every retry connected afresh
            // and reset the count, so passive_fall >= 2 kept such a backend in).
            (
                3,
                3,
                &[RetryableStatus, RetryableStatus, RetryableStatus],
                &[(2, BS, true)],
            ),
            (
                3,
                3,
                &[
                    RetryableStatus,
                    RetryableStatus,
                    Answered,
                    RetryableStatus,
                    RetryableStatus,
                ],
                &[],
            ),
            // The status streak starts again after an ejection.
            (
                1,
                2,
                &[
                    RetryableStatus,
                    RetryableStatus,
                    RetryableStatus,
                    RetryableStatus,
                ],
                &[(1, BS, true), (3, BS, true)],
            ),
            // Retryable answers do not break the failure streak, nor failures the status streak.
            (
                2,
                2,
                &[Broken(Reset), RetryableStatus, Broken(Reset)],
                &[(2, Reason::Traffic(Reset), true)],
            ),
        ];
        for (i, (passive_fall, status_fall, outcomes, want)) in cases.iter().enumerate() {
            let mut p = passive(*passive_fall, *status_fall, 0);
            assert_eq!(run(&mut p, outcomes), *want, "case {i}: {outcomes:?}");
        }
    }

    #[test]
    fn one_failure_in_three_crosses_a_quarter_once_enough_requests_came() {
        let mut p = passive(100, 100, 25);
        let outcomes: Vec<Attempt> = (1..=30)
            .map(|i| if i % 3 == 0 { Broken(Reset) } else { Answered })
            .collect();
        let ejections: Vec<_> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, &o)| p.observe(o, at(i as u64)).map(|e| (i + 1, e)))
            .collect();
        // Counting starts at the first failure (request 3): request 24 is the 8th failure, 8 of
        // 22 counted (36 %); request 21 was 7 of 19, too few.
        assert_eq!(ejections.len(), 1, "{ejections:?}");
        let (request, e) = ejections[0];
        assert_eq!(
            (request, e.reason, e.bounded, e.rate),
            (24, Reason::FailureRate, true, Some((8, 22)))
        );
    }

    #[test]
    fn a_low_share_never_crosses() {
        let mut p = passive(100, 100, 25);
        for i in 1..=1000u64 {
            let o = if i % 5 == 0 { Broken(Reset) } else { Answered };
            assert_eq!(p.observe(o, at(i)), None);
        }
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let mut p = Passive::new(PassivePolicy {
            passive_fall: 100,
            status_fall: 100,
            failure_rate: FailureRatePolicy {
                percent: 50,
                min_requests: 4,
                window: Duration::from_secs(10),
            },
        });
        for _ in 0..3 {
            assert_eq!(p.observe(RetryableStatus, at(0)), None);
        }
        // 11 s later: a new window; the three old failures do not count.
        let later = at(11_000);
        assert_eq!(p.observe(RetryableStatus, later), None);
        for _ in 0..3 {
            assert_eq!(p.observe(Answered, later), None);
        }
        // 2 of 5 (40 %), then 3 of 6 (50 %).
        assert_eq!(p.observe(RetryableStatus, later), None);
        let e = p.observe(RetryableStatus, later).unwrap();
        assert_eq!((e.reason, e.rate), (Reason::FailureRate, Some((3, 6))));
        // A crossing closes the window: it takes as many requests again to cross again.
        for _ in 0..3 {
            assert_eq!(p.observe(RetryableStatus, later), None);
        }
    }

    #[test]
    fn answers_before_any_failure_weigh_nothing_and_cost_nothing() {
        let mut p = passive(100, 100, 50);
        for i in 0..100 {
            p.observe(Answered, at(i));
            assert!(p.is_idle());
        }
        p.observe(Broken(Reset), at(200));
        assert!(!p.is_idle());
        assert_eq!(p.failure_streak(), 1);
    }

    #[test]
    fn the_ejection_cap() {
        // (total, out, usable others, percent, may eject)
        let cases = [
            (1, 0, 0, 50, false), // the last that can serve stays
            (2, 0, 1, 50, true),  // primary + backup: the broken one may go
            (2, 1, 0, 100, false),
            (3, 0, 2, 50, true),
            (3, 1, 1, 50, false), // a second of three would be 67 %
            (3, 1, 1, 70, true),
            (10, 0, 9, 10, true), // one always may go
            (10, 1, 8, 10, false),
            (10, 4, 5, 50, true),
            (10, 5, 4, 50, false),
        ];
        for (total, out, others, percent, want) in cases {
            assert_eq!(
                may_eject(total, out, others, percent),
                want,
                "{total} backends, {out} out, {others} others usable, {percent} %"
            );
        }
    }
}
