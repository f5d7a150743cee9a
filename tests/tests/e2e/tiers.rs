//! Test 6: three tiers: the third takes traffic only while the first two cannot serve.

use holdfast_tests::{backend, client, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_tier_serves_only_when_the_first_two_are_down() {
    let t1 = backend("t1").await;
    let t2 = backend("t2").await;
    let t3 = backend("t3").await;
    let gw = Gateway::start(&format!(
        r#"
[pools.app.health.tcp]
interval = "60s"

[[pools.app.tiers]]
name = "primary"
backends = [{{ address = "{}", name = "t1" }}]
[[pools.app.tiers]]
name = "backup"
backends = [{{ address = "{}", name = "t2" }}]
[[pools.app.tiers]]
name = "last-resort"
backends = [{{ address = "{}", name = "t3" }}]
"#,
        t1.addr(),
        t2.addr(),
        t3.addr()
    ))
    .await;
    let c = client();
    let who = || async {
        let r = c.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-backend"].to_str().unwrap().to_string()
    };
    for _ in 0..10 {
        assert_eq!(who().await, "t1");
    }
    t1.stop();
    for _ in 0..10 {
        assert_eq!(who().await, "t2");
    }
    t2.stop();
    for _ in 0..10 {
        assert_eq!(who().await, "t3");
    }
    assert_eq!(t3.served(), 10);
    assert_eq!(gw.metric(r#"holdfast_active_tier{pool="app"}"#).await, 2.0);
}
