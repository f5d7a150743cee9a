//! What the walk of the packet filter means for each listener port: the ranges stopped and by
//! what (a rule, a policy, a ban tool's set or chain), with the command that lets them in; what
//! may stop them; fail2ban's bans that no listener port meets now; what cannot be seen from
//! here. Plain functions, table-tested with the rest of the firewall.

use super::read::Outside;
use super::rules::{Blame, Family, Probe, Ruleset, Span, Stop};
use crate::doctor::report::{Finding, Layer, Verdict};
use std::net::IpAddr;

/// A ban tool that fills the set or chain a stop came from: fail2ban's jails (`f2b-JAIL`
/// chains and ipsets, `addr-set-JAIL` nft sets) or another tool's set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ban {
    Fail2ban {
        jail: String,
    },
    Ipset {
        set: String,
    },
    NftSet {
        family: String,
        table: String,
        set: String,
    },
}

impl Ban {
    pub fn of(by: &Blame) -> Option<Ban> {
        let chain = by.chain.rsplit(' ').next().unwrap_or_default();
        let Some(set) = by.set.as_deref() else {
            // fail2ban's iptables actions: a chain per jail.
            let jail = chain.strip_prefix("f2b-").filter(|_| by.tool != "nft")?;
            return Some(Ban::Fail2ban { jail: jail.into() });
        };
        let mut words = set.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("ipset"), Some(name), None, None) => Some(match name.strip_prefix("f2b-") {
                Some(jail) => Ban::Fail2ban { jail: jail.into() },
                None => Ban::Ipset { set: name.into() },
            }),
            (Some("nft"), Some(family), Some(table), Some(name)) => {
                Some(match name.strip_prefix("addr-set-") {
                    Some(jail) if table.starts_with("f2b") => Ban::Fail2ban { jail: jail.into() },
                    _ => Ban::NftSet {
                        family: family.into(),
                        table: table.into(),
                        set: name.into(),
                    },
                })
            }
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Ban::Fail2ban { jail } => format!("banned by fail2ban's jail {jail}"),
            Ban::Ipset { set } => format!("in the ipset {set}"),
            Ban::NftSet { family, table, set } => format!("in the nft set {family} {table} {set}"),
        }
    }

    /// How to take `who` (one or more addresses) out, and keep them out.
    fn fix(&self, who: &[Span]) -> String {
        let all: Vec<String> = who.iter().map(Span::to_string).collect();
        let (one, them) = match who.len() {
            1 => ("it", "it is"),
            _ => ("them", "they are"),
        };
        let each = if who.len() > 1 { ", for each" } else { "" };
        match self {
            Ban::Fail2ban { jail } => format!(
                "unban {one} (`fail2ban-client set {jail} unbanip {}`) and add Cloudflare's \
                 ranges to `ignoreip` in /etc/fail2ban/jail.local so {them} not banned again",
                all.join(" ")
            ),
            Ban::Ipset { set } => format!(
                "take {one} out (`ipset del {set} {}`{each}) and keep what fills {set} from \
                 adding Cloudflare's addresses",
                all[0]
            ),
            Ban::NftSet { family, table, set } => format!(
                "take {one} out (`nft delete element {family} {table} {set} {{ {} }}`) and keep \
                 what fills {set} from adding Cloudflare's addresses",
                all.join(", ")
            ),
        }
    }
}

/// A listener port to judge, with the address it listens on (none: every address) and the
/// families it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub port: u16,
    pub to: Option<IpAddr>,
    pub families: Vec<Family>,
}

/// How to let a family's ranges in on a port, before what stops them.
fn allow(by: &Blame, family: Family, port: u16) -> String {
    let mut words = by.chain.split(' ');
    let _tool = words.next();
    match by.tool {
        "nft" => {
            let (fam, table, chain) = (
                words.next().unwrap_or("inet"),
                words.next().unwrap_or("filter"),
                words.next().unwrap_or("input"),
            );
            let ip = match family {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            let at = match &by.rule {
                Some((n, _)) => format!(" (before rule {n}: `nft -a list chain {fam} {table} {chain}` shows its handle)"),
                None => String::new(),
            };
            format!(
                "`nft insert rule {fam} {table} {chain} {ip} saddr {{ <Cloudflare's {} ranges> }} tcp dport {port} accept`{at}",
                family.as_str()
            )
        }
        tool => {
            let (table, chain) = (
                words.next().unwrap_or("filter"),
                words.next().unwrap_or("INPUT"),
            );
            let at = by.rule.as_ref().map_or(1, |(n, _)| *n);
            format!(
                "`{tool} -t {table} -I {chain} {at} -p tcp --dport {port} -s <range> -j ACCEPT` for each of Cloudflare's {} ranges",
                family.as_str()
            )
        }
    }
}

/// The findings for one listener port: what stops Cloudflare's ranges, part of them, or may;
/// or that all of them get in. `ranges` are Cloudflare's ranges, `rules` says what was read.
pub fn judge(
    ruleset: &Ruleset,
    target: &Target,
    ranges: &[Span],
    outside: &Outside,
) -> Vec<Finding> {
    let check = format!("port {} from Cloudflare", target.port);
    let mut stopped: Vec<(Blame, Vec<Span>)> = Vec::new();
    let mut parts: Vec<(Blame, Vec<Span>, Vec<usize>)> = Vec::new();
    let mut unsure: Vec<(Blame, String)> = Vec::new();
    let mut walked = 0;
    for range in ranges
        .iter()
        .filter(|r| target.families.contains(&r.family))
    {
        walked += 1;
        let fate = ruleset.walk(&Probe {
            from: *range,
            port: target.port,
            to: target.to,
            iface: outside.of(range.family),
        });
        if let Some(by) = fate.stopped {
            let alike =
                |(b, spans): &&mut (Blame, Vec<Span>)| *b == by && spans[0].family == range.family;
            match stopped.iter_mut().find(alike) {
                Some((_, spans)) => spans.push(*range),
                None => stopped.push((by, vec![*range])),
            }
        }
        for Stop { who, by } in fate.parts {
            // A ban tool's rules (one per address, in fail2ban's chains) are told as one.
            let number = by.rule.as_ref().map_or(0, |(n, _)| *n);
            let alike = |(b, _, _): &&mut (Blame, Vec<Span>, Vec<usize>)| {
                *b == by
                    || (b.chain == by.chain
                        && b.rejects == by.rejects
                        && Ban::of(b).is_some()
                        && Ban::of(b) == Ban::of(&by))
            };
            match parts.iter_mut().find(alike) {
                Some((_, spans, _)) if spans.contains(&who) => {}
                Some((_, spans, rules)) => {
                    spans.push(who);
                    if !rules.contains(&number) {
                        rules.push(number);
                    }
                }
                None => parts.push((by, vec![who], vec![number])),
            }
        }
        for one in fate.unsure {
            if !unsure.contains(&one) {
                unsure.push(one);
            }
        }
    }
    let mut out = Vec::new();
    for (by, spans) in &stopped {
        let family = spans[0].family;
        let of = ranges.iter().filter(|r| r.family == family).count();
        let which = match spans.len() {
            n if n == of => format!("all {n} of Cloudflare's {} ranges are", family.as_str()),
            1 => format!("{} (Cloudflare's) is", spans[0]),
            n => format!(
                "{n} of Cloudflare's {of} {} ranges ({}) are",
                family.as_str(),
                list(spans)
            ),
        };
        let fix = match Ban::of(by) {
            Some(ban) => ban.fix(spans),
            None => format!("let them in before it: {}", allow(by, family, target.port)),
        };
        out.push(Finding::fail(
            Layer::Firewall,
            &check,
            Some(by.code()),
            format!("{which} {}", by.describe()),
            fix,
        ));
    }
    for (by, spans, rules) in &parts {
        let (who, verb) = match spans.len() {
            1 => (spans[0].to_string(), "is"),
            n => (format!("{n} addresses ({})", list(spans)), "are"),
        };
        let how = match (rules.len(), by.rejects) {
            (1, _) => by.describe(),
            (n, true) => format!("rejected by {} ({n} rules)", by.chain),
            (n, false) => format!("dropped by {} ({n} rules)", by.chain),
        };
        let (found, fix) = match Ban::of(by) {
            Some(ban) => (
                format!("{who} (Cloudflare's) {verb} {}: {}", ban.describe(), how),
                ban.fix(spans),
            ),
            None => (
                format!("{who} (part of Cloudflare's ranges) {verb} {}", how),
                format!(
                    "let Cloudflare's ranges in before it: {}",
                    allow(by, spans[0].family, target.port)
                ),
            ),
        };
        out.push(Finding::fail(
            Layer::Firewall,
            &check,
            Some(by.code()),
            found,
            fix,
        ));
    }
    for (by, why) in &unsure {
        out.push(Finding::warn(
            Layer::Firewall,
            &check,
            format!(
                "Cloudflare's traffic may be {}: doctor cannot evaluate {why}",
                by.describe()
            ),
            "check that rule by hand, or accept Cloudflare's ranges before it",
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            Layer::Firewall,
            &check,
            format!(
                "all {walked} of Cloudflare's ranges get in ({} rules in {} chains walked)",
                ruleset.rules(),
                ruleset.chains.len()
            ),
        ));
    }
    out
}

/// What could be read of the packet filter: nothing to read is fine, a tool that would not
/// say is a warning (doctor is not root, most likely).
pub fn judge_reading(tools: &[String], unreadable: &[String]) -> Option<Finding> {
    let check = "packet filter";
    match (tools.is_empty(), unreadable.is_empty()) {
        (true, true) => Some(Finding::ok(
            Layer::Firewall,
            check,
            "no iptables, nft or ipset here: nothing on this machine filters what comes in",
        )),
        (_, false) => Some(Finding::warn(
            Layer::Firewall,
            check,
            format!("cannot read {}", unreadable.join("; ")),
            "run doctor as root: reading the rules needs CAP_NET_ADMIN",
        )),
        (false, true) => None,
    }
}

/// Cloudflare's addresses fail2ban has banned, jail by jail. A ban the firewall findings already
/// name is not told twice; one that blocks none of the listeners' ports now is a warning.
pub fn judge_bans(
    jails: &[(String, Vec<IpAddr>)],
    ranges: &[Span],
    found: &[Finding],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (jail, banned) in jails {
        let ours: Vec<Span> = banned
            .iter()
            .map(|ip| Span::addr(*ip))
            .filter(|ip| ranges.iter().any(|r| r.covers(ip)))
            .collect();
        if ours.is_empty() {
            continue;
        }
        let named = found.iter().any(|f| {
            f.verdict == Verdict::Fail && f.found.contains(&format!("fail2ban's jail {jail}"))
        });
        if named {
            continue;
        }
        let ban = Ban::Fail2ban { jail: jail.clone() };
        out.push(Finding::warn(
            Layer::Firewall,
            format!("fail2ban jail {jail}"),
            format!(
                "{} of Cloudflare's addresses banned ({}): not on a listener's port now, but a \
                 jail that bans Cloudflare will block visitors when it covers one",
                ours.len(),
                list(&ours)
            ),
            ban.fix(&ours),
        ));
    }
    out
}

/// What cannot be seen from inside: the cloud's security groups, a hosting firewall. The
/// ranges to allow are printed whole.
pub fn beyond(ranges: &[Span], ports: &[u16]) -> Finding {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ranges: Vec<String> = ranges.iter().map(Span::to_string).collect();
    Finding::ok(
        Layer::Firewall,
        "outside this machine",
        format!(
            "cloud security groups and hosting firewalls cannot be seen from here; they must let \
             TCP {} in from Cloudflare's {} ranges: {}",
            ports.join(", "),
            ranges.len(),
            ranges.join(" ")
        ),
    )
}

/// At most four of them, then how many more.
fn list(spans: &[Span]) -> String {
    let mut shown: Vec<String> = spans.iter().take(4).map(Span::to_string).collect();
    if spans.len() > 4 {
        shown.push(format!("{} more", spans.len() - 4));
    }
    shown.join(", ")
}
