//! Whether a request may try another backend, and with how much time.
//!
//! A connect failure means nothing reached the backend, so the same request may go to another
//! backend whatever its method and body. The chain is bounded twice: by the pool's
//! `max_attempts`, and by its `total_timeout` measured from the first attempt, so the visitor
//! (Cloudflare, which gives up at 100 s) always gets an answer in time.

use crate::select::Slot;
use holdfast_config::Timeouts;
use holdfast_health::TrafficFailure;
use smallvec::SmallVec;
use std::time::{Duration, Instant};

/// The least time worth starting an attempt with.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(10);

/// Why a request gets the fallback answer instead of a backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// No backend of the pool is usable (or left untried).
    NoBackend,
    /// `max_attempts` attempts failed.
    AttemptsExhausted,
    /// `total_timeout` is spent.
    BudgetSpent,
    /// Every usable backend left has its `max_in_flight` requests already, or the listener
    /// has its own `max_in_flight`.
    Busy,
    /// The gateway itself is out of descriptors, ports or memory.
    Local,
}

impl GiveUp {
    pub const ALL: [GiveUp; 5] = [
        GiveUp::NoBackend,
        GiveUp::AttemptsExhausted,
        GiveUp::BudgetSpent,
        GiveUp::Busy,
        GiveUp::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::NoBackend => "no_backend",
            GiveUp::AttemptsExhausted => "attempts_exhausted",
            GiveUp::BudgetSpent => "budget_spent",
            GiveUp::Busy => "busy",
            GiveUp::Local => "local",
        }
    }
}

/// Why a request went on to another backend: how the previous attempt failed (a held
/// `retry_on_status` answer is `Failed(BadStatus)`), its backend taken out while it waited
/// (`Rescued`), or the backend picked filled up meanwhile (`Busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    Failed(TrafficFailure),
    Rescued,
    Busy,
}

impl RetryCause {
    /// Every cause, in the order of [`index`](Self::index).
    pub const ALL: [RetryCause; TrafficFailure::ALL.len() + 2] = {
        let mut all = [RetryCause::Rescued; TrafficFailure::ALL.len() + 2];
        let mut i = 0;
        while i < TrafficFailure::ALL.len() {
            all[i] = RetryCause::Failed(TrafficFailure::ALL[i]);
            i += 1;
        }
        all[i + 1] = RetryCause::Busy;
        all
    };

    pub fn index(self) -> usize {
        match self {
            RetryCause::Failed(kind) => kind as usize,
            RetryCause::Rescued => TrafficFailure::ALL.len(),
            RetryCause::Busy => TrafficFailure::ALL.len() + 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::Failed(kind) => kind.as_str(),
            RetryCause::Rescued => "rescued",
            RetryCause::Busy => "busy",
        }
    }
}

/// Limits of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    pub connect: Duration,
    /// The longest wait for the answer's head once the request is sent (a deadline, not a
    /// budget per read), and for each read of a body.
    pub read: Duration,
    pub write: Duration,
    /// The end of the whole chain (`total_timeout` after its first attempt): no wait for a
    /// response head goes past it, however the backend trickles.
    pub deadline: Instant,
}

/// The attempts one request has made so far.
#[derive(Debug, Default)]
pub struct Attempts {
    started: Option<Instant>,
    /// Inline for the usual few attempts: no allocation per request.
    tried: SmallVec<[Slot; 4]>,
}

impl Attempts {
    /// Backends tried so far, in order.
    pub fn tried(&self) -> &[Slot] {
        &self.tried
    }

    /// How many attempts were made.
    pub fn made(&self) -> u32 {
        self.tried.len() as u32
    }

    /// Decides the next attempt: `pick` chooses a backend among those not yet tried.
    pub fn next(
        &mut self,
        timeouts: &Timeouts,
        max_attempts: u32,
        now: Instant,
        pick: impl FnOnce(&[Slot]) -> Option<Slot>,
    ) -> Result<(Slot, AttemptLimits), GiveUp> {
        let started = *self.started.get_or_insert(now);
        if self.made() >= max_attempts {
            return Err(GiveUp::AttemptsExhausted);
        }
        let left = timeouts
            .total
            .saturating_sub(now.saturating_duration_since(started));
        if left < MIN_ATTEMPT_TIME {
            return Err(GiveUp::BudgetSpent);
        }
        let slot = pick(&self.tried).ok_or(GiveUp::NoBackend)?;
        self.tried.push(slot);
        Ok((
            slot,
            AttemptLimits {
                connect: timeouts.connect.min(left),
                read: timeouts.read.min(left),
                write: timeouts.write,
                deadline: started + timeouts.total,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(60),
            write: Duration::from_secs(30),
            total: Duration::from_secs(10),
            response: None,
            tunnel_idle: Duration::from_secs(300),
        }
    }

    #[test]
    fn attempts_stop_at_the_limit() {
        let now = Instant::now();
        let mut a = Attempts::default();
        let mut next = 0;
        let mut pick = |tried: &[Slot]| {
            assert_eq!(tried.len(), next);
            next += 1;
            Some((0, tried.len()))
        };
        for i in 0..3 {
            let (slot, _) = a.next(&timeouts(), 3, now, &mut pick).unwrap();
            assert_eq!(slot, (0, i));
        }
        assert_eq!(
            a.next(&timeouts(), 3, now, &mut pick),
            Err(GiveUp::AttemptsExhausted)
        );
    }

    #[test]
    fn the_budget_bounds_each_attempt_and_the_chain() {
        let start = Instant::now();
        let mut a = Attempts::default();
        let (_, limits) = a.next(&timeouts(), 10, start, |_| Some((0, 0))).unwrap();
        assert_eq!(limits.connect, Duration::from_secs(2));
        assert_eq!(
            limits.read,
            Duration::from_secs(10),
            "read is capped by the budget"
        );

        assert_eq!(limits.deadline, start + Duration::from_secs(10));

        let later = start + Duration::from_millis(9_500);
        let (_, limits) = a.next(&timeouts(), 10, later, |_| Some((0, 1))).unwrap();
        assert_eq!(limits.connect, Duration::from_millis(500));
        assert_eq!(limits.read, Duration::from_millis(500));
        assert_eq!(
            limits.deadline,
            start + Duration::from_secs(10),
            "one deadline for the chain"
        );

        let spent = start + Duration::from_secs(10);
        assert_eq!(
            a.next(&timeouts(), 10, spent, |_| Some((0, 2))),
            Err(GiveUp::BudgetSpent)
        );
    }

    #[test]
    fn nothing_left_to_pick_gives_up() {
        let mut a = Attempts::default();
        assert_eq!(
            a.next(&timeouts(), 4, Instant::now(), |_| None),
            Err(GiveUp::NoBackend)
        );
        assert_eq!(a.made(), 0);
    }

    #[test]
    fn every_retry_cause_has_its_own_index() {
        for (i, cause) in RetryCause::ALL.iter().enumerate() {
            assert_eq!(cause.index(), i, "{cause:?}");
        }
        assert_eq!(
            RetryCause::ALL[TrafficFailure::Refused as usize].as_str(),
            "refused"
        );
    }
}
