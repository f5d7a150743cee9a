//! HTTP/2 toward backends (`protocol = "h2"`): a backend that speaks only h2 (as a gRPC
//! server does) serves HTTP/1.1 and h2 visitors alike, bodies and trailers whole, all
//! requests on one shared connection; its health checks speak h2; and when it dies, its
//! requests fail over like any other backend's.

use holdfast_tests::h2::{self as h2c, H2Backend};
use holdfast_tests::{backend, client, wait_until, Gateway};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `holdfast_backend_up` of `name` in pool `pool`'s primary tier.
fn up(pool: &str, name: &str) -> String {
    format!("holdfast_backend_up{{backend=\"{name}\",pool=\"{pool}\",tier=\"primary\"}}")
}

/// Sends `request` on a connection of its own (`Connection: close` in it) and reads the
/// answer to its end.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the answer ended within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

/// Requests from HTTP/1.1 and h2 visitors reach an h2-only backend translated (`:authority`
/// from `Host`, `te: trailers`, bodies with a length, chunked with trailers, HEAD), answers
/// come back with their bodies (chunked when the backend gave no length) and gRPC trailers;
/// 40 requests at once share one backend connection; the HTTP check speaks h2 (the backend
/// is up only through it). The checks are given room (fall 3, 300 ms each): on a loaded
/// machine two checks of 150 ms missed in a row while the 40 went through, and took the
/// backend out (seen twice in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_backend_serves_http11_and_h2_visitors() {
    let grpc = H2Backend::start("grpc", None).await;
    let gw = Gateway::start_with_https(&format!(
        "[pools.app.health.http]\npath = \"/health\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 3\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"grpc\", protocol = \"h2\" }}]\n",
        grpc.addr
    ))
    .await;
    wait_until(Duration::from_secs(5), "the h2 backend is up", || async {
        gw.metric(&up("app", "grpc")).await == 1.0
    })
    .await;

    // HTTP/1.1 visitors.
    let r = client().get(gw.url("/hello?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let header = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header(&r, "x-backend"), "grpc");
    assert_eq!(header(&r, "x-path"), "/hello");
    assert_eq!(
        header(&r, "x-authority"),
        gw.http.to_string(),
        "Host as :authority"
    );
    assert_eq!(header(&r, "x-te"), "trailers");
    assert_eq!(r.text().await.unwrap(), "grpc");

    let body = vec![b'x'; 300_000];
    let r = client()
        .post(gw.url("/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-method"), "POST");
    assert!(r.bytes().await.unwrap() == body, "a 300 kB body both ways");

    let r = client().post(gw.url("/empty")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a POST without a body");
    assert_eq!(r.text().await.unwrap(), "grpc");
    let r = client().get(gw.url("/sized")).send().await.unwrap();
    assert_eq!(
        header(&r, "content-length"),
        "4",
        "the backend's length kept"
    );
    let r = client().head(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-method"), "HEAD");
    assert!(r.bytes().await.unwrap().is_empty());

    // A chunked upload with a trailer; the answer comes chunked (the backend gave no length).
    let answer = raw_exchange(
        gw.http,
        b"POST /up HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await;
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(lower.contains("x-trailers: x-sum=42\r\n"), "{answer}");
    assert!(lower.contains("x-authority: a.example\r\n"), "{answer}");
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{answer}");
    assert!(
        answer.ends_with("b\r\nhello world\r\n0\r\n\r\n"),
        "{answer}"
    );

    // An h2 visitor's gRPC call: h2 both ways, trailers through.
    let https = gw.https.unwrap();
    let (mut h2, _conn) = h2c::connect(https).await;
    let call = http::Request::post("https://localhost/pkg.Service/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let a = h2c::send(&mut h2, call, b"\0\0\0\0\x05hello")
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-backend"), Some("grpc"));
    assert_eq!(a.header("x-te"), Some("trailers"));
    assert_eq!(a.body, b"\0\0\0\0\x05hello");
    let trailers = a.trailers.expect("the gRPC trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "fine");

    // Many requests at once: streams of one connection, not connections of their own.
    let before = grpc.connections_used();
    let calls = (0..40).map(|_| {
        let url = gw.url("/slow");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = all_at_once(calls).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    let opened = grpc.connections_used() - before;
    assert!(
        opened <= 1,
        "{opened} backend connections for 40 requests at once"
    );
}

/// The h2 backend dies with requests in flight: they are answered by the backup (a GET may be
/// sent again), the backend is down at once, and what follows goes to the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_backend_that_dies_fails_over_like_any_other() {
    let primary = H2Backend::start("h2-primary", None).await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&format!(
        "[pools.app.health.tcp]\ninterval = \"60s\"\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"h2-primary\", protocol = \"h2\" }}]\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"backup\" }}]\n",
        primary.addr,
        backup.addr()
    ))
    .await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "h2-primary");

    let calls = (0..30).map(|_| {
        let url = gw.url("/slow");
        async move {
            let r = client().get(url).send().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((r.status().as_u16(), r.text().await.unwrap_or_default()))
        }
    });
    // Stopped with requests waiting for their answers (each takes 300 ms there).
    let stop = async {
        wait_until(Duration::from_secs(5), "requests in flight", || async {
            gw.metric("holdfast_requests_in_flight").await >= 10.0
        })
        .await;
        primary.stop();
    };
    let (answers, ()) = tokio::join!(all_at_once(calls), stop);
    for a in &answers {
        assert!(
            matches!(a, Ok((200, _))),
            "every request answered: {answers:?}"
        );
    }
    assert!(
        answers
            .iter()
            .any(|a| matches!(a, Ok((_, b)) if b.contains("backup"))),
        "the requests in flight went to the backup: {answers:?}"
    );
    wait_until(
        Duration::from_secs(5),
        "the dead h2 backend is down",
        || async { gw.metric(&up("app", "h2-primary")).await == 0.0 },
    )
    .await;
    for _ in 0..5 {
        let r = client().get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("backup"));
    }
}

/// A request the data path gives up on (its `read_timeout` passed) has its stream cancelled
/// at the backend, and the visitor gets the fallback; the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_given_up_on_is_cancelled_at_the_h2_backend() {
    let h2 = H2Backend::start("h2", None).await;
    let gw = Gateway::start(&format!(
        "[pools.app]\nread_timeout = \"300ms\"\n[pools.app.health.tcp]\ninterval = \"60s\"\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"h2\", protocol = \"h2\" }}]\n",
        h2.addr
    ))
    .await;
    let r = client().get(gw.url("/never")).send().await.unwrap();
    assert_eq!(r.status(), 503, "the fallback");
    wait_until(
        Duration::from_secs(5),
        "the stream is cancelled",
        || async { h2.cancelled() == 1 },
    )
    .await;
}

/// The HTTP check speaks the backend's protocol: an h2-only backend over TLS is up through
/// `protocol = "h2"` and serves; the same backend checked as HTTP/1.1 is down (it refuses
/// HTTP/1.x), counted as a failed HTTP check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_speak_h2_to_an_h2_backend() {
    let secure = H2Backend::start(
        "secure",
        Some(holdfast_tests::tls::self_signed("localhost")),
    )
    .await;
    let tls = "tls = true, tls_verify = false, sni = \"localhost\"";
    let gw = Gateway::start(&format!(
        "[routes]\ndefault = \"h2\"\nhosts = {{ \"h1.example\" = \"h1\" }}\n\
         [pools.h2.health.http]\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n\
         [[pools.h2.tiers]]\nbackends = [{{ address = \"{addr}\", name = \"secure\", protocol = \"h2\", {tls} }}]\n\
         [pools.h1.health.http]\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n\
         [[pools.h1.tiers]]\nbackends = [{{ address = \"{addr}\", name = \"secure\", {tls} }}]\n",
        addr = secure.addr
    ))
    .await;
    wait_until(Duration::from_secs(5), "h2 up, HTTP/1.1 down", || async {
        gw.metric(&up("h2", "secure")).await == 1.0 && gw.metric(&up("h1", "secure")).await == 0.0
    })
    .await;
    let failed = "holdfast_backend_transitions_total{backend=\"secure\",pool=\"h1\",reason=\"http_check_failed\",tier=\"primary\",to=\"down\"}";
    assert!(gw.metric(failed).await >= 1.0);
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secure");
}

/// Runs all `futures` at once and gathers their results in order.
async fn all_at_once<F: std::future::Future + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
