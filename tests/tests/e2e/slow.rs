//! Slow clients: a request head that trickles in is cut off with 408 once `header_timeout`
//! has passed since its first byte, while other visitors are served; a connection merely idle
//! between requests is not a slow client.

use holdfast_tests::{backend, wait_until, Gateway};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or 10 s pass): everything it sent, and when it closed.
async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    (got, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_head_gets_408_and_others_are_served_meanwhile() {
    let web = backend("web").await;
    let gw = Gateway::start_with_listen(
        "header_timeout = \"1s\"",
        &format!(
            "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
            web.addr()
        ),
    )
    .await;

    // Clients that start a head and stop.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(gw.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        stalled.push(s);
    }
    // A client that sends a byte every 100 ms: each byte must not restart the clock.
    let (mut trickle_in, mut trickle_out) = TcpStream::connect(gw.http).await.unwrap().into_split();
    let trickler = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: 0123456789012345678901234567890123456789" {
            if trickle_out.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let trickle_answer = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), trickle_in.read_to_end(&mut got)).await;
        (got, Instant::now())
    });
    // A keep-alive connection idle for longer than the header timeout is not a slow client.
    let c = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = c.get(gw.url("/first")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;

    // Meanwhile, a normal visitor is served.
    let r = c.get(gw.url("/meanwhile")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;

    for mut s in stalled {
        let (got, at) = until_closed(&mut s).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "a stalled head got {text:?}"
        );
        let after = at - started;
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(5),
            "cut off after {after:?}"
        );
    }
    let (got, at) = trickle_answer.await.unwrap();
    trickler.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "the trickling head got {text:?}"
    );
    assert!(
        at - started < Duration::from_secs(4),
        "the trickling head was allowed {:?}: every byte restarted the clock",
        at - started
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = c.get(gw.url("/after-idle")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "an idle keep-alive connection was cut as slow"
    );
    assert_eq!(web.served(), 3);
    assert_eq!(
        gw.metric(r#"holdfast_refused_requests_total{reason="head_timeout"}"#)
            .await,
        21.0
    );
}

/// Sends one GET on `s` and returns what one read brings back (up to 5 s).
async fn ask(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&got[..n]).into_owned()
}

/// Over `listen.max_connections`, a new connection is still accepted and answered: the
/// fallback (503, Retry-After), then closed; once a connection closes, new ones are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_fast_503_not_a_refusal() {
    let web = backend("web").await;
    let gw = Gateway::start_with_listen(
        "max_connections = 4",
        &format!(
            "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
            web.addr()
        ),
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.http).await.unwrap();
        let got = ask(&mut s).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
        open.push(s);
    }
    let mut fifth = TcpStream::connect(gw.http).await.unwrap();
    fifth
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = until_closed(&mut fifth).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 503"), "{got:?}");
    assert!(got.to_ascii_lowercase().contains("retry-after:"), "{got:?}");
    assert_eq!(gw.metric("holdfast_shed_connections_total").await, 1.0);

    // The shed connection and one of the four close: room for one more.
    drop(fifth);
    drop(open.pop());
    wait_until(Duration::from_secs(5), "three connections left", || async {
        gw.metric("holdfast_visitor_connections").await == 3.0
    })
    .await;
    let mut again = TcpStream::connect(gw.http).await.unwrap();
    let got = ask(&mut again).await;
    assert!(got.starts_with("HTTP/1.1 200"), "after a close: {got:?}");
    assert_eq!(web.served(), 5);
}
