//! The install paths, end to end: the Debian package (`deploy/deb/`), the container image
//! (`deploy/container/`) and the Kubernetes manifests (`deploy/kubernetes/`). The package and the
//! image are built from the release binary, installed or run on this machine, and served through;
//! they need root (dpkg, podman), so they are `#[ignore]`d and `tests/run.sh` runs them as root,
//! one at a time. The manifests need no root: they are validated offline.
#![allow(clippy::unwrap_used)]

#[path = "install/container.rs"]
mod container;
#[path = "install/deb.rs"]
mod deb;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's top folder.
fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `program args` and returns what it printed; panics with its output when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(top())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Root, or the reason the test cannot run.
fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test installs and runs what it builds (dpkg, podman): run it as root (tests/run.sh does)"
    );
}
