//! What both HTTP/2 sides share, apart from either: the translation between h2 messages and
//! HTTP/1.1 heads ([`translate`]) by which h2 streams reach the HTTP/1.1 data path (from
//! visitors, [`crate::http2`]) or leave it (toward h2 backends, [`crate::fast::upstream`]);
//! and, for the backends' side, the flow-controlled send of a body and the size of the
//! in-memory pipes (*lanes*) it goes over. A leaf: it knows neither side.

pub mod translate;

use ::h2::SendStream;
use bytes::Bytes;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

/// What one lane buffers each way.
pub const LANE_BUFFER: usize = 64 * 1024;

/// Sends `data` on a stream as the peer's flow control allows, each piece as capacity is
/// granted; `end` ends the stream with the last one. `Err`: the stream is gone.
pub async fn send_flowed(tx: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), ()> {
    if data.is_empty() {
        return tx.send_data(data, end).map_err(drop);
    }
    while !data.is_empty() {
        let n = poll_fn(|cx| poll_window(tx, data.len(), cx)).await?;
        let piece = data.split_to(n);
        tx.send_data(piece, end && data.is_empty()).map_err(drop)?;
    }
    Ok(())
}

/// How much of `want` bytes (more than none) the peer's window lets go on `stream` now, once
/// it lets any go. `Err`: the stream is gone.
pub fn poll_window(
    stream: &mut SendStream<Bytes>,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<usize, ()>> {
    loop {
        stream.reserve_capacity(want);
        let granted = stream.capacity();
        if granted > 0 {
            return Poll::Ready(Ok(granted.min(want)));
        }
        // Ready only when the window grew: no spin on a window that stays closed.
        match ready!(stream.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            _ => return Poll::Ready(Err(())),
        }
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain assignments under these locks: a panic cannot leave them half-done.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
