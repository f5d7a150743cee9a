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
