//! Test 5: with every backend down, the gateway still accepts every connection and answers
//! the fallback: 503, `Retry-After`, `Cache-Control: no-store`, a body.

use holdfast_tests::gateway::sum_of;
use holdfast_tests::{backend, client, wait_until, Gateway};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_answers_503_with_retry_after() {
    let a = backend("a").await;
    let b = backend("b").await;
    let gw = Gateway::start(&format!(
        r#"
[fallback]
retry_after = "17s"

[pools.app.health.tcp]
interval = "200ms"
timeout = "100ms"
fall = 1

[[pools.app.tiers]]
backends = [{{ address = "{}" }}]
[[pools.app.tiers]]
backends = [{{ address = "{}" }}]
"#,
        a.addr(),
        b.addr()
    ))
    .await;
    a.stop();
    b.stop();

    // While the checks have not noticed yet, and after they have: always the fallback.
    let c = client();
    for i in 0..40 {
        let response = c.get(gw.url("/page")).send().await.unwrap();
        assert_eq!(response.status(), 503, "request {i}");
        assert_eq!(response.headers()["retry-after"], "17");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let body = response.text().await.unwrap();
        assert!(body.contains("right back"), "{body}");
        if i == 20 {
            wait_until(Duration::from_secs(5), "both backends down", || async {
                sum_of(&gw.metrics().await, "holdfast_backend_up{") == 0.0
            })
            .await;
        }
    }

    // Many fresh connections at once: each accepted and answered.
    let mut visitors = Vec::new();
    for _ in 0..50 {
        let addr = gw.http;
        visitors.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connection accepted");
            s.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
                .await
                .unwrap();
            let mut buf = vec![0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        }));
    }
    for v in visitors {
        let head = v.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    }

    // A HEAD gets the head only, and the admin health endpoint says nothing can serve.
    let head = c.head(gw.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 503);
    assert_eq!(head.headers()["retry-after"], "17");
    let healthz = c.get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 503);
    assert!(
        gw.metric(r#"holdfast_fallback_responses_total{pool="app",reason="no_backend"}"#)
            .await
            >= 1.0
    );
    assert_eq!(gw.metric(r#"holdfast_active_tier{pool="app"}"#).await, -1.0);
}

/// README step 5: the fallback keeps the connection open after a request whose small body was
/// read whole (a GET that may go again), and closes it after one whose body was not (a POST's
/// body streams to a backend, and none took it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_keeps_the_connection_when_the_body_was_read_whole() {
    let a = backend("a").await;
    let gw = Gateway::start(&holdfast_tests::one_backend(a.addr(), "")).await;
    a.stop();
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    for i in 0..3 {
        s.write_all(b"GET /q HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let head = holdfast_tests::read_answer(&mut s).await;
        assert!(head.starts_with("http/1.1 503"), "request {i}: {head}");
        assert!(!head.contains("connection: close"), "request {i}: {head}");
    }
    s.write_all(b"POST /q HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let head = holdfast_tests::read_answer(&mut s).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}
