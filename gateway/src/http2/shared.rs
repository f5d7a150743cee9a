//! What the streams of one visitor connection share: the data path, the visitor, and the
//! backend connections earlier streams left open, kept for the next ones until idle too long.

use crate::bridge::lock;
use crate::cap::Cap;
use crate::fast::{FastPath, Kept};
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backend connection left idle this long by the streams is closed.
pub(super) const KEPT_IDLE: Duration = Duration::from_secs(30);

pub(super) struct Connection {
    pub(super) app: Arc<FastPath>,
    pub(super) client: IpAddr,
    pub(super) in_flight: Option<Arc<Cap>>,
    pub(super) shutdown: ShutdownWatch,
    /// Backend connections free for the next stream, the most recently used last, with when
    /// each was left.
    pub(super) kept: Mutex<Vec<(Kept, Instant)>>,
    /// Streams being served.
    pub(super) open: AtomicUsize,
    /// When the last stream ended.
    pub(super) last_end: Mutex<Instant>,
}

impl Connection {
    /// The backend connection left last by a stream, if one was left lately.
    pub(super) fn take_kept(&self) -> Option<Kept> {
        self.let_idle_go();
        lock(&self.kept).pop().map(|(kept, _)| kept)
    }

    /// Closes the backend connections idle for [`KEPT_IDLE`].
    pub(super) fn let_idle_go(&self) {
        let mut kept = lock(&self.kept);
        // Given back in order: when the oldest is not idle too long, none is.
        if kept
            .first()
            .is_some_and(|(_, at)| at.elapsed() >= KEPT_IDLE)
        {
            kept.retain(|(_, at)| at.elapsed() < KEPT_IDLE);
        }
    }

    pub(super) fn give_back(&self, kept: Kept) {
        lock(&self.kept).push((kept, Instant::now()));
    }

    pub(super) fn stream_ended(&self) {
        *lock(&self.last_end) = Instant::now();
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Since when no stream has been open; `None` while one is.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        let last_end = *lock(&self.last_end);
        (self.open.load(Ordering::Relaxed) == 0).then_some(last_end)
    }
}
