//! What a visitor can and cannot do to a backend's health, and what a backend can and cannot do
//! to a visitor's wait (issue 14): an early answer to an upload is the backend's answer, not its
//! failure; the wait for a response head ends at its deadlines however the backend trickles;
//! a `101` opens a tunnel only when the request asked for one, and an idle tunnel is closed;
//! an answer's framing reaches the visitor one way only.

use holdfast_tests::raw::{Answer, RawBackend};
use holdfast_tests::{backend, client, one_backend, primary_and_backup, wait_until, Gateway};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A backend that hands each accepted connection to `serve`.
async fn backend_with<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// A WebSocket opened through the gateway at `gateway`: the `101` read, the tunnel open.
async fn open_websocket(gateway: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(gateway).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = vec![0u8; 4096];
    let n = s.read(&mut got).await.unwrap();
    assert!(got[..n].starts_with(b"HTTP/1.1 101 "), "{:?}", &got[..n]);
    s
}

/// Reads one request head from `s` (the body, if any, is left unread).
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

const PRIMARY_DOWN: &str = r#"holdfast_backend_transitions_total{backend="primary",pool="app",reason="reset",tier="primary",to="down"}"#;

/// Many application servers answer an upload they refuse (413, 401, 403) before reading its
/// body, then close, and the unread body makes their kernel reset the connection. That is the
/// backend's answer: every visitor gets the 413, and the backend stays in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_early_gets_the_backends_answer_and_costs_it_nothing() {
    let primary = backend_with(|mut s| async move {
        while let Some(head) = read_head(&mut s).await {
            if head.starts_with(b"POST") {
                let _ = s
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
                    .await;
                return; // closed with the body unread: the kernel resets the connection
            }
            let ok = b"HTTP/1.1 200 OK\r\nX-Backend: primary\r\nContent-Length: 2\r\n\r\nok";
            if s.write_all(ok).await.is_err() {
                return;
            }
        }
    })
    .await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&primary_and_backup(
        ("primary", primary),
        ("backup", backup.addr()),
        "",
    ))
    .await;

    const BODY: usize = 8 * 1024 * 1024;
    for i in 0..20 {
        let mut s = TcpStream::connect(gw.http).await.unwrap();
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {BODY}\r\n\r\n");
        let (mut from_gateway, mut to_gateway) = s.split();
        let send = async {
            let _ = to_gateway.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..BODY / chunk.len() {
                if to_gateway.write_all(&chunk).await.is_err() {
                    break; // the gateway may close once it has answered
                }
            }
        };
        let read = async {
            let mut got = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), from_gateway.read_to_end(&mut got))
                    .await;
            got
        };
        let ((), got) = tokio::join!(send, read);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 413 Content Too Large\r\n") && text.ends_with("too large"),
            "upload {i}: {text:?}"
        );
    }
    let r = client().get(gw.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-backend"],
        "primary",
        "the primary never left"
    );
    assert_eq!(backup.served(), 0);
    assert_eq!(gw.metric(PRIMARY_DOWN).await, 0.0);
    assert_eq!(
        gw.metric(r#"holdfast_requests_total{class="4xx",pool="app"}"#)
            .await,
        20.0
    );
}

/// A backend that sends a response head a byte every 500 ms (or interim answers without end)
/// holds no visitor past the deadlines: `read_timeout` (2 s) after the request went out, the
/// next backend; `total_timeout` (4 s) for the whole chain, the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_head_is_cut_at_its_deadline() {
    let trickle = backend_with(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        for byte in b"HTTP/1.1 200 OK\r\nX-Backend: trickle\r\nContent-Length: 2\r\n\r\nok" {
            if s.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let interim = backend_with(|mut s| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        while s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let backup = backend("backup").await;
    let c = client();
    // The deadlines on their own: a hedge would answer first (e2e/hedge.rs).
    let timeouts =
        "read_timeout = \"2s\"\ntotal_timeout = \"4s\"\n[pools.app.hedge]\nresponse = false";

    // With a backup: the backup's answer after read_timeout.
    let gw = Gateway::start(&primary_and_backup(
        ("primary", trickle),
        ("backup", backup.addr()),
        timeouts,
    ))
    .await;
    let started = Instant::now();
    let r = c.get(gw.url("/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "backup");
    assert!(
        took < Duration::from_millis(4500),
        "answered after {took:?}"
    );
    drop(gw);

    // Interim answers without end count as no answer (bad_response): the backup at once.
    let gw = Gateway::start(&primary_and_backup(
        ("primary", interim),
        ("backup", backup.addr()),
        timeouts,
    ))
    .await;
    let started = Instant::now();
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "backup");
    assert!(started.elapsed() < Duration::from_millis(4500));
    let bad = r#"holdfast_upstream_retries_total{pool="app",reason="bad_response"}"#;
    assert_eq!(gw.metric(bad).await, 1.0);
    drop(gw);

    // Alone, with a read_timeout longer than the chain: the fallback at total_timeout.
    let keys =
        "read_timeout = \"10s\"\ntotal_timeout = \"4s\"\n[pools.app.hedge]\nresponse = false";
    let gw = Gateway::start(&one_backend(trickle, keys)).await;
    let started = Instant::now();
    let r = c.get(gw.url("/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 503, "the fallback");
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        took < Duration::from_millis(4500),
        "answered after {took:?}"
    );
}

/// `101 Switching Protocols` to a request that did not ask to upgrade is no answer (it would
/// turn the visitor's connection into a tunnel): the request goes to the next backend. An
/// upgraded connection quiet for `tunnel_idle_timeout` is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_only_when_asked_and_never_idle_for_ever() {
    let switching = RawBackend::start(|_| {
        Answer::upgrade(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    })
    .await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&primary_and_backup(
        ("primary", switching.addr),
        ("backup", backup.addr()),
        "tunnel_idle_timeout = \"1s\"",
    ))
    .await;
    let r = client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "backup");

    // The primary was taken out by that bad answer; bring it back for the upgrade.
    drop(gw);
    let keys = "tunnel_idle_timeout = \"1s\"";
    let gw = Gateway::start(&one_backend(switching.addr, keys)).await;
    let mut s = open_websocket(gw.http).await;
    s.write_all(b"echo me").await.unwrap();
    let mut echoed = [0u8; 7];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"echo me");
    // Quiet from here on: closed after about a second.
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 64])).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "the idle tunnel was not closed: {end:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// A backend answer with both `Transfer-Encoding: chunked` and `Content-Length` reaches the
/// visitor chunked, without the `Content-Length` (RFC 9112 6.3): it cannot be read two ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_loses_its_content_length() {
    let raw = RawBackend::start(|_| {
        Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    })
    .await;
    let gw = Gateway::start(&one_backend(raw.addr, "")).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(!text.contains("content-length"), "{text}");
    assert!(
        text.contains("transfer-encoding: chunked\r\n")
            && text.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{text}"
    );
    // And the connection is still good for the next request.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
        .await
        .unwrap()
        .unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
}

/// An open tunnel counts against its listener's caps: with `max_in_flight = 1`, a request
/// while a WebSocket is open gets the fallback (busy) at once, and is served once it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_counts_against_the_listeners_caps() {
    let switching = RawBackend::start(|head| {
        if head.starts_with(b"GET /ws ") {
            Answer::upgrade(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        } else {
            Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let limits = "[listen.limits.\"{http}\"]\nmax_in_flight = 1";
    let gw = Gateway::start_with_listen(limits, &one_backend(switching.addr, "")).await;
    let ws = open_websocket(gw.http).await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 503, "the tunnel holds the listener's one place");
    drop(ws);
    wait_until(
        Duration::from_secs(5),
        "the place is free again",
        || async { client().get(gw.url("/")).send().await.unwrap().status() == 200 },
    )
    .await;
}
