//! `holdfast doctor` (issue 24): each cause of a 52x made for real, one at a time, and doctor
//! naming it with the right code and a fix. Causes that need an address other than loopback (a
//! listener on every address, a port held by another process) run in a network namespace the
//! test makes (root; skipped elsewhere, saying why).

use holdfast_tests::gateway::PUBLIC;
use holdfast_tests::netns::Netns;
use holdfast_tests::{backend, Gateway};
use serde_json::Value;
use std::time::Duration;

/// `holdfast doctor --json` for `gw`'s config: its exit code and document.
fn doctor(gw: &Gateway) -> (i32, Value) {
    let out = gw.holdfast(&["doctor", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    schema(&doc);
    (out.status.code().unwrap_or(-1), doc)
}

/// The `--json` document's schema: its keys and their types, every finding whole.
fn schema(doc: &Value) {
    assert!(doc["config"].is_string(), "{doc}");
    assert!(doc["ok"].is_boolean(), "{doc}");
    assert!(doc["took_s"].is_f64(), "{doc}");
    for key in ["ok", "warn", "fail"] {
        assert!(doc["counts"][key].is_u64(), "{doc}");
    }
    let findings = doc["findings"].as_array().expect("findings");
    let layers = [
        "process",
        "listeners",
        "firewall",
        "backends",
        "tls",
        "resources",
        "request",
    ];
    for f in findings {
        let object = f.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["check", "code", "fix", "found", "layer", "verdict"],
            "{f}"
        );
        assert!(layers.contains(&f["layer"].as_str().unwrap()), "{f}");
        assert!(
            ["ok", "warn", "fail"].contains(&f["verdict"].as_str().unwrap()),
            "{f}"
        );
        assert!(f["code"].is_null() || f["code"].is_u64(), "{f}");
        assert!(f["found"].is_string(), "{f}");
        assert_eq!(
            f["fix"].is_null(),
            f["verdict"] == "ok",
            "a fix unless ok: {f}"
        );
    }
    let fails = findings.iter().filter(|f| f["verdict"] == "fail").count();
    assert_eq!(doc["counts"]["fail"], fails);
    assert_eq!(doc["ok"], fails == 0);
}

/// The finding whose check starts with `check`.
fn finding<'d>(doc: &'d Value, check: &str) -> &'d Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"].as_str().unwrap().starts_with(check))
        .unwrap_or_else(|| panic!("no {check:?} in {doc:#}"))
}

fn verdict_and_code(f: &Value) -> (&str, Option<u64>) {
    (f["verdict"].as_str().unwrap(), f["code"].as_u64())
}

/// A backend stopped (nothing listens: 521) and one hung (it accepts, as a stopped process's
/// kernel does, and never answers: 524) beside a good backup: each named with its code and
/// what holdfast says of it; the pool serving from the backup is a warning, the backends'
/// failures too (the site still answers). The listener on loopback is the failure (521).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_and_a_hung_backend_are_named() {
    let stopped = backend("stopped").await;
    let stopped_addr = stopped.addr();
    let hung = tokio::net::TcpSocket::new_v4().unwrap();
    hung.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hung = hung.listen(128).unwrap(); // never accepts
    let spare = backend("spare").await;
    let gw = Gateway::start(&format!(
        r#"
[pools.app.health.http]
path = "/health"
interval = "500ms"
timeout = "300ms"
[[pools.app.tiers]]
name = "main"
backends = [{{ address = "{stopped_addr}", name = "stopped" }}, {{ address = "{}", name = "hung" }}]
[[pools.app.tiers]]
name = "spare"
backends = [{{ address = "{}", name = "spare" }}]
"#,
        hung.local_addr().unwrap(),
        spare.addr()
    ))
    .await;
    stopped.stop();
    holdfast_tests::wait_until(Duration::from_secs(5), "holdfast sees it out", || async {
        let status: Value = serde_json::from_str(&gw.status().await).unwrap_or_default();
        status["pools"][0]["tiers"][0]["backends"][0]["usable"] == false
    })
    .await;
    let (code, doc) = doctor(&gw);
    assert_eq!(code, 1, "{doc:#}");
    let f = finding(&doc, "backend app/main/stopped");
    assert_eq!(verdict_and_code(f), ("warn", Some(521)), "{f}");
    assert!(
        f["found"]
            .as_str()
            .unwrap()
            .contains("connection refused; holdfast: down"),
        "{f}"
    );
    let f = finding(&doc, "backend app/main/hung");
    assert_eq!(verdict_and_code(f), ("warn", Some(524)), "{f}");
    assert!(
        f["found"].as_str().unwrap().contains("does not answer"),
        "{f}"
    );
    assert_eq!(
        verdict_and_code(finding(&doc, "backend app/spare/spare")),
        ("ok", None)
    );
    let f = finding(&doc, "pool app");
    assert_eq!(f["verdict"], "warn", "{f}");
    assert!(
        f["found"]
            .as_str()
            .unwrap()
            .contains("tier spare (a backup) serves"),
        "{f}"
    );
    let f = finding(&doc, "listener 127.0.0.1:");
    assert_eq!(verdict_and_code(f), ("fail", Some(521)), "{f}");
    assert_eq!(
        verdict_and_code(finding(&doc, "holdfast running")),
        ("ok", None)
    );
    let f = finding(&doc, "request to http://127.0.0.1:");
    assert_eq!(verdict_and_code(f), ("ok", None), "the backup answers: {f}");
    assert!(f["found"].as_str().unwrap().starts_with("200 in "), "{f}");

    // The text says the same, one line per check, with the fix.
    let out = gw.holdfast(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nbackends\n"), "{text}");
    assert!(
        text.contains("  WARN 521  backend app/main/stopped"),
        "{text}"
    );
    assert!(
        text.contains("            fix: nothing listens at that address"),
        "{text}"
    );
    assert!(text.contains("Cloudflare would show 521"), "{text}");
    drop(hung);
}

/// The running process's open-file limit lowered below what its connection cap needs
/// (`prlimit`, as a unit's `LimitNOFILE=` too low would be): a failure, 522, with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_file_limit_below_the_cap_is_named() {
    let web = backend("web").await;
    let gw = Gateway::start(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"web\" }}]\n",
        web.addr()
    ))
    .await;
    let (_, doc) = doctor(&gw);
    assert_eq!(finding(&doc, "open-file limit")["verdict"], "ok", "{doc:#}");
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=512:512"])
        .status()
        .unwrap();
    assert!(lowered.success());
    let (code, doc) = doctor(&gw);
    assert_eq!(code, 1);
    let f = finding(&doc, "open-file limit");
    assert_eq!(verdict_and_code(f), ("fail", Some(522)), "{f}");
    assert!(
        f["found"].as_str().unwrap().starts_with("512, below"),
        "{f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("LimitNOFILE="), "{f}");
}

/// The certificate on disk replaced by an expired one (holdfast keeps serving the old one:
/// the next restart would fail), then by one whose key is not the file's: each a failure with
/// its code (526, 525).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_on_disk_is_named() {
    let web = backend("web").await;
    let gw = Gateway::start_with_https(&format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"web\" }}]\n",
        web.addr()
    ))
    .await;
    let (_, doc) = doctor(&gw);
    let f = finding(&doc, "certificate ");
    assert_eq!(f["verdict"], "ok", "{f}");
    assert!(
        f["found"].as_str().unwrap().starts_with("localhost: "),
        "{f}"
    );
    assert_eq!(finding(&doc, "certificate ")["verdict"], "ok");
    let served = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"].as_str().unwrap().ends_with(" served"))
        .unwrap_or_else(|| panic!("no served check: {doc:#}"));
    assert_eq!(served["verdict"], "ok", "{served}");

    let (cert, key) = holdfast_tests::tls::expiring_pem("localhost", -2);
    std::fs::write(gw.dir().join("key.pem"), &key).unwrap();
    std::fs::write(gw.dir().join("cert.pem"), &cert).unwrap();
    let (code, doc) = doctor(&gw);
    assert_eq!(code, 1);
    let f = finding(&doc, "certificate ");
    assert_eq!(verdict_and_code(f), ("fail", Some(526)), "{f}");
    assert!(f["found"].as_str().unwrap().contains("expired"), "{f}");

    let (other, _) = holdfast_tests::tls::self_signed_pem("localhost");
    std::fs::write(gw.dir().join("cert.pem"), other).unwrap();
    let (_, doc) = doctor(&gw);
    let f = finding(&doc, "certificate ");
    assert_eq!(verdict_and_code(f), ("fail", Some(525)), "{f}");
    assert!(
        f["found"]
            .as_str()
            .unwrap()
            .contains("is not this certificate's"),
        "{f}"
    );
}

/// Root only: a network namespace of its own, or `None` (and why) elsewhere.
fn namespace(label: &str) -> Option<Netns> {
    if let Some(why) = Netns::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Netns::create(label))
}

/// A healthy set-up, as in production (listeners on every address, in a namespace of the
/// test's own): every check passes or at most warns of the machine, and doctor exits 0.
#[test]
fn a_healthy_set_up_passes() {
    let Some(ns) = namespace("doctor-ok") else {
        return;
    };
    ns.run(|| async {
        let web = backend("web").await;
        let gw = Gateway::start_with_https_and_listen(
            PUBLIC,
            &format!(
                "[pools.app.health.http]\npath = \"/health\"\n\
                 [[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"web\" }}]\n",
                web.addr()
            ),
        )
        .await;
        let (code, doc) = doctor(&gw);
        assert_eq!(code, 0, "{doc:#}");
        for f in doc["findings"].as_array().unwrap() {
            let machine = f["layer"] == "resources" && f["verdict"] == "warn";
            assert!(f["verdict"] == "ok" || machine, "{f}");
        }
        for check in [
            "holdfast running",
            "listener 0.0.0.0:",
            "backend app/",
            "pool app",
            "certificate ",
            "request to http://0.0.0.0:",
            "request to https://0.0.0.0:",
        ] {
            assert_eq!(finding(&doc, check)["verdict"], "ok", "{check}");
        }
        assert!(finding(&doc, "listener 0.0.0.0:")["found"]
            .as_str()
            .unwrap()
            .contains("bound by holdfast"));
        eprintln!("doctor took {} s", doc["took_s"]);
    });
}

/// The HTTP port held by another process (here the test itself) while holdfast is not
/// running: both named, 521, the holder by pid and command.
#[test]
fn a_port_held_by_another_process_is_named() {
    let Some(ns) = namespace("doctor-port") else {
        return;
    };
    ns.run(|| async {
        let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let scratch = holdfast_tests::gateway::Scratch::new();
        let admin = holdfast_tests::ports::free_loopback();
        let config = scratch.write(
            "holdfast.toml",
            &format!(
                "[listen]\nhttp = [\"0.0.0.0:{port}\"]\nadmin = \"{admin}\"\n\
                 [[pools.app.tiers]]\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n"
            ),
        );
        let out = std::process::Command::new(holdfast_tests::gateway::binary())
            .args(["doctor", "--json", "--config"])
            .arg(&config)
            .arg("--admin")
            .arg(admin.to_string())
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        schema(&doc);
        assert_eq!(out.status.code(), Some(1));
        let f = finding(&doc, "holdfast running");
        assert_eq!(verdict_and_code(f), ("fail", Some(521)), "{f}");
        let f = finding(&doc, &format!("listener 0.0.0.0:{port}"));
        assert_eq!(verdict_and_code(f), ("fail", Some(521)), "{f}");
        let me = format!("pid {}", std::process::id());
        assert!(f["found"].as_str().unwrap().contains(&me), "{f}");
        // The request as Cloudflare sends it meets a socket that never answers.
        let f = finding(&doc, &format!("request to http://0.0.0.0:{port}"));
        assert_eq!(verdict_and_code(f), ("fail", Some(520)), "{f}");
        drop(holder);
    });
}
