//! The attempt chain of one request: backends tried one after another until one answers, each
//! attempt's outcome judged by [`Failover`] (report it, answer, try again, hold an answer, give
//! up) and each exchange done by `exchange.rs`. A slow connect, and a slow answer to a request
//! that may be sent again, get a second attempt beside them on the next backend
//! ([`crate::hedge`]); the first to complete is used.

use super::body::{self, Body};
use super::exchange::{self, Forwarded, Leave, Outgoing};
use super::upstream::{ConnectError, Connector, Io};
use super::{now, spares, still_open, Pinned, Visitor, VisitorIo, VISITOR_WRITE_TIMEOUT};
use crate::access::line::{Failed, Failure};
use crate::answer::Exchange;
use crate::attempts::{AttemptLimits, Attempts, GiveUp, RetryCause};
use crate::bridge::lock;
use crate::cap::Ticket;
use crate::failover::{Decision, Ended, Failover, RequestBody, Then};
use crate::h1::request::Head;
use crate::h1::response::ResponseHead;
use crate::hedge::{self, Side, Used};
use crate::metrics::{HedgeKind, HedgeResult, Metrics};
use crate::runtime::{BackendRuntime, PoolRuntime, Runtime};
use bytes::{Bytes, BytesMut};
use holdfast_health::table::InFlight;
use holdfast_health::{HealthTable, LocalError, TrafficFailure};
use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one request's chain works with.
struct Chain<'r> {
    runtime: &'r Runtime,
    pool: &'r PoolRuntime,
    failover: Failover<'r>,
    trail: &'r Trail,
}

/// What the access log shows of a chain: each attempt that failed, and whether a hedge went
/// out. Noted as the chain goes (by a connect that finishes on its own too): a lock taken only
/// when an attempt failed.
#[derive(Default)]
struct Trail {
    failed: Mutex<Vec<Failed>>,
    hedged: AtomicBool,
}

impl Trail {
    fn failed(&self, backend: &BackendRuntime, how: Failure) {
        lock(&self.failed).push(Failed {
            backend: backend.health.clone(),
            how,
        });
    }

    fn hedged(&self) {
        self.hedged.store(true, Ordering::Relaxed);
    }
}

/// How an attempt's end shows in the access log, if it failed.
fn failure(ended: Ended, then: Then) -> Option<Failure> {
    match ended {
        Ended::ConnectFailed(f) => Some(Failure::Connect(f)),
        Ended::Local(kind) => Some(Failure::Local(kind)),
        // A kept connection closed meanwhile, tried again on a fresh one, is no failure.
        Ended::NoAnswer { failure, .. } if then != Then::SameBackend => {
            Some(Failure::NoAnswer(failure))
        }
        Ended::Answered(status) if matches!(then, Then::HoldAndNext(_)) => {
            Some(Failure::Status(status))
        }
        Ended::Rescued => Some(Failure::Rescued),
        _ => None,
    }
}

/// A backend being tried, counted against its `max_in_flight` and among its requests in
/// flight (what a drain waits for) until the answer is through.
struct Tried<'r> {
    backend: &'r Arc<BackendRuntime>,
    limits: AttemptLimits,
    _ticket: Option<Ticket>,
    _busy: InFlight<'r>,
}

/// What one side of a hedged exchange came to: its answer's head, or how it ended without one.
type Waited = Result<ResponseHead, Forwarded>;

/// How the wait for an answer went: no copy was sent, or the race between the first attempt
/// and a copy on `second`, with what each came to (`None` while pending; the copy's
/// `Some(None)` when its connect failed).
/// A value on the stack of one request for a moment: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Race<'r> {
    Alone(Waited),
    Hedged {
        first: Option<Waited>,
        second: Tried<'r>,
        other: Option<Option<(Pinned, Waited)>>,
    },
}

/// How one attempt (and any hedge beside it) ended: the backend whose result counts, how it
/// ended, and the connection with what forwarding did (none after a failed connect).
type Outcome<'r> = (Tried<'r>, Ended, Option<(Pinned, Forwarded)>);

impl<'r> Chain<'r> {
    /// Judges how an attempt at `backend` ended, and tells its health and metrics.
    fn judge(&self, backend: &BackendRuntime, ended: Ended) -> Decision {
        let decision = self.failover.after(ended);
        if let Some(how) = failure(ended, decision.then) {
            self.trail.failed(backend, how);
        }
        if let Some(report) = decision.report {
            self.runtime.health.report(&backend.health, report);
        }
        match ended {
            Ended::ConnectFailed(kind) => backend.metrics.connect_failure(kind),
            // A kept connection closed meanwhile, tried again on a fresh one, is no failure.
            Ended::NoAnswer { failure, .. } if decision.then != Then::SameBackend => {
                backend.metrics.no_answer(failure)
            }
            Ended::Local(kind) => self.runtime.metrics.local_error(kind, "connect"),
            _ => {}
        }
        decision
    }

    /// When the wait for an answer may leave `backend`, and where its latency is noted.
    fn leave(&self, backend: &'r BackendRuntime) -> Leave<'r> {
        let timeouts = &self.pool.timeouts;
        Leave {
            hold: self.failover.hold(),
            rescue: self.failover.rescuable().then_some(&*backend.health),
            response: timeouts.response,
            tunnel_idle: timeouts.tunnel_idle,
            latency: &backend.head_latency,
        }
    }

    /// The next backend, counted against its cap; `None` when the one picked filled up since
    /// (an attempt all the same); `Err` when none is left.
    fn next(&self, attempts: &mut Attempts) -> Result<Option<Tried<'r>>, GiveUp> {
        let (slot, limits) = self.pool.next_attempt(attempts, now(), fastrand::f64)?;
        let backend = self.pool.backend(slot).ok_or(GiveUp::NoBackend)?;
        Ok(backend.enter().map(|ticket| Tried {
            backend,
            limits,
            _ticket: ticket,
            _busy: backend.health.busy(),
        }))
    }

    /// The backend for a hedge beside a slow attempt, if any is left and has room.
    fn hedge_target(&self, attempts: &mut Attempts) -> Option<Tried<'r>> {
        let target = self.next(attempts).ok().flatten();
        if target.is_some() {
            self.trail.hedged();
        }
        target
    }
}

/// How an exchange that was forwarded ended.
fn ended(forwarded: &Forwarded, reused: bool) -> Ended {
    match forwarded {
        Forwarded::Done { status, .. } => Ended::Answered(*status),
        Forwarded::Held(answer) => Ended::Answered(answer.status),
        Forwarded::NoAnswer { body_sent, failure } => Ended::NoAnswer {
            failure: *failure,
            body_sent: *body_sent,
            reused,
        },
        Forwarded::Rescued => Ended::Rescued,
        Forwarded::Broken => Ended::VisitorGone,
    }
}

/// Opens a connection to backend `slot`, noting how long it took. Generic over how the connector
/// and the backend are held, so that a connect may own them and outlive its request.
async fn open<C, B>(connector: C, backend: B, timeout: Duration) -> Result<Pinned, ConnectError>
where
    C: Deref<Target = Connector>,
    B: Deref<Target = BackendRuntime>,
{
    let started = now();
    let to = &backend.health.backend;
    let mut opened = connector.connect(to, timeout).await;
    // The descriptor budget is spent: this worker's spare connections give their descriptors,
    // the ones unused longest first, to a visitor who needs a connection now (visitors that
    // came meanwhile may have taken more than one).
    while matches!(opened, Err(ConnectError::Local(LocalError::Descriptors)))
        && spares::close_oldest()
    {
        opened = connector.connect(to, timeout).await;
    }
    let io: Box<dyn Io> = opened?;
    backend.metrics.opened.inc();
    backend
        .connect_latency
        .observe(now().saturating_duration_since(started));
    Ok(Pinned {
        backend: backend.health.clone(),
        io,
        buf: BytesMut::new(),
        head_time: None,
        timer: body::timer(),
    })
}

/// Tells a backend's health and metrics of a connect that failed after its request had gone
/// elsewhere (the first of a hedged pair): as [`Failover`] has it for any failed connect.
fn report_connect_failure(
    health: &HealthTable,
    metrics: &Metrics,
    backend: &BackendRuntime,
    failed: ConnectError,
) {
    if let Some(report) = Failover::new(false, RequestBody::None, &[])
        .after(failed.into())
        .report
    {
        health.report(&backend.health, report);
    }
    match failed {
        ConnectError::Backend(kind) => backend.metrics.connect_failure(kind),
        ConnectError::Local(kind) => metrics.local_error(kind, "connect"),
    }
}

/// How a side of a hedged pair stands, once it waited.
fn side(waited: &Waited, hold: &[u16]) -> Side {
    match waited {
        Ok(answer) if hold.contains(&answer.status) => Side::Held,
        Ok(_) => Side::Answer,
        Err(_) => Side::NoAnswer,
    }
}

/// The first attempt's side, pending until it waited.
fn first_side(first: &Option<Waited>, hold: &[u16]) -> Side {
    first.as_ref().map_or(Side::Pending, |w| side(w, hold))
}

/// The copy's side: pending, not opened, or as it waited.
fn copy_side(copy: &Option<Option<(Pinned, Waited)>>, hold: &[u16]) -> Side {
    match copy {
        None => Side::Pending,
        Some(None) => Side::Unopened,
        Some(Some((_, waited))) => side(waited, hold),
    }
}

/// Waits for `first` for at most `delay`: its output, or the still pending future.
async fn within<F: Future + Unpin>(first: &mut F, delay: Duration) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = first => Some(out),
        () = tokio::time::sleep(delay) => None,
    }
}

impl<S: VisitorIo> Visitor<'_, S> {
    /// Tries backends until one answers; `Err` when the fallback must answer instead. What
    /// happens after each attempt is [`Failover`]'s decision; this does the I/O.
    pub(super) async fn attempt_chain(
        &mut self,
        runtime: &Runtime,
        pool: &PoolRuntime,
        head: &Head,
        request_body: Body,
        upstream_head: &[u8],
    ) -> Result<Exchange, GiveUp> {
        let trail = Trail::default();
        let mut attempts = Attempts::default();
        let chained = self
            .chain(
                runtime,
                pool,
                head,
                request_body,
                upstream_head,
                &trail,
                &mut attempts,
            )
            .await;
        if let Some(record) = super::line(&mut self.logging) {
            record.attempts = attempts.made();
            record.hedged = trail.hedged.into_inner();
            record.failed = trail.failed.into_inner().unwrap_or_else(|p| p.into_inner());
        }
        chained
    }

    #[allow(clippy::too_many_arguments)]
    async fn chain(
        &mut self,
        runtime: &Runtime,
        pool: &PoolRuntime,
        head: &Head,
        request_body: Body,
        upstream_head: &[u8],
        trail: &Trail,
        attempts: &mut Attempts,
    ) -> Result<Exchange, GiveUp> {
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
        let chain = Chain {
            runtime,
            pool,
            failover: Failover::new(may_repeat, body_kind, &pool.retry_on_status),
            trail,
        };
        let outgoing = Outgoing {
            head: upstream_head,
            body: request_body,
            buffered: buffered.as_deref(),
        };
        pool.hedge_budget.earn();
        let mut held: Option<(Pinned, ResponseHead, AttemptLimits)> = None;
        // Why the previous attempt did not answer: what a retry is counted as.
        let mut cause = RetryCause::Failed(TrafficFailure::Other);
        loop {
            let tried = match chain.next(attempts) {
                Ok(Some(tried)) => tried,
                // It filled up since it was picked: the next backend.
                Ok(None) => {
                    if let Then::Next(why) = chain.failover.after(Ended::Full).then {
                        cause = why;
                    }
                    continue;
                }
                Err(why) => return self.give_up(pool, head, held, why).await,
            };
            if attempts.made() > 1 {
                pool.metrics.retry(cause);
            }
            let spare = chain.failover.takes_spare(self.first_request);
            let kept = self.kept_for(tried.backend, spare);
            let (tried, up, reused) = match kept {
                Some(up) => (tried, up, true),
                None => match self.connect(&chain, attempts, tried).await {
                    Ok((tried, up)) => (tried, up, false),
                    Err(Then::GiveUp(why)) => return self.give_up(pool, head, held, why).await,
                    Err(Then::Next(why)) => {
                        cause = why;
                        continue;
                    }
                    Err(_) => return Ok(Exchange::Close),
                },
            };
            let (tried, decision, done) = self
                .exchange_with(&chain, attempts, tried, up, reused, head, outgoing)
                .await;
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
                    tried.backend.metrics.retryable_answers.inc();
                    // Not kept: the held answer's body is unread.
                    held = Some((up, answer, tried.limits));
                    cause = why;
                }
                (Then::Next(why), _) => {
                    if why == RetryCause::Rescued {
                        pool.metrics.rescued.inc();
                    }
                    cause = why;
                }
                (Then::GiveUp(why), _) => return self.give_up(pool, head, held, why).await,
                // The visitor's side failed, or what was decided is no longer possible.
                _ => return Ok(Exchange::Close),
            }
        }
    }

    /// A kept connection to `backend` that is still open: the one pinned to this visitor if it
    /// goes there (one that goes elsewhere joins the spares), or else a spare if `spare`.
    fn kept_for(&mut self, backend: &BackendRuntime, spare: bool) -> Option<Pinned> {
        if let Some(mut pinned) = self.pinned.take() {
            if !Arc::ptr_eq(&pinned.backend, &backend.health) {
                spares::give(pinned, now());
            } else if still_open(&mut pinned.io) {
                return Some(pinned);
            }
        }
        if !spare {
            return None;
        }
        let spare = spares::take(&backend.health)?;
        backend.metrics.spares_taken.inc();
        Some(spare)
    }

    /// Nothing more is tried: the answer held back, if any, or the fallback for `why`.
    async fn give_up(
        &mut self,
        pool: &PoolRuntime,
        head: &Head,
        held: Option<(Pinned, ResponseHead, AttemptLimits)>,
        why: GiveUp,
    ) -> Result<Exchange, GiveUp> {
        let Some((mut up, answer, limits)) = held else {
            return Err(why);
        };
        // A kept copy answers rather than a held 502/503/504 (the fallback serves it).
        if self.stale.as_ref().is_some_and(|s| s.store.has(&s.url)) {
            return Err(why);
        }
        let idle = pool.timeouts.tunnel_idle;
        let forwarded = self
            .relay(&mut up, head, answer, limits, (&[], idle), true)
            .await;
        match forwarded {
            Forwarded::Done {
                exchange, status, ..
            } => {
                pool.metrics.request(status);
                Ok(exchange) // its body may be unread: the connection is not kept
            }
            Forwarded::Broken => Ok(Exchange::Close),
            _ => Err(why),
        }
    }

    /// Opens a connection for `tried`; when it is slower than its backend's connects usually
    /// are, a connect to the next backend starts beside it and the first to complete is used.
    /// Failures are judged here; `Err` is what [`Failover`] decided after the last one (the
    /// next backend, or giving up).
    async fn connect<'r>(
        &self,
        chain: &Chain<'r>,
        attempts: &mut Attempts,
        tried: Tried<'r>,
    ) -> Result<(Tried<'r>, Pinned), Then> {
        let app = self.app;
        let failed = |tried: &Tried<'_>, e: ConnectError| chain.judge(tried.backend, e.into()).then;
        // Owned, so that it can finish on its own when a hedge wins: a connect that then times
        // out still takes its backend out (a firewall dropping packets), one that completes is
        // closed.
        let mut first = Box::pin(open(
            app.connector.clone(),
            tried.backend.clone(),
            tried.limits.connect,
        ));
        let Some(min) = chain.pool.hedge.connect else {
            return match first.await {
                Ok(up) => Ok((tried, up)),
                Err(kind) => Err(failed(&tried, kind)),
            };
        };
        let delay = tried
            .backend
            .connect_latency
            .hedge_after(min, tried.limits.connect);
        let early = within(&mut first, delay).await;
        let second = match early {
            Some(Ok(up)) => return Ok((tried, up)),
            Some(Err(kind)) => return Err(failed(&tried, kind)),
            None => chain.hedge_target(attempts),
        };
        let Some(second) = second else {
            return match first.await {
                Ok(up) => Ok((tried, up)),
                Err(kind) => Err(failed(&tried, kind)),
            };
        };
        let metrics = &chain.pool.metrics;
        let mut hedge = std::pin::pin!(open(
            &*app.connector,
            &**second.backend,
            second.limits.connect,
        ));
        let (mut first_done, mut hedge_done) = (false, false);
        let mut last = Then::Next(RetryCause::Failed(TrafficFailure::Other));
        while !(first_done && hedge_done) {
            tokio::select! {
                opened = &mut first, if !first_done => match opened {
                    Ok(up) => {
                        metrics.hedge(HedgeKind::Connect, HedgeResult::Lost);
                        return Ok((tried, up)); // the hedge's connect is dropped
                    }
                    Err(kind) => {
                        first_done = true;
                        last = failed(&tried, kind);
                    }
                },
                opened = &mut hedge, if !hedge_done => match opened {
                    Ok(up) => {
                        metrics.hedge(HedgeKind::Connect, HedgeResult::Won);
                        if !first_done {
                            let health = chain.runtime.health.clone();
                            let metrics = chain.runtime.metrics.clone();
                            let backend = tried.backend.clone();
                            tokio::spawn(async move {
                                if let Err(failed) = first.await {
                                    report_connect_failure(&health, &metrics, &backend, failed);
                                }
                            });
                        }
                        return Ok((second, up));
                    }
                    Err(kind) => {
                        hedge_done = true;
                        last = failed(&second, kind);
                    }
                },
            }
        }
        metrics.hedge(HedgeKind::Connect, HedgeResult::Lost);
        Err(last)
    }

    /// One exchange on `up` (a fresh connection to the same backend when a kept one turns out
    /// closed), judged: the backend whose answer counts, the decision, and what forwarding did.
    #[allow(clippy::too_many_arguments)]
    async fn exchange_with<'r>(
        &mut self,
        chain: &Chain<'r>,
        attempts: &mut Attempts,
        mut tried: Tried<'r>,
        mut up: Pinned,
        mut reused: bool,
        head: &Head,
        outgoing: Outgoing<'_>,
    ) -> (Tried<'r>, Decision, Option<(Pinned, Forwarded)>) {
        loop {
            let hedged = chain.failover.repeatable() && chain.pool.hedge.response.is_some();
            let (now_tried, how, done) = match hedged {
                true => {
                    self.race(chain, attempts, tried, up, reused, head, outgoing)
                        .await
                }
                false => {
                    let leave = chain.leave(tried.backend);
                    let forwarded = self
                        .forward(&mut up, head, outgoing, tried.limits, leave)
                        .await;
                    (tried, ended(&forwarded, reused), Some((up, forwarded)))
                }
            };
            tried = now_tried;
            let decision = chain.judge(tried.backend, how);
            if decision.then != Then::SameBackend {
                return (tried, decision, done);
            }
            // The kept connection was closed meanwhile: nothing lost, a fresh one.
            let timeout = tried.limits.connect;
            let connector = &*self.app.connector;
            up = match open(connector, &**tried.backend, timeout).await {
                Ok(up) => up,
                Err(failed) => {
                    let decision = chain.judge(tried.backend, failed.into());
                    return (tried, decision, None);
                }
            };
            reused = false;
        }
    }

    /// An exchange for a request that may be sent again: when its answer has not begun after
    /// the backend's usual time, a copy goes to the next backend (within the pool's hedge
    /// budget) and the first answer wins; the other attempt is dropped, its connection closed.
    /// A side that fails while the other still runs is judged here.
    #[allow(clippy::too_many_arguments)]
    async fn race<'r>(
        &mut self,
        chain: &Chain<'r>,
        attempts: &mut Attempts,
        tried: Tried<'r>,
        mut up: Pinned,
        reused: bool,
        head: &Head,
        outgoing: Outgoing<'_>,
    ) -> Outcome<'r> {
        let sent = match self.send(&mut up, head, outgoing, tried.limits).await {
            Ok(sent) => sent,
            Err(not_sent) => return (tried, ended(&not_sent, reused), Some((up, not_sent))),
        };
        let (app, metrics) = (self.app, &chain.pool.metrics);
        let leave = chain.leave(tried.backend);
        let (min, max) = chain.pool.hedge.response.unwrap_or_default();
        let delay = tried.backend.head_latency.hedge_after(min, max);
        let head_request = head.head_method;
        let limits = tried.limits;
        let hold = leave.hold;
        // The race, its futures on the stack: what each side came to, once it is decided.
        let race = 'race: {
            // Until the hedge is due, one wait (one timer) for the answer or the hedge.
            let started = now();
            let hedge_at = Some(started + delay);
            let first = exchange::await_answer_until(
                &mut up,
                head_request,
                limits,
                leave,
                sent.body_sent,
                started,
                hedge_at,
            );
            let second = match first.await {
                exchange::Awaited::Head(answer) => break 'race Race::Alone(Ok(answer)),
                exchange::Awaited::Over(not_answered) => {
                    break 'race Race::Alone(Err(not_answered))
                }
                exchange::Awaited::Paused if !chain.pool.hedge_budget.spend() => {
                    metrics.hedge(HedgeKind::Response, HedgeResult::NoBudget);
                    None
                }
                exchange::Awaited::Paused => chain.hedge_target(attempts),
            };
            let mut waiting = std::pin::pin!(exchange::await_answer_since(
                &mut up,
                head_request,
                limits,
                leave,
                sent.body_sent,
                started,
            ));
            let Some(second) = second else {
                break 'race Race::Alone(waiting.await);
            };
            // The copy: its own connection, the same request from memory, its own deadlines.
            let (backend, copy_limits) = (second.backend, second.limits);
            let mut copy = std::pin::pin!(async move {
                let connector = &*app.connector;
                let mut up = open(connector, &**backend, copy_limits.connect).await?;
                let waited = match exchange::send_whole(&mut up, outgoing, copy_limits).await {
                    Ok(sent) => {
                        let leave = chain.leave(backend);
                        exchange::await_answer(
                            &mut up,
                            head_request,
                            copy_limits,
                            leave,
                            sent.body_sent,
                        )
                        .await
                    }
                    Err(not_sent) => Err(not_sent),
                };
                Ok::<_, ConnectError>((up, waited))
            });
            // The race runs until [`hedge::race_over`] says it is decided.
            let mut first: Option<Waited> = None;
            let mut other: Option<Option<(Pinned, Waited)>> = None;
            loop {
                tokio::select! {
                    done = &mut waiting, if first.is_none() => first = Some(done),
                    done = &mut copy, if other.is_none() => other = Some(match done {
                        Ok(copied) => Some(copied),
                        Err(failed) => {
                            chain.judge(second.backend, failed.into());
                            None
                        }
                    }),
                }
                if hedge::race_over(first_side(&first, hold), copy_side(&other, hold)) {
                    break;
                }
            }
            Race::Hedged {
                first,
                second,
                other,
            }
        };
        // Whichever side is not used was dropped with the race, its connection closed.
        let (first, second, other) = match race {
            Race::Alone(done) => return self.settle(chain, tried, up, reused, head, done).await,
            Race::Hedged {
                first,
                second,
                other,
            } => (first, second, other),
        };
        let verdict = hedge::verdict(first_side(&first, hold), copy_side(&other, hold));
        match (verdict.used, first, other.flatten()) {
            (Used::First, Some(waited), copy) => {
                metrics.hedge(HedgeKind::Response, HedgeResult::Lost);
                if let (true, Some((_, Err(not_answered)))) = (verdict.judge_other, &copy) {
                    chain.judge(second.backend, ended(not_answered, false));
                }
                self.settle(chain, tried, up, reused, head, waited).await
            }
            (Used::Copy, first, Some((copy_up, waited))) => {
                metrics.hedge(HedgeKind::Response, HedgeResult::Won);
                chain.pool.hedge_budget.refund();
                if let (true, Some(Err(not_answered))) = (verdict.judge_other, &first) {
                    chain.judge(tried.backend, ended(not_answered, reused));
                }
                self.settle(chain, second, copy_up, false, head, waited)
                    .await
            }
            // The first attempt was abandoned, which is no failure of its backend.
            _ => (tried, Ended::Rescued, None),
        }
    }

    /// Passes on (or holds) the answer whose head `waited` holds, or returns how the attempt
    /// ended without one.
    async fn settle<'r>(
        &mut self,
        chain: &Chain<'r>,
        tried: Tried<'r>,
        mut up: Pinned,
        reused: bool,
        head: &Head,
        waited: Result<ResponseHead, Forwarded>,
    ) -> Outcome<'r> {
        let forwarded = match waited {
            Ok(answer) => {
                let leave = chain.leave(tried.backend);
                let then = (leave.hold, leave.tunnel_idle);
                self.relay(&mut up, head, answer, tried.limits, then, true)
                    .await
            }
            Err(not_answered) => not_answered,
        };
        (tried, ended(&forwarded, reused), Some((up, forwarded)))
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
        self.body_read = true;
        Some(self.buf.split_to(len).freeze())
    }
}
