//! The Pingora service of the proxy listeners: at start, takes over the sockets the previous
//! process handed over (binding the others), commits the first set, and starts one worker
//! thread per core.

use super::accept::worker;
use super::set::{lock, Listeners};
use super::socket::{bind, duplicate_inherited};
use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use std::net::TcpListener;
use std::sync::Arc;

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
