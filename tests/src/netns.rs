//! Network namespaces for the fault-matrix tests (`ip netns add`), so that firewall rules and
//! every address a test uses stay inside a network that the test made and removes.
//!
//! A test enters the namespace on a thread of its own ([`Netns::run`]): every socket that
//! thread's runtime opens, and every process it starts (gateway, backends, `iptables`), lives in
//! the namespace. Only loopback is up there, so 127.0.0.2, 127.0.0.3 ... are distinct hosts.

use std::future::Future;
use std::process::Command;

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Why the fault matrix cannot run here, if it cannot: it needs root, `ip` and `iptables`.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Some("needs root (network namespaces and iptables); CI runs it as root".into());
        }
        for tool in ["ip", "iptables"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Some(format!(
                    "needs `{tool}` (apt-get install iproute2 iptables; tests/run.sh installs them as root)"
                ));
            }
        }
        None
    }

    /// A new namespace with its loopback interface up. Panics with the command's own words when
    /// the system refuses (this is only called as root).
    pub fn create(label: &str) -> Netns {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("holdfast-{}-{n}-{label}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace; panics when it fails.
    pub fn exec(&self, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args));
    }

    /// Adds an iptables rule (`-A INPUT ...` words after the chain) inside the namespace.
    pub fn firewall(&self, rule: &[&str]) {
        let mut args = vec!["iptables", "-A", "INPUT"];
        args.extend_from_slice(rule);
        self.exec(&args);
    }

    /// Removes every rule of the namespace's INPUT chain.
    pub fn firewall_clear(&self) {
        self.exec(&["iptables", "-F", "INPUT"]);
    }

    /// Runs `test` on a new thread inside the namespace, on a runtime of its own; returns its
    /// result (a panic is passed on).
    pub fn run<F, Fut>(&self, test: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("enter the network namespace {path}: {e}"));
            // Threads start in their creator's namespace: the runtime's workers are in it too.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(test())
        });
        match thread.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
