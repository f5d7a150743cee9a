//! systemd's notify protocol (`sd_notify`): READY, RELOADING, STOPPING, WATCHDOG and MAINPID,
//! each one datagram to the socket in `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket). Without that variable (not run by systemd) nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `message` to systemd, if it is listening; whether it was sent.
pub fn send(message: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(message.as_bytes(), &addr)
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, socket = %path, "cannot notify systemd");
            false
        }
    }
}

/// Serving: READY, with this process as the main one (after an upgrade, the new process takes
/// over from the old; the unit needs `NotifyAccess=all` for that).
pub fn ready() {
    send(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving",
        std::process::id()
    ));
}

/// A reload starts (systemd waits for the next READY).
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"
    ));
}

/// The process is stopping.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}

/// How often systemd wants to hear that the process is alive (`WatchdogSec`), if it does.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    (usec > 0 && for_us).then(|| Duration::from_micros(usec))
}

/// The process is alive.
pub fn watchdog() {
    send("WATCHDOG=1");
}
