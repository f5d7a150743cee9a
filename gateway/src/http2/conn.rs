//! Opening a visitor's h2 connection with the limits and the flood guard every one gets (an
//! over-the-cap one too), and closing one the guard or `h2` finds to be an attack.

use super::guard::{self, FrameGuard};
use super::io::{Alarm, Guarded};
use crate::fast::VisitorIo;
use ::h2::Reason;
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flow-control window of each stream: what a visitor may send of a request body before it
/// is taken. Taken as soon as the data path reads it.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window of the whole connection.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Resets of streams not yet accepted, beyond which `h2` closes the connection (the rapid
/// reset attack against a server slower to accept than the client to reset). Above the
/// guard's own limit, so that a burst is told by the guard as what it is.
const PENDING_ACCEPT_RESETS: usize = 2 * guard::RESETS as usize;
/// Streams reset for errors of the client's, beyond which `h2` closes the connection.
const LOCAL_ERROR_RESETS: usize = 256;
/// After a connection is closed as an attack, how long its GOAWAY may take to go out.
const ABUSE_LINGER: Duration = Duration::from_secs(1);

/// A guarded h2 connection: its bytes shown to the [`FrameGuard`] as they are read, and the
/// limits every visitor connection gets (streams at once, header list size, windows, resets).
pub(super) type Conn<S> = ::h2::server::Connection<Guarded<S>, Bytes>;

/// Opens the h2 connection on `io`, within `timeout`, with the guard and limits every visitor
/// connection gets, an over-the-cap one too; its alarm goes off when the guard sees a flood.
pub(super) async fn handshake<S: VisitorIo>(
    io: S,
    client: IpAddr,
    max_streams: u32,
    timeout: Duration,
) -> Option<(Conn<S>, Arc<Alarm>)> {
    let alarm = Arc::new(Alarm::default());
    let io = Guarded {
        io,
        guard: FrameGuard::new(Instant::now()),
        alarm: alarm.clone(),
        tripped: false,
        pending: Vec::new(),
        sent: 0,
        deferred: false,
        closing: None,
    };
    let mut builder = ::h2::server::Builder::new();
    builder
        .max_concurrent_streams(max_streams)
        .max_header_list_size(crate::h1::request::MAX_HEAD_BYTES as u32)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS));
    match tokio::time::timeout(timeout, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => Some((conn, alarm)),
        Ok(Err(e)) => {
            tracing::debug!(%client, error = %e, "HTTP/2 handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%client, "HTTP/2 handshake timed out");
            None
        }
    }
}

/// Whether an error that ended a connection was an attack, and which: the guard's verdict
/// first (it reads the bytes before `h2` parses them, and is the more precise when both saw
/// one), else `h2`'s own limits (`ENHANCE_YOUR_CALM` from the library).
pub(super) fn abuse_of(alarm: &Alarm, e: &::h2::Error) -> Option<&'static str> {
    let calm = e.reason() == Some(Reason::ENHANCE_YOUR_CALM) && e.is_library();
    match alarm.take() {
        Some(abuse) => Some(abuse.key()),
        None if calm => Some("limits"),
        None => None,
    }
}

/// Closes a connection whose guard saw a flood: GOAWAY with ENHANCE_YOUR_CALM, which goes out
/// briefly; the attacker's streams are not waited for.
pub(super) async fn calm_down<S: VisitorIo>(
    conn: &mut Conn<S>,
    alarm: &Alarm,
    metrics: &crate::metrics::Metrics,
    client: IpAddr,
) {
    if let Some(abuse) = alarm.take() {
        attacked(metrics, client, abuse.key());
    }
    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
    let _ = tokio::time::timeout(ABUSE_LINGER, async {
        while let Some(Ok(_)) = conn.accept().await {}
    })
    .await;
}

/// Counts and logs a connection closed as an attack.
pub(super) fn attacked(metrics: &crate::metrics::Metrics, client: IpAddr, kind: &str) {
    metrics.h2_abuse(kind);
    tracing::warn!(%client, kind, "HTTP/2 connection closed as an attack (ENHANCE_YOUR_CALM)");
}
