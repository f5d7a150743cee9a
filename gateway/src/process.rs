//! The state of the process that the data path reads: whether it is stopping or draining,
//! reloads (HTTP/2 connections say GOAWAY at each), requests in flight; and the draining
//! decision, apart from the I/O. A leaf: the orchestration that changes this state (signals, the
//! graceful stop, the upgrade) is [`crate::lifecycle`], above everything.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// While draining, the process exits once no request has been in flight for this long: the
/// connections left are idle keep-alive ones.
const QUIET: Duration = Duration::from_secs(1);

/// Whether the process is stopping, and requests in flight.
#[derive(Debug)]
pub struct Lifecycle {
    /// Set on SIGTERM: `/healthz` answers 503.
    draining: AtomicBool,
    /// Turns true when the listeners stop accepting.
    stop: watch::Sender<bool>,
    /// Requests being answered now, all connections together.
    busy: AtomicUsize,
    /// One more at each reload: HTTP/2 connections then say GOAWAY, so that the client's next
    /// streams go on a new connection with the new settings.
    reloads: watch::Sender<u64>,
}

/// One request in flight, for as long as it lives.
#[derive(Debug)]
pub struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            draining: AtomicBool::new(false),
            stop: watch::Sender::new(false),
            busy: AtomicUsize::new(0),
            reloads: watch::Sender::new(0),
        }
    }
}

impl Lifecycle {
    /// Turns true when the listeners stop accepting; a response then closes its connection.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Changes at each reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Tells the connections that want to know that a config reload took.
    pub fn reloaded(&self) {
        self.reloads.send_modify(|n| *n += 1);
    }

    /// Whether SIGTERM was received (`/healthz` says 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    #[inline]
    pub fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(&self.busy)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// SIGTERM: `/healthz` says 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The listeners stop accepting; a response then closes its connection.
    pub fn stop_accepting(&self) {
        self.stop.send_replace(true);
    }
}

/// Why draining is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// No visitor connection is left.
    NoConnection,
    /// Nothing has been in flight for [`QUIET`]: what is left are idle keep-alive connections.
    Quiet,
    /// The grace period is over; what is still in flight is cut.
    GraceOver,
}

/// The draining decision, apart from the I/O: fed what is left at each look, it says when to
/// stop waiting.
#[derive(Debug, Clone)]
pub struct Drain {
    deadline: Instant,
    quiet_since: Option<Instant>,
}

impl Drain {
    pub fn new(now: Instant, grace: Duration) -> Self {
        Drain {
            deadline: now + grace,
            quiet_since: None,
        }
    }

    /// With `connections` open and `busy` requests in flight at `now`: whether it is over.
    pub fn look(&mut self, now: Instant, connections: usize, busy: usize) -> Option<Drained> {
        if connections == 0 {
            return Some(Drained::NoConnection);
        }
        match busy {
            0 => {
                let since = *self.quiet_since.get_or_insert(now);
                if now.duration_since(since) >= QUIET {
                    return Some(Drained::Quiet);
                }
            }
            _ => self.quiet_since = None,
        }
        (now >= self.deadline).then_some(Drained::GraceOver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_ends_when_nothing_is_left_quiet_or_the_grace_is_over() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (when, connections, busy, decision)
        let table: &[(u64, usize, usize, Option<Drained>)] = &[
            (0, 3, 2, None),
            (500, 3, 0, None),  // quiet from here
            (1400, 2, 0, None), // not yet a second
            (1450, 2, 1, None), // busy again: quiet starts over
            (1500, 2, 0, None),
            (2499, 2, 0, None),
            (2500, 2, 0, Some(Drained::Quiet)), // a second with nothing in flight
        ];
        let mut drain = Drain::new(t0, Duration::from_secs(30));
        for &(ms, connections, busy, want) in table {
            assert_eq!(drain.look(at(ms), connections, busy), want, "at {ms} ms");
        }
        // No connection left ends it at once, busy or not.
        let mut drain = Drain::new(t0, Duration::from_secs(30));
        assert_eq!(drain.look(at(0), 0, 0), Some(Drained::NoConnection));
        // A request that never ends is cut at the end of the grace period.
        let mut drain = Drain::new(t0, Duration::from_secs(2));
        assert_eq!(drain.look(at(1999), 5, 1), None);
        assert_eq!(drain.look(at(2000), 5, 1), Some(Drained::GraceOver));
    }
}
