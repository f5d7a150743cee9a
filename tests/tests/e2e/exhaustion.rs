//! The gateway's own exhaustion is never a backend's failure: out of descriptors (its open-file
//! limit, or the budget it keeps for backend connections), a request gets the fallback (503,
//! Retry-After), no backend is reported or taken out, and service comes back with the load gone.

use holdfast_tests::gateway::NOFILE;
use holdfast_tests::h2 as h2c;
use holdfast_tests::{client, scripted_backend, Gateway};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A primary and a backup tier, each backend answering 300 ms after each request head, with
/// TCP checks every 300 ms and a backend out after one failed request (`passive_fall = 1`).
fn pool(primary: SocketAddr, backup: SocketAddr) -> String {
    format!(
        r#"
[pools.app.health]
passive_fall = 1
[pools.app.health.tcp]
interval = "300ms"
timeout = "250ms"
[[pools.app.tiers]]
backends = [{{ address = "{primary}", name = "primary" }}]
[[pools.app.tiers]]
backends = [{{ address = "{backup}", name = "backup" }}]
"#
    )
}

async fn backends() -> (SocketAddr, SocketAddr) {
    let delay = Some(Duration::from_millis(300));
    (
        scripted_backend("primary", move |_| delay).await,
        scripted_backend("backup", move |_| delay).await,
    )
}

/// That no backend was blamed: both up, none ever taken down, no failure counted against one,
/// and the gateway's own trouble counted instead.
async fn nobody_blamed(gw: &Gateway) {
    let metrics = gw.metrics().await;
    let up = holdfast_tests::gateway::sum_of(&metrics, "holdfast_backend_up{");
    assert_eq!(up, 2.0, "both backends up");
    // A series that may be absent: no transition to down was ever counted.
    let downs: Vec<_> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("holdfast_backend_transitions_total{") && l.contains("to=\"down\"")
        })
        .collect();
    assert!(downs.is_empty(), "a backend was taken down: {downs:?}");
    let blamed =
        holdfast_tests::gateway::sum_of(&metrics, "holdfast_upstream_connect_failures_total{");
    assert_eq!(blamed, 0.0, "no failure counted against a backend");
    let unanswered =
        holdfast_tests::gateway::sum_of(&metrics, "holdfast_upstream_no_answer_total{");
    assert_eq!(
        unanswered, 0.0,
        "no request counted as unanswered by a backend"
    );
    let local = holdfast_tests::gateway::sample_value(
        &metrics,
        r#"holdfast_local_errors_total{kind="descriptors"}"#,
    );
    assert!(
        local >= 1.0,
        "the gateway's own trouble is counted: {local}"
    );
}

/// After the load: a plain request is served by the primary.
async fn served_again(gw: &Gateway) {
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "primary");
}

/// The issue's case: an open-file limit of 256, 4 h2 connections x 120 streams against
/// backends that answer in 300 ms. Each stream needs a backend connection, far more than the
/// limit allows: the streams past the descriptor budget get 503 at once, every other one 200,
/// none is reset, and both backends stay up (before, every stream got a 5xx and both backends
/// were taken out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_past_the_descriptor_budget_get_503_and_no_backend_is_blamed() {
    let (primary, backup) = backends().await;
    let gw = Gateway::start_with_https_and_env(&pool(primary, backup), &[(NOFILE, "256")]).await;
    let https = gw.https.unwrap();
    let mut streams = Vec::new();
    let mut conns = Vec::new();
    for c in 0..4 {
        let (send, conn) = h2c::connect(https).await;
        conns.push(conn);
        for i in 0..120 {
            let mut send = send.clone();
            streams.push(tokio::spawn(async move {
                h2c::send(&mut send, h2c::get(&format!("/c{c}/s{i}")), b"").await
            }));
        }
    }
    let (mut ok, mut shed) = (0, 0);
    for s in streams {
        let answer = s.await.unwrap().expect("every stream answered, none reset");
        match answer.status {
            200 => ok += 1,
            503 => {
                assert!(
                    answer.header("retry-after").is_some(),
                    "503 with Retry-After"
                );
                shed += 1;
            }
            other => panic!("status {other}: only 200 or the fallback"),
        }
    }
    println!("480 streams: {ok} served, {shed} got the fallback");
    assert!(ok > 0 && shed > 0, "{ok} served, {shed} shed");
    nobody_blamed(&gw).await;
    served_again(&gw).await;
}

/// `GET /` with `Connection: close` on an open connection; the status of the answer and
/// whether it had `Retry-After`, or `None` when the connection was reset or closed first.
async fn get_and_close(mut tcp: tokio::net::TcpStream) -> Option<(u16, bool)> {
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text.contains("\r\nretry-after:")))
}

/// The open-file limit of the running gateway lowered (`prlimit`) to a few descriptors above
/// what it holds, with 40 visitor connections open: 40 requests at once find no descriptor
/// for most backend connections. They get 503, not resets; checks that cannot run count
/// neither way; no backend is reported or taken out; with the load gone, service is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_open_file_limit_under_load_blames_no_backend() {
    let (primary, backup) = backends().await;
    let gw = Gateway::start(&pool(primary, backup)).await;
    served_again(&gw).await;
    let open = || {
        std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
            .unwrap()
            .count()
    };
    let before = open();
    let mut visitors = Vec::new();
    for _ in 0..40 {
        visitors.push(tokio::net::TcpStream::connect(gw.http).await.unwrap());
    }
    // Every visitor connection accepted: its descriptor open in the gateway (a connection of
    // the request before may close meanwhile).
    holdfast_tests::wait_until(Duration::from_secs(5), "40 connections accepted", || {
        let now = open();
        async move { now + 2 >= before + 40 }
    })
    .await;
    let limit = open() + 4;
    let lowered = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", gw.pid()))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("prlimit (util-linux)");
    assert!(lowered.success(), "prlimit --nofile={limit}");

    let answers: Vec<_> = visitors
        .into_iter()
        .map(|tcp| tokio::spawn(get_and_close(tcp)))
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for a in answers {
        match a.await.unwrap() {
            Some((200, _)) => ok += 1,
            Some((503, true)) => shed += 1,
            other => panic!("{other:?}: only 200, or 503 with Retry-After"),
        }
    }
    println!("40 requests at the lowered limit: {ok} served, {shed} got the fallback");
    assert!(shed > 0, "some found no descriptor");
    // The load is gone (its connections closed): served again, at the same lowered limit.
    served_again(&gw).await;
    nobody_blamed(&gw).await;
}

/// A wave of `n` visitor connections at once, each with one `GET` for `host` (answered before
/// any of them ends), then closed; the statuses.
async fn wave(gw: &Gateway, host: &str, n: usize) -> Vec<u16> {
    let mut visitors = Vec::new();
    for i in 0..n {
        let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let request = format!("GET /{i} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        visitors.push(tcp);
    }
    let mut statuses = Vec::new();
    for tcp in &mut visitors {
        let head = holdfast_tests::read_answer(tcp).await;
        statuses.push(head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0));
    }
    statuses
}

/// Spare backend connections give their descriptors to visitors who need a connection: with an
/// open-file limit of 128 (a budget of 64 descriptors for visitor and backend connections), a
/// wave of 30 visitor connections to one backend leaves 30 spares; a wave of 30 to another
/// backend then needs 60 descriptors more. Each of its connects that finds the budget spent
/// closes the spare unused longest instead of answering 503: all 30 are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_connections_give_their_descriptors_to_visitors_who_need_one() {
    use holdfast_tests::gateway::THREADS;
    // Each answer 200 ms after its request, so that a wave's requests overlap.
    let delay = Some(Duration::from_millis(200));
    let a = scripted_backend("a", move |_| delay).await;
    let b = scripted_backend("b", move |_| delay).await;
    let config = format!(
        "[routes]\ndefault = \"a\"\nhosts = {{ \"b\" = \"b\" }}\n\
         [[pools.a.tiers]]\nbackends = [{{ address = \"{a}\" }}]\n\
         [[pools.b.tiers]]\nbackends = [{{ address = \"{b}\" }}]\n"
    );
    let gw = Gateway::start_with_env(&config, &[(NOFILE, "128"), (THREADS, "1")]).await;
    assert_eq!(wave(&gw, "a", 30).await, [200; 30]);
    // The gateway sees the closes: 30 spares to backend a.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = wave(&gw, "b", 30).await;
    assert_eq!(second, [200; 30], "none shed");
    let metrics = gw.metrics().await;
    let local = holdfast_tests::gateway::sample_value(
        &metrics,
        r#"holdfast_local_errors_total{kind="descriptors"}"#,
    );
    assert_eq!(local, 0.0, "no connect found the budget spent for good");
}
