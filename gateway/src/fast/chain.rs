//! The attempt chain of one request: backends tried one after another until one answers, each
//! attempt's outcome judged by [`Failover`] (report it, answer, try again, hold an answer, give
//! up) and each exchange done by `exchange.rs`.

use super::body::{self, Body};
use super::exchange::{Forwarded, Leave, Outgoing};
use super::{now, still_open, Exchange, Pinned, Visitor, VisitorIo, VISITOR_WRITE_TIMEOUT};
use crate::attempts::{AttemptLimits, Attempts, GiveUp, RetryCause};
use crate::failover::{Ended, Failover, RequestBody, Then};
use crate::h1::request::Head;
use crate::h1::response::ResponseHead;
use crate::runtime::{PoolRuntime, Runtime};
use crate::select::Slot;
use bytes::{Bytes, BytesMut};
use holdfast_health::TrafficFailure;
use std::time::Duration;

impl<S: VisitorIo> Visitor<'_, S> {
    /// Tries backends until one answers; `Err` when the fallback must answer instead. What
    /// happens after each attempt is [`Failover`]'s decision; this does the I/O.
    pub(super) async fn attempt_chain(
        &mut self,
        runtime: &Runtime,
        pool_index: usize,
        pool: &PoolRuntime,
        head: &Head,
        request_body: Body,
        upstream_head: &[u8],
    ) -> Result<Exchange, GiveUp> {
        let mut attempts = Attempts::default();
        let may_repeat = pool.may_repeat(head.method);
        // A small body of a request that may go again is read whole first, so that it can.
        let buffered = match request_body {
            Body::Length(n) if may_repeat && n <= pool.retry_body_max_bytes => {
                match self.read_body(head, n, pool.timeouts.read).await {
                    Some(body) => Some(body),
                    None => return Ok(Exchange::Close), // the visitor went away or stalled
                }
            }
            _ => None,
        };
        let body_kind = match (request_body, &buffered) {
            (Body::Empty, _) => RequestBody::None,
            (_, Some(_)) => RequestBody::Buffered,
            _ => RequestBody::Streamed,
        };
        let failover = Failover::new(may_repeat, body_kind, &pool.retry_on_status);
        let outgoing = Outgoing {
            head: upstream_head,
            body: request_body,
            buffered: buffered.as_deref(),
        };
        let mut held: Option<(Pinned, ResponseHead, AttemptLimits)> = None;
        // Why the previous attempt did not answer: what a retry is counted as.
        let mut cause = RetryCause::Failed(TrafficFailure::Other);
        loop {
            let (slot, limits) = match pool.next_attempt(&mut attempts, now()) {
                Ok(next) => next,
                Err(why) => {
                    // Nothing left to try: the answer held back, if any, or the fallback.
                    let Some((mut up, answer, limits)) = held.take() else {
                        return Err(why);
                    };
                    let idle = pool.timeouts.tunnel_idle;
                    let forwarded = self.relay(&mut up, head, answer, limits, idle, true).await;
                    return match forwarded {
                        Forwarded::Done {
                            exchange, status, ..
                        } => {
                            pool.metrics.request(status);
                            Ok(exchange) // its body may be unread: the connection is not kept
                        }
                        Forwarded::Broken => Ok(Exchange::Close),
                        _ => Err(why),
                    };
                }
            };
            if attempts.made() > 1 {
                pool.metrics.retry(cause);
            }
            let Some(backend) = pool.backend(slot) else {
                return Err(GiveUp::NoBackend);
            };
            let leave = Leave {
                hold: failover.hold(),
                rescue: failover.rescuable().then_some(&*backend.health),
                response: pool.timeouts.response,
                tunnel_idle: pool.timeouts.tunnel_idle,
            };
            // Counted against the backend's cap until the answer is through.
            let Some(_in_flight) = backend.enter() else {
                if let Then::Next(why) = failover.after(Ended::Full).then {
                    cause = why; // it filled up since it was picked: the next backend
                }
                continue;
            };
            // The kept connection first, if it goes to this very backend and is still open.
            let mut kept = self
                .pinned
                .take()
                .filter(|p| p.pool == pool_index && p.slot == slot)
                .and_then(|mut p| still_open(&mut p.io).then_some(p));
            let (decision, done) = loop {
                let (ended, done) = match kept.take() {
                    Some(up) => self.attempt(up, head, outgoing, limits, leave, true).await,
                    None => match self.open(runtime, pool_index, slot, limits).await {
                        Ok(up) => self.attempt(up, head, outgoing, limits, leave, false).await,
                        Err(kind) => (Ended::ConnectFailed(kind), None),
                    },
                };
                let decision = failover.after(ended);
                if decision.then != Then::SameBackend {
                    break (decision, done);
                }
            };
            if let Some(report) = decision.report {
                runtime.health.report(&backend.health, report);
            }
            match (decision.then, done) {
                (
                    Then::Relay,
                    Some((
                        up,
                        Forwarded::Done {
                            exchange,
                            status,
                            reusable,
                        },
                    )),
                ) => {
                    pool.metrics.request(status);
                    if reusable {
                        self.pinned = Some(up);
                    }
                    return Ok(exchange);
                }
                (Then::HoldAndNext(why), Some((up, Forwarded::Held(answer)))) => {
                    backend.metrics.retryable_answers.inc();
                    // Not kept: the held answer's body is unread.
                    held = Some((up, answer, limits));
                    cause = why;
                }
                (Then::Next(why), _) => {
                    match why {
                        RetryCause::Failed(kind) => backend.metrics.connect_failure(kind),
                        RetryCause::Rescued => pool.metrics.rescued.inc(),
                        RetryCause::Busy => {}
                    }
                    cause = why;
                }
                (Then::GiveUp(why), _) => return Err(why),
                // The visitor's side failed, or what was decided is no longer possible.
                _ => return Ok(Exchange::Close),
            }
        }
    }

    /// Sends the request on `up` and reads the answer: how the attempt ended, with the
    /// connection and what forwarding did, except after a connect failure.
    async fn attempt(
        &mut self,
        mut up: Pinned,
        head: &Head,
        outgoing: Outgoing<'_>,
        limits: AttemptLimits,
        leave: Leave<'_>,
        reused: bool,
    ) -> (Ended, Option<(Pinned, Forwarded)>) {
        let forwarded = self.forward(&mut up, head, outgoing, limits, leave).await;
        let ended = match &forwarded {
            Forwarded::Done { status, .. } => Ended::Answered(*status),
            Forwarded::Held(answer) => Ended::Answered(answer.status),
            Forwarded::NoAnswer { body_sent, failure } => Ended::NoAnswer {
                failure: *failure,
                body_sent: *body_sent,
                reused,
            },
            Forwarded::Rescued => Ended::Rescued,
            Forwarded::Broken => Ended::VisitorGone,
        };
        (ended, Some((up, forwarded)))
    }

    /// Reads a request body of `len` bytes whole (after `100 Continue` when the visitor waits
    /// for it); `None` when the visitor closed or stalled for `timeout` first.
    async fn read_body(&mut self, head: &Head, len: u64, timeout: Duration) -> Option<Bytes> {
        let len = usize::try_from(len).ok()?;
        if head.expect_continue && self.buf.len() < len {
            body::send(
                &mut self.stream,
                b"HTTP/1.1 100 Continue\r\n\r\n",
                VISITOR_WRITE_TIMEOUT,
            )
            .await
            .ok()?;
            body::flush(&mut self.stream, VISITOR_WRITE_TIMEOUT)
                .await
                .ok()?;
        }
        while self.buf.len() < len {
            let room = len - self.buf.len();
            if body::fill(&mut self.stream, &mut self.buf, room, timeout)
                .await
                .ok()?
                == 0
            {
                return None;
            }
        }
        Some(self.buf.split_to(len).freeze())
    }

    /// Opens a connection to backend `slot`.
    async fn open(
        &self,
        runtime: &Runtime,
        pool_index: usize,
        slot: Slot,
        limits: AttemptLimits,
    ) -> Result<Pinned, TrafficFailure> {
        let backend = runtime
            .pools
            .get(pool_index)
            .and_then(|pool| pool.backend(slot))
            .ok_or(TrafficFailure::Other)?;
        let io = self
            .app
            .connector
            .connect(&backend.health.backend, limits.connect)
            .await?;
        Ok(Pinned {
            pool: pool_index,
            slot,
            io,
            buf: BytesMut::new(),
        })
    }
}
