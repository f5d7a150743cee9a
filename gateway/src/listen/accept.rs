//! The workers: each thread runs its own single-threaded runtime, accepts on every listener of
//! the set, and serves what it accepted (after the TLS handshake on an HTTPS listener, by
//! ALPN as HTTP/1.1 or h2) on that thread for the connection's whole life; the backend
//! connections a visitor connection leaves are that thread's spares.

use super::pulls::{self, Handshake};
use super::set::{Entry, Listeners, Shared};
use crate::fast::{FastPath, Via};
use crate::trust::Ranges;
use holdfast_health::LocalError;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A visitor that has not finished its TLS handshake after this long is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After an error on accept that means "out of descriptors or memory", how long to wait before
/// accepting again (rather than spinning on the same error).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// An accept loop, counted while it runs. Not a [`crate::cap::Cap`] ticket: its count is
/// relaxed, and this one must order the loop's end after the connection count it took (a stop
/// that reads 0 here then sees that connection counted).
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Running(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One worker thread: its own runtime, accepting on every listener, following the set as
/// reloads change it.
pub(super) fn worker(
    runtime: tokio::runtime::Runtime,
    listeners: Arc<Listeners>,
    mut set: watch::Receiver<Arc<Vec<Arc<Entry>>>>,
) {
    runtime.block_on(async move {
        tokio::spawn(crate::fast::spares::sweep());
        let mut accepting: Vec<Arc<Entry>> = Vec::new();
        loop {
            let current = set.borrow_and_update().clone();
            accepting.retain(|e| current.iter().any(|c| Arc::ptr_eq(c, e)));
            for entry in current.iter() {
                if accepting.iter().any(|e| Arc::ptr_eq(e, entry)) {
                    continue;
                }
                let listener = entry
                    .socket
                    .try_clone()
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .and_then(tokio::net::TcpListener::from_std);
                match listener {
                    Ok(listener) => {
                        tokio::spawn(accept(listener, entry.clone(), listeners.clone()));
                        accepting.push(entry.clone());
                    }
                    Err(e) => {
                        tracing::error!(address = %entry.addr, error = %e, "cannot accept on a listening socket")
                    }
                }
            }
            if set.changed().await.is_err() {
                break;
            }
        }
        // Connections already accepted go on after accepting stops, until the process exits.
        std::future::pending::<()>().await;
    });
}

/// Accepts connections until the process stops accepting or a reload removes the address;
/// each is served on this thread.
async fn accept(listener: tokio::net::TcpListener, entry: Arc<Entry>, listeners: Arc<Listeners>) {
    // Counted before the first look at the stop, and until the loop has ended: a stop that
    // finds none running knows every accepted connection is counted.
    let _running = Running::enter(&listeners.accepting);
    let mut stop = listeners.stop.clone();
    let mut removed = entry.removed.subscribe();
    loop {
        if *stop.borrow_and_update() || *removed.borrow_and_update() {
            return;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
            changed = removed.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        match accepted {
            Ok((tcp, peer)) => {
                let shared = entry.shared.load_full();
                let admitted = |except: &Ranges| {
                    listeners.app.snapshot().trust.trusts(peer.ip()) || except.contains(peer.ip())
                };
                if shared.trusted_only.as_deref().is_some_and(|e| !admitted(e)) {
                    // Closed before a byte is read (and before TLS).
                    drop(tcp);
                    listeners.app.snapshot().metrics.rejected("untrusted");
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                let (all, over_all) = listeners.limit.take();
                let (mine, over_mine) = match &shared.connections {
                    Some(cap) => {
                        let (ticket, over) = cap.take();
                        (Some(ticket), over)
                    }
                    None => (None, false),
                };
                let over = over_all || over_mine;
                let (app, stop) = (listeners.app.clone(), listeners.stop.clone());
                tokio::spawn(async move {
                    connection(&app, tcp, peer.ip(), shared, over, &stop).await;
                    drop((all, mine));
                });
                // Let the other workers take their share of a burst of new connections.
                tokio::task::yield_now().await;
            }
            // Out of descriptors or memory: the connection waits in the kernel's queue until
            // some close, rather than this loop spinning. Any other error: the peer gave up
            // before it was accepted.
            Err(e) => {
                if let Some(kind) = LocalError::of(&e) {
                    listeners.app.snapshot().metrics.local_error(kind, "accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// Serves one visitor connection, after its TLS handshake on an HTTPS listener; one `over`
/// the cap gets the fallback answer and is closed.
async fn connection(
    app: &Arc<FastPath>,
    tcp: tokio::net::TcpStream,
    client: IpAddr,
    shared: Arc<Shared>,
    over: bool,
    shutdown: &ShutdownWatch,
) {
    let in_flight = shared.in_flight.clone();
    let Some(acceptor) = &shared.tls else {
        return match over {
            true => app.shed(tcp, client).await,
            false => app.serve(tcp, client, Via::Http, in_flight, shutdown).await,
        };
    };
    // Boxed, as the stream it gives: the TLS state is a few KB, which would otherwise be
    // part of every connection's task, plain ones included.
    let handshake =
        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, Box::pin(acceptor.accept(tcp))).await;
    // Authenticated Origin Pulls: what the client's certificate was worth.
    if let Some(mode) = shared.pulls {
        let failed = match &handshake {
            Ok(Ok(stream)) => {
                let shown = acceptor.client_certificate(stream.connection());
                pulls::failure(Handshake::Done {
                    certificate: shown.shown,
                    verify_error: shown.verify_error.as_deref(),
                })
            }
            Ok(Err(e)) => pulls::failure(
                e.get_ref()
                    .and_then(|e| e.downcast_ref())
                    .map_or(Handshake::Failed, Handshake::Refused),
            ),
            Err(_) => pulls::failure(Handshake::Failed),
        };
        if let Some(why) = failed {
            app.snapshot().metrics.origin_pull_failed(mode);
            tracing::info!(%client, ?mode, why, "Authenticated Origin Pulls: the client certificate does not verify");
        }
    }
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::debug!(%client, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%client, "TLS handshake timed out"),
    };
    let h2 = stream.connection().alpn_protocol() == Some(b"h2");
    app.snapshot().metrics.tls_connection(h2);
    // The h2 futures are boxed: a few KB each, they would otherwise be part of every
    // connection's task, HTTP/1.1 and idle ones included.
    match (h2, over) {
        (true, true) => Box::pin(crate::http2::shed(app, stream, client)).await,
        (true, false) => {
            let serving =
                crate::http2::serve(app.clone(), stream, client, in_flight, shutdown.clone());
            Box::pin(serving).await
        }
        (false, true) => app.shed(stream, client).await,
        (false, false) => {
            app.serve(stream, client, Via::Https, in_flight, shutdown)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size<T>(_: &T) -> usize {
        std::mem::size_of::<T>()
    }

    /// What stays in memory for each idle connection is mostly its task's future: what only a
    /// busy one needs (an exchange, a lingering close's buffer, h2) is on the heap apart.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let app = Arc::new(FastPath::for_tests());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tcp2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let shared = Arc::new(Shared {
            tls: None,
            connections: None,
            in_flight: None,
            trusted_only: None,
            pulls: None,
        });
        let stop = tokio::sync::watch::channel(false).1;
        let ip = addr.ip();
        let whole = connection(&app, tcp, ip, shared, false, &stop);
        let serve = app.serve(tcp2, ip, Via::Http, None, &stop);
        // The task of an idle connection is this future, with tokio's 96 bytes of task header
        // and trailer, rounded up to 128: with the connection's socket registration (256), most
        // of what an idle plain connection holds (BENCHMARKS.md). In a release build the task's
        // future was 1,152 bytes, a task of 1,280, before serve-stale's and the access log's
        // state were boxed; it is now 1,024, a task of 1,152. A test build's sizes differ
        // (928 and 768 here then): the bounds keep them from growing back.
        assert!(size(&whole) <= 960, "connection: {} bytes", size(&whole));
        assert!(size(&serve) <= 800, "HTTP/1.1: {} bytes", size(&serve));
    }
}
