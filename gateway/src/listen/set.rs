//! The set of listeners and its changes at a reload: [`Listeners::prepare`] binds what is new
//! before anything changes, [`Listeners::commit`] swaps ([`diff`](super::diff) says what stays,
//! comes and goes).

use super::diff::diff;
use super::socket::bind;
use crate::cap::Cap;
use crate::certs::{self, Certificate};
use crate::fast::FastPath;
use crate::trust::Ranges;
use arc_swap::ArcSwap;
use holdfast_config::{Config, ListenerLimits, PullMode};
use pingora::server::ListenFds;
use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the workers share of one listener: TLS, caps, who may connect. A reload swaps it
/// whole.
pub(super) struct Shared {
    pub(super) tls: Option<certs::Acceptor>,
    pub(super) connections: Option<Arc<Cap>>,
    pub(super) in_flight: Option<Arc<Cap>>,
    /// On a `trusted_only` listener, the peers let in beside the trusted ones (the running
    /// config's, refreshed ranges included).
    pub(super) trusted_only: Option<Arc<Ranges>>,
    /// Authenticated Origin Pulls on this listener, in which mode.
    pub(super) pulls: Option<PullMode>,
}

/// One listening address.
pub(super) struct Entry {
    pub(super) addr: SocketAddr,
    /// The socket, from which each worker takes a duplicate. (Pingora's hand-over table holds
    /// another duplicate, or the inherited original.)
    pub(super) socket: TcpListener,
    pub(super) shared: ArcSwap<Shared>,
    /// Turns true when a reload removes the address: its workers stop accepting on it.
    pub(super) removed: watch::Sender<bool>,
}

/// A listener as a config has it.
pub(super) struct Wanted {
    pub(super) addr: SocketAddr,
    tls: Option<certs::Acceptor>,
    limits: ListenerLimits,
    trusted_only: Option<Arc<Ranges>>,
    pulls: Option<PullMode>,
}

/// A reload's listeners, ready to be committed: the new addresses already bound, TLS loaded.
pub struct Prepared {
    pub(super) wanted: Vec<Wanted>,
    /// The HTTPS certificates, for their expiry.
    certificates: Vec<Certificate>,
    pub(super) bound: Vec<(SocketAddr, TcpListener)>,
    max_connections: usize,
}

pub(super) struct State {
    /// Whether the service has started (reloads wait for it).
    pub(super) started: bool,
    /// Pingora's table of listening sockets handed to the next process at an upgrade.
    pub(super) fds: Option<ListenFds>,
    /// The worker threads' runtimes, to see that they answer (systemd's watchdog).
    pub(super) workers: Vec<tokio::runtime::Handle>,
    entries: Vec<Arc<Entry>>,
}

/// The proxy listeners, which a reload may add to, remove from and change: an address that
/// stays is never closed.
pub struct Listeners {
    pub(super) app: Arc<FastPath>,
    pub(super) threads: usize,
    /// Visitor connections open at once, all listeners together, beyond which new ones are shed.
    pub(super) limit: Arc<Cap>,
    /// That cap when the config sets none (from the open-file limit).
    default_max_connections: usize,
    /// Where the process stops accepting (graceful stop, upgrade).
    pub(super) stop: watch::Receiver<bool>,
    /// The first config's listeners, until the service starts.
    pub(super) initial: Mutex<Option<Prepared>>,
    pub(super) state: Mutex<State>,
    /// The current set, watched by every worker.
    pub(super) set: watch::Sender<Arc<Vec<Arc<Entry>>>>,
    /// Why the listeners could not start (a socket neither handed over nor bound at an
    /// upgrade): the process then stops in order, and exits with an error.
    pub(super) failed: watch::Sender<Option<String>>,
    /// Accept loops running: a connection one of them took from the kernel's queue is counted
    /// in [`Listeners::connections`] only once the loop runs on, so a stop waits for them.
    pub(super) accepting: AtomicUsize,
}

/// The addresses of `wanted`, in order.
fn addrs(wanted: &[Wanted]) -> Vec<SocketAddr> {
    wanted.iter().map(|w| w.addr).collect()
}

impl State {
    /// The addresses running now.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.entries.iter().map(|e| e.addr).collect()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
                tls: Some(certs::Acceptor::new(
                    &certificates,
                    pulls,
                    &config.listen.alpn,
                )?),
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
            accepting: AtomicUsize::new(0),
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

    /// Accept loops still running (after a stop: those that have not seen it yet).
    pub fn accepting(&self) -> usize {
        self.accepting.load(Ordering::SeqCst)
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

    /// Stops the kernel listening on every address, for a stop that hands nothing over: a new
    /// connection is refused at once (and goes elsewhere) rather than waiting in an accept queue
    /// that nobody reads until the process exits and resets it. The workers have stopped
    /// accepting already. Never at an upgrade: the sockets are the new process's too.
    pub fn close(&self) {
        for entry in &lock(&self.state).entries {
            // On a listening socket, Linux takes a shutdown as the end of listening (HAProxy
            // pauses its listeners so); the descriptors close with the process.
            if let Err(e) = socket2::SockRef::from(&entry.socket).shutdown(std::net::Shutdown::Read)
            {
                tracing::debug!(address = %entry.addr, error = %e, "cannot close a listener");
            }
        }
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
        for addr in diff(&state.addrs(), &addrs(&wanted)).added {
            let socket = bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            bound.push((addr, socket));
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
        let change = diff(&state.addrs(), &addrs(&wanted));
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let mut entries = Vec::with_capacity(wanted.len());
        for w in wanted {
            let kept = change.kept.contains(&w.addr);
            if let Some(e) = state.entries.iter().find(|e| kept && e.addr == w.addr) {
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
            .filter(|e| change.removed.contains(&e.addr))
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
