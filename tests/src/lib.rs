//! Support for the end-to-end tests: the real `holdfast` binary started as a process with a
//! generated config, real backends ([`holdfast::demo::DemoBackend`], [`raw`], a scripted one)
//! on loopback, a load generator that records what every visitor saw, and polling helpers with
//! deadlines. For the fault matrix: network namespaces ([`netns`]), a backend process whose
//! faults a test switches ([`fault`], `src/bin/fault-backend.rs`), and nginx and HAProxy in
//! holdfast's place for comparison ([`other`]).
#![allow(clippy::unwrap_used)]

pub mod fault;
pub mod gateway;
pub mod h2;
pub mod load;
pub mod netns;
pub mod other;
pub mod ports;
pub mod raw;
pub mod tls;

pub use gateway::Gateway;
pub use holdfast::demo::DemoBackend;
pub use load::{Load, LoadReport};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether `tool` can run (`tool --version`); if not, says why the test skips, with the
/// package to install, or fails under `CI` (whose `tests/run.sh` installs it as root).
pub fn have(tool: &str, package: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        let why = format!("{tool} is missing: apt-get install {package}");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

/// A backend on a free loopback port.
pub async fn backend(name: &str) -> DemoBackend {
    DemoBackend::start(name, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start a backend")
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `url` with GET until it answers `status`; panics with `what` after `limit`.
pub async fn wait_for_status(url: &str, status: u16, limit: Duration, what: &str) -> Duration {
    wait_until(limit, what, || async move {
        matches!(reqwest::get(url).await, Ok(r) if r.status().as_u16() == status)
    })
    .await
}

/// A keep-alive HTTP client that never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A backend that reads each request and then, as `wait` says for that request head, answers
/// 200 (with `X-Backend: name`) after a delay, or never (`None`: it holds the connection and
/// answers nothing more).
pub async fn scripted_backend<F>(name: &'static str, wait: F) -> SocketAddr
where
    F: Fn(&[u8]) -> Option<Duration> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let wait = Arc::new(wait);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let wait = wait.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let Some(delay) = wait(&head) else {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: 2\r\n\r\nok"
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A listener that never accepts (backlog 1): once [`fill_accept_queue`] has filled its queue,
/// the kernel drops further SYNs to it, as a firewall dropping packets would.
pub fn stuck_listener() -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(1).unwrap()
}

/// Fills the accept queue of a listener that never accepts; keep the connections to keep it
/// full.
pub async fn fill_accept_queue(addr: SocketAddr) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..8 {
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            held.push(s);
        }
    }
    held
}

/// A pool `app` of one backend, its TCP check out of the way (every 60 s); `pool_keys` go under
/// `[pools.app]` (tables of the pool may follow them).
pub fn one_backend(backend: SocketAddr, pool_keys: &str) -> String {
    format!(
        "[pools.app]\n{pool_keys}\n[pools.app.health.tcp]\ninterval = \"60s\"\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{backend}\" }}]\n"
    )
}

/// A pool `app` of a primary tier and a backup tier, one named backend each, its TCP check out
/// of the way (every 60 s); `pool_keys` go under `[pools.app]` (tables of the pool may follow
/// them, e.g. `[pools.app.hedge]`).
pub fn primary_and_backup(
    (primary_name, primary): (&str, SocketAddr),
    (backup_name, backup): (&str, SocketAddr),
    pool_keys: &str,
) -> String {
    format!(
        r#"
[pools.app]
{pool_keys}
[pools.app.health.tcp]
interval = "60s"
[[pools.app.tiers]]
backends = [{{ address = "{primary}", name = "{primary_name}" }}]
[[pools.app.tiers]]
backends = [{{ address = "{backup}", name = "{backup_name}" }}]
"#
    )
}

/// A pool `app` of `a` and `b` (named as they are), checked every 300 ms, out after one failed
/// check and back only after 100 passing ones (30 s); `extra` is more of the tier's backends
/// (`, { ... }`).
pub fn pair_slow_to_rise(a: &DemoBackend, b: &DemoBackend, extra: &str) -> String {
    format!(
        "[pools.app.health.tcp]\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 100\nfall = 1\n\
         [[pools.app.tiers]]\nbackends = [{{ name = \"{}\", address = \"{}\" }}, {{ name = \"{}\", address = \"{}\" }}{extra}]\n",
        a.name(),
        a.addr(),
        b.name(),
        b.addr()
    )
}

/// Stops `backend` until `gw` has it down, then starts it again: it passes checks once more but
/// needs `rise` of them to serve (a process that forgot what it knew would probe it up at once).
pub async fn known_down(gw: &Gateway, backend: &DemoBackend) {
    backend.stop();
    let sample = format!(
        "holdfast_backend_up{{backend=\"{}\",pool=\"app\",tier=\"primary\"}}",
        backend.name()
    );
    wait_until(Duration::from_secs(5), "the backend is down", || async {
        gw.metric(&sample).await == 0.0
    })
    .await;
    backend.restart().await.expect("restart the backend");
}

/// Reads one answer with a `Content-Length` body (or none) from a kept-alive connection, and
/// leaves the connection open; its head, lowercased. Panics when the connection closes first.
pub async fn read_answer(s: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the whole answer");
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if answer.len() >= end + 4 + length {
            return text[..end].to_string();
        }
    }
}
