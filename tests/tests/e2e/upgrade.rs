//! A graceful binary upgrade refuses no connection: the new process takes the listening sockets
//! over from the old one (Pingora's hand-over), both accept during the overlap, and the old one
//! exits once its requests are done.

use holdfast_tests::{backend, Gateway};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_refuses_no_connection() {
    let web = backend("web").await;
    let mut gw = Gateway::start(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    ))
    .await;
    let old_pid = gw.pid();

    // Four clients, each opening a new connection for every request, so that accepting is what
    // is tested; they run until told to stop (bounded by the test's own deadline).
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, served, failed, failures, addr) = (
            stop.clone(),
            served.clone(),
            failed.clone(),
            failures.clone(),
            gw.http,
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = async {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                        .await?;
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await?;
                    Ok::<_, std::io::Error>(got)
                };
                match tokio::time::timeout(Duration::from_secs(5), answer).await {
                    Ok(Ok(got)) if got.starts_with(b"HTTP/1.1 200") => {
                        served.fetch_add(1, Ordering::Relaxed)
                    }
                    other => {
                        failures.lock().unwrap().push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = served.load(Ordering::Relaxed);
    gw.upgrade().await;
    let during = served.load(Ordering::Relaxed) - before;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("upgrade: {served} requests on fresh connections, {during} during the hand-over, {failed} failed");
    assert_ne!(gw.pid(), old_pid);
    assert_eq!(
        failed,
        0,
        "connections failed during the upgrade: {:?}",
        failures.lock().unwrap()
    );
    assert!(
        during > 100,
        "traffic flowed during the hand-over: {during}"
    );
}

/// SIGTERM: a request in flight is answered in full, an idle keep-alive connection is closed at
/// once rather than when the process exits, and the process exits within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_closes_idle_connections() {
    // A backend that takes a second to answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        while let Ok((mut b, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match b.read(&mut buf).await {
                        Ok(n) if n > 0 => {}
                        _ => return,
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow";
                    if b.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut gw = Gateway::start(&format!(
        "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{addr}\" }}]\n"
    ))
    .await;

    // An idle keep-alive connection, after one request.
    let mut idle = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = idle.read(&mut got).await.unwrap();
    assert!(got[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A request in flight when the signal comes.
    let mut busy = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let closed = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut got)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection stayed open after SIGTERM: {closed:?}"
    );
    let closed_after = sent.elapsed();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), busy.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the request in flight was not finished");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow"),
        "the request in flight was cut: {answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "a connection answered during shutdown is not kept: {answer:?}"
    );
    assert!(
        gw.wait_exit(Duration::from_secs(10)).await,
        "the process did not exit after the grace period"
    );
    println!("sigterm: idle connection closed {closed_after:?} after the signal");
    backend.abort();
}
