//! Hot reload: every trigger (SIGHUP, an edit of the file, `holdfast reload`, `POST /reload`)
//! applies the whole new config at once under load, with no failed request; a broken file
//! changes nothing; health survives a reload; listeners come and go while the others never
//! refuse a connection.

use holdfast_tests::gateway::{sample_value, ADMIN_TOKEN_LISTEN};
use holdfast_tests::ports::free_loopback;
use holdfast_tests::{backend, scripted_backend, wait_until, Gateway, Load};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn status(gw: &Gateway) -> Value {
    serde_json::from_str(&gw.status().await).unwrap()
}

/// A pool `app` of one backend named `name`.
fn pool(name: &str, addr: std::net::SocketAddr) -> String {
    format!("[[pools.app.tiers]]\nbackends = [{{ name = \"{name}\", address = \"{addr}\" }}]\n")
}

/// Waits (3 s at most) until `n` reloads have failed.
async fn failed_reloads(gw: &Gateway, n: f64, what: &str) {
    wait_until(Duration::from_secs(3), what, || async {
        gw.metric("holdfast_config_reloads_total{result=\"failure\"}")
            .await
            >= n
    })
    .await;
}

/// Waits until the file watcher watches (its log line).
async fn watcher_watches(gw: &Gateway) {
    wait_until(Duration::from_secs(5), "the watcher watches", || {
        let watching = gw.log().contains("watching the config file");
        async move { watching }
    })
    .await;
}

/// Waits (10 s at most) until the running config is the file on disk: its SHA-256 in
/// `/status`.
async fn the_file_runs(gw: &Gateway, what: &str) {
    let on_disk = std::fs::read(gw.config_path()).unwrap();
    let hash: String = openssl::sha::sha256(&on_disk)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    wait_until(Duration::from_secs(10), what, || async {
        status(gw).await["config"]["hash"] == hash.as_str()
    })
    .await;
}

/// Test 1 and 7: ten reloads under continuous load, each changing backends, weights or the
/// default route, by a different trigger in turn; the traffic follows each within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_fail_no_request() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let pools = |default: &str, one: &str| {
        format!(
            "[routes]\ndefault = \"{default}\"\n\
             [pools.one.health.tcp]\ninterval = \"1s\"\n[[pools.one.tiers]]\nbackends = [{one}]\n\
             [pools.two.health.tcp]\ninterval = \"1s\"\n[[pools.two.tiers]]\nbackends = [{{ name = \"c\", address = \"{}\" }}]\n",
            c.addr()
        )
    };
    let only_a = format!("{{ name = \"a\", address = \"{}\" }}", a.addr());
    let only_b = format!("{{ name = \"b\", address = \"{}\" }}", b.addr());
    let mostly_b = format!(
        "{{ name = \"a\", address = \"{}\", weight = 1 }}, {{ name = \"b\", address = \"{}\", weight = 9 }}",
        a.addr(),
        b.addr()
    );
    // (config, backends that may answer once it is live, the share of b at least)
    let variants: [(String, &[&str], f64); 4] = [
        (pools("one", &only_a), &["a"], 0.0),
        (pools("one", &only_b), &["b"], 1.0),
        (pools("two", &only_a), &["c"], 0.0),
        (pools("one", &mostly_b), &["a", "b"], 0.7),
    ];
    let gw = Gateway::start_with_listen(ADMIN_TOKEN_LISTEN, &variants[0].0).await;
    let pid = gw.pid();
    let load = Load::start(gw.url("/"), 8, Duration::from_secs(60));
    let mut longest_switch = Duration::ZERO;
    for i in 1..=10 {
        let (config, expected, b_share) = &variants[i % variants.len()];
        let generation = status(&gw).await["config"]["generation"].as_u64().unwrap();
        gw.rewrite(None, config);
        let trigger = match i % 4 {
            0 => "the file watcher",
            1 => {
                gw.signal("HUP");
                "SIGHUP"
            }
            2 => {
                gw.reload();
                "holdfast reload"
            }
            _ => {
                let r = gw.admin_post("/reload").await;
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                "POST /reload"
            }
        };
        let reloaded = Instant::now();
        wait_until(
            Duration::from_secs(5),
            &format!("reload {i} ({trigger}) is live"),
            || async { status(&gw).await["config"]["generation"].as_u64() > Some(generation) },
        )
        .await;
        let live = Instant::now();
        // Within a second of the new config going live, the traffic follows it.
        let followed = wait_until(
            Duration::from_secs(1),
            &format!("traffic follows reload {i} ({trigger})"),
            || async {
                load.last_all(40, |s| {
                    s.outcome.as_deref().is_ok_and(|b| expected.contains(&b))
                })
            },
        )
        .await;
        longest_switch = longest_switch.max(followed);
        if *b_share > 0.0 && *b_share < 1.0 {
            load.more(200).await;
            let n = 200;
            let from_b = load.last_share(n, "b");
            assert!(
                from_b >= *b_share,
                "weights 1:9 give b {from_b:.2} of the last {n} answers"
            );
        }
        println!(
            "reload {i} by {trigger}: live after {:?}, traffic followed {followed:?} later",
            live - reloaded
        );
        load.more(100).await;
    }
    let report = load.finish().await;
    assert_eq!(gw.pid(), pid, "SIGHUP never stops the process");
    println!(
        "ten reloads under load: {} requests, {} failed, longest {:?}, traffic followed each config within {longest_switch:?}",
        report.sent(),
        report.failures().len(),
        report.longest()
    );
    report.assert_none_failed();
    let metrics = gw.metrics().await;
    // The file watcher also sees the edits made before the other triggers: at least ten.
    let took = sample_value(
        &metrics,
        "holdfast_config_reloads_total{result=\"success\"}",
    );
    assert!(took >= 10.0, "{took} reloads took");
    assert_eq!(
        sample_value(
            &metrics,
            "holdfast_config_reloads_total{result=\"failure\"}"
        ),
        0.0
    );
}

/// Test 2: a broken file, by every trigger, under load: nothing changes, and the problem is
/// told to `holdfast reload`, `POST /reload`, the log and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_changes_nothing() {
    let a = backend("a").await;
    let good = format!(
        "[[pools.app.tiers]]\nbackends = [{{ name = \"a\", address = \"{}\" }}]\n",
        a.addr()
    );
    let gw = Gateway::start_with_listen(ADMIN_TOKEN_LISTEN, &good).await;
    let before = status(&gw).await["config"].clone();
    let load = Load::start(gw.url("/"), 4, Duration::from_secs(30));
    load.more(100).await;

    gw.rewrite(
        None,
        "[[pools.app.tiers]]\nbackends = [{ address = \"nowhere\", weight = 0 }]\n",
    );
    let out = gw.command("reload");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pools.app.tiers[0].backends[0]"),
        "the key path: {stderr}"
    );
    assert!(
        stderr.contains("the running config keeps serving"),
        "{stderr}"
    );
    let r = gw.admin_post("/reload").await;
    assert_eq!(r.status(), 422);
    let doc: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(doc["result"], "failure");
    assert!(
        doc["problems"]
            .to_string()
            .contains("pools.app.tiers[0].backends[0]"),
        "{doc}"
    );
    gw.signal("HUP");
    failed_reloads(&gw, 2.0, "the SIGHUP reload fails").await;
    // The file watcher's own reload of the edit fails too (three triggers, three failures).
    failed_reloads(&gw, 3.0, "the watcher's reload fails").await;
    let report = load.finish().await;
    report.assert_none_failed();
    assert_eq!(report.by_backend().keys().collect::<Vec<_>>(), ["a"]);
    let after = status(&gw).await["config"].clone();
    for key in ["hash", "generation", "loaded_at"] {
        assert_eq!(after[key], before[key], "the running config did not change");
    }
    let last = &after["last_reload"];
    assert_eq!(last["result"], "failure", "{last}");
    assert!(
        last["problems"]
            .to_string()
            .contains("pools.app.tiers[0].backends[0]"),
        "{last}"
    );
    assert!(
        gw.metric("holdfast_config_reloads_total{result=\"failure\"}")
            .await
            >= 3.0
    );
    assert!(gw
        .log()
        .contains("config reload failed; the running config keeps serving"));
    println!(
        "broken config under load: {} requests, 0 failed",
        report.sent()
    );
}

/// Test 3: a backend down before a reload is still down after it; an unchanged healthy one
/// serves without a gap; a new one that refuses connections never gets a visitor request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_survives_a_reload() {
    let (a, x) = (backend("a").await, backend("x").await);
    let refusing = free_loopback();
    let tier = |extra: &str| holdfast_tests::pair_slow_to_rise(&a, &x, extra);
    let gw = Gateway::start(&tier("")).await;
    // x goes away and comes back, but needs 100 passing checks (30 s) to serve again.
    holdfast_tests::known_down(&gw, &x).await;
    let load = Load::start(gw.url("/"), 4, Duration::from_secs(30));
    load.more(100).await;
    let served_x = x.served();

    // A weight changes and a new backend that refuses connections comes in.
    let z = format!(", {{ name = \"z\", address = \"{refusing}\", weight = 5 }}");
    gw.rewrite(
        None,
        &tier(&z).replace("\"x\", address", "\"x\", weight = 2, address"),
    );
    gw.reload();
    wait_until(Duration::from_secs(5), "z is down", || async {
        let doc = status(&gw).await;
        let backends = doc["pools"][0]["tiers"][0]["backends"].clone();
        backends.as_array().is_some_and(|all| {
            all.iter()
                .any(|b| b["name"] == "z" && b["status"] == "down")
        })
    })
    .await;
    load.more(200).await;
    let report = load.finish().await;

    let doc = status(&gw).await;
    let backends = &doc["pools"][0]["tiers"][0]["backends"];
    let by_name = |n: &str| {
        backends
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_name("x")["status"],
        "down",
        "down before the reload, down after: {doc}"
    );
    assert_eq!(by_name("x")["weight"], 2);
    assert_eq!(by_name("z")["status"], "down");
    assert_eq!(x.served(), served_x, "x took no visitor request");
    report.assert_none_failed();
    assert_eq!(
        report.by_backend().keys().collect::<Vec<_>>(),
        ["a"],
        "a served throughout"
    );
    assert_eq!(
        gw.metric(
            "holdfast_upstream_connect_failures_total{backend=\"z\",kind=\"refused\",pool=\"app\"}"
        )
        .await,
        0.0,
        "no visitor request was sent to the new backend that refuses connections"
    );
    println!(
        "health across a reload: {} requests, all from a; x stayed down, z never tried",
        report.sent()
    );
}

/// Test 4: a listener added and one removed by a reload, under load on a third that stays and
/// never refuses a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_come_and_go_and_the_others_never_close() {
    let a = backend("a").await;
    let pools = format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        a.addr()
    );
    let (gone, added) = (free_loopback(), free_loopback());
    let gw = Gateway::start(&pools).await;
    let listen = |second: std::net::SocketAddr| {
        format!(
            "[listen]\nhttp = [\"{}\", \"{second}\"]\nadmin = \"{}\"\n",
            gw.http, gw.admin
        )
    };
    gw.rewrite(Some(&listen(gone)), &pools);
    gw.reload();
    assert!(
        tokio::net::TcpStream::connect(gone).await.is_ok(),
        "a listener added by a reload"
    );
    // Fresh connections on the listener that stays, all along.
    let load = Load::start(gw.url("/"), 2, Duration::from_secs(30)).with_arrivals(
        gw.url("/"),
        Duration::from_millis(5),
        Duration::from_secs(30),
    );
    load.more(100).await;
    gw.rewrite(Some(&listen(added)), &pools);
    let stdout = gw.reload();
    // The file watcher may apply the edit first (then this reload changes nothing): the
    // change is reported by whichever reload applied it.
    let log = gw.log();
    let applied = |said: String, logged: String| {
        stdout.contains(&said)
            || log
                .lines()
                .any(|l| l.contains("config reloaded") && l.contains(&logged))
    };
    assert!(
        applied(
            format!("listening on {added}"),
            format!("listeners_added=[\"{added}\"]")
        ),
        "{stdout}\n{log}"
    );
    assert!(
        applied(
            format!("no longer listening on {gone}"),
            format!("listeners_removed=[\"{gone}\"]")
        ),
        "{stdout}\n{log}"
    );
    let r = holdfast_tests::client()
        .get(format!("http://{added}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the added listener serves");
    wait_until(
        Duration::from_secs(2),
        "the removed listener refuses",
        || async { tokio::net::TcpStream::connect(gone).await.is_err() },
    )
    .await;
    // The admin listener, whose socket is in the same hand-over table, is untouched.
    let generation = status(&gw).await["config"]["generation"].as_u64();
    assert!(generation >= Some(3), "{generation:?}");
    load.more(100).await;
    let report = load.finish().await;
    report.assert_none_failed(); // on the listener that stayed
    println!(
        "listeners by reload: {} requests on the one that stayed, 0 failed",
        report.sent()
    );
    // The listener the process started with can go too (its socket is in the hand-over table
    // once, and that copy is closed with it).
    let only_added = format!("[listen]\nhttp = [\"{added}\"]\nadmin = \"{}\"\n", gw.admin);
    gw.rewrite(Some(&only_added), &pools);
    gw.reload();
    wait_until(
        Duration::from_secs(2),
        "the first listener refuses",
        || async { tokio::net::TcpStream::connect(gw.http).await.is_err() },
    )
    .await;
}

/// A backend a reload removes takes no new request, and its request in flight finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_finishes_its_requests_in_flight() {
    let slow = holdfast_tests::scripted_backend("slow", |head| {
        Some(match head.starts_with(b"GET /slow") {
            true => Duration::from_secs(2),
            false => Duration::ZERO,
        })
    })
    .await;
    let a = backend("a").await;
    let pool = |addr: std::net::SocketAddr| {
        format!("[[pools.app.tiers]]\nbackends = [{{ address = \"{addr}\" }}]\n")
    };
    let gw = Gateway::start(&pool(slow)).await;
    let in_flight = tokio::spawn(holdfast_tests::client().get(gw.url("/slow")).send());
    wait_until(Duration::from_secs(5), "the request in flight", || async {
        gw.metric("holdfast_requests_in_flight").await == 1.0
    })
    .await;
    gw.rewrite(None, &pool(a.addr()));
    gw.reload();
    let after = holdfast_tests::client()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.headers()["x-backend"],
        "a",
        "new requests go to the new backend"
    );
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["x-backend"],
        "slow",
        "the request in flight finished where it started"
    );
}

/// A restart (SIGTERM, then `holdfast run` again within a minute) keeps what the old process
/// knew: a backend it had down is still down, not probed up by the start-up rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_health_state() {
    let (a, x) = (backend("a").await, backend("x").await);
    let pools = holdfast_tests::pair_slow_to_rise(&a, &x, "");
    let mut gw = Gateway::start_with_listen("shutdown_delay = \"0s\"", &pools).await;
    holdfast_tests::known_down(&gw, &x).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await);
    assert!(
        gw.dir().join("state.json").exists(),
        "the state is left for the next process"
    );
    gw.restart().await;
    let served = x.served();
    for _ in 0..20 {
        let r = holdfast_tests::client()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-backend"], "a");
    }
    assert_eq!(x.served(), served, "x, known down, took no request");
    let doc = status(&gw).await;
    assert_eq!(
        doc["pools"][0]["tiers"][0]["backends"][1]["status"], "down",
        "{doc}"
    );
    assert!(gw
        .log()
        .contains("health state taken over from the previous process"));
}

/// An edit of a file the config names (here the fallback body) is applied with no signal, like
/// an edit of the config itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_named_file_is_applied() {
    let dir = std::env::temp_dir().join(format!("holdfast-named-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = dir.join("sorry.txt");
    std::fs::write(&body, "first words\n").unwrap();
    let nothing = free_loopback();
    let gw = Gateway::start(&format!(
        "[fallback]\nbody_file = \"{}\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{nothing}\" }}]\n",
        body.display()
    ))
    .await;
    let fallback = || async {
        let r = holdfast_tests::client()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        r.text().await.unwrap()
    };
    assert_eq!(fallback().await, "first words\n");
    // Written as editors do: a new file renamed over the old.
    std::fs::write(dir.join("sorry.txt.tmp"), "second words\n").unwrap();
    std::fs::rename(dir.join("sorry.txt.tmp"), &body).unwrap();
    wait_until(
        Duration::from_secs(3),
        "the new fallback body is served",
        || async { fallback().await == "second words\n" },
    )
    .await;
    assert_eq!(
        gw.metric("holdfast_config_reloads_total{result=\"success\"}")
            .await,
        1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A config mounted as Kubernetes mounts a ConfigMap (the file a symlink through `..data`, the
/// update a swap of that symlink): the swap is applied, and an event that changes no content
/// (the file replaced by the same bytes) reloads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_configmap_is_applied() {
    let (a, b) = (backend("a").await, backend("b").await);
    let gw = Gateway::start(&pool("a", a.addr())).await;
    let dir = gw.dir().to_path_buf();
    let config = gw.config_path();
    // The same content, through ..data: no reload.
    std::fs::create_dir(dir.join("v1")).unwrap();
    std::fs::copy(&config, dir.join("v1/holdfast.toml")).unwrap();
    std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/holdfast.toml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), &config).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        gw.metric("holdfast_config_reloads_total{result=\"success\"}")
            .await,
        0.0
    );
    // The update: a new directory, and ..data swapped to it.
    let text = std::fs::read_to_string(dir.join("v1/holdfast.toml")).unwrap();
    std::fs::create_dir(dir.join("v2")).unwrap();
    std::fs::write(
        dir.join("v2/holdfast.toml"),
        text.replace(&pool("a", a.addr()), &pool("b", b.addr())),
    )
    .unwrap();
    std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    wait_until(
        Duration::from_secs(3),
        "b serves after the swap",
        || async {
            let r = holdfast_tests::client()
                .get(gw.url("/"))
                .send()
                .await
                .unwrap();
            r.headers()["x-backend"] == "b"
        },
    )
    .await;
    assert_eq!(
        gw.metric("holdfast_config_reloads_total{result=\"success\"}")
            .await,
        1.0
    );
}

/// A renewed certificate (new files renamed over the old, as certbot or cert-manager do) is
/// presented to new connections without a signal; the HTTPS listener is never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_presented_without_a_signal() {
    use holdfast_tests::tls;
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.addr()
    ))
    .await;
    let https = gw.https.unwrap();
    let before = tls::presented_certificate(https).await;
    let (cert, key) = tls::self_signed_pem("localhost");
    let renewed = openssl::x509::X509::from_pem(&cert)
        .unwrap()
        .to_der()
        .unwrap();
    assert_ne!(before, renewed);
    for (name, pem) in [("key.pem", &key), ("cert.pem", &cert)] {
        std::fs::write(gw.dir().join("new.pem"), pem).unwrap();
        std::fs::rename(gw.dir().join("new.pem"), gw.dir().join(name)).unwrap();
    }
    wait_until(
        Duration::from_secs(3),
        "the renewed certificate is presented",
        || async { tls::presented_certificate(https).await == renewed },
    )
    .await;
    let answer = tls::https_exchange(
        https,
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// An edit made while the gateway starts (its config read, its start-up probe still waiting
/// on a slow health check, its watcher not yet started) is applied: the watcher takes as seen
/// what the load read, not what is on disk when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_while_starting_is_applied() {
    let web = scripted_backend("web", |head| {
        let check = head.starts_with(b"GET /slow-check ");
        Some(Duration::from_millis(if check { 1500 } else { 0 }))
    });
    let pools = format!(
        "[pools.app.health.http]\npath = \"/slow-check\"\ninterval = \"5s\"\ntimeout = \"3s\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        web.await
    );
    let mut gw = Gateway::starting_with_https(&pools).await;
    wait_until(Duration::from_secs(10), "the config is read", || async {
        gw.log().contains("open-file limit")
    })
    .await;
    let edited = format!("{pools}\n[fallback]\nretry_after = \"7s\"\n");
    gw.rewrite(None, &edited);
    assert!(
        !gw.log().contains("watching the config file"),
        "the edit came before the watcher started:\n{}",
        gw.log()
    );
    gw.ready().await;
    the_file_runs(&gw, "the config edited during the start runs").await;
}

/// An edit undone right after another trigger applied it is applied too: the watcher compares
/// the files with what the running config was read from, whoever reloaded it, not with what
/// it last saw itself (the running config would stay the edit while the file says otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_undone_after_a_signal_reload_is_applied() {
    let (a, b) = (backend("a").await, backend("b").await);
    let gw = Gateway::start(&pool("a", a.addr())).await;
    watcher_watches(&gw).await;
    gw.rewrite(None, &pool("b", b.addr()));
    gw.signal("HUP");
    wait_until(Duration::from_secs(5), "the edit runs", || async {
        status(&gw).await["config"]["generation"].as_u64() == Some(2)
    })
    .await;
    // Undone within the watcher's debounce of the first write.
    gw.rewrite(None, &pool("a", a.addr()));
    the_file_runs(&gw, "the undone edit runs").await;
    let r = holdfast_tests::client()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-backend"], "a");
}

/// Caps change live: `listen.max_connections` lowered sheds the next connection at once,
/// raised or taken out lets it in; connections already open stay counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_change_live() {
    let a = backend("a").await;
    let pools = format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\" }}]\n",
        a.addr()
    );
    let gw = Gateway::start(&pools).await;
    let listen = |cap: &str| {
        format!(
            "[listen]\nhttp = [\"{}\"]\nadmin = \"{}\"\n{cap}\n",
            gw.http, gw.admin
        )
    };
    // Two connections open, kept open.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(gw.http).await.unwrap());
    }
    let status_of_a_new_connection = || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.split_whitespace().nth(1).map(str::to_string)
    };
    for (cap, want) in [
        ("max_connections = 2", "503"),
        ("max_connections = 10", "200"),
        ("", "200"),
    ] {
        gw.rewrite(Some(&listen(cap)), &pools);
        gw.reload();
        assert_eq!(
            status_of_a_new_connection().await.as_deref(),
            Some(want),
            "with {cap:?} and two connections open"
        );
    }
    drop(held);
}

/// Sends `GET /` on a kept-alive connection and reads the whole answer; its `X-Backend`.
async fn get_on(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncWriteExt;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let head = holdfast_tests::read_answer(tcp).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let backend = head.lines().find_map(|l| l.strip_prefix("x-backend:"));
    backend.unwrap_or_default().trim().to_string()
}

/// Idle keep-alive connections do not hold the config of their time: after a reload with 1,000
/// of them open, the old config is let go at once (`holdfast_config_generations_live` back to
/// 1), and the next request on each is served by the new config's backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_let_the_old_config_go() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (a, b) = (backend("a").await, backend("b").await);
    let gw = Gateway::start(&pool("a", a.addr())).await;
    let mut visitors = Vec::new();
    for _ in 0..1000 {
        let mut tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        assert_eq!(get_on(&mut tcp).await, "a");
        visitors.push(tcp);
    }
    assert_eq!(gw.metric("holdfast_config_generations_live").await, 1.0);
    gw.rewrite(None, &pool("b", b.addr()));
    gw.reload();
    wait_until(Duration::from_secs(5), "the old config let go", || async {
        gw.metric("holdfast_config_generations_live").await == 1.0
    })
    .await;
    // One after the other: 1,000 at once would be a stampede of connects to backend b (its
    // accept queue holds 1,024), which a loaded machine can turn into a connect timeout.
    for mut tcp in visitors {
        assert_eq!(
            get_on(&mut tcp).await,
            "b",
            "the next request uses the new config"
        );
    }
}

/// An edit written while a reload triggered by the file watcher still runs is applied too:
/// the reload is made slow by a new backend whose HTTP check answers after 1.5 s, and the
/// second edit lands while that check waits. (The watcher took what was on disk after the
/// reload as seen, and the second edit was never applied.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_during_a_slow_reload_is_applied() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let a = backend("a").await;
    let checked = Arc::new(AtomicBool::new(false));
    let flag = checked.clone();
    let slow = holdfast_tests::scripted_backend("slow", move |head| {
        flag.store(true, Ordering::SeqCst);
        let check = head.starts_with(b"GET /slowcheck");
        Some(Duration::from_millis(if check { 1500 } else { 0 }))
    })
    .await;
    let pools = |backends: &str, weight: u32| {
        format!(
            "[pools.app.health.http]\npath = \"/slowcheck\"\ninterval = \"10s\"\ntimeout = \"3s\"\n\
             [[pools.app.tiers]]\nbackends = [{{ name = \"a\", address = \"{}\", weight = {weight} }}{backends}]\n",
            a.addr()
        )
    };
    let gw = Gateway::start(&pools("", 1)).await;
    watcher_watches(&gw).await;
    let with_slow = format!(", {{ name = \"slow\", address = \"{slow}\" }}");
    gw.rewrite(None, &pools(&with_slow, 1));
    // The reload probes the new backend before its config serves: wait for that check.
    wait_until(Duration::from_secs(5), "the slow check began", || {
        let began = checked.load(Ordering::SeqCst);
        async move { began }
    })
    .await;
    gw.rewrite(None, &pools(&with_slow, 7));
    the_file_runs(&gw, "the second edit applied").await;
}

/// Blocking work of a reload (reading the files a config names, resolving names, binding) is
/// done off the runtime that runs the health checks: while a reload waits on a file that
/// takes long to read (a FIFO nobody writes yet), the checks keep their interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_keep_their_interval_while_a_reload_waits() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let checks = Arc::new(AtomicUsize::new(0));
    let counter = checks.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let pools = |fallback: &str| {
        format!(
            "{fallback}[pools.app.health.tcp]\ninterval = \"100ms\"\ntimeout = \"100ms\"\njitter = \"0s\"\n\
             [[pools.app.tiers]]\nbackends = [{{ address = \"{addr}\" }}]\n"
        )
    };
    let gw = Gateway::start(&pools("")).await;
    watcher_watches(&gw).await;
    let fifo = gw.dir().join("slow.html");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    gw.rewrite(None, &pools("[fallback]\nbody_file = \"slow.html\"\n"));
    // The reload waits on the FIFO from its first read of it: count the checks meanwhile.
    wait_until(Duration::from_secs(5), "the reload started", || {
        let started = gw.log().contains("reloading the config");
        async move { started }
    })
    .await;
    let before = checks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = checks.load(Ordering::SeqCst) - before;
    // Let the reload read its file, and the config serve.
    let writer = std::thread::spawn(move || std::fs::write(&fifo, "<p>back soon</p>"));
    assert!(
        during >= 8,
        "{during} checks in 1.5 s at a 100 ms interval while a reload waited"
    );
    wait_until(Duration::from_secs(5), "the reload took", || async {
        status(&gw).await["config"]["generation"].as_u64() == Some(2)
    })
    .await;
    writer.join().unwrap().unwrap();
}
