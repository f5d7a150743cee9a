//! The request path on Pingora's `ProxyHttp`. Each phase is a few lines that delegate to the
//! plain decision types: [`crate::select`] and [`crate::attempts`] choose the backend and decide
//! retries, [`outcome`] says what a failure means for health and metrics, [`respond`] writes the
//! fallback answer, [`forwarded`] adds the `X-Forwarded-*` headers.

mod forwarded;
mod outcome;
mod respond;

use crate::attempts::{Attempts, GiveUp};
use crate::h1::request::{self, Refusal};
use crate::runtime::{PoolRuntime, Runtime};
use crate::select::Slot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use holdfast_health::TrafficFailure;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorSource;
use std::sync::Arc;
use std::time::Instant;

/// The `ProxyHttp` of holdfast.
pub struct Gateway {
    runtime: Arc<ArcSwap<Runtime>>,
}

impl Gateway {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>) -> Self {
        Gateway { runtime }
    }
}

/// What one request carries through its phases.
#[derive(Default)]
pub struct RequestCtx {
    /// The snapshot this request works from, loaded once.
    runtime: Option<Arc<Runtime>>,
    pool: usize,
    attempts: Attempts,
    /// The backend of the attempt under way.
    current: Option<Slot>,
    /// A response head came from a backend.
    responded: bool,
    /// Why the fallback answered, if it did.
    gave_up: Option<GiveUp>,
}

impl RequestCtx {
    fn pool(&self) -> Option<&PoolRuntime> {
        self.runtime.as_ref()?.pools.get(self.pool)
    }

    /// Tells the current attempt's backend health (passive detection) and metrics what the
    /// attempt met.
    fn report(&self, result: Result<(), TrafficFailure>) {
        let (Some(runtime), Some(slot)) = (&self.runtime, self.current) else {
            return;
        };
        let Some(backend) = self.pool().and_then(|p| p.backend(slot)) else {
            return;
        };
        if let Err(kind) = result {
            backend.metrics.connect_failure(kind);
        }
        runtime.health.report_traffic(&backend.health, result);
    }
}

/// Marks the errors that mean "no backend can serve": answered with the fallback.
const NO_BACKEND: ErrorType = ErrorType::Custom("no backend can serve");

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let ServerSession::H1(h1) = session.as_downstream() {
            let refusal = match request::parse(&h1.get_headers_raw_bytes()) {
                Ok(Some(_)) => None,
                // Pingora hands over complete heads only: anything else is not to be forwarded.
                Ok(None) => Some(Refusal::Malformed),
                Err(refusal) => Some(refusal),
            };
            if let Some(refusal) = refusal {
                session.set_keepalive(None);
                return Err(Error::explain(
                    HTTPStatus(refusal.status()),
                    refusal.as_str(),
                ));
            }
        }
        let runtime = self.runtime.load_full();
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(runtime.config.listen.keepalive_timeout.as_secs()));
        }
        let host = host_of(session.req_header());
        ctx.pool = runtime.route(host);
        let can_serve = runtime
            .pools
            .get(ctx.pool)
            .is_some_and(PoolRuntime::can_serve);
        ctx.runtime = Some(runtime);
        if can_serve {
            return Ok(false);
        }
        ctx.gave_up = Some(GiveUp::NoBackend);
        respond::fallback(session, ctx).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(runtime) = ctx.runtime.clone() else {
            return Err(Error::explain(InternalError, "request has no runtime"));
        };
        let pool = runtime
            .pools
            .get(ctx.pool)
            .ok_or_else(|| Error::explain(InternalError, "request routed to a missing pool"))?;
        match pool.next_attempt(&mut ctx.attempts, Instant::now()) {
            Ok((slot, limits)) => {
                if ctx.attempts.made() > 1 {
                    pool.metrics.retries.inc();
                }
                ctx.current = Some(slot);
                let backend = pool
                    .backend(slot)
                    .ok_or_else(|| Error::explain(InternalError, "selected a missing backend"))?;
                let target = &backend.health.backend;
                let mut peer = match &target.tls {
                    None => HttpPeer::new(target.addr, false, String::new()),
                    Some(tls) => {
                        let mut peer = HttpPeer::new(target.addr, true, tls.sni.clone());
                        peer.options.verify_cert = tls.verify;
                        peer.options.verify_hostname = tls.verify && !tls.sni.is_empty();
                        peer
                    }
                };
                peer.options.connection_timeout = Some(limits.connect);
                peer.options.read_timeout = Some(limits.read);
                peer.options.write_timeout = Some(limits.write);
                Ok(Box::new(peer))
            }
            Err(why) => {
                ctx.gave_up = Some(why);
                Err(Error::explain(NO_BACKEND, why.as_str()))
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the backend: another one may take the same request, whatever it is.
        ctx.report(Err(outcome::connect_failure(&e)));
        e.set_retry(true);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.report(Ok(()));
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        // A fresh connection that broke before any response head is a broken backend (the
        // would-be 520); a reused one may simply have been closed by the backend meanwhile.
        if !client_reused && !ctx.responded && outcome::is_reset(&e) {
            ctx.report(Err(TrafficFailure::Reset));
        }
        // Pingora's own rule: retry only idempotent requests, and only on a reused connection.
        let mut e = e.more_context(format!("backend {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        forwarded::add(session, upstream_request)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.responded = true;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let upstream_side = ctx.gave_up.is_some() || *e.esource() == ErrorSource::Upstream;
        if upstream_side && session.response_written().is_none() && ctx.runtime.is_some() {
            ctx.gave_up.get_or_insert(GiveUp::AttemptsExhausted);
            // Pingora closes the connection after a failed proxy attempt; say so in the answer
            // (`Connection: close`) so that no client sends its next request into the close.
            session.set_keepalive(None);
            let status = match respond::fallback(session, ctx).await {
                Ok(()) => ctx.runtime.as_ref().map_or(503, |r| r.fallback.status),
                Err(_) => 0,
            };
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        respond::error(session, e).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let Some(pool) = ctx.pool() else {
            return;
        };
        if let Some(status) = session.response_written().map(|r| r.status.as_u16()) {
            pool.metrics.request(status);
        }
        if let Some(why) = ctx.gave_up {
            pool.metrics.fallback(why);
        }
    }
}

/// The `Host` of a request: the header, or the authority of an absolute URI.
fn host_of(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}
