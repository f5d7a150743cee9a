//! `holdfast demo`: the gateway in front of two built-in backends, with the primary stopping
//! and coming back on a cycle, so failover and failback can be watched without any setup.

mod backend;

pub use backend::DemoBackend;

use crate::server::{self, ProcessOptions, StartError};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the demo backends: {0}")]
    Backends(#[from] std::io::Error),
    #[error("the demo config is invalid (a bug): {0}")]
    Config(#[from] holdfast_config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The demo's config: a primary and a backup tier, HTTP checks every second.
pub fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    primary: SocketAddr,
    backup: SocketAddr,
) -> String {
    format!(
        r#"
[listen]
http = ["{listen}"]
admin = "{admin}"

[fallback]
retry_after = "5s"

[pools.demo.health.tcp]
enabled = false

[pools.demo.health.http]
path = "/health"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2

[[pools.demo.tiers]]
name = "primary"
backends = [{{ address = "{primary}", name = "primary" }}]

[[pools.demo.tiers]]
name = "backup"
backends = [{{ address = "{backup}", name = "backup" }}]
"#
    )
}

/// Runs the demo until interrupted.
pub fn run(listen: SocketAddr, admin: SocketAddr, cycle: Duration) -> Result<(), DemoError> {
    let backends = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let primary = backends.block_on(DemoBackend::start("primary", loopback))?;
    let backup = backends.block_on(DemoBackend::start("backup", loopback))?;
    let text = config_text(listen, admin, primary.addr(), backup.addr());
    holdfast_config::from_toml_str(&text, Path::new("<demo>"))?;
    // A real file, so that the demo reloads as a real config does (edit it, or SIGHUP), in
    // the private runtime directory (not /tmp, where another user could have put a link).
    let dir = crate::rundir::default_dir();
    crate::rundir::ensure_private(&dir).map_err(StartError::from)?;
    let path = dir.join(format!("demo-{}.toml", std::process::id()));
    std::fs::write(&path, &text)?;

    println!(
        "\nholdfast demo\n\
         \n  gateway   http://{listen}/          (answers 'hello from primary' or 'hello from backup')\
         \n  status    http://{admin}/status\
         \n  metrics   http://{admin}/metrics\
         \n  health    http://{admin}/healthz\
         \n  config    {}   (edit it: holdfast reloads it)\
         \n\n  backends  primary on {} (tier 1), backup on {} (tier 2)\
         \n\n  Try:  while sleep 0.5; do curl -s http://{listen}/; done\n",
        path.display(),
        primary.addr(),
        backup.addr()
    );
    if cycle.is_zero() {
        println!("  The primary stays up (--cycle 0s). Press Ctrl-C to stop.\n");
    } else {
        println!(
            "  Every {} the primary stops (visitors are served by the backup, without errors),\n  then comes back (traffic returns once it passes 2 health checks). Ctrl-C stops.\n",
            humantime::format_duration(cycle)
        );
        backends.spawn(async move {
            loop {
                tokio::time::sleep(cycle).await;
                primary.stop();
                println!("[demo] primary stopped: its connections are now refused");
                tokio::time::sleep(cycle).await;
                match primary.restart().await {
                    Ok(()) => println!("[demo] primary started again"),
                    Err(e) => println!("[demo] primary could not start again: {e}"),
                }
            }
        });
    }
    // The backends' runtime must outlive the server, which never returns.
    let _keep = (backends, backup);
    server::run(
        path,
        ProcessOptions {
            threads: 2,
            ..ProcessOptions::default()
        },
    )?;
    Ok(())
}
