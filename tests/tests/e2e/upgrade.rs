//! A graceful binary upgrade refuses no connection: the new process takes the listening sockets
//! over from the old one (Pingora's hand-over), both accept during the overlap, and the old one
//! exits once its requests are done.

use holdfast_tests::{backend, wait_until, Gateway, Load};
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
    // Traffic counted in requests: 100 before the upgrade, 100 more by the new process.
    let served_more = |n: usize| {
        let (served, target) = (served.clone(), served.load(Ordering::Relaxed) + n);
        wait_until(
            Duration::from_secs(10),
            "100 more requests served",
            move || {
                let done = served.load(Ordering::Relaxed) >= target;
                async move { done }
            },
        )
    };
    served_more(100).await;
    let before = served.load(Ordering::Relaxed);
    gw.upgrade().await;
    let during = served.load(Ordering::Relaxed) - before;
    served_more(100).await;
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

/// Test 6, SIGTERM under load: `/healthz` turns 503 at once while traffic is still served for
/// the shutdown delay; then the listeners close, the request in flight is answered in full
/// (with `Connection: close`), and the process exits once nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_healthz_first_then_finishes_requests_in_flight() {
    // A backend that takes two seconds to answer /slow.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        while let Ok((mut b, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match b.read(&mut buf).await {
                        Ok(n) if n > 0 => n,
                        _ => return,
                    };
                    if buf[..n].starts_with(b"GET /slow") {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow";
                    if b.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut gw = Gateway::start_with_listen(
        "shutdown_delay = \"1s\"\ngrace_period = \"10s\"",
        &format!(
            "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{addr}\" }}]\n"
        ),
    )
    .await;
    let client = holdfast_tests::client();
    assert_eq!(
        client
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // An idle keep-alive connection, after one request.
    let mut idle = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = idle.read(&mut got).await.unwrap();
    assert!(got[..n].starts_with(b"HTTP/1.1 200"));

    // A request in flight when the signal comes.
    let mut busy = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "the request in flight", || async {
        gw.metric("holdfast_requests_in_flight").await == 1.0
    })
    .await;
    let sent = std::time::Instant::now();
    gw.signal("TERM");

    // First /healthz says 503 (as soon as the signal is handled), while visitors are still
    // served, on new connections too.
    wait_until(Duration::from_millis(500), "/healthz turns 503", || async {
        let health = client.get(gw.admin_url("/healthz")).send().await.unwrap();
        health.status() == 503
    })
    .await;
    let r = client.get(gw.url("/during-delay")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "traffic is served during the shutdown delay"
    );
    // After the delay the listeners close: a new connection is refused then, long before the
    // request in flight is done and the process exits (not left waiting in a queue until then).
    wait_until(
        Duration::from_millis(1500),
        "the listener closes after the delay",
        || async { tokio::net::TcpStream::connect(gw.http).await.is_err() },
    )
    .await;
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "closed before the delay: {:?}",
        sent.elapsed()
    );

    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut answer)).await;
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
    // The idle connection is closed once nothing is in flight, and the process exits.
    let closed = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut got)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection stayed open: {closed:?}"
    );
    assert!(
        gw.wait_exit(Duration::from_secs(5)).await,
        "the process did not exit"
    );
    println!("sigterm: exited {:?} after the signal", sent.elapsed());
    backend.abort();
}

/// Test 5: three upgrades by `holdfast upgrade` under load from 32 keep-alive clients and
/// visitors on fresh connections: no request fails, no connection is refused, and a backend
/// the old process knew was down gets no visitor request from the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_under_keepalive_load_fail_nothing_and_keep_health() {
    let (a, down) = (backend("a").await, backend("down").await);
    let pools = holdfast_tests::pair_slow_to_rise(&a, &down, "");
    let mut gw = Gateway::start(&pools).await;
    // `down` goes away and comes back: it passes checks again but needs 100 of them (30 s)
    // to serve; a new process that forgot would probe it up at once.
    holdfast_tests::known_down(&gw, &down).await;
    let served_down = down.served();

    let load = Load::start(gw.url("/"), 32, Duration::from_secs(60)).with_arrivals(
        gw.url("/"),
        Duration::from_millis(5),
        Duration::from_secs(60),
    );
    load.more(200).await;
    let mut pids = vec![gw.pid()];
    for _ in 0..3 {
        let out = gw.upgrade_command().await;
        assert!(String::from_utf8_lossy(&out.stdout).contains("upgraded"));
        pids.push(gw.pid());
        load.more(200).await;
    }
    let report = load.finish().await;
    println!(
        "three upgrades under load (32 keep-alive clients + fresh connections): {} requests, {} failed, longest {:?}, pids {pids:?}",
        report.sent(),
        report.failures().len(),
        report.longest()
    );
    report.assert_none_failed();
    assert_eq!(
        down.served(),
        served_down,
        "the backend known down got no visitor request"
    );
    let doc: serde_json::Value = serde_json::from_str(&gw.status().await).unwrap();
    assert_eq!(
        doc["pools"][0]["tiers"][0]["backends"][1]["status"], "down",
        "{doc}"
    );
}

/// Reloads and upgrades together: a listener a reload added is handed over at the upgrade and
/// serves in the new process; a reload there removes it, and the rest (admin included) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_by_reload_is_handed_over_at_an_upgrade() {
    let web = backend("web").await;
    let pools = format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    );
    let mut gw = Gateway::start(&pools).await;
    let added = holdfast_tests::ports::free_loopback();
    let (http, admin) = (gw.http, gw.admin);
    let listen =
        |extra: &str| format!("[listen]\nhttp = [\"{http}\"{extra}]\nadmin = \"{admin}\"\n");
    gw.rewrite(Some(&listen(&format!(", \"{added}\""))), &pools);
    gw.reload();
    let client = holdfast_tests::client();
    assert_eq!(
        client
            .get(format!("http://{added}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let load = Load::start(format!("http://{added}/"), 4, Duration::from_secs(30));
    let old = gw.pid();
    gw.upgrade_command().await;
    assert_ne!(gw.pid(), old);
    load.more(100).await;
    let report = load.finish().await;
    report.assert_none_failed();

    gw.rewrite(Some(&listen("")), &pools);
    gw.reload();
    wait_until(
        Duration::from_secs(2),
        "the removed listener refuses",
        || async { tokio::net::TcpStream::connect(added).await.is_err() },
    )
    .await;
    assert_eq!(client.get(gw.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(
        client
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A second SIGTERM cuts a long shutdown delay short (an operator who means it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once() {
    let web = backend("web").await;
    let mut gw = Gateway::start_with_listen(
        "shutdown_delay = \"60s\"",
        &format!(
            "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
            web.addr()
        ),
    )
    .await;
    let client = holdfast_tests::client();
    gw.signal("TERM");
    wait_until(Duration::from_secs(2), "/healthz turns 503", || async {
        client
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            == 503
    })
    .await;
    assert!(
        !gw.wait_exit(Duration::from_millis(300)).await,
        "still in its delay"
    );
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(3)).await,
        "the second SIGTERM stops at once"
    );
}

/// A new process of an upgrade that cannot listen on an address of its config (neither handed
/// over nor free) stops in order, with an error and exit code 1, instead of exiting from
/// inside a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_cannot_listen_stops_with_an_error() {
    let web = holdfast_tests::backend("web").await;
    let mut gw = Gateway::start(&holdfast_tests::one_backend(web.addr(), "")).await;
    // An address taken by someone else, added to the config for the next process.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let listen = format!(
        "[listen]\nhttp = [\"{}\", \"{busy}\"]\nadmin = \"{}\"\n",
        gw.http, gw.admin
    );
    gw.rewrite(Some(&listen), &holdfast_tests::one_backend(web.addr(), ""));
    let (status, log) = gw.failed_upgrade().await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!((status.code(), status.signal()), (Some(1), None), "{log}");
    assert!(log.contains(&format!("cannot listen on {busy}")), "{log}");
    drop(taken);
}
