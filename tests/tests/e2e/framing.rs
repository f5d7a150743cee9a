//! Requests whose framing is ambiguous are answered 400 and never reach a backend
//! (RFC 9112 6.3): request smuggling through holdfast must be impossible.

use holdfast_tests::{backend, Gateway};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (what, raw request)
const AMBIGUOUS: &[(&str, &str)] = &[
    (
        "Content-Length and Transfer-Encoding",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding and Content-Length, other order and case",
        "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
    ),
    (
        "two different Content-Lengths",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    ),
    (
        "Content-Length list with different values",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
    ),
    (
        "obfuscated Transfer-Encoding (xchunked)",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding not ending in chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ),
    (
        "space before the colon",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    ("bare LF", "GET / HTTP/1.1\nHost: a\n\n"),
    ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n"),
    (
        "HTTP/1.0 with Transfer-Encoding",
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    ("control character in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n"),
    ("invalid Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd"),
    ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
    ("two Host lines", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    (
        "Transfer_Encoding (CGI, WSGI and Rack read it as Transfer-Encoding)",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Content_Length beside Content-Length",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent_Length: 40\r\n\r\nabcde",
    ),
    (
        "gzip before chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_get_400_and_reach_no_backend() {
    let primary = backend("primary").await;
    let gw = Gateway::start(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        primary.addr()
    ))
    .await;
    for (what, raw) in AMBIGUOUS {
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok(),
            "{what}: the connection was left open after {answer:?}"
        );
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{what}: answered {answer:?}"
        );
    }
    // Limits: 414 for a target over 16 KiB, 431 for a head over 64 KiB.
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(17 * 1024));
    let large_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70 * 1024)
    );
    for (what, raw, status) in [
        ("long target", long_target, "414"),
        ("large head", large_head, "431"),
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: answered {answer:?}"
        );
    }
    assert_eq!(
        primary.served(),
        0,
        "an ambiguous request reached the backend"
    );

    // The gateway still serves well-formed requests.
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert_eq!(primary.served(), 1);
}
