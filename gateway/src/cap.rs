//! A count of things open at once (connections, requests) against a cap, shared by every worker
//! thread: one relaxed atomic add and sub per thing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many are open, and how many may be.
#[derive(Debug)]
pub struct Cap {
    live: AtomicUsize,
    /// A reload may change it.
    max: AtomicUsize,
}

/// One counted thing, for as long as it lives.
#[derive(Debug)]
pub struct Ticket(Arc<Cap>);

impl Cap {
    pub fn new(max: usize) -> Arc<Cap> {
        Arc::new(Cap {
            live: AtomicUsize::new(0),
            max: AtomicUsize::new(max.max(1)),
        })
    }

    /// A new cap; what is open now stays counted.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// The cap now.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// How many are open now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether one more would be within the cap.
    #[inline]
    pub fn has_room(&self) -> bool {
        self.live.load(Ordering::Relaxed) < self.max.load(Ordering::Relaxed)
    }

    /// Counts one more; whether it is over the cap (it is counted either way, until the ticket
    /// is dropped).
    pub fn take(self: &Arc<Self>) -> (Ticket, bool) {
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        (
            Ticket(self.clone()),
            live > self.max.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_cap_until_a_ticket_goes() {
        let cap = Cap::new(2);
        let (a, over_a) = cap.take();
        let (_b, over_b) = cap.take();
        let (c, over_c) = cap.take();
        assert_eq!((over_a, over_b, over_c), (false, false, true));
        drop(c);
        drop(a);
        assert!(!cap.take().1);
    }
}
