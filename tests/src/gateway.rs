//! The real `holdfast` binary, run as a child process with a generated config.

use crate::ports::free_loopback;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `holdfast` binary: `HOLDFAST_BIN`, or `target/<profile>/holdfast` beside this test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOLDFAST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/holdfast
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("holdfast"))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p holdfast`), or set HOLDFAST_BIN",
        path.display()
    );
    path
}

/// A scratch folder removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("holdfast-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Private, whatever the umask: holdfast refuses runtime files in a directory others
        // can write to.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `holdfast check --config` on a file.
pub fn check(config: &Path) -> Output {
    Command::new(binary())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run holdfast check")
}

/// A running gateway; killed (by its PID, which this test started) on drop.
/// In the `listen` keys of [`Gateway::start_with_https_and_listen`]: the HTTP and HTTPS
/// listeners bind every address (`0.0.0.0`), as in production. Only inside a network namespace
/// the test made ([`crate::netns`]).
pub const PUBLIC: &str = "# public";

/// In the `listen` keys of [`Gateway::start_with_listen`], followed by a loopback address
/// (`# on 127.0.0.2`): the HTTP listener binds that address instead of 127.0.0.1, so that
/// several gateways stand on several addresses as several origin machines would.
pub const ON: &str = "# on ";

pub struct Gateway {
    child: Child,
    /// The process serving since `holdfast upgrade` (started by the old one, not by this
    /// test; stopped by its PID on drop).
    adopted: Option<u32>,
    /// The `[listen]` keys of the config, kept for [`rewrite`](Self::rewrite).
    listen_text: String,
    pub http: SocketAddr,
    /// The HTTPS listener, when started with one.
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    scratch: Scratch,
}

impl Gateway {
    /// Starts the gateway with `pools`, the `[pools...]`, `[routes]` and `[fallback]` part of a
    /// config; the `[listen]` table is added with free loopback ports. Returns once the admin
    /// listener and the HTTP listener answer.
    pub async fn start(pools: &str) -> Gateway {
        Self::launch("", pools, false, &[]).await
    }

    /// Like [`start`](Self::start), with more environment variables (`NOTIFY_SOCKET`...).
    pub async fn start_with_env(pools: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch("", pools, false, env).await
    }

    /// Like [`start`](Self::start), with more keys of the `[listen]` table (`listen`, one
    /// `key = value` per line, or sub-tables; `{http}` stands for the HTTP listener's address).
    pub async fn start_with_listen(listen: &str, pools: &str) -> Gateway {
        Self::launch(listen, pools, false, &[]).await
    }

    /// Like [`start_with_https`](Self::start_with_https), with more keys of the `[listen]`
    /// table (`{https}` stands for the HTTPS listener's address).
    pub async fn start_with_https_and_listen(listen: &str, pools: &str) -> Gateway {
        Self::launch(listen, pools, true, &[]).await
    }

    /// Like [`start_with_https`](Self::start_with_https), with more environment variables.
    pub async fn start_with_https_and_env(pools: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch("", pools, true, env).await
    }

    /// Like [`start`](Self::start), with an HTTPS listener too (a self-signed certificate for
    /// `localhost`), at [`Gateway::https`].
    pub async fn start_with_https(pools: &str) -> Gateway {
        Self::launch("", pools, true, &[]).await
    }

    /// Like [`start_with_https`](Self::start_with_https), returning as soon as the process is
    /// started (call [`ready`](Self::ready) to wait for its listeners).
    pub async fn starting_with_https(pools: &str) -> Gateway {
        Self::spawn_gateway("", pools, true, &[])
    }

    /// Waits until the admin and visitor listeners answer; panics if the process exits first.
    pub async fn ready(&mut self) {
        self.wait_ready().await;
    }

    async fn launch(listen: &str, pools: &str, with_https: bool, env: &[(&str, &str)]) -> Gateway {
        let mut gateway = Self::spawn_gateway(listen, pools, with_https, env);
        gateway.wait_ready().await;
        gateway
    }

    fn spawn_gateway(listen: &str, pools: &str, with_https: bool, env: &[(&str, &str)]) -> Gateway {
        let mut http = free_loopback();
        if let Some(ip) = listen
            .lines()
            .find_map(|l| l.strip_prefix(ON))
            .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        {
            http.set_ip(ip);
        }
        let admin = free_loopback();
        let scratch = Scratch::new();
        let https = with_https.then(|| {
            let (cert, key) = crate::tls::self_signed_pem("localhost");
            std::fs::write(scratch.path().join("cert.pem"), cert).unwrap();
            std::fs::write(scratch.path().join("key.pem"), key).unwrap();
            free_loopback()
        });
        // Bound on every address with `PUBLIC` in `listen` (inside a network namespace only);
        // reached on loopback all the same.
        let public = listen.contains(PUBLIC);
        let bind = |addr: SocketAddr| match public {
            true => SocketAddr::from(([0, 0, 0, 0], addr.port())),
            false => addr,
        };
        let https_keys = match https {
            Some(addr) => {
                let addr = bind(addr);
                format!("https = [\"{addr}\"]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n")
            }
            None => String::new(),
        };
        let mut listen = listen.replace("{http}", &http.to_string());
        if let Some(addr) = https {
            listen = listen.replace("{https}", &addr.to_string());
        }
        let listen_text = format!(
            "[listen]\nhttp = [\"{}\"]\n{https_keys}admin = \"{admin}\"\n{listen}\n",
            bind(http)
        );
        let text = format!("{listen_text}\n{pools}");
        let config = scratch.write("holdfast.toml", &text);
        let log = std::fs::File::create(scratch.path().join("holdfast.log")).unwrap();
        let child = spawn(scratch.path(), &config, log, false, env);
        Gateway {
            child,
            adopted: None,
            listen_text,
            http,
            https,
            admin,
            scratch,
        }
    }

    /// A graceful binary upgrade, as an operator does it: a second process started with
    /// `--upgrade`, then SIGQUIT to the first, which hands over its listening sockets and exits
    /// once its requests are done. Returns when the first process has exited.
    pub async fn upgrade(&mut self) {
        let next = self.hand_over().await;
        let mut old = std::mem::replace(&mut self.child, next);
        let deadline = Instant::now() + Duration::from_secs(30);
        while old.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the old process did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the new process exited with {status}:\n{}", self.log());
        }
    }

    /// Starts the next process with `--upgrade` and, once it waits for the sockets, tells this
    /// one to hand them over (SIGQUIT); the next process.
    async fn hand_over(&mut self) -> Child {
        let config = self.scratch.path().join("holdfast.toml");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.scratch.path().join("holdfast.log"))
            .unwrap();
        let next = spawn(self.scratch.path(), &config, log, true, &[]);
        // The new process listens on the hand-over socket once it has probed the backends.
        let sock = self.scratch.path().join("upgrade.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "the new process never waited for the sockets"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        next
    }

    /// An upgrade whose new process cannot start its listeners: how it ended (within 15 s),
    /// and the log.
    pub async fn failed_upgrade(&mut self) -> (std::process::ExitStatus, String) {
        let mut next = self.hand_over().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = next.try_wait().unwrap() {
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = next.kill();
                panic!("the new process did not stop:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the gateway again on the same config and folder, after it exited (a restart).
    pub async fn restart(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "restart: still running"
        );
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.scratch.path().join("holdfast.log"))
            .unwrap();
        self.child = spawn(self.scratch.path(), &self.config_path(), log, false, &[]);
        self.adopted = None;
        self.wait_ready().await;
    }

    /// The process serving now.
    pub fn pid(&self) -> u32 {
        self.adopted.unwrap_or_else(|| self.child.id())
    }

    /// The gateway's scratch folder (config, log, state file).
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.scratch.path().join("holdfast.toml")
    }

    /// Writes a new config in place of the running one's file (same `[listen]` table unless
    /// `listen` is given), as an operator's editor would: a new file renamed over the old.
    pub fn rewrite(&self, listen: Option<&str>, pools: &str) {
        let listen = listen.unwrap_or(&self.listen_text);
        let tmp = self.scratch.path().join("holdfast.toml.new");
        std::fs::write(&tmp, format!("{listen}\n{pools}")).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// Runs `holdfast <command> --config <its config>` (`reload`, `upgrade`).
    pub fn command(&self, command: &str) -> Output {
        self.holdfast(&[command])
    }

    /// Runs `holdfast <args...> --config <its config>` (`backend drain app a`), through its
    /// control socket.
    pub fn holdfast(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .arg("--control-sock")
            .arg(self.control_sock())
            .output()
            .expect("run holdfast")
    }

    /// Its control socket.
    pub fn control_sock(&self) -> PathBuf {
        self.scratch.path().join("control.sock")
    }

    /// `POST path` on the admin listener over TCP with the token of [`ADMIN_TOKEN_LISTEN`]
    /// (start the gateway with it).
    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        crate::client()
            .post(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// `holdfast reload`, which must take; returns what it printed.
    pub fn reload(&self) -> String {
        let out = self.command("reload");
        assert!(
            out.status.success(),
            "holdfast reload failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends `signal` (`HUP`, `TERM`...) to the process serving now.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `holdfast upgrade`, as an operator runs it: the serving process starts the new one
    /// and hands over. Returns once the new process serves and the old one has exited.
    pub async fn upgrade_command(&mut self) -> Output {
        let old = self.pid();
        let output = self.command("upgrade");
        assert!(
            output.status.success(),
            "holdfast upgrade failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        // "upgraded: process OLD handed over to NEW, which serves now" (the admin listener
        // is shared while the old process drains: /status may still come from either).
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let new: u32 = stdout
            .split("handed over to ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("no new process id in {stdout:?}"));
        assert_ne!(new, old);
        // The old process: this test's child, or one adopted earlier.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let gone = match self.adopted {
                None => self.child.try_wait().unwrap().is_some(),
                Some(pid) => !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid),
            };
            if gone {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the old process did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.adopted = Some(new);
        output
    }

    /// Waits up to `limit` for the process to exit; whether it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = crate::client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("holdfast exited with {status}:\n{}", self.log());
            }
            let admin = client.get(self.admin_url("/healthz")).send().await.is_ok();
            let https = match self.https {
                Some(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                None => true,
            };
            if admin && https && tokio::net::TcpStream::connect(self.http).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "holdfast did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("holdfast.log")).unwrap_or_default()
    }

    /// The body of an admin endpoint.
    pub async fn admin(&self, path: &str) -> String {
        let response = crate::client()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.admin("/metrics").await
    }

    /// The value of one sample, e.g. `holdfast_active_tier{pool="app"}` (see [`sample_value`]).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        sample_value(&text, sample)
    }

    /// The sum of every sample whose text starts with `prefix`, e.g. all reasons of
    /// `holdfast_upstream_retries_total{pool="app"`; panics when there is none.
    pub async fn metric_sum(&self, prefix: &str) -> f64 {
        sum_of(&self.metrics().await, prefix)
    }

    pub async fn status(&self) -> String {
        self.admin("/status").await
    }
}

/// A `[listen]` line that gives the admin listener a token (for [`Gateway::admin_post`]).
pub const ADMIN_TOKEN_LISTEN: &str = "admin_token = \"holdfast-test-token-0123456789\"";

/// The token of [`ADMIN_TOKEN_LISTEN`].
pub const ADMIN_TOKEN: &str = "holdfast-test-token-0123456789";

/// The pseudo environment variable of [`Gateway::start_with_env`] that starts the gateway with
/// this open-file limit (a number).
pub const NOFILE: &str = "NOFILE";

/// The pseudo environment variable of [`Gateway::start_with_env`] that starts the gateway as
/// root without any capability (util-linux's setpriv empties the bounding set): it reads only
/// the files its user and groups may read, as a service user would.
pub const NO_CAPABILITIES: &str = "NO_CAPABILITIES";

/// The pseudo environment variable of [`Gateway::start_with_env`] that starts the gateway with
/// this many worker threads (`--threads`, 2 otherwise): with one, every visitor connection is
/// served by the same worker (its spare backend connections, for one).
pub const THREADS: &str = "THREADS";

/// Starts `holdfast run` on `config`, its output appended to `log`.
fn spawn(
    scratch: &Path,
    config: &Path,
    log: std::fs::File,
    upgrade: bool,
    env: &[(&str, &str)],
) -> Child {
    // `WATCHDOG_PID=self`: the process's own id, as systemd sets it for its main process (a
    // shell that sets it to its own id, then becomes holdfast). `NOFILE=n`: started with an
    // open-file limit of n, soft and hard (as `LimitNOFILE=n` would), by util-linux's prlimit.
    let nofile = env.iter().find(|(k, _)| *k == NOFILE).map(|(_, n)| *n);
    let no_caps = env.iter().any(|(k, _)| *k == NO_CAPABILITIES);
    let threads = env
        .iter()
        .find(|(k, _)| *k == THREADS)
        .map_or("2", |(_, n)| *n);
    let mut command = match (env.contains(&("WATCHDOG_PID", "self")), nofile) {
        _ if no_caps => {
            let mut setpriv = Command::new("setpriv");
            setpriv.arg("--bounding-set=-all").arg(binary());
            setpriv
        }
        (true, _) => {
            let mut sh = Command::new("sh");
            sh.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
                .arg(binary());
            sh
        }
        (false, Some(n)) => {
            let mut prlimit = Command::new("prlimit");
            prlimit.arg(format!("--nofile={n}:{n}")).arg(binary());
            prlimit
        }
        (false, None) => Command::new(binary()),
    };
    let env: Vec<_> = env
        .iter()
        .filter(|(k, _)| !["WATCHDOG_PID", NOFILE, NO_CAPABILITIES, THREADS].contains(k))
        .copied()
        .collect();
    command
        .args(["run", "--threads", threads, "--config"])
        .arg(config)
        .arg("--upgrade-sock")
        .arg(scratch.join("upgrade.sock"))
        .arg("--state-file")
        .arg(scratch.join("state.json"))
        .arg("--control-sock")
        .arg(scratch.join("control.sock"));
    if upgrade {
        command.arg("--upgrade");
    }
    command.envs(env.iter().copied());
    command
        .env("HOLDFAST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start holdfast")
}

/// The sum of the samples starting with `prefix` in a Prometheus text page; panics when there
/// is none.
pub fn sum_of(text: &str, prefix: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    assert!(!values.is_empty(), "no sample starts with {prefix}");
    values.iter().sum()
}

/// The value of `sample` (name and labels exactly as exposed) in a Prometheus text page. A
/// combination of labels not counted yet reads 0; a metric of which the page has no sample at
/// all panics, naming what there is (a renamed metric must not pass an `== 0.0` assertion).
pub fn sample_value(text: &str, sample: &str) -> f64 {
    let found = text.lines().find_map(|line| {
        let value = line.strip_prefix(sample)?;
        value.starts_with(' ').then(|| value.trim().parse().ok())?
    });
    if let Some(value) = found {
        return value;
    }
    let name = sample.split('{').next().unwrap_or(sample);
    let named = |line: &&str| {
        line.strip_prefix(name)
            .is_some_and(|r| r.starts_with(['{', ' ']))
    };
    assert!(
        text.lines().any(|line| named(&line)),
        "no metric {name} in the page (asked for {sample})"
    );
    0.0
}

/// Whether process `pid` has exited and waits to be reaped.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(pid) = self.adopted {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- holdfast log ---\n{}", self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE holdfast_x counter\nholdfast_x{pool=\"app\"} 3\nholdfast_xy 7\n";

    #[test]
    fn samples_are_read_exactly() {
        assert_eq!(sample_value(PAGE, r#"holdfast_x{pool="app"}"#), 3.0);
        assert_eq!(sample_value(PAGE, "holdfast_xy"), 7.0);
        assert_eq!(sample_value(PAGE, r#"holdfast_x{pool="other"}"#), 0.0);
        assert_eq!(sum_of(PAGE, "holdfast_x"), 10.0);
    }

    #[test]
    #[should_panic(expected = "no metric holdfast_renamed")]
    fn a_metric_that_is_not_there_fails() {
        sample_value(PAGE, r#"holdfast_renamed{pool="app"}"#);
    }

    #[test]
    #[should_panic(expected = "no sample starts with")]
    fn a_sum_of_nothing_fails() {
        sum_of(PAGE, "holdfast_renamed");
    }
}
