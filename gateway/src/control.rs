//! The commands that act on a running holdfast through its admin listener: `holdfast reload`
//! and `holdfast upgrade`. A minimal HTTP/1.1 client over one connection: the admin listener is
//! local and speaks plain HTTP.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one admin request may take (a reload probes new backends first).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The config file's `listen.admin`, read leniently: the file may be the broken one being
/// reloaded, so only its TOML has to be readable.
fn named_admin(config: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(config).ok()?;
    let table = text.parse::<toml::Table>().ok()?;
    table.get("listen")?.get("admin")?.as_str()?.parse().ok()
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

/// One request to the admin listener: the status code and the body as JSON (`Null` if it is
/// not JSON).
pub fn request(admin: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    // One write: `write!` straight to the socket would send the head in pieces.
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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

/// `holdfast reload`: the exit code (0: reloaded; 1: the file has problems, nothing changed;
/// 2: the running process could not be asked).
pub fn reload(config: &Path, admin: Option<SocketAddr>) -> u8 {
    let admin = admin_address(config, admin);
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
        Ok((status, _)) => {
            eprintln!("holdfast reload: the admin listener at {admin} answered {status}");
            2
        }
        Err(e) => {
            eprintln!("holdfast reload: cannot reach the running holdfast at {admin}: {e}");
            if named_admin(config).is_none() {
                eprintln!("  ({} names no listen.admin that could be read: pass --admin ADDR if it is not the default)", config.display());
            }
            2
        }
    }
}

/// `holdfast upgrade`: the exit code (0: the new process serves; 1 otherwise).
pub fn upgrade(config: &Path, admin: Option<SocketAddr>) -> u8 {
    let admin = admin_address(config, admin);
    let (old, new) = match request(admin, "POST", "/upgrade") {
        Ok((200, doc)) => (doc["old_pid"].as_u64(), doc["new_pid"].as_u64()),
        Ok((status, doc)) => {
            eprintln!(
                "holdfast upgrade: not started ({status}): {}",
                doc["error"].as_str().unwrap_or("?")
            );
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
pub fn backend(
    config: &Path,
    admin: Option<SocketAddr>,
    (action, pool, name): (&str, &str, &str),
    force: bool,
) -> u8 {
    let admin = admin_address(config, admin);
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
            eprintln!(
                "holdfast backend {action}: refused ({status}): {}",
                doc["error"].as_str().unwrap_or("?")
            );
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
        let (status, doc) = request(addr, "POST", "/reload").expect("answer");
        assert_eq!(status, 422);
        assert_eq!(doc["problems"][0], "f: a.b: bad");
        let asked = server.join().expect("server");
        assert!(asked.starts_with("POST /reload HTTP/1.1\r\n"), "{asked:?}");
    }
}
