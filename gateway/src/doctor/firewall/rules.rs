//! The packet filter as one plain [`Ruleset`]: chains of rules (tests and a verdict) and
//! named sets, read from iptables or nftables; and its walk, as the kernel walks it, for a TCP
//! SYN from a range of addresses to a port ([`Ruleset::walk`]).
//!
//! A range is walked whole. A test that holds for the whole range decides; one that holds for a
//! part of it (a banned address inside a range, a narrower source) is noted as a [`Stop`] of
//! that part when its rule drops or rejects; one doctor cannot evaluate (a rate limit, a match
//! it does not know) is noted as unsure and passed over. No I/O here.

use ipnet::IpNet;
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

    pub fn as_str(self) -> &'static str {
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
    pub fn code(&self) -> u16 {
        if self.rejects {
            521
        } else {
            522
        }
    }

    pub fn describe(&self) -> String {
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
