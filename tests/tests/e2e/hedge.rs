//! Hedging (issue 14): a connect or an answer slower than its backend usually is gets a second
//! attempt beside it on the next backend, and the first to complete is used; answer hedges
//! only for requests that may be sent again, within the pool's budget.

use holdfast_tests::{
    backend, client, fill_accept_queue, primary_and_backup, scripted_backend, stuck_listener,
    wait_until, Gateway,
};
use std::time::{Duration, Instant};

const HEDGES: &str = "holdfast_upstream_hedges_total";

fn hedges(kind: &str, result: &str) -> String {
    format!(r#"{HEDGES}{{kind="{kind}",pool="app",result="{result}"}}"#)
}

/// A primary whose accept queue is full (the kernel drops its SYNs, as behind a firewall that
/// drops packets) costs a visitor the hedge delay, not the connect timeout: the backup's
/// connect starts after about 20 ms and wins. The abandoned connect finishes on its own and
/// takes the primary out when it times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_hangs_is_hedged_to_the_backup() {
    let stuck = stuck_listener();
    let backup = backend("backup").await;
    let gw = Gateway::start(&primary_and_backup(
        ("stuck", stuck.local_addr().unwrap()),
        ("backup", backup.addr()),
        "connect_timeout = \"2s\"",
    ))
    .await;
    // Up at start (its check connected); now its accept queue fills, and later SYNs are dropped.
    let held = fill_accept_queue(stuck.local_addr().unwrap()).await;
    let started = Instant::now();
    let r = client().get(gw.url("/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.headers()["x-backend"], "backup");
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?}, not the 2 s connect timeout"
    );
    assert_eq!(gw.metric(&hedges("connect", "won")).await, 1.0);
    // A POST too: nothing was sent to the stuck backend.
    let r = client().post(gw.url("/")).body("x").send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "backup");
    // The abandoned connects time out on their own and take the primary out.
    let timeouts =
        r#"holdfast_upstream_connect_failures_total{backend="stuck",kind="timeout",pool="app"}"#;
    wait_until(
        Duration::from_secs(5),
        "a stuck connect timed out",
        || async { gw.metric(timeouts).await >= 1.0 },
    )
    .await;
    assert_eq!(gw.metric(r#"holdfast_active_tier{pool="app"}"#).await, 1.0);
    drop(held);
}

/// A primary that answers 3 s late: a GET is copied to the backup once the primary is slower
/// than it usually is (here from the start: the floor of 100 ms), and the backup's answer
/// comes first. A POST may not be sent twice: it waits for the primary. With a budget of 0 %,
/// nothing is hedged and the GET waits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_is_hedged_for_requests_that_may_go_again() {
    let slow = scripted_backend("slow", |_| Some(Duration::from_secs(3))).await;
    let backup = backend("backup").await;
    let pools = |hedge: &str| {
        let hedge = format!("[pools.app.hedge]\n{hedge}");
        primary_and_backup(("slow", slow), ("backup", backup.addr()), &hedge)
    };
    let c = client();
    let gw = Gateway::start(&pools("")).await;
    for i in 0..3 {
        let started = Instant::now();
        let r = c.get(gw.url(&format!("/{i}"))).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(r.headers()["x-backend"], "backup", "request {i}");
        assert!(took < Duration::from_secs(1), "request {i}: {took:?}");
    }
    assert_eq!(gw.metric(&hedges("response", "won")).await, 3.0);
    assert_eq!(
        gw.metric(r#"holdfast_backend_up{backend="slow",pool="app",tier="primary"}"#)
            .await,
        1.0,
        "a slow backend is not a failed one: nothing was reported against it"
    );
    let started = Instant::now();
    let r = c.post(gw.url("/order")).body("one").send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "slow");
    assert!(started.elapsed() >= Duration::from_secs(3));
    drop(gw);

    let gw = Gateway::start(&pools("budget_percent = 0")).await;
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "slow");
    assert_eq!(gw.metric(&hedges("response", "no_budget")).await, 1.0);
    assert_eq!(gw.metric(&hedges("response", "won")).await, 0.0);
}

/// A quick primary is never hedged: the delay follows its own answer times, and the first
/// answer is its.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_answers_are_not_hedged() {
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&format!(
        "[pools.app.health.tcp]\ninterval = \"60s\"\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"primary\" }}]\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"backup\" }}]\n",
        primary.addr(),
        backup.addr()
    ))
    .await;
    let c = client();
    for _ in 0..200 {
        let r = c.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["x-backend"], "primary");
    }
    assert_eq!(backup.served(), 0);
    let all = gw.metric_sum(&format!("{HEDGES}{{")).await;
    assert_eq!(all, 0.0, "no hedge of any kind");
}
