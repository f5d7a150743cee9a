//! Behind Cloudflare: who is believed about the visitor's address, and who may connect at all.
//! Two loopback addresses stand for the two kinds of peer: 127.0.0.2, inside a trusted range
//! the test configures (Cloudflare's own ranges are left out), and 127.0.0.1, outside it.

use holdfast_tests::raw::{Answer, RawBackend};
use holdfast_tests::{wait_until, Gateway};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRUST: &str = "[trust]\ncloudflare = false\ntrusted_proxies = [\"127.0.0.2/32\"]\n";

async fn backend() -> RawBackend {
    RawBackend::start(|_| Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await
}

/// Sends `request` from `from` (a loopback address) and returns the answer; empty when the
/// connection was closed without one.
async fn from(from: &str, to: SocketAddr, request: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    let _ = s.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn last_request(backend: &RawBackend) -> String {
    let requests = backend.requests();
    String::from_utf8_lossy(requests.last().expect("a request reached the backend")).into_owned()
}

/// Test 1: the trusted peer names the visitor; nobody else can, whatever it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trusted_peer_names_the_visitor() {
    let web = backend().await;
    let gw = Gateway::start(&format!(
        "{TRUST}[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr
    ))
    .await;
    let claims = "CF-Connecting-IP: 203.0.113.9\r\nTrue-Client-IP: 203.0.113.9\r\n\
                  X-Real-IP: 203.0.113.9\r\nX-Forwarded-For: 203.0.113.9\r\n\
                  Forwarded: for=203.0.113.9\r\nCF-Ray: 8c1-AMS\r\n";
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\n{claims}Connection: close\r\n\r\n");

    let answer = from("127.0.0.2", gw.http, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = last_request(&web);
    for line in [
        "X-Real-IP: 203.0.113.9\r\n",
        "X-Forwarded-For: 203.0.113.9, 203.0.113.9\r\n",
        "CF-Connecting-IP: 203.0.113.9\r\n",
        "CF-Ray: 8c1-AMS\r\n",
    ] {
        assert!(
            seen.contains(line),
            "from the trusted peer, no {line:?} in:\n{seen}"
        );
    }

    let answer = from("127.0.0.1", gw.http, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = last_request(&web);
    assert!(
        !seen.contains("203.0.113.9"),
        "a forged address reached the backend:\n{seen}"
    );
    for line in [
        "X-Real-IP: 127.0.0.1\r\n",
        "X-Forwarded-For: 127.0.0.1\r\n",
        "CF-Ray: 8c1-AMS\r\n",
    ] {
        assert!(
            seen.contains(line),
            "from the untrusted peer, no {line:?} in:\n{seen}"
        );
    }
}

/// Test 2: a `trusted_only` listener closes an untrusted peer's connection before reading a
/// byte, serves the trusted one and the exceptions, and counts what it closed; a reload that
/// trusts the peer lets it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_only_listener_closes_the_others_at_accept() {
    let web = backend().await;
    let pools = |extra: &str| {
        format!(
            "[trust]\ncloudflare = false\ntrusted_proxies = [\"127.0.0.2/32\"{extra}]\n\
             [[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
            web.addr
        )
    };
    let listen = "trusted_only = [\"{http}\"]\ntrusted_only_exceptions = [\"127.0.0.3\"]";
    let gw = Gateway::start_with_listen(listen, &pools("")).await;
    let request = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let rejected = "holdfast_rejected_connections_total{reason=\"untrusted\"}";
    let before = gw.metric(rejected).await;

    assert_eq!(
        from("127.0.0.1", gw.http, request).await,
        "",
        "closed without an answer"
    );
    assert!(from("127.0.0.2", gw.http, request)
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(from("127.0.0.3", gw.http, request)
        .await
        .starts_with("HTTP/1.1 200"));
    assert_eq!(
        web.requests().len(),
        2,
        "the closed connection's request went nowhere"
    );
    assert_eq!(gw.metric(rejected).await - before, 1.0);

    // Trust follows the config: a reload trusts 127.0.0.1 too.
    let listen_text = format!(
        "[listen]\nhttp = [\"{}\"]\nadmin = \"{}\"\ntrusted_only = [\"{}\"]\n",
        gw.http, gw.admin, gw.http
    );
    gw.rewrite(Some(&listen_text), &pools(", \"127.0.0.1\""));
    assert!(gw.command("reload").status.success());
    wait_until(Duration::from_secs(2), "127.0.0.1 is let in", || async {
        from("127.0.0.1", gw.http, request)
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
}
