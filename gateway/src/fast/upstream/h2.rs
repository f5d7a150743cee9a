//! HTTP/2 toward backends configured with `protocol = "h2"` (gRPC servers, h2-only origins).
//!
//! Each such backend has one h2 connection, shared by every request in flight to it, each a
//! stream of its own (multiplexed; `SETTINGS_MAX_CONCURRENT_STREAMS` of the backend's is
//! honoured by waiting for a free stream). The HTTP/1.1 data path does not know: a "connection"
//! it opens to an h2 backend is a *lane* ([`Connector::connect`](super::Connector)), an
//! in-memory pipe whose other end turns each HTTP/1.1 request written into it into a stream of
//! the shared connection, and the stream's response into the HTTP/1.1 answer read back
//! ([`crate::bridge::translate`]). So the same deadlines, failover, hold, rescue and health reports
//! apply to h2 backends as to any other, unchanged.
//!
//! What a failure looks like from the data path: the shared connection cannot be opened (a
//! connect failure like any other: refused, timed out, TLS); the backend resets the stream or
//! the connection breaks before the response head (the lane closes before answering: a
//! backend that broke, retried as the pool allows); after the head (the answer is cut short).
//! The data path giving up on a lane (a deadline passed, the visitor left) cancels the stream
//! (RST_STREAM CANCEL). A shared connection that ended is replaced at the next connect; it
//! closes (GOAWAY) once no lane uses it, so an idle backend holds no connection from holdfast.

use super::conn::{ConnectError, Io};
use crate::bridge::translate::{self, BackendRequest, Framed};
use crate::bridge::{lock, send_flowed, LANE_BUFFER};
use crate::h1::chunked::{ChunkedScanner, Step};
use ::h2::client::{ResponseFuture, SendRequest};
use ::h2::{RecvStream, SendStream};
use bytes::{Buf, Bytes, BytesMut};
use holdfast_config::{Backend, BackendTls};
use holdfast_health::TrafficFailure;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::oneshot;

/// Flow-control window of each stream toward a backend: what it may send of a response before
/// holdfast takes it (as soon as it is on the lane).
const STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window of a whole backend connection.
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// The largest response header list a backend may send (as an HTTP/1.1 head may be).
const MAX_HEADER_LIST: u32 = crate::h1::request::MAX_HEAD_BYTES as u32;
/// Reads from a lane, at most.
const READ_CHUNK: usize = 16 * 1024;

/// The shared connections to h2 backends, one per backend (address, TLS settings).
#[derive(Default)]
pub struct H2Backends {
    connections: Mutex<HashMap<Key, Arc<Slot>>>,
}

type Key = (SocketAddr, Option<BackendTls>);

/// Where a backend's connection is kept. Locked while it is being opened, so that requests
/// arriving together wait for the one connection instead of each opening its own.
type Slot = tokio::sync::Mutex<Weak<Shared>>;

/// One backend's connection, held by the lanes using it.
struct Shared {
    send: SendRequest<Bytes>,
    /// The connection ended (or refused a new stream): the next connect opens another.
    ended: Arc<AtomicBool>,
}

impl Shared {
    fn usable(&self) -> bool {
        !self.ended.load(Ordering::Relaxed)
    }
}

impl H2Backends {
    /// A lane to `backend`, on its shared connection; `open` opens the byte stream (TCP, TLS
    /// with ALPN `h2`) when there is no usable connection.
    pub async fn lane<F>(&self, backend: &Backend, open: F) -> Result<Box<dyn Io>, ConnectError>
    where
        F: Future<Output = Result<Box<dyn Io>, ConnectError>>,
    {
        let slot = self.slot((backend.addr, backend.tls.clone()));
        let mut kept = slot.lock().await;
        let shared = match kept.upgrade().filter(|s| s.usable()) {
            Some(shared) => shared,
            None => {
                let shared = handshake(open.await?).await?;
                *kept = Arc::downgrade(&shared);
                shared
            }
        };
        drop(kept);
        let (ours, theirs) = tokio::io::duplex(LANE_BUFFER);
        let (dropped, gone) = oneshot::channel();
        let lane = Lane {
            ours,
            gone,
            scheme: backend.scheme(),
            address: backend.address.clone(),
        };
        tokio::spawn(lane.serve(shared));
        Ok(Box::new(LaneEnd {
            io: theirs,
            _dropped: dropped,
        }))
    }

    /// The slot of `key`; slots of backends with no connection and nobody waiting are let go
    /// when a new one is made (a backend removed from the config leaves nothing behind).
    fn slot(&self, key: Key) -> Arc<Slot> {
        let mut connections = lock(&self.connections);
        if let Some(slot) = connections.get(&key) {
            return slot.clone();
        }
        connections.retain(|_, slot| {
            Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |c| c.strong_count() > 0)
        });
        connections.entry(key).or_default().clone()
    }
}

/// Opens the h2 connection on `io` and drives it on a task of its own.
async fn handshake(io: Box<dyn Io>) -> Result<Arc<Shared>, ConnectError> {
    let mut builder = ::h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false);
    let (send, connection) =
        builder
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| match e.get_io() {
                Some(io) => ConnectError::of(io),
                None => ConnectError::Backend(TrafficFailure::Other),
            })?;
    let ended = Arc::new(AtomicBool::new(false));
    let flag = ended.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "h2 backend connection ended");
        }
        flag.store(true, Ordering::Relaxed);
    });
    Ok(Arc::new(Shared { send, ended }))
}

/// The gateway's end of a lane: its drop tells the lane's task at once, whatever it waits for
/// (a free stream, the backend's window, the answer), so that the stream is cancelled.
struct LaneEnd {
    io: DuplexStream,
    _dropped: oneshot::Sender<()>,
}

/// The backend's end of a lane, served by a task of its own.
struct Lane {
    ours: DuplexStream,
    /// Resolves when the data path dropped its end.
    gone: oneshot::Receiver<()>,
    scheme: &'static str,
    /// The backend's address as written: `:authority` for a request without `Host`.
    address: String,
}

impl Lane {
    /// Carries the HTTP/1.1 requests written into the lane as streams of the shared
    /// connection, one after the other, until the lane closes or an exchange leaves it
    /// unusable.
    async fn serve(self, shared: Arc<Shared>) {
        let Lane {
            ours,
            mut gone,
            scheme,
            address,
        } = self;
        let (mut rd, mut wr) = tokio::io::split(ours);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            let request = loop {
                match translate::backend_request(&buf, scheme, &address) {
                    Ok(Some(request)) => break request,
                    Ok(None) => match read_more(&mut rd, &mut buf).await {
                        true => {}
                        false => return,
                    },
                    Err(()) => return refuse(&mut wr).await,
                }
            };
            buf.advance(request.len);
            let stream = Stream {
                rd: &mut rd,
                wr: &mut wr,
                buf: &mut buf,
                out: &mut out,
            };
            // Dropping the exchange cancels its stream.
            let whole = tokio::select! {
                whole = stream.exchange(&shared, request) => whole,
                _ = &mut gone => false,
            };
            if !whole {
                return;
            }
        }
    }
}

/// One request on a lane, as a stream.
struct Stream<'a> {
    rd: &'a mut ReadHalf<DuplexStream>,
    wr: &'a mut WriteHalf<DuplexStream>,
    /// What was read from the lane and not yet sent on.
    buf: &'a mut BytesMut,
    /// The answer's head and body framing as they go into the lane.
    out: &'a mut Vec<u8>,
}

/// How the sending of a request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// The lane ended before the body was through (the visitor's body stopped).
    LaneClosed,
    /// The stream refused more (the backend answered early and reset it, or it broke).
    Refused,
}

impl Stream<'_> {
    /// Sends the request, its body as it comes from the lane, and writes the answer into the
    /// lane. `true`: done cleanly, and the lane may carry the next request.
    async fn exchange(self, shared: &Shared, request: BackendRequest) -> bool {
        let Stream { rd, wr, buf, out } = self;
        let head_method = request.request.method() == http::Method::HEAD;
        let framed = request.body;
        // A free stream: the backend's concurrency limit.
        let Ok(mut send) = shared.send.clone().ready().await else {
            shared.ended.store(true, Ordering::Relaxed);
            return false;
        };
        let (response, body) = match send.send_request(request.request, framed == Framed::None) {
            Ok(sent) => sent,
            Err(e) if e.is_io() || e.is_go_away() || e.is_remote() => {
                shared.ended.store(true, Ordering::Relaxed);
                return false;
            }
            // Not a request h2 can carry (a field h2 forbids): the visitor's, not the backend's.
            Err(_) => {
                refuse(wr).await;
                return false;
            }
        };
        // The body goes out while the answer is awaited and relayed: a backend may answer
        // before it has the whole body.
        let upload = send_body(rd, buf, framed, body);
        let answer = relay(wr, out, response, head_method);
        tokio::pin!(upload, answer);
        let mut body_whole = framed == Framed::None;
        let relayed = loop {
            tokio::select! {
                relayed = &mut answer => break relayed,
                sent = &mut upload, if !body_whole => match sent {
                    Ok(()) => body_whole = true,
                    Err(Upload::LaneClosed) => return false,
                    // The backend answers without the rest, or broke: its answer tells.
                    Err(Upload::Refused) => {}
                },
            }
        };
        relayed && body_whole
    }
}

/// Sends a request body from the lane on the stream: `framed` as the data path wrote it.
async fn send_body(
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut BytesMut,
    framed: Framed,
    mut tx: SendStream<Bytes>,
) -> Result<(), Upload> {
    match framed {
        Framed::None => Ok(()),
        Framed::Length(mut left) => {
            while left > 0 {
                if buf.is_empty() && !read_more(rd, buf).await {
                    return Err(Upload::LaneClosed);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                left -= n as u64;
                send_data(&mut tx, buf.split_to(n).freeze(), left == 0).await?;
            }
            Ok(())
        }
        Framed::Chunked => {
            let mut chunks = ChunkedScanner::default();
            loop {
                // The data path checked the framing on its way in: a fault here is a lane's.
                match chunks.step(buf).map_err(|_| Upload::LaneClosed)? {
                    Step::NeedMore => {
                        if !read_more(rd, buf).await {
                            return Err(Upload::LaneClosed);
                        }
                    }
                    Step::Framing(n) => buf.advance(n),
                    Step::Data(n) => send_data(&mut tx, buf.split_to(n).freeze(), false).await?,
                    Step::Trailers(n) => {
                        let trailers = translate::response_trailers(&buf[..n]);
                        buf.advance(n);
                        return match trailers {
                            Some(trailers) => {
                                tx.send_trailers(trailers).map_err(|_| Upload::Refused)
                            }
                            None => send_data(&mut tx, Bytes::new(), true).await,
                        };
                    }
                }
            }
        }
    }
}

/// Sends `data` as the backend's flow control allows; `end` ends the request with it.
async fn send_data(tx: &mut SendStream<Bytes>, data: Bytes, end: bool) -> Result<(), Upload> {
    send_flowed(tx, data, end)
        .await
        .map_err(|()| Upload::Refused)
}

/// Awaits the response and writes it into the lane as HTTP/1.1. `true`: whole.
async fn relay(
    wr: &mut WriteHalf<DuplexStream>,
    out: &mut Vec<u8>,
    response: ResponseFuture,
    head_method: bool,
) -> bool {
    let Ok(response) = response.await else {
        return false;
    };
    let (parts, mut body) = response.into_parts();
    let framed = translate::backend_response(&parts, head_method, out);
    if wr.write_all(out).await.is_err() {
        return false;
    }
    match framed {
        Framed::None => true,
        Framed::Length(_) => relay_data(wr, &mut body, None).await,
        Framed::Chunked => {
            if !relay_data(wr, &mut body, Some(out)).await {
                return false;
            }
            let Ok(trailers) = body.trailers().await else {
                return false;
            };
            out.clear();
            translate::last_chunk(trailers.as_ref(), out);
            wr.write_all(out).await.is_ok()
        }
    }
}

/// Writes a response's DATA into the lane, as chunks when `chunk` is given (its scratch).
async fn relay_data(
    wr: &mut WriteHalf<DuplexStream>,
    body: &mut RecvStream,
    mut chunk: Option<&mut Vec<u8>>,
) -> bool {
    while let Some(data) = body.data().await {
        let Ok(data) = data else {
            return false;
        };
        if data.is_empty() {
            continue;
        }
        let n = data.len();
        let written = match &mut chunk {
            Some(framing) => {
                framing.clear();
                let _ = std::io::Write::write_fmt(*framing, format_args!("{n:x}\r\n"));
                framing.extend_from_slice(&data);
                framing.extend_from_slice(b"\r\n");
                wr.write_all(framing).await
            }
            None => wr.write_all(&data).await,
        };
        if written.is_err() {
            return false;
        }
        let _ = body.flow_control().release_capacity(n);
    }
    true
}

/// Reads more from the lane into `buf`; `false` at its end.
async fn read_more(rd: &mut ReadHalf<DuplexStream>, buf: &mut BytesMut) -> bool {
    buf.reserve(READ_CHUNK);
    matches!(rd.read_buf(buf).await, Ok(n) if n > 0)
}

/// Answers a request h2 cannot carry with 400, and ends the lane.
async fn refuse(wr: &mut WriteHalf<DuplexStream>) {
    let answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let _ = wr.write_all(answer).await;
    let _ = wr.shutdown().await;
}

impl AsyncRead for LaneEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LaneEnd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
