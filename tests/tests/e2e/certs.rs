//! TLS toward Cloudflare: certificates chosen by SNI, replaced on disk without a restart (and a
//! broken replacement refused), Authenticated Origin Pulls in `require` and `log` modes.

use holdfast_tests::gateway::Scratch;
use holdfast_tests::{backend, tls, wait_until, Gateway};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn der(pem: &[u8]) -> Vec<u8> {
    openssl::x509::X509::from_pem(pem)
        .unwrap()
        .to_der()
        .unwrap()
}

/// A pool of the one backend `web`.
fn one_backend(web: &holdfast_tests::DemoBackend) -> String {
    format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    )
}

/// One request over an established TLS stream; the answer, or empty if there was none.
async fn request(mut stream: tokio_openssl::SslStream<tokio::net::TcpStream>) -> String {
    let sent = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    if sent.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Test 3: two certificates by SNI beside the default; one replaced on disk while handshakes
/// go on (none refused); a broken replacement refused, the old one serving on, the error in
/// `/status` and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_sni_replaced_and_a_broken_one_refused() {
    let web = backend("web").await;
    let files = Scratch::new();
    let (a_cert, a_key) = tls::self_signed_pem("a.test");
    let (b_cert, b_key) = tls::self_signed_pem("*.b.test");
    let write = |name: &str, bytes: &[u8]| {
        let tmp = files.path().join("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, files.path().join(name)).unwrap();
    };
    write("a.pem", &a_cert);
    write("a.key", &a_key);
    write("b.pem", &b_cert);
    write("b.key", &b_key);
    let dir = files.path().display();
    let gw = Gateway::start_with_https_and_listen(
        &format!(
            "[[listen.certificates]]\ncert = \"{dir}/a.pem\"\nkey = \"{dir}/a.key\"\n\
             [[listen.certificates]]\ncert = \"{dir}/b.pem\"\nkey = \"{dir}/b.key\"\n"
        ),
        &format!(
            "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
            web.addr()
        ),
    )
    .await;
    let https = gw.https.unwrap();
    let presented = |sni: Option<&'static str>| async move {
        tls::handshake(https, sni, None).await.expect("handshake").0
    };
    let default = presented(None).await;
    // (asked for, the certificate presented)
    for (sni, want) in [
        (Some("a.test"), der(&a_cert)),
        (Some("www.b.test"), der(&b_cert)),
        (Some("unknown.test"), default.clone()),
        (None, default.clone()),
    ] {
        assert_eq!(presented(sni).await, want, "asked for {sni:?}");
    }
    let (_, stream) = tls::handshake(https, Some("a.test"), None).await.unwrap();
    assert!(request(stream).await.starts_with("HTTP/1.1 200"));

    // a.test renewed while handshakes go on: none fails, and the new one comes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handshakes = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut n, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tls::handshake(https, Some("a.test"), None).await {
                    Ok(_) => n += 1,
                    Err(e) => failed.push(e),
                }
            }
            (n, failed)
        }
    });
    let (a2_cert, a2_key) = tls::self_signed_pem("a.test");
    write("a.key", &a2_key);
    write("a.pem", &a2_cert);
    wait_until(
        Duration::from_secs(3),
        "the renewed a.test is presented",
        || async { presented(Some("a.test")).await == der(&a2_cert) },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, failed) = handshakes.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {n} handshakes failed: {failed:?}",
        failed.len()
    );
    assert!(n > 0);

    // A broken replacement: refused, the renewed one serves on, the problem is told.
    write(
        "a.pem",
        b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
    );
    wait_until(
        Duration::from_secs(3),
        "the broken certificate is refused",
        || async {
            gw.metric("holdfast_config_reloads_total{result=\"failure\"}")
                .await
                >= 1.0
        },
    )
    .await;
    assert_eq!(
        presented(Some("a.test")).await,
        der(&a2_cert),
        "the old one serves on"
    );
    let status: Value = serde_json::from_str(&gw.status().await).unwrap();
    let last = &status["config"]["last_reload"];
    assert_eq!(last["result"], "failure", "{last}");
    assert!(last["problems"].to_string().contains("a.pem"), "{last}");
    let expiry = gw
        .metric_sum("holdfast_certificate_expiry_timestamp_seconds{")
        .await;
    assert!(expiry > 0.0);
}

/// Test 4: Authenticated Origin Pulls. `require` refuses a client without a certificate and
/// serves one signed by the CA; `log` serves both and counts the one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_origin_pulls_require_and_log() {
    let web = backend("web").await;
    let files = Scratch::new();
    let ca = tls::ca("origin-pull test CA");
    std::fs::write(files.path().join("ca.pem"), ca.0.to_pem().unwrap()).unwrap();
    let client = tls::signed("origin-pull", &ca);
    let stranger = tls::signed("origin-pull", &tls::ca("another CA"));
    let pools = one_backend(&web);
    for mode in ["require", "log"] {
        let gw = Gateway::start_with_https_and_listen(
            &format!(
                "[listen.origin_pulls.\"{{https}}\"]\nca = \"{}\"\nmode = \"{mode}\"\n",
                files.path().join("ca.pem").display()
            ),
            &pools,
        )
        .await;
        let https = gw.https.unwrap();
        let answer = |who: Option<&'static (
            openssl::x509::X509,
            openssl::pkey::PKey<openssl::pkey::Private>,
        )>| async move {
            match tls::handshake(https, Some("localhost"), who).await {
                Ok((_, stream)) => request(stream).await,
                Err(_) => String::new(),
            }
        };
        let client: &'static _ = Box::leak(Box::new(client.clone()));
        let stranger: &'static _ = Box::leak(Box::new(stranger.clone()));
        let failures = format!("holdfast_origin_pull_failures_total{{mode=\"{mode}\"}}");
        assert!(
            answer(Some(client)).await.starts_with("HTTP/1.1 200"),
            "{mode}: the CA's client"
        );
        assert_eq!(gw.metric(&failures).await, 0.0);
        let (bare, other) = (answer(None).await, answer(Some(stranger)).await);
        match mode {
            "require" => {
                assert_eq!(bare, "", "require: no certificate, no answer");
                assert_eq!(other, "", "require: another CA's certificate, no answer");
            }
            _ => {
                assert!(
                    bare.starts_with("HTTP/1.1 200"),
                    "log: served without a certificate"
                );
                assert!(
                    other.starts_with("HTTP/1.1 200"),
                    "log: served with another CA's"
                );
            }
        }
        wait_until(
            Duration::from_secs(2),
            "both failures are counted",
            || async { gw.metric(&failures).await == 2.0 },
        )
        .await;
    }
}

/// A backend over HTTPS whose certificate comes from a private CA: verified against the
/// backend's `tls_ca` (served), and refused against the system's store (never served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_verified_against_its_own_ca() {
    let files = Scratch::new();
    let ca = tls::ca("private CA");
    std::fs::write(files.path().join("ca.pem"), ca.0.to_pem().unwrap()).unwrap();
    let leaf = tls::signed("backend.test", &ca);
    let mut acceptor =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls_server())
            .unwrap();
    acceptor.set_certificate(&leaf.0).unwrap();
    acceptor.set_private_key(&leaf.1).unwrap();
    let web = backend("web").await;
    web.set_tls(Some(acceptor.build()));
    let pool = |ca: &str| {
        format!(
            "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\", tls = true, sni = \"backend.test\"{ca} }}]\n",
            web.addr()
        )
    };
    let ca_key = format!(", tls_ca = \"{}\"", files.path().join("ca.pem").display());
    for (ca, want) in [(ca_key.as_str(), 200), ("", 503)] {
        let gw = Gateway::start(&pool(ca)).await;
        let r = holdfast_tests::client()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "tls_ca {ca:?}");
    }
}

/// An answer that closes the connection ends its TLS in order: close_notify, so that the
/// client reads a clean end and not a truncation (after which an OpenSSL client does not offer
/// that session again: a full handshake next time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_ends_tls_in_order() {
    use std::io::{Read, Write};
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&one_backend(&web)).await;
    let https = gw.https.unwrap();
    // A blocking client: its stream tells whether close_notify came.
    let (answer, shutdown) = tokio::task::spawn_blocking(move || {
        let mut connector =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
        connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
        let tcp = std::net::TcpStream::connect(https).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut stream = connector.build().connect("localhost", tcp).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        (answer, stream.get_shutdown())
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        shutdown.contains(openssl::ssl::ShutdownState::RECEIVED),
        "close_notify received: {shutdown:?}"
    );
}

/// A client that names an IP address in SNI (wrk does, and many probes) is served with the
/// default certificate, and the TLS library's warning of it is not logged once per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_as_sni_is_served_without_a_log_line() {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&one_backend(&web)).await;
    let https = gw.https.unwrap();
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    for _ in 0..3 {
        let mut ssl = connector
            .configure()
            .unwrap()
            .use_server_name_indication(false)
            .verify_hostname(false)
            .into_ssl("localhost")
            .unwrap();
        ssl.set_hostname("127.0.0.1").unwrap();
        let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
        std::pin::Pin::new(&mut stream).connect().await.unwrap();
        assert!(request(stream).await.starts_with("HTTP/1.1 200"));
    }
    let log = gw.log();
    assert!(!log.contains("SNI"), "{log}");
}

/// The listener chooses the cipher suite by its own order, AES-128-GCM first, whatever the
/// client prefers (OpenSSL's client offers AES-256-GCM first); a client that offers only
/// AES-256-GCM still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cipher_suite_is_chosen_by_the_listener() {
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&one_backend(&web)).await;
    let https = gw.https.unwrap();
    let (_, stream) = tls::handshake(https, None, None).await.unwrap();
    let cipher = stream.ssl().current_cipher().map(|c| c.name());
    assert_eq!(cipher, Some("TLS_AES_128_GCM_SHA256"));
    assert!(request(stream).await.starts_with("HTTP/1.1 200"));

    let only_256 = tokio::task::spawn_blocking(move || {
        let mut connector =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
        connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
        connector
            .set_ciphersuites("TLS_AES_256_GCM_SHA384")
            .unwrap();
        let tcp = std::net::TcpStream::connect(https).unwrap();
        let stream = connector.build().connect("localhost", tcp).unwrap();
        stream.ssl().current_cipher().map(|c| c.name().to_string())
    })
    .await
    .unwrap();
    assert_eq!(only_256.as_deref(), Some("TLS_AES_256_GCM_SHA384"));
}

/// A full handshake leaves the client one session ticket (each costs the listener an
/// encryption and a write, and a client resumes with one), and the next connection resumes
/// with it and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticket_per_handshake_and_the_next_connection_resumes() {
    use openssl::ssl::{SslConnector, SslMethod, SslSessionCacheMode, SslVerifyMode};
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    let web = backend("web").await;
    let gw = Gateway::start_with_https(&one_backend(&web)).await;
    let https = gw.https.unwrap();
    let (tickets, resumed, answer) = tokio::task::spawn_blocking(move || {
        let tickets = Arc::new(Mutex::new(Vec::new()));
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        builder.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        let kept = tickets.clone();
        builder.set_new_session_callback(move |_, session| kept.lock().unwrap().push(session));
        let connector = builder.build();
        let get = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        // The tickets come after the handshake: the answer is read to its end, and the
        // connection closed in order.
        let tcp = std::net::TcpStream::connect(https).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut first = connector.connect("localhost", tcp).unwrap();
        first.write_all(get).unwrap();
        let _ = first.read_to_end(&mut Vec::new());
        let _ = first.shutdown();
        let count = tickets.lock().unwrap().len();
        let session = tickets.lock().unwrap().pop().expect("a ticket");

        let tcp = std::net::TcpStream::connect(https).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut config = connector.configure().unwrap();
        // SAFETY: the session came from a connection made with this connector's own context.
        #[allow(unsafe_code)]
        unsafe {
            config.set_session(&session).unwrap();
        }
        let mut second = config.connect("localhost", tcp).unwrap();
        let resumed = second.ssl().session_reused();
        second.write_all(get).unwrap();
        let mut answer = Vec::new();
        let _ = second.read_to_end(&mut answer);
        (
            count,
            resumed,
            String::from_utf8_lossy(&answer).into_owned(),
        )
    })
    .await
    .unwrap();
    assert_eq!(tickets, 1, "tickets after a full handshake");
    assert!(resumed, "the next connection resumes with the ticket");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
