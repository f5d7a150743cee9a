//! Backend connections whose visitor went: a visitor connection that ends gives the backend
//! connection pinned to it (idle, its last answer read whole) to the next visitor connection
//! of the same worker that needs one to that backend, instead of closing it. Cloudflare opens
//! and closes connections to an origin all the time (a TLS handshake each, or a resumed one);
//! without this, each would cost the backend a new TCP (and TLS) connection too.
//!
//! The decisions are [`Spares`]: which connection a visitor gets (the one used last, so the
//! warmest: a backend closes its longest idle ones first), how long one is kept unused
//! ([`SPARE_IDLE`], like a pinned one), and how many: as many as the worker's visitors use,
//! since those taken last-used-first and still unused a whole sweep later were more than they
//! needed, and [`sweep`] closes half of those each time (HAProxy's idle-connection purge does
//! the same); [`PER_BACKEND`] only bounds the descriptors. Each worker thread has its own (its
//! connections are registered with its own runtime and never leave it), so a look-up takes no
//! lock; [`sweep`] runs even when no visitor comes.

use super::{still_open, Pinned, PINNED_IDLE};
use bytes::BytesMut;
use holdfast_health::BackendHealth;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A spare connection unused this long is closed, as a pinned one is.
const SPARE_IDLE: Duration = PINNED_IDLE;

/// At most this many spare connections to one backend per worker; a visitor connection that
/// ends with one more closes the oldest. A bound on descriptors, far above what the visitors
/// of a worker use at once: the sweep keeps the count to what they use. (It was 32: with 128
/// h2 streams at once over 2 workers, a third of the streams opened a new backend connection,
/// the spares they left having been closed a moment before.)
const PER_BACKEND: usize = 512;

/// How often each worker closes the spare connections unused for [`SPARE_IDLE`], and half of
/// those unused since its last sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Spare connections of one worker, by backend (a key that stays the same while the backend
/// does), oldest first.
struct Spares<T> {
    kept: Vec<Spare<T>>,
}

struct Spare<T> {
    key: usize,
    /// Unused since.
    since: Instant,
    conn: T,
}

impl<T> Default for Spares<T> {
    fn default() -> Self {
        Spares { kept: Vec::new() }
    }
}

impl<T> Spares<T> {
    /// Keeps `conn` to backend `key`, unused since `since`: closed at once when that is
    /// [`SPARE_IDLE`] ago already, and the oldest to `key` is closed when it is one too many.
    fn put(&mut self, key: usize, conn: T, since: Instant, now: Instant) {
        if expired(since, now) {
            return;
        }
        let at = self.kept.partition_point(|s| s.since <= since);
        self.kept.insert(at, Spare { key, since, conn });
        // Counted only when all the worker's spares together are past the bound.
        if self.kept.len() > PER_BACKEND
            && self.kept.iter().filter(|s| s.key == key).count() > PER_BACKEND
        {
            if let Some(oldest) = self.kept.iter().position(|s| s.key == key) {
                self.kept.remove(oldest);
            }
        }
    }

    /// The connection to backend `key` used last that `usable` accepts (one the backend closed
    /// meanwhile, it refuses); those it refuses and those unused too long are closed on the way.
    fn take(
        &mut self,
        key: usize,
        now: Instant,
        mut usable: impl FnMut(&mut T) -> bool,
    ) -> Option<T> {
        while let Some(at) = self.kept.iter().rposition(|s| s.key == key) {
            let mut spare = self.kept.remove(at);
            if expired(spare.since, now) {
                // Every older one to this backend is expired too.
                self.kept.retain(|s| s.key != key || !expired(s.since, now));
                return None;
            }
            if usable(&mut spare.conn) {
                return Some(spare.conn);
            }
        }
        None
    }

    /// Closes the connections unused for [`SPARE_IDLE`], and of each backend's that went
    /// unused for [`SWEEP_EVERY`], the older half (rounded down, so that a lone spare stays
    /// its [`SPARE_IDLE`]): the visitors take the one used last, so these were more than they
    /// needed since the last sweep.
    fn expire(&mut self, now: Instant) {
        let stale = self.kept.partition_point(|s| expired(s.since, now));
        self.kept.drain(..stale);
        let unused = self
            .kept
            .partition_point(|s| now.saturating_duration_since(s.since) >= SWEEP_EVERY);
        // (backend, how many of its spares to close)
        let mut surplus: Vec<(usize, usize)> = Vec::new();
        for spare in &self.kept[..unused] {
            match surplus.iter_mut().find(|(key, _)| *key == spare.key) {
                Some((_, n)) => *n += 1,
                None => surplus.push((spare.key, 1)),
            }
        }
        for (_, n) in &mut surplus {
            *n /= 2;
        }
        let mut at = 0;
        self.kept.retain(|spare| {
            at += 1;
            if at > unused {
                return true;
            }
            match surplus
                .iter_mut()
                .find(|(key, n)| *key == spare.key && *n > 0)
            {
                Some((_, n)) => {
                    *n -= 1;
                    false
                }
                None => true,
            }
        });
    }

    /// Closes the spare unused longest, whatever its backend; `false` when none is kept.
    fn close_oldest(&mut self) -> bool {
        if self.kept.is_empty() {
            return false;
        }
        self.kept.remove(0);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

fn expired(since: Instant, now: Instant) -> bool {
    now.saturating_duration_since(since) >= SPARE_IDLE
}

thread_local! {
    /// This worker's spare connections.
    static SPARES: RefCell<Spares<Kept>> = RefCell::new(Spares::default());
}

/// A spare connection, counted in its backend's [`BackendHealth::spares`] (the metric of spare
/// connections held) from when it is kept until it is taken or closed.
struct Kept(Option<Pinned>);

impl Kept {
    fn new(pinned: Pinned) -> Self {
        pinned.backend.spare_kept();
        Kept(Some(pinned))
    }

    /// The connection, no longer counted.
    fn take(mut self) -> Option<Pinned> {
        let pinned = self.0.take();
        if let Some(p) = &pinned {
            p.backend.spare_gone();
        }
        pinned
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.backend.spare_gone();
        }
    }
}

/// The key of a backend's connections: the address of its health entry, which every connection
/// to it holds (so no other backend can have it while one is kept), and which stays the same
/// across reloads while the backend stays.
fn key(backend: &Arc<BackendHealth>) -> usize {
    Arc::as_ptr(backend) as usize
}

/// Keeps `pinned`, unused since `since`, for this worker's next visitor connection to its
/// backend.
pub(super) fn give(mut pinned: Pinned, since: Instant) {
    if pinned.buf.is_empty() {
        pinned.buf = BytesMut::new();
    }
    let key = key(&pinned.backend);
    let now = super::now();
    SPARES.with_borrow_mut(|spares| spares.put(key, Kept::new(pinned), since, now));
}

/// A spare connection to `backend` that is still open, if this worker has one.
pub(super) fn take(backend: &Arc<BackendHealth>) -> Option<Pinned> {
    let now = super::now();
    let open = |kept: &mut Kept| kept.0.as_mut().is_some_and(|p| still_open(&mut p.io));
    SPARES
        .with_borrow_mut(|spares| spares.take(key(backend), now, open))
        .and_then(Kept::take)
}

/// Closes this worker's spare connection unused longest, giving its descriptor back: for a
/// connection a visitor needs now when the descriptor budget is spent. `false`: none was kept.
pub(super) fn close_oldest() -> bool {
    SPARES.with_borrow_mut(Spares::close_oldest)
}

/// Closes this worker's spare connections as they reach [`SPARE_IDLE`] unused, whether or not
/// visitors come; runs for the worker's life.
pub async fn sweep() {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = super::now();
        SPARES.with_borrow_mut(|spares| spares.expire(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    /// What a visitor gets from the spares, case by case: (what is kept as (backend, name,
    /// unused since s), when it asks (s), for which backend, the names the backend has closed
    /// meanwhile, what it gets, how many stay kept).
    #[test]
    fn which_spare_a_visitor_gets() {
        type Case = (
            &'static str,
            &'static [(usize, &'static str, u64)],
            u64,
            usize,
            &'static [&'static str],
            Option<&'static str>,
            usize,
        );
        let cases: &[Case] = &[
            ("none kept", &[], 0, 1, &[], None, 0),
            ("the one kept", &[(1, "a", 0)], 1, 1, &[], Some("a"), 0),
            ("not another backend's", &[(2, "b", 0)], 1, 1, &[], None, 1),
            (
                "the one used last",
                &[(1, "old", 0), (1, "new", 5)],
                6,
                1,
                &[],
                Some("new"),
                1,
            ),
            (
                "one the backend closed is passed over and closed",
                &[(1, "old", 0), (1, "new", 5)],
                6,
                1,
                &["new"],
                Some("old"),
                0,
            ),
            (
                "all closed by the backend: none, all gone",
                &[(1, "a", 0), (1, "b", 1), (2, "c", 1)],
                6,
                1,
                &["a", "b"],
                None,
                1,
            ),
            ("unused 30 s: closed", &[(1, "a", 0)], 30, 1, &[], None, 0),
            (
                "the older ones expired with the one looked at",
                &[(1, "a", 0), (2, "b", 1), (1, "c", 2)],
                32,
                1,
                &[],
                None,
                1,
            ),
            (
                "29 s unused: still good",
                &[(1, "a", 1)],
                30,
                1,
                &[],
                Some("a"),
                0,
            ),
        ];
        let base = Instant::now();
        for (name, kept, asked, backend, closed, got, left) in cases {
            let mut spares = Spares::default();
            for (key, conn, since) in *kept {
                spares.put(*key, *conn, at(base, *since), at(base, *since));
            }
            let taken = spares.take(*backend, at(base, *asked), |c| !closed.contains(c));
            assert_eq!(taken, *got, "{name}");
            assert_eq!(spares.len(), *left, "{name}: kept after");
        }
    }

    #[test]
    fn a_connection_unused_too_long_already_is_not_kept() {
        let base = Instant::now();
        let mut spares = Spares::default();
        spares.put(1, "a", base, at(base, 30));
        assert_eq!(spares.len(), 0);
    }

    /// One given with an earlier `since` than one kept (its visitor was idle before it left):
    /// still taken in order of use.
    #[test]
    fn spares_are_taken_in_order_of_use_whatever_order_they_came_in() {
        let base = Instant::now();
        let mut spares = Spares::default();
        spares.put(1, "newer", at(base, 20), at(base, 21));
        spares.put(1, "older", at(base, 10), at(base, 21));
        assert_eq!(spares.take(1, at(base, 22), |_| true), Some("newer"));
        assert_eq!(spares.take(1, at(base, 22), |_| true), Some("older"));
    }

    #[test]
    fn one_too_many_closes_the_oldest_of_its_backend() {
        let base = Instant::now();
        let mut spares = Spares::default();
        spares.put(2, 0, base, base);
        for i in 1..=PER_BACKEND as u64 + 1 {
            spares.put(1, i, at(base, 1), at(base, 1));
        }
        assert_eq!(
            spares.len(),
            PER_BACKEND + 1,
            "the other backend's one stays"
        );
        let mut taken = Vec::new();
        while let Some(i) = spares.take(1, at(base, 2), |_| true) {
            taken.push(i);
        }
        assert_eq!(taken.len(), PER_BACKEND);
        assert!(!taken.contains(&1), "the oldest went: {taken:?}");
        assert_eq!(spares.take(2, at(base, 2), |_| true), Some(0));
    }

    /// Each sweep closes the older half of a backend's spares that went unused since the last
    /// one, whatever the others do; a lone one stays its 30 s.
    #[test]
    fn the_sweep_closes_half_of_what_went_unused_since_the_last() {
        let base = Instant::now();
        let mut spares = Spares::default();
        for i in 0..10 {
            spares.put(1, (1, i), at(base, i), at(base, i));
        }
        for i in 0..3 {
            spares.put(2, (2, i), at(base, i), at(base, i));
        }
        spares.put(3, (3, 0), base, base);
        // At 14 s, backend 1's spares of 0-9 s are unused for 5 s or more: 5 of 10 go, the
        // oldest; backend 2's three: one goes; backend 3's one stays.
        spares.expire(at(base, 14));
        assert_eq!(spares.len(), 5 + 2 + 1);
        let mut left = Vec::new();
        while let Some((_, i)) = spares.take(1, at(base, 14), |_| true) {
            left.push(i);
        }
        assert_eq!(left, [9, 8, 7, 6, 5], "the used last stay");
        assert_eq!(spares.take(2, at(base, 14), |_| true), Some((2, 2)));
        assert_eq!(spares.take(2, at(base, 14), |_| true), Some((2, 1)));
        assert_eq!(spares.take(2, at(base, 14), |_| true), None);
        // Those used since the last sweep are not touched.
        let mut spares = Spares::default();
        for i in 0..4 {
            spares.put(1, i, at(base, 10), at(base, 10));
        }
        spares.expire(at(base, 14));
        assert_eq!(spares.len(), 4);
        spares.expire(at(base, 15));
        assert_eq!(spares.len(), 2);
        spares.expire(at(base, 20));
        assert_eq!(spares.len(), 1);
        spares.expire(at(base, 39));
        assert_eq!(spares.len(), 1, "a lone one stays its 30 s");
        spares.expire(at(base, 40));
        assert_eq!(spares.len(), 0);
    }

    #[test]
    fn the_one_unused_longest_is_closed_first_whatever_its_backend() {
        let base = Instant::now();
        let mut spares = Spares::default();
        spares.put(1, "a1", at(base, 2), at(base, 2));
        spares.put(2, "b", at(base, 1), at(base, 2));
        spares.put(1, "a3", at(base, 3), at(base, 3));
        assert!(spares.close_oldest());
        assert_eq!(spares.take(2, at(base, 4), |_| true), None, "b went");
        assert!(spares.close_oldest());
        assert_eq!(spares.take(1, at(base, 4), |_| true), Some("a3"));
        assert!(!spares.close_oldest(), "none left");
    }

    #[test]
    fn the_sweep_closes_what_is_unused_too_long() {
        let base = Instant::now();
        let mut spares = Spares::default();
        spares.put(1, "a", base, base);
        spares.put(2, "b", at(base, 10), at(base, 10));
        spares.expire(at(base, 29));
        assert_eq!(spares.len(), 2);
        spares.expire(at(base, 30));
        assert_eq!(spares.len(), 1);
        assert_eq!(spares.take(2, at(base, 30), |_| true), Some("b"));
        spares.expire(at(base, 100));
        assert_eq!(spares.len(), 0);
    }
}
