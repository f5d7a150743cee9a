//! What the streams of one visitor connection share: the data path, the visitor, and how many
//! are open.

use crate::bridge::lock;
use crate::cap::Cap;
use crate::fast::FastPath;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(super) struct Connection {
    pub(super) app: Arc<FastPath>,
    pub(super) client: IpAddr,
    pub(super) in_flight: Option<Arc<Cap>>,
    pub(super) shutdown: ShutdownWatch,
    /// Streams being served.
    pub(super) open: AtomicUsize,
    /// When the last stream ended.
    pub(super) last_end: Mutex<Instant>,
}

impl Connection {
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
