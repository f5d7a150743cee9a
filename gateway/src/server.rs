//! Assembles the holdfast process on Pingora's `Server`: the proxy listeners, the admin
//! listener and the health checks, after one start-up probe of every backend.

use crate::access::AccessLog;
use crate::admin::Admin;
use crate::cap::Cap;
use crate::fast::upstream::Descriptors;
use crate::fast::{Connector, FastPath};
use crate::lifecycle::{Relaunch, Signals};
use crate::listen::{Listeners, ProxyService};
use crate::metrics::Metrics;
use crate::process::Lifecycle;
use crate::reload::{self, Reloader};
use crate::rundir::{self, RunDirError, RunFiles};
use crate::runtime::{Runtime, Version};
use crate::{state, systemd};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use holdfast_config::ConfigError;
use holdfast_health::checker::{CheckLoops, NetProber};
use holdfast_health::tls::TlsClient;
use holdfast_health::HealthTable;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::SignalKind;

/// After the grace period, how long the runtimes get to wind down.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Process-level settings that do not belong in the config file.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Take the listening sockets over from a running instance (graceful binary upgrade).
    pub upgrade: bool,
    /// Where listening sockets are handed from one process to the next; `None`: in the private
    /// runtime directory ([`crate::rundir`]).
    pub upgrade_sock: Option<PathBuf>,
    /// Where the health state is handed from one process to the next; `None`: likewise.
    pub state_file: Option<PathBuf>,
    /// The admin endpoints' Unix socket (mode 0600); `None`: beside the upgrade socket.
    pub control_sock: Option<PathBuf>,
    /// Started by `holdfast run`, whose command line starts the next process of an upgrade.
    pub relaunch: bool,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            upgrade: false,
            upgrade_sock: None,
            control_sock: None,
            state_file: None,
            relaunch: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the start-up probe: {0}")]
    Probe(#[source] std::io::Error),
    #[error("cannot set up the HTTPS listeners: {0}")]
    ListenerTls(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, String),
    #[error("{0}")]
    RunDir(#[from] RunDirError),
    #[error("cannot open the access log (log.access): {0}")]
    AccessLog(#[source] std::io::Error),
}

/// The runtime files of this instance: those given, in a directory that must be private, or
/// the defaults in the private runtime directory, named after the config file.
fn run_files(config: &Path, options: &ProcessOptions) -> Result<RunFiles, RunDirError> {
    let dir = rundir::default_dir();
    let defaults = rundir::files_for(&dir, config);
    if options.upgrade_sock.is_none() || options.state_file.is_none() {
        rundir::ensure_private(&dir)?;
    }
    let upgrade_sock = options
        .upgrade_sock
        .clone()
        .unwrap_or(defaults.upgrade_sock);
    let state_file = options.state_file.clone().unwrap_or(defaults.state_file);
    for file in [&upgrade_sock, &state_file] {
        rundir::check_private(rundir::parent(file))?;
    }
    let key = rundir::instance_key(config);
    let pid_file = rundir::parent(&upgrade_sock).join(format!("{key}.pid"));
    let control_sock = options
        .control_sock
        .clone()
        .unwrap_or_else(|| rundir::parent(&upgrade_sock).join(format!("{key}.control.sock")));
    rundir::check_private(rundir::parent(&control_sock))?;
    Ok(RunFiles {
        upgrade_sock,
        control_sock,
        state_file,
        pid_file,
    })
}

/// Probes every backend once, then serves until a signal stops the process. Never returns on
/// success (Pingora exits the process when it stops).
pub fn run(path: PathBuf, options: ProcessOptions) -> Result<(), StartError> {
    // SIGHUP must never stop the process: from now on it is handled (the reload itself is
    // wired up once the services run).
    ignore_hangup_until_handled();
    // What the watcher takes as seen: the files as they were before they were read, so that a
    // write between this load and the watcher's start is applied, not taken as seen.
    let config_before = crate::fingerprint::Loaded::before(&path);
    let (config, hashes) = reload::read(&path).map_err(StartError::Config)?;
    let loaded = config_before.and_named(&config);
    let files = run_files(&path, &options)?;
    let config_key = config_key(&path);
    let fd_limit = raise_fd_limit();
    if let Some(file) = config.trust.refresh.as_ref().and_then(|r| r.file.as_ref()) {
        crate::refresh::take_kept(file);
    }
    let metrics = Metrics::new()?;
    let access = match &config.log.access {
        Some(settings) => Some(Arc::new(
            AccessLog::open(settings, config.log.json, metrics.access_log())
                .map_err(StartError::AccessLog)?,
        )),
        None => None,
    };
    let health = Arc::new(HealthTable::new(&config, Arc::new(metrics.clone())));
    let tls = TlsClient::new();
    let prober = Arc::new(NetProber::new(tls.clone()));
    // On an upgrade, the health state comes from the running process with its sockets, and
    // only what it did not know is probed then. On a plain start, a state file written by a
    // process that stopped less than a minute ago is taken the same way (a restart).
    if !options.upgrade {
        take_state(&files.state_file, &config_key, &health);
        startup_probe(&health, &prober)?;
    }

    let version = Version {
        generation: 1,
        hashes,
    };
    let pools = health.pools();
    let first = Runtime::new(
        Arc::new(config.clone()),
        version,
        health.clone(),
        pools,
        metrics.clone(),
        None,
    );
    metrics.running(&first.hashes.file, first.generation, first.loaded_at);
    let runtime = Arc::new(ArcSwap::from_pointee(first));

    let conf = ServerConf {
        threads: options.threads.max(1),
        // The graceful part of a stop is done by `lifecycle` before Pingora is told to exit.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(SHUTDOWN_TIMEOUT.as_secs()),
        upgrade_sock: files.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: files.pid_file.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    let lifecycle = Arc::new(Lifecycle::default());
    let visitors = Cap::new(1);
    let descriptors = Descriptors::new(usable_descriptors(fd_limit), visitors.clone());
    let connector = Arc::new(Connector::new(tls, descriptors));
    let app = Arc::new(
        FastPath::new(runtime.clone(), connector, lifecycle.clone())
            .with_access_log(access.clone()),
    );
    let listeners = Arc::new(
        Listeners::new(
            app,
            options.threads,
            &config,
            default_max_connections(fd_limit),
            visitors.clone(),
            options.upgrade,
            lifecycle.stopping(),
        )
        .map_err(|(addr, why)| match addr {
            Some(addr) => StartError::Listen(addr, why),
            None => StartError::ListenerTls(why),
        })?,
    );
    tracing::info!(
        max_connections = listeners.max_connections(),
        "visitor connections beyond this get a fast 503"
    );
    let (checks_stop, checks_shutdown) = tokio::sync::watch::channel(false);
    let checks = Arc::new(Mutex::new(CheckLoops::new(
        health.clone(),
        prober.clone(),
        checks_shutdown,
    )));
    let reloader = Arc::new(Reloader::new(
        loaded,
        runtime.clone(),
        health.clone(),
        prober.clone(),
        checks.clone(),
        listeners.clone(),
        metrics,
    ));
    let mut app = Admin::new(
        runtime.clone(),
        reloader.clone(),
        lifecycle.clone(),
        visitors,
    );
    app.control_sock = Some(files.control_sock.clone());
    let history = Arc::new(crate::history::History::default());
    app.history = Some(history.clone());
    app.listeners = Some(listeners.clone());
    if options.relaunch {
        app.relaunch = std::env::current_exe().ok().map(|exe| Relaunch {
            exe,
            args: std::env::args_os().skip(1).collect(),
            upgrade_sock: files.upgrade_sock.clone(),
        });
    }
    let mut admin = Service::new("holdfast admin".to_string(), app);
    admin.add_tcp(&config.listen.admin.to_string());
    // Writes need no token here: only this user (and root) can connect.
    admin.add_uds(
        &files.control_sock.to_string_lossy(),
        Some(std::os::unix::fs::PermissionsExt::from_mode(0o600)),
    );
    admin.threads = Some(1);

    server.add_service(ProxyService::new(listeners.clone()));
    server.add_service(admin);
    server.add_service(background_service(
        "health checks",
        Background {
            checks,
            checks_stop,
            reloader: reloader.clone(),
            listeners: listeners.clone(),
            runtime: runtime.clone(),
            history,
            upgraded: options
                .upgrade
                .then(|| crate::lifecycle::ready_file(&files.upgrade_sock)),
        },
    ));
    server.bootstrap();
    if options.upgrade {
        take_state(&files.state_file, &config_key, &health);
        startup_probe(&health, &prober)?;
    }
    tracing::info!(
        http = ?config.listen.http,
        https = ?config.listen.https,
        admin = %config.listen.admin,
        "holdfast serving"
    );
    let signals = Signals {
        lifecycle,
        listeners: listeners.clone(),
        reloader,
        runtime,
        upgrade_sock: files.upgrade_sock,
        state_file: files.state_file,
        config: config_key,
        access,
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    match listeners.failed() {
        Some(why) => {
            eprintln!("holdfast: {why}");
            exit_now(1)
        }
        None => exit_now(0),
    }
}

/// Ends the process with `code` without the C library's exit-time handlers. When Pingora's
/// `run` returns, some of its threads may still run; the handlers (the allocator's and
/// OpenSSL's clean-ups) then crashed the process with SIGSEGV in about one exit in ten under
/// load (seen after a stop whose listeners never started), so its exit code was lost. Standard error is unbuffered and
/// the log is written line by line: nothing is lost by skipping them.
#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process at once; it touches no memory of this one.
    unsafe { libc::_exit(code) }
}

/// The config file as the state file records it: its absolute path.
fn config_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Takes the health state a previous process serving the same config file left in `file`, if
/// it is there, fresh and this user's; the file is used once.
fn take_state(file: &Path, config: &str, health: &HealthTable) {
    if !file.exists() {
        return;
    }
    if !rundir::owned_by_us(file) {
        tracing::warn!(file = %file.display(), "health state file not used: it belongs to another user");
        let _ = std::fs::remove_file(file);
        return;
    }
    match state::restore(file, config, &health.pools()) {
        Ok(n) => {
            tracing::info!(file = %file.display(), backends = n, "health state taken over from the previous process")
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "health state of the previous process not used; the start-up probe decides")
        }
    }
    let _ = std::fs::remove_file(file);
}

/// Until the signal loop runs, a SIGHUP is ignored rather than fatal (its default action).
fn ignore_hangup_until_handled() {
    let registered = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map(|rt| {
            rt.block_on(async { tokio::signal::unix::signal(SignalKind::hangup()).map(drop) })
        });
    if !matches!(registered, Ok(Ok(()))) {
        tracing::warn!("cannot handle SIGHUP yet: one now would stop the process");
    }
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

/// The descriptors visitor and backend connections may use together: the open-file limit less
/// room for checks, the admin listener, logs and the runtime itself (which holds about 40 at
/// start): a quarter of the limit, at least 64 and at most 256.
fn usable_descriptors(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 4).clamp(64, 256);
    usize::try_from(fd_limit.saturating_sub(reserve)).unwrap_or(usize::MAX)
}

/// The cap on visitor connections when the config sets none: half the usable descriptors, so
/// that each HTTP/1.1 visitor connection has its backend connection beside it. Beyond it, a
/// fast 503 instead of accepts failing for lack of descriptors. An HTTP/2 connection may hold a
/// backend connection per stream: those draw on the same budget, and a stream that finds it
/// spent gets the fallback at once ([`Descriptors`]), never a backend blamed.
fn default_max_connections(fd_limit: u64) -> usize {
    (usable_descriptors(fd_limit) / 2).max(16)
}

/// Probes every backend once, bounded by the checks' timeouts, so the first visitor is not
/// sent to a dead backend.
fn startup_probe(health: &Arc<HealthTable>, prober: &Arc<NetProber>) -> Result<(), StartError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Probe)?;
    // What an earlier process handed over is known already; the rest is probed.
    let pools = health.pools();
    let unknown: Vec<_> = pools
        .iter()
        .flat_map(|p| p.backends())
        .filter(|b| b.status() == holdfast_health::Status::Unknown)
        .cloned()
        .collect();
    rt.block_on(health.probe_once(&pools, &unknown, prober));
    for pool in pools.iter() {
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

/// Samples every pool's counters into `history` once a second.
async fn sample_history(runtime: Arc<ArcSwap<Runtime>>, history: Arc<crate::history::History>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let runtime = runtime.load();
        history.sample(runtime.pools.iter().map(|p| {
            let (all, errors, rescued, hedged) = p.metrics.totals();
            let mut counts = [0; crate::history::SERIES.len()];
            counts[0] = all;
            counts[1] = errors;
            counts[8] = rescued;
            counts[9] = hedged;
            for b in p.backends() {
                for (failure, connect, n) in b.metrics.failures() {
                    counts[crate::history::class(failure, connect)] += n;
                }
            }
            (&*p.name, counts)
        }));
    }
}

/// What runs beside the services: the check loops, the config file's watcher, the systemd
/// notifications.
struct Background {
    checks: Arc<Mutex<CheckLoops<NetProber>>>,
    checks_stop: tokio::sync::watch::Sender<bool>,
    reloader: Arc<Reloader>,
    listeners: Arc<Listeners>,
    runtime: Arc<ArcSwap<Runtime>>,
    /// Where the sampler keeps each pool's last minutes.
    history: Arc<crate::history::History>,
    /// On an upgrade, the file that tells the previous process this one accepts.
    upgraded: Option<PathBuf>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .start();
        crate::watch::config_files(self.reloader.clone());
        tokio::spawn(sample_history(self.runtime.clone(), self.history.clone()));
        if let Some(inbox) = self.runtime.load().metrics.events().take_inbox() {
            tokio::spawn(crate::notifications::deliver(inbox, self.runtime.clone()));
        }
        tokio::spawn(crate::refresh::keep_refreshed(self.runtime.clone()));
        // Ready once the listeners have their sockets and every worker accepts.
        while !self.listeners.started() || !self.listeners.workers_answer().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        systemd::ready();
        if let Some(ready) = &self.upgraded {
            // The process handing over stops accepting once it sees this.
            if let Err(e) = std::fs::write(ready, std::process::id().to_string()) {
                tracing::warn!(file = %ready.display(), error = %e, "cannot tell the previous process that this one accepts");
            }
        }
        let watchdog = systemd::watchdog_interval();
        loop {
            let tick = watchdog.map_or(Duration::from_secs(3600), |w| w / 2);
            tokio::select! {
                _ = tokio::time::sleep(tick) => {
                    if watchdog.is_some() && self.listeners.workers_answer().await {
                        systemd::watchdog();
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        self.checks_stop.send_replace(true);
    }
}
