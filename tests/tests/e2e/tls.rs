//! HTTPS towards backends: requests go over TLS, a failed handshake is a connect failure like
//! a refused connect (the would-be 525), and certificates are verified unless told otherwise.

use holdfast_tests::{backend, client, tls, DemoBackend, Gateway};

/// An HTTPS primary with a self-signed certificate, a plain backup, and a gateway whose
/// config gives the primary `tls = true` and `primary_tls`.
async fn start(primary_tls: &str) -> (DemoBackend, DemoBackend, Gateway) {
    let primary = backend("primary").await;
    primary.set_tls(Some(tls::self_signed("origin.test")));
    let backup = backend("backup").await;
    let gw = Gateway::start(&format!(
        r#"
[pools.app.health.tcp]
interval = "60s"

[[pools.app.tiers]]
backends = [{{ address = "{}", name = "primary", tls = true, {primary_tls} }}]

[[pools.app.tiers]]
backends = [{{ address = "{}", name = "backup" }}]
"#,
        primary.addr(),
        backup.addr()
    ))
    .await;
    (primary, backup, gw)
}

async fn served_by(gw: &Gateway) -> String {
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-backend"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backend_serves_and_a_failed_handshake_fails_over() {
    let (primary, _backup, gw) = start(r#"sni = "origin.test", tls_verify = false"#).await;
    for _ in 0..5 {
        assert_eq!(served_by(&gw).await, "primary");
    }

    // The backend loses its TLS set-up (port open, plain HTTP): handshakes fail.
    primary.set_tls(None);
    primary.restart().await.unwrap();
    for _ in 0..10 {
        assert_eq!(served_by(&gw).await, "backup");
    }
    let tls_failures = gw
        .metric(
            r#"holdfast_upstream_connect_failures_total{backend="primary",kind="tls",pool="app"}"#,
        )
        .await;
    assert_eq!(tls_failures, 1.0, "one failed handshake took it out");
    let down = r#"holdfast_backend_transitions_total{backend="primary",pool="app",reason="tls",tier="primary",to="down"}"#;
    assert_eq!(gw.metric(down).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_when_verifying() {
    let (primary, _backup, gw) = start(r#"sni = "origin.test""#).await;
    // The start-up probe completes no handshake with a self-signed certificate.
    assert_eq!(served_by(&gw).await, "backup");
    let status = gw.status().await;
    assert!(status.contains(r#""detail": "tls: "#), "{status}");
    assert_eq!(primary.served(), 0);
}

/// TLS terminated at the gateway (Cloudflare's Full and Full strict modes): the request reaches
/// the backend over plain HTTP with `X-Forwarded-Proto: https`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_terminates_tls() {
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    ))
    .await;
    let answer = tls::https_exchange(
        gw.https.unwrap(),
        "GET /secure HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("x-backend: web"), "{answer}");
    assert!(lower.contains("x-seen-forwarded-proto: https"), "{answer}");
    assert!(lower.contains("x-seen-host: www.example.com"), "{answer}");
    assert!(answer.ends_with("hello from web\n"), "{answer}");
}
