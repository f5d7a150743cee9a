//! Admin access (issue 23): writes (reload, upgrade, backend actions) go through the control
//! socket, which only the service's user can open, or over TCP with the bearer token; reads stay
//! open on loopback; an admin listener on a non-loopback address needs a token to start.

use holdfast_tests::gateway::{check, Scratch, ADMIN_TOKEN, ADMIN_TOKEN_LISTEN};
use holdfast_tests::{backend, Gateway};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

fn pool(addr: std::net::SocketAddr) -> String {
    format!("[[pools.app.tiers]]\nbackends = [{{ name = \"a\", address = \"{addr}\" }}]\n")
}

/// Without a token configured, a write over TCP is refused (403, naming the control socket);
/// reads are served; the commands work through the socket, which is 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_writes_go_only_through_the_control_socket() {
    let a = backend("a").await;
    let gw = Gateway::start(&pool(a.addr())).await;
    let client = holdfast_tests::client();
    let r = client.post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("control socket"), "{body}");
    let r = client
        .post(gw.admin_url("/backends/app/a/drain"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a token is no use when none is configured");
    assert_eq!(
        gw.metric(r#"holdfast_admin_denied_total{reason="no_token_configured"}"#)
            .await,
        2.0
    );
    assert_eq!(
        gw.metric("holdfast_config_reloads_total{result=\"success\"}")
            .await,
        0.0
    );
    assert!(gw.status().await.contains("\"pools\""), "reads stay open");

    let mode = std::fs::metadata(gw.control_sock())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the control socket is the user's alone"
    );
    let out = gw.reload();
    assert!(out.contains("reloaded"), "{out}");
    let out = gw.holdfast(&["backend", "drain", "app", "a", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With a token: none or a wrong one is 401 and changes nothing; the right one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_tcp_needs_the_token() {
    let a = backend("a").await;
    let gw = Gateway::start_with_listen(ADMIN_TOKEN_LISTEN, &pool(a.addr())).await;
    let client = holdfast_tests::client();
    let r = client.post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(gw.admin_url("/reload"))
        .bearer_auth("holdfast-test-token-0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        gw.metric(r#"holdfast_admin_denied_total{reason="wrong_token"}"#)
            .await,
        1.0
    );
    assert_eq!(
        gw.metric(r#"holdfast_admin_denied_total{reason="no_token"}"#)
            .await,
        1.0
    );
    assert!(gw.log().contains("admin write refused"));
    let r = gw.admin_post("/reload").await;
    assert_eq!(r.status(), 200);
    // `holdfast reload --admin` over TCP, the token from the environment.
    let out = std::process::Command::new(holdfast_tests::gateway::binary())
        .args(["reload", "--config"])
        .arg(gw.config_path())
        .arg("--admin")
        .arg(gw.admin.to_string())
        .env("HOLDFAST_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Another local user cannot use the control socket (as root: the command run as `nobody`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_use_the_control_socket() {
    if !nix::unistd::Uid::effective().is_root() {
        let why = "needs root to run a command as another user; CI runs it as root";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let a = backend("a").await;
    let gw = Gateway::start(&pool(a.addr())).await;
    let out = std::process::Command::new(holdfast_tests::gateway::binary())
        .args(["reload", "--config"])
        .arg(gw.config_path())
        .arg("--control-sock")
        .arg(gw.control_sock())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "refused: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    assert_eq!(
        gw.metric("holdfast_config_reloads_total{result=\"success\"}")
            .await,
        0.0
    );
}

/// An admin listener on a non-loopback address without a token: `check` says why, and `run`
/// does not start.
#[test]
fn a_public_admin_listener_needs_a_token() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "holdfast.toml",
        "[listen]\nhttp = [\"127.0.0.1:1\"]\nadmin = \"0.0.0.0:1\"\n[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:2\" }]\n",
    );
    let out = check(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("listen.admin: 0.0.0.0:1 is not a loopback address: set listen.admin_token"),
        "{stderr}"
    );
    let run = std::process::Command::new(holdfast_tests::gateway::binary())
        .args(["run", "--config"])
        .arg(&config)
        .arg("--upgrade-sock")
        .arg(scratch.path().join("u.sock"))
        .arg("--state-file")
        .arg(scratch.path().join("s.json"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(64), "refused to start");
}
