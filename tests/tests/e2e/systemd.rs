//! systemd's notify protocol, against a datagram socket this test creates as `NOTIFY_SOCKET`:
//! READY once serving (with MAINPID), RELOADING with MONOTONIC_USEC then READY around a reload,
//! WATCHDOG while the workers answer, STOPPING on SIGTERM; after `holdfast upgrade`, READY with
//! the new MAINPID and WATCHDOG from the new process (the sender's pid read from its
//! credentials, as systemd does).

use holdfast_tests::{backend, Gateway};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// One datagram and the id of the process that sent it (`SO_PASSCRED`).
fn receive(socket: &UnixDatagram) -> Option<(String, i32)> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .ok()?;
    let pid = msg.cmsgs().ok()?.find_map(|c| match c {
        nix::sys::socket::ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
        _ => None,
    })?;
    let n = msg.bytes;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), pid))
}

/// Messages received within `limit` until one contains `what` (from process `from`, if
/// given); panics naming what came. Returns the last one.
fn until_from(socket: &UnixDatagram, what: &str, from: Option<u32>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        if let Some((message, pid)) = receive(socket) {
            let done = message.contains(what) && from.is_none_or(|p| p as i32 == pid);
            got.push((message.clone(), pid));
            if done {
                return message;
            }
        }
    }
    panic!("no {what} from {from:?} within {limit:?}; got {got:?}");
}

fn until(socket: &UnixDatagram, what: &str, limit: Duration) -> String {
    until_from(socket, what, None, limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notify_protocol_follows_the_process() {
    let web = backend("web").await;
    let dir = tempdir();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let pools = format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    );
    let notify = path.to_str().unwrap();
    let mut gw = Gateway::start_with_env(
        &pools,
        &[
            ("NOTIFY_SOCKET", notify),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "self"),
        ],
    )
    .await;

    let ready = until(&socket, "READY=1", Duration::from_secs(5));
    assert!(ready.contains(&format!("MAINPID={}", gw.pid())), "{ready}");
    // The watchdog is fed every half WATCHDOG_USEC while the workers answer.
    until_from(
        &socket,
        "WATCHDOG=1",
        Some(gw.pid()),
        Duration::from_secs(2),
    );

    gw.signal("HUP");
    let reloading = until(&socket, "RELOADING=1", Duration::from_secs(5));
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

    // An upgrade: the new process says it is the main one, and feeds the watchdog itself
    // (systemd named the old one in WATCHDOG_PID).
    let old = gw.pid();
    gw.upgrade_command().await;
    let new = gw.pid();
    assert_ne!(new, old);
    let ready = until_from(&socket, "READY=1", Some(new), Duration::from_secs(5));
    assert!(ready.contains(&format!("MAINPID={new}")), "{ready}");
    until_from(&socket, "WATCHDOG=1", Some(new), Duration::from_secs(2));

    gw.signal("TERM");
    until_from(&socket, "STOPPING=1", Some(new), Duration::from_secs(5));
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
