//! The proxy listeners. Every worker thread runs its own single-threaded runtime and accepts on
//! every listening socket (a duplicate of the one socket per address), and a connection stays
//! on the thread that accepted it for its whole life: no hand-off between threads and no
//! cross-thread wake-up, the costs of serving from Pingora's shared runtimes
//! (`shared/pingora-performance.md`). The accept queue stays one per address, so there is no
//! per-thread queue whose closing could reset waiting connections.
//!
//! A reload changes the set live ([`Listeners::prepare`] binds what is new before anything
//! changes, [`Listeners::commit`] swaps): an added address serves, a removed one stops accepting
//! while its connections finish, one that stays is never closed; each worker watches the set.
//!
//! The sockets are handed over in a graceful binary upgrade through Pingora's table of listening
//! sockets: taken from it when inherited, or bound here with a duplicate put into it; the table
//! goes to the next process (see [`crate::lifecycle`]).

use crate::cap::Cap;
use crate::certs::{self, Certificate};
use crate::fast::FastPath;
use crate::trust::Ranges;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use holdfast_config::{Config, ListenerLimits, PullMode};
use holdfast_health::LocalError;
use openssl::ssl::{Ssl, SslAcceptor};
use openssl::x509::X509VerifyResult;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
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

/// What the workers share of one listener: TLS, caps, who may connect. A reload swaps it
/// whole.
struct Shared {
    tls: Option<SslAcceptor>,
    connections: Option<Arc<Cap>>,
    in_flight: Option<Arc<Cap>>,
    /// On a `trusted_only` listener, the peers let in beside the trusted ones (the running
    /// config's, refreshed ranges included).
    trusted_only: Option<Arc<Ranges>>,
    /// Authenticated Origin Pulls on this listener, in which mode.
    pulls: Option<PullMode>,
}

/// One listening address.
struct Entry {
    addr: SocketAddr,
    /// The socket, from which each worker takes a duplicate. (Pingora's hand-over table holds
    /// another duplicate, or the inherited original.)
    socket: TcpListener,
    shared: ArcSwap<Shared>,
    /// Turns true when a reload removes the address: its workers stop accepting on it.
    removed: watch::Sender<bool>,
}

/// A listener as a config has it.
struct Wanted {
    addr: SocketAddr,
    tls: Option<SslAcceptor>,
    limits: ListenerLimits,
    trusted_only: Option<Arc<Ranges>>,
    pulls: Option<PullMode>,
}

/// A reload's listeners, ready to be committed: the new addresses already bound, TLS loaded.
pub struct Prepared {
    wanted: Vec<Wanted>,
    /// The HTTPS certificates, for their expiry.
    certificates: Vec<Certificate>,
    bound: Vec<(SocketAddr, TcpListener)>,
    max_connections: usize,
}

struct State {
    /// Whether the service has started (reloads wait for it).
    started: bool,
    /// Pingora's table of listening sockets handed to the next process at an upgrade.
    fds: Option<ListenFds>,
    /// The worker threads' runtimes, to see that they answer (systemd's watchdog).
    workers: Vec<tokio::runtime::Handle>,
    entries: Vec<Arc<Entry>>,
}

/// The proxy listeners, which a reload may add to, remove from and change: an address that
/// stays is never closed.
pub struct Listeners {
    app: Arc<FastPath>,
    threads: usize,
    /// Visitor connections open at once, all listeners together, beyond which new ones are shed.
    limit: Arc<Cap>,
    /// That cap when the config sets none (from the open-file limit).
    default_max_connections: usize,
    /// Where the process stops accepting (graceful stop, upgrade).
    stop: watch::Receiver<bool>,
    /// The first config's listeners, until the service starts.
    initial: Mutex<Option<Prepared>>,
    state: Mutex<State>,
    /// The current set, watched by every worker.
    set: watch::Sender<Arc<Vec<Arc<Entry>>>>,
    /// Why the listeners could not start (a socket neither handed over nor bound at an
    /// upgrade): the process then stops in order, and exits with an error.
    failed: watch::Sender<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cap on visitor connections `config` sets, or `default`.
fn max_connections(config: &Config, default: usize) -> usize {
    config
        .listen
        .max_connections
        .map_or(default, |m| m as usize)
}

/// The listeners of `config`: HTTPS ones with their certificates loaded.
fn wanted(config: &Config) -> Result<(Vec<Wanted>, Vec<Certificate>), String> {
    let limits = |addr: &SocketAddr| config.listen.limits.get(addr).copied().unwrap_or_default();
    let exceptions = Arc::new(Ranges::new(
        config.listen.trusted_only_exceptions.iter().copied(),
    ));
    let trusted_only = |addr: &SocketAddr| {
        config
            .listen
            .trusted_only
            .contains(addr)
            .then(|| exceptions.clone())
    };
    let mut wanted: Vec<Wanted> = config
        .listen
        .http
        .iter()
        .map(|&addr| Wanted {
            addr,
            tls: None,
            limits: limits(&addr),
            trusted_only: trusted_only(&addr),
            pulls: None,
        })
        .collect();
    let mut certificates = Vec::new();
    if let Some(tls) = &config.listen.tls {
        certificates = certs::load_all(tls)?;
        for &addr in &config.listen.https {
            let pulls = tls.origin_pulls.get(&addr);
            wanted.push(Wanted {
                addr,
                tls: Some(certs::acceptor(&certificates, pulls, &config.listen.alpn)?),
                limits: limits(&addr),
                trusted_only: trusted_only(&addr),
                pulls: pulls.map(|p| p.mode),
            });
        }
    }
    Ok((wanted, certificates))
}

impl Listeners {
    /// The listeners of `config`, bound now unless `upgrade` (then the running process hands
    /// them over when the service starts). `default_max_connections` is the cap on visitor
    /// connections when a config sets none; `visitors` counts them (the descriptor budget of
    /// backend connections reads it too).
    pub fn new(
        app: Arc<FastPath>,
        threads: usize,
        config: &Config,
        default_max_connections: usize,
        visitors: Arc<Cap>,
        upgrade: bool,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, (Option<SocketAddr>, String)> {
        let (wanted, certificates) = wanted(config).map_err(|e| (None, e))?;
        let max_connections = max_connections(config, default_max_connections);
        let mut bound = Vec::new();
        if !upgrade {
            for w in &wanted {
                let socket = bind(w.addr).map_err(|e| (Some(w.addr), e.to_string()))?;
                bound.push((w.addr, socket));
            }
        }
        visitors.set_max(max_connections);
        Ok(Listeners {
            app,
            threads: threads.max(1),
            limit: visitors,
            default_max_connections,
            stop,
            initial: Mutex::new(Some(Prepared {
                wanted,
                certificates,
                bound,
                max_connections,
            })),
            state: Mutex::new(State {
                started: false,
                fds: None,
                workers: Vec::new(),
                entries: Vec::new(),
            }),
            set: watch::Sender::new(Arc::new(Vec::new())),
            failed: watch::Sender::new(None),
        })
    }

    /// The cap on visitor connections now.
    pub fn max_connections(&self) -> usize {
        self.limit.max()
    }

    /// Visitor connections open now.
    pub fn connections(&self) -> usize {
        self.limit.live()
    }

    /// Pingora's hand-over table, once the service has started.
    pub fn fds(&self) -> Option<ListenFds> {
        lock(&self.state).fds.clone()
    }

    /// Whether the listeners are accepting (the service has started).
    /// Resolves with the reason once the listeners could not start.
    pub async fn failure(&self) -> String {
        let mut failed = self.failed.subscribe();
        let why = failed
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|why| why.clone());
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }

    /// Why the listeners could not start, if they could not.
    pub fn failed(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    pub fn started(&self) -> bool {
        lock(&self.state).started
    }

    /// Whether every worker thread's event loop runs a task within a second.
    pub async fn workers_answer(&self) -> bool {
        let workers = lock(&self.state).workers.clone();
        for worker in workers {
            let answered =
                tokio::time::timeout(Duration::from_secs(1), worker.spawn(async {})).await;
            if !matches!(answered, Ok(Ok(()))) {
                return false;
            }
        }
        true
    }

    /// Everything about `config`'s listeners that can fail, done before anything changes:
    /// certificates loaded, new addresses bound.
    pub fn prepare(&self, config: &Config) -> Result<Prepared, String> {
        let (wanted, certificates) = wanted(config)?;
        let state = lock(&self.state);
        if !state.started {
            return Err("the listeners have not started yet; try again".to_string());
        }
        let mut bound = Vec::new();
        for w in &wanted {
            if state.entries.iter().any(|e| e.addr == w.addr) {
                continue;
            }
            let socket = bind(w.addr).map_err(|e| format!("cannot listen on {}: {e}", w.addr))?;
            bound.push((w.addr, socket));
        }
        let max_connections = max_connections(config, self.default_max_connections);
        Ok(Prepared {
            wanted,
            certificates,
            bound,
            max_connections,
        })
    }

    /// Makes `prepared` the listeners: a new address serves, a removed one stops accepting
    /// (its connections finish), one that stays takes its new TLS and caps and is never
    /// closed. Returns the addresses added and removed.
    pub fn commit(&self, prepared: Prepared) -> (Vec<String>, Vec<String>) {
        let mut state = lock(&self.state);
        let Prepared {
            wanted,
            certificates,
            mut bound,
            max_connections,
        } = prepared;
        self.limit.set_max(max_connections);
        self.app.snapshot().metrics.certificates(&certificates);
        // HTTP/2 connections say GOAWAY: their next streams come on new connections, with
        // the listeners' new TLS.
        self.app.lifecycle().reloaded();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let mut entries = Vec::with_capacity(wanted.len());
        for w in wanted {
            if let Some(e) = state.entries.iter().find(|e| e.addr == w.addr) {
                let old = e.shared.load();
                e.shared.store(Arc::new(Shared {
                    tls: w.tls,
                    connections: cap(old.connections.as_ref(), w.limits.max_connections),
                    in_flight: cap(old.in_flight.as_ref(), w.limits.max_in_flight),
                    trusted_only: w.trusted_only,
                    pulls: w.pulls,
                }));
                entries.push(e.clone());
                continue;
            }
            let Some(i) = bound.iter().position(|(addr, _)| *addr == w.addr) else {
                continue; // not prepared: cannot happen
            };
            let (addr, socket) = bound.swap_remove(i);
            // Into the hand-over table, so that the next upgrade hands it over: a duplicate,
            // unless the socket came from that table (inherited at an upgrade).
            if let Some(fds) = &state.fds {
                let mut table = fds.lock();
                if table.get(&addr.to_string()).is_none() {
                    match socket.try_clone() {
                        Ok(dup) => table.add(addr.to_string(), dup.into_raw_fd()),
                        Err(e) => {
                            tracing::warn!(address = %addr, error = %e, "this listener will not be handed over at the next upgrade")
                        }
                    }
                }
            }
            added.push(addr.to_string());
            entries.push(Arc::new(Entry {
                addr,
                socket,
                shared: ArcSwap::from_pointee(Shared {
                    tls: w.tls,
                    connections: cap(None, w.limits.max_connections),
                    in_flight: cap(None, w.limits.max_in_flight),
                    trusted_only: w.trusted_only,
                    pulls: w.pulls,
                }),
                removed: watch::Sender::new(false),
            }));
        }
        let gone: Vec<Arc<Entry>> = state
            .entries
            .iter()
            .filter(|e| !entries.iter().any(|n| Arc::ptr_eq(n, e)))
            .cloned()
            .collect();
        for e in &gone {
            e.removed.send_replace(true);
            removed.push(e.addr.to_string());
        }
        if !gone.is_empty() {
            if let Some(fds) = &state.fds {
                // Out of the hand-over table (closing its copy): the removed addresses only.
                // The table also holds sockets that are not ours (the admin listener's).
                let mut table = fds.lock();
                let keep: HashSet<String> = table
                    .serialize()
                    .0
                    .into_iter()
                    .filter(|key| !gone.iter().any(|e| e.addr.to_string() == *key))
                    .collect();
                table.close_unclaimed(&keep);
            }
        }
        state.entries = entries;
        self.set.send_replace(Arc::new(state.entries.clone()));
        (added, removed)
    }
}

/// The cap for a reload: the same object with its new maximum when there was one (what is open
/// stays counted), a new one when there was none.
fn cap(old: Option<&Arc<Cap>>, max: Option<u32>) -> Option<Arc<Cap>> {
    let max = max? as usize;
    match old {
        Some(cap) => {
            cap.set_max(max);
            Some(cap.clone())
        }
        None => Some(Cap::new(max)),
    }
}

/// The proxy service: starts the listeners and their worker threads.
pub struct ProxyService {
    listeners: Arc<Listeners>,
    addresses: Vec<String>,
}

impl ProxyService {
    pub fn new(listeners: Arc<Listeners>) -> Self {
        let addresses = lock(&listeners.initial)
            .as_ref()
            .map(|p| p.wanted.iter().map(|w| w.addr.to_string()).collect())
            .unwrap_or_default();
        ProxyService {
            listeners,
            addresses,
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
        let listeners = &self.listeners;
        let Some(mut initial) = lock(&listeners.initial).take() else {
            return;
        };
        // Sockets handed over by the previous process are taken over; the others bound now.
        for w in &initial.wanted {
            if initial.bound.iter().any(|(addr, _)| *addr == w.addr) {
                continue;
            }
            let inherited = fds
                .as_ref()
                .and_then(|fds| fds.lock().get(&w.addr.to_string()).copied());
            let socket = match inherited {
                Some(fd) => duplicate_inherited(fd).map(TcpListener::from),
                None => bind(w.addr),
            };
            match socket {
                Ok(socket) => {
                    if inherited.is_some() {
                        tracing::info!(address = %w.addr, "listening socket taken over");
                    }
                    initial.bound.push((w.addr, socket));
                }
                Err(e) => {
                    // Told to the signal loop, which stops the process in order.
                    let why = format!("cannot listen on {}: {e}", w.addr);
                    tracing::error!("{why}; stopping");
                    listeners.failed.send_replace(Some(why));
                    return;
                }
            }
        }
        {
            let mut state = lock(&listeners.state);
            state.fds = fds;
            state.started = true;
        }
        listeners.commit(initial);

        for n in 0..listeners.threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a worker runtime");
                    continue;
                }
            };
            lock(&listeners.state)
                .workers
                .push(runtime.handle().clone());
            let (listeners, set) = (self.listeners.clone(), listeners.set.subscribe());
            let spawned = std::thread::Builder::new()
                .name(format!("holdfast-{n}"))
                .spawn(move || worker(runtime, listeners, set));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker thread");
            }
        }
        // The workers run until the process exits; this task only waits, so that the service
        // counts as running.
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
        Some(self.addresses.clone())
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

/// One worker thread: its own runtime, accepting on every listener, following the set as
/// reloads change it.
fn worker(
    runtime: tokio::runtime::Runtime,
    listeners: Arc<Listeners>,
    mut set: watch::Receiver<Arc<Vec<Arc<Entry>>>>,
) {
    runtime.block_on(async move {
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
            true => app.shed(tcp).await,
            false => app.serve(tcp, client, "http", in_flight, shutdown).await,
        };
    };
    let Ok(mut stream) = Ssl::new(acceptor.context()).and_then(|ssl| SslStream::new(ssl, tcp))
    else {
        return;
    };
    let handshake =
        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept()).await;
    // Authenticated Origin Pulls: what the client's certificate was worth.
    if let Some(mode) = shared.pulls {
        let why = match &handshake {
            // Served (log mode), or refused after the handshake (require mode, TLS 1.3).
            Ok(Ok(())) => match (
                stream.ssl().peer_certificate(),
                stream.ssl().verify_result(),
            ) {
                (None, _) => Some("no client certificate".to_string()),
                (Some(_), r) if r != X509VerifyResult::OK => Some(r.error_string().to_string()),
                _ => None,
            },
            // Refused in the handshake (require mode) for its certificate, not for anything
            // else (a client that went away).
            Ok(Err(e)) => e
                .ssl_error()
                .into_iter()
                .flat_map(|stack| stack.errors())
                .filter_map(|e| e.reason())
                .find(|r| r.contains("certificate"))
                .map(str::to_string),
            Err(_) => None,
        };
        if let Some(why) = why {
            app.snapshot().metrics.origin_pull_failed(mode);
            tracing::info!(%client, ?mode, why, "Authenticated Origin Pulls: the client certificate does not verify");
        }
    }
    let h2 = stream.ssl().selected_alpn_protocol() == Some(b"h2");
    if handshake.as_ref().is_ok_and(|h| h.is_ok()) {
        app.snapshot().metrics.tls_connection(h2);
    }
    match handshake {
        Ok(Ok(())) if h2 && over => crate::http2::shed(app, stream, client).await,
        Ok(Ok(())) if h2 => {
            crate::http2::serve(app.clone(), stream, client, in_flight, shutdown.clone()).await
        }
        Ok(Ok(())) if over => app.shed(stream).await,
        Ok(Ok(())) => {
            app.serve(stream, client, "https", in_flight, shutdown)
                .await
        }
        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
    }
}
