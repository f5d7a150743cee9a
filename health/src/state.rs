//! The health state machine of one backend: pure, no I/O and no clock, so every rule is tested
//! directly and deterministically.
//!
//! A backend is [`Status::Up`] while every active check of its pool considers it up. Each check
//! keeps its own streaks: `fall` consecutive failures take it down, `rise` consecutive passes
//! bring it back. The first result of a check decides at once (the start-up probe), so the first
//! visitor is not sent to a dead backend, nor a live one kept out for `rise` intervals.
//!
//! Real traffic reports too: when passive detection ([`crate::passive`]) takes a backend out,
//! it is down at once, and every check must then pass `rise` times in a row before it serves
//! again.
//!
//! A backend taken out again soon after coming back is flapping: it stays out longer each time
//! ([`HoldDown`]), whatever its checks say, so that traffic does not bounce between tiers. Time
//! is given to [`HealthState::observe`], never read.

use holdfast_config::HoldDown;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Whether a backend may take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Not yet probed: takes no traffic.
    Unknown,
    /// Takes traffic.
    Up,
    /// Takes no traffic until its checks pass `rise` times in a row.
    Down,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Up => "up",
            Status::Down => "down",
        }
    }
}

/// How a real request failed to reach a backend (the would-be Cloudflare 52x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficFailure {
    /// Connection refused (RST to the SYN): Cloudflare's 521.
    Refused,
    /// No answer to the SYN in time: Cloudflare's 522.
    Timeout,
    /// Connection reset or closed before a response: Cloudflare's 520.
    Reset,
    /// TLS handshake failed: Cloudflare's 525.
    Tls,
    /// No route to the backend's address: Cloudflare's 523.
    NoRoute,
    /// Any other failure to connect.
    Other,
    /// Answered with something that is not an HTTP response (or one holdfast cannot pass on)
    /// before any byte reached the visitor: Cloudflare's 520.
    BadResponse,
    /// Answered with a status the pool retries on (502, 503, 504 by default): reachable, but
    /// not serving.
    BadStatus,
}

impl TrafficFailure {
    pub const ALL: [TrafficFailure; 8] = [
        TrafficFailure::Refused,
        TrafficFailure::Timeout,
        TrafficFailure::Reset,
        TrafficFailure::Tls,
        TrafficFailure::NoRoute,
        TrafficFailure::Other,
        TrafficFailure::BadResponse,
        TrafficFailure::BadStatus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrafficFailure::Refused => "refused",
            TrafficFailure::Timeout => "timeout",
            TrafficFailure::Reset => "reset",
            TrafficFailure::Tls => "tls",
            TrafficFailure::NoRoute => "no_route",
            TrafficFailure::Other => "other",
            TrafficFailure::BadResponse => "bad_response",
            TrafficFailure::BadStatus => "bad_status",
        }
    }
}

/// Something learned about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Active check number `check` (its index in the pool's policy) passed or failed.
    Check { check: usize, passed: bool },
    /// Passive detection takes the backend out, for this reason (`Traffic` or `FailureRate`).
    Ejected(Reason),
}

/// Why a backend changed status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Every check passed (`rise` times in a row, or once at start-up).
    ChecksPassed,
    /// Check number `.0` failed (`fall` times in a row, or once at start-up).
    CheckFailed(usize),
    /// Real traffic failed this way `passive_fall` times in a row (`status_fall` for
    /// `BadStatus`).
    Traffic(TrafficFailure),
    /// Real traffic failed at the failure-rate threshold or above.
    FailureRate,
}

/// A change of status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
    pub reason: Reason,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from.as_str(), self.to.as_str())
    }
}

/// Thresholds of one active check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone)]
struct CheckStreaks {
    thresholds: Thresholds,
    /// `None` until the first result.
    up: Option<bool>,
    passes: u32,
    failures: u32,
}

/// Ejections remembered per backend, at most (more would not lengthen a capped hold-down).
const EJECTIONS_KEPT: usize = 64;

/// The health of one backend.
#[derive(Debug, Clone)]
pub struct HealthState {
    checks: Vec<CheckStreaks>,
    status: Status,
    hold_down: HoldDown,
    /// When the backend was taken out (from up), within the flap window.
    ejections: VecDeque<Instant>,
    /// Kept out until then, even with every check passing.
    held_until: Option<Instant>,
}

impl HealthState {
    /// A backend not yet probed, judged by `checks` (at least one), without hold-down.
    pub fn new(checks: &[Thresholds]) -> Self {
        Self::with_hold_down(checks, HoldDown::OFF)
    }

    /// Like [`new`](Self::new), a flapping backend kept out as `hold_down` says.
    pub fn with_hold_down(checks: &[Thresholds], hold_down: HoldDown) -> Self {
        HealthState {
            checks: checks
                .iter()
                .map(|&thresholds| CheckStreaks {
                    thresholds,
                    up: None,
                    passes: 0,
                    failures: 0,
                })
                .collect(),
            status: Status::Unknown,
            hold_down,
            ejections: VecDeque::new(),
            held_until: None,
        }
    }

    /// Takes a reload's settings. What was learned stays: status, ejections and hold-down.
    /// With `same_checks`, each check keeps its streaks under its new thresholds; otherwise
    /// (checks added, removed or changed) every check starts from the backend's status, so
    /// that a backend that is down stays down until every check has passed `rise` times.
    pub fn reconfigure(&mut self, checks: &[Thresholds], hold_down: HoldDown, same_checks: bool) {
        self.hold_down = hold_down;
        if same_checks && checks.len() == self.checks.len() {
            for (c, &thresholds) in self.checks.iter_mut().zip(checks) {
                c.thresholds = thresholds;
            }
            return;
        }
        let up = match self.status {
            Status::Unknown => None,
            Status::Up => Some(true),
            Status::Down => Some(false),
        };
        self.checks = checks
            .iter()
            .map(|&thresholds| CheckStreaks {
                thresholds,
                up,
                passes: 0,
                failures: 0,
            })
            .collect();
    }

    /// What an earlier process knew, handed over at an upgrade: `status`, and its ejections
    /// `ago` before `now` (newest last), and how much longer it is held down. A backend down
    /// stays down until every check has passed `rise` times; one up stays up until a check
    /// fails `fall` times (or real traffic takes it out). Unknown changes nothing.
    pub fn restore(
        &mut self,
        status: Status,
        ago: &[Duration],
        held_for: Option<Duration>,
        now: Instant,
    ) {
        if status == Status::Unknown {
            return;
        }
        let up = Some(status == Status::Up);
        for c in &mut self.checks {
            c.up = up;
            c.passes = 0;
            c.failures = 0;
        }
        self.status = status;
        self.ejections = ago
            .iter()
            .filter_map(|&ago| now.checked_sub(ago))
            .rev()
            .take(EJECTIONS_KEPT)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        // Never longer than this config allows, whatever the file says.
        self.held_until = held_for
            .map(|d| d.min(self.hold_down.max))
            .filter(|d| !d.is_zero())
            .map(|d| now + d);
    }

    /// Its ejections in the flap window, as durations before `now`, oldest first.
    pub fn ejections_ago(&self, now: Instant) -> Vec<Duration> {
        self.ejections
            .iter()
            .map(|&at| now.saturating_duration_since(at))
            .filter(|&ago| ago < self.hold_down.window)
            .collect()
    }

    /// How much longer the backend is kept out whatever its checks say, at `now`.
    pub fn held_for(&self, now: Instant) -> Option<Duration> {
        self.held_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Ejections within the flap window before `now`.
    pub fn recent_ejections(&self, now: Instant) -> usize {
        self.ejections
            .iter()
            .filter(|&&at| now.saturating_duration_since(at) < self.hold_down.window)
            .count()
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Takes in one outcome, learned at `now`; returns the change of status it caused, if any.
    pub fn observe(&mut self, outcome: Outcome, now: Instant) -> Option<Transition> {
        let reason = match outcome {
            Outcome::Check { check, passed } => {
                let c = self.checks.get_mut(check)?;
                if passed {
                    c.failures = 0;
                    c.passes = c.passes.saturating_add(1);
                    if c.up != Some(true) && (c.up.is_none() || c.passes >= c.thresholds.rise) {
                        c.up = Some(true);
                    }
                    Reason::ChecksPassed
                } else {
                    c.passes = 0;
                    c.failures = c.failures.saturating_add(1);
                    if c.up != Some(false) && (c.up.is_none() || c.failures >= c.thresholds.fall) {
                        c.up = Some(false);
                    }
                    Reason::CheckFailed(check)
                }
            }
            Outcome::Ejected(reason) => {
                if self.status == Status::Down {
                    return None;
                }
                self.take_out();
                reason
            }
        };
        let to = self.derived_status();
        if to == self.status {
            return None;
        }
        if to == Status::Up && self.held_for(now).is_some() {
            return None;
        }
        let from = std::mem::replace(&mut self.status, to);
        if to == Status::Up {
            self.held_until = None;
        }
        if from == Status::Up && to == Status::Down {
            self.eject(now);
        }
        let reason = match (to, reason) {
            // The last check to pass is not the reason a backend is down.
            (Status::Down, Reason::ChecksPassed) => self.first_failing_check(),
            (_, reason) => reason,
        };
        Some(Transition { from, to, reason })
    }

    /// Down from real traffic: every check must pass `rise` times again.
    fn take_out(&mut self) {
        for c in &mut self.checks {
            c.up = Some(false);
            c.passes = 0;
        }
    }

    /// Remembers an ejection and holds the backend down for the earlier ones in the window.
    fn eject(&mut self, now: Instant) {
        let window = self.hold_down.window;
        self.ejections
            .retain(|&at| now.saturating_duration_since(at) < window);
        let earlier = u32::try_from(self.ejections.len()).unwrap_or(u32::MAX);
        let hold = self.hold_down.after(earlier);
        self.held_until = (!hold.is_zero()).then(|| now + hold);
        if self.ejections.len() == EJECTIONS_KEPT {
            self.ejections.pop_front();
        }
        self.ejections.push_back(now);
    }

    fn derived_status(&self) -> Status {
        if self.checks.iter().any(|c| c.up == Some(false)) {
            Status::Down
        } else if self.checks.iter().all(|c| c.up == Some(true)) {
            Status::Up
        } else {
            Status::Unknown
        }
    }

    fn first_failing_check(&self) -> Reason {
        let i = self.checks.iter().position(|c| c.up == Some(false));
        Reason::CheckFailed(i.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed origin and times after it, in seconds.
    fn at(seconds: u64) -> Instant {
        use std::sync::OnceLock;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(seconds)
    }

    fn state(rise: u32, fall: u32) -> HealthState {
        HealthState::new(&[Thresholds { rise, fall }])
    }

    fn ejected(kind: TrafficFailure) -> Outcome {
        Outcome::Ejected(Reason::Traffic(kind))
    }

    fn check(s: &mut HealthState, passed: bool) -> Option<Transition> {
        s.observe(Outcome::Check { check: 0, passed }, at(0))
    }

    #[test]
    fn first_result_decides_at_start_up() {
        let mut s = state(3, 3);
        assert_eq!(s.status(), Status::Unknown);
        let t = check(&mut s, true).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (Status::Unknown, Status::Up, Reason::ChecksPassed)
        );

        let mut s = state(3, 3);
        let t = check(&mut s, false).unwrap();
        assert_eq!((t.to, t.reason), (Status::Down, Reason::CheckFailed(0)));
    }

    #[test]
    fn fall_consecutive_failures_take_it_down() {
        let mut s = state(2, 3);
        check(&mut s, true);
        assert_eq!(check(&mut s, false), None);
        assert_eq!(check(&mut s, false), None);
        // A pass in between resets the streak.
        assert_eq!(check(&mut s, true), None);
        assert_eq!(check(&mut s, false), None);
        assert_eq!(check(&mut s, false), None);
        let t = check(&mut s, false).unwrap();
        assert_eq!((t.from, t.to), (Status::Up, Status::Down));
    }

    #[test]
    fn rise_consecutive_passes_bring_it_back() {
        let mut s = state(3, 1);
        check(&mut s, false);
        assert_eq!(s.status(), Status::Down);
        assert_eq!(check(&mut s, true), None);
        assert_eq!(check(&mut s, true), None);
        assert_eq!(check(&mut s, false), None);
        assert_eq!(check(&mut s, true), None);
        assert_eq!(check(&mut s, true), None);
        let t = check(&mut s, true).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (Status::Down, Status::Up, Reason::ChecksPassed)
        );
    }

    #[test]
    fn one_refused_connect_takes_it_down_and_rise_brings_it_back() {
        let mut s = state(2, 5);
        check(&mut s, true);
        let t = s.observe(ejected(TrafficFailure::Refused), at(0)).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (
                Status::Up,
                Status::Down,
                Reason::Traffic(TrafficFailure::Refused)
            )
        );
        // Already down: more failures change nothing.
        assert_eq!(s.observe(ejected(TrafficFailure::Refused), at(0)), None);
        assert_eq!(check(&mut s, true), None);
        assert_eq!(check(&mut s, true).map(|t| t.to), Some(Status::Up));
    }

    #[test]
    fn every_check_must_pass() {
        let thresholds = Thresholds { rise: 1, fall: 1 };
        let mut s = HealthState::new(&[thresholds, thresholds]);
        assert_eq!(
            s.observe(
                Outcome::Check {
                    check: 0,
                    passed: true
                },
                at(0)
            ),
            None
        );
        assert_eq!(s.status(), Status::Unknown);
        let t = s
            .observe(
                Outcome::Check {
                    check: 1,
                    passed: true,
                },
                at(0),
            )
            .unwrap();
        assert_eq!(t.to, Status::Up);
        let t = s
            .observe(
                Outcome::Check {
                    check: 1,
                    passed: false,
                },
                at(0),
            )
            .unwrap();
        assert_eq!((t.to, t.reason), (Status::Down, Reason::CheckFailed(1)));
        // Check 0 passing again does not bring it back while check 1 fails.
        assert_eq!(
            s.observe(
                Outcome::Check {
                    check: 0,
                    passed: true
                },
                at(0)
            ),
            None
        );
        let t = s
            .observe(
                Outcome::Check {
                    check: 1,
                    passed: true,
                },
                at(0),
            )
            .unwrap();
        assert_eq!(t.to, Status::Up);
    }

    #[test]
    fn unknown_check_index_is_ignored() {
        let mut s = state(1, 1);
        assert_eq!(
            s.observe(
                Outcome::Check {
                    check: 7,
                    passed: true
                },
                at(0)
            ),
            None
        );
        assert_eq!(s.status(), Status::Unknown);
    }

    fn flapping(base: u64, max: u64, window: u64) -> HealthState {
        HealthState::with_hold_down(
            &[Thresholds { rise: 2, fall: 1 }],
            HoldDown {
                base: Duration::from_secs(base),
                max: Duration::from_secs(max),
                window: Duration::from_secs(window),
            },
        )
    }

    fn check_at(s: &mut HealthState, passed: bool, t: u64) -> Option<Status> {
        s.observe(Outcome::Check { check: 0, passed }, at(t))
            .map(|t| t.to)
    }

    #[test]
    fn a_first_ejection_costs_only_rise() {
        let mut s = flapping(10, 300, 300);
        assert_eq!(check_at(&mut s, true, 0), Some(Status::Up));
        assert_eq!(check_at(&mut s, false, 1), Some(Status::Down));
        assert_eq!(s.held_for(at(1)), None);
        assert_eq!(check_at(&mut s, true, 2), None);
        assert_eq!(check_at(&mut s, true, 3), Some(Status::Up));
    }

    #[test]
    fn each_ejection_in_the_window_holds_the_backend_out_longer() {
        let mut s = flapping(10, 300, 300);
        check_at(&mut s, true, 0);
        check_at(&mut s, false, 1);
        check_at(&mut s, true, 2);
        assert_eq!(check_at(&mut s, true, 3), Some(Status::Up));
        // Second ejection: 10 s out, however well the checks go.
        assert_eq!(check_at(&mut s, false, 4), Some(Status::Down));
        assert_eq!(s.held_for(at(4)), Some(Duration::from_secs(10)));
        for t in 5..14 {
            assert_eq!(check_at(&mut s, true, t), None, "at {t} s");
        }
        assert_eq!(check_at(&mut s, true, 14), Some(Status::Up));
        // Third: 20 s.
        assert_eq!(check_at(&mut s, false, 15), Some(Status::Down));
        assert_eq!(s.held_for(at(15)), Some(Duration::from_secs(20)));
        assert_eq!(s.recent_ejections(at(15)), 3);
        assert_eq!(check_at(&mut s, true, 34), None);
        assert_eq!(check_at(&mut s, true, 35), Some(Status::Up));
    }

    #[test]
    fn hold_down_is_capped_and_forgotten_after_the_window() {
        let mut s = flapping(10, 15, 60);
        let mut t = 0;
        check_at(&mut s, true, t);
        for _ in 0..4 {
            t += 1;
            assert_eq!(check_at(&mut s, false, t), Some(Status::Down));
            assert!(s.held_for(at(t)) <= Some(Duration::from_secs(15)));
            t += 16;
            check_at(&mut s, true, t);
            t += 1;
            assert_eq!(check_at(&mut s, true, t), Some(Status::Up));
        }
        // Quiet for longer than the window: the next ejection is a first one again.
        t += 61;
        assert_eq!(check_at(&mut s, false, t), Some(Status::Down));
        assert_eq!(s.held_for(at(t)), None);
    }

    #[test]
    fn a_traffic_ejection_counts_as_one() {
        let mut s = flapping(5, 300, 300);
        check_at(&mut s, true, 0);
        s.observe(ejected(TrafficFailure::Refused), at(1));
        check_at(&mut s, true, 2);
        assert_eq!(check_at(&mut s, true, 3), Some(Status::Up));
        let t = s.observe(ejected(TrafficFailure::Refused), at(4)).unwrap();
        assert_eq!(t.to, Status::Down);
        assert_eq!(s.held_for(at(4)), Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_failure_rate_takes_it_out_until_rise() {
        let mut s = state(2, 1);
        check(&mut s, true);
        let t = s
            .observe(Outcome::Ejected(Reason::FailureRate), at(0))
            .unwrap();
        assert_eq!((t.to, t.reason), (Status::Down, Reason::FailureRate));
        assert_eq!(
            s.observe(Outcome::Ejected(Reason::FailureRate), at(0)),
            None
        );
        assert_eq!(check(&mut s, true), None);
        assert_eq!(check(&mut s, true).map(|t| t.to), Some(Status::Up));
    }

    #[test]
    fn a_reload_keeps_what_was_learned() {
        let t = |rise, fall| Thresholds { rise, fall };
        // New thresholds for the same check: the streak goes on under them.
        let mut s = state(3, 3);
        check(&mut s, true);
        check(&mut s, false);
        s.reconfigure(&[t(3, 2)], HoldDown::OFF, true);
        assert_eq!(s.status(), Status::Up);
        let down = check(&mut s, false).unwrap();
        assert_eq!(
            down.to,
            Status::Down,
            "the second failure meets the new fall"
        );

        // Other checks: each starts from the status, so a backend down stays down until every
        // check has passed rise times; one up stays up.
        for (from, passes_to_up) in [(false, 2), (true, 0)] {
            let mut s = state(1, 1);
            check(&mut s, from);
            s.reconfigure(&[t(2, 1), t(2, 1)], HoldDown::OFF, false);
            assert_eq!(s.status() == Status::Up, from);
            for n in 0..passes_to_up {
                assert_eq!(s.status(), Status::Down, "after {n} passes");
                for i in 0..2 {
                    s.observe(
                        Outcome::Check {
                            check: i,
                            passed: true,
                        },
                        at(0),
                    );
                }
            }
            assert_eq!(s.status(), Status::Up);
        }

        // Held down stays held down.
        let mut s = HealthState::with_hold_down(
            &[t(1, 1)],
            HoldDown {
                base: Duration::from_secs(10),
                max: Duration::from_secs(60),
                window: Duration::from_secs(60),
            },
        );
        check(&mut s, true);
        s.observe(ejected(TrafficFailure::Refused), at(0));
        check(&mut s, true);
        s.observe(ejected(TrafficFailure::Refused), at(0));
        s.reconfigure(&[t(1, 1)], s.hold_down, false);
        assert_eq!(s.held_for(at(1)), Some(Duration::from_secs(9)));
        assert_eq!(s.recent_ejections(at(1)), 2);
    }

    #[test]
    fn a_restored_state_is_not_decided_by_the_first_check() {
        let t = Thresholds { rise: 2, fall: 2 };
        // Down, handed over: one pass is not enough (the start-up rule does not apply).
        let hold = HoldDown {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            window: Duration::from_secs(60),
        };
        let mut s = HealthState::with_hold_down(&[t], hold);
        s.restore(
            Status::Down,
            &[Duration::from_secs(3)],
            Some(Duration::from_secs(5)),
            at(10),
        );
        assert_eq!(s.status(), Status::Down);
        assert!(s
            .observe(
                Outcome::Check {
                    check: 0,
                    passed: true
                },
                at(20)
            )
            .is_none());
        assert_eq!(s.ejections_ago(at(20)), vec![Duration::from_secs(13)]);
        assert_eq!(
            s.observe(
                Outcome::Check {
                    check: 0,
                    passed: true
                },
                at(20)
            )
            .map(|t| t.to),
            Some(Status::Up)
        );

        // Held down: kept out until the hold-down is over, whatever the checks say; never
        // longer than the config's hold_down_max, whatever the file says.
        let hold = HoldDown {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            window: Duration::from_secs(60),
        };
        let mut s = HealthState::with_hold_down(&[t], hold);
        s.restore(Status::Down, &[], Some(Duration::from_secs(86_400)), at(10));
        assert_eq!(s.held_for(at(10)), Some(Duration::from_secs(10)), "clamped");
        let mut s = HealthState::with_hold_down(&[t], hold);
        s.restore(Status::Down, &[], Some(Duration::from_secs(5)), at(10));
        for _ in 0..3 {
            assert!(s
                .observe(
                    Outcome::Check {
                        check: 0,
                        passed: true
                    },
                    at(12)
                )
                .is_none());
        }
        assert_eq!(
            s.observe(
                Outcome::Check {
                    check: 0,
                    passed: true
                },
                at(16)
            )
            .map(|t| t.to),
            Some(Status::Up)
        );

        // Up, handed over: one failure is not enough.
        let mut s = HealthState::new(&[t]);
        s.restore(Status::Up, &[], None, at(10));
        assert!(s
            .observe(
                Outcome::Check {
                    check: 0,
                    passed: false
                },
                at(11)
            )
            .is_none());
        assert_eq!(
            s.observe(
                Outcome::Check {
                    check: 0,
                    passed: false
                },
                at(11)
            )
            .map(|t| t.to),
            Some(Status::Down)
        );
    }
}
