//! One exchange with one backend: send the request (head, then the body from memory or as it
//! comes from the visitor, watching for an answer that comes before the body is through), await
//! the answer's head within its deadlines, and relay it (or open the tunnel a `101` starts).
//!
//! Time limits here are deadlines: the wait for a response head ends at the earliest of
//! `read_timeout` after the request went out, the pool's `response_timeout` for a request that
//! may be sent again, and the end of the chain's `total_timeout`, however the backend trickles
//! its bytes; at most [`MAX_INTERIM`] interim answers are taken before the final one.

use super::body::{self, Body, BodyError};
use super::upstream::{Detached, Io};
use super::{now, tunnel, Pinned, Via, Visitor, VisitorIo, VISITOR_WRITE_TIMEOUT};
use crate::answer::{self, Answer, Asked, Exchange};
use crate::attempts::AttemptLimits;
use crate::h1::request::{Head, Refusal};
use crate::h1::response::{self, BodyFraming, ResponseHead};
use crate::h1::rewrite;
use crate::hedge::Latency;
use crate::stale::Tee;
use bytes::{Buf, BytesMut};
use holdfast_health::table::BackendHealth;
use holdfast_health::TrafficFailure;
use std::time::{Duration, Instant};

/// Interim answers (`100 Continue`, `103 Early Hints`) taken before the final one; a backend
/// sending more is not answering (`bad_response`).
pub const MAX_INTERIM: usize = 16;

/// An answer not begun this long after the request went out starts to watch for its backend
/// being taken out; quicker answers (nearly all) never register for that.
const RESCUE_ARM: Duration = Duration::from_millis(50);

/// What an attempt sends: the rewritten head, then the body as it comes from the visitor or,
/// when it was read whole to be sendable again, from memory.
#[derive(Clone, Copy)]
pub(super) struct Outgoing<'a> {
    pub head: &'a [u8],
    pub body: Body,
    pub buffered: Option<&'a [u8]>,
}

impl Outgoing<'_> {
    /// Whether the body comes from the visitor as it is sent (not from memory).
    fn streams(&self) -> bool {
        self.body != Body::Empty && self.buffered.is_none()
    }
}

/// When an attempt may leave its backend for another one, nothing having reached the visitor.
#[derive(Clone, Copy)]
pub(super) struct Leave<'a> {
    /// Answers with these statuses are held back.
    pub hold: &'a [u16],
    /// The backend whose being taken out ends the wait for its answer.
    pub rescue: Option<&'a BackendHealth>,
    /// With `rescue`: the longest wait for the answer's head (the pool's `response_timeout`).
    pub response: Option<Duration>,
    /// The pool's `tunnel_idle_timeout`, for an upgrade.
    pub tunnel_idle: Duration,
    /// Where the time to the answer's head is noted (for hedging).
    pub latency: &'a Latency,
}

/// How forwarding one attempt went.
pub(super) enum Forwarded {
    /// The backend answered and the answer went to the visitor.
    Done {
        exchange: Exchange,
        status: u16,
        reusable: bool,
    },
    /// The backend connection failed, stayed silent past its deadline, or answered something
    /// that is not HTTP, before any answer reached the visitor.
    NoAnswer {
        body_sent: bool,
        failure: TrafficFailure,
    },
    /// The backend answered with a status to retry on; nothing went to the visitor yet.
    Held(ResponseHead),
    /// The backend was taken out while the request waited for its answer; nothing went to the
    /// visitor yet, and the request may be sent again.
    Rescued,
    /// The visitor's side failed: nothing more can be done on this connection.
    Broken,
}

/// How a request went out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// A body (or part of it) went out.
    pub body_sent: bool,
    /// The visitor's body was read to its end.
    pub body_whole: bool,
}

/// How sending a streamed request body ended.
enum Streamed {
    /// All of it went out.
    Whole,
    /// The backend answered before taking all of it (a 413, 401 ...): its answer is buffered.
    AnsweredEarly,
    /// The backend stopped taking it (closed, reset, too slow): its answer, if it sent one
    /// before, decides.
    Refused,
}

impl<S: VisitorIo> Visitor<'_, S> {
    /// Sends the request to `up` and streams the answer back, unless `leave` lets the attempt
    /// leave this backend first: an answer whose status is held (`Held`), or the backend taken
    /// out while the answer is awaited (`Rescued`); nothing has reached the visitor then.
    pub(super) async fn forward(
        &mut self,
        up: &mut Pinned,
        head: &Head,
        outgoing: Outgoing<'_>,
        limits: AttemptLimits,
        leave: Leave<'_>,
    ) -> Forwarded {
        let sent = match self.send(up, head, outgoing, limits).await {
            Ok(sent) => sent,
            Err(not_sent) => return not_sent,
        };
        let answer = match await_answer(up, head.head_method, limits, leave, sent.body_sent).await {
            Ok(answer) => answer,
            Err(not_answered) => return not_answered,
        };
        let then = (leave.hold, leave.tunnel_idle);
        self.relay(up, head, answer, limits, then, sent.body_whole)
            .await
    }

    /// Sends the request to `up`: the head, then the body from memory, or as it comes from the
    /// visitor while watching for an early answer.
    pub(super) async fn send(
        &mut self,
        up: &mut Pinned,
        head: &Head,
        outgoing: Outgoing<'_>,
        limits: AttemptLimits,
    ) -> Result<Sent, Forwarded> {
        if !outgoing.streams() {
            return send_whole(up, outgoing, limits).await;
        }
        // The request head and any body bytes already read go out together.
        if body::send(&mut up.io, outgoing.head, limits.write)
            .await
            .is_err()
        {
            return Err(broken(false));
        }
        if head.expect_continue {
            let _ = body::send(
                &mut self.stream,
                b"HTTP/1.1 100 Continue\r\n\r\n",
                VISITOR_WRITE_TIMEOUT,
            )
            .await;
            let _ = body::flush(&mut self.stream, VISITOR_WRITE_TIMEOUT).await;
        }
        let body_whole = match self.stream_body(up, outgoing.body, head, limits).await {
            Ok(Streamed::Whole) => true,
            Ok(Streamed::AnsweredEarly | Streamed::Refused) => false,
            Err(BodyError::Chunk(_)) => {
                let _ = self.refuse(Refusal::Malformed).await;
                return Err(Forwarded::Broken);
            }
            // The visitor closed or stalled: nothing the backend did.
            Err(_) => return Err(Forwarded::Broken),
        };
        Ok(Sent {
            body_sent: true,
            body_whole,
        })
    }

    /// Streams a request body from the visitor to `up` while watching `up` for its answer: an
    /// answer that comes first (a backend refusing a large upload with 413 and closing) ends
    /// the sending and is the backend's answer, not its failure.
    async fn stream_body(
        &mut self,
        up: &mut Pinned,
        request_body: Body,
        head: &Head,
        limits: AttemptLimits,
    ) -> Result<Streamed, BodyError> {
        let io = std::mem::replace(&mut up.io, Box::new(Detached));
        let (mut from_backend, mut to_backend) = tokio::io::split(io);
        let mut no_lead = Vec::new();
        let sent = {
            let sending = body::forward(
                request_body,
                &mut self.stream,
                &mut self.buf,
                &mut to_backend,
                (&mut no_lead, None),
                limits.read,
                limits.write,
            );
            let watching = watch_for_answer(&mut from_backend, &mut up.buf, head.head_method);
            tokio::select! {
                biased;
                sent = sending => match sent {
                    Ok(()) => Ok(Streamed::Whole),
                    Err(BodyError::Sink) => Ok(Streamed::Refused),
                    Err(e) => Err(e),
                },
                () = watching => Ok(Streamed::AnsweredEarly),
            }
        };
        up.io = from_backend.unsplit(to_backend);
        sent
    }

    /// Passes an answer whose head was read from `up` on to the visitor, body included, unless
    /// [`answer::answer`] says to hold it (a status in `hold`) or that it is none; a `101`
    /// to a request that asked to upgrade opens the tunnel. `body_whole`: the visitor's request
    /// body was read to its end (if not, the connection closes after the answer).
    pub(super) async fn relay(
        &mut self,
        up: &mut Pinned,
        head: &Head,
        answer: ResponseHead,
        limits: AttemptLimits,
        (hold, tunnel_idle): (&[u16], Duration),
        body_whole: bool,
    ) -> Forwarded {
        let asked = Asked {
            keep_alive: head.keep_alive,
            upgrade: head.upgrade,
            body_whole,
            closing: *self.shutdown.borrow(),
        };
        let until_close = answer.framing == BodyFraming::UntilClose;
        let not_http = Forwarded::NoAnswer {
            body_sent: true,
            failure: TrafficFailure::BadResponse,
        };
        let keep_open = match answer::answer(answer.status, until_close, hold, asked) {
            Answer::Hold => return Forwarded::Held(answer),
            Answer::Refuse => return not_http,
            Answer::Tunnel => false,
            Answer::Relay { keep_open } => keep_open,
        };
        // An h2 visitor's stream takes the backend's head as it came and keeps of it what an
        // HTTP/1.1 visitor would get (`translate::response`): the connection-level fields of an
        // HTTP/1.1 rewrite mean nothing to it, and writing them only to parse them again costs.
        if self.via == Via::H2 {
            self.scratch.clear();
            self.scratch.extend_from_slice(&up.buf[..answer.len]);
        } else if !rewrite::response_head(
            &up.buf[..answer.len],
            keep_open,
            head.http11,
            &mut self.scratch,
        ) {
            return not_http;
        }
        // Serve-stale: a copy on the side of an answer that may be kept, unless its URL's copy
        // is recent.
        self.tee = self.stale.as_ref().and_then(|stale| {
            let keeps = stale.renew && stale.policy.statuses.contains(&answer.status);
            keeps.then(|| {
                let chunked = answer.framing == BodyFraming::Chunked;
                Box::new(Tee::new(
                    &up.buf[..answer.len],
                    chunked,
                    stale.policy.max_object_bytes,
                ))
            })
        });
        up.buf.advance(answer.len);
        if let Some(record) = super::line(&mut self.logging) {
            record.status = answer.status;
            record.backend = Some(up.backend.clone());
            record.head_time = up.head_time;
        }
        if answer.status == 101 {
            let _ = body::send(&mut self.stream, &self.scratch, VISITOR_WRITE_TIMEOUT).await;
            let _ = body::send(&mut self.stream, &up.buf, VISITOR_WRITE_TIMEOUT).await;
            let _ = body::flush(&mut self.stream, VISITOR_WRITE_TIMEOUT).await;
            let _ = body::send(&mut up.io, &self.buf, limits.write).await;
            tunnel::run(&mut self.stream, &mut up.io, tunnel_idle).await;
            return Forwarded::Done {
                exchange: Exchange::Close,
                status: answer.status,
                reusable: false,
            };
        }
        let response_body = match answer.framing {
            BodyFraming::Empty => Body::Empty,
            BodyFraming::Length(n) => Body::Length(n),
            BodyFraming::Chunked => Body::Chunked,
            BodyFraming::UntilClose => Body::UntilClose,
        };
        // The head goes out with the body, in one write when the body is small and at hand.
        let streamed = body::forward(
            response_body,
            &mut up.io,
            &mut up.buf,
            &mut self.stream,
            (&mut self.scratch, self.tee.as_deref_mut()),
            limits.read,
            VISITOR_WRITE_TIMEOUT,
        )
        .await
        .is_ok();
        if let Some(tee) = &mut self.tee {
            tee.whole = streamed;
        }
        Forwarded::Done {
            exchange: answer::after(streamed, keep_open, body_whole),
            status: answer.status,
            reusable: answer::backend_reusable(
                streamed,
                answer.reusable,
                !up.buf.is_empty(),
                body_whole,
            ),
        }
    }
}

/// Reads the answer's head from `up` within its deadlines, interim answers skipped; the
/// attempt's end when there is none.
pub(super) async fn await_answer(
    up: &mut Pinned,
    head_request: bool,
    limits: AttemptLimits,
    leave: Leave<'_>,
    body_sent: bool,
) -> Result<ResponseHead, Forwarded> {
    await_answer_since(up, head_request, limits, leave, body_sent, now()).await
}

/// Like [`await_answer`], for a request sent at `sent`.
pub(super) async fn await_answer_since(
    up: &mut Pinned,
    head_request: bool,
    limits: AttemptLimits,
    leave: Leave<'_>,
    body_sent: bool,
    sent: Instant,
) -> Result<ResponseHead, Forwarded> {
    let waited = await_answer_until(up, head_request, limits, leave, body_sent, sent, None);
    match waited.await {
        Awaited::Head(answer) => Ok(answer),
        Awaited::Over(not_answered) => Err(not_answered),
        // Never asked to pause: the deadlines decided.
        Awaited::Paused => Err(Forwarded::NoAnswer {
            body_sent,
            failure: TrafficFailure::Timeout,
        }),
    }
}

/// How a wait for an answer's head went.
pub(super) enum Awaited {
    Head(ResponseHead),
    /// `pause` came first: call again (with the same `sent`) to go on waiting.
    Paused,
    /// No answer, and none to come.
    Over(Forwarded),
}

/// Like [`await_answer`], for a request sent at `sent`, pausing at `pause` if nothing decided
/// the wait before: so that one timer serves both the deadlines and a hedge, and the wait can
/// go on where it stopped (what was read stays in `up.buf`).
pub(super) async fn await_answer_until(
    up: &mut Pinned,
    head_request: bool,
    limits: AttemptLimits,
    leave: Leave<'_>,
    body_sent: bool,
    sent: Instant,
    pause: Option<Instant>,
) -> Awaited {
    let until = answer::head_deadline(sent, &limits, leave.response, leave.rescue.is_some());
    let stop = pause.map_or(until, |p| p.min(until));
    let no_answer = |failure| Awaited::Over(Forwarded::NoAnswer { body_sent, failure });
    let mut interim = 0;
    loop {
        match response::parse(&up.buf, head_request) {
            Ok(Some(answer)) if answer.interim => {
                interim += 1;
                if interim > MAX_INTERIM {
                    return no_answer(TrafficFailure::BadResponse);
                }
                up.buf.advance(answer.len);
                continue;
            }
            Ok(Some(answer)) => {
                let took = now().saturating_duration_since(sent);
                leave.latency.observe(took);
                up.head_time = Some(took);
                return Awaited::Head(answer);
            }
            Ok(None) => {}
            Err(_) => return no_answer(TrafficFailure::BadResponse),
        }
        let read = match leave.rescue {
            Some(health) => {
                let armed = sent + RESCUE_ARM;
                let waited =
                    await_head(&mut up.io, &mut up.buf, &mut up.timer, stop, armed, health);
                match waited.await {
                    Some(read) => read,
                    None => return Awaited::Over(Forwarded::Rescued),
                }
            }
            None => {
                body::fill_until(
                    &mut up.io,
                    &mut up.buf,
                    body::HEAD_CHUNK,
                    &mut up.timer,
                    stop,
                )
                .await
            }
        };
        match read {
            Ok(n) if n > 0 => {}
            Err(BodyError::Timeout) if stop < until => return Awaited::Paused,
            Err(BodyError::Timeout) => return no_answer(TrafficFailure::Timeout),
            _ => return no_answer(TrafficFailure::Reset),
        }
    }
}

/// Sends a request whose body (if any) is in memory: head and body, then a flush.
pub(super) async fn send_whole(
    up: &mut Pinned,
    outgoing: Outgoing<'_>,
    limits: AttemptLimits,
) -> Result<Sent, Forwarded> {
    let body = outgoing.buffered.unwrap_or_default();
    let sent = body::send(&mut up.io, outgoing.head, limits.write)
        .await
        .is_ok()
        && (body.is_empty() || body::send(&mut up.io, body, limits.write).await.is_ok())
        && body::flush(&mut up.io, limits.write).await.is_ok();
    match sent {
        true => Ok(Sent {
            body_sent: !body.is_empty(),
            body_whole: true,
        }),
        false => Err(broken(!body.is_empty())),
    }
}

/// A connection that broke while the request went out.
fn broken(body_sent: bool) -> Forwarded {
    Forwarded::NoAnswer {
        body_sent,
        failure: TrafficFailure::Reset,
    }
}

/// Reads more of an answer's head until `until`; `None` when `health`'s backend is taken out
/// (by a check or by another request) after `armed` and before anything arrives.
async fn await_head(
    io: &mut Box<dyn Io>,
    buf: &mut BytesMut,
    timer: &mut body::Timer,
    until: Instant,
    armed: Instant,
    health: &BackendHealth,
) -> Option<Result<usize, BodyError>> {
    if now() < armed {
        let first = armed.min(until);
        match body::fill_until(io, buf, body::HEAD_CHUNK, timer, first).await {
            Err(BodyError::Timeout) if until > armed => {}
            done => return Some(done),
        }
    }
    let taken_out = health.taken_out();
    if !health.is_usable() {
        return None;
    }
    tokio::select! {
        done = body::fill_until(io, buf, body::HEAD_CHUNK, timer, until) => Some(done),
        () = taken_out => None,
    }
}

/// Reads from a backend while the request body is still going out; returns once `buf` holds a
/// final answer's head (interim ones are left for the caller to skip) or something that is no
/// answer at all. Never returns when the backend only closes or fails: the sending side finds
/// out, and the answer (if any) is read after it.
async fn watch_for_answer<R: tokio::io::AsyncRead + Unpin>(
    from_backend: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) {
    loop {
        let mut at = 0;
        let mut interim = 0;
        let answered = loop {
            match response::parse(&buf[at..], head_request) {
                Ok(Some(answer)) if answer.interim && interim < MAX_INTERIM => {
                    interim += 1;
                    at += answer.len;
                }
                Ok(Some(_)) | Err(_) => break true,
                Ok(None) => break false,
            }
        };
        if answered {
            return;
        }
        match body::fill(from_backend, buf, body::HEAD_CHUNK, Duration::MAX).await {
            Ok(n) if n > 0 => {}
            _ => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::FastPath;
    use crate::h1::request;
    use holdfast_health::HealthTable;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn visitor(app: &FastPath, stream: DuplexStream) -> Visitor<'_, DuplexStream> {
        let client = "127.0.0.1".parse().unwrap();
        let stop = tokio::sync::watch::channel(false).1;
        app.visitor(stream, client, crate::fast::Via::Http, None, &stop)
    }

    fn pinned(io: DuplexStream) -> Pinned {
        let text = "[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:9\" }]\n";
        let config = holdfast_config::from_toml_str(text, std::path::Path::new("t.toml")).unwrap();
        let health = HealthTable::new(&config, Arc::new(holdfast_health::table::NoObserver));
        Pinned {
            backend: health.pools()[0].tiers[0][0].clone(),
            io: Box::new(io),
            buf: BytesMut::new(),
            head_time: None,
            timer: body::timer(),
        }
    }

    fn limits(read: Duration, total: Duration) -> AttemptLimits {
        AttemptLimits {
            connect: Duration::from_secs(1),
            read,
            write: Duration::from_secs(30),
            deadline: now() + total,
        }
    }

    fn leave(latency: &Latency) -> Leave<'_> {
        Leave {
            hold: &[],
            rescue: None,
            response: None,
            tunnel_idle: Duration::from_secs(60),
            latency,
        }
    }

    /// A backend that answers an upload with 413 before reading it, then closes: the visitor
    /// gets the 413 while its body is still coming, and the exchange is an answer (status 413,
    /// the visitor's connection to be drained and closed), not a failure.
    #[tokio::test(start_paused = true)]
    async fn an_answer_while_the_body_goes_out_is_relayed() {
        let app = FastPath::for_tests();
        let (mut client, gateway_side) = tokio::io::duplex(16 * 1024);
        let (to_backend, mut backend) = tokio::io::duplex(16 * 1024);
        let mut v = visitor(&app, gateway_side);
        let text = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n";
        let head = request::parse(text).unwrap().unwrap();
        let mut up = pinned(to_backend);
        let latency = Latency::default();
        let outgoing = Outgoing {
            head: text,
            body: Body::Length(1_000_000),
            buffered: None,
        };
        let the_backend = async {
            let mut got = vec![0u8; text.len()];
            backend.read_exact(&mut got).await.unwrap();
            backend
                .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            drop(backend); // closes with the body unread
        };
        let the_visitor = async {
            // The body comes slowly: 1 KB every 10 ms, far from all of it (and less than the
            // pipe holds, so these writes end whether or not the gateway reads them).
            let chunk = [b'x'; 1024];
            for _ in 0..8 {
                client.write_all(&chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            client
        };
        let limits = limits(Duration::from_secs(60), Duration::from_secs(75));
        let (forwarded, (), mut client) = tokio::join!(
            v.forward(&mut up, &head, outgoing, limits, leave(&latency)),
            the_backend,
            the_visitor
        );
        match forwarded {
            Forwarded::Done {
                exchange: Exchange::Linger,
                status: 413,
                reusable: false,
            } => {}
            _ => panic!("not relayed as the backend's answer"),
        }
        let mut answer = vec![0u8; 256];
        let n = client.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 413 Content Too Large\r\n"));
        assert!(String::from_utf8_lossy(&answer[..n]).contains("Connection: close\r\n"));
    }

    /// A head trickled a byte every 500 ms does not restart the wait: it ends at `read_timeout`
    /// (2 s) after the request went out, or at the chain's end when that comes first; endless
    /// interim answers end it too.
    #[tokio::test(start_paused = true)]
    async fn the_wait_for_a_head_ends_at_its_deadline() {
        for (read, total, ends_after) in [(2, 60, 2), (10, 4, 4)] {
            let (io, mut backend) = tokio::io::duplex(1024);
            let mut up = pinned(io);
            let latency = Latency::default();
            let trickle = tokio::spawn(async move {
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: aaaaaaaa\r\n\r\n" {
                    if backend.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
            let started = tokio::time::Instant::now();
            let limits = limits(Duration::from_secs(read), Duration::from_secs(total));
            let waited = await_answer(&mut up, false, limits, leave(&latency), false).await;
            assert!(
                matches!(
                    waited,
                    Err(Forwarded::NoAnswer {
                        failure: TrafficFailure::Timeout,
                        ..
                    })
                ),
                "read {read} s, total {total} s"
            );
            assert_eq!(started.elapsed(), Duration::from_secs(ends_after));
            trickle.abort();
        }

        let (io, mut backend) = tokio::io::duplex(1024);
        let mut up = pinned(io);
        let latency = Latency::default();
        let flood = tokio::spawn(async move {
            while backend
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let limits = limits(Duration::from_secs(60), Duration::from_secs(75));
        let waited = await_answer(&mut up, false, limits, leave(&latency), false).await;
        assert!(matches!(
            waited,
            Err(Forwarded::NoAnswer {
                failure: TrafficFailure::BadResponse,
                ..
            })
        ));
        flood.abort();
    }

    /// Time stands still in these tests unless a task waits: what matters is the order.
    #[tokio::test(start_paused = true)]
    async fn an_answer_before_the_body_is_through_ends_the_watch() {
        let (mut backend, mut gateway_side) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let watch = watch_for_answer(&mut gateway_side, &mut buf, false);
        let answer = async {
            use tokio::io::AsyncWriteExt;
            backend
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            backend
                .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        };
        let started = tokio::time::Instant::now();
        tokio::join!(watch, answer);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1),
            "a 100 Continue is no answer; the 413 after it is"
        );
        assert!(buf.starts_with(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_only_closes_is_left_to_the_sender() {
        let (backend, mut gateway_side) = tokio::io::duplex(64);
        drop(backend);
        let mut buf = BytesMut::new();
        let watched = tokio::time::timeout(
            Duration::from_secs(3600),
            watch_for_answer(&mut gateway_side, &mut buf, false),
        )
        .await;
        assert!(
            watched.is_err(),
            "no answer: the watch never ends by itself"
        );
    }
}
