//! Hedging: when an attempt is slower than its backend usually is, a second attempt starts
//! beside it on the next backend and the first to complete is used (Envoy's `hedge_policy`).
//!
//! - A connect still pending after its backend's usual connect time starts a connect to the next
//!   backend. Nothing was sent, so any request may.
//! - For a request that may be sent again, an answer not begun after its backend's usual head
//!   latency sends a copy to the next backend; the first answer wins, the other attempt is
//!   abandoned and its connection closed. These cost a second backend the same work, so they
//!   are budgeted ([`Budget`]): those that turn out wasted (the first answer came first).
//!
//! Which answer of a hedged pair is used is [`race_over`] and [`verdict`]'s rule:
//!
//! | the first attempt | the copy | used | the other, if it ended without an answer |
//! |---|---|---|---|
//! | an answer | any | the first's; the copy's token stays spent | judged for health |
//! | any but an answer | an answer | the copy's; its token is refunded | judged for health |
//! | no answer (or pending) | a held 502/503/504 | the copy's held answer (refunded) | judged |
//! | a held answer | held, no answer or not opened | the first's held answer | judged |
//! | no answer | no answer or not opened | the first's failure decides | judged |
//! | pending | no answer or not opened | neither: the first is abandoned as a rescue, the next backend | - |
//!
//! The race waits while a side is pending unless the other has an answer to pass on: a held
//! answer (a 502 waiting for something better) or a failure waits for the other side. A copy
//! whose connect failed is judged at once, as any failed connect is.
//!
//! "Usual" is RFC 6298's retransmission estimate over recent samples ([`Latency`]): the smoothed
//! time plus four times its smoothed deviation, within the pool's bounds, an outlier counting as
//! at most twice the estimate. Plain types with
//! relaxed atomics: the request path reads them without locks.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One backend's recent latency of one kind (connect, or response head), in microseconds.
#[derive(Debug, Default)]
pub struct Latency {
    smoothed: AtomicU32,
    deviation: AtomicU32,
}

thread_local! {
    /// Counts samples on this thread, so that most quick ones are skipped.
    static TICK: Cell<u32> = const { Cell::new(0) };
}

/// One quick sample in this many is taken (both cores writing the same line on every answer
/// would cost more than the estimate is worth); a slow one always is.
const SAMPLE_EVERY: u32 = 8;

impl Latency {
    /// Takes in one measured latency.
    pub fn observe(&self, took: Duration) {
        let sample = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let smoothed = self.smoothed.load(Ordering::Relaxed);
        let slow = sample > smoothed.saturating_mul(2);
        let tick = TICK.with(|t| {
            let n = t.get().wrapping_add(1);
            t.set(n);
            n
        });
        if !slow && smoothed != 0 && tick % SAMPLE_EVERY != 0 {
            return;
        }
        let deviation = self.deviation.load(Ordering::Relaxed);
        // An outlier counts as at most twice the current estimate: one connect that waited for
        // a SYN to be sent again (1 s) must not raise the hedge delay to the timeout and so
        // turn hedging off, while a backend that really got slower still moves the estimate,
        // doubling it at each sample.
        let sample = match smoothed {
            0 => sample,
            _ => sample.min(
                smoothed
                    .saturating_add(deviation.saturating_mul(4))
                    .saturating_mul(2),
            ),
        };
        let (smoothed, deviation) = update(smoothed, deviation, sample);
        self.smoothed.store(smoothed, Ordering::Relaxed);
        self.deviation.store(deviation, Ordering::Relaxed);
    }

    /// How long to wait before hedging: the smoothed latency plus four deviations, within
    /// `min..=max`. `min` until there is a sample.
    pub fn hedge_after(&self, min: Duration, max: Duration) -> Duration {
        let smoothed = u64::from(self.smoothed.load(Ordering::Relaxed));
        let deviation = u64::from(self.deviation.load(Ordering::Relaxed));
        Duration::from_micros(smoothed + 4 * deviation).clamp(min, max.max(min))
    }
}

/// RFC 6298 2.2-2.3: the first sample sets the smoothed time and half of it as the deviation;
/// later ones move them by 1/8 and 1/4.
fn update(smoothed: u32, deviation: u32, sample: u32) -> (u32, u32) {
    if smoothed == 0 {
        return (sample.max(1), sample / 2);
    }
    let gap = smoothed.abs_diff(sample);
    let deviation = (u64::from(deviation) * 3 + u64::from(gap)) / 4;
    let smoothed = (u64::from(smoothed) * 7 + u64::from(sample)) / 8;
    (
        u32::try_from(smoothed).unwrap_or(u32::MAX).max(1),
        u32::try_from(deviation).unwrap_or(u32::MAX),
    )
}

/// Tokens of a pool's answer hedges, in thousandths: each request adds `percent` % of a token,
/// each hedge spends one, and at most a burst is kept. A full bucket costs a request one relaxed
/// load.
#[derive(Debug)]
pub struct Budget {
    millis: AtomicU32,
    per_request: u32,
    cap: u32,
}

impl Budget {
    /// `percent` of the requests may be hedged, `burst` hedges at once after a quiet spell.
    pub fn new(percent: u32, burst: u32) -> Self {
        let cap = burst.saturating_mul(1000);
        Budget {
            millis: AtomicU32::new(if percent == 0 { 0 } else { cap }),
            per_request: percent.saturating_mul(10),
            cap,
        }
    }

    /// One request of the pool.
    #[inline]
    pub fn earn(&self) {
        if self.per_request == 0 || self.millis.load(Ordering::Relaxed) >= self.cap {
            return;
        }
        let _ = self
            .millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some((m + self.per_request).min(self.cap))
            });
    }

    /// Spends a token for one hedge; `false` when none is left.
    pub fn spend(&self) -> bool {
        self.millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                m.checked_sub(1000)
            })
            .is_ok()
    }

    /// Gives back the token of a hedge that won: the first backend was the slow one (hung,
    /// stopped, dropping packets), not the pool, and the copy was the visitor's answer. Only
    /// hedges that turn out wasted (the first attempt answered first) stay spent, so a backend
    /// that hangs is hedged for every request until it is taken out, while a pool that is
    /// merely slow everywhere is not loaded twice.
    pub fn refund(&self) {
        let _ = self
            .millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some((m + 1000).min(self.cap))
            });
    }
}

/// How one side of a hedged pair stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Its answer has not begun.
    Pending,
    /// An answer to pass on.
    Answer,
    /// An answer with a status the request holds back (`retry_on_status`).
    Held,
    /// Ended without an answer: broken, silent past its deadline, not HTTP, or its backend
    /// taken out meanwhile.
    NoAnswer,
    /// The copy's connect failed (judged when it failed).
    Unopened,
}

/// Which side's result is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    First,
    /// The copy won: its hedge token is given back ([`Budget::refund`]).
    Copy,
    /// The first attempt, still pending, is abandoned (a rescue): the next backend.
    Neither,
}

/// The outcome of a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub used: Used,
    /// The side not used ended without an answer: its backend's health hears of it.
    pub judge_other: bool,
}

/// Whether the race is decided: a side has an answer to pass on, or neither is pending.
pub fn race_over(first: Side, copy: Side) -> bool {
    first == Side::Answer
        || copy == Side::Answer
        || (first != Side::Pending && copy != Side::Pending)
}

/// Which side's result is used once the race is over (see the module's table).
pub fn verdict(first: Side, copy: Side) -> Verdict {
    use Side::*;
    let (used, other) = match (first, copy) {
        (Answer, _) => (Used::First, copy),
        (_, Answer) | (NoAnswer | Pending, Held) => (Used::Copy, first),
        (Pending, _) => (Used::Neither, Pending),
        _ => (Used::First, copy),
    };
    Verdict {
        used,
        judge_other: other == NoAnswer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn fed(samples: &[u64]) -> Latency {
        let l = Latency::default();
        for &ms in samples {
            // Slow samples are always taken; feed quick ones enough times to pass the sampling.
            for _ in 0..SAMPLE_EVERY {
                l.observe(Duration::from_millis(ms));
            }
        }
        l
    }

    #[test]
    fn the_hedge_delay_follows_the_usual_latency_within_its_bounds() {
        let (min, max) = (100 * MS, 1000 * MS);
        // (samples in ms, lowest and highest expected delay in ms)
        let cases: &[(&[u64], u64, u64)] = &[
            (&[], 100, 100),                   // nothing known: the floor
            (&[1, 1, 1, 2, 1], 100, 100),      // a quick backend: the floor
            (&[300, 320, 280, 310], 300, 800), // a slower endpoint: its own time and spread
            (&[5000, 5000, 5000], 1000, 1000), // capped
        ];
        for (samples, low, high) in cases {
            let after = fed(samples).hedge_after(min, max);
            assert!(
                (Duration::from_millis(*low)..=Duration::from_millis(*high)).contains(&after),
                "{samples:?}: {after:?}"
            );
        }
    }

    #[test]
    fn rfc_6298_smoothing() {
        assert_eq!(update(0, 0, 1000), (1000, 500));
        // 7/8 of 1000 + 1/8 of 2000; 3/4 of 500 + 1/4 of |1000 - 2000|.
        assert_eq!(update(1000, 500, 2000), (1125, 625));
        assert_eq!(update(1000, 0, 1000), (1000, 0));
    }

    #[test]
    fn one_outlier_does_not_turn_hedging_off() {
        let (min, max) = (Duration::from_millis(20), Duration::from_secs(1));
        let l = fed(&[1, 1, 1, 1]);
        l.observe(Duration::from_secs(1)); // a SYN sent again
        assert!(l.hedge_after(min, max) < Duration::from_millis(50));
        // A backend that really got slower: the estimate follows within a few samples.
        let slower = fed(&[1, 1, 1, 1, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50]);
        assert!(slower.hedge_after(min, max) >= Duration::from_millis(50));
    }

    #[test]
    fn a_slow_sample_is_never_skipped() {
        let l = fed(&[1]);
        let before = l.hedge_after(Duration::ZERO, Duration::MAX);
        l.observe(Duration::from_millis(500));
        assert!(l.hedge_after(Duration::ZERO, Duration::MAX) > before);
    }

    #[test]
    fn the_budget_allows_a_share_and_a_burst() {
        let b = Budget::new(10, 4);
        // A full bucket after a quiet spell: the burst.
        assert!((0..4).all(|_| b.spend()));
        assert!(!b.spend());
        // Then one hedge per ten requests.
        for _ in 0..9 {
            b.earn();
        }
        assert!(!b.spend());
        b.earn();
        assert!(b.spend());
        // Never more than the burst, however quiet.
        for _ in 0..1000 {
            b.earn();
        }
        assert_eq!((0..10).filter(|_| b.spend()).count(), 4);
        // A hedge that won gives its token back.
        assert!(!b.spend());
        b.refund();
        assert!(b.spend());
        // 0 % turns answer hedges off.
        let off = Budget::new(0, 4);
        off.earn();
        assert!(!off.spend());
    }

    /// The module's table, every pair of sides.
    #[test]
    fn which_answer_of_a_hedged_pair_is_used() {
        use Side::*;
        use Used::*;
        let judged = |used| Verdict {
            used,
            judge_other: true,
        };
        let alone = |used| Verdict {
            used,
            judge_other: false,
        };
        // (first, copy) -> over?, verdict once over
        let cases = [
            ((Answer, Pending), true, alone(First)),
            ((Answer, Held), true, alone(First)),
            ((Answer, NoAnswer), true, judged(First)),
            ((Answer, Unopened), true, alone(First)),
            ((Pending, Answer), true, alone(Copy)),
            ((Held, Answer), true, alone(Copy)),
            ((NoAnswer, Answer), true, judged(Copy)),
            // A held answer waits for the other side.
            ((Held, Pending), false, alone(First)),
            ((Pending, Held), false, alone(Copy)),
            ((Held, Held), true, alone(First)),
            ((Held, NoAnswer), true, judged(First)),
            ((Held, Unopened), true, alone(First)),
            ((NoAnswer, Held), true, judged(Copy)),
            // A failure waits for the other side too.
            ((NoAnswer, Pending), false, alone(First)),
            ((Pending, NoAnswer), false, alone(Neither)),
            ((Pending, Unopened), false, alone(Neither)),
            ((NoAnswer, NoAnswer), true, judged(First)),
            ((NoAnswer, Unopened), true, alone(First)),
            ((Pending, Pending), false, alone(Neither)),
        ];
        for ((first, copy), over, want) in cases {
            assert_eq!(race_over(first, copy), over, "{first:?} {copy:?}");
            assert_eq!(verdict(first, copy), want, "{first:?} {copy:?}");
        }
    }
}
