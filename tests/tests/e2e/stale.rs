//! Serve-stale (issue 25): with `[pools.NAME.stale]`, the last good answer of a cacheable
//! `GET` is kept and served, marked stale, while no backend can answer; never a private answer,
//! never past its age. The backend here is a raw one whose answers the test writes, and which
//! goes "down" by closing every connection without answering (and comes back).

use holdfast_tests::raw::{Answer, RawBackend};
use holdfast_tests::{client, wait_until, Gateway};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The value of `name` in a request head.
fn header<'r>(request: &'r str, name: &str) -> Option<&'r str> {
    request.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The backend's answer to a request, by its path.
fn page(request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let path = text.split(' ').nth(1).unwrap_or("/");
    let answer = |lines: &str, body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\n{lines}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    match path {
        "/page" => answer(
            "Cache-Control: max-age=60\r\nETag: \"p1\"\r\nContent-Type: text/plain\r\n",
            "page one",
        ),
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        "/cookie" => answer("Set-Cookie: session=visitor-1\r\n", "for visitor 1"),
        "/private" => answer("Cache-Control: private\r\n", "private"),
        "/nostore" => answer("Cache-Control: no-store\r\n", "no-store"),
        "/auth" => answer("", "authorized"),
        "/lang" => {
            let lang = header(&text, "accept-language").unwrap_or("none");
            answer("Vary: Accept-Language\r\n", &format!("in {lang}"))
        }
        "/star" => answer("Vary: *\r\n", "star"),
        "/sie" => answer("Cache-Control: max-age=0, stale-if-error=1\r\n", "brief"),
        "/big" => answer("", &"b".repeat(5000)),
        p if p.starts_with("/n/") => answer("", &format!("{p:<2000}")),
        _ => answer("", "other"),
    }
}

/// A backend answering [`page`]s while `down` is false; closing without an answer while it
/// is true.
async fn site(down: Arc<AtomicBool>) -> RawBackend {
    RawBackend::start(move |request| match down.load(Ordering::SeqCst) {
        true => Answer::close(b""),
        false => Answer::keep(&page(request)),
    })
    .await
}

/// A pool of one backend with serve-stale on (`stale` under `[pools.app.stale]`), quick to
/// take it out and back.
fn pools(backend: std::net::SocketAddr, stale: &str) -> String {
    format!(
        "[pools.app]\nmax_attempts = 2\n[pools.app.stale]\n{stale}\n\
         [pools.app.health.tcp]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
         [[pools.app.tiers]]\nbackends = [{{ address = \"{backend}\", name = \"web\" }}]\n"
    )
}

/// GET `path` with `headers`: status, whether marked stale, the `Age` header, the body.
async fn get(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, bool, Option<String>, String) {
    let mut request = client().get(gw.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let stale = r.headers().get("x-holdfast-stale").is_some();
    let age = r
        .headers()
        .get("age")
        .map(|a| a.to_str().unwrap().to_string());
    (status, stale, age, r.text().await.unwrap())
}

/// Test 1 and 4: a page served, then every backend down: the same URL answers 200 with the
/// kept body, `Age` and the stale marker (a chunked answer too, its body whole); `HEAD` gets
/// its head; a conditional request that matches gets 304; an unknown URL gets the fallback;
/// the metric counts them. The backend back: fresh answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_served_stale_while_every_backend_is_down() {
    let down = Arc::new(AtomicBool::new(false));
    let backend = site(down.clone()).await;
    let gw = Gateway::start(&pools(backend.addr, "")).await;
    assert_eq!(
        get(&gw, "/page", &[]).await,
        (200, false, None, "page one".into())
    );
    assert_eq!(get(&gw, "/chunked", &[]).await.3, "hello world");

    down.store(true, Ordering::SeqCst);
    let (status, stale, age, body) = get(&gw, "/page", &[]).await;
    assert_eq!((status, stale, body.as_str()), (200, true, "page one"));
    assert!(
        age.is_some_and(|a| a.parse::<u64>().is_ok()),
        "an Age header"
    );
    let chunked = get(&gw, "/chunked", &[]).await;
    assert_eq!(
        (chunked.0, chunked.1, chunked.3.as_str()),
        (200, true, "hello world")
    );
    let head = client().head(gw.url("/page")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "8");
    assert_eq!(head.headers()["x-holdfast-stale"], "1");
    let not_modified = get(&gw, "/page", &[("if-none-match", "\"p1\"")]).await;
    assert_eq!(
        (not_modified.0, not_modified.1, not_modified.3.as_str()),
        (304, true, "")
    );
    assert_eq!(
        get(&gw, "/page", &[("if-none-match", "\"p0\"")]).await.0,
        200
    );
    let unknown = get(&gw, "/never-seen", &[]).await;
    assert_eq!(
        (unknown.0, unknown.1),
        (503, false),
        "the fallback for a URL never kept"
    );
    assert!(
        gw.metric("holdfast_stale_responses_total{pool=\"app\"}")
            .await
            >= 5.0
    );
    assert!(gw.metric("holdfast_stale_entries{pool=\"app\"}").await >= 2.0);

    down.store(false, Ordering::SeqCst);
    wait_until(Duration::from_secs(15), "fresh answers again", || async {
        let (status, stale, _, _) = get(&gw, "/page", &[]).await;
        status == 200 && !stale
    })
    .await;
}

/// Test 2: what is one visitor's, or cannot be matched, is never served to another: answers
/// with `Set-Cookie`, `Cache-Control: private` or `no-store`, to a request with
/// `Authorization` or `Cookie` (not said `public`), with `Vary: *`. `Vary: Accept-Language` keeps one copy per language and
/// serves each to its language alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_answers_are_never_served_stale() {
    let down = Arc::new(AtomicBool::new(false));
    let backend = site(down.clone()).await;
    let gw = Gateway::start(&pools(backend.addr, "")).await;
    for path in ["/cookie", "/private", "/nostore", "/star"] {
        assert_eq!(get(&gw, path, &[]).await.0, 200, "{path}");
    }
    assert_eq!(
        get(&gw, "/auth", &[("authorization", "Bearer secret")])
            .await
            .0,
        200
    );
    assert_eq!(
        get(&gw, "/lang", &[("accept-language", "fr")]).await.3,
        "in fr"
    );
    assert_eq!(
        get(&gw, "/lang", &[("accept-language", "en")]).await.3,
        "in en"
    );
    assert_eq!(
        get(&gw, "/mine", &[("cookie", "session=visitor-1")])
            .await
            .0,
        200
    );

    down.store(true, Ordering::SeqCst);
    let mine = get(&gw, "/mine", &[]).await;
    assert_eq!(
        (mine.0, mine.1),
        (503, false),
        "asked with a Cookie, not said public"
    );
    for path in ["/cookie", "/private", "/nostore", "/star"] {
        let (status, stale, _, _) = get(&gw, path, &[]).await;
        assert_eq!((status, stale), (503, false), "{path}");
    }
    let auth = get(&gw, "/auth", &[("authorization", "Bearer secret")]).await;
    assert_eq!((auth.0, auth.1), (503, false));
    let fr = get(&gw, "/lang", &[("accept-language", "fr")]).await;
    assert_eq!((fr.0, fr.1, fr.3.as_str()), (200, true, "in fr"));
    let en = get(&gw, "/lang", &[("accept-language", "en")]).await;
    assert_eq!((en.0, en.1, en.3.as_str()), (200, true, "in en"));
    let de = get(&gw, "/lang", &[("accept-language", "de")]).await;
    assert_eq!((de.0, de.1), (503, false), "no copy for another language");
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// Test 3: 10,000 distinct URLs of 2 KB (20 MB) through a store of 1 MB: the store stays
/// within it (its metric), the process's memory grows by far less than what went through, the
/// most recently used copies survive and the oldest went; an answer over `max_object_bytes`
/// is never kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stays_within_its_bounds() {
    let down = Arc::new(AtomicBool::new(false));
    let backend = site(down.clone()).await;
    let gw = Gateway::start(&pools(
        backend.addr,
        "max_bytes = 1_048_576\nmax_object_bytes = 4096",
    ))
    .await;
    assert_eq!(get(&gw, "/big", &[]).await.0, 200);
    let before = rss(gw.pid());
    let gw = Arc::new(gw);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let gw = gw.clone();
        workers.spawn(async move {
            let c = client();
            for i in (w..10_000).step_by(8) {
                let r = c.get(gw.url(&format!("/n/{i}"))).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    // The last ones, in order, so that they are the most recently used.
    for i in 9_990..10_000 {
        assert_eq!(get(&gw, &format!("/n/{i}"), &[]).await.0, 200);
    }
    let grown = rss(gw.pid()).saturating_sub(before);
    let kept = gw.metric("holdfast_stale_bytes{pool=\"app\"}").await;
    eprintln!("store {kept} bytes; the process grew by {grown} bytes for 20 MB of answers");
    assert!(kept <= 1_048_576.0, "{kept}");
    assert!(grown < 12 * 1024 * 1024, "{grown}");

    down.store(true, Ordering::SeqCst);
    let last = get(&gw, "/n/9999", &[]).await;
    assert_eq!((last.0, last.1), (200, true), "the most recent is kept");
    assert_eq!(last.3.trim_end(), "/n/9999");
    assert_eq!(get(&gw, "/n/0", &[]).await.0, 503, "the oldest went");
    assert_eq!(
        get(&gw, "/big", &[]).await.0,
        503,
        "over max_object_bytes: never kept"
    );
}

/// `max_age` and the answer's own `stale-if-error` bound how old a copy may be when served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_age_out() {
    let down = Arc::new(AtomicBool::new(false));
    let backend = site(down.clone()).await;
    let gw = Gateway::start(&pools(backend.addr, "max_age = \"3s\"")).await;
    assert_eq!(get(&gw, "/page", &[]).await.0, 200);
    assert_eq!(get(&gw, "/sie", &[]).await.0, 200);
    let kept = std::time::Instant::now();
    down.store(true, Ordering::SeqCst);
    assert!(get(&gw, "/sie", &[]).await.1, "within stale-if-error=1");
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(kept.elapsed())).await;
    assert_eq!(get(&gw, "/sie", &[]).await.0, 503, "past stale-if-error");
    assert!(get(&gw, "/page", &[]).await.1, "within max_age");
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(kept.elapsed())).await;
    assert_eq!(get(&gw, "/page", &[]).await.0, 503, "past max_age");
}

/// A reload keeps the store of a pool that stays with the same `max_bytes` (the copies are
/// served after it); another `max_bytes` starts an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_copies() {
    let down = Arc::new(AtomicBool::new(false));
    let backend = site(down.clone()).await;
    let gw = Gateway::start(&pools(backend.addr, "")).await;
    assert_eq!(get(&gw, "/page", &[]).await.0, 200);
    gw.rewrite(None, &pools(backend.addr, "max_age = \"1h\""));
    gw.reload();
    down.store(true, Ordering::SeqCst);
    let kept = get(&gw, "/page", &[]).await;
    assert_eq!((kept.0, kept.1, kept.3.as_str()), (200, true, "page one"));

    gw.rewrite(None, &pools(backend.addr, "max_bytes = 1_048_576"));
    gw.reload();
    assert_eq!(get(&gw, "/page", &[]).await.0, 503, "a new, empty store");
}

/// `ignore_cookies = true`: an answer to a request with `Cookie` is kept by the other rules
/// alone (for sites whose visitors all carry analytics cookies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_may_be_ignored() {
    let down = Arc::new(AtomicBool::new(false));
    let backend = site(down.clone()).await;
    let gw = Gateway::start(&pools(backend.addr, "ignore_cookies = true")).await;
    assert_eq!(get(&gw, "/page", &[("cookie", "_ga=GA1.1.1")]).await.0, 200);
    down.store(true, Ordering::SeqCst);
    let kept = get(&gw, "/page", &[]).await;
    assert_eq!((kept.0, kept.1, kept.3.as_str()), (200, true, "page one"));
}
