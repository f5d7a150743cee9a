//! HTTP/2 from visitors (Cloudflare's "HTTP/2 to origin", gRPC), on an HTTPS listener whose
//! ALPN agreed on `h2`. The `h2` crate speaks the protocol; every stream is served by the
//! HTTP/1.1 data path ([`FastPath::serve_stream`]) in the stream's own task, reading it as the
//! HTTP/1.1 request an HTTP/1.1 visitor would have sent ([`translate`]) and writing its answer
//! into it, which goes to the visitor as h2 as it is written ([`stream_io`]: the head, the
//! body as DATA frames, chunked framing taken off, trailers as a trailing HEADERS frame for
//! gRPC). So an h2 request goes through the very same decisions as any other: the judgement
//! of its head, tiers, failover of the same request, hold and rescue, the fallback, caps and
//! metrics.
//!
//! The backend connection a stream leaves open goes to the worker's spares (idle at most 30
//! s), where the connection's next streams find it, so a busy h2 connection holds about as
//! many backend connections as it has streams open at once, the same as that many HTTP/1.1
//! connections would.
//!
//! The connection: `SETTINGS_MAX_CONCURRENT_STREAMS` from `listen.h2_max_concurrent_streams`,
//! closed (GOAWAY) after `listen.keepalive_timeout` without a stream, GOAWAY when the process
//! stops and at each reload (streams in flight finish; the client opens a new connection for
//! the next ones), and ENHANCE_YOUR_CALM for a client that floods it ([`guard`]).

mod conn;
mod guard;
mod io;
mod shared;
mod shed;
mod stream;
mod stream_io;

pub use shed::shed;

use crate::cap::Cap;
use crate::fast::{FastPath, VisitorIo};
use conn::{abuse_of, attacked, calm_down, handshake};
use pingora::server::ShutdownWatch;
use shared::Connection;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
        open: AtomicUsize::new(0),
        last_end: Mutex::new(Instant::now()),
    });
    let mut stopping = shutdown;
    let mut reloads = app.lifecycle().reloads();
    reloads.borrow_and_update();
    // A connection without a stream for `idle` is closed.
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let mut closing = false;
    let mut first = true;
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
                    let is_first = std::mem::replace(&mut first, false);
                    tokio::spawn(async move {
                        stream::stream(&shared, request, respond, is_first).await;
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
                let now = Instant::now();
                let next = match shared.idle_since() {
                    Some(since) if now.duration_since(since) >= idle => {
                        conn.graceful_shutdown();
                        closing = true;
                        continue;
                    }
                    Some(since) => since + idle,
                    None => now + idle,
                };
                idle_timer.as_mut().reset(next.into());
            }
        }
    }
}
