//! HTTP/2 toward Cloudflare: ALPN, h2 requests through the same rules and backends as
//! HTTP/1.1 ones (translated, trailers passed on), failover of 200 streams at once, GOAWAY on
//! reload, stop and idleness, and attacks closed while other visitors are served.

use holdfast_tests::h2::{self as h2c, Answer};
use holdfast_tests::raw::{Answer as Raw, RawBackend};
use holdfast_tests::{backend, one_backend, primary_and_backup, wait_until, Gateway};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// A pool `app` of the one backend at `addr`.
fn pool(addr: std::net::SocketAddr) -> String {
    format!("[[pools.app.tiers]]\nbackends = [{{ address = \"{addr}\" }}]\n")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

/// Test 6, part 1: ALPN offers h2 first and HTTP/1.1 to a client that wants it; an h2 request
/// reaches the backend as the HTTP/1.1 request a visitor would have sent (Host from
/// `:authority`, cookies joined, `TE` gone, bodies whole with or without a length), the
/// answer comes back without connection fields, trailers of a chunked answer come as h2
/// trailers (gRPC), and the HTTP/1.1 rules judge the request (too many fields: 431).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_are_served_as_http11_ones() {
    let web = RawBackend::start(|head| {
        if head.starts_with(b"GET /grpc ") {
            Raw::keep(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n")
        } else {
            Raw::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nok")
        }
    })
    .await;
    let gw = Gateway::start_with_https(&pool(web.addr)).await;
    let https = gw.https.unwrap();

    // ALPN, in our order of preference.
    for (offered, agreed) in [
        (&b"\x08http/1.1\x02h2"[..], Some(&b"h2"[..])),
        (b"\x08http/1.1", Some(b"http/1.1")),
        (b"\x06spdy/3", None),
    ] {
        let (_, got) = h2c::tls(https, offered).await;
        assert_eq!(got.as_deref(), agreed, "offered {offered:?}");
    }

    let (mut h2, _conn) = h2c::connect(https).await;
    let a = h2c::send(
        &mut h2,
        request(
            "GET",
            "/a?b=c",
            &[("cookie", "x=1"), ("cookie", "y=2"), ("te", "trailers")],
        ),
        b"",
    )
    .await
    .unwrap();
    assert_eq!((a.status, text(&a.body)), (200, "ok".to_string()));
    assert_eq!(a.header("x-kept"), Some("yes"));
    assert_eq!(a.header("keep-alive"), None, "no connection fields in h2");
    let seen = text(&web.requests()[0]);
    assert!(
        seen.starts_with("GET /a?b=c HTTP/1.1\r\nHost: localhost\r\n"),
        "{seen}"
    );
    assert!(seen.contains("Cookie: x=1; y=2\r\n"), "{seen}");
    assert!(seen.contains("X-Forwarded-Proto: https\r\n"), "{seen}");
    assert!(seen.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{seen}");
    assert!(!seen.to_ascii_lowercase().contains("\r\nte:"), "{seen}");

    // A body with a length, and one without (chunked toward the backend).
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let with_length = request("POST", "/up", &[("content-length", &big.len().to_string())]);
    let a = h2c::send(&mut h2, with_length, &big).await.unwrap();
    assert_eq!(a.status, 200);
    let seen = web.requests().last().unwrap().clone();
    assert!(seen.ends_with(&big), "the whole body, as sent");
    let a = h2c::send(&mut h2, request("POST", "/stream", &[]), b"abcdef")
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let seen = text(web.requests().last().unwrap());
    assert!(seen.contains("Transfer-Encoding: chunked\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n"), "{seen}");

    // gRPC-style trailers.
    let a = h2c::send(&mut h2, h2c::get("/grpc"), b"").await.unwrap();
    assert_eq!(text(&a.body), "hello");
    let trailers = a.trailers.expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "fine");

    // HEAD: no body.
    let a = h2c::send(&mut h2, request("HEAD", "/h", &[]), b"")
        .await
        .unwrap();
    assert_eq!((a.status, a.body.len()), (200, 0));

    // The HTTP/1.1 rules judge it: more header fields than a visitor may send.
    let many: Vec<(String, String)> = (0..130).map(|i| (format!("x-f{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let before = web.requests().len();
    let a: Answer = h2c::send(&mut h2, request("GET", "/many", &many), b"")
        .await
        .unwrap();
    assert_eq!(a.status, 431);
    assert_eq!(web.requests().len(), before, "not forwarded");
    // The connection goes on.
    let a = h2c::send(&mut h2, h2c::get("/after"), b"").await.unwrap();
    assert_eq!(a.status, 200);

    assert!(
        gw.metric("holdfast_tls_connections_total{protocol=\"h2\"}")
            .await
            >= 1.0
    );
    assert!(gw.metric("holdfast_h2_streams_total").await >= 7.0);
}

/// Test 6, part 2: 200 streams at once on one connection, wave after wave, while the primary
/// is killed: every stream is answered 200 (the backup takes over the same requests), the
/// connection advertises at least 200 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_while_the_primary_dies() {
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    let gw = Gateway::start_with_https(&primary_and_backup(
        ("primary", primary.addr()),
        ("backup", backup.addr()),
        "",
    ))
    .await;
    let (h2, _conn) = h2c::connect(gw.https.unwrap()).await;
    let h2 = h2.ready().await.unwrap();
    assert!(
        h2.current_max_send_streams() >= 200,
        "{}",
        h2.current_max_send_streams()
    );

    let (mut answered, mut failed, mut by_backend) =
        (0, Vec::new(), std::collections::BTreeMap::new());
    let start = Instant::now();
    let mut killed = false;
    while start.elapsed() < Duration::from_secs(5) {
        if !killed && start.elapsed() > Duration::from_millis(1500) {
            primary.stop();
            killed = true;
        }
        let wave: Vec<_> = (0..200)
            .map(|i| {
                let mut h2 = h2.clone();
                tokio::spawn(
                    async move { h2c::send(&mut h2, h2c::get(&format!("/w{i}")), b"").await },
                )
            })
            .collect();
        for stream in wave {
            match stream.await.unwrap() {
                Ok(a) if a.status == 200 => {
                    answered += 1;
                    *by_backend
                        .entry(a.header("x-backend").unwrap_or("?").to_string())
                        .or_insert(0) += 1;
                }
                Ok(a) => failed.push(format!("{} {}", a.status, text(&a.body))),
                Err(e) => failed.push(e),
            }
        }
    }
    println!("test 6: 200 streams at once: {answered} answered 200, {} failed, by backend {by_backend:?}", failed.len());
    assert!(killed);
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        by_backend.get("primary").is_some_and(|&n| n > 0),
        "{by_backend:?}"
    );
    assert!(
        by_backend.get("backup").is_some_and(|&n| n > 0),
        "{by_backend:?}"
    );
}

/// Nothing can serve: the fallback answer, over h2 as over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_answers_h2_streams() {
    let nothing_listens = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let gw = Gateway::start_with_https(&one_backend(nothing_listens, "")).await;
    let (mut h2, _conn) = h2c::connect(gw.https.unwrap()).await;
    let a = h2c::send(&mut h2, h2c::get("/"), b"").await.unwrap();
    assert_eq!(a.status, 503);
    assert!(a.header("retry-after").is_some());
    assert!(!a.body.is_empty());
}

/// GOAWAY at a reload and at a graceful stop: the stream in flight is answered whole, the
/// connection then ends (the client's next streams go on a new connection, which a reload
/// serves). A connection idle for `keepalive_timeout` is closed, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_lets_streams_in_flight_finish() {
    let slow = holdfast_tests::scripted_backend("slow", |head| {
        Some(match head.starts_with(b"GET /slow") {
            true => Duration::from_millis(1500),
            false => Duration::ZERO,
        })
    })
    .await;
    let pools = one_backend(slow, "");
    let gw = Gateway::start_with_https_and_listen(
        "keepalive_timeout = \"3s\"\nshutdown_delay = \"0s\"\n",
        &pools,
    )
    .await;
    let https = gw.https.unwrap();

    // A reload while a stream waits for its answer.
    let (mut h2, conn) = h2c::connect(https).await;
    let in_flight = tokio::spawn({
        let mut h2 = h2.clone();
        async move { h2c::send(&mut h2, h2c::get("/slow"), b"").await }
    });
    one_in_flight(&gw).await;
    gw.reload();
    let a = in_flight.await.unwrap().unwrap();
    assert_eq!(a.status, 200, "the stream in flight is answered");
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the connection ended cleanly: {ended:?}"
    );
    assert!(h2c::send(&mut h2, h2c::get("/"), b"").await.is_err());
    let (mut h2, conn) = h2c::connect(https).await;
    assert_eq!(
        h2c::send(&mut h2, h2c::get("/"), b"").await.unwrap().status,
        200
    );

    // Idle: still open after 1.5 s, closed by the 3 s timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!conn.is_finished(), "closed before keepalive_timeout");
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "idle connection closed: {ended:?}"
    );

    // A graceful stop while a stream waits.
    let (h2, conn) = h2c::connect(https).await;
    let in_flight = tokio::spawn({
        let mut h2 = h2.clone();
        async move { h2c::send(&mut h2, h2c::get("/slow"), b"").await }
    });
    one_in_flight(&gw).await;
    gw.signal("TERM");
    let a = in_flight.await.unwrap().unwrap();
    assert_eq!(
        a.status, 200,
        "the stream in flight is answered through the stop"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the connection ended cleanly: {ended:?}"
    );
}

/// Attacks: rapid reset, a ping flood, a settings flood and a CONTINUATION flood each get
/// their connection closed (GOAWAY, ENHANCE_YOUR_CALM for ours) and counted, while another
/// visitor's connection is served all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_closed_and_other_visitors_served() {
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&pool(web.addr())).await;
    let https = gw.https.unwrap();
    let (mut visitor, _conn) = h2c::connect(https).await;
    for (kind, bytes) in attacks() {
        let code = attack(https, bytes).await;
        if kind != "limits" {
            assert_eq!(code, Some(h2c::ENHANCE_YOUR_CALM), "{kind}");
        }
        abuse_counted(&gw, kind).await;
        let a = h2c::send(&mut visitor, h2c::get("/"), b"").await.unwrap();
        assert_eq!(a.status, 200, "the visitor is served after {kind}");
    }
}

/// The same four attacks on connections over `listen.max_connections`: the over-the-cap path
/// has the same guard and limits (it had `h2`'s defaults: no guard, 16 MiB header lists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_over_the_cap_are_closed_as_well() {
    let web = backend("web").await;
    let gw = Gateway::start_with_https_and_listen("max_connections = 1\n", &pool(web.addr())).await;
    let https = gw.https.unwrap();
    let (mut visitor, _conn) = within_the_cap(https).await;
    for (kind, bytes) in attacks() {
        let shed = gw.metric("holdfast_shed_connections_total").await;
        attack(https, bytes).await;
        abuse_counted(&gw, kind).await;
        assert!(
            gw.metric("holdfast_shed_connections_total").await > shed,
            "{kind}: the attacker's connection was over the cap"
        );
        let a = h2c::send(&mut visitor, h2c::get("/"), b"").await.unwrap();
        assert_eq!(a.status, 200, "the visitor is served after {kind}");
    }
}

/// An h2 connection served within `max_connections = 1`: the gateway may still count the
/// connections its start-up wait opened and closed, and shed a first one.
async fn within_the_cap(
    https: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let started = Instant::now();
    loop {
        let (mut send, conn) = h2c::connect(https).await;
        if let Ok(a) = h2c::send(&mut send, h2c::get("/"), b"").await {
            if a.status == 200 {
                return (send, conn);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no connection within the cap"
        );
        drop((send, conn));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until one request is in flight (a stream waiting for its answer).
async fn one_in_flight(gw: &Gateway) {
    wait_until(Duration::from_secs(5), "a request in flight", || async {
        gw.metric("holdfast_requests_in_flight").await == 1.0
    })
    .await;
}

/// Waits until the attack `kind` is counted.
async fn abuse_counted(gw: &Gateway, kind: &str) {
    let sample = format!("holdfast_h2_abuse_total{{kind=\"{kind}\"}}");
    wait_until(
        Duration::from_secs(5),
        &format!("{kind} counted"),
        || async { gw.metric(&sample).await >= 1.0 },
    )
    .await;
}

/// Sends `bytes` on a new h2 connection to `https`; the error code of the last GOAWAY the
/// server sent before it closed the connection (an over-the-cap connection may send a
/// graceful one first).
async fn attack(https: std::net::SocketAddr, bytes: Vec<u8>) -> Option<u32> {
    let mut attacker = h2c::raw(https).await;
    // Written from a task: the server stops reading once it has seen enough.
    let writer = tokio::spawn(async move {
        let _ = attacker.write_all(&bytes).await;
        attacker
    });
    let mut attacker = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the attack was read or refused")
        .unwrap();
    let mut last = None;
    while let Some(code) = h2c::goaway(&mut attacker).await {
        last = Some(code);
        if code == h2c::ENHANCE_YOUR_CALM {
            break;
        }
    }
    last
}

/// Rapid reset, a ping flood, a settings flood and a CONTINUATION flood, by the name they are
/// counted under.
fn attacks() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("rapid_reset", {
            let mut bytes = Vec::new();
            for i in 0..300u32 {
                let id = 2 * i + 1;
                bytes.extend(h2c::get_frame(id));
                bytes.extend(h2c::frame(
                    h2c::RST_STREAM,
                    0,
                    id,
                    &h2c::CANCEL.to_be_bytes(),
                ));
            }
            bytes
        }),
        (
            "ping_flood",
            (0..300)
                .flat_map(|_| h2c::frame(h2c::PING, 0, 0, &[7; 8]))
                .collect(),
        ),
        (
            "settings_flood",
            (0..300)
                .flat_map(|_| h2c::frame(h2c::SETTINGS, 0, 0, &[]))
                .collect(),
        ),
        ("limits", {
            // A HEADERS frame never ended, then CONTINUATION frames without end.
            let mut bytes = h2c::frame(h2c::HEADERS, 0x1, 1, &[0x82, 0x87, 0x84]);
            for _ in 0..20_000 {
                bytes.extend(h2c::frame(0x9, 0, 1, &[0x40, 1, b'a', 1, b'b']));
            }
            bytes
        }),
    ]
}

/// `listen.alpn` decides what is offered: HTTP/1.1 only, and an h2-first client speaks
/// HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_can_leave_h2_out() {
    let web = backend("web").await;
    let gw =
        Gateway::start_with_https_and_listen("alpn = [\"http/1.1\"]\n", &pool(web.addr())).await;
    let (_, agreed) = h2c::tls(gw.https.unwrap(), b"\x02h2\x08http/1.1").await;
    assert_eq!(agreed.as_deref(), Some(&b"http/1.1"[..]));
}

/// Streams one after another on one connection reuse one backend connection (the lane keeps
/// it), and 20 at once use about 20, not one per stream ever sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reuse_backend_connections() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    let gw = Gateway::start_with_https(&one_backend(addr, "")).await;
    let (mut h2, _conn) = h2c::connect(gw.https.unwrap()).await;
    // The health check's connection at start.
    let checks = accepted.load(Ordering::SeqCst);
    for i in 0..10 {
        let a = h2c::send(&mut h2, h2c::get(&format!("/s{i}")), b"")
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst) - checks,
        1,
        "one backend connection for ten streams in a row"
    );
    for _ in 0..5 {
        let wave: Vec<_> = (0..20)
            .map(|i| {
                let mut h2 = h2.clone();
                tokio::spawn(
                    async move { h2c::send(&mut h2, h2c::get(&format!("/p{i}")), b"").await },
                )
            })
            .collect();
        for w in wave {
            assert_eq!(w.await.unwrap().unwrap().status, 200);
        }
    }
    let used = accepted.load(Ordering::SeqCst) - checks;
    println!("100 streams, 20 at a time: {used} backend connections");
    assert!(
        used <= 25,
        "{used} backend connections for 20 streams at a time"
    );
}

/// An h2 connection over `listen.max_connections` is still accepted: its streams get the
/// fallback answer (503, Retry-After) and it is closed, as an HTTP/1.1 one would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_gets_the_fallback() {
    let web = backend("web").await;
    let gw = Gateway::start_with_https_and_listen("max_connections = 1\n", &pool(web.addr())).await;
    let https = gw.https.unwrap();
    let (mut first, _first_conn) = within_the_cap(https).await;
    let (mut over, over_conn) = h2c::connect(https).await;
    let a = h2c::send(&mut over, h2c::get("/"), b"").await.unwrap();
    assert_eq!(a.status, 503);
    assert!(a.header("retry-after").is_some());
    let ended = tokio::time::timeout(Duration::from_secs(5), over_conn).await;
    assert!(ended.is_ok(), "the connection over the cap is closed");
    assert!(gw.metric("holdfast_shed_connections_total").await >= 1.0);
    // The first one is served on.
    assert_eq!(
        h2c::send(&mut first, h2c::get("/"), b"")
            .await
            .unwrap()
            .status,
        200
    );
}
