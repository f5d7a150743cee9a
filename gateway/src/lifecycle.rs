//! The process's life after start: signals, the graceful stop and the hand-over to a new
//! binary. Pingora runs the services and calls [`Signals::recv`]; everything graceful is done
//! here, so that Pingora only has to exit once it returns.
//!
//! - SIGHUP reloads the config (never stops the process);
//! - SIGTERM: `/healthz` answers 503 for `listen.shutdown_delay` while traffic is still served,
//!   then the listeners stop accepting, requests in flight finish within `listen.grace_period`,
//!   and the process exits once no connection is left or none has been busy for a moment,
//!   leaving the health state for a process started again soon (a restart);
//! - SIGQUIT (an upgrade; `holdfast upgrade` sends it): the health state is written for the new
//!   process, the listening sockets are handed to it, and this one drains as on SIGTERM but
//!   without the delay: the new process is accepting on the very same sockets;
//! - SIGINT stops at once, also during a graceful stop or a drain (as does a second SIGTERM);
//! - SIGUSR1 reopens the access log's file (after logrotate moved it); without one, it is
//!   noted and nothing else happens (it never stops the process).
//!
//! Before the process exits, the access log's queued lines are written.
//!
//! A connection stays open until its next request, which is answered with `Connection: close`,
//! so that a request already on its way never meets a closing connection.

use crate::access::AccessLog;
use crate::listen::Listeners;
use crate::process::{Drain, Drained, Lifecycle};
use crate::reload::Reloader;
use crate::runtime::Runtime;
use crate::systemd;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// After handing the sockets over, how long this process accepts on at most, waiting for the
/// new one to say it accepts.
const READY_WAIT: Duration = Duration::from_secs(30);

/// The file the new process of an upgrade writes once it accepts on the sockets it took over.
pub fn ready_file(upgrade_sock: &std::path::Path) -> PathBuf {
    upgrade_sock.with_extension("ready")
}

/// How often a stop looks whether the accept loops have all seen it.
const ACCEPT_STOP_POLL: Duration = Duration::from_millis(1);

/// How often draining looks at what is left.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Stops accepting, then waits for what is in flight: until no connection is left, or none
/// has been busy for a moment ([`Drain`]), or `grace` is over.
pub async fn drain(lifecycle: &Lifecycle, listeners: &Listeners, grace: Duration) {
    lifecycle.stop_accepting();
    tracing::info!(
        grace = %humantime::format_duration(grace),
        "listeners closed; finishing the requests in flight"
    );
    // A connection an accept loop took from the kernel's queue as the stop came is counted
    // once that loop runs on: looking before every loop has seen the stop could find "no
    // connection" and exit with that one unanswered.
    let started = Instant::now();
    while listeners.accepting() > 0 && started.elapsed() < grace {
        tokio::time::sleep(ACCEPT_STOP_POLL).await;
    }
    let mut drain = Drain::new(started, grace);
    loop {
        let (connections, busy) = (listeners.connections(), lifecycle.in_flight());
        match drain.look(Instant::now(), connections, busy) {
            None => tokio::time::sleep(DRAIN_POLL).await,
            Some(Drained::NoConnection) => return tracing::info!("no connection left"),
            Some(Drained::Quiet) => {
                return tracing::info!(connections, "nothing in flight; closing idle connections")
            }
            Some(Drained::GraceOver) => {
                return tracing::warn!(
                    busy,
                    connections,
                    "grace period over: requests still in flight are cut"
                )
            }
        }
    }
}

/// The signals of a running process (see the module's documentation).
pub struct Signals {
    pub lifecycle: Arc<Lifecycle>,
    pub listeners: Arc<Listeners>,
    pub reloader: Arc<Reloader>,
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// Where the listening sockets go at an upgrade.
    pub upgrade_sock: PathBuf,
    /// Where the health state goes at an upgrade, for the new process.
    pub state_file: PathBuf,
    /// The config file's absolute path, recorded in the state file: a process serving another
    /// config file does not take it.
    pub config: String,
    pub access: Option<Arc<AccessLog>>,
}

/// How long the access log's queued lines are given to be written before the process exits.
const ACCESS_FLUSH: Duration = Duration::from_secs(2);

impl Signals {
    /// What Pingora is told once this process is done: stop now. The access log's queued lines
    /// are written first.
    async fn stop(&self) -> ShutdownSignal {
        if let Some(access) = self.access.clone() {
            let flushed = tokio::task::spawn_blocking(move || access.flush(ACCESS_FLUSH)).await;
            if !matches!(flushed, Ok(true)) {
                tracing::warn!("the access log's last lines could not be written in time");
            }
        }
        ShutdownSignal::FastShutdown
    }

    async fn graceful_stop(&self) {
        let listen = &self.runtime.load().config.listen;
        let (delay, grace) = (listen.shutdown_delay, listen.grace_period);
        self.lifecycle.start_draining();
        systemd::stopping();
        tracing::info!(
            delay = %humantime::format_duration(delay),
            "SIGTERM: /healthz answers 503 while traffic is still served; then the listeners close"
        );
        tokio::time::sleep(delay).await;
        // Nothing is handed over: new connections are refused from now on.
        self.lifecycle.stop_accepting();
        self.listeners.close();
        drain(&self.lifecycle, &self.listeners, grace).await;
        // For a restart: the next process takes what this one knew, if it starts soon.
        self.write_state();
    }

    fn write_state(&self) {
        let runtime = self.runtime.load_full();
        match crate::state::write(&self.state_file, &self.config, &runtime.health) {
            Ok(n) => {
                tracing::info!(file = %self.state_file.display(), backends = n, "health state written for the next process")
            }
            Err(e) => {
                tracing::warn!(file = %self.state_file.display(), error = %e, "cannot write the health state; the next process starts from its own probe")
            }
        }
    }

    /// Hands the listening sockets (and the health state) to the new process; `false` when
    /// they could not be handed over, and this process goes on serving.
    async fn hand_over(&self) -> bool {
        self.write_state();
        let Some(fds) = self.listeners.fds() else {
            tracing::error!("SIGQUIT before the listeners started: nothing to hand over");
            return false;
        };
        let ready = ready_file(&self.upgrade_sock);
        let _ = std::fs::remove_file(&ready);
        let sock = self.upgrade_sock.to_string_lossy().into_owned();
        let sent =
            tokio::task::spawn_blocking(move || fds.lock().send_to_sock(sock.as_str())).await;
        match sent {
            Ok(Ok(_)) => {
                tracing::info!("listening sockets handed to the new process");
                // This process accepts on until the new one does: it picks the sockets up
                // only on its next poll (Pingora's, once a second), and starts after that.
                let started = Instant::now();
                while !ready.exists() && started.elapsed() < READY_WAIT {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
                match ready.exists() {
                    true => tracing::info!(after = ?started.elapsed(), "the new process accepts; this one stops"),
                    false => tracing::warn!("the new process did not say it accepts within {READY_WAIT:?}; this one stops accepting all the same (connections wait in the queue)"),
                }
                let _ = std::fs::remove_file(&ready);
                true
            }
            Ok(Err(e)) => {
                tracing::error!(socket = %self.upgrade_sock.display(), error = %e, "SIGQUIT: cannot hand the listening sockets over (is the new process waiting with --upgrade?); this process goes on serving");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGQUIT: the hand-over failed; this process goes on serving");
                false
            }
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let kinds = [
            SignalKind::hangup(),
            SignalKind::terminate(),
            SignalKind::quit(),
            SignalKind::interrupt(),
            SignalKind::user_defined1(),
        ];
        let mut streams = Vec::new();
        for kind in kinds {
            match signal(kind) {
                Ok(s) => streams.push(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot handle signals; SIGTERM stops at once");
                    std::future::pending::<()>().await;
                }
            }
        }
        let [hup, term, quit, int, usr1] = &mut streams[..] else {
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => match &self.access {
                    Some(access) => access.reopen(),
                    None => tracing::info!("SIGUSR1: no access log to reopen ([log] access)"),
                },
                _ = hup.recv() => {
                    let reloader = self.reloader.clone();
                    tokio::spawn(async move {
                        let _ = reloader.reload("SIGHUP").await;
                    });
                }
                _ = term.recv() => {
                    // A second SIGTERM, or SIGINT, cuts the graceful part short.
                    tokio::select! {
                        () = self.graceful_stop() => {}
                        _ = term.recv() => tracing::warn!("SIGTERM again: stopping at once"),
                        _ = int.recv() => tracing::warn!("SIGINT: stopping at once"),
                    }
                    return self.stop().await;
                }
                _ = quit.recv() => {
                    tracing::info!("SIGQUIT: handing over to the new process");
                    if self.hand_over().await {
                        let grace = self.runtime.load().config.listen.grace_period;
                        tokio::select! {
                            () = drain(&self.lifecycle, &self.listeners, grace) => {}
                            _ = int.recv() => tracing::warn!("SIGINT: stopping at once"),
                        }
                        return self.stop().await;
                    }
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping at once");
                    return self.stop().await;
                }
                why = self.listeners.failure() => {
                    tracing::error!("the listeners could not start ({why}): stopping");
                    return self.stop().await;
                }
            }
        }
    }
}

/// Starts the binary now installed as the next process of an upgrade (`holdfast upgrade`): the
/// same command line with `--upgrade`, in this process's place (its cgroup under systemd, its
/// standard output and error), then hands over to it as on SIGQUIT.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// The binary's path as this process was started with it (a new binary installed there
    /// since is what starts).
    pub exe: PathBuf,
    /// The arguments after the program name.
    pub args: Vec<std::ffi::OsString>,
    pub upgrade_sock: PathBuf,
}

impl Relaunch {
    /// Starts the new process and, once it waits for the sockets, signals this one to hand
    /// them over. Returns the new process's id.
    pub fn start(&self) -> Result<u32, String> {
        // The new process listens on the upgrade socket once it is ready to take the sockets:
        // a file left from an earlier upgrade must not be mistaken for it.
        let _ = std::fs::remove_file(&self.upgrade_sock);
        let mut args = self.args.clone();
        if !args.iter().any(|a| a == "--upgrade") {
            args.push("--upgrade".into());
        }
        let mut child = std::process::Command::new(&self.exe)
            .args(&args)
            // systemd names the process its watchdog expects; the new one becomes that
            // process (it says MAINPID), so it must feed the watchdog whatever the name says.
            .env_remove("WATCHDOG_PID")
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let started = std::time::Instant::now();
        while !self.upgrade_sock.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the new process exited at once ({status}); see its log"
                ));
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the new process did not get ready to take over within 30s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGQUIT)
            .map_err(|e| format!("cannot signal the hand-over: {e}"))?;
        Ok(child.id())
    }
}
