//! Test 7: `holdfast check` names the file, the key path and the reason of every problem, and
//! accepts every config shipped in the repository.

use holdfast_tests::gateway::{check, Scratch};
use std::path::Path;

const VALID_POOL: &str = r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#;

/// (what is wrong, config text, expected key path, expected words of the reason)
const BROKEN: &[(&str, &str, &str, &str)] = &[
    (
        "an ALPN protocol holdfast does not speak",
        r#"
[listen]
alpn = ["h2", "h3"]
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.alpn[1]",
        "is not \"h2\" or \"http/1.1\"",
    ),
    (
        "no ALPN protocol at all",
        r#"
[listen]
alpn = []
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.alpn",
        "must offer",
    ),
    (
        "no HTTP/2 stream allowed",
        r#"
[listen]
h2_max_concurrent_streams = 0
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.h2_max_concurrent_streams",
        "must be from 1 to 4096",
    ),
    (
        "a range refresh from something that is not a URL",
        r#"
[trust]
refresh_url = "api.cloudflare.com/client/v4/ips"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "trust.refresh_url",
        "not an http:// or https:// URL",
    ),
    (
        "a refresh interval without a URL",
        r#"
[trust]
refresh_interval = "1h"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "trust.refresh_url",
        "need a refresh_url",
    ),
    (
        "origin pulls on a plain HTTP listener",
        r#"
[listen]
http = ["127.0.0.1:8080"]
[listen.origin_pulls."127.0.0.1:8080"]
ca = "ca.pem"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.origin_pulls",
        "only meaningful with HTTPS listeners",
    ),
    (
        "a backend CA without TLS",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", tls_ca = "ca.pem" }]
"#,
        "pools.app.tiers[0].backends[0].tls_ca",
        "only meaningful with tls = true",
    ),
    (
        "a backend CA file that is not there",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", tls = true, sni = "b.test", tls_ca = "no-such-ca.pem" }]
"#,
        "pools.app.tiers[0].backends[0].tls_ca",
        "cannot read",
    ),
    (
        "a trusted proxy that is not a CIDR",
        r#"
[trust]
trusted_proxies = ["10.0.0.0/8", "10.0.0.0/33"]
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "trust.trusted_proxies[1]",
        "is not a CIDR",
    ),
    (
        "a visitor header that is not a header name",
        r#"
[trust]
visitor_ip_header = "CF Connecting IP"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "trust.visitor_ip_header",
        "not a header name",
    ),
    (
        "trusted_only for an address that is no listener",
        r#"
[listen]
http = ["127.0.0.1:8080"]
trusted_only = ["127.0.0.1:9999"]
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.trusted_only[0]",
        "not the address of a listener",
    ),
    (
        "no connection allowed",
        r#"
[listen]
max_connections = 0
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.max_connections",
        "at least 1",
    ),
    (
        "retry on a status that is not 5xx",
        r#"
[pools.app]
retry_on_status = [503, 404]
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.retry_on_status[1]",
        "not a 5xx status",
    ),
    (
        "hold-down cap below its base",
        r#"
[pools.app.health]
hold_down = "30s"
hold_down_max = "10s"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health.hold_down_max",
        "shorter than hold_down (30s)",
    ),
    (
        "failure rate above 100 %",
        r#"
[pools.app.health.failure_rate]
percent = 150
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health.failure_rate.percent",
        "150 is not a share in percent",
    ),
    (
        "ejection cap above 100 %",
        r#"
[pools.app.health]
max_ejection_percent = 101
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health.max_ejection_percent",
        "101 is not a share in percent",
    ),
    (
        "a line break in the fallback's content type",
        r#"
[fallback]
content_type = "text/html\r\nSet-Cookie: x=1"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "fallback.content_type",
        "must not be empty nor hold control characters",
    ),
    (
        "hedge bounds the wrong way round",
        r#"
[pools.app.hedge]
response_min = "2s"
response_max = "1s"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.hedge.response_max",
        "shorter than response_min (2s)",
    ),
    (
        "POST among the methods sent again",
        r#"
[pools.app]
retry_methods = ["GET", "POST"]
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.retry_methods[1]",
        "\"POST\" is not an idempotent method",
    ),
    (
        "a backend that may have no request",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", max_in_flight = 0 }]
"#,
        "pools.app.tiers[0].backends[0].max_in_flight",
        "at least 1",
    ),
    (
        "a backend protocol holdfast does not speak",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", protocol = "h3" }]
"#,
        "pools.app.tiers[0].backends[0].protocol",
        "unknown protocol \"h3\" (expected \"http/1.1\" or \"h2\")",
    ),
    (
        "limits of a listener that does not exist",
        r#"
[listen]
http = ["127.0.0.1:8080"]
[listen.limits."127.0.0.1:9999"]
max_in_flight = 10
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.limits.\"127.0.0.1:9999\"",
        "not the address of a listener",
    ),
    (
        "flap window of nothing",
        r#"
[pools.app.health]
flap_window = "0s"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health.flap_window",
        "longer than 0s",
    ),
    (
        "header timeout too short",
        r#"
[listen]
header_timeout = "10ms"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.header_timeout",
        "at least 100ms",
    ),
    (
        "unparsable address",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
[[pools.app.tiers]]
backends = [{ address = "not an address" }]
"#,
        "pools.app.tiers[1].backends[0].address",
        "not host:port",
    ),
    (
        "port out of range",
        r#"
[[pools.app.tiers]]
backends = [{ address = "10.0.0.1:99999" }]
"#,
        "pools.app.tiers[0].backends[0].address",
        "not a port number",
    ),
    (
        "empty tier",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
[[pools.app.tiers]]
backends = []
"#,
        "pools.app.tiers[1].backends",
        "at least one backend",
    ),
    (
        "duplicate backend name",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", name = "web" }, { address = "127.0.0.1:8082", name = "web" }]
"#,
        "pools.app.tiers[0].backends[1].name",
        "another backend",
    ),
    (
        "duplicate backend address",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", name = "again" }]
"#,
        "pools.app.tiers[1].backends[0].address",
        "already a backend",
    ),
    (
        "route to a missing pool",
        r#"
[routes]
default = "app"
hosts = { "shop.example.com" = "shop" }
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "routes.hosts.\"shop.example.com\"",
        "no pool named \"shop\"",
    ),
    (
        "default route to a missing pool",
        r#"
[routes]
default = "www"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "routes.default",
        "no pool named \"www\"",
    ),
    (
        "zero rise",
        r#"
[pools.app.health.tcp]
rise = 0
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health.tcp.rise",
        "at least 1",
    ),
    (
        "zero fall",
        r#"
[pools.app.health.http]
fall = 0
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health.http.fall",
        "at least 1",
    ),
    (
        "zero passive threshold",
        r#"
[pools.app.health]
passive_fall = 0
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health.passive_fall",
        "at least 1",
    ),
    (
        "zero weight",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", weight = 0 }]
"#,
        "pools.app.tiers[0].backends[0].weight",
        "at least 1",
    ),
    (
        "unknown key",
        r#"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081", wieght = 2 }]
"#,
        "pools.app.tiers[0].backends[0].wieght",
        "unknown field `wieght`",
    ),
    (
        "bad duration",
        r#"
[pools.app]
connect_timeout = "2 fortnights"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.connect_timeout",
        "invalid duration",
    ),
    (
        "budget beyond Cloudflare's 100 s",
        r#"
[pools.app]
total_timeout = "120s"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.total_timeout",
        "under 100s",
    ),
    (
        "a pool with no tiers",
        r#"
[pools.app]
max_attempts = 3
"#,
        "pools.app.tiers",
        "at least one tier",
    ),
    (
        "fallback status Cloudflare would replace",
        r#"
[fallback]
status = 502
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "fallback.status",
        "Cloudflare",
    ),
    (
        "missing fallback body file",
        r#"
[fallback]
body_file = "no-such-page.html"
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "fallback.body_file",
        "cannot read",
    ),
    (
        "no TCP and no HTTP check",
        r#"
[pools.app.health.tcp]
enabled = false
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "pools.app.health",
        "could never come back",
    ),
    (
        "bad listener address",
        r#"
[listen]
http = ["0.0.0.0:80", "localhost"]
[[pools.app.tiers]]
backends = [{ address = "127.0.0.1:8081" }]
"#,
        "listen.http[1]",
        "not an IP:port",
    ),
    ("not TOML", "[pools.app\nbroken = ", "", "line 1"),
];

#[test]
fn broken_configs_are_rejected_with_file_key_path_and_reason() {
    let scratch = Scratch::new();
    for (i, (what, text, path, reason)) in BROKEN.iter().enumerate() {
        let file = scratch.write(&format!("broken-{i}.toml"), text);
        let out = check(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted\n{stderr}");
        assert!(
            out.status.code().is_some(),
            "{what}: no exit code (a crash?)\n{stderr}"
        );
        let expected = if path.is_empty() {
            format!("{}: ", file.display())
        } else {
            format!("{}: {path}: ", file.display())
        };
        let line = stderr.lines().find(|l| l.starts_with(&expected));
        let line =
            line.unwrap_or_else(|| panic!("{what}: no line starts with {expected:?}\n{stderr}"));
        assert!(
            line.contains(reason),
            "{what}: {line:?} does not say {reason:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "many.toml",
        r#"
[routes]
default = "nowhere"
[pools.app.health.tcp]
rise = 0
[[pools.app.tiers]]
backends = []
"#,
    );
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "routes.default",
        "pools.app.health.tcp.rise",
        "pools.app.tiers[0].backends",
    ] {
        assert!(
            stderr.contains(&format!(": {path}: ")),
            "{path} missing:\n{stderr}"
        );
    }
}

#[test]
fn a_valid_config_passes_with_a_summary() {
    let scratch = Scratch::new();
    let file = scratch.write("ok.toml", VALID_POOL);
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: 1 pool(s), 1 tier(s), 1 backend(s)"),
        "{stdout}"
    );
}

#[test]
fn every_shipped_config_is_valid() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = check(&path);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no config in {}", deploy.display());
}

/// A listening port already taken stops the start at once, naming the address, instead of a
/// gateway that runs without its listener.
#[test]
fn a_port_in_use_stops_the_start_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let scratch = Scratch::new();
    let config = scratch.write(
        "holdfast.toml",
        &format!("[listen]\nhttp = [\"{addr}\"]\nadmin = \"{admin_addr}\"\n{VALID_POOL}"),
    );
    let out = std::process::Command::new(holdfast_tests::gateway::binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run holdfast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a taken port:\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "the error does not name the address:\n{stderr}"
    );
}

/// Runtime files only in private directories: `holdfast run` refuses an upgrade socket or a
/// state file in a directory other users can write to (another user could create the socket
/// first and receive the listening sockets, or plant a state that holds backends down), and
/// says why; it does not start.
#[test]
fn runtime_files_where_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let config = scratch.write(
        "holdfast.toml",
        &format!(
            "[listen]\nhttp = [\"{}\"]\nadmin = \"{}\"\n{VALID_POOL}",
            holdfast_tests::ports::free_loopback(),
            holdfast_tests::ports::free_loopback()
        ),
    );
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (flag, file) in [("--upgrade-sock", "u.sock"), ("--state-file", "state.json")] {
        let private = scratch.path().join(format!("private-{file}"));
        let (sock, state) = match flag {
            "--upgrade-sock" => (shared.join(file), private),
            _ => (private, shared.join(file)),
        };
        let out = std::process::Command::new(holdfast_tests::gateway::binary())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--upgrade-sock")
            .arg(&sock)
            .arg("--state-file")
            .arg(&state)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{flag} in a shared directory: started"
        );
        assert!(
            stderr.contains("writable by other users") && stderr.contains("shared"),
            "{flag}: {stderr}"
        );
    }
}
