//! nginx and HAProxy in front of the same two backends as holdfast, for the fault matrix's
//! comparison rows (`tests/faults/run.sh --compare`). Each gets the configuration its users
//! would write for a primary with a backup, at its best for failover: passive failure
//! detection and next-upstream retries for nginx (open-source nginx has no active checks);
//! active HTTP checks every second, `redispatch` and `retry-on all-retryable-errors` for
//! HAProxy. Same connect timeout (1 s) and check timing as holdfast's matrix.

use crate::gateway::Scratch;
use crate::ports::free_loopback;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Other {
    Nginx,
    Haproxy,
}

impl Other {
    pub fn name(self) -> &'static str {
        match self {
            Other::Nginx => "nginx",
            Other::Haproxy => "HAProxy",
        }
    }

    /// The binary, if installed.
    pub fn binary(self) -> Option<&'static str> {
        let path = match self {
            Other::Nginx => "/usr/sbin/nginx",
            Other::Haproxy => "/usr/sbin/haproxy",
        };
        std::path::Path::new(path).exists().then_some(path)
    }
}

/// A running nginx or HAProxy; stopped on drop.
pub struct OtherProxy {
    child: Child,
    pub http: SocketAddr,
    _scratch: Scratch,
}

impl OtherProxy {
    /// Starts `which` in front of `primary` (over TLS without verification when `tls`) with
    /// `backup` as its backup; returns once it accepts connections.
    pub async fn start(which: Other, primary: SocketAddr, backup: SocketAddr, tls: bool) -> Self {
        let http = free_loopback();
        let scratch = Scratch::new();
        let dir = scratch.path().to_path_buf();
        let binary = which.binary().expect("installed");
        let mut command = match which {
            Other::Nginx => {
                let scheme = if tls { "https" } else { "http" };
                let conf = format!(
                    r#"daemon off;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  upstream app {{
    server {primary} max_fails=1 fail_timeout=2s;
    server {backup} backup;
    keepalive 64;
  }}
  server {{
    listen {http};
    location / {{
      proxy_pass {scheme}://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_verify off;
      proxy_connect_timeout 1s;
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout invalid_header http_502 http_503 http_504;
      proxy_next_upstream_tries 4;
    }}
  }}
}}
"#,
                    dir = dir.display()
                );
                std::fs::write(dir.join("nginx.conf"), conf).unwrap();
                let mut c = Command::new(binary);
                c.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf"));
                c
            }
            Other::Haproxy => {
                let ssl = if tls { " ssl verify none" } else { "" };
                // maxconn: HAProxy asks for twice as many descriptors, within this sandbox's
                // hard limit of 20,000.
                let conf = format!(
                    r#"global
  maxconn 9000
  nbthread 2
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  retries 3
  option redispatch 1
  retry-on all-retryable-errors
frontend fe
  bind {http}
  default_backend app
backend app
  option httpchk GET /healthz
  default-server inter 1s fall 1 rise 2
  server primary {primary} check{ssl}
  server backup {backup} check backup
"#
                );
                std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
                let mut c = Command::new(binary);
                c.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
                c
            }
        };
        let log = std::fs::File::create(dir.join("out.log")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the other proxy");
        let proxy = OtherProxy {
            child,
            http,
            _scratch: scratch,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(http).await.is_err() {
            assert!(Instant::now() < deadline, "{} did not start", which.name());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        proxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OtherProxy {
    fn drop(&mut self) {
        // nginx's master stops its workers on SIGTERM; SIGKILL would orphan them.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
