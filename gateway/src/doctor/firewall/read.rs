//! Reading the machine's packet filter, read-only: `iptables-save` and `ip6tables-save` (and
//! their `-legacy` twins when iptables says legacy tables are there too), `ipset list -o save`,
//! `nft -j list ruleset` with `nft -a list ruleset` for the rules' text; fail2ban's banned
//! addresses from `fail2ban-client`; the interface of the default route from `/proc/net`.

use super::rules::{Family, Ruleset};
use super::{iptables, nft};
use std::net::IpAddr;
use std::process::Command;

/// What could be read of the packet filter.
#[derive(Debug, Default)]
pub struct Read {
    pub ruleset: Ruleset,
    /// The tools whose rules were read, e.g. `iptables (nf_tables)`.
    pub tools: Vec<String>,
    /// Tools that are there but could not be read, with why.
    pub unreadable: Vec<String>,
}

/// Runs a read-only listing command: `Ok(None)` when the tool is not installed.
fn run(tool: &str, args: &[&str]) -> Result<Option<String>, String> {
    let found = ["", "/usr/sbin/", "/sbin/", "/usr/bin/"]
        .iter()
        .map(|dir| format!("{dir}{tool}"))
        .find_map(|path| match Command::new(&path).args(args).output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            other => Some(other),
        });
    match found {
        None => Ok(None),
        Some(Err(e)) => Err(format!("{tool}: {e}")),
        Some(Ok(out)) if out.status.success() => {
            Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
        }
        Some(Ok(out)) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.lines().next().unwrap_or("failed").trim();
            Err(format!("{tool}: {said}"))
        }
    }
}

/// Every rule and set of the packet filters on this machine.
pub fn read() -> Read {
    let mut read = Read::default();
    let mut nf_tables = false;
    for (save, tool) in [
        ("iptables-save", "iptables"),
        ("ip6tables-save", "ip6tables"),
    ] {
        match run(save, &[]) {
            Ok(None) => {}
            Ok(Some(text)) if !text.lines().any(|l| l.starts_with('*')) => {
                read.tools.push(format!("{tool} (no rules)"));
            }
            Ok(Some(text)) => {
                let backend = match text.contains("(nf_tables)") {
                    true => "nf_tables",
                    false => "legacy",
                };
                nf_tables |= backend == "nf_tables";
                read.ruleset.merge(iptables::parse(&text, tool));
                read.tools.push(format!("{tool} ({backend})"));
                if text.contains("iptables-legacy tables present") {
                    let legacy = save.replace("-save", "-legacy-save");
                    match run(&legacy, &[]) {
                        Ok(Some(text)) => {
                            read.ruleset.merge(iptables::parse(&text, tool));
                            read.tools.push(format!("{tool} (legacy)"));
                        }
                        Ok(None) => {}
                        Err(e) => read.unreadable.push(e),
                    }
                }
            }
            Err(e) => read.unreadable.push(e),
        }
    }
    match run("ipset", &["list", "-o", "save"]) {
        Ok(Some(text)) => read.ruleset.sets.extend(iptables::ipsets(&text)),
        Ok(None) => {}
        Err(e) => read.unreadable.push(e),
    }
    match run("nft", &["-j", "list", "ruleset"]) {
        Ok(Some(json)) => match serde_json::from_str(&json) {
            Ok(doc) => {
                let listing = run("nft", &["-a", "list", "ruleset"]).ok().flatten();
                let texts = nft::texts(listing.as_deref().unwrap_or_default());
                read.ruleset.merge(nft::parse(&doc, nf_tables, &texts));
                read.tools.push("nft".into());
            }
            Err(e) => read
                .unreadable
                .push(format!("nft: its JSON cannot be read: {e}")),
        },
        Ok(None) => {}
        Err(e) => read.unreadable.push(e),
    }
    read
}

/// The interface of the default route of each family: where traffic from the Internet (and so
/// from Cloudflare) comes in.
#[derive(Debug, Default, Clone)]
pub struct Outside {
    pub v4: Option<String>,
    pub v6: Option<String>,
}

impl Outside {
    pub fn read() -> Outside {
        let v4 = std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|t| default_v4(&t));
        let v6 = std::fs::read_to_string("/proc/net/ipv6_route")
            .ok()
            .and_then(|t| default_v6(&t));
        Outside { v4, v6 }
    }

    pub fn of(&self, family: Family) -> Option<&str> {
        match family {
            Family::V4 => self.v4.as_deref(),
            Family::V6 => self.v6.as_deref(),
        }
    }
}

/// `/proc/net/route`: the interface whose destination and mask are both 0.
pub fn default_v4(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })
}

/// `/proc/net/ipv6_route`: the interface of `::/0`, not the loopback's.
pub fn default_v6(table: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let all_zero = f.first().is_some_and(|d| d.bytes().all(|b| b == b'0'));
        (f.len() == 10 && all_zero && f[1] == "00" && f[9] != "lo").then(|| f[9].to_string())
    })
}

/// fail2ban's jails and the addresses each has banned now, from `fail2ban-client`; empty when
/// fail2ban is not there or not running.
pub fn fail2ban() -> Vec<(String, Vec<IpAddr>)> {
    let Ok(Some(status)) = run("fail2ban-client", &["status"]) else {
        return Vec::new();
    };
    jails(&status)
        .into_iter()
        .map(|jail| {
            let banned = run("fail2ban-client", &["status", &jail])
                .ok()
                .flatten()
                .map(|t| banned(&t))
                .unwrap_or_default();
            (jail, banned)
        })
        .collect()
}

/// `Jail list:   sshd, nginx-http-auth` of `fail2ban-client status`.
pub fn jails(status: &str) -> Vec<String> {
    status
        .lines()
        .find_map(|l| l.split_once("Jail list:"))
        .map(|(_, list)| {
            list.split([',', ' ', '\t'])
                .filter(|j| !j.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `Banned IP list: 192.0.2.1 192.0.2.2` of `fail2ban-client status JAIL`.
pub fn banned(status: &str) -> Vec<IpAddr> {
    status
        .lines()
        .find_map(|l| l.split_once("Banned IP list:"))
        .map(|(_, list)| {
            list.split_whitespace()
                .filter_map(|a| a.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
