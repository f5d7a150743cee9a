//! Failover from a dead or broken primary to the backup, and failback, under load.

use holdfast_tests::{
    backend, client, fill_accept_queue, primary_and_backup, stuck_listener, wait_until,
    DemoBackend, Gateway, Load,
};
use std::time::Duration;

fn two_tiers(primary: &str, backup: &str, health: &str) -> String {
    format!(
        r#"
[pools.app.health]
{health}

[[pools.app.tiers]]
backends = [{{ address = "{primary}", name = "primary" }}]

[[pools.app.tiers]]
backends = [{{ address = "{backup}", name = "backup" }}]
"#
    )
}

const FAST_TCP_CHECK: &str = r#"
[pools.app.health.tcp]
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
"#;

/// Test 1: the primary is killed under continuous load; no visitor sees a failure, the backup
/// takes the traffic, and the refused connects are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_under_load_costs_no_request() {
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&two_tiers(
        &primary.addr().to_string(),
        &backup.addr().to_string(),
        FAST_TCP_CHECK,
    ))
    .await;

    // Eight keep-alive clients without pause for 6 s; the primary dies once it has served
    // 200 of their requests.
    let load = Load::start(gw.url("/"), 8, Duration::from_secs(6));
    wait_until(Duration::from_secs(3), "the primary serves", || async {
        load.served_by("primary") >= 200
    })
    .await;
    let killed_at = load.elapsed();
    primary.stop();
    let report = load.run_out().await;

    let failures = report.failures();
    let first_backup = report.first_from_after("backup", killed_at).unwrap();
    let switch = first_backup.sent + first_backup.took - killed_at;
    println!(
        "test 1: sent {}, failed {}, by backend {:?}, backup served {:?} after the kill, longest request {:?}",
        report.sent(),
        failures.len(),
        report.by_backend(),
        switch,
        report.longest()
    );
    assert!(failures.is_empty(), "visitors saw failures: {failures:?}");
    assert!(
        report.from_after("backup", killed_at) > 100,
        "the backup took the traffic"
    );
    assert_eq!(
        report.from_after("primary", killed_at + Duration::from_millis(100)),
        0,
        "the dead primary cannot answer"
    );

    let refused = gw
        .metric(r#"holdfast_upstream_connect_failures_total{backend="primary",kind="refused",pool="app"}"#)
        .await;
    assert!(refused >= 1.0, "refused connects are counted: {refused}");
    assert_eq!(gw.metric(r#"holdfast_active_tier{pool="app"}"#).await, 1.0);
    assert_eq!(
        gw.metric(r#"holdfast_backend_up{backend="primary",pool="app",tier="primary"}"#)
            .await,
        0.0
    );
    assert!(
        gw.metric_sum(r#"holdfast_upstream_retries_total{pool="app""#)
            .await
            >= 1.0
    );
    // Marked down once, by real traffic itself: a refused connect, or (for a request that
    // reached the process as it died) a reset connection.
    let down = |reason: &str| {
        format!(
            r#"holdfast_backend_transitions_total{{backend="primary",pool="app",reason="{reason}",tier="primary",to="down"}}"#
        )
    };
    let by_traffic = gw.metric(&down("refused")).await + gw.metric(&down("reset")).await;
    assert_eq!(by_traffic, 1.0, "marked down by the failed request itself");
}

/// A primary down from the start and a backup, behind a gateway with `health`; eight clients
/// without pause until the backup served 200, then the primary back: the gateway, the load
/// still running, when the primary came back, and the backends (to keep them alive).
async fn primary_back_under_load(
    health: &str,
) -> (Gateway, Load, Duration, (DemoBackend, DemoBackend)) {
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    primary.stop();
    let gw = Gateway::start(&two_tiers(
        &primary.addr().to_string(),
        &backup.addr().to_string(),
        health,
    ))
    .await;
    let load = Load::start(gw.url("/"), 8, Duration::from_secs(20));
    wait_until(Duration::from_secs(10), "the backup serves", || async {
        load.served_by("backup") >= 200
    })
    .await;
    primary.restart().await.unwrap();
    let restarted_at = load.elapsed();
    (gw, load, restarted_at, (primary, backup))
}

/// Test 2: the primary comes back; after `rise` passing checks traffic returns to it, with no
/// failed request during the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_primary_takes_traffic_back_without_errors() {
    let (gw, load, restarted_at, _backends) = primary_back_under_load(FAST_TCP_CHECK).await;
    let took = wait_until(
        Duration::from_secs(10),
        "traffic returns to the primary",
        || async { load.last_from(100, "primary") },
    )
    .await;
    let report = load.finish().await;

    let failures = report.failures();
    let first = report.first_from_after("primary", restarted_at).unwrap();
    println!(
        "test 2: sent {}, failed {}, by backend {:?}, primary served again {:?} after its restart (all traffic on it within {took:?})",
        report.sent(),
        failures.len(),
        report.by_backend(),
        first.sent - restarted_at,
    );
    assert!(failures.is_empty(), "visitors saw failures: {failures:?}");
    // rise = 2 at a 1 s interval: not before the second passing check.
    assert!(
        first.sent - restarted_at >= Duration::from_millis(900),
        "{:?}",
        first.sent - restarted_at
    );
    let up = r#"holdfast_backend_transitions_total{backend="primary",pool="app",reason="checks_passed",tier="primary",to="up"}"#;
    assert_eq!(gw.metric(up).await, 1.0);
    assert_eq!(gw.metric(r#"holdfast_active_tier{pool="app"}"#).await, 0.0);
}

/// With `slow_start`, a primary back from down takes a share of the traffic growing from a
/// tenth to all of it over that time; the rest stays on the backup meanwhile, and no visitor
/// sees an error either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_recovered_primary_up() {
    let health = format!("slow_start = \"3s\"\n{FAST_TCP_CHECK}");
    let (_gw, load, restarted_at, _backends) = primary_back_under_load(&health).await;
    wait_until(
        Duration::from_secs(15),
        "traffic all on the primary",
        || async { load.last_from(200, "primary") },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish().await;

    assert!(report.failures().is_empty(), "{:?}", report.failures());
    let back = report
        .first_from_after("primary", restarted_at)
        .unwrap()
        .sent;
    let share = |from: Duration, to: Duration| {
        let window: Vec<_> = report
            .seen
            .iter()
            .filter(|s| s.sent >= from && s.sent < to)
            .collect();
        let primary = window
            .iter()
            .filter(|s| s.outcome.as_deref() == Ok("primary"))
            .count();
        (primary as f64 / window.len().max(1) as f64, window.len())
    };
    let early = share(back, back + Duration::from_millis(600));
    let late = share(
        back + Duration::from_millis(3200),
        back + Duration::from_millis(4000),
    );
    println!("slow start: primary's share {early:?} in its first 0.6 s back, {late:?} after 3.2 s");
    assert!(early.0 < 0.5, "ramping: {early:?}");
    assert!(late.1 > 0 && late.0 == 1.0, "ramped up: {late:?}");
}

/// Test 3: a backend whose health endpoint answers 503 (its TCP port still fine) is taken out
/// by the HTTP check, and brought back when it answers 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_takes_out_a_backend_that_answers_503() {
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    let health = r#"
[pools.app.health.http]
path = "/health"
interval = "300ms"
timeout = "200ms"
rise = 2
fall = 2
"#;
    let gw = Gateway::start(&two_tiers(
        &primary.addr().to_string(),
        &backup.addr().to_string(),
        health,
    ))
    .await;
    let c = client();
    let served_by = |c: reqwest::Client, url: String| async move {
        let r = c.get(url).send().await.unwrap();
        assert!(r.status().is_success());
        r.headers()["x-backend"].to_str().unwrap().to_string()
    };
    assert_eq!(served_by(c.clone(), gw.url("/")).await, "primary");

    primary.set_health_status(503);
    wait_until(
        Duration::from_secs(5),
        "the HTTP check takes the primary out",
        || {
            let (c, url) = (c.clone(), gw.url("/"));
            async move { served_by(c, url).await == "backup" }
        },
    )
    .await;
    let status = gw.status().await;
    assert!(
        status.contains(r#""reason": "http_check_failed""#),
        "{status}"
    );
    assert!(status.contains(r#""detail": "status 503""#), "{status}");
    // The TCP check still passes: only the HTTP check saw the problem.
    let tcp_down = r#"holdfast_backend_transitions_total{backend="primary",pool="app",reason="tcp_check_failed",tier="primary",to="down"}"#;
    assert_eq!(gw.metric(tcp_down).await, 0.0);
    for _ in 0..20 {
        assert_eq!(served_by(c.clone(), gw.url("/")).await, "backup");
    }

    primary.set_health_status(200);
    wait_until(Duration::from_secs(5), "the primary is back", || {
        let (c, url) = (c.clone(), gw.url("/"));
        async move { served_by(c, url).await == "primary" }
    })
    .await;
}

/// Test 4: a POST whose first backend refuses the connection is sent to another backend, which
/// receives the body intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_retried_on_another_backend_with_its_body_intact() {
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    // Checks far apart: only the real request can discover that the primary is gone.
    let slow_checks = r#"
[pools.app.health.tcp]
interval = "60s"
"#;
    let gw = Gateway::start(&two_tiers(
        &primary.addr().to_string(),
        &backup.addr().to_string(),
        slow_checks,
    ))
    .await;
    primary.stop();

    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let response = client()
        .post(gw.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-backend"], "backup");
    let echoed = response.bytes().await.unwrap();
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "the body reached the backup intact");

    let refused = gw
        .metric(r#"holdfast_upstream_connect_failures_total{backend="primary",kind="refused",pool="app"}"#)
        .await;
    assert_eq!(refused, 1.0);
    assert_eq!(
        gw.metric(r#"holdfast_upstream_retries_total{pool="app",reason="refused"}"#)
            .await,
        1.0
    );
}

/// The request reaches the backend as a proxy should pass it: Host untouched,
/// `X-Forwarded-For` and `X-Forwarded-Proto` set. The client (127.0.0.1) is not a trusted peer,
/// so what it claims in `X-Forwarded-For` is dropped (`trust.rs` has the trusted side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers() {
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&two_tiers(
        &primary.addr().to_string(),
        &backup.addr().to_string(),
        "",
    ))
    .await;
    let response = client()
        .get(gw.url("/"))
        .header("host", "www.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["x-seen-host"], "www.example.com");
    assert_eq!(h["x-seen-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-seen-forwarded-proto"], "http");
}

/// A backend whose accept queue is full never answers the SYN: the request goes to the backup
/// (at once by a hedged connect, or after the connect timeout without one), and the connect,
/// left to finish on its own, times out (the would-be 522) and takes the backend out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_fails_over_and_takes_the_backend_out() {
    let stuck = stuck_listener();
    let backup = backend("backup").await;
    let gw = Gateway::start(&primary_and_backup(
        ("stuck", stuck.local_addr().unwrap()),
        ("backup", backup.addr()),
        "connect_timeout = \"300ms\"",
    ))
    .await;

    // Fill the accept queue: later SYNs are dropped by the kernel.
    let held = fill_accept_queue(stuck.local_addr().unwrap()).await;

    let response = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-backend"], "backup");
    let timeouts =
        r#"holdfast_upstream_connect_failures_total{backend="stuck",kind="timeout",pool="app"}"#;
    wait_until(
        Duration::from_secs(5),
        "the stuck connect timed out",
        || async { gw.metric(timeouts).await == 1.0 },
    )
    .await;
    // Taken out: the next requests go straight to the backup, without waiting.
    for _ in 0..5 {
        let r = client().get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["x-backend"], "backup");
    }
    assert_eq!(
        gw.metric(
            r#"holdfast_upstream_connect_failures_total{backend="stuck",kind="timeout",pool="app"}"#
        )
        .await,
        1.0
    );
    drop(held);
}
