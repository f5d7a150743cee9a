//! The health state machine of one backend: pure, no I/O and no clock, so every rule is tested
//! directly and deterministically.
//!
//! A backend is [`Status::Up`] while every active check of its pool considers it up. Each check
//! keeps its own streaks: `fall` consecutive failures take it down, `rise` consecutive passes
//! bring it back. The first result of a check decides at once (the start-up probe), so the first
//! visitor is not sent to a dead backend, nor a live one kept out for `rise` intervals.
//!
//! Real traffic reports too: `passive_fall` consecutive connection failures (refused, timed out,
//! reset) take the backend down at once, and every check must then pass `rise` times in a row
//! before it serves again.

use std::fmt;

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
    /// Answered with a status the pool retries on (502, 503, 504 by default) `status_fall`
    /// times in a row: reachable, but not serving.
    BadStatus,
}

impl TrafficFailure {
    pub const ALL: [TrafficFailure; 7] = [
        TrafficFailure::Refused,
        TrafficFailure::Timeout,
        TrafficFailure::Reset,
        TrafficFailure::Tls,
        TrafficFailure::NoRoute,
        TrafficFailure::Other,
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
            TrafficFailure::BadStatus => "bad_status",
        }
    }
}

/// Something learned about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Active check number `check` (its index in the pool's policy) passed or failed.
    Check { check: usize, passed: bool },
    /// A real request reached the backend.
    TrafficOk,
    /// A real request could not reach the backend.
    TrafficFailed(TrafficFailure),
}

/// Why a backend changed status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Every check passed (`rise` times in a row, or once at start-up).
    ChecksPassed,
    /// Check number `.0` failed (`fall` times in a row, or once at start-up).
    CheckFailed(usize),
    /// Real traffic failed to connect `passive_fall` times in a row.
    Traffic(TrafficFailure),
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

/// The health of one backend.
#[derive(Debug, Clone)]
pub struct HealthState {
    checks: Vec<CheckStreaks>,
    passive_fall: u32,
    traffic_failures: u32,
    status: Status,
}

impl HealthState {
    /// A backend not yet probed, judged by `checks` (at least one) and `passive_fall`.
    pub fn new(checks: &[Thresholds], passive_fall: u32) -> Self {
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
            passive_fall: passive_fall.max(1),
            traffic_failures: 0,
            status: Status::Unknown,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Consecutive failed connects of real traffic since the last success.
    pub fn traffic_failures(&self) -> u32 {
        self.traffic_failures
    }

    /// Takes in one outcome; returns the change of status it caused, if any.
    pub fn observe(&mut self, outcome: Outcome) -> Option<Transition> {
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
            Outcome::TrafficOk => {
                self.traffic_failures = 0;
                return None;
            }
            Outcome::TrafficFailed(kind) => {
                self.traffic_failures = self.traffic_failures.saturating_add(1);
                if self.traffic_failures < self.passive_fall || self.status == Status::Down {
                    return None;
                }
                for c in &mut self.checks {
                    c.up = Some(false);
                    c.passes = 0;
                }
                Reason::Traffic(kind)
            }
        };
        let to = self.derived_status();
        if to == self.status {
            return None;
        }
        let from = std::mem::replace(&mut self.status, to);
        if to == Status::Up {
            self.traffic_failures = 0;
        }
        let reason = match (to, reason) {
            // The last check to pass is not the reason a backend is down.
            (Status::Down, Reason::ChecksPassed) => self.first_failing_check(),
            (_, reason) => reason,
        };
        Some(Transition { from, to, reason })
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

    fn state(rise: u32, fall: u32, passive_fall: u32) -> HealthState {
        HealthState::new(&[Thresholds { rise, fall }], passive_fall)
    }

    fn check(s: &mut HealthState, passed: bool) -> Option<Transition> {
        s.observe(Outcome::Check { check: 0, passed })
    }

    #[test]
    fn first_result_decides_at_start_up() {
        let mut s = state(3, 3, 1);
        assert_eq!(s.status(), Status::Unknown);
        let t = check(&mut s, true).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (Status::Unknown, Status::Up, Reason::ChecksPassed)
        );

        let mut s = state(3, 3, 1);
        let t = check(&mut s, false).unwrap();
        assert_eq!((t.to, t.reason), (Status::Down, Reason::CheckFailed(0)));
    }

    #[test]
    fn fall_consecutive_failures_take_it_down() {
        let mut s = state(2, 3, 1);
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
        let mut s = state(3, 1, 1);
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
        let mut s = state(2, 5, 1);
        check(&mut s, true);
        let t = s
            .observe(Outcome::TrafficFailed(TrafficFailure::Refused))
            .unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (
                Status::Up,
                Status::Down,
                Reason::Traffic(TrafficFailure::Refused)
            )
        );
        // Already down: more failures change nothing.
        assert_eq!(
            s.observe(Outcome::TrafficFailed(TrafficFailure::Refused)),
            None
        );
        assert_eq!(check(&mut s, true), None);
        assert_eq!(check(&mut s, true).map(|t| t.to), Some(Status::Up));
    }

    #[test]
    fn passive_threshold_counts_consecutive_failures_only() {
        let mut s = state(1, 1, 3);
        check(&mut s, true);
        assert_eq!(
            s.observe(Outcome::TrafficFailed(TrafficFailure::Timeout)),
            None
        );
        assert_eq!(
            s.observe(Outcome::TrafficFailed(TrafficFailure::Timeout)),
            None
        );
        assert_eq!(s.observe(Outcome::TrafficOk), None);
        assert_eq!(
            s.observe(Outcome::TrafficFailed(TrafficFailure::Reset)),
            None
        );
        assert_eq!(
            s.observe(Outcome::TrafficFailed(TrafficFailure::Reset)),
            None
        );
        let t = s
            .observe(Outcome::TrafficFailed(TrafficFailure::Reset))
            .unwrap();
        assert_eq!(t.reason, Reason::Traffic(TrafficFailure::Reset));
    }

    #[test]
    fn every_check_must_pass() {
        let thresholds = Thresholds { rise: 1, fall: 1 };
        let mut s = HealthState::new(&[thresholds, thresholds], 1);
        assert_eq!(
            s.observe(Outcome::Check {
                check: 0,
                passed: true
            }),
            None
        );
        assert_eq!(s.status(), Status::Unknown);
        let t = s
            .observe(Outcome::Check {
                check: 1,
                passed: true,
            })
            .unwrap();
        assert_eq!(t.to, Status::Up);
        let t = s
            .observe(Outcome::Check {
                check: 1,
                passed: false,
            })
            .unwrap();
        assert_eq!((t.to, t.reason), (Status::Down, Reason::CheckFailed(1)));
        // Check 0 passing again does not bring it back while check 1 fails.
        assert_eq!(
            s.observe(Outcome::Check {
                check: 0,
                passed: true
            }),
            None
        );
        let t = s
            .observe(Outcome::Check {
                check: 1,
                passed: true,
            })
            .unwrap();
        assert_eq!(t.to, Status::Up);
    }

    #[test]
    fn unknown_check_index_is_ignored() {
        let mut s = state(1, 1, 1);
        assert_eq!(
            s.observe(Outcome::Check {
                check: 7,
                passed: true
            }),
            None
        );
        assert_eq!(s.status(), Status::Unknown);
    }
}
