//! Notifications (issue 23): `[[notify]]` webhooks and commands hear of a backend going down
//! and up, its pool serving from the backup tier and back, and a reload refused; a receiver
//! that never answers slows no request.

use holdfast_tests::{backend, wait_until, Gateway};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver on loopback: keeps each POSTed JSON body, answers 200 (or, when `hang`,
/// reads the request and never answers).
async fn receiver(hang: bool) -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break buf[end + 4..end + 4 + length].to_vec();
                    }
                };
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if let Ok(doc) = serde_json::from_slice(&body) {
                    kept.lock().unwrap().push(doc);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, got)
}

fn events(got: &Mutex<Vec<Value>>) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap_or("?"),
                e["backend"].as_str().or(e["detail"].as_str()).unwrap_or("")
            )
        })
        .collect()
}

/// The primary stops and comes back: the webhook hears `backend_down`, the pool's switch to the
/// backup, `backend_up` and the switch back; the command runs with the event in its
/// environment; a refused reload is told too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_and_a_command_hear_a_backend_go_down_and_come_back() {
    let (primary, backup) = (backend("primary").await, backend("backup").await);
    let (hook, got) = receiver(false).await;
    let dir = tempfile_dir();
    let log = dir.join("events.log");
    let pools = format!(
        "[pools.app.health.tcp]\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\
         [[pools.app.tiers]]\nbackends = [{{ name = \"primary\", address = \"{}\" }}]\n\
         [[pools.app.tiers]]\nbackends = [{{ name = \"backup\", address = \"{}\" }}]\n\
         [[notify]]\nurl = \"http://{hook}/hook\"\n\
         [[notify]]\nexec = [\"/bin/sh\", \"-c\", \"echo \\\"$HOLDFAST_EVENT $HOLDFAST_BACKEND $HOLDFAST_POOL\\\" >> {}\"]\nevents = [\"backend_down\"]\n",
        primary.addr(),
        backup.addr(),
        log.display()
    );
    let gw = Gateway::start(&pools).await;
    primary.stop();
    wait_until(
        Duration::from_secs(5),
        "down and the switch told",
        || async {
            let seen = events(&got);
            seen.contains(&"backend_down primary".to_string())
                && seen
                    .iter()
                    .any(|e| e.starts_with("tier_changed from primary to backup"))
        },
    )
    .await;
    primary.restart().await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "up and the switch back told",
        || async {
            let seen = events(&got);
            seen.contains(&"backend_up primary".to_string())
                && seen
                    .iter()
                    .any(|e| e.starts_with("tier_changed from backup to primary"))
        },
    )
    .await;
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(first["event"], "backend_down", "{first}");
    assert_eq!(first["pool"], "app");
    assert_eq!(first["tier"], "primary");
    assert_eq!(first["address"], primary.addr().to_string());
    assert!(
        first["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{first}"
    );
    wait_until(Duration::from_secs(5), "the command ran", || {
        let ran =
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("backend_down primary app"));
        async move { ran }
    })
    .await;
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        !lines.contains("backend_up"),
        "only the events it asked for: {lines}"
    );

    // A refused reload.
    gw.rewrite(
        None,
        &pools.replace("interval = \"200ms\"", "interval = \"0s\""),
    );
    let out = gw.command("reload");
    assert!(!out.status.success());
    wait_until(
        Duration::from_secs(5),
        "the refused reload told",
        || async { events(&got).iter().any(|e| e.starts_with("reload_failed")) },
    )
    .await;
    assert_eq!(
        gw.metric(r#"holdfast_notifications_total{result="sent",way="exec"}"#)
            .await,
        1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver that never answers: requests are served all the same, and the delivery fails
/// after its timeout, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_slows_nothing() {
    let (primary, backup) = (backend("primary").await, backend("backup").await);
    let (hook, _) = receiver(true).await;
    let gw = Gateway::start(&format!(
        "[pools.app.health.tcp]\ninterval = \"200ms\"\ntimeout = \"100ms\"\nfall = 1\n\
         [[pools.app.tiers]]\nbackends = [{{ name = \"primary\", address = \"{}\" }}, {{ name = \"backup\", address = \"{}\" }}]\n\
         [[notify]]\nurl = \"http://{hook}/hook\"\ntimeout = \"1s\"\nretries = 0\n",
        primary.addr(),
        backup.addr()
    ))
    .await;
    primary.stop();
    let client = holdfast_tests::client();
    for i in 0..50 {
        let r = client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    wait_until(Duration::from_secs(5), "the delivery failed", || async {
        gw.metric(r#"holdfast_notifications_total{result="failed",way="webhook"}"#)
            .await
            >= 1.0
    })
    .await;
}

/// A certificate near its end: replaced on disk by one that expires in 10 days, it is loaded
/// (the watcher reloads) and the webhook hears `certificate_expiring` with the days left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_expiry_is_told() {
    let web = backend("web").await;
    let (hook, got) = receiver(false).await;
    let gw = Gateway::start_with_https(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ name = \"web\", address = \"{}\" }}]\n\
         [[notify]]\nurl = \"http://{hook}/hook\"\nevents = [\"certificate_expiring\"]\n",
        web.addr()
    ))
    .await;
    assert!(
        events(&got).is_empty(),
        "a 30-day certificate is not near expiry"
    );
    let (cert, key) = holdfast_tests::tls::expiring_pem("localhost", 10);
    std::fs::write(gw.dir().join("key.pem"), key).unwrap();
    std::fs::write(gw.dir().join("cert.pem"), cert).unwrap();
    gw.reload();
    wait_until(Duration::from_secs(10), "certificate_expiring", || {
        let told = !events(&got).is_empty();
        async move { told }
    })
    .await;
    let event = got.lock().unwrap()[0].clone();
    assert_eq!(event["event"], "certificate_expiring", "{event}");
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("localhost") && (reason.contains("9 days") || reason.contains("10 days")),
        "{event}"
    );
    assert!(
        event["detail"]
            .as_str()
            .unwrap_or_default()
            .ends_with("cert.pem"),
        "{event}"
    );
}

/// A private scratch directory for the command's output.
fn tempfile_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("holdfast-notify-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
