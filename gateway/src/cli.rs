//! The command line.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// holdfast: the origin gateway for sites behind Cloudflare. Backends in ordered tiers, TCP and
/// HTTP health checks, failover of refused connections, a fallback answer when nothing can serve.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve with a config file.
    Run {
        /// The TOML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Proxy worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Take over the listening sockets and health state of a running holdfast instead of
        /// binding them (what `holdfast upgrade` starts the new binary with; the old process
        /// hands over on SIGQUIT). No connection is refused during the hand-over.
        #[arg(long)]
        upgrade: bool,
        /// The Unix socket over which listening sockets are handed to the next process
        /// (default: in the private runtime directory, named after the config file). Its
        /// directory must be writable by this user only.
        #[arg(long)]
        upgrade_sock: Option<PathBuf>,
        /// Where the health state is written for the next process at an upgrade or restart
        /// (default: beside the upgrade socket's default). Its directory must be writable by
        /// this user only.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// The control socket: the admin endpoints on a Unix socket only this user (and root)
        /// can open, where writes need no token (default: beside the upgrade socket's default,
        /// named after the config file).
        #[arg(long)]
        control_sock: Option<PathBuf>,
    },
    /// Reload the config of the running holdfast: prints what
    /// changed, or every problem of the file (as `check` does) with a non-zero exit, in which
    /// case the running config keeps serving.
    Reload {
        #[command(flatten)]
        running: Running,
    },
    /// Replace the running holdfast by the binary now installed, without refusing a
    /// connection: the running process starts it, hands it the listening sockets and the
    /// health state, and drains. Prints the old and new process ids.
    Upgrade {
        #[command(flatten)]
        running: Running,
    },
    /// Act on a backend of the running holdfast: `drain` (no new
    /// requests; those in flight finish), `down` (forced out), `up` (back to what its checks
    /// say, through slow start). Kept across reloads. Taking out the last backend of a pool
    /// that can serve is refused unless --force.
    Backend {
        #[arg(value_parser = ["drain", "down", "up"])]
        action: String,
        /// The pool's name.
        pool: String,
        /// The backend's name (its address when it has none), as `/status` shows it.
        backend: String,
        #[command(flatten)]
        running: Running,
        /// Take out the last backend of its pool that can serve all the same (visitors then get
        /// the fallback answer).
        #[arg(long)]
        force: bool,
    },
    /// What the running holdfast sees: its process, its config (generation and hash), each
    /// pool's serving tier and each backend's state. Exit 0 while it serves (/healthz 200), 1
    /// while it answers with the fallback or is stopping, 2 when it cannot be asked. With
    /// --all, several instances side by side (by their admin listeners): exit 0 when they agree
    /// (the same config, the same view of every backend), 1 when they do not, 2 when one could
    /// not be asked.
    Status {
        /// The config file it serves (its control socket's name, and its `listen.admin`).
        #[arg(short, long, required_unless_present = "all")]
        config: Option<PathBuf>,
        /// Ask the admin listener at this address instead of the control socket.
        #[arg(long, conflicts_with = "all")]
        admin: Option<SocketAddr>,
        /// The control socket, if not the default one for the config file.
        #[arg(long, conflicts_with = "all")]
        control_sock: Option<PathBuf>,
        /// Several instances' admin listeners (ADDR:PORT), side by side.
        #[arg(long, num_args = 1.., value_name = "ADDR")]
        all: Vec<SocketAddr>,
        /// Print nothing: only the exit code (a container's HEALTHCHECK, a script).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Validate a config file and exit: 0 and a summary if it is valid, 1 and every problem
    /// (file, key path, reason) otherwise. The `nginx -t` of holdfast.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Why would Cloudflare show a 52x right now? Runs the 521 troubleshooting guide against
    /// the config and the live machine: the holdfast process and its listeners, the packet
    /// filter (iptables, nftables, ipsets) walked for Cloudflare's ranges, addresses banned by
    /// fail2ban, each backend (connect, TLS, the HTTP check) beside what holdfast says of it,
    /// the certificates, the machine's limits, and the request as Cloudflare sends it. One line
    /// per check (ok, warn, fail), with the error Cloudflare would show and the fix. Read-only:
    /// it changes nothing (run it as root to read the packet filter). Exit 0 when nothing would
    /// cause a 52x, 1 when something would, 2 when it could not run.
    Doctor {
        #[command(flatten)]
        running: Running,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Also send the request as Cloudflare sends it to this address (the public IP that
        /// the site's DNS names), on each listener's port.
        #[arg(long, value_name = "ADDR")]
        from_outside: Option<std::net::IpAddr>,
    },
    /// Run a demo with no config: two built-in backends (a primary and a backup) on loopback
    /// and the gateway in front of them. The primary stops and comes back on a cycle, so
    /// failover and failback can be watched in the answers, `/status` and `/metrics`.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin endpoints listen.
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin: SocketAddr,
        /// How long the primary stays up, then down, in each cycle ("0s" keeps it up).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        cycle: Duration,
    },
}

/// Which running holdfast a command asks, and by which door: its control socket (the default,
/// when it is there), or its admin listener over TCP.
#[derive(Debug, clap::Args)]
pub struct Running {
    /// The config file it serves (its `listen.admin`, and its control socket's name).
    #[arg(short, long)]
    pub config: PathBuf,
    /// Ask the admin listener at this address (over TCP; a write needs the token in
    /// HOLDFAST_ADMIN_TOKEN) instead of the control socket.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The control socket, if not the default one for the config file.
    #[arg(long)]
    pub control_sock: Option<PathBuf>,
}
