//! One stream: its request turned into HTTP/1.1 and written to a lane, the answer read back and
//! sent to the visitor as h2 (head, DATA frames within the visitor's flow control, trailers).

use super::lanes::Connection;
use crate::bridge::send_flowed;
use crate::bridge::translate::{self, BodyFraming as RequestBody};
use crate::h1::chunked::{ChunkedScanner, Step};
use crate::h1::response::{self, BodyFraming};
use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use bytes::{Buf, Bytes, BytesMut};
use std::future::poll_fn;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Sending one piece of an answer (one read from the lane) to a visitor that takes longer than
/// this, its window closed, ends the stream (as the same stall ends an HTTP/1.1 connection).
const VISITOR_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Reads from a lane, at most.
const READ_CHUNK: usize = 16 * 1024;

/// Why a stream ended before its answer was through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// The visitor reset the stream, or stopped taking data.
    Visitor,
    /// The lane closed or answered what is not HTTP/1.1 (cannot happen with the data path
    /// behind it).
    Lane,
}

/// Serves one stream, on a lane.
pub(super) async fn stream(
    conn: &Connection,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (parts, mut body) = request.into_parts();
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
    let mut lane = conn.lane();
    let (answered, sent) = {
        let (mut rd, mut wr) = tokio::io::split(&mut lane.io);
        let send = send_request(&mut wr, &head, framing, &mut body);
        let answer = relay_answer(&mut rd, &mut lane.buf, head_method, &mut respond);
        tokio::pin!(send, answer);
        let mut sent = None;
        let answered = loop {
            tokio::select! {
                s = &mut send, if sent.is_none() => sent = Some(s.is_ok()),
                a = &mut answer => break a,
            }
        };
        (answered, sent)
    };
    if let Err(Broken::Lane) = answered {
        respond.send_reset(Reason::INTERNAL_ERROR);
    }
    // The lane carries another request only if this one went whole both ways.
    let reusable = answered == Ok(true) && sent == Some(true) && lane.buf.is_empty();
    if reusable {
        conn.give_back(lane);
    }
}

/// Writes the request to the lane: its head, then its body as it comes (chunked when it came
/// without a length, with its trailers).
async fn send_request<W: AsyncWrite + Unpin>(
    lane: &mut W,
    head: &[u8],
    framing: RequestBody,
    body: &mut RecvStream,
) -> io::Result<()> {
    lane.write_all(head).await?;
    if framing == RequestBody::None {
        return lane.flush().await;
    }
    let chunked = framing == RequestBody::Chunked;
    let mut framing_bytes = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.map_err(io::Error::other)?;
        let n = data.len();
        // An empty DATA frame carries nothing (and an empty chunk would end the body).
        if n == 0 {
            continue;
        }
        if chunked {
            framing_bytes.clear();
            let _ = std::io::Write::write_fmt(&mut framing_bytes, format_args!("{n:x}\r\n"));
            lane.write_all(&framing_bytes).await?;
        }
        lane.write_all(&data).await?;
        if chunked {
            lane.write_all(b"\r\n").await?;
        }
        let _ = body.flow_control().release_capacity(n);
    }
    if chunked {
        let trailers = body.trailers().await.map_err(io::Error::other)?;
        framing_bytes.clear();
        translate::last_chunk(trailers.as_ref(), &mut framing_bytes);
        lane.write_all(&framing_bytes).await?;
    }
    lane.flush().await
}

/// Reads the answer from the lane and sends it to the visitor. `Ok(true)`: whole, and the lane
/// may carry another request.
async fn relay_answer<R: AsyncRead + Unpin>(
    lane: &mut R,
    buf: &mut BytesMut,
    head_method: bool,
    respond: &mut SendResponse<Bytes>,
) -> Result<bool, Broken> {
    // The answer's head (interim ones skipped); a visitor's reset ends the wait at once, so
    // that a cancelled stream holds nothing.
    let head = loop {
        match response::parse_forwarded(buf, head_method) {
            Ok(Some(head)) if head.interim => buf.advance(head.len),
            Ok(Some(head)) => break head,
            Ok(None) => {
                tokio::select! {
                    read = read_more(lane, buf) => read?,
                    _ = poll_fn(|cx| respond.poll_reset(cx)) => return Err(Broken::Visitor),
                }
            }
            Err(_) => return Err(Broken::Lane),
        }
    };
    let response = translate::response(&buf[..head.len]).ok_or(Broken::Lane)?;
    buf.advance(head.len);
    let empty = head.framing == BodyFraming::Empty;
    let stream = respond
        .send_response(response, empty)
        .map_err(|_| Broken::Visitor)?;
    let mut tx = Sender {
        stream,
        first: true,
    };
    let body = relay_body(lane, buf, head.framing, &mut tx).await;
    if body == Err(Broken::Lane) {
        tx.stream.send_reset(Reason::INTERNAL_ERROR);
    }
    body?;
    Ok(head.reusable && head.framing != BodyFraming::UntilClose)
}

/// Relays an answer's body from the lane as DATA frames, and its trailers.
async fn relay_body<R: AsyncRead + Unpin>(
    lane: &mut R,
    buf: &mut BytesMut,
    framing: BodyFraming,
    tx: &mut Sender,
) -> Result<(), Broken> {
    match framing {
        BodyFraming::Empty => Ok(()),
        BodyFraming::Length(mut left) => {
            while left > 0 {
                if buf.is_empty() {
                    read_more(lane, buf).await?;
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                left -= n as u64;
                send_data(tx, buf.split_to(n).freeze(), left == 0).await?;
            }
            Ok(())
        }
        BodyFraming::Chunked => {
            let mut chunks = ChunkedScanner::default();
            loop {
                match chunks.step(buf).map_err(|_| Broken::Lane)? {
                    Step::NeedMore => read_more(lane, buf).await?,
                    Step::Framing(n) => buf.advance(n),
                    Step::Data(n) => send_data(tx, buf.split_to(n).freeze(), false).await?,
                    Step::Trailers(n) => {
                        let trailers = translate::response_trailers(&buf[..n]);
                        buf.advance(n);
                        return match trailers {
                            Some(trailers) => tx
                                .stream
                                .send_trailers(trailers)
                                .map_err(|_| Broken::Visitor),
                            None => send_data(tx, Bytes::new(), true).await,
                        };
                    }
                }
            }
        }
        BodyFraming::UntilClose => loop {
            if buf.is_empty() {
                buf.reserve(READ_CHUNK);
                match lane.read_buf(buf).await {
                    Ok(0) | Err(_) => return send_data(tx, Bytes::new(), true).await,
                    Ok(_) => {}
                }
            }
            send_data(tx, buf.split().freeze(), false).await?;
        },
    }
}

/// Reads more of the answer; the lane's end here is an answer cut short.
async fn read_more<R: AsyncRead + Unpin>(lane: &mut R, buf: &mut BytesMut) -> Result<(), Broken> {
    buf.reserve(READ_CHUNK);
    match lane.read_buf(buf).await {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(Broken::Lane),
    }
}

/// Sends `data` as the visitor's flow control allows; `end` ends the stream with it.
async fn send_data(tx: &mut Sender, data: Bytes, end: bool) -> Result<(), Broken> {
    let Sender { stream: tx, first } = tx;
    // The first piece of a body goes with the head, in the same write to the visitor, without
    // waiting for the connection to assign it capacity: `h2` holds it until the visitor's
    // window lets it go, and it is one read's worth at most.
    if std::mem::take(first) || data.is_empty() {
        return tx.send_data(data, end).map_err(|_| Broken::Visitor);
    }
    match tokio::time::timeout(VISITOR_WRITE_TIMEOUT, send_flowed(tx, data, end)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Broken::Visitor),
    }
}

/// The body side of a stream's answer.
struct Sender {
    stream: SendStream<Bytes>,
    /// Nothing of the body has been sent yet.
    first: bool,
}
