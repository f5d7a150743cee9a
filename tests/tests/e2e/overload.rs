//! Overload never turns into refusal: a backend at its `max_in_flight` passes requests on to the
//! next backend with room, or they get the fallback (503, Retry-After) at once; a flood of idle
//! and slow connections neither makes the listener refuse nor starves a new visitor.

use holdfast_tests::{backend, client, scripted_backend, wait_until, Gateway};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A backend answering each request (health checks included) `delay` after its head, with
/// `X-Backend: name`.
async fn slow_backend(name: &'static str, delay: Duration) -> SocketAddr {
    scripted_backend(name, move |_| Some(delay)).await
}

/// Sends `n` GETs at once; each answer's status, `X-Backend` (or `Retry-After` for a 503) and
/// time taken.
async fn at_once(url: String, n: usize) -> Vec<(u16, String, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let r = client().get(url).send().await.unwrap();
                let status = r.status().as_u16();
                let header = if status == 503 {
                    "retry-after"
                } else {
                    "x-backend"
                };
                let value = r
                    .headers()
                    .get(header)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let _ = r.bytes().await;
                (status, value, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_its_in_flight_cap_passes_requests_on_or_they_get_a_fast_503() {
    let primary = slow_backend("primary", Duration::from_millis(600)).await;
    let backup = slow_backend("backup", Duration::from_millis(600)).await;

    // The pool: the primary with a cap of 2, and a backup tier when `backup` is given.
    let pools = |backup: Option<SocketAddr>| {
        let backup = backup.map_or(String::new(), |b| {
            format!(
                "[[pools.app.tiers]]\nbackends = [{{ address = \"{b}\", name = \"backup\" }}]\n"
            )
        });
        format!(
            "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{primary}\", name = \"primary\", max_in_flight = 2 }}]\n{backup}"
        )
    };

    // With a backup: two requests on the primary at most, the rest spill over.
    let gw = Gateway::start(&pools(Some(backup))).await;
    let answers = at_once(gw.url("/"), 6).await;
    let by = |name: &str| answers.iter().filter(|a| a.0 == 200 && a.1 == name).count();
    assert_eq!((by("primary"), by("backup")), (2, 4), "{answers:?}");
    drop(gw);

    // Alone: the two it may have are served, the others get the fallback at once.
    let gw = Gateway::start(&pools(None)).await;
    let answers = at_once(gw.url("/"), 6).await;
    let served = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!((served, shed.len()), (2, 4), "{answers:?}");
    for (_, retry_after, took) in &shed {
        assert!(!retry_after.is_empty(), "503 without Retry-After");
        assert!(
            *took < Duration::from_millis(600),
            "shed at once, not after waiting for the backend: {took:?}"
        );
    }
    let busy = gw
        .metric(r#"holdfast_fallback_responses_total{pool="app",reason="busy"}"#)
        .await;
    assert_eq!(busy, 4.0);
    // Once the two are through, there is room again.
    let answers = at_once(gw.url("/"), 2).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
}

/// A listener's own caps: past its `max_in_flight` requests at once a request gets the fallback
/// at once; past its `max_connections` a new connection is shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_its_own_caps_sheds_with_a_fast_503() {
    let web = slow_backend("web", Duration::from_millis(600)).await;
    let gw = Gateway::start_with_listen(
        "[listen.limits.\"{http}\"]\nmax_in_flight = 2\nmax_connections = 8",
        &format!(
            "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{web}\" }}]\n"
        ),
    )
    .await;
    let answers = at_once(gw.url("/"), 5).await;
    let served = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!((served, shed.len()), (2, 3), "{answers:?}");
    assert!(shed
        .iter()
        .all(|a| !a.1.is_empty() && a.2 < Duration::from_millis(600)));
    assert_eq!(
        gw.metric(r#"holdfast_fallback_responses_total{pool="app",reason="busy"}"#)
            .await,
        3.0
    );

    // Eight connections held open: the ninth is answered 503 and closed. (The clients above
    // have closed theirs: the gateway has seen them go first.)
    let open = "holdfast_visitor_connections";
    wait_until(
        Duration::from_secs(5),
        "the earlier connections closed",
        || async { gw.metric(open).await == 0.0 },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(gw.http).await.unwrap());
    }
    // Two worker threads accept: both have counted what they took before the ninth arrives (one
    // could otherwise count the ninth before the other has counted the eighth).
    wait_until(
        Duration::from_secs(5),
        "eight connections counted",
        || async { gw.metric(open).await == 8.0 },
    )
    .await;
    let mut ninth = TcpStream::connect(gw.http).await.unwrap();
    ninth
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), ninth.read_to_end(&mut got)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(gw.metric("holdfast_shed_connections_total").await, 1.0);
    drop(held);
}

/// Thousands of connections at once, idle ones and ones sending a head a byte a second: every
/// one is accepted, the slow heads get 408 after `header_timeout`, and a new visitor is served
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_neither_refuses_nor_starves_a_new_visitor() {
    const IDLE: usize = 2000;
    const SLOW: usize = 500;
    // This test process holds every connection's other end.
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    rlimit::Resource::NOFILE.set(hard, hard).unwrap();
    let web = backend("web").await;
    let gw = Gateway::start_with_listen(
        "header_timeout = \"3s\"",
        &format!(
            "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
            web.addr()
        ),
    )
    .await;

    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let s = TcpStream::connect(gw.http)
            .await
            .unwrap_or_else(|e| panic!("idle connection {i} refused: {e}"));
        idle.push(s);
    }
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let mut s = TcpStream::connect(gw.http)
            .await
            .unwrap_or_else(|e| panic!("slow connection {i} refused: {e}"));
        slow.push(tokio::spawn(async move {
            // One byte a second; the answer (408) arrives while it is still sending.
            for b in b"GET / HTTP/1.1\r\nHost: flood\r\n" {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
            got
        }));
    }

    // A new visitor, meanwhile, on fresh connections.
    let mut served = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let r = reqwest::Client::new()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served >= 20,
        "a new visitor was served {served} times in 4 s"
    );

    let mut cut = 0;
    for t in slow {
        let got = t.await.unwrap();
        if got.starts_with(b"HTTP/1.1 408") {
            cut += 1;
        }
    }
    assert_eq!(cut, SLOW, "every slow head got 408");
    let r = client().get(gw.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(idle);
}
