//! Which sockets listen on this machine and who holds them, from `/proc/net/tcp{,6}` and
//! `/proc/*/fd`; and what that means for each listener of the config. Parsing and judging are
//! plain functions, table-tested; [`listening`] and [`owners`] read `/proc`.

use super::report::{Finding, Layer};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub addr: SocketAddr,
    pub inode: u64,
}

/// A process: its id and command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub command: String,
}

/// The listening sockets in one `/proc/net/tcp` (`v6`: `/proc/net/tcp6`) text.
pub fn parse(text: &str, v6: bool) -> Vec<Listening> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if fields.get(3) != Some(&"0A") {
                return None;
            }
            let (ip, port) = fields.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = match v6 {
                false => IpAddr::V4(Ipv4Addr::from(
                    u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
                )),
                true => {
                    let mut bytes = [0u8; 16];
                    for (i, word) in bytes.chunks_mut(4).enumerate() {
                        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                        word.copy_from_slice(&w.swap_bytes().to_be_bytes());
                    }
                    IpAddr::V6(Ipv6Addr::from(bytes))
                }
            };
            let inode = fields.get(9)?.parse().ok()?;
            Some(Listening {
                addr: SocketAddr::new(ip, port),
                inode,
            })
        })
        .collect()
}

/// Every listening TCP socket of this network namespace.
pub fn listening() -> Vec<Listening> {
    let mut all = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(file) {
            all.extend(parse(&text, v6));
        }
    }
    all
}

/// Who holds each of `inodes` (as far as this user may look into other processes).
pub fn owners(inodes: &[u64]) -> HashMap<u64, Process> {
    let mut found = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) && !found.contains_key(&inode) {
                let command = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
                found.insert(inode, Process { pid, command });
            }
        }
    }
    found
}

/// Whether a socket listening on `bound` takes connections to `wanted`.
fn covers(bound: SocketAddr, wanted: SocketAddr) -> bool {
    bound.port() == wanted.port() && (bound.ip() == wanted.ip() || bound.ip().is_unspecified())
}

/// What a listener of the config (`scheme` `http` or `https`) means for Cloudflare, given the
/// sockets that listen (with their holders) and holdfast's own process id, if it runs.
pub fn judge(
    configured: SocketAddr,
    scheme: &str,
    bound: &[(Listening, Option<Process>)],
    holdfast: Option<u32>,
) -> Finding {
    let check = format!("listener {configured} ({scheme})");
    let key = format!("listen.{scheme}");
    if configured.ip().is_loopback() {
        return Finding::fail(
            Layer::Listeners,
            check,
            Some(521),
            format!(
                "on {} only: Cloudflare cannot connect to it",
                configured.ip()
            ),
            format!(
                "listen on 0.0.0.0:{} (or the public address Cloudflare connects to) in {key}",
                configured.port()
            ),
        );
    }
    let holders: Vec<&Option<Process>> = bound
        .iter()
        .filter(|(l, _)| covers(l.addr, configured))
        .map(|(_, p)| p)
        .collect();
    if holders.is_empty() {
        return Finding::fail(
            Layer::Listeners,
            check,
            Some(521),
            "nothing listens there: every connection is refused",
            match holdfast {
                Some(pid) => format!("holdfast (pid {pid}) does not hold it: restart holdfast to bind it (journalctl -u holdfast says why it could not)"),
                None => "start holdfast (systemctl start holdfast)".to_string(),
            },
        );
    }
    let other = holders.iter().find_map(|p| {
        p.as_ref()
            .filter(|p| Some(p.pid) != holdfast && p.command != "holdfast")
    });
    if let Some(other) = other {
        return Finding::fail(
            Layer::Listeners,
            check,
            Some(521),
            format!(
                "held by another process: pid {} ({})",
                other.pid, other.command
            ),
            format!(
                "stop {} or move it to another port, then start holdfast",
                other.command
            ),
        );
    }
    let holder = holders.iter().find_map(|p| p.as_ref()).map_or(
        "bound (its holder is not visible to this user)".to_string(),
        |p| format!("bound by {} (pid {})", p.command, p.pid),
    );
    match (scheme, configured.port()) {
        ("https", 80) => Finding::warn(
            Layer::Listeners,
            check,
            format!("{holder}; HTTPS on port 80"),
            "Cloudflare speaks plain HTTP to port 80 (Flexible mode): serve HTTP there, HTTPS on 443",
        ),
        ("http", 443) => Finding::warn(
            Layer::Listeners,
            check,
            format!("{holder}; plain HTTP on port 443"),
            "Cloudflare's Full and Full (strict) modes speak HTTPS to port 443: serve HTTPS there",
        )
        .code(525),
        _ => Finding::ok(Layer::Listeners, check, holder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Verdict;

    #[test]
    fn proc_net_tcp_is_read() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
           1: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 100 0 0 10 0\n\
           2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse(v4, false),
            [
                Listening {
                    addr: "127.0.0.1:8080".parse().unwrap(),
                    inode: 4242
                },
                Listening {
                    addr: "0.0.0.0:443".parse().unwrap(),
                    inode: 4343
                },
            ],
            "an established connection is no listener"
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n\
           1: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0 100 0 0 10 0\n";
        let got = parse(v6, true);
        assert_eq!(got[0].addr, "[::1]:80".parse().unwrap());
        assert_eq!(got[1].addr, "[::]:443".parse().unwrap());
    }

    #[test]
    fn listener_rows() {
        let sock = |addr: &str, inode| Listening {
            addr: addr.parse().unwrap(),
            inode,
        };
        let holdfast = Some(Process {
            pid: 10,
            command: "holdfast".into(),
        });
        let nginx = Some(Process {
            pid: 20,
            command: "nginx".into(),
        });
        // (configured, scheme, bound, holdfast's pid, verdict, code, found or fix holds)
        let rows = [
            (
                "127.0.0.1:443",
                "https",
                vec![(sock("127.0.0.1:443", 1), holdfast.clone())],
                Some(10),
                Verdict::Fail,
                Some(521),
                "on 127.0.0.1 only",
            ),
            (
                "0.0.0.0:443",
                "https",
                vec![],
                Some(10),
                Verdict::Fail,
                Some(521),
                "nothing listens",
            ),
            (
                "0.0.0.0:443",
                "https",
                vec![(sock("127.0.0.1:443", 1), holdfast.clone())],
                None,
                Verdict::Fail,
                Some(521),
                "nothing listens",
            ),
            (
                "0.0.0.0:80",
                "http",
                vec![(sock("0.0.0.0:80", 1), nginx.clone())],
                None,
                Verdict::Fail,
                Some(521),
                "pid 20 (nginx)",
            ),
            (
                "0.0.0.0:443",
                "https",
                vec![(sock("0.0.0.0:443", 1), holdfast.clone())],
                Some(10),
                Verdict::Ok,
                None,
                "bound by holdfast (pid 10)",
            ),
            (
                "192.0.2.1:443",
                "https",
                vec![(sock("[::]:443", 1), holdfast.clone())],
                Some(10),
                Verdict::Ok,
                None,
                "bound by holdfast",
            ),
            (
                "0.0.0.0:443",
                "https",
                vec![(sock("0.0.0.0:443", 1), None)],
                Some(10),
                Verdict::Ok,
                None,
                "not visible",
            ),
            (
                "0.0.0.0:80",
                "https",
                vec![(sock("0.0.0.0:80", 1), holdfast.clone())],
                Some(10),
                Verdict::Warn,
                None,
                "Flexible",
            ),
            (
                "0.0.0.0:443",
                "http",
                vec![(sock("0.0.0.0:443", 1), holdfast)],
                Some(10),
                Verdict::Warn,
                Some(525),
                "Full",
            ),
        ];
        for (configured, scheme, bound, pid, verdict, code, holds) in rows {
            let f = judge(configured.parse().unwrap(), scheme, &bound, pid);
            assert_eq!(
                (f.verdict, f.code),
                (verdict, code),
                "{configured} {scheme}: {f:?}"
            );
            let text = format!("{} {}", f.found, f.fix.unwrap_or_default());
            assert!(
                text.contains(holds),
                "{configured}: {holds:?} not in {text}"
            );
        }
    }
}
