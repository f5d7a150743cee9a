//! Backend connections a visitor connection leaves when it ends: the next visitor connection
//! (of the same worker) that goes to that backend takes one instead of opening its own, and a
//! spare the backend closed meanwhile costs the visitor nothing.

use holdfast_tests::gateway::THREADS;
use holdfast_tests::h2 as h2c;
use holdfast_tests::{client, one_backend, Gateway};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that counts the connections that brought it a request, and answers the `n`th
/// request of each connection (from 1) as `answer(n)` says: 200 and the connection kept, or
/// (`false`) closed without an answer, as a backend whose keep-alive timeout ends just then.
async fn counting_backend(answer: fn(usize) -> bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let used = Arc::new(AtomicUsize::new(0));
    let counter = used.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut buf, mut chunk, mut n) = (Vec::new(), [0u8; 4096], 0);
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let body: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() < end + 4 + body {
                            break;
                        }
                        buf.drain(..end + 4 + body);
                        n += 1;
                        if n == 1 {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        if !answer(n) {
                            return; // closed, the request unanswered
                        }
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(read) if read > 0 => buf.extend_from_slice(&chunk[..read]),
                        _ => return,
                    }
                }
            });
        }
    });
    (addr, used)
}

/// Sends `request` on a new connection to `addr` and reads until the gateway closes it.
async fn once(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the gateway kept the connection open");
    String::from_utf8_lossy(&got).into_owned()
}

/// `holdfast_upstream_connections_total` of backend `addr` in pool `app`, by source (`opened`
/// or `spare`), as `metrics` show it.
fn began_on(metrics: &str, addr: SocketAddr) -> impl Fn(&str) -> f64 + '_ {
    move |source| {
        holdfast_tests::gateway::sample_value(
            metrics,
            &format!(
                "holdfast_upstream_connections_total{{backend=\"{addr}\",pool=\"app\",source=\"{source}\"}}"
            ),
        )
    }
}

fn is_ok(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok")
}

/// Visitors that each open a connection, send a request and close (Cloudflare does this all
/// day) use one backend connection between them, over HTTP/1.1 and h2 alike, instead of one
/// each; the metric tells where each came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_connections_that_end_leave_their_backend_connection_to_the_next() {
    let (addr, used) = counting_backend(|_| true).await;
    let gw = Gateway::start_with_https_and_env(&one_backend(addr, ""), &[(THREADS, "1")]).await;
    for i in 0..10 {
        let request = format!("GET /{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let answer = once(gw.http, request.as_bytes()).await;
        assert!(is_ok(&answer), "{answer}");
    }
    // Visitors that close without saying so first.
    for i in 0..5 {
        let mut s = TcpStream::connect(gw.http).await.unwrap();
        let request = format!("GET /quiet{i} HTTP/1.1\r\nHost: a\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let head = holdfast_tests::read_answer(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        drop(s);
        // The gateway sees the close before the next visitor comes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An h2 visitor's first stream, then a visitor over HTTPS/1.1.
    let (mut h2, conn) = h2c::connect(gw.https.unwrap()).await;
    let answer = h2c::send(&mut h2, h2c::get("/h2"), b"").await.unwrap();
    assert_eq!(answer.status, 200);
    drop(h2);
    let _ = conn.await;
    // The stream's task gives its backend connection back a moment after the answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut tls, _) = h2c::tls(gw.https.unwrap(), b"\x08http/1.1").await;
    tls.write_all(b"GET /tls HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got).await;
    let answer = String::from_utf8_lossy(&got);
    assert!(is_ok(&answer), "{answer}");
    assert_eq!(
        used.load(Ordering::SeqCst),
        1,
        "17 visitor connections, one backend connection"
    );
    let metrics = gw.metrics().await;
    let sample = began_on(&metrics, addr);
    assert_eq!(sample("opened"), 1.0);
    assert_eq!(sample("spare"), 16.0);
    // Visitors on kept connections of their own keep their backend connection. Each answer is
    // read whole: a client drops a connection whose answer it left unread.
    let kept = client();
    for _ in 0..3 {
        let answer = kept.get(gw.url("/kept")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "ok");
    }
    assert_eq!(used.load(Ordering::SeqCst), 1);
}

/// A spare connection the backend closed while it waited is passed over; one the backend
/// closes just as the request goes out on it is replaced by a fresh one and the request sent
/// again, unseen, when it may be; and a first request that may not be sent again (a POST) does
/// not take a spare at all. No visitor sees an error, and the backend is not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_the_backend_closed_costs_the_visitor_nothing() {
    // Every connection's second request is met with a close: its keep-alive timeout ran out.
    let (addr, used) = counting_backend(|n| n == 1).await;
    let gw = Gateway::start_with_env(&one_backend(addr, ""), &[(THREADS, "1")]).await;
    let get = |path: &str| format!("GET /{path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(is_ok(&once(gw.http, get("a").as_bytes()).await));
    assert_eq!(used.load(Ordering::SeqCst), 1);
    // A GET takes the spare, which the backend closes on it: sent again on a fresh connection.
    assert!(is_ok(&once(gw.http, get("b").as_bytes()).await));
    assert_eq!(used.load(Ordering::SeqCst), 2);
    // A POST, the first request of its connection, leaves the spare (where it would have been
    // lost) and opens its own.
    let post = b"POST /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndata";
    let answer = once(gw.http, post).await;
    assert!(is_ok(&answer), "{answer}");
    assert_eq!(used.load(Ordering::SeqCst), 3);
    let metrics = gw.metrics().await;
    assert_eq!(
        holdfast_tests::gateway::sum_of(&metrics, "holdfast_upstream_no_answer_total"),
        0.0,
        "a closed spare is not the backend's failure"
    );
    let up = format!("holdfast_backend_up{{backend=\"{addr}\",pool=\"app\",tier=\"primary\"}}");
    assert_eq!(gw.metric(&up).await, 1.0);
}

/// A wave of visitor connections that use 100 backend connections at once and then end leaves
/// all 100 to the next wave: a worker keeps as many spares as its visitors use (it kept 32, and
/// the next wave opened 68 new ones: with h2 streams, a third of them opened a connection).
/// `holdfast_upstream_spare_connections` shows how many are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_visitors_leaves_all_its_backend_connections_to_the_next() {
    const WAVE: usize = 100;
    let (addr, used) = counting_backend(|_| true).await;
    let gw = Gateway::start_with_env(&one_backend(addr, ""), &[(THREADS, "1")]).await;
    for wave in 0..2 {
        // All the wave's requests are answered before any of its connections ends.
        let mut visitors = Vec::new();
        for i in 0..WAVE {
            let mut s = TcpStream::connect(gw.http).await.unwrap();
            let request = format!("GET /{wave}/{i} HTTP/1.1\r\nHost: a\r\n\r\n");
            s.write_all(request.as_bytes()).await.unwrap();
            visitors.push(s);
        }
        for s in &mut visitors {
            let head = holdfast_tests::read_answer(s).await;
            assert!(head.starts_with("http/1.1 200"), "{head}");
        }
        drop(visitors);
        // The gateway sees the closes before the next wave comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        used.load(Ordering::SeqCst),
        WAVE,
        "the second wave took the first's"
    );
    let metrics = gw.metrics().await;
    let sample = began_on(&metrics, addr);
    assert_eq!(sample("opened"), WAVE as f64);
    assert_eq!(sample("spare"), WAVE as f64);
    // The second wave's connections are kept in turn, and the metric shows them.
    let kept = format!(
        "holdfast_upstream_spare_connections{{backend=\"{addr}\",pool=\"app\",tier=\"primary\"}}"
    );
    assert_eq!(
        holdfast_tests::gateway::sample_value(&metrics, &kept),
        WAVE as f64
    );
}
