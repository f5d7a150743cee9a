//! HTTP/2 from visitors (Cloudflare's "HTTP/2 to origin", gRPC), on an HTTPS listener whose
//! ALPN agreed on `h2`. The `h2` crate speaks the protocol; every stream is turned into the
//! HTTP/1.1 request an HTTP/1.1 visitor would have sent ([`translate`]) and handed to the
//! HTTP/1.1 data path ([`FastPath::serve`]) over an in-memory pipe, a *lane*. So an h2 request
//! goes through the very same decisions as any other: the judgement of its head, tiers,
//! failover of the same request, hold and rescue, the fallback, caps and metrics. The answer
//! comes back on the lane as HTTP/1.1 and goes to the visitor as h2: its head, its body as
//! DATA frames (chunked framing taken off), its trailers as a trailing HEADERS frame (gRPC).
//!
//! A lane outlives its stream: one that ended cleanly serves the connection's next stream, with
//! the backend connection the data path keeps pinned to it, so a busy h2 connection holds about
//! as many backend connections as it has streams open at once, the same as that many HTTP/1.1
//! connections would.
//!
//! The connection: `SETTINGS_MAX_CONCURRENT_STREAMS` from `listen.h2_max_concurrent_streams`,
//! closed (GOAWAY) after `listen.keepalive_timeout` without a stream, GOAWAY when the process
//! stops and at each reload (streams in flight finish; the client opens a new connection for
//! the next ones), and ENHANCE_YOUR_CALM for a client that floods it ([`guard`]).

mod guard;

use crate::bridge::translate::{self, BodyFraming as RequestBody};
use crate::bridge::{lock, send_flowed, LANE_BUFFER};
use crate::cap::Cap;
use crate::fast::{FastPath, VisitorIo};
use crate::h1::chunked::{ChunkedScanner, Step};
use crate::h1::response::{self, BodyFraming};
use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use bytes::{Buf, Bytes, BytesMut};
use guard::{Abuse, FrameGuard};
use pingora::server::ShutdownWatch;
use std::future::{poll_fn, Future};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// Flow-control window of each stream: what a visitor may send of a request body before it
/// is taken. Taken as soon as it is on the lane.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window of the whole connection.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Resets of streams not yet accepted, beyond which `h2` closes the connection (the rapid
/// reset attack against a server slower to accept than the client to reset). Above the
/// guard's own limit, so that a burst is told by the guard as what it is.
const PENDING_ACCEPT_RESETS: usize = 2 * guard::RESETS as usize;
/// Streams reset for errors of the client's, beyond which `h2` closes the connection.
const LOCAL_ERROR_RESETS: usize = 256;
/// A lane idle longer than this is not used again (its backend connection was let go).
const LANE_IDLE: Duration = Duration::from_secs(30);
/// Sending one piece of an answer (one read from the lane) to a visitor that takes longer than
/// this, its window closed, ends the stream (as the same stall ends an HTTP/1.1 connection).
const VISITOR_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// After a connection is closed as an attack, how long its GOAWAY may take to go out.
const ABUSE_LINGER: Duration = Duration::from_secs(1);
/// An over-the-cap connection: how long it has to send its requests before they are
/// answered with the fallback and it is closed.
const SHED_WAIT: Duration = Duration::from_secs(1);
/// The most bytes of a vectored write to a visitor put together into one TLS write.
const COALESCE: usize = 32 * 1024;
/// After a connection's close, how long what the client still sends is read away.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// What a connection keeps of its write scratch between writes.
const KEEP_SCRATCH: usize = 4 * 1024;
/// Reads from a lane, at most.
const READ_CHUNK: usize = 16 * 1024;

/// Serves one HTTP/2 visitor connection until it ends.
pub async fn serve<S: VisitorIo + 'static>(
    app: Arc<FastPath>,
    io: S,
    client: IpAddr,
    in_flight: Option<Arc<Cap>>,
    shutdown: ShutdownWatch,
) {
    let runtime = app.runtime();
    let listen = &runtime.config.listen;
    let (idle, handshake_timeout, max_streams) = (
        listen.keepalive_timeout,
        listen.header_timeout,
        listen.h2_max_concurrent_streams,
    );
    let metrics = runtime.metrics.clone();
    drop(runtime);
    let Some((mut conn, alarm)) = handshake(io, client, max_streams, handshake_timeout).await
    else {
        return;
    };
    let shared = Arc::new(Connection {
        app: app.clone(),
        client,
        in_flight,
        shutdown: shutdown.clone(),
        lanes: Mutex::new(Vec::new()),
        open: AtomicUsize::new(0),
        last_end: Mutex::new(Instant::now()),
    });
    let mut stopping = shutdown;
    let mut reloads = app.lifecycle().reloads();
    reloads.borrow_and_update();
    // Every LANE_IDLE: lanes idle that long are let go, and a connection idle for `idle` is
    // closed.
    let idle_timer = tokio::time::sleep(LANE_IDLE.min(idle));
    tokio::pin!(idle_timer);
    let mut closing = false;
    loop {
        if !closing && *stopping.borrow_and_update() {
            conn.graceful_shutdown();
            closing = true;
        }
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    metrics.h2_stream();
                    shared.open.fetch_add(1, Ordering::Relaxed);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        stream(&shared, request, respond).await;
                        shared.stream_ended();
                    });
                }
                Some(Err(e)) => {
                    match abuse_of(&alarm, &e) {
                        Some(kind) => attacked(&metrics, client, kind),
                        None => tracing::debug!(%client, error = %e, "HTTP/2 connection ended"),
                    }
                    break;
                }
                None => break,
            },
            changed = stopping.changed(), if !closing => {
                if changed.is_err() {
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
            _ = reloads.changed(), if !closing => {
                conn.graceful_shutdown();
                closing = true;
            }
            () = alarm.notify.notified() => return calm_down(&mut conn, &alarm, &metrics, client).await,
            () = &mut idle_timer, if !closing => {
                shared.let_idle_lanes_go();
                let now = Instant::now();
                let next = match shared.idle_since() {
                    Some(since) if now.duration_since(since) >= idle => {
                        conn.graceful_shutdown();
                        closing = true;
                        continue;
                    }
                    Some(since) => (since + idle).min(now + LANE_IDLE),
                    None => now + LANE_IDLE.min(idle),
                };
                idle_timer.as_mut().reset(next.into());
            }
        }
    }
}

/// A guarded h2 connection: its bytes shown to the [`FrameGuard`] as they are read, and the
/// limits every visitor connection gets (streams at once, header list size, windows, resets).
type Conn<S> = ::h2::server::Connection<Guarded<S>, Bytes>;

/// Opens the h2 connection on `io`, within `timeout`, with the guard and limits every visitor
/// connection gets, an over-the-cap one too; its alarm goes off when the guard sees a flood.
async fn handshake<S: VisitorIo>(
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
        scratch: Vec::new(),
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
fn abuse_of(alarm: &Alarm, e: &::h2::Error) -> Option<&'static str> {
    let calm = e.reason() == Some(Reason::ENHANCE_YOUR_CALM) && e.is_library();
    match alarm.take() {
        Some(abuse) => Some(abuse.key()),
        None if calm => Some("limits"),
        None => None,
    }
}

/// Closes a connection whose guard saw a flood: GOAWAY with ENHANCE_YOUR_CALM, which goes out
/// briefly; the attacker's streams are not waited for.
async fn calm_down<S: VisitorIo>(
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
fn attacked(metrics: &crate::metrics::Metrics, client: IpAddr, kind: &str) {
    metrics.h2_abuse(kind);
    tracing::warn!(%client, kind, "HTTP/2 connection closed as an attack (ENHANCE_YOUR_CALM)");
}

/// Answers every stream of an HTTP/2 connection over the cap with the fallback answer, and
/// closes it: the HTTP/2 form of [`FastPath::shed`]. The same guard and limits as any other
/// connection: being over the cap gives a flood no more room.
pub async fn shed<S: VisitorIo + 'static>(app: &FastPath, io: S, client: IpAddr) {
    let runtime = app.runtime();
    runtime.metrics.shed();
    let max_streams = runtime.config.listen.h2_max_concurrent_streams;
    let Some((mut conn, alarm)) = handshake(io, client, max_streams, SHED_WAIT).await else {
        return;
    };
    let metrics = &runtime.metrics;
    // Streams are answered as they come; the first one answered starts the GOAWAY (streams
    // the client sent before it hears it are answered too). A client that sends nothing for
    // SHED_WAIT gets the GOAWAY then.
    let answer = &runtime.fallback;
    let Some(response) = translate::response(answer.head(true)) else {
        return;
    };
    let mut deadline = tokio::time::Instant::now() + SHED_WAIT;
    let mut closing = false;
    loop {
        let accepted = tokio::select! {
            accepted = tokio::time::timeout_at(deadline, conn.accept()) => accepted,
            () = alarm.notify.notified() => return calm_down(&mut conn, &alarm, metrics, client).await,
        };
        match accepted {
            Ok(Some(Err(e))) => {
                if let Some(kind) = abuse_of(&alarm, &e) {
                    attacked(metrics, client, kind);
                }
                return;
            }
            Ok(Some(Ok((request, mut respond)))) => {
                let head_method = request.method() == http::Method::HEAD;
                if let Ok(mut tx) = respond.send_response(response.clone(), head_method) {
                    if !head_method {
                        let _ = tx.send_data(answer.body.clone(), true);
                    }
                }
                if !closing {
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
            Ok(_) => return,
            Err(_) if !closing => {
                conn.graceful_shutdown();
                closing = true;
                deadline = tokio::time::Instant::now() + SHED_WAIT;
            }
            Err(_) => return,
        }
    }
}

/// What the streams of one connection share.
struct Connection {
    app: Arc<FastPath>,
    client: IpAddr,
    in_flight: Option<Arc<Cap>>,
    shutdown: ShutdownWatch,
    /// Lanes free for the next stream, the most recently used last.
    lanes: Mutex<Vec<Lane>>,
    /// Streams being served.
    open: AtomicUsize,
    /// When the last stream ended.
    last_end: Mutex<Instant>,
}

impl Connection {
    /// A free lane that has not been idle too long, or a new one.
    fn lane(&self) -> Lane {
        self.let_idle_lanes_go();
        if let Some(lane) = lock(&self.lanes).pop() {
            return lane;
        }
        let (ours, theirs) = tokio::io::duplex(LANE_BUFFER);
        let (app, client) = (self.app.clone(), self.client);
        let (in_flight, shutdown) = (self.in_flight.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            app.serve(theirs, client, "https", in_flight, &shutdown)
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
    fn let_idle_lanes_go(&self) {
        let mut lanes = lock(&self.lanes);
        // Given back in order: when the oldest is not idle too long, none is.
        if lanes
            .first()
            .is_some_and(|l| l.since.elapsed() >= LANE_IDLE)
        {
            lanes.retain(|l| l.since.elapsed() < LANE_IDLE);
        }
    }

    fn give_back(&self, mut lane: Lane) {
        lane.since = Instant::now();
        // An idle lane holds no read buffer (16 KiB each, times the streams a connection had
        // open at once; it is empty, or the lane would not be reused): the next stream on it
        // takes a new one.
        lane.buf = BytesMut::new();
        lock(&self.lanes).push(lane);
    }

    fn stream_ended(&self) {
        *lock(&self.last_end) = Instant::now();
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Since when no stream has been open; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        let last_end = *lock(&self.last_end);
        (self.open.load(Ordering::Relaxed) == 0).then_some(last_end)
    }
}

/// The HTTP/1.1 side of a stream: a pipe to a task of the HTTP/1.1 data path.
struct Lane {
    io: DuplexStream,
    /// What was read from the pipe and not yet passed on.
    buf: BytesMut,
    /// When it was last given back.
    since: Instant,
}

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
async fn stream(
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

/// Where the guard says a connection is an attack.
#[derive(Default)]
struct Alarm {
    abuse: Mutex<Option<Abuse>>,
    notify: tokio::sync::Notify,
}

impl Alarm {
    fn trip(&self, abuse: Abuse) {
        *lock(&self.abuse) = Some(abuse);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<Abuse> {
        lock(&self.abuse).take()
    }
}

/// A visitor's connection with its bytes shown to the [`FrameGuard`] as they are read.
struct Guarded<S> {
    io: S,
    guard: FrameGuard,
    alarm: Arc<Alarm>,
    /// Once the alarm went off, nothing more is read.
    tripped: bool,
    /// Where the slices of one vectored write are put together.
    scratch: Vec<u8>,
    /// Once shut down: the end of the lingering close.
    closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            if let Some(abuse) = this.guard.feed(&buf.filled()[before..], Instant::now()) {
                this.tripped = true;
                this.alarm.trip(abuse);
            }
        }
        read
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    /// `h2` hands a frame's header and its payload as two slices; over TLS, which writes one
    /// slice at a time, they would go as two records and two system calls. They are copied
    /// into one (up to [`COALESCE`] bytes) and written at once. A write that must be retried
    /// is retried with the same bytes first: `h2` only ever adds to what it hands.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let (Some(first), Some(_)) = (slices.next(), slices.next()) else {
            let only = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(&mut this.io).poll_write(cx, only);
        };
        if first.len() >= COALESCE {
            return Pin::new(&mut this.io).poll_write(cx, first);
        }
        this.scratch.clear();
        for b in bufs {
            let room = COALESCE - this.scratch.len();
            if room == 0 {
                break;
            }
            this.scratch.extend_from_slice(&b[..b.len().min(room)]);
        }
        let poll = Pin::new(&mut this.io).poll_write(cx, &this.scratch);
        // Small writes (heads, small answers) keep theirs; a large one's memory is given back,
        // so that thousands of idle connections hold none.
        if this.scratch.capacity() > KEEP_SCRATCH {
            this.scratch = Vec::new();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// TLS `close_notify` and the TCP FIN, then what the client still sends is read and dropped
    /// (its own `close_notify`, an acknowledgement) until it closes too, for at most
    /// [`CLOSE_LINGER`]: closing a socket with unread bytes would reset the connection, and the
    /// client could lose the end of what was sent to it (nginx's lingering close).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let linger = match &mut this.closing {
            Some(linger) => linger,
            None => {
                std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                this.closing
                    .insert(Box::pin(tokio::time::sleep(CLOSE_LINGER)))
            }
        };
        let mut sink = [0u8; 1024];
        loop {
            if linger.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
