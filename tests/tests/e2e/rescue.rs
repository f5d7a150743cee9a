//! A backend that hangs (accepts and reads, never answers): requests already waiting on it are
//! rescued when it is taken out, and sent to another backend; the visitor sees a slower 200,
//! never an error.

use holdfast_tests::raw::{Answer, RawBackend};
use holdfast_tests::{backend, client, primary_and_backup, scripted_backend, Gateway};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A primary that answers every request, health checks included, until the returned flag is
/// set, then holds every request it gets; behind a gateway with an HTTP check every 500 ms
/// (timeout 300 ms, `fall = 1`), `read_timeout` 30 s and `pool_keys`, `backup` as its backup;
/// answers are not hedged.
async fn hanging_primary(backup: SocketAddr, pool_keys: &str) -> (Arc<AtomicBool>, Gateway) {
    let hang = Arc::new(AtomicBool::new(false));
    let hung = hang.clone();
    let primary = scripted_backend("primary", move |_| {
        (!hung.load(Ordering::SeqCst)).then_some(Duration::ZERO)
    })
    .await;
    let gw = Gateway::start(&format!(
        r#"
[pools.app]
read_timeout = "30s"
{pool_keys}
# Rescue on its own: a hedge would answer these requests first (e2e/hedge.rs).
[pools.app.hedge]
response = false
[pools.app.health.http]
path = "/health"
interval = "500ms"
timeout = "300ms"
fall = 1
[[pools.app.tiers]]
backends = [{{ address = "{primary}", name = "primary" }}]
[[pools.app.tiers]]
backends = [{{ address = "{backup}", name = "backup" }}]
"#
    ))
    .await;
    (hang, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_backend_that_hangs_are_rescued_when_it_is_taken_out() {
    let backup = backend("backup").await;
    let (hang, gw) = hanging_primary(backup.addr(), "").await;
    let c = client();
    let r = c.get(gw.url("/before")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "primary");

    hang.store(true, Ordering::SeqCst);
    // Requests sent now wait on the hung primary until its check fails and takes it out.
    let started = Instant::now();
    let mut waiting = Vec::new();
    for i in 0..4 {
        let c = c.clone();
        let url = gw.url(&format!("/during/{i}"));
        waiting.push(tokio::spawn(async move { c.get(url).send().await }));
    }
    for w in waiting {
        let r = w.await.unwrap().expect("a rescued request is answered");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-backend"], "backup");
    }
    let stall = started.elapsed();
    println!("rescue: 4 requests waiting on a hung primary answered by the backup after {stall:?}");
    assert!(
        stall < Duration::from_secs(5),
        "rescued only after {stall:?} (read_timeout is 30 s)"
    );
    assert!(
        gw.metric(r#"holdfast_rescued_requests_total{pool="app"}"#)
            .await
            >= 1.0
    );
}

/// `response_timeout` (off by default): an idempotent request whose answer has not begun in
/// time goes to the next backend, and the silent backend is reported as timed out. Without it,
/// a slow but healthy endpoint keeps its requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeout_sends_a_request_on_only_when_set() {
    // Its checks answered at once, every request after 1.5 s.
    let slow = scripted_backend("slow", |head| {
        Some(match head.starts_with(b"GET /health") {
            true => Duration::ZERO,
            false => Duration::from_millis(1500),
        })
    })
    .await;
    let backup = backend("backup").await;
    let pools = |extra: &str| {
        let keys = format!("{extra}\n[pools.app.hedge]\nresponse = false");
        primary_and_backup(("slow", slow), ("backup", backup.addr()), &keys)
    };
    let c = client();

    // Off (the default): the slow primary answers, after its 1.5 s.
    let gw = Gateway::start(&pools("")).await;
    let started = Instant::now();
    let r = c.get(gw.url("/report")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "slow");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    drop(gw);

    // Set: the request leaves the silent primary after 300 ms.
    let gw = Gateway::start(&pools("response_timeout = \"300ms\"")).await;
    // A POST is not cut short: it may not be sent twice.
    let started = Instant::now();
    let r = c.post(gw.url("/order")).body("x").send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "slow");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let started = Instant::now();
    let r = c.get(gw.url("/report")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "backup");
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    let timed_out =
        r#"holdfast_upstream_no_answer_total{backend="slow",kind="timeout",pool="app"}"#;
    assert_eq!(gw.metric(timed_out).await, 1.0);
}

/// A PUT that the pool may send again (`retry_methods`), its small body read whole before it
/// went out, is rescued like a GET when its backend hangs: the backup gets the same request,
/// body and all, and the visitor a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_listed_in_retry_methods_is_rescued_with_its_body() {
    let backup = RawBackend::start(|_| {
        Answer::keep(b"HTTP/1.1 200 OK\r\nX-Backend: backup\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let (hang, gw) = hanging_primary(backup.addr, r#"retry_methods = ["GET", "PUT"]"#).await;

    hang.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let r = client()
        .put(gw.url("/doc"))
        .body("version 2")
        .send()
        .await
        .expect("a rescued PUT is answered");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "backup");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "rescued only after {:?} (read_timeout is 30 s)",
        started.elapsed()
    );
    let puts: Vec<String> = backup
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .filter(|r| r.starts_with("PUT "))
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(puts[0].ends_with("\r\n\r\nversion 2"), "{}", puts[0]);
}
