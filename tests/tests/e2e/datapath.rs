//! The HTTP/1.1 data path end to end: bodies in every framing and at size, HEAD and bodiless
//! statuses, `Expect: 100-continue`, upgrades, hop-by-hop headers, pipelining.

use holdfast_tests::raw::{Answer, RawBackend};
use holdfast_tests::{backend, client, Gateway};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_backend(addr: SocketAddr) -> String {
    format!("[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{addr}\" }}]\n")
}

/// Sends `request` on `s`, then reads as [`read_until`] does.
async fn ask(s: &mut TcpStream, request: &[u8], done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    s.write_all(request).await.unwrap();
    read_until(s, done).await
}

/// Reads from `s` until `done` holds for everything read (or 5 s pass).
async fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done(&got) {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    got
}

/// Asserts that `got` is a 200 answer, showing it otherwise.
fn assert_200(got: &[u8]) {
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(got)
    );
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_in_both_directions_and_both_framings() {
    let web = backend("web").await;
    let gw = Gateway::start(&one_backend(web.addr())).await;
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // Content-Length request body, echoed back: 5 MB each way.
    let r = client()
        .post(gw.url("/up"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == body);

    // Chunked request body, written as a client streaming an upload of unknown length would.
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let mut request =
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(300_000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (mut read, mut write) = s.split();
    let send = async { write.write_all(&request).await.unwrap() };
    let receive = async {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    break;
                }
            }
            match tokio::time::timeout(Duration::from_secs(10), read.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        got[head_end..] == body[..],
        "the chunked upload arrived whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_close_delimited_answers_reach_the_visitor_whole() {
    let raw = RawBackend::start(|request| {
        if request.starts_with(b"GET /chunked ") {
            Answer::keep(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        } else {
            Answer::close(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the backend closes")
        }
    })
    .await;
    let gw = Gateway::start(&one_backend(raw.addr)).await;
    let c = client();
    let r = c.get(gw.url("/chunked")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello world");
    let r = c.get(gw.url("/close")).send().await.unwrap();
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(r.text().await.unwrap(), "until the backend closes");
    // And the gateway still answers on a new connection.
    let r = c.get(gw.url("/chunked")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let raw = RawBackend::start(|request| match &request[..8] {
        b"GET /204" => Answer::keep(b"HTTP/1.1 204 No Content\r\n\r\n"),
        b"GET /304" => Answer::keep(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
        b"HEAD /x " => Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        _ => Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    })
    .await;
    let gw = Gateway::start(&one_backend(raw.addr)).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    // HEAD: the backend sends no body for it; the length header says what GET would get.
    let got = ask(&mut s, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", |b| {
        b.ends_with(b"\r\n\r\n")
    })
    .await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    for path in ["/204", "/304"] {
        let got = ask(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
            |b| b.ends_with(b"\r\n\r\n"),
        )
        .await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {}", &path[1..])),
            "{text}"
        );
    }
    let got = ask(&mut s, b"GET /last HTTP/1.1\r\nHost: a\r\n\r\n", |b| {
        b.ends_with(b"hello")
    })
    .await;
    assert!(
        got.ends_with(b"hello"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        raw.requests().len(),
        4,
        "the visitor's one connection carried all four"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue() {
    let web = backend("web").await;
    let gw = Gateway::start(&one_backend(web.addr())).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let got = ask(
        &mut s,
        b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        |b| b.ends_with(b"\r\n\r\n"),
    )
    .await;
    assert_eq!(got, b"HTTP/1.1 100 Continue\r\n\r\n");
    let got = ask(&mut s, b"body", |b| b.ends_with(b"body")).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(
        count(&got, b"100 Continue"),
        0,
        "the backend's own 100 is not passed on twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_are_handed_over_intact() {
    let raw = RawBackend::start(|_| {
        Answer::upgrade(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: k\r\n\r\n")
    })
    .await;
    let gw = Gateway::start(&one_backend(raw.addr)).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let got = ask(&mut s, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n", |b| b.ends_with(b"\r\n\r\n")).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Upgrade: websocket\r\n") && text.contains("Sec-WebSocket-Accept: k\r\n"),
        "{text}"
    );
    let echoed = ask(&mut s, b"ping over the upgraded connection", |b| {
        b.ends_with(b"connection")
    })
    .await;
    assert_eq!(echoed, b"ping over the upgraded connection");
    let request = String::from_utf8_lossy(&raw.requests()[0]).to_string();
    assert!(
        request.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
        "{request}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_gateway_and_pipelined_requests_keep_order() {
    let raw = RawBackend::start(|request| {
        let path = request.split(|&b| b == b' ').nth(1).unwrap_or(b"/").to_vec();
        let mut answer = format!("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n", path.len()).into_bytes();
        answer.extend_from_slice(&path);
        Answer::keep(&answer)
    })
    .await;
    let gw = Gateway::start(&one_backend(raw.addr)).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let got = ask(&mut s, b"GET /one HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 300\r\nX-Secret: s\r\nTE: trailers\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n", |b| b.ends_with(b"/three")).await;
    let text = String::from_utf8_lossy(&got);
    let one = text.find("/one").unwrap();
    let two = text.find("/two").unwrap();
    let three = text.find("/three").unwrap();
    assert!(one < two && two < three, "{text}");
    assert!(!text.to_ascii_lowercase().contains("keep-alive"), "{text}");
    let first = String::from_utf8_lossy(&raw.requests()[0]).to_ascii_lowercase();
    for gone in ["x-secret", "keep-alive", "te:", "connection"] {
        assert!(!first.contains(gone), "{gone} reached the backend: {first}");
    }
    assert!(first.contains("x-forwarded-for: 127.0.0.1\r\n"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_framing_is_refused_and_not_forwarded() {
    let raw =
        RawBackend::start(|_| Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
            .await;
    let gw = Gateway::start(&one_backend(raw.addr)).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let got = ask(&mut s, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsmuggled\r\n0\r\n\r\n", |b| b.ends_with(b"\n") && b.len() > 20).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(raw
        .requests()
        .iter()
        .all(|r| !r.windows(8).any(|w| w == b"smuggled")));
}

/// A backend that closes its side of a kept connection between two requests costs the visitor
/// nothing, even for a POST whose body could not be sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_backend_connection_closed_meanwhile_is_not_a_visitor_error() {
    let raw =
        RawBackend::start(|_| Answer::close(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
            .await;
    let gw = Gateway::start(&one_backend(raw.addr)).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let got = ask(&mut s, b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n", |b| {
        b.ends_with(b"ok")
    })
    .await;
    assert_200(&got);
    // The backend's close reaches the gateway before the next request does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = ask(
        &mut s,
        b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\ndata",
        |b| b.ends_with(b"ok"),
    )
    .await;
    assert_200(&got);
    assert_eq!(raw.requests().len(), 2);
}

/// A connection quiet between requests gives its buffers back (the gateway's memory with
/// thousands of idle connections) and serves its next request as before, even one whose head
/// arrives a byte at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_serves_its_next_request_as_before() {
    let raw =
        RawBackend::start(|_| Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
            .await;
    let gw = Gateway::start(&one_backend(raw.addr)).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let got = ask(&mut s, b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", |b| {
        b.ends_with(b"ok")
    })
    .await;
    assert_200(&got);
    for round in 2..4 {
        // Longer than the gateway's linger (250 ms) before it lets the buffers go.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let request = format!("GET /{round} HTTP/1.1\r\nHost: a\r\n\r\n");
        for (i, byte) in request.as_bytes().iter().enumerate() {
            s.write_all(&[*byte]).await.unwrap();
            if i < 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let got = read_until(&mut s, |b| b.ends_with(b"ok")).await;
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "round {round}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let seen = raw.requests();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[2].starts_with(b"GET /3 HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&seen[2])
    );
}

/// An answer's head reaches the visitor as soon as the backend sends it, not with the body's
/// first bytes: a slow or streamed body does not hold its head back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_is_passed_on_before_a_slow_body() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let go2 = go.clone();
    // Every connection is served alike (the health probe's too).
    let backend = tokio::spawn(async move {
        while let Ok((mut b, _)) = listener.accept().await {
            let go = go2.clone();
            tokio::spawn(async move {
                let head = read_until(&mut b, |r| r.windows(4).any(|w| w == b"\r\n\r\n")).await;
                if head.is_empty() {
                    return;
                }
                let _ = b
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                // The body only once the visitor has seen the head.
                go.notified().await;
                let _ = b.write_all(b"5\r\nhello\r\n0\r\n\r\n").await;
                let _ = read_until(&mut b, |_| false).await;
            });
        }
    });
    let gw = Gateway::start(&format!(
        "[pools.app.health.tcp]\ninterval = \"60s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{addr}\" }}]\n"
    ))
    .await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let head = ask(&mut s, b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n", |b| {
        b.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "no head before the body: {:?}",
        String::from_utf8_lossy(&head)
    );
    go.notify_one();
    let rest = read_until(&mut s, |b| b.ends_with(b"0\r\n\r\n")).await;
    let all = [head, rest].concat();
    assert!(
        all.ends_with(b"5\r\nhello\r\n0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    drop(s);
    backend.abort();
}
