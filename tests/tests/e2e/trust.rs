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
    gw.reload();
    wait_until(Duration::from_secs(2), "127.0.0.1 is let in", || async {
        from("127.0.0.1", gw.http, request)
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
}

/// Test 5: Cloudflare's ranges refreshed from a local server standing in for Cloudflare's API:
/// a new list is applied (127.0.0.2 becomes a trusted peer, let in by a `trusted_only`
/// listener); a server that fails or answers
/// garbage leaves the list in use as it was; a restart starts from the last good list on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_refreshed_and_never_lost() {
    let web = backend().await;
    let answer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let api = RawBackend::start({
        let answer = answer.clone();
        move |_| Answer::keep(&answer.lock().unwrap())
    })
    .await;
    let set = |status: &str, body: &str| {
        *answer.lock().unwrap() = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    };
    set(
        "200 OK",
        r#"{"result":{"ipv4_cidrs":["127.0.0.2/32"],"ipv6_cidrs":["2400:cb00::/32"],"etag":"e1"},"success":true,"errors":[]}"#,
    );
    let files = holdfast_tests::gateway::Scratch::new();
    let file = files.path().join("ips.json");
    // A trusted_only listener: the refreshed ranges let a peer in, as they let it name the
    // visitor.
    let mut gw = Gateway::start_with_listen(
        "shutdown_delay = \"0s\"\ntrusted_only = [\"{http}\"]",
        &format!(
            "[trust]\nrefresh_url = \"http://{}/client/v4/ips\"\nrefresh_interval = \"1s\"\nrefresh_file = \"{}\"\n\
             [[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
            api.addr,
            file.display(),
            web.addr
        ),
    )
    .await;
    let request =
        "GET / HTTP/1.1\r\nHost: a\r\nCF-Connecting-IP: 203.0.113.9\r\nConnection: close\r\n\r\n";
    let http = gw.http;
    let trusted = || async {
        let answered = !from("127.0.0.2", http, request).await.is_empty();
        answered && last_request(&web).contains("X-Real-IP: 203.0.113.9\r\n")
    };
    wait_until(
        Duration::from_secs(5),
        "the refreshed list trusts 127.0.0.2",
        trusted,
    )
    .await;
    assert_eq!(
        gw.metric("holdfast_trusted_ranges").await,
        24.0,
        "22 built in + 2 refreshed"
    );
    assert!(file.exists(), "the good list is kept on disk");

    for (status, body) in [
        ("200 OK", "<html>maintenance</html>"),
        ("500 Internal Server Error", "{}"),
    ] {
        let failures = gw
            .metric("holdfast_trusted_ranges_refreshes_total{result=\"failure\"}")
            .await;
        set(status, body);
        wait_until(
            Duration::from_secs(5),
            "the bad refresh is counted",
            || async {
                gw.metric("holdfast_trusted_ranges_refreshes_total{result=\"failure\"}")
                    .await
                    > failures
            },
        )
        .await;
        assert!(
            trusted().await,
            "after a {status} answer, the list in use stays"
        );
    }

    // A restart while the API answers garbage starts from the list on disk.
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await);
    gw.restart().await;
    assert!(trusted().await, "the last good list, from disk");
    assert!(gw
        .log()
        .contains("Cloudflare's ranges from the last good refresh"));
}
