//! The proxy listeners. Every worker thread runs its own single-threaded runtime and accepts on
//! every listening socket (a duplicate of the one socket per address), and a connection stays
//! on the thread that accepted it for its whole life: no hand-off between threads and no
//! cross-thread wake-up, the costs of serving from Pingora's shared runtimes
//! (`shared/pingora-performance.md`). The accept queue stays one per address, so there is no
//! per-thread queue whose closing could reset waiting connections.
//!
//! The sockets themselves stay Pingora's to hand over in a graceful binary upgrade: they are
//! taken from its table of inherited listening sockets, or bound here and put into that table,
//! and Pingora passes the table to the next process.

use crate::cap::Cap;
use crate::fast::FastPath;
use async_trait::async_trait;
use holdfast_config::ListenerLimits;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_openssl::SslStream;

/// Connections the kernel queues for each listening socket before refusing: a burst of new
/// connections (a deploy at Cloudflare, a reconnect wave) waits instead of being refused.
/// Linux caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 65_535;

/// A visitor that has not finished its TLS handshake after this long is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After an error on accept that means "out of descriptors or memory", how long to wait before
/// accepting again (rather than spinning on the same error).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The TLS settings of HTTPS listeners: Mozilla's "intermediate" profile (TLS 1.2 and 1.3),
/// the certificate chain and key from files, HTTP/1.1 only. Buffers are released while a
/// connection is idle, and records are read ahead (one system call per read, not two).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_certificate_chain_file(cert)?;
    builder.set_private_key_file(key, SslFiletype::PEM)?;
    builder.check_private_key()?;
    builder.set_read_ahead(true);
    Ok(builder.build())
}

/// One listening address.
struct Listening {
    addr: SocketAddr,
    tls: Option<SslAcceptor>,
    /// This listener's own caps, beside the one for all listeners.
    limits: ListenerLimits,
    /// Bound before the server started (so that a port in use stops the start with an error).
    bound: Option<TcpListener>,
}

/// What the workers share of one listener: its socket, TLS, and caps.
#[derive(Clone)]
struct Shared {
    tls: Option<SslAcceptor>,
    connections: Option<Arc<Cap>>,
    in_flight: Option<Arc<Cap>>,
}

/// The proxy service: listeners and their worker threads.
pub struct ProxyService {
    app: Arc<FastPath>,
    threads: usize,
    /// Visitor connections open at once, beyond which new ones are shed.
    max_connections: usize,
    listening: Vec<Listening>,
    /// The sockets bound by this process, open for its whole life: their descriptors are in
    /// Pingora's hand-over table.
    owned: Vec<TcpListener>,
}

impl ProxyService {
    pub fn new(app: Arc<FastPath>, threads: usize, max_connections: usize) -> Self {
        ProxyService {
            app,
            threads: threads.max(1),
            max_connections: max_connections.max(1),
            listening: Vec::new(),
            owned: Vec::new(),
        }
    }

    /// Adds a listener: plain HTTP, or HTTPS with `tls`, with its own caps.
    pub fn add(&mut self, addr: SocketAddr, tls: Option<SslAcceptor>, limits: ListenerLimits) {
        self.listening.push(Listening {
            addr,
            tls,
            limits,
            bound: None,
        });
    }

    /// Binds every listener now. Not on an upgrade: the running process holds the sockets,
    /// and they come from it.
    pub fn bind_all(&mut self) -> Result<(), (SocketAddr, io::Error)> {
        for l in &mut self.listening {
            l.bound = Some(bind(l.addr).map_err(|e| (l.addr, e))?);
        }
        Ok(())
    }

    /// The socket for `l`: inherited from the previous process, bound before, or bound now.
    /// Returns a duplicate for the workers; the original stays open for the hand-over.
    fn socket(&mut self, i: usize, fds: Option<&ListenFds>) -> io::Result<TcpListener> {
        let l = &mut self.listening[i];
        let key = l.addr.to_string();
        if let Some(fds) = fds {
            let mut table = fds.lock();
            if let Some(&fd) = table.get(&key) {
                let socket = TcpListener::from(duplicate_inherited(fd)?);
                tracing::info!(address = %l.addr, "listening socket taken over");
                return Ok(socket);
            }
            let socket = match l.bound.take() {
                Some(s) => s,
                None => bind(l.addr)?,
            };
            table.add(key, socket.as_raw_fd());
            let dup = socket.try_clone()?;
            self.owned.push(socket);
            return Ok(dup);
        }
        match l.bound.take() {
            Some(s) => Ok(s),
            None => bind(l.addr),
        }
    }
}

#[async_trait]
impl Service for ProxyService {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let mut sockets = Vec::new();
        for i in 0..self.listening.len() {
            let l = &self.listening[i];
            let cap = |max: Option<u32>| max.map(|m| Cap::new(m as usize));
            let shared = Shared {
                tls: l.tls.clone(),
                connections: cap(l.limits.max_connections),
                in_flight: cap(l.limits.max_in_flight),
            };
            match self.socket(i, fds.as_ref()) {
                Ok(s) => sockets.push((s, shared)),
                Err(e) => {
                    let addr = self.listening[i].addr;
                    tracing::error!(address = %addr, error = %e, "cannot listen; stopping");
                    std::process::exit(1);
                }
            }
        }
        let limit = Cap::new(self.max_connections);
        for n in 0..self.threads {
            let mut mine = Vec::new();
            for (socket, shared) in &sockets {
                match socket.try_clone() {
                    Ok(s) => mine.push((s, shared.clone())),
                    Err(e) => tracing::error!(error = %e, "cannot share a listening socket"),
                }
            }
            let (app, shutdown, limit) = (self.app.clone(), shutdown.clone(), limit.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("holdfast-{n}"))
                .spawn(move || worker(app, mine, limit, shutdown));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker thread");
            }
        }
        drop(sockets);
        // The workers run until the process exits (Pingora ends it after the grace period);
        // this task only waits, so that the service counts as running.
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    }

    fn name(&self) -> &str {
        "holdfast proxy"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.listening.iter().map(|l| l.addr.to_string()).collect())
    }
}

/// A duplicate of a listening socket inherited from the previous process.
#[allow(unsafe_code)]
fn duplicate_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `fd` came from the previous process through Pingora's hand-over table, which
    // keeps it open for this process's whole life (it is passed on at the next upgrade); it is
    // only borrowed here, to duplicate it.
    let inherited = unsafe { BorrowedFd::borrow_raw(fd) };
    inherited.try_clone_to_owned()
}

/// Binds a listening socket the way servers do: address reuse (a restart does not wait for
/// old connections in TIME_WAIT), a deep accept queue.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// One worker thread: its own runtime, accepting on every listener.
fn worker(
    app: Arc<FastPath>,
    sockets: Vec<(TcpListener, Shared)>,
    limit: Arc<Cap>,
    shutdown: ShutdownWatch,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    runtime.block_on(async move {
        for (socket, shared) in sockets {
            let listener = socket
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(socket));
            match listener {
                Ok(listener) => {
                    let (app, limit) = (app.clone(), limit.clone());
                    tokio::spawn(accept(listener, shared, app, limit, shutdown.clone()));
                }
                Err(e) => tracing::error!(error = %e, "cannot accept on a listening socket"),
            }
        }
        // Connections already accepted go on after accepting stops, until the process exits.
        std::future::pending::<()>().await;
    });
}

/// Accepts connections until shutdown; each is served on this thread.
async fn accept(
    listener: tokio::net::TcpListener,
    shared: Shared,
    app: Arc<FastPath>,
    limit: Arc<Cap>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let (all, over_all) = limit.take();
                let (mine, over_mine) = match &shared.connections {
                    Some(cap) => {
                        let (ticket, over) = cap.take();
                        (Some(ticket), over)
                    }
                    None => (None, false),
                };
                let over = over_all || over_mine;
                let (app, shared, shutdown) = (app.clone(), shared.clone(), shutdown.clone());
                tokio::spawn(async move {
                    connection(&app, tcp, peer.ip(), shared, over, &shutdown).await;
                    drop((all, mine));
                });
                // Let the other workers take their share of a burst of new connections.
                tokio::task::yield_now().await;
            }
            Err(e) if is_resource_error(&e) => {
                tracing::warn!(error = %e, "accept failed: out of resources");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(_) => {} // the peer gave up before it was accepted
        }
    }
}

/// Whether an accept error means the process or the machine is out of something.
fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves one visitor connection, after its TLS handshake on an HTTPS listener; one `over`
/// the cap gets the fallback answer and is closed.
async fn connection(
    app: &FastPath,
    tcp: tokio::net::TcpStream,
    client: IpAddr,
    shared: Shared,
    over: bool,
    shutdown: &ShutdownWatch,
) {
    let in_flight = shared.in_flight;
    let Some(acceptor) = shared.tls else {
        return match over {
            true => app.shed(tcp).await,
            false => app.serve(tcp, client, "http", in_flight, shutdown).await,
        };
    };
    let Ok(mut stream) = Ssl::new(acceptor.context()).and_then(|ssl| SslStream::new(ssl, tcp))
    else {
        return;
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) if over => app.shed(stream).await,
        Ok(Ok(())) => {
            app.serve(stream, client, "https", in_flight, shutdown)
                .await
        }
        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
    }
}
