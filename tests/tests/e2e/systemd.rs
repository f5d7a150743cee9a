//! systemd's notify protocol, against a datagram socket this test creates as `NOTIFY_SOCKET`:
//! READY once serving (with MAINPID), RELOADING with MONOTONIC_USEC then READY around a reload,
//! WATCHDOG while the workers answer, STOPPING on SIGTERM.

use holdfast_tests::{backend, Gateway};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Messages received within `limit` until one contains `what`; panics naming what came.
fn until(socket: &UnixDatagram, what: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.contains(what);
            got.push(message);
            if done {
                return got;
            }
        }
    }
    panic!("no {what} within {limit:?}; got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notify_protocol_follows_the_process() {
    let web = backend("web").await;
    let dir = tempdir();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let pools = format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    );
    let notify = path.to_str().unwrap();
    let gw = Gateway::start_with_env(
        &pools,
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "400000")],
    )
    .await;

    let ready = until(&socket, "READY=1", Duration::from_secs(5));
    let ready = ready.last().unwrap();
    assert!(ready.contains(&format!("MAINPID={}", gw.pid())), "{ready}");
    // The watchdog is fed every half WATCHDOG_USEC while the workers answer.
    until(&socket, "WATCHDOG=1", Duration::from_secs(2));

    gw.signal("HUP");
    let reload = until(&socket, "RELOADING=1", Duration::from_secs(5));
    let reloading = reload.last().unwrap();
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(
        usec <= now && now - usec < 10_000_000,
        "MONOTONIC_USEC is the monotonic clock: {usec} vs {now}"
    );
    until(&socket, "READY=1", Duration::from_secs(5));

    gw.signal("TERM");
    until(&socket, "STOPPING=1", Duration::from_secs(5));
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
