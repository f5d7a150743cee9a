//! An operator's hands (issue 23, first part): `drain`, `down` and `up` on a backend, through
//! `POST /backends/POOL/BACKEND/ACTION` and `holdfast backend`, under load, across a reload and
//! an upgrade; the last backend that can serve kept unless forced.

use holdfast_tests::gateway::ADMIN_TOKEN_LISTEN;
use holdfast_tests::{scripted_backend, wait_until, Gateway, Load};
use serde_json::Value;
use std::time::Duration;

async fn status(gw: &Gateway) -> Value {
    serde_json::from_str(&gw.status().await).unwrap()
}

/// The `/status` entry of backend `name` of the first pool.
async fn backend(gw: &Gateway, name: &str) -> Value {
    let doc = status(gw).await;
    doc["pools"][0]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["backends"].as_array().unwrap().clone())
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {doc}"))
}

/// `POST /backends/...` on the admin listener: status and JSON answer.
async fn act(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = gw.admin_post(path).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn pools(a: std::net::SocketAddr, b: std::net::SocketAddr, b_weight: u32) -> String {
    format!(
        "[pools.app.health.tcp]\ninterval = \"1s\"\n[[pools.app.tiers]]\nbackends = [{{ name = \"a\", address = \"{a}\" }}, {{ name = \"b\", address = \"{b}\", weight = {b_weight} }}]\n"
    )
}

/// Drain under keep-alive load: nothing fails, the requests `a` had in flight finish there,
/// then it gets none; the drain holds through a reload and an upgrade; `up` brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_finishes_its_requests_and_gets_no_new_one() {
    let slow = |head: &[u8]| {
        let slow = head.starts_with(b"GET /slow ");
        Some(Duration::from_millis(if slow { 1500 } else { 0 }))
    };
    let (a, b) = (
        scripted_backend("a", slow).await,
        scripted_backend("b", slow).await,
    );
    let mut gw = Gateway::start_with_listen(ADMIN_TOKEN_LISTEN, &pools(a, b, 1)).await;
    let load = Load::start(gw.url("/"), 4, Duration::from_secs(60));
    load.more(100).await;
    assert!(load.served_by("a") > 0, "a served before the drain");

    // Slow requests in flight, some on a.
    let slow_requests: Vec<_> = (0..4)
        .map(|_| tokio::spawn(holdfast_tests::client().get(gw.url("/slow")).send()))
        .collect();
    wait_until(
        Duration::from_secs(5),
        "a slow request in flight on a",
        || async { backend(&gw, "a").await["in_flight"].as_u64() >= Some(1) },
    )
    .await;
    let (code, doc) = act(&gw, "/backends/app/a/drain").await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["admin"]["shown"], "draining", "{doc}");
    assert_eq!(
        doc["admin"]["by"]
            .as_str()
            .map(|s| s.starts_with("127.0.0.1")),
        Some(true)
    );
    for r in slow_requests {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), 200, "a request in flight finished");
    }
    wait_until(Duration::from_secs(5), "a is drained", || async {
        backend(&gw, "a").await["admin"]["shown"] == "drained"
    })
    .await;
    let served = load.served_by("a");
    load.more(300).await;
    assert_eq!(
        load.served_by("a"),
        served,
        "a drained backend takes no new request"
    );
    let state = r#"holdfast_backend_admin_state{backend="a",pool="app",tier="primary"}"#;
    assert_eq!(gw.metric(state).await, 1.0);
    assert_eq!(
        gw.metric(r#"holdfast_admin_actions_total{action="drain"}"#)
            .await,
        1.0
    );

    // Kept through a reload (b's weight changes) and an upgrade.
    gw.rewrite(None, &pools(a, b, 2));
    gw.reload();
    assert_eq!(backend(&gw, "a").await["admin"]["state"], "drain");
    gw.upgrade().await;
    assert_eq!(
        backend(&gw, "a").await["admin"]["state"],
        "drain",
        "after the upgrade"
    );
    load.more(200).await;
    assert_eq!(
        load.served_by("a"),
        served,
        "still drained after the upgrade"
    );

    // `holdfast backend up`: back to what its checks say.
    let out = gw.holdfast(&["backend", "up", "app", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(5), "a serves again", || async {
        load.served_by("a") > served
    })
    .await;
    let report = load.finish().await;
    report.assert_none_failed();
    assert_eq!(backend(&gw, "a").await["admin"], Value::Null);
}

/// `down` on the last backend that can serve is refused with why, unless forced; forced, the
/// visitors get the fallback; `up` brings it back. Unknown names are 404 and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_backend_is_forced_out_only_when_asked_to() {
    let a = scripted_backend("a", |_| Some(Duration::ZERO)).await;
    let gw = Gateway::start_with_listen(ADMIN_TOKEN_LISTEN, &format!(
        "[pools.app.health.tcp]\ninterval = \"1s\"\n[[pools.app.tiers]]\nbackends = [{{ name = \"a\", address = \"{a}\" }}]\n"
    ))
    .await;
    let (code, doc) = act(&gw, "/backends/app/a/down").await;
    assert_eq!(code, 409, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("last backend"),
        "{doc}"
    );
    let out = gw.holdfast(&["backend", "down", "app", "a"]);
    assert_eq!(out.status.code(), Some(1), "refused: exit 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let r = holdfast_tests::client()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "still serving");

    for (path, why) in [
        ("/backends/nope/a/down", "no pool named"),
        ("/backends/app/nope/down", "no backend named"),
        ("/backends/app/a/reboot", "is not drain, down or up"),
    ] {
        let (code, doc) = act(&gw, path).await;
        assert_eq!(code, 404, "{path}: {doc}");
        assert!(
            doc["error"].as_str().unwrap().contains(why),
            "{path}: {doc}"
        );
    }

    let out = gw.holdfast(&["backend", "down", "app", "a", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("forced out"));
    let r = holdfast_tests::client()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "forced out: the fallback");
    assert_eq!(backend(&gw, "a").await["status"], "up", "its checks go on");

    let (code, doc) = act(&gw, "/backends/app/a/up").await;
    assert_eq!(code, 200, "{doc}");
    let r = holdfast_tests::client()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "back");
}
