//! The `fault-backend` process (`src/bin/fault-backend.rs`) as a test drives it: started on an
//! address, its faults switched by commands on its standard input, stopped or killed by its PID.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

/// The `fault-backend` binary, beside the test executable.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join("fault-backend"))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p holdfast-tests --bins`)",
        path.display()
    );
    path
}

/// A running backend process; killed on drop.
pub struct FaultBackend {
    pub name: String,
    pub addr: SocketAddr,
    tls: bool,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

impl FaultBackend {
    /// Starts a backend named `name` on `addr` (HTTPS with a self-signed certificate when `tls`),
    /// returning once it listens.
    pub async fn start(name: &str, addr: SocketAddr, tls: bool) -> FaultBackend {
        let mut command = Command::new(binary());
        command.arg(name).arg(addr.to_string());
        if tls {
            command.arg("--tls");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fault-backend");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut backend = FaultBackend {
            name: name.to_string(),
            addr,
            tls,
            child,
            stdin,
            lines,
        };
        let ready = backend.next_line().await;
        assert_eq!(ready, format!("ready {addr}"), "{name} did not start");
        backend
    }

    async fn next_line(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(10), self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{} exited", self.name),
            Err(_) => panic!("{} did not answer within 10 s", self.name),
        }
    }

    /// Sends one command (see the binary's documentation) and waits until it took effect.
    pub async fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to fault-backend");
        self.stdin.flush().unwrap();
        assert_eq!(self.next_line().await, "done", "{}: {line}", self.name);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process (SIGSTOP, SIGCONT ...).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal fault-backend");
    }

    /// Kills the process (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new process on the same address, after [`kill`](Self::kill).
    pub async fn restart(&mut self) {
        let next = FaultBackend::start(&self.name, self.addr, self.tls).await;
        let old = std::mem::replace(self, next);
        drop(old);
    }

    /// Resident memory of the process in bytes.
    pub fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }
}

impl Drop for FaultBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS` of /proc); panics when it is gone (a
/// gateway that died must not read as one using no memory).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the memory of process {pid}: {e}"));
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid} (exited?)"));
    kb * 1024
}
