//! The lanes of a connection: in-memory pipes to tasks of the HTTP/1.1 data path, one per
//! stream at a time, kept for the connection's next streams (each with the backend connection
//! the data path keeps pinned to it) until idle too long.

use crate::bridge::{lock, LANE_BUFFER};
use crate::cap::Cap;
use crate::fast::{FastPath, Via};
use bytes::BytesMut;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::DuplexStream;

/// A lane idle longer than this is not used again (its backend connection was let go).
pub(super) const LANE_IDLE: Duration = Duration::from_secs(30);

/// What the streams of one connection share.
pub(super) struct Connection {
    pub(super) app: Arc<FastPath>,
    pub(super) client: IpAddr,
    pub(super) in_flight: Option<Arc<Cap>>,
    pub(super) shutdown: ShutdownWatch,
    /// Lanes free for the next stream, the most recently used last.
    pub(super) lanes: Mutex<Vec<Lane>>,
    /// Streams being served.
    pub(super) open: AtomicUsize,
    /// When the last stream ended.
    pub(super) last_end: Mutex<Instant>,
}

impl Connection {
    /// A free lane that has not been idle too long, or a new one.
    pub(super) fn lane(&self) -> Lane {
        self.let_idle_lanes_go();
        if let Some(lane) = lock(&self.lanes).pop() {
            return lane;
        }
        let (ours, theirs) = tokio::io::duplex(LANE_BUFFER);
        let (app, client) = (self.app.clone(), self.client);
        let (in_flight, shutdown) = (self.in_flight.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            app.serve(theirs, client, Via::H2, in_flight, &shutdown)
                .await
        });
        Lane {
            io: ours,
            buf: BytesMut::new(),
            since: Instant::now(),
        }
    }

    /// Lets go of the lanes idle for [`LANE_IDLE`]: their tasks end (their backend connections
    /// were closed already), and so does the memory of their pipes.
    pub(super) fn let_idle_lanes_go(&self) {
        let mut lanes = lock(&self.lanes);
        // Given back in order: when the oldest is not idle too long, none is.
        if lanes
            .first()
            .is_some_and(|l| l.since.elapsed() >= LANE_IDLE)
        {
            lanes.retain(|l| l.since.elapsed() < LANE_IDLE);
        }
    }

    pub(super) fn give_back(&self, mut lane: Lane) {
        lane.since = Instant::now();
        // An idle lane holds no read buffer (16 KiB each, times the streams a connection had
        // open at once; it is empty, or the lane would not be reused): the next stream on it
        // takes a new one.
        lane.buf = BytesMut::new();
        lock(&self.lanes).push(lane);
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

/// The HTTP/1.1 side of a stream: a pipe to a task of the HTTP/1.1 data path.
pub(super) struct Lane {
    pub(super) io: DuplexStream,
    /// What was read from the pipe and not yet passed on.
    pub(super) buf: BytesMut,
    /// When it was last given back.
    pub(super) since: Instant,
}
