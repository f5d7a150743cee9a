//! Which backend serves next: the first tier that has a usable backend not yet tried by this
//! request, and within that tier weighted round robin.
//!
//! Each tier owns a fixed schedule, the smooth weighted round-robin order (nginx's algorithm)
//! computed once from the weights, and an atomic cursor into it. Picking is lock-free: one
//! `fetch_add`, then a walk past backends that are down or already tried, so the survivors of a
//! tier keep their relative weights.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A backend's place in its pool: tier index and index within the tier.
pub type Slot = (usize, usize);

/// The round-robin order of one tier.
#[derive(Debug)]
pub struct TierSchedule {
    order: Box<[u32]>,
    cursor: AtomicUsize,
}

impl TierSchedule {
    /// The schedule for backends with these weights (each at least 1).
    pub fn new(weights: &[u32]) -> Self {
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let mut best = 0;
            for (i, c) in current.iter().enumerate() {
                if *c > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        TierSchedule {
            order: order.into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next backend of the tier for which `candidate` holds.
    pub fn pick(&self, candidate: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| self.order[(start.wrapping_add(k)) % len] as usize)
            .find(|&i| candidate(i))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The schedules of a pool's tiers, primaries first.
#[derive(Debug)]
pub struct Selector {
    tiers: Vec<TierSchedule>,
}

impl Selector {
    /// `weights[t]` lists the weights of tier `t`'s backends.
    pub fn new(weights: &[Vec<u32>]) -> Self {
        Selector {
            tiers: weights.iter().map(|w| TierSchedule::new(w)).collect(),
        }
    }

    /// The next backend for a request that already tried `tried`: the first tier with a
    /// backend that is `usable` and untried, round robin within it. `None` when no backend of
    /// any tier is left.
    pub fn next(&self, usable: impl Fn(Slot) -> bool, tried: &[Slot]) -> Option<Slot> {
        self.tiers.iter().enumerate().find_map(|(t, schedule)| {
            let candidate = |i| usable((t, i)) && !tried.contains(&(t, i));
            schedule.pick(candidate).map(|i| (t, i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn counts(
        selector: &Selector,
        usable: impl Fn(Slot) -> bool,
        n: usize,
    ) -> HashMap<Slot, usize> {
        let mut seen = HashMap::new();
        for _ in 0..n {
            if let Some(slot) = selector.next(&usable, &[]) {
                *seen.entry(slot).or_default() += 1;
            }
        }
        seen
    }

    #[test]
    fn weights_share_the_tier_smoothly() {
        let schedule = TierSchedule::new(&[5, 1, 1]);
        assert_eq!(&*schedule.order, &[0, 0, 1, 0, 2, 0, 0]);
        let schedule = TierSchedule::new(&[2, 4]);
        assert_eq!(
            &*schedule.order,
            &[1, 0, 1],
            "weights are reduced by their gcd"
        );
    }

    #[test]
    fn primaries_first_backups_only_while_no_primary_can_serve() {
        let selector = Selector::new(&[vec![1, 1], vec![1]]);
        let all_up = counts(&selector, |_| true, 100);
        assert_eq!(all_up.get(&(0, 0)), Some(&50));
        assert_eq!(all_up.get(&(0, 1)), Some(&50));
        assert_eq!(all_up.get(&(1, 0)), None);

        let one_primary_down = counts(&selector, |s| s != (0, 0), 100);
        assert_eq!(one_primary_down.get(&(0, 1)), Some(&100));

        let primaries_down = counts(&selector, |s| s.0 != 0, 10);
        assert_eq!(primaries_down.get(&(1, 0)), Some(&10));

        assert_eq!(selector.next(|_| false, &[]), None);
    }

    #[test]
    fn a_retry_goes_to_an_untried_backend_same_tier_first() {
        let selector = Selector::new(&[vec![1, 1], vec![1], vec![1]]);
        let first = selector.next(|_| true, &[]).unwrap();
        assert_eq!(first.0, 0);
        let second = selector.next(|_| true, &[first]).unwrap();
        assert_eq!(second.0, 0);
        assert_ne!(second, first);
        let third = selector.next(|_| true, &[first, second]).unwrap();
        assert_eq!(third, (1, 0));
        let fourth = selector.next(|_| true, &[first, second, third]).unwrap();
        assert_eq!(fourth, (2, 0));
        assert_eq!(
            selector.next(|_| true, &[first, second, third, fourth]),
            None
        );
    }

    #[test]
    fn survivors_keep_their_relative_weights() {
        let selector = Selector::new(&[vec![3, 1, 1]]);
        let seen = counts(&selector, |s| s != (0, 1), 400);
        let heavy = seen[&(0, 0)] as f64;
        let light = seen[&(0, 2)] as f64;
        assert!((2.0..=4.0).contains(&(heavy / light)), "{seen:?}");
    }
}
