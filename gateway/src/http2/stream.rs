//! One stream: served by the HTTP/1.1 data path in the stream's own task ([`StreamIo`]), with
//! a backend connection an earlier stream (of this visitor connection or another) left open if
//! there is one. A visitor's reset ends
//! the work on it at once, so that a cancelled stream holds nothing.

use super::shared::Connection;
use super::stream_io::StreamIo;
use crate::bridge::lock;
use crate::bridge::translate;
use ::h2::server::SendResponse;
use ::h2::RecvStream;
use bytes::Bytes;
use std::future::poll_fn;

/// Serves one stream; `first`: the connection's first.
pub(super) async fn stream(
    conn: &Connection,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    first: bool,
) {
    let (parts, body) = request.into_parts();
    let mut head = Vec::new();
    let framing = match translate::request_head(&parts, body.is_end_stream(), &mut head) {
        Ok(framing) => framing,
        Err(translate::Unsupported::Connect) => {
            let mut refused = http::Response::new(());
            *refused.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
            let _ = respond.send_response(refused, true);
            return;
        }
    };
    let head_method = parts.method == http::Method::HEAD;
    let io = StreamIo::new(head, framing, body, head_method, respond);
    let answer = io.answer();
    let serving = conn.app.serve_stream(
        io,
        conn.client,
        conn.in_flight.clone(),
        &conn.shutdown,
        first,
    );
    let reset = poll_fn(|cx| lock(&answer).poll_reset(cx));
    tokio::select! {
        biased;
        () = serving => {}
        () = reset => {}
    }
}
