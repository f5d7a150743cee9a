//! Two holdfast instances on two addresses in front of the same backends, and a client that
//! treats them as Cloudflare treats an origin with several A records: on a refused or timed-out
//! connect it tries the other address once; once a request is sent it never sends it again.
//! Under keep-alive load: a config change applied to one instance then the other, a rolling
//! `holdfast upgrade`, and `kill -9` of one. `holdfast status --all` shows the fleet throughout.

use holdfast_tests::gateway::ON;
use holdfast_tests::{backend, wait_until, Gateway};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WORKERS: usize = 8;

fn pools(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        "[pools.app]\n{extra}\n[[pools.app.tiers]]\nbackends = [\
         {{ address = \"{a}\", name = \"web-1\" }}, {{ address = \"{b}\", name = \"web-2\" }}]\n"
    )
}

/// What the client saw: answers, and failures with the address and the moment.
#[derive(Default)]
struct Seen {
    answered: usize,
    /// Each failure: the address it was sent to, and why.
    failed: Vec<(SocketAddr, String)>,
}

/// Keep-alive workers, each on one connection to one of the origin's addresses (its first pick
/// alternating, as Cloudflare's connections spread over the records).
struct Origin {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    /// Where each worker's connection is now.
    at: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Origin {
    fn start(addrs: [SocketAddr; 2]) -> Origin {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let at = Arc::new(Mutex::new(vec![None; WORKERS]));
        let tasks = (0..WORKERS)
            .map(|w| {
                let (stop, seen, at) = (stop.clone(), seen.clone(), at.clone());
                let order = [addrs[w % 2], addrs[(w + 1) % 2]];
                tokio::spawn(async move {
                    let mut conn: Option<(SocketAddr, BufReader<TcpStream>)> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            conn = connect(order).await;
                            at.lock().unwrap()[w] = conn.as_ref().map(|(a, _)| *a);
                        }
                        let Some((addr, stream)) = conn.as_mut() else {
                            seen.lock()
                                .unwrap()
                                .failed
                                .push((order[0], "no address accepted a connection".into()));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let addr = *addr;
                        match exchange(stream).await {
                            Ok(keep) => {
                                seen.lock().unwrap().answered += 1;
                                if !keep {
                                    conn = None;
                                }
                            }
                            Err(e) => {
                                // Sent: not sent again.
                                seen.lock().unwrap().failed.push((addr, e));
                                conn = None;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Origin {
            stop,
            seen,
            at,
            tasks,
        }
    }

    fn answered(&self) -> usize {
        self.seen.lock().unwrap().answered
    }

    fn failed(&self) -> Vec<(SocketAddr, String)> {
        self.seen.lock().unwrap().failed.clone()
    }

    async fn more(&self, n: usize) {
        let target = self.answered() + n;
        wait_until(Duration::from_secs(20), "more answers", || async {
            self.answered() >= target
        })
        .await;
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// A connection to the first address that takes one: a refused or timed-out connect goes on
/// to the next (nothing was sent), as Cloudflare does with an origin's several addresses.
async fn connect(order: [SocketAddr; 2]) -> Option<(SocketAddr, BufReader<TcpStream>)> {
    for addr in order {
        let attempt = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await;
        if let Ok(Ok(stream)) = attempt {
            return Some((addr, BufReader::new(stream)));
        }
    }
    None
}

/// One GET on the connection: whether it stays open, or why it failed.
async fn exchange(stream: &mut BufReader<TcpStream>) -> Result<bool, String> {
    let request = b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    stream
        .get_mut()
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut line = String::new();
        stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("closed before an answer".to_string());
        }
        let status = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut length, mut close) = (0usize, false);
        loop {
            let mut header = String::new();
            stream
                .read_line(&mut header)
                .await
                .map_err(|e| e.to_string())?;
            let h = header.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| "bad length".to_string())?;
            }
            close |= h == "connection: close";
        }
        let mut body = vec![0; length];
        stream
            .read_exact(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        match status.as_str() {
            "200" => Ok(!close),
            other => Err(format!("answered {other}")),
        }
    })
    .await;
    answer.unwrap_or_else(|_| Err("no answer within 10 s".to_string()))
}

/// `holdfast status --all` over both admin listeners: exit code and what it printed.
fn fleet(a: &Gateway, b: &Gateway) -> (i32, String) {
    let out = std::process::Command::new(holdfast_tests::gateway::binary())
        .args([
            "status",
            "--all",
            &a.admin.to_string(),
            &b.admin.to_string(),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_several_addresses_survive_a_kill_a_rolling_upgrade_and_a_staged_config_change(
) {
    let (web1, web2) = (backend("web-1").await, backend("web-2").await);
    let config = pools(web1.addr(), web2.addr(), "");
    let mut a = Gateway::start_with_listen(&format!("{ON}127.0.0.2"), &config).await;
    let mut b = Gateway::start_with_listen(&format!("{ON}127.0.0.3"), &config).await;
    assert_eq!(
        (a.http.ip().to_string(), b.http.ip().to_string()),
        ("127.0.0.2".into(), "127.0.0.3".into())
    );
    wait_until(
        Duration::from_secs(10),
        "both see both backends up",
        || async { fleet(&a, &b).0 == 0 },
    )
    .await;
    let (code, text) = fleet(&a, &b);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("the fleet agrees"), "{text}");
    // Each listens on its own address: the files differ there, and only there.
    assert!(
        text.contains("note: the config files differ only in [listen]"),
        "{text}"
    );

    let origin = Origin::start([a.http, b.http]);
    origin.more(400).await;

    // A config change, one instance at a time: the fleet disagrees in between, then agrees.
    let changed = pools(web1.addr(), web2.addr(), "max_attempts = 3");
    a.rewrite(None, &changed);
    a.reload();
    origin.more(200).await;
    let (code, text) = fleet(&a, &b);
    assert_eq!(code, 1, "one changed, one not: {text}");
    assert!(text.contains("differs: serving hash"), "{text}");
    b.rewrite(None, &changed);
    b.reload();
    origin.more(200).await;
    let (code, text) = fleet(&a, &b);
    assert_eq!(code, 0, "{text}");
    assert!(origin.failed().is_empty(), "{:?}", origin.failed());

    // A rolling upgrade: each instance hands over to a new process in turn.
    let before = (a.pid(), b.pid());
    a.upgrade_command().await;
    origin.more(300).await;
    b.upgrade_command().await;
    origin.more(300).await;
    assert_ne!(before, (a.pid(), b.pid()));
    assert!(origin.failed().is_empty(), "{:?}", origin.failed());
    let (code, text) = fleet(&a, &b);
    assert_eq!(code, 0, "after the rolling upgrade: {text}");

    // kill -9 of one machine's holdfast: what was in flight there is lost (Cloudflare does
    // not send a request again once sent); every request after goes to the other address.
    let on_a = origin
        .at
        .lock()
        .unwrap()
        .iter()
        .filter(|w| **w == Some(a.http))
        .count();
    a.signal("KILL");
    let killed_at = origin.answered();
    origin.more(600).await;
    let lost = origin.failed();
    assert!(
        lost.iter().all(|(addr, _)| *addr == a.http),
        "only requests sent to the killed instance failed: {lost:?}"
    );
    assert!(
        lost.len() <= on_a,
        "at most one request in flight per connection to it ({on_a}): {lost:?}"
    );
    let (code, text) = fleet(&a, &b);
    assert_eq!(code, 2, "the killed one cannot be asked: {text}");
    println!("{text}");

    // It comes back (systemd's Restart=always): the fleet agrees again, with no failure more.
    a.restart().await;
    origin.more(300).await;
    let seen = origin.finish().await;
    assert_eq!(seen.failed.len(), lost.len(), "{:?}", seen.failed);
    let (code, text) = fleet(&a, &b);
    println!("{text}");
    assert_eq!(code, 0, "the instances' /status agree at the end: {text}");
    println!(
        "fleet | {} answered, {} failed: requests in flight on the killed instance \
         ({on_a} connections to it, kill at answer {killed_at}); 0 during the staged config \
         change and the rolling upgrade",
        seen.answered,
        seen.failed.len()
    );
}

/// `holdfast status` of one instance, and the probes Kubernetes asks: serving, then answering
/// with the fallback (backends down: not ready to be restarted, still ready for traffic), then
/// stopping, then gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_probes_follow_serving_fallback_stopping_and_gone() {
    let web = backend("web-1").await;
    let config = format!(
        "[pools.app.health.tcp]\ninterval = \"200ms\"\ntimeout = \"100ms\"\nfall = 1\n\n[[pools.app.tiers]]\n\
         backends = [{{ address = \"{}\", name = \"web-1\" }}]\n",
        web.addr()
    );
    let mut gw = Gateway::start_with_listen("shutdown_delay = \"3s\"", &config).await;
    let status = |gw: &Gateway| {
        let out = gw.holdfast(&["status"]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let probe = |path: &'static str, admin: SocketAddr| async move {
        reqwest::get(format!("http://{admin}{path}"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let (code, text) = status(&gw);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("pid {}", gw.pid())), "{text}");
    assert!(text.contains("serving (/healthz 200)"), "{text}");
    assert!(
        text.contains("pool app (default): serving from tier"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("web-1") && l.contains(" up ")),
        "{text}"
    );
    assert_eq!(probe("/readyz", gw.admin).await, 200);
    assert_eq!(probe("/livez", gw.admin).await, 200);

    // Every backend down: the fallback answers; /healthz says so, /readyz does not.
    web.stop();
    wait_until(Duration::from_secs(10), "status exits 1", || async {
        status(&gw).0 == 1
    })
    .await;
    let (_, text) = status(&gw);
    assert!(text.contains("no tier can serve"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("web-1") && l.contains("down")),
        "{text}"
    );
    assert_eq!(probe("/healthz", gw.admin).await, 503);
    assert_eq!(
        probe("/readyz", gw.admin).await,
        200,
        "still answering: stays in the Service"
    );
    assert_eq!(probe("/livez", gw.admin).await, 200);

    // SIGTERM: not ready from the first moment of shutdown_delay, still alive, then gone.
    gw.signal("TERM");
    wait_until(Duration::from_secs(2), "/readyz 503", || async {
        probe("/readyz", gw.admin).await == 503
    })
    .await;
    let (code, text) = status(&gw);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("stopping"), "{text}");
    assert!(gw.wait_exit(Duration::from_secs(15)).await, "it stops");
    let (code, text) = status(&gw);
    assert_eq!(code, 2, "nothing to ask: {text}");
}
