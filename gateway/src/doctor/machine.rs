//! The holdfast process and the machine under it: is it running with this config, and has it
//! (and the kernel) room for Cloudflare's connections. Judged by plain functions with table
//! tests; [`Machine::read`] reads `/proc`.

use super::report::{Finding, Layer};

/// What the running holdfast says of itself (`/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub pid: u32,
    pub hash: String,
    pub generation: u64,
    /// The cap on visitor connections in force.
    pub max_connections: u64,
}

/// Is holdfast running with the file as it is now?
pub fn judge_process(running: &Result<Running, String>, file_hash: &str, config: &str) -> Finding {
    match running {
        Err(why) => Finding::fail(
            Layer::Process,
            "holdfast running",
            Some(521),
            format!("no holdfast answers for {config}: {why}"),
            "start it (systemctl start holdfast); `journalctl -u holdfast` says why it stopped",
        ),
        Ok(r) if r.hash != file_hash => Finding::warn(
            Layer::Process,
            "holdfast running",
            format!(
                "pid {}, but it serves generation {} of another version of the file (edited since, or a reload was refused)",
                r.pid, r.generation
            ),
            format!("holdfast reload --config {config} (it says what is wrong if the file is refused)"),
        ),
        Ok(r) => Finding::ok(
            Layer::Process,
            "holdfast running",
            format!("pid {}, generation {}, the file as it is", r.pid, r.generation),
        ),
    }
}

/// What the machine has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    /// The process's open-file limit (soft), and its open files now.
    pub fd_limit: Option<u64>,
    pub fds_open: Option<u64>,
    pub somaxconn: Option<u64>,
    /// `ip_local_port_range`.
    pub ports: Option<(u32, u32)>,
    /// kB.
    pub mem_total: Option<u64>,
    pub mem_available: Option<u64>,
    pub load1: Option<f64>,
    pub cpus: usize,
}

impl Machine {
    /// Reads `/proc` (the process's own files when `pid` is known).
    pub fn read(pid: Option<u32>) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let number = |path: &str| read(path).and_then(|t| t.trim().parse().ok());
        let meminfo = read("/proc/meminfo").unwrap_or_default();
        let mem = |key: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        let (fd_limit, fds_open) = match pid {
            Some(pid) => (
                read(&format!("/proc/{pid}/limits")).and_then(|t| soft_nofile(&t)),
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .ok()
                    .map(|d| d.count() as u64),
            ),
            None => (None, None),
        };
        Machine {
            fd_limit,
            fds_open,
            somaxconn: number("/proc/sys/net/core/somaxconn"),
            ports: read("/proc/sys/net/ipv4/ip_local_port_range").and_then(|t| {
                let mut it = t.split_whitespace().map(|v| v.parse().ok());
                Some((it.next()??, it.next()??))
            }),
            mem_total: mem("MemTotal:"),
            mem_available: mem("MemAvailable:"),
            load1: read("/proc/loadavg")
                .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok())),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The soft "Max open files" of a `/proc/PID/limits` text.
pub fn soft_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors holdfast keeps aside for itself (checks, admin, runtime), as `server.rs` does.
fn reserve(limit: u64) -> u64 {
    (limit / 4).clamp(64, 256)
}

/// Has the machine room: descriptors for the connection cap (each visitor connection may need
/// a backend connection beside it), a listen queue for bursts, ephemeral ports, memory, CPU.
pub fn judge_resources(m: &Machine, running: Option<&Running>) -> Vec<Finding> {
    let mut out = Vec::new();
    let r = Layer::Resources;
    if let (Some(limit), Some(running)) = (m.fd_limit, running) {
        let needed = 2 * running.max_connections + reserve(limit);
        let check = "open-file limit";
        out.push(match limit < needed {
            true => Finding::fail(
                r,
                check,
                Some(522),
                format!(
                    "{limit}, below the {needed} that {} visitor connections (max_connections) need with a backend connection each: accepts fail and connections queue until Cloudflare gives up",
                    running.max_connections
                ),
                format!("raise it to {needed} or more (LimitNOFILE= in the systemd unit, then restart), or lower listen.max_connections"),
            ),
            false => Finding::ok(r, check, format!("{limit} (max_connections {} needs {needed})", running.max_connections)),
        });
        if let Some(open) = m.fds_open {
            let share = open as f64 / limit.max(1) as f64;
            let check = "open files";
            let found = format!("{open} of {limit} ({:.0} %)", share * 100.0);
            out.push(match share {
                s if s >= 0.95 => Finding::fail(r, check, Some(522), found, "raise LimitNOFILE=; look for connections piling up (slow backends, idle visitors)"),
                s if s >= 0.8 => Finding::warn(r, check, found, "raise LimitNOFILE= before it runs out"),
                _ => Finding::ok(r, check, found),
            });
        }
    }
    if let Some(n) = m.somaxconn {
        let check = "net.core.somaxconn";
        out.push(match n < 4096 {
            true => Finding::warn(
                r,
                check,
                format!("{n}: a burst of new connections beyond it is dropped (522)"),
                "sysctl -w net.core.somaxconn=4096 (and in /etc/sysctl.d/ to keep it)",
            )
            .code(522),
            false => Finding::ok(r, check, n.to_string()),
        });
    }
    if let Some((low, high)) = m.ports {
        let span = high.saturating_sub(low) + 1;
        let check = "ephemeral ports";
        out.push(match span < 16384 {
            true => Finding::warn(
                r,
                check,
                format!("{low}-{high}: {span} ports for connections to backends"),
                "sysctl -w net.ipv4.ip_local_port_range=\"10000 65535\"",
            ),
            false => Finding::ok(r, check, format!("{low}-{high}")),
        });
    }
    if let (Some(total), Some(available)) = (m.mem_total, m.mem_available) {
        let share = available as f64 / total.max(1) as f64;
        let check = "memory";
        let found = format!("{} MiB available of {} MiB", available / 1024, total / 1024);
        out.push(match share < 0.05 {
            true => Finding::warn(r, check, found, "find what holds the memory (ps aux --sort=-rss | head): the kernel's OOM killer may stop a backend or holdfast"),
            false => Finding::ok(r, check, found),
        });
    }
    if let Some(load) = m.load1 {
        let check = "load";
        let found = format!("{load:.2} on {} CPUs", m.cpus);
        out.push(match load > 2.0 * m.cpus as f64 {
            true => Finding::warn(r, check, found, "the machine is overloaded: answers slow down until Cloudflare times out (522, 524)"),
            false => Finding::ok(r, check, found),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Verdict;

    #[test]
    fn process_rows() {
        let running = |hash: &str| {
            Ok(Running {
                pid: 7,
                hash: hash.into(),
                generation: 3,
                max_connections: 100,
            })
        };
        let rows = [
            (Err("connection refused".to_string()), Verdict::Fail),
            (running("abc"), Verdict::Ok),
            (running("old"), Verdict::Warn),
        ];
        for (r, verdict) in rows {
            assert_eq!(judge_process(&r, "abc", "h.toml").verdict, verdict, "{r:?}");
        }
    }

    #[test]
    fn the_soft_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95426                95426                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_nofile(limits), Some(1024));
    }

    #[test]
    fn resource_rows() {
        let running = Running {
            pid: 7,
            hash: String::new(),
            generation: 1,
            max_connections: 5000,
        };
        let fine = Machine {
            fd_limit: Some(20_000),
            fds_open: Some(100),
            somaxconn: Some(4096),
            ports: Some((10_000, 65_535)),
            mem_total: Some(1_000_000),
            mem_available: Some(500_000),
            load1: Some(0.5),
            cpus: 2,
        };
        // (machine, check, verdict)
        let rows = [
            (fine.clone(), "open-file limit", Verdict::Ok),
            (
                Machine {
                    fd_limit: Some(4096),
                    ..fine.clone()
                },
                "open-file limit",
                Verdict::Fail,
            ),
            (
                Machine {
                    fds_open: Some(17_000),
                    ..fine.clone()
                },
                "open files",
                Verdict::Warn,
            ),
            (
                Machine {
                    fds_open: Some(19_500),
                    ..fine.clone()
                },
                "open files",
                Verdict::Fail,
            ),
            (
                Machine {
                    somaxconn: Some(128),
                    ..fine.clone()
                },
                "net.core.somaxconn",
                Verdict::Warn,
            ),
            (
                Machine {
                    ports: Some((60_000, 61_000)),
                    ..fine.clone()
                },
                "ephemeral ports",
                Verdict::Warn,
            ),
            (
                Machine {
                    mem_available: Some(10_000),
                    ..fine.clone()
                },
                "memory",
                Verdict::Warn,
            ),
            (
                Machine {
                    load1: Some(9.0),
                    ..fine.clone()
                },
                "load",
                Verdict::Warn,
            ),
        ];
        for (m, check, verdict) in rows {
            let found = judge_resources(&m, Some(&running));
            let f = found.iter().find(|f| f.check == check).unwrap();
            assert_eq!(f.verdict, verdict, "{f:?}");
            let others = found.iter().filter(|f| f.check != check);
            assert!(
                others.clone().all(|f| f.verdict == Verdict::Ok),
                "{found:?}"
            );
        }
    }
}
