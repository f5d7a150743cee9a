//! The commands that act on a running holdfast: `holdfast reload`, `holdfast upgrade` and
//! `holdfast backend`. They ask its control socket (the admin endpoints on a Unix socket only
//! its user can open: no token needed) when it is there, else its admin listener over TCP,
//! where a write needs the token (`HOLDFAST_ADMIN_TOKEN`). A minimal HTTP/1.1 client over one
//! connection.

use crate::fleet::{Fleet, View};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a running holdfast is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// Its control socket.
    Socket(PathBuf),
    /// Its admin listener.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Admin::Socket(path) => write!(f, "{}", path.display()),
            Admin::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Where to ask the holdfast serving `config`: the admin listener at `tcp` when given; else
/// the control socket (`socket`, or the default one for `config`) when it is there; else the
/// admin listener the config names.
pub fn target(config: &Path, tcp: Option<SocketAddr>, socket: Option<PathBuf>) -> Admin {
    if let Some(addr) = tcp {
        return Admin::Tcp(addr);
    }
    let default = || crate::rundir::files_for(&crate::rundir::default_dir(), config).control_sock;
    match socket {
        Some(path) => Admin::Socket(path),
        None => {
            let path = default();
            match path.exists() {
                true => Admin::Socket(path),
                false => Admin::Tcp(admin_address(config, None)),
            }
        }
    }
}

/// How long one admin request may take (a reload probes new backends first).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The config file's `listen.admin`, read leniently: the file may be the broken one being
/// reloaded, so only its TOML has to be readable.
fn named_admin(config: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(config).ok()?;
    let table = text.parse::<toml::Table>().ok()?;
    table.get("listen")?.get("admin")?.as_str()?.parse().ok()
}

/// Whether the config file asks for a JSON log (`[log] format = "json"`), read leniently before
/// the log starts: a file that does not parse is reported by the load that follows.
pub fn json_log(config: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(config) else {
        return false;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    table
        .get("log")
        .and_then(|l| l.get("format"))
        .and_then(|f| f.as_str())
        == Some("json")
}

/// Where the running process's admin listener is: `given`, else the config file's
/// `listen.admin`, else the default.
pub fn admin_address(config: &Path, given: Option<SocketAddr>) -> SocketAddr {
    given.or_else(|| named_admin(config)).unwrap_or_else(|| {
        holdfast_config::defaults::ADMIN_ADDR
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9180)))
    })
}

/// One request to a running holdfast: the status code and the body as JSON (`Null` if it is
/// not JSON). Over TCP, `HOLDFAST_ADMIN_TOKEN` (if set) goes as the bearer token.
pub fn request(admin: &Admin, method: &str, path: &str) -> std::io::Result<(u16, Value)> {
    let token = std::env::var("HOLDFAST_ADMIN_TOKEN").ok();
    match admin {
        Admin::Socket(socket) => {
            let stream = UnixStream::connect(socket)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            exchange(stream, "localhost", None, method, path)
        }
        Admin::Tcp(addr) => {
            let stream = TcpStream::connect_timeout(addr, Duration::from_secs(3))?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            exchange(stream, &addr.to_string(), token.as_deref(), method, path)
        }
    }
}

fn exchange<S: Read + Write>(
    mut stream: S,
    host: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, Value)> {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    // One write: `write!` straight to the socket would send the head in pieces.
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| bad())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let body = serde_json::from_slice(&answer[split + 4..]).unwrap_or(Value::Null);
    Ok((status, body))
}

/// What to say when `admin` answered a write with 401 or 403.
fn refused_hint(status: u16, doc: &Value) -> Option<String> {
    matches!(status, 401 | 403).then(|| {
        format!(
            "{} (set HOLDFAST_ADMIN_TOKEN for the admin listener, or use the control socket: --control-sock)",
            doc["error"].as_str().unwrap_or("refused")
        )
    })
}

/// `holdfast reload`: the exit code (0: reloaded; 1: the file has problems, nothing changed;
/// 2: the running process could not be asked).
pub fn reload(config: &Path, admin: &Admin) -> u8 {
    match request(admin, "POST", "/reload") {
        Ok((200, doc)) => {
            println!(
                "{}: reloaded: generation {}, sha256 {}",
                config.display(),
                doc["generation"],
                doc["hash"].as_str().unwrap_or("?")
            );
            println!("  {}", doc["summary"].as_str().unwrap_or(""));
            let b = &doc["backends"];
            println!(
                "  backends: {} added, {} removed, {} kept",
                b["added"], b["removed"], b["kept"]
            );
            for (what, key) in [
                ("listening on", "added"),
                ("no longer listening on", "removed"),
            ] {
                for addr in doc["listeners"][key].as_array().into_iter().flatten() {
                    println!("  {what} {}", addr.as_str().unwrap_or("?"));
                }
            }
            for need in doc["needs_restart"].as_array().into_iter().flatten() {
                println!("  needs a restart: {}", need.as_str().unwrap_or("?"));
            }
            0
        }
        Ok((_, doc)) if doc["result"] == "failure" => {
            let problems = doc["problems"].as_array().cloned().unwrap_or_default();
            for p in &problems {
                eprintln!("{}", p.as_str().unwrap_or("?"));
            }
            eprintln!(
                "{}: not reloaded: the running config keeps serving",
                config.display()
            );
            1
        }
        Ok((status, doc)) => {
            let hint = refused_hint(status, &doc).unwrap_or_default();
            eprintln!("holdfast reload: {admin} answered {status} {hint}");
            2
        }
        Err(e) => {
            eprintln!("holdfast reload: cannot reach the running holdfast at {admin}: {e}");
            if matches!(admin, Admin::Tcp(_)) && named_admin(config).is_none() {
                eprintln!("  ({} names no listen.admin that could be read: pass --admin ADDR if it is not the default)", config.display());
            }
            2
        }
    }
}

/// `holdfast upgrade`: the exit code (0: the new process serves; 1 otherwise).
pub fn upgrade(admin: &Admin) -> u8 {
    let (old, new) = match request(admin, "POST", "/upgrade") {
        Ok((200, doc)) => (doc["old_pid"].as_u64(), doc["new_pid"].as_u64()),
        Ok((status, doc)) => {
            let why = refused_hint(status, &doc)
                .unwrap_or_else(|| doc["error"].as_str().unwrap_or("?").to_string());
            eprintln!("holdfast upgrade: not started ({status}): {why}");
            return 1;
        }
        Err(e) => {
            eprintln!("holdfast upgrade: cannot reach the running holdfast at {admin}: {e}");
            return 1;
        }
    };
    let (Some(old), Some(new)) = (old, new) else {
        eprintln!("holdfast upgrade: the running process did not say which process took over");
        return 1;
    };
    // The new process answers on the same admin listener once it has the sockets.
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Ok((200, doc)) = request(admin, "GET", "/status") {
            if doc["pid"].as_u64() == Some(new) {
                println!("upgraded: process {old} handed over to {new}, which serves now");
                return 0;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "holdfast upgrade: process {new} did not take over within {}s; process {old} goes on serving if it could not hand over",
        TIMEOUT.as_secs()
    );
    1
}

/// `holdfast status`: the exit code (0: serving; 1: answering with the fallback, or stopping;
/// 2: it could not be asked).
pub fn status(admin: &Admin, quiet: bool) -> u8 {
    let view = match ask_status(admin) {
        Ok(view) => view,
        Err(e) => {
            if !quiet {
                eprintln!("holdfast status: {admin}: {e}");
            }
            return 2;
        }
    };
    if !quiet {
        print!("{}", view.render());
    }
    match view.serving() {
        true => 0,
        false => 1,
    }
}

/// `holdfast status --all`: each instance asked in turn, then the table and the verdict; the
/// exit code is [`Fleet::exit_code`](crate::fleet::Fleet::exit_code).
pub fn status_all(addrs: &[SocketAddr], quiet: bool) -> u8 {
    let views: Vec<(String, Result<View, String>)> = addrs
        .iter()
        .map(|addr| (addr.to_string(), ask_status(&Admin::Tcp(*addr))))
        .collect();
    let fleet = Fleet::of(&views);
    if !quiet {
        print!("{}", fleet.render());
    }
    fleet.exit_code()
}

fn ask_status(admin: &Admin) -> Result<View, String> {
    match request(admin, "GET", "/status") {
        Ok((200, doc)) => View::parse(&doc).ok_or_else(|| "not a holdfast status".to_string()),
        Ok((status, _)) => Err(format!("answered {status}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A name as one segment of a URL path: bytes other than letters, digits and `-._~:@` are
/// percent-encoded (RFC 3986).
pub fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `holdfast backend ACTION POOL BACKEND`: the exit code (0: done; 1: refused or no such
/// backend; 2: the running process could not be asked).
pub fn backend(admin: &Admin, (action, pool, name): (&str, &str, &str), force: bool) -> u8 {
    let path = format!(
        "/backends/{}/{}/{action}{}",
        path_segment(pool),
        path_segment(name),
        if force { "?force=1" } else { "" }
    );
    match request(admin, "POST", &path) {
        Ok((200, doc)) => {
            let admin = &doc["admin"];
            let shown = admin["shown"].as_str().unwrap_or("as its checks say");
            println!(
                "{pool}/{name}: {action}: {shown} (checks: {}, {} in flight)",
                doc["status"].as_str().unwrap_or("?"),
                doc["in_flight"]
            );
            0
        }
        Ok((status, doc)) => {
            let why = refused_hint(status, &doc)
                .unwrap_or_else(|| doc["error"].as_str().unwrap_or("?").to_string());
            eprintln!("holdfast backend {action}: refused ({status}): {why}");
            1
        }
        Err(e) => {
            eprintln!("holdfast backend: cannot reach the running holdfast at {admin}: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_comes_from_the_flag_the_file_or_the_default() {
        let dir = std::env::temp_dir().join(format!("holdfast-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        let given: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        std::fs::write(
            &file,
            "[listen]\nadmin = \"127.0.0.1:7001\"\n[[pools.x.tiers]]\nbroken",
        )
        .expect("write");
        // Not valid TOML: the default, and the hint that the file named none.
        assert_eq!(admin_address(&file, None).port(), 9180);
        assert!(named_admin(&file).is_none());
        std::fs::write(
            &file,
            "[listen]\nadmin = \"127.0.0.1:7001\"\n[pools]\nnot = \"a valid config\"\n",
        )
        .expect("write");
        assert_eq!(admin_address(&file, None).port(), 7001, "read leniently");
        assert_eq!(admin_address(&file, Some(given)), given);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_admin_answer_is_read_whole() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            // The whole head: closing with some of it unread would reset the connection.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).expect("read") == 1 {
                head.push(byte[0]);
            }
            let asked = String::from_utf8_lossy(&head).into_owned();
            let body = r#"{"result":"failure","problems":["f: a.b: bad"]}"#;
            let answer = format!("HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            s.write_all(answer.as_bytes()).expect("write");
            asked
        });
        let (status, doc) = request(&Admin::Tcp(addr), "POST", "/reload").expect("answer");
        assert_eq!(status, 422);
        assert_eq!(doc["problems"][0], "f: a.b: bad");
        let asked = server.join().expect("server");
        assert!(asked.starts_with("POST /reload HTTP/1.1\r\n"), "{asked:?}");
    }
}
