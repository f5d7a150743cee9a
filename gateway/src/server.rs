//! Assembles the holdfast process on Pingora's `Server`: the proxy listeners, the admin
//! listener and the health checks, after one start-up probe of every backend.

use crate::admin::Admin;
use crate::fast::{Connector, FastPath};
use crate::listen::{self, ProxyService};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use holdfast_config::Config;
use holdfast_health::checker::NetProber;
use holdfast_health::tls::TlsClient;
use holdfast_health::HealthTable;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// After SIGTERM, how long requests in flight may take to finish before the process exits.
/// (Pingora's own default is 5 minutes, which makes every stop look like a hang.)
pub const GRACE_PERIOD: Duration = Duration::from_secs(5);

/// After the grace period, how long the runtimes get to wind down.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Process-level settings that do not belong in the config file.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Take the listening sockets over from a running instance (graceful binary upgrade).
    pub upgrade: bool,
    /// Where listening sockets are handed from one process to the next.
    pub upgrade_sock: PathBuf,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            upgrade: false,
            upgrade_sock: PathBuf::from("/tmp/holdfast-upgrade.sock"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the start-up probe: {0}")]
    Probe(#[source] std::io::Error),
    #[error("cannot set up the HTTPS listeners: {0}")]
    ListenerTls(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, #[source] std::io::Error),
    #[error("cannot set up TLS towards backends: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
}

/// Probes every backend once, then serves until a signal stops the process. Never returns on
/// success (Pingora exits the process when it stops).
pub fn run(config: Config, options: ProcessOptions) -> Result<(), StartError> {
    let fd_limit = raise_fd_limit();
    let metrics = Metrics::new()?;
    let health = Arc::new(HealthTable::new(&config, Arc::new(metrics.clone())));
    let tls = TlsClient::new()?;
    let prober = Arc::new(NetProber::new(tls.clone()));
    startup_probe(&health, &prober)?;

    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::new(
        Arc::new(config.clone()),
        health.clone(),
        metrics,
    )));

    let conf = ServerConf {
        threads: options.threads.max(1),
        grace_period_seconds: Some(GRACE_PERIOD.as_secs()),
        graceful_shutdown_timeout_seconds: Some(SHUTDOWN_TIMEOUT.as_secs()),
        upgrade_sock: options.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: "/tmp/holdfast.pid".to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    // One service for every proxy listener: `threads` workers, each accepting on all of them.
    let connector = Arc::new(Connector::new(tls));
    let app = Arc::new(FastPath::new(runtime.clone(), connector));
    let max_connections = config
        .listen
        .max_connections
        .map_or_else(|| default_max_connections(fd_limit), |m| m as usize);
    tracing::info!(
        max_connections,
        "visitor connections beyond this get a fast 503"
    );
    let mut proxy = ProxyService::new(app, options.threads, max_connections);
    let limits =
        |addr: &std::net::SocketAddr| config.listen.limits.get(addr).copied().unwrap_or_default();
    for addr in &config.listen.http {
        proxy.add(*addr, None, limits(addr));
    }
    if let Some(tls) = &config.listen.tls {
        let acceptor = listen::tls_acceptor(&tls.cert, &tls.key)
            .map_err(|e| StartError::ListenerTls(e.to_string()))?;
        for addr in &config.listen.https {
            proxy.add(*addr, Some(acceptor.clone()), limits(addr));
        }
    }
    if !options.upgrade {
        proxy
            .bind_all()
            .map_err(|(addr, e)| StartError::Listen(addr, e))?;
    }
    let mut admin = Service::new("holdfast admin".to_string(), Admin::new(runtime));
    admin.add_tcp(&config.listen.admin.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service(
        "health checks",
        Checks { health, prober },
    ));
    server.bootstrap();
    tracing::info!(
        http = ?config.listen.http,
        https = ?config.listen.https,
        admin = %config.listen.admin,
        "holdfast serving"
    );
    server.run_forever()
}

/// Raises the open-file soft limit to the hard limit: every visitor connection and every
/// backend connection is a file descriptor, and the usual soft limit (1024) is far too low.
fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open-file limit");
            limit
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            1024
        }
    }
}

/// The cap on visitor connections when the config sets none: what the open-file limit allows
/// with a backend connection beside each, and some room for checks, the admin listener and
/// shed connections. Beyond it, a fast 503 instead of accepts failing for lack of descriptors.
fn default_max_connections(fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(256) / 2;
    usize::try_from(room).unwrap_or(usize::MAX).max(64)
}

/// Probes every backend once, bounded by the checks' timeouts, so the first visitor is not
/// sent to a dead backend.
fn startup_probe(health: &Arc<HealthTable>, prober: &Arc<NetProber>) -> Result<(), StartError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Probe)?;
    rt.block_on(health.probe_all_once(prober));
    for pool in health.pools() {
        let up = pool.backends().filter(|b| b.is_usable()).count();
        let all = pool.backends().count();
        match pool.active_tier() {
            Some(tier) => {
                tracing::info!(pool = %pool.name, up, of = all, active_tier = tier, "start-up probe done")
            }
            None => {
                tracing::warn!(pool = %pool.name, up, of = all, "start-up probe: no backend can serve; visitors get the fallback answer")
            }
        }
    }
    Ok(())
}

struct Checks {
    health: Arc<HealthTable>,
    prober: Arc<NetProber>,
}

#[async_trait]
impl BackgroundService for Checks {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.health
            .clone()
            .run_checks(self.prober.clone(), shutdown)
            .await;
    }
}
