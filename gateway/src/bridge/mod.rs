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

/// What one lane buffers each way.
pub const LANE_BUFFER: usize = 64 * 1024;

/// Sends `data` on a stream as the peer's flow control allows, each piece as capacity is
/// granted; `end` ends the stream with the last one. `Err`: the stream is gone.
pub async fn send_flowed(tx: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), ()> {
    if data.is_empty() {
        return tx.send_data(data, end).map_err(drop);
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let n = match poll_fn(|cx| tx.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            _ => return Err(()),
        };
        if n == 0 {
            continue;
        }
        let piece = data.split_to(n.min(data.len()));
        tx.send_data(piece, end && data.is_empty()).map_err(drop)?;
    }
    Ok(())
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain assignments under these locks: a panic cannot leave them half-done.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
