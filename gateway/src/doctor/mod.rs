//! `holdfast doctor`: the troubleshooting guide for Cloudflare's 52x errors, run against the
//! config and the live machine. Read-only: it reads `/proc`, the config and its files, asks the
//! running holdfast's `/status`, connects to the listeners and the backends, and changes
//! nothing.
//!
//! Each layer has its plain judge with a table test ([`sockets`], [`backends`], [`tls`],
//! [`machine`], [`request`]); this module gathers what they judge and prints the [`report`].

pub mod backends;
pub mod firewall;
pub mod machine;
pub mod report;
pub mod request;
pub mod sockets;
pub mod tls;

use crate::control::{self, Admin};
use holdfast_config::{CheckKind, Config};
use holdfast_health::probe::{probe, CheckFailure};
use holdfast_health::tls::TlsClient;
use report::{Finding, Report};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a connect to a backend is given when its pool has no TCP check to say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest the request as Cloudflare sends it is given, connect to answer's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How doctor is asked to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// One JSON document instead of text.
    pub json: bool,
    /// The public address to send the request as Cloudflare sends it to, besides the listeners.
    pub from_outside: Option<IpAddr>,
}

/// Runs every check and prints the report (text, or JSON). The exit code: 0 when nothing would
/// cause a 52x, 1 when something would, 2 when doctor could not run.
pub fn run(config_path: &Path, admin: &Admin, options: &Options) -> u8 {
    let started = Instant::now();
    let (config, hashes) = match crate::reload::read(config_path) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "holdfast doctor: {} cannot be used as it is; `holdfast check` lists every problem",
                config_path.display()
            );
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdfast doctor: cannot start: {e}");
            return 2;
        }
    };
    let status = control::request(admin, "GET", "/status")
        .map_err(|e| e.to_string())
        .and_then(|(code, doc)| match code {
            200 => Ok(doc),
            other => Err(format!("/status answered {other}")),
        });
    let running = status.as_ref().map_err(Clone::clone).and_then(running_of);
    let name = config_path.display().to_string();
    let mut findings = vec![machine::judge_process(&running, &hashes.file, &name)];
    let pid = running.as_ref().ok().map(|r| r.pid);
    findings.extend(listeners(&config, pid));
    findings.extend(firewall(&config));
    let seen = status.as_ref().map(seen_of).unwrap_or_default();
    findings.extend(runtime.block_on(backends(&config, &seen)));
    findings.extend(certificates(&config, pid));
    findings.extend(requests(&config, options.from_outside));
    let m = machine::Machine::read(pid);
    findings.extend(machine::judge_resources(&m, running.as_ref().ok()));
    let report = Report {
        config: name,
        findings,
        took: started.elapsed(),
    };
    match options.json {
        true => println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        ),
        false => print!("{}", report.text()),
    }
    report.exit_code()
}

/// What `/status` says of the process.
fn running_of(doc: &Value) -> Result<machine::Running, String> {
    let pid = doc["pid"].as_u64().ok_or("/status has no pid")?;
    Ok(machine::Running {
        pid: u32::try_from(pid).map_err(|e| e.to_string())?,
        hash: doc["config"]["hash"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        generation: doc["config"]["generation"].as_u64().unwrap_or(0),
        max_connections: doc["visitors"]["max_connections"].as_u64().unwrap_or(0),
    })
}

/// What `/status` says of each backend, by `pool/tier/backend`.
fn seen_of(doc: &Value) -> HashMap<String, backends::Seen> {
    let mut seen = HashMap::new();
    for pool in doc["pools"].as_array().into_iter().flatten() {
        for tier in pool["tiers"].as_array().into_iter().flatten() {
            for b in tier["backends"].as_array().into_iter().flatten() {
                let key = format!(
                    "{}/{}/{}",
                    pool["name"].as_str().unwrap_or_default(),
                    tier["name"].as_str().unwrap_or_default(),
                    b["name"].as_str().unwrap_or_default()
                );
                let transition = &b["last_transition"];
                let mut why = b["status"].as_str().unwrap_or("unknown").to_string();
                if let Some(reason) = transition["reason"].as_str() {
                    why = format!(
                        "{why} since {} ({reason})",
                        transition["at"].as_str().unwrap_or("?")
                    );
                }
                if let Some(shown) = b["admin"]["shown"].as_str() {
                    why = format!("{why}, {shown} by an operator");
                }
                seen.insert(
                    key,
                    backends::Seen {
                        usable: b["usable"].as_bool().unwrap_or(false),
                        why,
                    },
                );
            }
        }
    }
    seen
}

/// Every listener of the config against the sockets that listen.
fn listeners(config: &Config, holdfast: Option<u32>) -> Vec<Finding> {
    let listening = sockets::listening();
    let inodes: Vec<u64> = listening.iter().map(|l| l.inode).collect();
    let owners = sockets::owners(&inodes);
    let bound: Vec<(sockets::Listening, Option<sockets::Process>)> = listening
        .into_iter()
        .map(|l| {
            let owner = owners.get(&l.inode).cloned();
            (l, owner)
        })
        .collect();
    let listen = &config.listen;
    let http = listen.http.iter().map(|a| (*a, "http"));
    let https = listen.https.iter().map(|a| (*a, "https"));
    http.chain(https)
        .map(|(addr, scheme)| sockets::judge(addr, scheme, &bound, holdfast))
        .collect()
}

/// The packet filter walked for Cloudflare's ranges (built in, and the last good refresh) to
/// every listener's port; fail2ban's bans; what cannot be seen from here.
fn firewall(config: &Config) -> Vec<Finding> {
    use firewall::{Family, Span, Target};
    let mut nets = crate::trust::cloudflare();
    let refreshed = config.trust.refresh.as_ref().and_then(|r| r.file.as_ref());
    if let Some(Ok((more, _))) = refreshed
        .and_then(|f| std::fs::read(f).ok())
        .map(|b| crate::trust::parse_ranges(&b))
    {
        nets.extend(more);
    }
    let mut ranges: Vec<Span> = Vec::new();
    for span in nets.into_iter().map(Span::net) {
        if !ranges.contains(&span) {
            ranges.push(span);
        }
    }
    let mut targets: Vec<Target> = Vec::new();
    for addr in config.listen.http.iter().chain(&config.listen.https) {
        let ip = addr.ip();
        if ip.is_loopback() {
            continue;
        }
        let families = match ip {
            IpAddr::V4(_) => vec![Family::V4],
            IpAddr::V6(v6) if v6.is_unspecified() => vec![Family::V4, Family::V6],
            IpAddr::V6(_) => vec![Family::V6],
        };
        let to = (!ip.is_unspecified()).then_some(ip);
        let target = Target {
            port: addr.port(),
            to,
            families,
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    let read = firewall::read::read();
    let outside = firewall::read::Outside::read();
    let mut out: Vec<Finding> = firewall::judge_reading(&read.tools, &read.unreadable)
        .into_iter()
        .collect();
    if !read.tools.is_empty() {
        for target in &targets {
            out.extend(firewall::judge(&read.ruleset, target, &ranges, &outside));
        }
    }
    let bans = firewall::judge_bans(&firewall::read::fail2ban(), &ranges, &out);
    out.extend(bans);
    let listeners = config.listen.http.iter().chain(&config.listen.https);
    let mut ports: Vec<u16> = listeners.map(|a| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    out.push(firewall::beyond(&ranges, &ports));
    out
}

/// Every backend probed at once, then each pool judged by what the probes found.
async fn backends(config: &Config, seen: &HashMap<String, backends::Seen>) -> Vec<Finding> {
    let tls = TlsClient::new();
    let mut probes = tokio::task::JoinSet::new();
    for (p, pool) in config.pools.iter().enumerate() {
        let connect_timeout = pool
            .health
            .checks
            .iter()
            .find(|c| matches!(c.kind, CheckKind::Tcp))
            .map_or(CONNECT_TIMEOUT, |c| c.timeout);
        let http = pool
            .health
            .checks
            .iter()
            .find(|c| matches!(c.kind, CheckKind::Http(_)))
            .cloned();
        for (t, tier) in pool.tiers.iter().enumerate() {
            for (i, backend) in tier.backends.iter().enumerate() {
                let (backend, tls, http) = (backend.clone(), tls.clone(), http.clone());
                let name = format!("{}/{}/{}", pool.name, tier.name, backend.name);
                let seen = seen.get(&name).cloned();
                probes.spawn(async move {
                    let timed = |started: Instant, r: Result<(), CheckFailure>| {
                        r.map(|()| started.elapsed())
                    };
                    let started = Instant::now();
                    let connect = timed(
                        started,
                        probe(&CheckKind::Tcp, &backend, &tls, connect_timeout).await,
                    );
                    let http = match (&connect, http) {
                        (Ok(_), Some(check)) => {
                            let started = Instant::now();
                            Some(timed(
                                started,
                                probe(&check.kind, &backend, &tls, check.timeout).await,
                            ))
                        }
                        _ => None,
                    };
                    let probed = backends::Probed {
                        name,
                        address: backend.address.clone(),
                        connect,
                        http,
                        seen,
                    };
                    ((p, t, i), probed)
                });
            }
        }
    }
    let mut done = Vec::new();
    while let Some(joined) = probes.join_next().await {
        if let Ok(one) = joined {
            done.push(one);
        }
    }
    done.sort_by_key(|(at, _)| *at);
    let mut out = Vec::new();
    for (p, pool) in config.pools.iter().enumerate() {
        let mut usable: Vec<(&str, usize)> =
            pool.tiers.iter().map(|t| (t.name.as_str(), 0)).collect();
        let mut found = Vec::new();
        for ((_, t, _), probed) in done.iter().filter(|((q, _, _), _)| *q == p) {
            let finding = backends::judge(probed);
            // Failing now, or out of holdfast's hands (an operator's mark): not serving.
            let serves = finding.verdict != report::Verdict::Fail
                && probed.seen.as_ref().is_none_or(|s| s.usable);
            if serves {
                usable[*t].1 += 1;
            }
            found.push(finding);
        }
        let whole = backends::judge_pool(&pool.name, &usable);
        backends::settle(&mut found, &whole);
        out.extend(found);
        out.push(whole);
    }
    out
}

/// Every certificate of the HTTPS listeners, on disk, as served and as the running holdfast
/// (`pid`) can read it; the CA of Authenticated Origin Pulls.
fn certificates(config: &Config, pid: Option<u32>) -> Vec<Finding> {
    let Some(listen_tls) = &config.listen.tls else {
        return Vec::new();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let pairs = std::iter::once((&listen_tls.cert, &listen_tls.key))
        .chain(listen_tls.more.iter().map(|c| (&c.cert, &c.key)));
    let loaded: Vec<(String, Result<crate::certs::Certificate, String>)> = pairs
        .map(|(cert, key)| (cert.display().to_string(), crate::certs::load(cert, key)))
        .collect();
    let names: Vec<Vec<String>> = loaded
        .iter()
        .filter_map(|(_, c)| c.as_ref().ok().map(|c| c.names.clone()))
        .collect();
    let mut uncovered: Vec<String> = config
        .routes
        .hosts
        .keys()
        .filter(|host| crate::certs::pick(&names, host).is_none())
        .cloned()
        .collect();
    uncovered.sort();
    let listener = config.listen.https.first().map(|a| local(*a));
    let mut out = Vec::new();
    for (i, (file, cert)) in loaded.iter().enumerate() {
        let served_same = match (cert, listener) {
            (Ok(c), Some(addr)) => {
                let sni = c
                    .names
                    .iter()
                    .find(|n| !n.starts_with('*'))
                    .cloned()
                    .unwrap_or_else(|| "localhost".into());
                tls::served(addr, &sni, Duration::from_secs(2)).map(|der| Some(der) == c.leaf_der())
            }
            _ => None,
        };
        let on_disk = tls::OnDisk {
            file: file.clone(),
            loaded: cert
                .as_ref()
                .map(|c| (c.names.clone(), c.not_after))
                .map_err(Clone::clone),
            served_same,
        };
        let uncovered = if i == 0 { &uncovered[..] } else { &[] };
        out.extend(tls::judge(&on_disk, now, uncovered));
        if let Ok(c) = cert {
            out.extend(tls::judge_order(file, tls::order(c.chain()).as_deref()));
        }
    }
    let mut pulls: Vec<_> = listen_tls.origin_pulls.iter().collect();
    pulls.sort_by_key(|(addr, _)| **addr);
    for (addr, p) in &pulls {
        let loaded = std::fs::read(&p.ca)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|pem| {
                openssl::x509::X509::stack_from_pem(&pem).map_err(|e| format!("not PEM: {e}"))
            })
            .and_then(|certs| match certs.len() {
                0 => Err("no certificate in it".to_string()),
                n => Ok(n),
            });
        let mode = match p.mode {
            holdfast_config::PullMode::Log => "log",
            holdfast_config::PullMode::Require => "require",
        };
        out.push(tls::judge_pulls(
            &addr.to_string(),
            &p.ca.display().to_string(),
            mode,
            &loaded,
        ));
    }
    // What the running holdfast could read: a renewed certificate is loaded by it, not by us.
    if let Some(reader) = pid.and_then(tls::Reader::of) {
        let files = std::iter::once((&listen_tls.cert, &listen_tls.key))
            .chain(listen_tls.more.iter().map(|c| (&c.cert, &c.key)))
            .flat_map(|(c, k)| [c, k])
            .chain(pulls.iter().map(|(_, p)| &p.ca));
        for file in files {
            if let Some((mode, dirs)) = tls::Mode::of(file) {
                if !tls::may_read(&reader, &mode, &dirs) {
                    out.push(tls::judge_readable(
                        &file.display().to_string(),
                        &reader,
                        &mode,
                    ));
                }
            }
        }
    }
    out
}

/// The request Cloudflare would send, to every listener for every site the config routes (or
/// any name, for the default pool alone), from this machine; with `outside`, to that address
/// on each listener's port too.
fn requests(config: &Config, outside: Option<IpAddr>) -> Vec<Finding> {
    let mut hosts: Vec<String> = config.routes.hosts.keys().cloned().collect();
    hosts.sort();
    if hosts.is_empty() {
        hosts.push("localhost".into());
    }
    let listen = &config.listen;
    let targets = listen.http.iter().map(|a| (*a, false));
    let targets = targets.chain(listen.https.iter().map(|a| (*a, true)));
    let mut out = Vec::new();
    for (addr, tls) in targets {
        let scheme = if tls { "https" } else { "http" };
        let to = std::iter::once((local(addr), addr.to_string()));
        let outside = outside.map(|ip| {
            let public = SocketAddr::new(ip, addr.port());
            (public, format!("{public} (the public address)"))
        });
        for (at, shown) in to.chain(outside) {
            for host in &hosts {
                let sent = request::send(at, host, tls, REQUEST_TIMEOUT);
                out.push(request::judge(&format!("{scheme}://{shown}"), host, &sent));
            }
        }
    }
    out
}

/// Where to reach a listener from this machine: its own address, or loopback when it listens
/// on every address.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}
