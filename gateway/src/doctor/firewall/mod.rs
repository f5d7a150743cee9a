//! Would the local packet filter let Cloudflare in? The rules of iptables ([`iptables`]) and
//! nftables ([`nft`]) read into one plain [`Ruleset`], then walked as the kernel walks them for
//! a TCP SYN from each of Cloudflare's ranges to each listener's port: chains in order, jumps,
//! gotos, returns, the base chains' policies, the sets the rules name (ipsets, nft sets). Not a
//! text grep: a DROP for everything with an ACCEPT for the ranges before it lets them in.
//!
//! A range is walked whole. A test that holds for the whole range decides; one that holds for a
//! part of it (a banned address inside a range, a narrower source) is noted as a [`Stop`] of
//! that part when its rule drops or rejects; one doctor cannot evaluate (a rate limit, a match
//! it does not know) is noted as unsure and passed over. No I/O here: table-tested.

pub mod iptables;
pub mod nft;
pub mod read;

use super::report::{Finding, Layer, Verdict};
use ipnet::IpNet;
use read::Outside;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A run of addresses of one family, first to last: a CIDR range, an `a-b` range or one
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub family: Family,
    lo: u128,
    hi: u128,
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Span {
    pub fn addr(ip: IpAddr) -> Span {
        Span {
            family: Family::of(ip),
            lo: bits(ip),
            hi: bits(ip),
        }
    }

    pub fn net(net: IpNet) -> Span {
        let net = net.trunc();
        Span {
            family: Family::of(net.addr()),
            lo: bits(net.network()),
            hi: bits(net.broadcast()),
        }
    }

    /// `first` to `last`, both of one family, in order.
    pub fn range(first: IpAddr, last: IpAddr) -> Option<Span> {
        let (family, lo, hi) = (Family::of(first), bits(first), bits(last));
        (family == Family::of(last) && lo <= hi).then_some(Span { family, lo, hi })
    }

    /// Every address of a family.
    pub fn all(family: Family) -> Span {
        let hi = match family {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        Span { family, lo: 0, hi }
    }

    /// `192.0.2.1`, `192.0.2.0/24`, `192.0.2.1-192.0.2.9` (or with IPv6 addresses).
    pub fn parse(s: &str) -> Option<Span> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            return Span::range(a.trim().parse().ok()?, b.trim().parse().ok()?);
        }
        if s.contains('/') {
            return s.parse::<IpNet>().ok().map(Span::net);
        }
        s.parse::<IpAddr>().ok().map(Span::addr)
    }

    pub fn covers(&self, other: &Span) -> bool {
        self.family == other.family && self.lo <= other.lo && other.hi <= self.hi
    }

    /// The addresses both hold, if any.
    pub fn meet(&self, other: &Span) -> Option<Span> {
        let (lo, hi) = (self.lo.max(other.lo), self.hi.min(other.hi));
        (self.family == other.family && lo <= hi).then_some(Span {
            family: self.family,
            lo,
            hi,
        })
    }

    fn ip(&self, bits: u128) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            return write!(f, "{}", self.ip(self.lo));
        }
        let size = self.hi - self.lo;
        let width: u32 = match self.family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        // A CIDR range: the size is a power of two less one and the start is aligned to it.
        if size.checked_add(1).is_none_or(u128::is_power_of_two) && self.lo & size == 0 {
            let host = 128 - size.leading_zeros();
            return write!(f, "{}/{}", self.ip(self.lo), width - host);
        }
        write!(f, "{}-{}", self.ip(self.lo), self.ip(self.hi))
    }
}

/// Which end of the packet an address test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Addresses or ports, given in the rule or by the name of a set ([`Ruleset::sets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Given<T> {
    These(Vec<T>),
    Set(String),
}

/// One test of a rule; a rule matches when all of its tests hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    Addr {
        end: End,
        given: Given<Span>,
        negated: bool,
    },
    /// The protocol is TCP (or, negated, is not).
    Tcp { negated: bool },
    /// Holds for no TCP SYN (another protocol, `! --syn`, a fragment).
    Never,
    /// The destination port, as ranges first to last.
    Port {
        given: Given<(u16, u16)>,
        negated: bool,
    },
    /// The interface the packet came in on is one of these (`+` or `*` at the end: any name
    /// so beginning).
    InIface { names: Vec<String>, negated: bool },
    /// The connection's state is one that a new connection's first packet has (`NEW`), or not.
    New(bool),
    /// The packet's family (`meta nfproto`, an `ip`/`ip6` match in an `inet` table).
    Family(Family),
    /// Something doctor cannot evaluate, e.g. `xt match limit`.
    Unknown(String),
}

/// What a rule does when its tests hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    Accept,
    Drop,
    Reject,
    Return,
    /// The key of a chain ([`Chain::key`]).
    Jump(String),
    Goto(String),
    /// No verdict (a counter, a log): on to the next rule.
    Next,
    /// A verdict doctor cannot tell (a queue to a program, a verdict map it cannot read).
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// As the tool prints it, e.g. `-A INPUT -s 173.245.48.0/20 -j REJECT`.
    pub text: String,
    /// Its number in its chain, from 1.
    pub number: usize,
    pub tests: Vec<Test>,
    pub then: Then,
}

/// Where a base chain sits on the path of an incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hook {
    /// 0: prerouting, 1: input.
    pub stage: u8,
    pub priority: i32,
}

/// A chain: a base chain (a hook and a policy) or one that rules jump to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Unique in a ruleset, e.g. `iptables filter INPUT`, `nft inet fw input`.
    pub key: String,
    /// The tool whose command changes it: `iptables`, `ip6tables` or `nft`.
    pub tool: &'static str,
    /// The families it sees; an `inet` table's chains see both.
    pub families: Vec<Family>,
    pub hook: Option<Hook>,
    /// A base chain's policy: whether it drops what its rules let through.
    pub policy_drops: bool,
    pub rules: Vec<Rule>,
}

/// What a named set holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    Addrs(Vec<Span>),
    Ports(Vec<(u16, u16)>),
    /// Something else (address and port pairs, marks): tests against it cannot be evaluated.
    Other(String),
}

/// Every chain and set of the packet filters read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
    /// By the name the rules use: `ipset NAME` or `nft FAMILY TABLE NAME`.
    pub sets: HashMap<String, Members>,
}

/// The packet walked: a TCP SYN from `from` to `port`.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub from: Span,
    pub port: u16,
    /// The listener's address, when it listens on one (not on every address).
    pub to: Option<IpAddr>,
    /// The interface traffic from outside comes in on (the default route's), when known.
    pub iface: Option<&'a str>,
}

/// Who stopped a packet: a rule, or a base chain's policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blame {
    pub chain: String,
    pub tool: &'static str,
    /// `None`: the policy.
    pub rule: Option<(usize, String)>,
    /// The set whose members the rule stops, if it tests one (a ban tool's list).
    pub set: Option<String>,
    /// REJECT (Cloudflare sees a refusal: 521) rather than DROP (a timeout: 522).
    pub rejects: bool,
}

impl Blame {
    fn code(&self) -> u16 {
        if self.rejects {
            521
        } else {
            522
        }
    }

    fn describe(&self) -> String {
        let how = if self.rejects { "rejected" } else { "dropped" };
        match &self.rule {
            None => format!("{how} by the policy of {}", self.chain),
            Some((n, text)) => format!("{how} by {} rule {n} `{text}`", self.chain),
        }
    }
}

/// Addresses stopped, and by what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub who: Span,
    pub by: Blame,
}

/// How a range fared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fate {
    /// The whole range stopped (none: let in).
    pub stopped: Option<Blame>,
    /// Parts of it stopped while the rest went on.
    pub parts: Vec<Stop>,
    /// Rules that may stop it, with what doctor could not evaluate.
    pub unsure: Vec<(Blame, String)>,
}

/// How a rule's tests came out for a range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hit {
    Yes,
    No,
    /// For these parts of the range only.
    Part(Vec<Span>),
    Maybe(String),
}

/// A walk of a chain for only part of the range (what a partly matching jump sends on), or for
/// a packet that may not get there at all.
#[derive(Debug, Clone)]
enum Shadow {
    Part(Vec<Span>),
    Unsure(String),
}

enum Walked {
    Accepted,
    Stopped(Blame),
    /// Returned, or ran off the end of the chain.
    Back,
}

/// How deep jumps may go (the kernel's own limit is about the same).
const MAX_DEPTH: usize = 64;

impl Ruleset {
    /// Adds another tool's chains and sets.
    pub fn merge(&mut self, other: Ruleset) {
        self.chains.extend(other.chains);
        self.sets.extend(other.sets);
    }

    pub fn rules(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    /// How a TCP SYN from the probe's range fares on its way in: every base chain it passes,
    /// in order, must let it through.
    pub fn walk(&self, probe: &Probe) -> Fate {
        let mut bases: Vec<&Chain> = self
            .chains
            .iter()
            .filter(|c| c.hook.is_some() && c.families.contains(&probe.from.family))
            .collect();
        bases.sort_by_key(|c| c.hook);
        let mut fate = Fate::default();
        for base in bases {
            match self.chain(base, probe, None, 0, &mut fate) {
                Walked::Accepted => {}
                Walked::Stopped(blame) => {
                    fate.stopped = Some(blame);
                    break;
                }
                Walked::Back if base.policy_drops => {
                    fate.stopped = Some(Blame {
                        chain: base.key.clone(),
                        tool: base.tool,
                        rule: None,
                        set: None,
                        rejects: false,
                    });
                    break;
                }
                Walked::Back => {}
            }
        }
        fate
    }

    fn find(&self, key: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.key == key)
    }

    fn chain(
        &self,
        chain: &Chain,
        probe: &Probe,
        shadow: Option<&Shadow>,
        depth: usize,
        fate: &mut Fate,
    ) -> Walked {
        if depth > MAX_DEPTH {
            return Walked::Back;
        }
        for rule in &chain.rules {
            let blame = |rejects| Blame {
                chain: chain.key.clone(),
                tool: chain.tool,
                rule: Some((rule.number, rule.text.clone())),
                set: rule.tests.iter().find_map(|t| match t {
                    Test::Addr {
                        end: End::Source,
                        given: Given::Set(name),
                        negated: false,
                    } => Some(name.clone()),
                    _ => None,
                }),
                rejects,
            };
            let hit = match (self.hit(&rule.tests, probe), shadow) {
                (Hit::No, _) => continue,
                (hit, None) => hit,
                (Hit::Yes, Some(Shadow::Part(parts))) => Hit::Part(parts.clone()),
                (Hit::Part(these), Some(Shadow::Part(parts))) => {
                    let met = meet_all(&these, parts);
                    if met.is_empty() {
                        continue;
                    }
                    Hit::Part(met)
                }
                (_, Some(Shadow::Unsure(why))) => Hit::Maybe(why.clone()),
                (hit @ Hit::Maybe(_), Some(Shadow::Part(_))) => hit,
            };
            let stops = match &rule.then {
                Then::Drop => Some(false),
                Then::Reject => Some(true),
                _ => None,
            };
            let settles = matches!(hit, Hit::Part(_))
                && matches!(
                    rule.then,
                    Then::Accept | Then::Drop | Then::Reject | Then::Return
                );
            match hit {
                Hit::No => {}
                Hit::Yes => match &rule.then {
                    Then::Next => {}
                    Then::Accept => return Walked::Accepted,
                    Then::Drop | Then::Reject => {
                        return Walked::Stopped(blame(stops == Some(true)));
                    }
                    Then::Return => return Walked::Back,
                    Then::Jump(to) | Then::Goto(to) => {
                        let Some(next) = self.find(to) else {
                            fate.unsure.push((blame(false), format!("no chain {to}")));
                            continue;
                        };
                        match self.chain(next, probe, None, depth + 1, fate) {
                            Walked::Back if matches!(rule.then, Then::Jump(_)) => {}
                            walked => return walked,
                        }
                    }
                    Then::Unknown(why) => fate.unsure.push((blame(false), why.clone())),
                },
                Hit::Part(parts) => match (&rule.then, stops) {
                    (_, Some(rejects)) => fate.parts.extend(parts.into_iter().map(|who| Stop {
                        who,
                        by: blame(rejects),
                    })),
                    (Then::Jump(to) | Then::Goto(to), _) => {
                        if let Some(next) = self.find(to) {
                            let part = Shadow::Part(parts);
                            self.chain(next, probe, Some(&part), depth + 1, fate);
                        }
                    }
                    _ => {}
                },
                Hit::Maybe(why) => match (&rule.then, stops) {
                    (_, Some(rejects)) => fate.unsure.push((blame(rejects), why)),
                    (Then::Jump(to) | Then::Goto(to), _) => {
                        if let Some(next) = self.find(to) {
                            let unsure = Shadow::Unsure(why);
                            self.chain(next, probe, Some(&unsure), depth + 1, fate);
                        }
                    }
                    _ => {}
                },
            }
            // In a shadow walk, the part's first verdict ends it.
            if shadow.is_some() && settles {
                return Walked::Back;
            }
        }
        Walked::Back
    }

    /// All of a rule's tests for the probe.
    fn hit(&self, tests: &[Test], probe: &Probe) -> Hit {
        let mut part: Option<Vec<Span>> = None;
        let mut maybe = None;
        for test in tests {
            match self.test(test, probe) {
                Hit::No => return Hit::No,
                Hit::Yes => {}
                Hit::Part(these) => {
                    let met = match part {
                        None => these,
                        Some(earlier) => meet_all(&earlier, &these),
                    };
                    if met.is_empty() {
                        return Hit::No;
                    }
                    part = Some(met);
                }
                Hit::Maybe(why) => {
                    maybe.get_or_insert(why);
                }
            }
        }
        match (maybe, part) {
            (Some(why), _) => Hit::Maybe(why),
            (None, Some(part)) => Hit::Part(part),
            (None, None) => Hit::Yes,
        }
    }

    fn members<'s, T>(
        &'s self,
        given: &'s Given<T>,
        pick: impl Fn(&'s Members) -> Option<&'s [T]>,
    ) -> Result<&'s [T], String> {
        match given {
            Given::These(these) => Ok(these),
            Given::Set(name) => match self.sets.get(name) {
                None => Err(format!("the set {name} cannot be read")),
                Some(Members::Other(kind)) => Err(format!("the set {name} holds {kind}")),
                Some(m) => pick(m).ok_or_else(|| format!("the set {name} holds something else")),
            },
        }
    }

    fn test(&self, test: &Test, probe: &Probe) -> Hit {
        let flip = |holds: bool, negated: bool| {
            if holds != negated {
                Hit::Yes
            } else {
                Hit::No
            }
        };
        match test {
            Test::Addr {
                end,
                given,
                negated,
            } => {
                let spans = match self.members(given, |m| match m {
                    Members::Addrs(a) => Some(&a[..]),
                    _ => None,
                }) {
                    Ok(spans) => spans,
                    Err(why) => return Hit::Maybe(why),
                };
                let whole = match end {
                    End::Source => probe.from,
                    End::Destination => match probe.to {
                        Some(ip) => Span::addr(ip),
                        None => {
                            let all = Span::all(probe.from.family);
                            if spans.iter().any(|s| s.covers(&all)) {
                                return flip(true, *negated);
                            }
                            return Hit::Maybe(
                                "the destination address (the listener takes every address)".into(),
                            );
                        }
                    },
                };
                if spans.iter().any(|s| s.covers(&whole)) {
                    return flip(true, *negated);
                }
                let parts: Vec<Span> = spans.iter().filter_map(|s| s.meet(&whole)).collect();
                match (parts.is_empty(), negated) {
                    (true, _) => flip(false, *negated),
                    (false, false) => Hit::Part(parts),
                    // All but a part: the bulk of the range holds it.
                    (false, true) => Hit::Yes,
                }
            }
            Test::Tcp { negated } => flip(true, *negated),
            Test::Never => Hit::No,
            Test::Port { given, negated } => {
                match self.members(given, |m| match m {
                    Members::Ports(p) => Some(&p[..]),
                    _ => None,
                }) {
                    Ok(ports) => flip(
                        ports
                            .iter()
                            .any(|(lo, hi)| (*lo..=*hi).contains(&probe.port)),
                        *negated,
                    ),
                    Err(why) => Hit::Maybe(why),
                }
            }
            Test::InIface { names, negated } => {
                let Some(iface) = probe.iface else {
                    return Hit::Maybe(format!(
                        "the interface {} (which one faces Cloudflare is not known)",
                        names.join(", ")
                    ));
                };
                let holds = names
                    .iter()
                    .any(|name| match name.strip_suffix(['+', '*']) {
                        Some(stem) => iface.starts_with(stem),
                        None => iface == name,
                    });
                flip(holds, *negated)
            }
            Test::New(holds) => flip(*holds, false),
            Test::Family(family) => flip(*family == probe.from.family, false),
            Test::Unknown(what) => Hit::Maybe(what.clone()),
        }
    }
}

/// Every address both lists hold.
fn meet_all(a: &[Span], b: &[Span]) -> Vec<Span> {
    a.iter()
        .flat_map(|x| b.iter().filter_map(move |y| x.meet(y)))
        .collect()
}

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

    fn fix(&self, who: &str) -> String {
        match self {
            Ban::Fail2ban { jail } => format!(
                "unban it (`fail2ban-client set {jail} unbanip {who}`) and add Cloudflare's \
                 ranges to `ignoreip` in /etc/fail2ban/jail.local so it is not banned again"
            ),
            Ban::Ipset { set } => format!(
                "take it out (`ipset del {set} {who}`) and keep what fills {set} from adding \
                 Cloudflare's addresses"
            ),
            Ban::NftSet { family, table, set } => format!(
                "take it out (`nft delete element {family} {table} {set} {{ {who} }}`) and keep \
                 what fills {set} from adding Cloudflare's addresses"
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
    let mut parts: Vec<Stop> = Vec::new();
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
        for stop in fate.parts {
            if !parts.contains(&stop) {
                parts.push(stop);
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
            Some(ban) => ban.fix(&spans[0].to_string()),
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
    for stop in &parts {
        let who = stop.who.to_string();
        let (found, fix) = match Ban::of(&stop.by) {
            Some(ban) => (
                format!(
                    "{who} (Cloudflare's) is {}: {}",
                    ban.describe(),
                    stop.by.describe()
                ),
                ban.fix(&who),
            ),
            None => (
                format!(
                    "{who} (part of Cloudflare's ranges) is {}",
                    stop.by.describe()
                ),
                format!(
                    "let Cloudflare's ranges in before it: {}",
                    allow(&stop.by, stop.who.family, target.port)
                ),
            ),
        };
        out.push(Finding::fail(
            Layer::Firewall,
            &check,
            Some(stop.by.code()),
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
        let ours: Vec<&IpAddr> = banned
            .iter()
            .filter(|ip| ranges.iter().any(|r| r.covers(&Span::addr(**ip))))
            .collect();
        let Some(first) = ours.first() else {
            continue;
        };
        let named = found.iter().any(|f| {
            f.verdict == Verdict::Fail && f.found.contains(&format!("fail2ban's jail {jail}"))
        });
        if named {
            continue;
        }
        let shown: Vec<String> = ours.iter().take(4).map(ToString::to_string).collect();
        let ban = Ban::Fail2ban { jail: jail.clone() };
        out.push(Finding::warn(
            Layer::Firewall,
            format!("fail2ban jail {jail}"),
            format!(
                "{} of Cloudflare's addresses banned ({}): not on a listener's port now, but a \
                 jail that bans Cloudflare will block visitors when it covers one",
                ours.len(),
                shown.join(", ")
            ),
            ban.fix(&first.to_string()),
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

#[cfg(test)]
mod tests;
