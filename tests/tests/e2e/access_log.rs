//! The access log (issue 23): one line per request and per h2 stream with everything an
//! operator greps for; rotation with SIGUSR1 under load, no line lost or torn; a writer that
//! cannot keep up drops lines and counts them, and requests go on as fast.

use holdfast_tests::h2 as h2c;
use holdfast_tests::raw::{Answer, RawBackend};
use holdfast_tests::{backend, client, wait_until, Gateway, Load};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lines of every file in `files`, each checked whole (it ends with a newline).
fn lines_of(files: &[PathBuf]) -> Vec<String> {
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends inside a line",
            file.display()
        );
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

fn json_lines(file: &Path) -> Vec<Value> {
    lines_of(&[file.to_path_buf()])
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The line whose `path` is `path`, once it is written.
async fn line_for(file: &Path, path: &str) -> Value {
    let mut found = None;
    wait_until(
        Duration::from_secs(5),
        &format!("a line for {path}"),
        || {
            found = json_lines(file).into_iter().find(|l| l["path"] == path);
            let seen = found.is_some();
            async move { seen }
        },
    )
    .await;
    found.unwrap_or_default()
}

/// The request whose line is checked in both formats: from a trusted proxy naming the visitor,
/// with a long query, answered 200.
async fn retried(c: &reqwest::Client, gw: &Gateway) -> reqwest::Response {
    let r = c
        .get(gw.url("/retried?q=0123456789abcdef"))
        .header("CF-Connecting-IP", "203.0.113.9")
        .header("CF-Ray", "8f2a1b-LHR")
        .header("User-Agent", "test-agent/1.0")
        .header("Referer", "https://example.com/from")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

/// Every field, in JSON, of: an HTTP/1.1 request retried on the backup after the primary
/// closed without answering, from a trusted proxy naming the visitor, its query cut; an h2
/// request; a request for a pool with no backend left (the fallback); a smuggling attempt
/// refused before it was understood. Then the same retried request in text (nginx's combined
/// format and `key=value`), after a restart with `format = "text"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_retried_h2_and_fallback_requests() {
    let primary = RawBackend::start(|_| Answer::close(b"")).await;
    let backup = backend("backup").await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let config = |format: &str| {
        format!(
            r#"
[log]
format = "{format}"
access = "access.log"
access_query_max = 8
[trust]
cloudflare = false
trusted_proxies = ["127.0.0.1/32"]
[routes]
default = "app"
hosts = {{ "gone.test" = "gone" }}
[pools.app.health]
status_fall = 1000
passive_fall = 1000
[pools.app.health.failure_rate]
percent = 0
[pools.app.health.tcp]
interval = "60s"
[[pools.app.tiers]]
name = "main"
backends = [{{ address = "{}", name = "primary" }}]
[[pools.app.tiers]]
name = "spare"
backends = [{{ address = "{}", name = "backup" }}]
[[pools.gone.tiers]]
backends = [{{ address = "{gone_addr}", name = "nobody" }}]
"#,
            primary.addr,
            backup.addr()
        )
    };
    let mut gw = Gateway::start_with_https(&config("json")).await;
    let log = gw.dir().join("access.log");
    let c = client();

    let r = retried(&c, &gw).await;
    assert_eq!(r.headers()["x-backend"], "backup");
    let body = r.bytes().await.unwrap();
    let line = line_for(&log, "/retried?q=012345...").await;
    for (key, want) in [
        ("visitor", Value::from("203.0.113.9")),
        ("method", "GET".into()),
        ("protocol", "HTTP/1.1".into()),
        ("status", 200.into()),
        ("pool", "app".into()),
        ("tier", "spare".into()),
        ("backend", "backup".into()),
        ("attempts", 2.into()),
        ("rescued", false.into()),
        ("hedged", false.into()),
        ("stale", false.into()),
        ("fallback", Value::Null),
        ("cf_ray", "8f2a1b-LHR".into()),
        ("referer", "https://example.com/from".into()),
        ("user_agent", "test-agent/1.0".into()),
    ] {
        assert_eq!(line[key], want, "{key} in {line}");
    }
    assert_eq!(
        line["failed"],
        serde_json::json!([{"backend": "primary", "reason": "reset", "would_be": 520}]),
        "{line}"
    );
    assert!(line["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    assert!(line["bytes_in"].as_u64().unwrap() > 100, "{line}");
    assert!(
        line["bytes_out"].as_u64().unwrap() > body.len() as u64,
        "head and body: {line}"
    );
    let (duration, head) = (line["duration"].as_f64(), line["head_time"].as_f64());
    assert!(
        head.is_some_and(|h| h >= 0.0 && Some(h) <= duration),
        "{line}"
    );

    // An h2 stream.
    let (mut h2, _conn) = h2c::connect(gw.https.unwrap()).await;
    let request = http::Request::builder()
        .uri("https://localhost/over-h2")
        .header("cf-ray", "77-SJC")
        .body(())
        .unwrap();
    let answer = h2c::send(&mut h2, request, b"").await.unwrap();
    assert_eq!(answer.status, 200);
    let line = line_for(&log, "/over-h2").await;
    assert_eq!(line["protocol"], "HTTP/2.0", "{line}");
    assert_eq!(line["cf_ray"], "77-SJC", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["host"], "localhost", "{line}");

    // The fallback.
    let r = c
        .get(gw.url("/nobody-home"))
        .header("Host", "gone.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let line = line_for(&log, "/nobody-home").await;
    assert_eq!(line["status"], 503, "{line}");
    assert_eq!(line["fallback"], "no_backend", "{line}");
    assert_eq!(line["pool"], "gone", "{line}");
    assert_eq!(line["backend"], Value::Null, "{line}");
    assert_eq!(line["head_time"], Value::Null, "{line}");

    // A request refused before it was understood has a line too.
    let refused = holdfast_tests::tls::https_exchange(
        gw.https.unwrap(),
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    wait_until(Duration::from_secs(5), "the refusal's line", || {
        let found = json_lines(&log)
            .iter()
            .any(|l| l["status"] == 400 && l["method"].is_null());
        async move { found }
    })
    .await;

    // The same retried request, in text.
    gw.rewrite(None, &config("text"));
    std::fs::remove_file(&log).unwrap();
    gw.signal("INT");
    assert!(gw.wait_exit(Duration::from_secs(10)).await);
    gw.restart().await;
    retried(&c, &gw).await;
    let mut text = String::new();
    wait_until(Duration::from_secs(5), "the text line", || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        let done = text.contains("/retried");
        async move { done }
    })
    .await;
    let line = text.lines().find(|l| l.contains("/retried")).unwrap();
    assert!(
        line.starts_with("203.0.113.9 - - ["),
        "nginx's combined format: {line}"
    );
    for part in [
        " +0000] \"GET /retried?q=012345... HTTP/1.1\" 200 ",
        " \"https://example.com/from\" \"test-agent/1.0\" host=127.0.0.1:",
        " pool=app tier=spare backend=backup attempts=2 failed=primary:reset(520) ",
        " rescued=0 hedged=0 stale=0 fallback=- cf_ray=8f2a1b-LHR",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
}

/// Test 4, rotation: under keep-alive load, the file is moved away and SIGUSR1 sent, ten
/// times; every request answered has exactly one whole line, in one of the eleven files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rotations_under_load_lose_no_line() {
    let a = backend("a").await;
    let gw = Gateway::start(&format!(
        "[log]\naccess = \"access.log\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"a\" }}]\n",
        a.addr()
    ))
    .await;
    let log = gw.dir().join("access.log");
    let load = Load::start(gw.url("/rotated"), 4, Duration::from_secs(60));
    let mut files = Vec::new();
    for i in 0..10 {
        load.more(200).await;
        let moved = gw.dir().join(format!("access.log.{i}"));
        std::fs::rename(&log, &moved).unwrap();
        files.push(moved);
        gw.signal("USR1");
        wait_until(Duration::from_secs(5), "the file opened anew", || {
            let there = log.exists();
            async move { there }
        })
        .await;
    }
    load.more(200).await;
    let report = load.finish().await;
    report.assert_none_failed();
    files.push(log);
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(10), "a line per request", || {
        lines = lines_of(&files);
        let done = lines.len() >= report.sent();
        async move { done }
    })
    .await;
    assert_eq!(lines.len(), report.sent(), "one line per request answered");
    for line in &lines {
        assert!(
            line.starts_with("127.0.0.1 - - [")
                && line.contains("\"GET /rotated HTTP/1.1\" 200 ")
                && line.ends_with(" cf_ray=-"),
            "torn or odd: {line}"
        );
    }
    for file in &files {
        assert!(
            !lines_of(std::slice::from_ref(file)).is_empty(),
            "{} got none",
            file.display()
        );
    }
    assert_eq!(
        gw.metric_sum("holdfast_access_log_dropped_total").await,
        0.0
    );
}

/// Test 4, a writer that cannot keep up: the log is a pipe nobody reads (as a stuck disk or
/// log shipper would be). Requests are all answered all the same, the lines that did not fit
/// the queue are dropped and counted, and once the pipe is read, the lines read and the lines
/// dropped make up every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_cannot_keep_up_drops_and_counts() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let a = backend("a").await;
    let scratch = holdfast_tests::gateway::Scratch::new();
    let fifo = scratch.path().join("access.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The reader end, open (so the gateway's open does not wait) but not read for now.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&fifo)
        .unwrap();
    let gw = Gateway::start(&format!(
        "[log]\naccess = \"{}\"\naccess_queue = 16\n[[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"a\" }}]\n",
        fifo.display(),
        a.addr()
    ))
    .await;
    let load = Load::start(gw.url("/stuck"), 4, Duration::from_secs(60));
    load.more(3000).await;
    let report = load.finish().await;
    report.assert_none_failed();
    let dropped = gw
        .metric("holdfast_access_log_dropped_total{reason=\"queue_full\"}")
        .await;
    assert!(dropped > 0.0, "the queue filled and lines were dropped");

    // Now read: what was queued comes out, and nothing is missing from the count.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    wait_until(
        Duration::from_secs(10),
        "the lines read and dropped",
        || {
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let lines = got.iter().filter(|&&b| b == b'\n').count();
            let done = lines as f64 + dropped >= report.sent() as f64;
            async move { done }
        },
    )
    .await;
    let lines = got.iter().filter(|&&b| b == b'\n').count();
    let dropped = gw
        .metric("holdfast_access_log_dropped_total{reason=\"queue_full\"}")
        .await;
    assert_eq!(
        lines as f64 + dropped,
        report.sent() as f64,
        "{lines} lines read, {dropped} dropped"
    );
}
