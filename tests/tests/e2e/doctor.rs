//! `holdfast doctor` (issue 24): each cause of a 52x made for real, one at a time, and doctor
//! naming it with the right code and a fix. Causes that need an address other than loopback (a
//! listener on every address, a port held by another process) run in a network namespace the
//! test makes (root; skipped elsewhere, saying why).

use holdfast_tests::gateway::PUBLIC;
use holdfast_tests::netns::Netns;
use holdfast_tests::{backend, have, wait_until, Gateway};
use serde_json::Value;
use std::time::Duration;

/// `holdfast doctor --json` for `gw`'s config: its exit code and document.
fn doctor(gw: &Gateway) -> (i32, Value) {
    doctor_with(gw, &[])
}

/// The same with more arguments.
fn doctor_with(gw: &Gateway, more: &[&str]) -> (i32, Value) {
    let mut args = vec!["doctor", "--json"];
    args.extend_from_slice(more);
    let out = gw.holdfast(&args);
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

/// Runs a command (inside the namespace, from its thread); it must succeed.
fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace's "public" address, where Cloudflare would connect (on loopback here), and
/// addresses of Cloudflare's ranges to connect from, so the kernel's own verdict on each
/// rule is seen beside doctor's.
const PUBLIC_IP: &str = "192.0.2.1";
const REJECTED_CF: &str = "173.245.48.1";
const OTHER_CF: &str = "103.21.244.1";
const BANNED_CF: &str = "104.16.0.9";

fn addresses() {
    for ip in [PUBLIC_IP, REJECTED_CF, OTHER_CF, BANNED_CF] {
        sh(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
}

/// A site as in production, inside the test's namespace: the addresses above on loopback, a
/// backend `web`, holdfast's HTTP and HTTPS listeners on every address.
async fn public_site() -> (holdfast_tests::DemoBackend, Gateway) {
    addresses();
    let web = backend("web").await;
    let pools = format!(
        "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"web\" }}]\n",
        web.addr()
    );
    let gw = Gateway::start_with_https_and_listen(PUBLIC, &pools).await;
    (web, gw)
}

/// A connect from `from` to the public address's `port`, as the kernel answers it:
/// `Ok(())`, refused, or timed out (1 s).
async fn connect_from(from: &str, port: u16) -> Result<(), String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let to = format!("{PUBLIC_IP}:{port}").parse().unwrap();
    match tokio::time::timeout(Duration::from_secs(1), socket.connect(to)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err("refused".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The packet filter, walked as the kernel walks it (issue 24, test 4), each verdict checked
/// against a real connect from an address of the range: an iptables rule REJECTing one of
/// Cloudflare's ranges on the HTTPS port (fail, 521, the range and the rule named; the HTTP
/// port untouched); a DROP for everything with an ACCEPT for the ranges before it (passes,
/// exit 0); an nftables DROP policy without the ranges (fail, 522, the chain named).
#[test]
fn the_packet_filter_is_walked_for_cloudflare() {
    let Some(ns) = namespace("doctor-fw") else {
        return;
    };
    if !have("nft", "nftables") {
        return;
    }
    ns.run(|| async {
        let (_web, gw) = public_site().await;
        let (http, https) = (gw.http.port(), gw.https.unwrap().port());
        let https_s = https.to_string();
        let port = |doc: &Value, p: u16| -> Value {
            finding(doc, &format!("port {p} from Cloudflare")).clone()
        };

        // 1. One range rejected on the HTTPS port.
        sh(&[
            "iptables", "-A", "INPUT", "-s", "173.245.48.0/20", "-p", "tcp", "--dport", &https_s,
            "-j", "REJECT", "--reject-with", "tcp-reset",
        ]);
        let (code, doc) = doctor(&gw);
        assert_eq!(code, 1, "{doc:#}");
        let f = port(&doc, https);
        assert_eq!(verdict_and_code(&f), ("fail", Some(521)), "{f}");
        let found = f["found"].as_str().unwrap();
        assert!(
            found.starts_with("173.245.48.0/20 (Cloudflare's) is rejected by iptables filter INPUT rule 1"),
            "{f}"
        );
        assert!(f["fix"].as_str().unwrap().contains("iptables -t filter -I INPUT 1"), "{f}");
        assert_eq!(port(&doc, http)["verdict"], "ok");
        assert_eq!(connect_from(REJECTED_CF, https).await, Err("refused".into()));
        assert_eq!(connect_from(OTHER_CF, https).await, Ok(()));
        assert_eq!(connect_from(REJECTED_CF, http).await, Ok(()));

        // 2. DROP for everything, the ranges accepted before it (and loopback's own traffic, and
        // what belongs to connections already made).
        sh(&["iptables", "-F", "INPUT"]);
        let ranges = "173.245.48.0/20,103.21.244.0/22,103.22.200.0/22,103.31.4.0/22,\
                      141.101.64.0/18,108.162.192.0/18,190.93.240.0/20,188.114.96.0/20,\
                      197.234.240.0/22,198.41.128.0/17,162.158.0.0/15,104.16.0.0/13,\
                      104.24.0.0/14,172.64.0.0/13,131.0.72.0/22";
        let ports = format!("{http},{https}");
        sh(&["iptables", "-A", "INPUT", "-i", "lo", "-s", "127.0.0.0/8", "-j", "ACCEPT"]);
        sh(&[
            "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
            "-j", "ACCEPT",
        ]);
        sh(&[
            "iptables", "-A", "INPUT", "-s", ranges, "-p", "tcp", "-m", "multiport", "--dports",
            &ports, "-j", "ACCEPT",
        ]);
        sh(&["iptables", "-A", "INPUT", "-j", "DROP"]);
        let (code, doc) = doctor(&gw);
        assert_eq!(code, 0, "{doc:#}");
        for p in [http, https] {
            let f = port(&doc, p);
            assert_eq!(f["verdict"], "ok", "{f}");
            assert!(f["found"].as_str().unwrap().starts_with("all 15 of Cloudflare's ranges get in"), "{f}");
        }
        assert_eq!(connect_from(REJECTED_CF, https).await, Ok(()));
        assert_eq!(connect_from(PUBLIC_IP, https).await, Err("timed out".into()));

        // 3. nftables: a DROP policy, loopback's own traffic let in, Cloudflare's ranges not.
        sh(&["iptables", "-F", "INPUT"]);
        let rules = gw.dir().join("fw.nft");
        std::fs::write(
            &rules,
            "table inet holdfast_test {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
             ip saddr 127.0.0.0/8 accept\n    ip6 saddr ::1 accept\n  }\n}\n",
        )
        .unwrap();
        sh(&["nft", "-f", rules.to_str().unwrap()]);
        let (code, doc) = doctor(&gw);
        assert_eq!(code, 1, "{doc:#}");
        for p in [http, https] {
            let f = port(&doc, p);
            assert_eq!(verdict_and_code(&f), ("fail", Some(522)), "{f}");
            assert_eq!(
                f["found"],
                "all 15 of Cloudflare's IPv4 ranges are dropped by the policy of nft inet holdfast_test input",
            );
            assert!(f["fix"].as_str().unwrap().contains("nft insert rule inet holdfast_test input ip saddr"), "{f}");
        }
        assert_eq!(connect_from(OTHER_CF, https).await, Err("timed out".into()));
        sh(&["nft", "delete", "table", "inet", "holdfast_test"]);
        let f = finding(&doc, "outside this machine");
        assert!(f["found"].as_str().unwrap().contains("173.245.48.0/20 103.21.244.0/22"), "{f}");
    });
}

/// A Cloudflare address banned by a real fail2ban (issue 24, test 5): a jail on the
/// listeners' ports with fail2ban's own iptables action, run from a config directory of the
/// test's own; doctor names the jail, the address and the command to unban it.
#[test]
fn a_cloudflare_address_banned_by_fail2ban_is_named() {
    let Some(ns) = namespace("doctor-f2b") else {
        return;
    };
    if !have("fail2ban-client", "fail2ban") {
        return;
    }
    ns.run(|| async {
        let (_web, gw) = public_site().await;
        let (http, https) = (gw.http.port(), gw.https.unwrap().port());
        // fail2ban's own filters and actions, with a jail of the test's.
        let dir = gw.dir().join("fail2ban");
        sh(&["cp", "-r", "/etc/fail2ban", dir.to_str().unwrap()]);
        for stale in std::fs::read_dir(dir.join("jail.d")).unwrap() {
            std::fs::remove_file(stale.unwrap().path()).unwrap();
        }
        let at = |name: &str| dir.join(name).display().to_string();
        std::fs::write(
            dir.join("fail2ban.local"),
            format!(
                "[Definition]\nlogtarget = {}\nsocket = {}\npidfile = {}\ndbfile = :memory:\n",
                at("server.log"),
                at("f2b.sock"),
                at("f2b.pid")
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("filter.d/holdfast-test.conf"),
            "[Definition]\nfailregex = ^<HOST> bad$\n",
        )
        .unwrap();
        std::fs::write(dir.join("visitors.log"), "").unwrap();
        std::fs::write(
            dir.join("jail.local"),
            format!(
                "[holdfast-test]\nenabled = true\nfilter = holdfast-test\nport = {http},{https}\n\
                 logpath = {}\nbackend = polling\nbanaction = iptables-multiport\n",
                at("visitors.log")
            ),
        )
        .unwrap();
        let conf = dir.to_str().unwrap().to_string();
        // Stopped by its PID when the test ends, however it ends.
        let _server = Stopped(
            std::process::Command::new("fail2ban-client")
                .args(["-c", &conf, "-x", "-f", "start"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let client = |args: &[&str]| {
            std::process::Command::new("fail2ban-client")
                .args(["-c", &conf])
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        wait_until(Duration::from_secs(30), "fail2ban answers", || async {
            client(&["ping"])
        })
        .await;
        assert!(client(&["set", "holdfast-test", "banip", BANNED_CF]));
        wait_until(Duration::from_secs(10), "the ban's rule is in", || async {
            let save = std::process::Command::new("iptables-save").output().unwrap();
            String::from_utf8_lossy(&save.stdout).contains(&format!("{BANNED_CF}/32"))
        })
        .await;

        let (code, doc) = doctor(&gw);
        assert_eq!(code, 1, "{doc:#}");
        let f = finding(&doc, &format!("port {https} from Cloudflare"));
        assert_eq!(verdict_and_code(f), ("fail", Some(521)), "{f}");
        assert!(
            f["found"].as_str().unwrap().starts_with(
                "104.16.0.9 (Cloudflare's) is banned by fail2ban's jail holdfast-test: rejected by iptables filter f2b-holdfast-test rule 1"
            ),
            "{f}"
        );
        let fix = f["fix"].as_str().unwrap();
        assert!(fix.contains("`fail2ban-client set holdfast-test unbanip 104.16.0.9`"), "{f}");
        assert!(fix.contains("ignoreip"), "{f}");
        assert_eq!(connect_from(BANNED_CF, https).await, Err("refused".into()));
        assert_eq!(connect_from(OTHER_CF, https).await, Ok(()));

        // Unbanned as the fix says: doctor passes again.
        assert!(client(&["set", "holdfast-test", "unbanip", BANNED_CF]));
        let (code, doc) = doctor(&gw);
        assert_eq!(code, 0, "{doc:#}");
        client(&["stop"]);
    });
}

/// A process the test started, stopped by its PID when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `--from-outside ADDR`: the request as Cloudflare sends it, to the public address on each
/// listener's port. Answered there, then dropped there by a rule for that address alone (522
/// from outside while the request from this machine still passes; the firewall check cannot
/// tell whether that rule's address is the listener's, and warns).
#[test]
fn the_request_to_the_public_address() {
    let Some(ns) = namespace("doctor-outside") else {
        return;
    };
    ns.run(|| async {
        let (_web, gw) = public_site().await;
        let https = gw.https.unwrap().port();
        let outside = |doc: &Value, scheme: &str, port: u16| -> Value {
            finding(
                doc,
                &format!("request to {scheme}://{PUBLIC_IP}:{port} (the public address)"),
            )
            .clone()
        };
        let (code, doc) = doctor_with(&gw, &["--from-outside", PUBLIC_IP]);
        assert_eq!(code, 0, "{doc:#}");
        for (scheme, port) in [("http", gw.http.port()), ("https", https)] {
            let f = outside(&doc, scheme, port);
            assert_eq!(f["verdict"], "ok", "{f}");
            assert!(f["found"].as_str().unwrap().starts_with("200 in "), "{f}");
        }

        sh(&[
            "iptables",
            "-A",
            "INPUT",
            "-d",
            PUBLIC_IP,
            "-p",
            "tcp",
            "--dport",
            &https.to_string(),
            "-j",
            "DROP",
        ]);
        let (code, doc) = doctor_with(&gw, &["--from-outside", PUBLIC_IP]);
        assert_eq!(code, 1, "{doc:#}");
        let f = outside(&doc, "https", https);
        assert_eq!(verdict_and_code(&f), ("fail", Some(522)), "{f}");
        assert_eq!(
            finding(&doc, "request to https://0.0.0.0:")["verdict"],
            "ok"
        );
        let f = finding(&doc, &format!("port {https} from Cloudflare"));
        assert_eq!(f["verdict"], "warn", "{f}");
        assert!(
            f["found"]
                .as_str()
                .unwrap()
                .contains("the destination address"),
            "{f}"
        );
    });
}

/// The classic trap of a renewal (issue 24, test 7, "renewed but not loaded"): holdfast runs as
/// a service user would (root here, without any capability, so file modes bind it), and the
/// renewal writes a new key it cannot read. Its reload fails and it goes on serving the old
/// certificate; doctor names both: the file served is not the file on disk, and holdfast cannot
/// read the key. Doing what the fix says (group read) lets the watcher load the renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_holdfast_cannot_read_is_named() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (a file holdfast's user cannot read); CI runs it as root");
        return;
    }
    let web = backend("web").await;
    let gw = Gateway::start_with_https_and_env(
        &format!(
            "[[pools.app.tiers]]\nbackends = [{{ address = \"{}\", name = \"web\" }}]\n",
            web.addr()
        ),
        &[(holdfast_tests::gateway::NO_CAPABILITIES, "1")],
    )
    .await;
    // Its listeners are on loopback (a failure of their own): the TLS layer is what is looked at.
    let tls_fails = |doc: &Value| -> Vec<Value> {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["layer"] == "tls" && f["verdict"] != "ok")
            .cloned()
            .collect()
    };
    let (_, doc) = doctor(&gw);
    assert_eq!(tls_fails(&doc), Vec::<Value>::new());
    let key = gw.dir().join("key.pem");
    let served = |doc: &Value| -> Value {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"].as_str().unwrap().ends_with(" served"))
            .cloned()
            .unwrap_or_else(|| panic!("no served check: {doc:#}"))
    };
    assert_eq!(served(&doc)["verdict"], "ok");

    // The renewal: a new key, owned by another user and readable by it alone, then the
    // certificate.
    let (cert, new_key) = holdfast_tests::tls::self_signed_pem("localhost");
    let staged = gw.dir().join("key.pem.new");
    std::fs::write(&staged, &new_key).unwrap();
    std::os::unix::fs::chown(&staged, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::rename(&staged, &key).unwrap();
    std::fs::write(gw.dir().join("cert.pem"), &cert).unwrap();
    wait_until(Duration::from_secs(10), "the reload fails", || async {
        gw.log().contains("Permission denied")
    })
    .await;

    let (_, doc) = doctor(&gw);
    assert_eq!(tls_fails(&doc).len(), 2, "{doc:#}");
    let f = served(&doc);
    assert_eq!(f["verdict"], "warn", "{f}");
    assert!(
        f["found"]
            .as_str()
            .unwrap()
            .contains("renewed but not loaded"),
        "{f}"
    );
    let f = finding(&doc, &format!("{} readable", key.display()));
    assert_eq!(verdict_and_code(f), ("fail", Some(525)), "{f}");
    let found = f["found"].as_str().unwrap();
    assert!(
        found.starts_with(&format!(
            "holdfast (pid {}, uid 0) cannot read it (owner 65534, group 65534, mode 0600)",
            gw.pid()
        )),
        "{f}"
    );

    // As the fix says: the group's read access (root's group here).
    std::os::unix::fs::chown(&key, None, Some(0)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    wait_until(Duration::from_secs(10), "the renewal is served", || async {
        served(&doctor(&gw).1)["verdict"] == "ok"
    })
    .await;
    let (_, doc) = doctor(&gw);
    assert_eq!(tls_fails(&doc), Vec::<Value>::new());
}

/// A backend at an address the namespace has no route to (issue 24, test 2): the connect fails
/// at once with "network unreachable", the 523 Cloudflare shows for an origin it cannot reach;
/// the pool serves from the other backend, so it is a warning, and the pool is named as such.
#[test]
fn a_backend_that_routes_nowhere_is_named() {
    let Some(ns) = namespace("doctor-523") else {
        return;
    };
    ns.run(|| async {
        let web = backend("web").await;
        let gw = Gateway::start_with_listen(
            PUBLIC,
            &format!(
                "[[pools.app.tiers]]\nname = \"main\"\n\
                 backends = [{{ address = \"10.255.255.1:80\", name = \"nowhere\" }}, {{ address = \"{}\", name = \"web\" }}]\n",
                web.addr()
            ),
        )
        .await;
        let (_, doc) = doctor(&gw);
        let f = finding(&doc, "backend app/main/nowhere");
        assert_eq!(verdict_and_code(f), ("warn", Some(523)), "{f}");
        assert!(f["found"].as_str().unwrap().contains("unreachable"), "{f}");
        assert_eq!(finding(&doc, "backend app/main/web")["verdict"], "ok");
        assert_eq!(finding(&doc, "pool app")["verdict"], "ok", "{doc:#}");
    });
}
