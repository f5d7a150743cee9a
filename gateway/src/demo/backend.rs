//! A small HTTP backend for the demo (and the end-to-end tests): it answers with its name, can
//! be stopped and restarted on the same address, its health endpoint can be told to fail, and
//! it can speak HTTPS (with any certificate it is given).
//!
//! - `GET /health`: the configured health status (200 by default) with body `ok` or `unhealthy`;
//! - any other request: 200, header `X-Backend: NAME`, the request body echoed back if it had
//!   one, else `hello from NAME`; headers `X-Seen-Host`, `X-Seen-Forwarded-For` and
//!   `X-Seen-Forwarded-Proto` show what the backend received.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openssl::ssl::{Ssl, SslAcceptor};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_openssl::SslStream;

struct Shared {
    name: Arc<str>,
    health_status: AtomicU16,
    served: AtomicU64,
    /// HTTPS for new connections when set.
    tls: Mutex<Option<Arc<SslAcceptor>>>,
    /// Set by `stop`: a connection whose task has not been cancelled yet answers nothing more.
    stopped: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A running (or stopped) demo backend.
#[derive(Debug)]
pub struct DemoBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl DemoBackend {
    /// Starts a backend named `name` on `addr` (port 0 picks a free port).
    pub async fn start(name: &str, addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let shared = Arc::new(Shared {
            name: Arc::from(name),
            health_status: AtomicU16::new(200),
            served: AtomicU64::new(0),
            tls: Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        let backend = DemoBackend {
            addr: listener.local_addr()?,
            shared,
            task: Mutex::new(None),
        };
        backend.serve(listener);
        Ok(backend)
    }

    /// Speaks HTTPS with `acceptor` on connections accepted from now on; plain HTTP with `None`.
    pub fn set_tls(&self, acceptor: Option<SslAcceptor>) {
        *self.shared.tls.lock().unwrap_or_else(|p| p.into_inner()) = acceptor.map(Arc::new);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Requests answered so far (health checks excluded).
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// What `GET /health` answers from now on.
    pub fn set_health_status(&self, status: u16) {
        self.shared.health_status.store(status, Ordering::Relaxed);
    }

    /// Stops at once, as a crashed process would: the listener and every open connection are
    /// closed, so new connections are refused.
    pub fn stop(&self) {
        // Cancelling the tasks takes effect when they are next polled; until then no answer.
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some(task) = self.lock().take() {
            task.abort();
        }
    }

    /// Starts again on the same address after [`stop`](Self::stop).
    pub async fn restart(&self) -> io::Result<()> {
        self.stop();
        // The aborted task drops its listener when it is next polled; retry briefly meanwhile.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.serve(listener);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serve(&self, listener: TcpListener) {
        self.shared.stopped.store(false, Ordering::SeqCst);
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task on stop: every connection task is aborted with it.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        connections.spawn(connection(shared.clone(), stream));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        *self.lock() = Some(task);
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection, over TLS when the backend is set to.
async fn connection(shared: Arc<Shared>, stream: TcpStream) {
    let tls = shared.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match tls {
        None => serve_http(shared, stream).await,
        Some(acceptor) => {
            let Ok(ssl) = Ssl::new(acceptor.context()) else {
                return;
            };
            let Ok(mut stream) = SslStream::new(ssl, stream) else {
                return;
            };
            if Pin::new(&mut stream).accept().await.is_ok() {
                serve_http(shared, stream).await;
            }
        }
    }
}

async fn serve_http<S>(shared: Arc<Shared>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| answer(shared.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// The error of a stopped backend's service: the connection closes unanswered.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend stopped")
    }
}

impl std::error::Error for Stopped {}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Stopped> {
    if shared.stopped.load(Ordering::SeqCst) {
        // A crashed process answers nothing: the connection closes without a response.
        return Err(Stopped);
    }
    let name = &shared.name;
    if req.uri().path() == "/health" {
        let status = shared.health_status.load(Ordering::Relaxed);
        let body = if (200..400).contains(&status) {
            "ok\n"
        } else {
            "unhealthy\n"
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        return Ok(response);
    }
    shared.served.fetch_add(1, Ordering::Relaxed);
    let seen = |h: &str| req.headers().get(h).cloned();
    let seen_host = seen("host");
    let seen_xff = seen("x-forwarded-for");
    let seen_proto = seen("x-forwarded-proto");
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = if body.is_empty() {
        Bytes::from(format!("hello from {name}\n"))
    } else {
        body
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    if let Ok(v) = name.parse() {
        headers.insert("x-backend", v);
    }
    for (header, value) in [
        ("x-seen-host", seen_host),
        ("x-seen-forwarded-for", seen_xff),
        ("x-seen-forwarded-proto", seen_proto),
    ] {
        if let Some(v) = value {
            headers.insert(header, v);
        }
    }
    Ok(response)
}
