//! The container image: built by `deploy/container/build.sh` (FROM scratch, no registry), run
//! with podman on this machine's loopback, served through, its mounted config edited (reloaded,
//! no request failed), its HEALTHCHECK asked, and stopped with `podman stop`: /healthz 503
//! first, the request in flight finishes, exit 0.
//!
//! Two flags are this machine's, not the image's: `--runtime runc` (crun refuses this kernel's
//! hybrid cgroup layout, with a controller on the v2 hierarchy) and `--ulimit` at or under the
//! current limits (podman's defaults raise them, which needs CAP_SYS_RESOURCE this sandbox lacks).

use super::{need_root, output, run};
use holdfast_tests::gateway::Scratch;
use holdfast_tests::{scripted_backend, wait_for_status, wait_until, Load};
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/holdfast:install-test";

/// Removes the container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output("podman", &["rm", "--force", "--time", "0", &self.0]);
    }
}

fn config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    backend: std::net::SocketAddr,
) -> String {
    format!(
        "[listen]\nhttp = [\"{listen}\"]\nadmin = \"{admin}\"\nshutdown_delay = \"2s\"\n\
         grace_period = \"20s\"\n\n[[pools.app.tiers]]\nbackends = [{{ address = \"{backend}\" }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds and runs the image with podman (tests/run.sh runs it as root)"]
async fn the_container_image_serves_reloads_its_mounted_config_and_stops_gracefully() {
    need_root();
    if !holdfast_tests::have("podman", "podman") || !holdfast_tests::have("runc", "runc") {
        return;
    }
    run("deploy/container/build.sh", &[IMAGE]);

    // What the image is: a non-root user, the healthcheck, the labels, no shell.
    let inspect = run(
        "podman",
        &["image", "inspect", "--format", "{{json .Config}}", IMAGE],
    );
    let image: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(image["User"], "65532:65532", "{inspect}");
    let healthcheck = run(
        "podman",
        &[
            "image",
            "inspect",
            "--format",
            "{{json .HealthCheck}}",
            IMAGE,
        ],
    );
    assert!(
        healthcheck.contains("\"status\",\"--quiet\""),
        "{healthcheck}"
    );
    assert_eq!(
        image["Labels"]["org.opencontainers.image.title"],
        "holdfast"
    );
    assert!(image["Labels"]["org.opencontainers.image.version"].is_string());
    let name = format!("holdfast-install-test-{}", std::process::id());
    let created = run(
        "podman",
        &["create", "--name", &format!("{name}-files"), IMAGE],
    );
    let files = {
        let _created = Container(created.trim().to_string());
        let export = std::process::Command::new("sh")
            .args(["-c", &format!("podman export {} | tar -t", created.trim())])
            .output()
            .unwrap();
        String::from_utf8_lossy(&export.stdout).into_owned()
    };
    assert!(
        files
            .lines()
            .any(|f| f.trim_end_matches('/') == "usr/bin/holdfast"),
        "{files}"
    );
    assert!(
        files.contains("etc/ssl/certs/ca-certificates.crt"),
        "{files}"
    );
    assert!(
        !files.lines().any(|f| f == "bin/sh" || f == "usr/bin/sh"),
        "no shell: {files}"
    );
    println!("image files: {}", files.lines().count());

    // Its config: a directory mounted over /etc/holdfast, as a ConfigMap would be.
    let slow = scripted_backend("slow", |head| {
        let slow = head.starts_with(b"GET /slow");
        Some(Duration::from_millis(if slow { 3000 } else { 0 }))
    })
    .await;
    let other = holdfast_tests::backend("other").await;
    let listen = holdfast_tests::ports::free_loopback();
    let admin = holdfast_tests::ports::free_loopback();
    let dir = Scratch::new();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let file = dir.write("holdfast.toml", &config(listen, admin, slow));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();

    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .unwrap()
        .1
        .min(65_536);
    let id = run(
        "podman",
        &[
            "run",
            "--detach",
            "--name",
            &name,
            "--runtime",
            "runc",
            "--ulimit",
            &format!("nofile={nofile}:{nofile}"),
            "--ulimit",
            "nproc=4096:4096",
            "--network",
            "host",
            "--volume",
            &format!("{}:/etc/holdfast:ro", dir.path().display()),
            IMAGE,
        ],
    );
    let _container = Container(id.trim().to_string());
    let url = format!("http://{listen}/");
    wait_for_status(
        &url,
        200,
        Duration::from_secs(20),
        "holdfast serves from the container",
    )
    .await;
    // The user column alone (the command line names holdfast whoever runs it).
    let top = run("podman", &["top", &name, "user"]);
    let user = top.lines().nth(1).map(str::trim);
    assert!(
        matches!(user, Some("65532" | "holdfast")),
        "not root: {top}"
    );
    let health = output("podman", &["healthcheck", "run", &name]);
    assert!(health.status.success(), "HEALTHCHECK passes: {health:?}");

    // An edit of the mounted file is reloaded, under load, with no failed request.
    let load = Load::start(url.clone(), 4, Duration::from_secs(60));
    load.more(200).await;
    std::fs::write(&file, config(listen, admin, other.addr())).unwrap();
    let reloaded = wait_until(Duration::from_secs(15), "the edit is served", || async {
        load.last_from(50, "other")
    })
    .await;
    let report = load.finish().await;
    report.assert_none_failed();
    println!(
        "container reload | picked up {reloaded:?} after the edit, {} requests, 0 failed",
        report.sent()
    );

    // podman stop: /healthz 503 while the request in flight goes on, then it finishes, exit 0.
    std::fs::write(&file, config(listen, admin, slow)).unwrap();
    wait_until(
        Duration::from_secs(15),
        "the slow backend is back",
        || async {
            let r = reqwest::get(&url).await;
            matches!(r, Ok(r) if r.headers().get("x-backend").is_some_and(|v| v == "slow"))
        },
    )
    .await;
    let in_flight = tokio::spawn({
        let url = format!("http://{listen}/slow");
        async move { reqwest::get(&url).await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let stop = tokio::task::spawn_blocking({
        let name = name.clone();
        move || output("podman", &["stop", "--time", "60", &name])
    });
    let healthz = format!("http://{admin}/healthz");
    wait_for_status(
        &healthz,
        503,
        Duration::from_secs(5),
        "/healthz says 503 once stopping",
    )
    .await;
    assert_eq!(
        in_flight.await.unwrap().ok(),
        Some(200),
        "the request in flight finished"
    );
    let stopped = stop.await.unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    let took = started.elapsed();
    let exit = run(
        "podman",
        &["inspect", "--format", "{{.State.ExitCode}}", &name],
    );
    assert_eq!(exit.trim(), "0", "a graceful stop exits 0");
    println!("container stop | podman stop took {took:?} (shutdown_delay 2s), exit 0");
    let _ = output("podman", &["rmi", "--force", IMAGE]);
}
