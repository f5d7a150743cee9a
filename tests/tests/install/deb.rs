//! The Debian package: built by `deploy/deb/build.sh`, installed with dpkg on this machine,
//! checked (files, conffiles, user, unit, config, lintian), upgraded under load while holdfast
//! serves (the postinst hands over with `holdfast upgrade`: no request fails), then purged.

use super::{need_root, output, run, top};
use holdfast_tests::{wait_for_status, wait_until, Load};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const CONFIG: &str = "/etc/holdfast/holdfast.toml";

/// Lintian tags left on the package, each with why it stays.
const LINTIAN_KEPT: &[(&str, &str)] = &[
    // Built outside a Debian archive: no bug in Debian's tracker is closed by it.
    ("initial-upload-closes-no-bugs", "not uploaded to Debian"),
];

/// The package `deploy/deb/build.sh` builds, and the same build as the next version, both
/// copied to target/deb-test (cargo-deb clears target/debian of older packages).
fn build() -> (PathBuf, PathBuf) {
    let out = run("deploy/deb/build.sh", &[]);
    let built = out
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("no package named in: {out}"));
    let dir = top().join("target/deb-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join(built.file_name().unwrap());
    std::fs::copy(&built, &first).unwrap();
    // The next version: the same build under a higher version, so that dpkg upgrades to it.
    let version = run("dpkg-deb", &["--field", first.to_str().unwrap(), "Version"]);
    let next_version = format!("{}+next", version.trim());
    let next = dir.join(format!("holdfast_{next_version}_next.deb"));
    run(
        "deploy/deb/build.sh",
        &[
            "--no-build",
            "--deb-version",
            &next_version,
            "--output",
            next.to_str().unwrap(),
        ],
    );
    assert!(first.exists() && next.exists(), "{first:?} {next:?}");
    (first, next)
}

fn installed() -> bool {
    output(
        "dpkg-query",
        &["--show", "--showformat=${Status}", "holdfast"],
    )
    .stdout
    .starts_with(b"install ok installed")
}

/// Removes what an earlier run of this test may have left (a failed run stops half way).
fn purge() {
    // Known to dpkg in any state (installed, or its conffiles left after a remove).
    if output("dpkg-query", &["--show", "holdfast"])
        .status
        .success()
    {
        run("dpkg", &["--purge", "holdfast"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: installs the package with dpkg (tests/run.sh runs it as root)"]
async fn the_debian_package_installs_upgrades_without_a_failed_request_and_purges() {
    need_root();
    if !holdfast_tests::have("lintian", "lintian") {
        return;
    }
    let (first, next) = build();
    purge();

    // Install.
    run("dpkg", &["--install", first.to_str().unwrap()]);
    assert!(installed());
    for file in [
        "/usr/bin/holdfast",
        CONFIG,
        "/etc/logrotate.d/holdfast",
        "/usr/share/doc/holdfast/examples/holdfast.toml",
        "/usr/share/doc/holdfast/copyright",
        "/usr/share/doc/holdfast/changelog.Debian.gz",
        "/usr/share/man/man1/holdfast.1.gz",
        "/usr/share/man/man1/holdfast-status.1.gz",
    ] {
        assert!(Path::new(file).exists(), "{file} is installed");
    }
    let unit = unit_path();
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/holdfast run --config /etc/holdfast/holdfast.toml"));
    let conffiles = run(
        "dpkg-query",
        &["--show", "--showformat=${Conffiles}", "holdfast"],
    );
    for file in [CONFIG, "/etc/logrotate.d/holdfast"] {
        assert!(
            conffiles.contains(file),
            "{file} is a conffile: {conffiles}"
        );
    }
    let user = run("getent", &["passwd", "holdfast"]);
    assert!(
        user.contains(":/var/lib/holdfast:/usr/sbin/nologin"),
        "{user}"
    );
    let state = std::fs::metadata("/var/lib/holdfast").unwrap();
    let holdfast_uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(
        state.uid(),
        holdfast_uid,
        "/var/lib/holdfast is the service user's"
    );
    // What the unit names exists and the unit is sound; the config as shipped is valid.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        run("systemd-analyze", &["verify", unit.to_str().unwrap()]);
    }
    let check = run("/usr/bin/holdfast", &["check", "--config", CONFIG]);
    assert!(check.contains(": ok:"), "{check}");
    let man = run("man", &["-l", "/usr/share/man/man1/holdfast-status.1.gz"]);
    assert!(man.contains("--all"), "the man page documents --all: {man}");

    lintian(&first);

    // An operator's config: holdfast in front of a backend, on loopback ports of this test.
    let backend = holdfast_tests::backend("web").await;
    let listen = holdfast_tests::ports::free_loopback();
    let admin = holdfast_tests::ports::free_loopback();
    let edited = std::fs::read_to_string(CONFIG)
        .unwrap()
        .replace("http = [\"0.0.0.0:80\"]", &format!("http = [\"{listen}\"]"))
        .replace("127.0.0.1:9180", &admin.to_string())
        .replace("127.0.0.1:8080", &backend.addr().to_string())
        .replace("refresh_url = ", "# refresh_url = ")
        .replace("refresh_file = ", "# refresh_file = ");
    std::fs::write(CONFIG, edited).unwrap();
    run("/usr/bin/holdfast", &["check", "--config", CONFIG]);

    // Served as the unit serves it: the holdfast user, /run/holdfast as its runtime directory
    // (systemd's RuntimeDirectory=, which it removes at the stop; here the test does).
    // It is given to the holdfast user for the test, and given back (or removed) after.
    let run_dir = Path::new("/run/holdfast");
    let before = std::fs::metadata(run_dir).ok().map(|m| (m.uid(), m.gid()));
    let mut serving = start_as_the_unit_does(holdfast_uid);
    let url = format!("http://{listen}/");
    wait_for_status(
        &url,
        200,
        Duration::from_secs(15),
        "the installed holdfast serves",
    )
    .await;
    let status = run("/usr/bin/holdfast", &["status", "--config", CONFIG]);
    let old_pid = serving.id();
    assert!(status.contains(&format!("pid {old_pid}")), "{status}");

    // The package upgrade under keep-alive load: the postinst hands over to the new binary.
    let load = Load::start(url.clone(), 8, Duration::from_secs(60));
    load.more(300).await;
    let upgrade = output("dpkg", &["--install", next.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&upgrade.stdout),
        String::from_utf8_lossy(&upgrade.stderr)
    );
    assert!(upgrade.status.success(), "{said}");
    assert!(
        said.contains(&format!("upgraded: process {old_pid} handed over to")),
        "the postinst ran holdfast upgrade: {said}"
    );
    load.more(300).await;
    let report = load.finish().await;
    report.assert_none_failed();
    let new_pid = pid_serving();
    assert_ne!(new_pid, old_pid);
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(exe, Path::new("/usr/bin/holdfast"), "the new binary serves");
    assert!(
        serving.wait().is_ok(),
        "the old process ended after handing over"
    );
    println!(
        "deb upgrade | {} requests under load, 0 failed, process {old_pid} -> {new_pid}",
        report.sent()
    );
    // Stop what this test started (the successor of the process it spawned).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(new_pid).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the test's holdfast stops",
        || async { !Path::new(&format!("/proc/{new_pid}")).exists() },
    )
    .await;

    // The test's instance's files (the holdfast user's) go; anything else stays.
    for entry in std::fs::read_dir(run_dir).unwrap().flatten() {
        if entry.metadata().is_ok_and(|m| m.uid() == holdfast_uid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    match before {
        None => std::fs::remove_dir_all(run_dir).unwrap(),
        Some((uid, gid)) => nix::unistd::chown(
            run_dir,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap(),
    }

    // Purge: what Debian policy keeps (the user) stays; the rest goes.
    run("dpkg", &["--purge", "holdfast"]);
    for gone in [
        "/usr/bin/holdfast",
        "/etc/holdfast",
        "/var/lib/holdfast",
        "/usr/share/doc/holdfast",
        unit.to_str().unwrap(),
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is gone after purge");
    }
    assert!(!output("dpkg-query", &["--show", "holdfast"])
        .status
        .success());
}

/// Where the package put the unit.
fn unit_path() -> PathBuf {
    let files = run("dpkg-query", &["--listfiles", "holdfast"]);
    files
        .lines()
        .find(|l| l.ends_with("/holdfast.service"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no unit in the package: {files}"))
}

/// `/usr/bin/holdfast run` as the unit runs it, without systemd: as the holdfast user, with
/// /run/holdfast (0700, its own) as RUNTIME_DIRECTORY.
fn start_as_the_unit_does(uid: u32) -> Child {
    let run_dir = Path::new("/run/holdfast");
    std::fs::create_dir_all(run_dir).unwrap();
    std::fs::set_permissions(run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    nix::unistd::chown(
        run_dir,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid_gid(uid))),
    )
    .unwrap();
    Command::new("setpriv")
        .args([
            "--reuid=holdfast",
            "--regid=holdfast",
            "--init-groups",
            "/usr/bin/holdfast",
            "run",
            "--config",
            CONFIG,
        ])
        .env("RUNTIME_DIRECTORY", run_dir)
        .spawn()
        .expect("start /usr/bin/holdfast")
}

fn uid_gid(uid: u32) -> u32 {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .unwrap()
        .map(|u| u.gid.as_raw())
        .unwrap()
}

/// The pid the installed holdfast reports.
fn pid_serving() -> u32 {
    let status = run("/usr/bin/holdfast", &["status", "--config", CONFIG]);
    status
        .split("pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in: {status}"))
}

/// Lintian on the package: no error, and each warning one of [`LINTIAN_KEPT`].
fn lintian(deb: &Path) {
    let out = output(
        "lintian",
        &[
            "--no-tag-display-limit",
            "--display-level",
            ">=warning",
            deb.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("lintian:\n{text}");
    let unexplained: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .filter(|l| {
            !LINTIAN_KEPT
                .iter()
                .any(|(tag, _)| l.contains(&format!(" {tag}")))
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "lintian tags not explained in LINTIAN_KEPT: {unexplained:#?}"
    );
}
