//! HTTP/2 with independent clients (issue 16, test 6): `nghttp` (nghttp2's client) and
//! `curl --http2`, not the `h2` crate holdfast itself is built on, so that a misreading shared
//! by both ends of the other tests cannot hide. `tests/run.sh` installs them as root
//! (`nghttp2-client`, `curl`); elsewhere a missing one skips its test with the line to install
//! it, except under `CI`, where a missing client fails.

use holdfast_tests::raw::{Answer as Raw, RawBackend};
use holdfast_tests::{backend, have, primary_and_backup, Gateway};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `tool` with `args` off the test's runtime and returns its standard output; it must end
/// within 20 s and succeed.
async fn run(tool: &'static str, args: Vec<String>) -> String {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("20")
            .arg(tool)
            .args(&args)
            .output()
            .expect("run the client")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{tool} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The h2 TLS connections the gateway has accepted so far.
async fn h2_connections(gw: &Gateway) -> f64 {
    gw.metric("holdfast_tls_connections_total{protocol=\"h2\"}")
        .await
}

/// `nghttp`: 200 streams at once on one connection, round after round, while the primary is
/// killed: every stream answered 200, by the primary and then the backup, one connection per
/// round; and a gRPC-style answer's trailers arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_200_streams_while_the_primary_dies() {
    if !have("nghttp", "nghttp2-client") {
        return;
    }
    let primary = backend("primary").await;
    let backup = backend("backup").await;
    let gw = Gateway::start_with_https(&primary_and_backup(
        ("primary", primary.addr()),
        ("backup", backup.addr()),
        "",
    ))
    .await;
    let url = format!("https://127.0.0.1:{}/stream", gw.https.unwrap().port());
    let (mut answered, mut by_backend) = (0, std::collections::BTreeMap::new());
    let mut rounds = 0;
    // The primary is killed while a round is on its way, not between rounds.
    let kill = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        primary.stop();
    };
    let traffic = async {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            let before = h2_connections(&gw).await;
            let args = ["-y", "-n", "-v", "-m", "200", &url]
                .map(String::from)
                .to_vec();
            let out = run("nghttp", args).await;
            assert_eq!(h2_connections(&gw).await - before, 1.0, "one connection");
            let statuses: Vec<&str> = out
                .lines()
                .filter_map(|l| l.split_once(":status: ").map(|(_, s)| s.trim()))
                .collect();
            assert_eq!(statuses.len(), 200, "200 answers in round {rounds}");
            assert!(statuses.iter().all(|s| *s == "200"), "{statuses:?}");
            answered += statuses.len();
            for l in out.lines() {
                if let Some((_, b)) = l.split_once("x-backend: ") {
                    *by_backend.entry(b.trim().to_string()).or_insert(0) += 1;
                }
            }
            rounds += 1;
        }
    };
    tokio::join!(kill, traffic);
    println!("nghttp: {rounds} rounds of 200 streams, {answered} answered 200, by backend {by_backend:?}");
    assert!(rounds >= 2, "{rounds} rounds");
    assert!(
        by_backend.get("primary").is_some_and(|&n| n > 0),
        "{by_backend:?}"
    );
    assert!(
        by_backend.get("backup").is_some_and(|&n| n > 0),
        "{by_backend:?}"
    );

    // Trailers (gRPC's status) of a chunked answer reach nghttp as h2 trailers.
    let grpc = RawBackend::start(|_| {
        Raw::keep(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n")
    })
    .await;
    let gw = Gateway::start_with_https(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        grpc.addr
    ))
    .await;
    let url = format!(
        "https://127.0.0.1:{}/pkg.Service/Call",
        gw.https.unwrap().port()
    );
    let out = run("nghttp", ["-y", "-v", &url].map(String::from).to_vec()).await;
    assert!(out.contains(":status: 200"), "{out}");
    assert!(out.contains("hello"), "{out}");
    // nghttp prints a frame's fields before the frame: the trailers are the fields of the
    // HEADERS frame that comes after the DATA and ends the stream.
    let data = out
        .find("recv DATA frame")
        .unwrap_or_else(|| panic!("a DATA frame: {out}"));
    let after = &out[data..];
    assert!(after.contains("recv HEADERS frame"), "{out}");
    assert!(after.contains("END_STREAM | END_HEADERS"), "{out}");
    assert!(after.contains("grpc-status: 0"), "{out}");
    assert!(after.contains("grpc-message: fine"), "{out}");
}

/// `curl --http2`: 100 requests multiplexed on one connection (`--parallel`), every one
/// answered 200 over HTTP/2; a 100 kB POST body arrives whole (the backend echoes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_multiplexes_on_one_connection() {
    if !have("curl", "curl") {
        return;
    }
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    ))
    .await;
    let base = format!("https://127.0.0.1:{}", gw.https.unwrap().port());
    let mut args: Vec<String> = [
        "--http2",
        "-k",
        "-s",
        "--parallel",
        "--parallel-max",
        "100",
        "-w",
        "%{http_version} %{response_code}\\n",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..100 {
        args.extend(["-o".into(), "/dev/null".into(), format!("{base}/c{i}")]);
    }
    let before = h2_connections(&gw).await;
    let out = run("curl", args).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 100, "{out}");
    assert!(lines.iter().all(|l| *l == "2 200"), "{out}");
    assert_eq!(
        h2_connections(&gw).await - before,
        1.0,
        "multiplexed on one connection"
    );

    let body = "x".repeat(100_000);
    let args = ["--http2", "-k", "-s", "-X", "POST", "--data-binary", &body]
        .map(String::from)
        .into_iter()
        .chain([
            "-w".into(),
            "\\n%{http_version} %{response_code}".into(),
            format!("{base}/echo"),
        ])
        .collect();
    let out = run("curl", args).await;
    assert!(
        out == format!("{body}\n2 200"),
        "the body echoed whole over h2: {} bytes, ending {:?}",
        out.len(),
        &out[out.len().saturating_sub(50)..]
    );
}
