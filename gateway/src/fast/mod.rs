//! The lean HTTP/1.1 data path: one task per visitor connection that reads a request head,
//! judges it ([`crate::h1::request`]), picks a backend with the same decisions as everywhere
//! ([`crate::runtime::PoolRuntime::next_attempt`]), forwards the head ([`crate::h1::rewrite`])
//! and the body as they come, and streams the answer back. The backend connection stays pinned
//! to the visitor's connection while both are kept alive (Cloudflare holds its connections for
//! minutes), so a request costs no pool look-up, no channel and no extra task; when the
//! visitor's connection ends, its backend connection goes to the worker's spares for the next
//! visitor connection that needs one to that backend (`spares.rs`).
//!
//! Failover: a failed connect (refused, timed out, TLS, no route) is reported to health and the
//! same request goes to the next backend; a kept backend connection that turns out closed before
//! any answer is replaced by a fresh one to the same backend; a request the pool may send again
//! (a method in its `retry_methods`, no body or a small one read whole first) also leaves a
//! backend that answers 502/503/504 (the answer held back), that breaks before answering, or
//! that is taken out while the request waits for its answer (rescue); a backend at its
//! `max_in_flight` is passed over; when nothing can serve, the fallback answer, on a connection
//! that stays open. Connections over the cap are answered with the fallback and closed
//! ([`FastPath::shed`]). The attempt chain is `chain.rs`, asking [`crate::failover`] after each
//! attempt; one exchange with one backend (sending, the answer's head within its deadlines, an
//! answer that comes before the body is through, relaying) is `exchange.rs`; an upgraded
//! connection is `tunnel.rs`. Each attempt's outcome goes to the backend's passive detector as
//! it ended: only what the backend did counts, never what the visitor did.

mod body;
mod chain;
mod counted;
mod exchange;
pub(crate) mod spares;
mod tunnel;
pub(crate) mod upstream;

pub use upstream::Connector;

use crate::access::line::{Part, Record, VISITOR_GONE};
use crate::access::AccessLog;
use crate::answer::{self, Asked, Exchange};
use crate::attempts::GiveUp;
use crate::cap::Cap;
use crate::h1;
use crate::h1::cache;
use crate::h1::request::{self, Framing, Head, Method, Refusal};
use crate::h1::rewrite::{self, Forwarding};
use crate::process::Lifecycle;
use crate::runtime::{PoolRuntime, Runtime};
use crate::stale::{Store, Tee};
use arc_swap::ArcSwap;
use body::{Body, BodyError};
use bytes::{Buf, BytesMut};
use counted::Counted;
use holdfast_config::StalePolicy;
use holdfast_health::BackendHealth;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use upstream::Io;

/// A read buffer left larger than this after an exchange (a large body went through) is given
/// back, so that idle connections hold little memory.
const KEEP_BUFFER: usize = 16 * 1024;

/// A visitor connection quiet this long between requests gives its buffers back and waits for
/// its next request without them (Cloudflare keeps thousands of connections open and idle);
/// a busy connection keeps them and pays nothing.
const IDLE_LINGER: Duration = Duration::from_millis(250);

/// Writes to a visitor that take longer than this end the connection.
const VISITOR_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A backend connection pinned to a visitor connection that has been idle this long is closed:
/// Cloudflare keeps thousands of idle connections for up to 15 minutes, and a backend with a
/// small worker pool must not have them all held open on its side.
const PINNED_IDLE: Duration = Duration::from_secs(30);

/// How long a shed connection is given to send its request, and then to take the answer; and
/// the longest pause of a visitor whose rest of a body is read away after an early answer.
const SHED_WAIT: Duration = Duration::from_secs(1);

/// The longest a visitor's rest of a body is read away after an early answer.
const LINGER: Duration = Duration::from_secs(10);

/// How a visitor's requests came: plain HTTP/1.x, HTTP/1.x over TLS, or an h2 stream (over
/// TLS, read as HTTP/1.1: [`FastPath::serve_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Http,
    Https,
    H2,
}

impl Via {
    /// The scheme the visitor connected with (`X-Forwarded-Proto`).
    pub fn scheme(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Https | Via::H2 => "https",
        }
    }

    /// The protocol as the access log shows it.
    fn protocol(self, http11: bool) -> &'static str {
        match (self, http11) {
            (Via::H2, _) => "HTTP/2.0",
            (_, true) => "HTTP/1.1",
            (_, false) => "HTTP/1.0",
        }
    }
}

/// The data path, for every proxy listener.
pub struct FastPath {
    runtime: Arc<ArcSwap<Runtime>>,
    connector: Arc<Connector>,
    /// Requests in flight, for a graceful stop.
    lifecycle: Arc<Lifecycle>,
    /// Where each request's line goes, if anywhere.
    access: Option<Arc<AccessLog>>,
}

impl FastPath {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        connector: Arc<Connector>,
        lifecycle: Arc<Lifecycle>,
    ) -> Self {
        FastPath {
            runtime,
            connector,
            lifecycle,
            access: None,
        }
    }

    /// A data path with one pool of one backend (127.0.0.1:9, nothing listening), for tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        use crate::runtime::{Hashes, Version};
        let text = "[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:9\" }]\n";
        let config = holdfast_config::from_toml_str(text, std::path::Path::new("t.toml"))
            .map(Arc::new)
            .unwrap();
        let metrics = crate::metrics::Metrics::new().unwrap();
        let health = Arc::new(holdfast_health::HealthTable::new(
            &config,
            Arc::new(metrics.clone()),
        ));
        let version = Version {
            generation: 1,
            hashes: Hashes::default(),
        };
        let pools = health.pools();
        let runtime = Runtime::new(config, version, health, pools, metrics, None);
        let descriptors = upstream::Descriptors::new(1024, Cap::new(1024));
        let tls = holdfast_health::tls::TlsClient::new();
        FastPath::new(
            Arc::new(ArcSwap::from_pointee(runtime)),
            Arc::new(Connector::new(tls, descriptors)),
            Arc::default(),
        )
    }

    /// Writes a line per request to `access`.
    pub fn with_access_log(mut self, access: Option<Arc<AccessLog>>) -> Self {
        self.access = access;
        self
    }

    /// Serves one visitor connection until it closes, idles out or the process shuts down.
    pub async fn serve<S: VisitorIo>(
        &self,
        stream: S,
        client: IpAddr,
        via: Via,
        in_flight: Option<Arc<Cap>>,
        shutdown: &ShutdownWatch,
    ) {
        let mut visitor = self.visitor(stream, client, via, in_flight, shutdown);
        visitor.serve().await;
    }

    /// Serves the one request of an h2 stream (`stream` gives its HTTP/1.1 head and body, then
    /// ends) with the same decisions as any other; `first`: the visitor connection's first
    /// stream. The backend connection it leaves open goes to the worker's spares, where the
    /// connection's next stream (or any other visitor's) finds it.
    pub async fn serve_stream<S: VisitorIo>(
        &self,
        stream: S,
        client: IpAddr,
        in_flight: Option<Arc<Cap>>,
        shutdown: &ShutdownWatch,
        first: bool,
    ) {
        let mut visitor = self.visitor(stream, client, Via::H2, in_flight, shutdown);
        visitor.first_request = first;
        visitor.serve().await;
    }

    /// A visitor connection's state, before its first request.
    fn visitor<S: VisitorIo>(
        &self,
        stream: S,
        client: IpAddr,
        via: Via,
        in_flight: Option<Arc<Cap>>,
        shutdown: &ShutdownWatch,
    ) -> Visitor<'_, S> {
        Visitor {
            app: self,
            via,
            in_flight,
            stream: Counted::new(stream),
            logging: None,
            buf: BytesMut::new(),
            client,
            pinned: None,
            upstream_head: Vec::new(),
            scratch: Vec::new(),
            body_read: false,
            stale: None,
            tee: None,
            shutdown: shutdown.clone(),
            first_request: true,
        }
    }

    /// The running config and everything built from it.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The running config for a moment (a guard: never held across a wait, or it keeps an
    /// old config alive after a reload).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    /// The process's lifecycle: stopping, reloads, requests in flight.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Answers a connection over the cap with the fallback answer (503, `Retry-After`) and
    /// closes it. What the visitor sent is read first, briefly, and what it still sends is
    /// drained after: closing a socket with unread bytes would reset the connection before
    /// the visitor read the answer.
    pub async fn shed<S: VisitorIo>(&self, stream: S, client: IpAddr) {
        let (at, started) = (SystemTime::now(), now());
        let mut stream = Counted::new(stream);
        let runtime = self.runtime.load_full();
        runtime.metrics.shed();
        let mut buf = BytesMut::new();
        let _ = body::fill(&mut stream, &mut buf, body::HEAD_CHUNK, SHED_WAIT).await;
        let answer = &runtime.fallback;
        let mut out = Vec::with_capacity(answer.head(false).len() + answer.body.len());
        out.extend_from_slice(answer.head(false));
        out.extend_from_slice(&answer.body);
        if body::send(&mut stream, &out, SHED_WAIT).await.is_err() {
            return;
        }
        let _ = body::flush(&mut stream, SHED_WAIT).await;
        let _ = tokio::time::timeout(SHED_WAIT, stream.shutdown()).await;
        let drain = async {
            loop {
                buf.clear();
                match body::fill(&mut stream, &mut buf, body::HEAD_CHUNK, SHED_WAIT).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(SHED_WAIT, drain).await;
        if let Some(access) = &self.access {
            let mut record = Record::default();
            record.at = Some(at);
            record.visitor = Some(client);
            record.status = answer.status;
            record.bytes_in = stream.read;
            record.bytes_out = stream.written;
            record.duration = now().saturating_duration_since(started);
            record.fallback = Some(GiveUp::Busy);
            access.write(&record);
        }
    }
}

/// A visitor's connection: TCP, or TLS over TCP.
pub trait VisitorIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> VisitorIo for T {}

/// A backend connection kept for the visitor's next request.
struct Pinned {
    /// The backend it goes to (the same object across reloads while the backend stays).
    backend: Arc<BackendHealth>,
    io: Box<dyn Io>,
    buf: BytesMut,
    /// How long the last answer's head took, from the request sent.
    head_time: Option<Duration>,
    /// The deadline of the wait for an answer, kept from one request to the next.
    timer: body::Timer,
}

/// One visitor connection.
struct Visitor<'a, S> {
    app: &'a FastPath,
    via: Via,
    /// The listener's cap on requests answered at once, if it has one.
    in_flight: Option<Arc<Cap>>,
    stream: Counted<S>,
    /// What the request in flight came to, for the access log (when there is one).
    logging: Option<Box<Logging>>,
    buf: BytesMut,
    client: IpAddr,
    pinned: Option<Pinned>,
    /// The request head as it goes to the backend (kept for a retry).
    upstream_head: Vec<u8>,
    /// What goes to the visitor next: an answer's head, with a small body.
    scratch: Vec<u8>,
    /// The request body was read whole before the first attempt (so that it could go again):
    /// nothing of it is left on the connection, which may then carry another request whatever
    /// the answer.
    body_read: bool,
    /// Serve-stale, for the request in flight when its pool keeps copies and it may be kept
    /// or answered from one; the copy of its answer being taken on the side. Boxed, as what
    /// only some requests need: the task of every idle connection carries this struct.
    stale: Option<Box<StaleAsk>>,
    tee: Option<Box<Tee>>,
    shutdown: ShutdownWatch,
    /// No request of this connection has been answered yet (what it may take from the
    /// spares: [`crate::failover::Failover::takes_spare`]).
    first_request: bool,
}

/// The access log's line of the request in flight, and where the request began: when, and the
/// bytes read off the connection (up to its head) and written to it by then. Boxed in
/// [`Visitor`], and only when there is an access log.
#[derive(Default)]
struct Logging {
    line: Record,
    begun: Option<(Instant, u64, u64)>,
}

/// The line of the request in flight, when there is an access log.
fn line(logging: &mut Option<Box<Logging>>) -> Option<&mut Record> {
    logging.as_deref_mut().map(|l| &mut l.line)
}

/// A request serve-stale looks at: its pool's store and policy, and its URL.
struct StaleAsk {
    store: Arc<Store>,
    policy: Arc<StalePolicy>,
    url: String,
    /// A `GET` whose copy was not renewed lately: its answer is copied on the side.
    renew: bool,
}

impl<S: VisitorIo> Visitor<'_, S> {
    /// Serves the connection's requests; when it ends, the backend connection pinned to it
    /// (if any) goes to the worker's spares rather than being closed.
    async fn serve(&mut self) {
        let since = self.serve_requests().await;
        self.spare(since);
    }

    /// Gives the pinned backend connection, unused since `since`, to the worker's spares.
    fn spare(&mut self, since: Instant) {
        if let Some(pinned) = self.pinned.take() {
            spares::give(pinned, since);
        }
    }

    /// Serves requests until the connection ends; since when its pinned backend connection (if
    /// any) has been unused.
    async fn serve_requests(&mut self) -> Instant {
        loop {
            // Only the two limits are taken from the running config: no snapshot is held while
            // the connection waits (up to 930 s idle), so a reload's old config goes as soon as
            // no request uses it. Each request loads the config of its time.
            let (idle, header) = {
                let runtime = self.app.runtime.load();
                let listen = &runtime.config.listen;
                (listen.keepalive_timeout, listen.header_timeout)
            };
            let waiting = now();
            let head = match self.read_head(waiting, idle, header).await {
                Ok(Some(head)) => head,
                Ok(None) => return waiting,
                Err(refusal) => {
                    self.begin();
                    let _ = self.refuse(refusal).await;
                    // What was read of it counts as the request's (the connection closes).
                    self.buf.clear();
                    self.log();
                    return waiting;
                }
            };
            // The exchange's state lives on the heap only while a request is in flight: an
            // idle connection's task stays small.
            let busy = self.app.lifecycle.busy();
            self.begin();
            let exchanged = Box::pin(self.exchange(head)).await;
            self.log();
            drop(busy);
            self.first_request = false;
            match exchanged {
                // Kept open even when the process began to stop since the answer went out: the
                // visitor was told it stays open and may be sending its next request already
                // (closing now would reset that request). That one is answered with
                // `Connection: close`, like any request on an idle connection after the stop.
                Exchange::KeepOpen => {}
                // The backend connection goes to the spares before the visitor's connection
                // winds down (the rest of its body read away, or TLS closed): free for other
                // visitors meanwhile.
                Exchange::Linger => {
                    let since = now();
                    self.spare(since);
                    linger(&mut self.stream).await;
                    return since;
                }
                // Closed in order: over TLS, with close_notify, without which a client takes
                // the end for a truncation and does not resume its session on the next
                // connection (OpenSSL's clients, wrk among them: a full handshake each time).
                Exchange::Close => {
                    let since = now();
                    self.spare(since);
                    let _ = tokio::time::timeout(SHED_WAIT, self.stream.shutdown()).await;
                    return since;
                }
            }
            shrink(&mut self.buf);
            if let Some(pinned) = &mut self.pinned {
                shrink(&mut pinned.buf);
            }
        }
    }

    /// Reads until a whole request head is buffered. `Ok(None)`: the visitor closed or idled out
    /// (`idle` from `waiting` with no byte of a new request). A head begun must end within
    /// `header`, or the visitor gets 408: a client that trickles its head in holds the
    /// connection no longer.
    async fn read_head(
        &mut self,
        waiting: Instant,
        idle: Duration,
        header: Duration,
    ) -> Result<Option<Head>, Refusal> {
        let mut deadline = waiting + idle;
        let mut head_begun = false;
        let mut released = false;
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = request::parse(&self.buf)? {
                    return Ok(Some(head));
                }
                if !head_begun {
                    head_begun = true;
                    deadline = now() + header;
                }
            }
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return match head_begun {
                    true => Err(Refusal::HeadTimeout),
                    false => Ok(None),
                };
            }
            let lingering = self.buf.is_empty() && !released;
            let mut wait = left;
            if self.pinned.is_some() {
                wait = wait.min(PINNED_IDLE);
            }
            if lingering {
                wait = wait.min(IDLE_LINGER);
            }
            // An idle connection is not closed when the process stops: a request may already
            // be on its way. Its next answer closes it (or the process's exit, once nothing
            // has been in flight for a while).
            let read = if released && self.buf.is_empty() {
                body::fill_unbuffered(&mut self.stream, &mut self.buf, wait).await
            } else {
                body::fill(&mut self.stream, &mut self.buf, body::HEAD_CHUNK, wait).await
            };
            match read {
                Ok(n) if n > 0 => {}
                Err(BodyError::Timeout) if lingering => {
                    self.release_buffers();
                    released = true;
                }
                // The pinned backend connection's idle time, or the deadline (decided above).
                Err(BodyError::Timeout) => self.pinned = None,
                _ => return Ok(None),
            }
        }
    }

    /// Marks where a request begins, for its line in the access log (if there is one).
    fn begin(&mut self) {
        if self.app.access.is_none() {
            return;
        }
        let logging = self.logging.get_or_insert_with(Box::default);
        let record = &mut logging.line;
        record.clear();
        record.at = Some(SystemTime::now());
        record.visitor = Some(self.client);
        let consumed = self.stream.read.saturating_sub(self.buf.len() as u64);
        logging.begun = Some((now(), consumed, self.stream.written));
    }

    /// Writes the line of the request that just ended (if there is an access log).
    fn log(&mut self) {
        let (Some(access), Some(logging)) = (&self.app.access, &mut self.logging) else {
            return;
        };
        let (record, Some((started, consumed, written))) =
            (&mut logging.line, logging.begun.take())
        else {
            return;
        };
        let consumed_now = self.stream.read.saturating_sub(self.buf.len() as u64);
        record.bytes_in = consumed_now.saturating_sub(consumed);
        record.bytes_out = self.stream.written.saturating_sub(written);
        record.duration = now().saturating_duration_since(started);
        if record.status == 0 {
            record.status = VISITOR_GONE;
        }
        access.write(record);
    }

    /// Gives back the memory of the connection's (empty) buffers while it is idle.
    fn release_buffers(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.scratch = Vec::new();
        self.upstream_head = Vec::new();
        self.logging = None;
        self.stale = None;
        if let Some(pinned) = &mut self.pinned {
            if pinned.buf.is_empty() {
                pinned.buf = BytesMut::new();
            }
        }
    }

    async fn exchange(&mut self, head: Head) -> Exchange {
        self.body_read = false;
        let runtime = self.app.runtime.load_full();
        let host = head
            .host
            .and_then(|(a, b)| std::str::from_utf8(&self.buf[a..b]).ok());
        let pool_index = runtime.route(host);
        let forwarding = Forwarding {
            client: self.client,
            proto: self.via.scheme(),
            trusted: runtime.trust.trusts(self.client),
            names: &runtime.trust.names,
        };
        let seen =
            rewrite::request_head(&self.buf[..head.len], forwarding, &mut self.upstream_head);
        if let (Some(record), Some(seen)) = (line(&mut self.logging), &seen) {
            note_request(record, &self.buf[..head.len], &head, seen, self.via);
            record.pool = runtime.pools.get(pool_index).map(|p| p.name.clone());
        }
        self.stale = runtime.pools.get(pool_index).and_then(|pool| {
            let keeper = pool.stale.as_ref()?;
            let fits =
                matches!(head.method, Method::Get | Method::Head) && head.framing == Framing::Empty;
            let ((a, b), seen) = (head.host?, seen.as_ref().filter(|_| fits)?);
            let target = self.buf.get(seen.target.clone())?;
            let url = cache::url(self.via.scheme(), self.buf.get(a..b)?, target);
            let renew = head.method == Method::Get
                && !keeper.store.recent(&url, &self.buf[..head.len], now());
            Some(Box::new(StaleAsk {
                store: Arc::clone(&keeper.store),
                policy: Arc::clone(&keeper.policy),
                url,
                renew,
            }))
        });
        // From here on `buf` holds what follows the head: the body, or a pipelined request.
        self.buf.advance(head.len);
        if seen.is_none() {
            return self.refuse_close(Refusal::Malformed).await;
        }
        let Some(pool) = runtime.pools.get(pool_index) else {
            return self
                .fallback(&runtime, pool_index, &head, GiveUp::NoBackend)
                .await;
        };
        // Counted against the listener's cap until answered; over it, the fallback at once.
        let _in_flight = match &self.in_flight {
            Some(cap) => match cap.take() {
                (_, true) => {
                    return self
                        .fallback(&runtime, pool_index, &head, GiveUp::Busy)
                        .await
                }
                (ticket, false) => Some(ticket),
            },
            None => None,
        };
        let request_body = match head.framing {
            Framing::Empty => Body::Empty,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked,
        };
        let upstream_head = std::mem::take(&mut self.upstream_head);
        let result = self
            .attempt_chain(&runtime, pool, &head, request_body, &upstream_head)
            .await;
        self.upstream_head = upstream_head;
        self.keep_copy();
        match result {
            Ok(outcome) => outcome,
            Err(why) => self.fallback(&runtime, pool_index, &head, why).await,
        }
    }

    /// Keeps the copy of the answer taken on the side, if it came whole and may be kept.
    fn keep_copy(&mut self) {
        let (Some(tee), Some(stale)) = (self.tee.take(), &self.stale) else {
            return;
        };
        match tee.finish(&self.upstream_head, &stale.policy, now()) {
            Some(copy) => stale.store.put(&stale.url, &self.upstream_head, copy),
            None => stale.store.unkept(&stale.url),
        }
    }

    /// Answers with a kept copy instead of the fallback, if the request's pool has one that may
    /// still be served; `None` when it has not (nothing was sent then).
    async fn stale_answer(&mut self, pool: Option<&PoolRuntime>, head: &Head) -> Option<Exchange> {
        let stale = self.stale.as_ref()?;
        let lookup = cache::lookup(self.via.scheme(), &self.upstream_head)?;
        let now = now();
        let max_age = stale.policy.max_age;
        let copy = stale
            .store
            .get(&lookup, &self.upstream_head, max_age, now)?;
        let resident = now.saturating_duration_since(copy.at);
        let answer = cache::answer(&copy.kept, copy.body.len() as u64, resident, &lookup);
        let (keep_open, body_whole) = self.own_answer(head);
        let out = &mut self.scratch;
        out.clear();
        out.extend_from_slice(&answer.head);
        if !keep_open {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if answer.body {
            out.extend_from_slice(&copy.body);
        }
        if let Some(p) = pool {
            p.metrics.request(answer.status);
            p.metrics.stale.inc();
        }
        if let Some(record) = line(&mut self.logging) {
            record.status = answer.status;
            record.stale = true;
        }
        Some(self.send_own(keep_open, body_whole).await)
    }

    /// Answers with the fallback; the connection stays open when the request body allows it.
    async fn fallback(
        &mut self,
        runtime: &Runtime,
        pool: usize,
        head: &Head,
        why: GiveUp,
    ) -> Exchange {
        if let Some(record) = line(&mut self.logging) {
            record.fallback = Some(why);
        }
        if let Some(served) = self.stale_answer(runtime.pools.get(pool), head).await {
            return served;
        }
        let answer = &runtime.fallback;
        let (keep_open, body_whole) = self.own_answer(head);
        let out = &mut self.scratch;
        out.clear();
        out.extend_from_slice(answer.head(keep_open));
        if !head.head_method {
            out.extend_from_slice(&answer.body);
        }
        if let Some(p) = runtime.pools.get(pool) {
            p.metrics.request(answer.status);
            p.metrics.fallback(why);
        }
        if let Some(record) = line(&mut self.logging) {
            record.status = answer.status;
        }
        self.send_own(keep_open, body_whole).await
    }

    /// For an answer of holdfast's own (the fallback, a kept copy): whether the connection stays
    /// open after it, and whether the request body was read whole (one not read past would be
    /// taken for the next request: the connection closes instead).
    fn own_answer(&self, head: &Head) -> (bool, bool) {
        let body_whole = head.framing == Framing::Empty || self.body_read;
        let asked = Asked {
            keep_alive: head.keep_alive,
            upgrade: false,
            body_whole,
            closing: *self.shutdown.borrow(),
        };
        (answer::keep_open(asked, false), body_whole)
    }

    /// Sends the answer of holdfast's own in `scratch`.
    async fn send_own(&mut self, keep_open: bool, body_whole: bool) -> Exchange {
        let sent = body::send(&mut self.stream, &self.scratch, VISITOR_WRITE_TIMEOUT).await;
        let flushed = body::flush(&mut self.stream, VISITOR_WRITE_TIMEOUT).await;
        answer::after(sent.is_ok() && flushed.is_ok(), keep_open, body_whole)
    }

    async fn refuse_close(&mut self, refusal: Refusal) -> Exchange {
        let _ = self.refuse(refusal).await;
        Exchange::Close
    }

    /// Answers a refused request and lets the connection close.
    async fn refuse(&mut self, refusal: Refusal) -> Result<(), BodyError> {
        self.app.runtime.load().metrics.refused(refusal);
        let status = refusal.status();
        if let Some(record) = line(&mut self.logging) {
            record.status = status;
        }
        let text = format!("{}\n", refusal.as_str());
        let answer = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            h1::reason(status),
            text.len()
        );
        body::send(&mut self.stream, answer.as_bytes(), VISITOR_WRITE_TIMEOUT).await?;
        body::flush(&mut self.stream, VISITOR_WRITE_TIMEOUT).await
    }
}

/// Notes what the access log shows of a request, from its head (`text`).
fn note_request(record: &mut Record, text: &[u8], head: &Head, seen: &rewrite::Seen, via: Via) {
    record.visitor = Some(seen.visitor);
    record.protocol = via.protocol(head.http11);
    let parts = [
        (Part::Method, Some(seen.method.clone())),
        (Part::Target, Some(seen.target.clone())),
        (Part::Host, head.host.map(|(a, b)| a..b)),
        (Part::Referer, seen.referer.clone()),
        (Part::UserAgent, seen.user_agent.clone()),
        (Part::CfRay, seen.cf_ray.clone()),
    ];
    for (part, range) in parts {
        if let Some(bytes) = range.and_then(|r| text.get(r)) {
            record.set(part, bytes);
        }
    }
}

/// Whether an idle backend connection is still open: a closed one (or one that sent bytes
/// nobody asked for) is already readable. One poll with a no-op waker: no timer, and no system
/// call while the connection is quiet.
fn still_open(io: &mut Box<dyn Io>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    Pin::new(io).poll_read(&mut cx, &mut buf).is_pending()
}

/// The time now, on tokio's clock (so that tests on paused time move it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// After an answer sent before the visitor's request body was read whole: stop sending, then
/// read and drop what the visitor still sends, for at most [`LINGER`] (nginx's lingering close).
async fn linger<S: VisitorIo>(stream: &mut S) {
    let _ = tokio::time::timeout(SHED_WAIT, stream.shutdown()).await;
    let drain = async {
        // On the heap, and only now: an array here would be part of every connection's task,
        // idle or not.
        let mut sink = vec![0u8; 16 * 1024];
        loop {
            match tokio::time::timeout(SHED_WAIT, stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Gives back a read buffer's memory when it holds nothing and grew large.
fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
        *buf = BytesMut::new();
    }
}
