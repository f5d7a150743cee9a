//! `nft -j list ruleset` read into a [`Ruleset`]: the `ip`, `ip6` and `inet` tables, their
//! filter chains hooked at prerouting and input, the chains those jump to, and their sets.
//! Verdict maps are read as one rule per entry. The rules' text comes from `nft -a list
//! ruleset` ([`texts`]), matched by handle.

use super::iptables::port;
use super::rules::{Chain, End, Family, Given, Hook, Members, Rule, Ruleset, Span, Test, Then};
use serde_json::Value;
use std::collections::HashMap;

/// The tables iptables-nft keeps in nftables: when `iptables-save` already gave them, they are
/// not read again here.
const XTABLES: [&str; 5] = ["filter", "raw", "mangle", "nat", "security"];

/// Where a rule is: family, table, chain, handle.
type Handle = (String, String, String, u64);

/// The families a table of this family sees, if it is one doctor reads.
fn families(family: &str) -> Option<Vec<Family>> {
    match family {
        "ip" => Some(vec![Family::V4]),
        "ip6" => Some(vec![Family::V6]),
        "inet" => Some(vec![Family::V4, Family::V6]),
        _ => None,
    }
}

/// A chain's priority, as a number or by its standard name.
fn priority(prio: &Value) -> i32 {
    if let Some(n) = prio.as_i64() {
        return i32::try_from(n).unwrap_or(0);
    }
    let text = prio.as_str().unwrap_or_default();
    let (name, offset) = match text.split_once(['+', '-']) {
        Some((name, n)) => {
            let n: i32 = n.trim().parse().unwrap_or(0);
            let sign = if text.contains('-') { -1 } else { 1 };
            (name.trim(), sign * n)
        }
        None => (text.trim(), 0),
    };
    let base = match name {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "security" => 50,
        "srcnat" => 100,
        _ => 0,
    };
    base + offset
}

/// Reads the ruleset; `skip_xtables`: iptables is nf_tables-backed and its tables were read
/// from `iptables-save`. `texts` gives each rule's text by handle ([`texts`]).
pub fn parse(doc: &Value, skip_xtables: bool, texts: &HashMap<Handle, String>) -> Ruleset {
    let items = doc["nftables"].as_array().cloned().unwrap_or_default();
    let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let skipped = |family: &str, table: &str| {
        skip_xtables && matches!(family, "ip" | "ip6") && XTABLES.contains(&table)
    };
    let mut ruleset = Ruleset::default();
    for item in &items {
        if let Some(chain) = item.get("chain") {
            let (family, table, name) = (
                field(chain, "family"),
                field(chain, "table"),
                field(chain, "name"),
            );
            let Some(families) = families(&family) else {
                continue;
            };
            if skipped(&family, &table) {
                continue;
            }
            let stage = match chain["hook"].as_str() {
                Some("prerouting") => Some(0),
                Some("input") => Some(1),
                _ => None,
            };
            let filters = chain["type"].as_str() == Some("filter");
            let hook = stage.filter(|_| filters).map(|stage| Hook {
                stage,
                priority: priority(&chain["prio"]),
            });
            ruleset.chains.push(Chain {
                key: format!("nft {family} {table} {name}"),
                tool: "nft",
                families,
                hook,
                policy_drops: hook.is_some() && chain["policy"].as_str() == Some("drop"),
                rules: Vec::new(),
            });
        } else if let Some(set) = item.get("set") {
            let (family, table, name) = (
                field(set, "family"),
                field(set, "table"),
                field(set, "name"),
            );
            if families(&family).is_none() || skipped(&family, &table) {
                continue;
            }
            let elems = set["elem"].as_array().cloned().unwrap_or_default();
            let members = match set["type"].as_str() {
                Some("ipv4_addr" | "ipv6_addr") => elems
                    .iter()
                    .map(|e| spans(member(e)))
                    .collect::<Option<Vec<Vec<Span>>>>()
                    .map_or(Members::Other("members doctor cannot read".into()), |s| {
                        Members::Addrs(s.concat())
                    }),
                Some("inet_service") => elems
                    .iter()
                    .map(|e| ports(member(e)))
                    .collect::<Option<Vec<Vec<(u16, u16)>>>>()
                    .map_or(Members::Other("members doctor cannot read".into()), |p| {
                        Members::Ports(p.concat())
                    }),
                _ => Members::Other(format!("{} members", set["type"])),
            };
            ruleset
                .sets
                .insert(format!("nft {family} {table} {name}"), members);
        }
    }
    // Rules last: every chain and set is known by then.
    for item in &items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let (family, table, chain) = (
            field(rule, "family"),
            field(rule, "table"),
            field(rule, "chain"),
        );
        let key = format!("nft {family} {table} {chain}");
        let Some(at) = ruleset.chains.iter().position(|c| c.key == key) else {
            continue;
        };
        let handle = rule["handle"].as_u64().unwrap_or(0);
        let text = texts
            .get(&(family.clone(), table.clone(), chain.clone(), handle))
            .cloned()
            .unwrap_or_else(|| format!("handle {handle}"));
        let exprs = rule["expr"].as_array().cloned().unwrap_or_default();
        let scope = Scope {
            family: &family,
            table: &table,
        };
        for (tests, then) in scope.rule(&exprs) {
            let rules = &mut ruleset.chains[at].rules;
            let number = rules.len() + 1;
            rules.push(Rule {
                text: text.clone(),
                number,
                tests,
                then,
            });
        }
    }
    ruleset
}

/// An element of a set: bare, or with its timeout as `{"elem": {"val": ...}}`.
fn member(e: &Value) -> &Value {
    e.get("elem").map_or(e, |inner| &inner["val"])
}

/// Addresses as nft gives them: `"192.0.2.1"`, `{"prefix": {"addr", "len"}}`,
/// `{"range": [a, b]}`, an anonymous `{"set": [...]}`.
fn spans(v: &Value) -> Option<Vec<Span>> {
    if let Some(s) = v.as_str() {
        return Span::parse(s).map(|s| vec![s]);
    }
    if let Some(p) = v.get("prefix") {
        let net = format!("{}/{}", p["addr"].as_str()?, p["len"].as_u64()?);
        return Span::parse(&net).map(|s| vec![s]);
    }
    if let Some(r) = v.get("range") {
        let span = Span::range(r[0].as_str()?.parse().ok()?, r[1].as_str()?.parse().ok()?);
        return span.map(|s| vec![s]);
    }
    if let Some(items) = v.get("set").and_then(Value::as_array) {
        let all: Option<Vec<Vec<Span>>> = items.iter().map(|i| spans(member(i))).collect();
        return all.map(|a| a.concat());
    }
    None
}

/// Ports as nft gives them: a number, a name, `{"range": [a, b]}`, an anonymous set.
fn ports(v: &Value) -> Option<Vec<(u16, u16)>> {
    let one = |v: &Value| -> Option<u16> {
        match v.as_u64() {
            Some(n) => u16::try_from(n).ok(),
            None => port(v.as_str()?),
        }
    };
    if let Some(r) = v.get("range") {
        return Some(vec![(one(&r[0])?, one(&r[1])?)]);
    }
    if let Some(items) = v.get("set").and_then(Value::as_array) {
        let all: Option<Vec<Vec<(u16, u16)>>> = items.iter().map(|i| ports(member(i))).collect();
        return all.map(|a| a.concat());
    }
    one(v).map(|p| vec![(p, p)])
}

/// Words of a value: a string, a list of strings, or an anonymous set of them.
fn words(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(words).collect(),
        Value::Object(o) => o.get("set").map(words).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// TCP flags by name, as bits.
fn tcp_flags(v: &Value) -> u8 {
    words(v).iter().fold(0, |all, f| {
        all | match f.as_str() {
            "fin" => 1,
            "syn" => 2,
            "rst" => 4,
            "psh" => 8,
            "ack" => 16,
            "urg" => 32,
            "ecn" => 64,
            "cwr" => 128,
            _ => 0,
        }
    })
}

/// The table a rule is in: named sets and chains are looked up there.
struct Scope<'a> {
    family: &'a str,
    table: &'a str,
}

impl Scope<'_> {
    fn named(&self, name: &str) -> String {
        format!("nft {} {} {name}", self.family, self.table)
    }

    /// A rule's statements: its tests and verdict, or one of each per entry of a verdict map.
    fn rule(&self, exprs: &[Value]) -> Vec<(Vec<Test>, Then)> {
        let mut tests = Vec::new();
        for expr in exprs {
            let Some((kind, body)) = expr.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let then = match kind.as_str() {
                "match" => {
                    tests.extend(self.test(body));
                    continue;
                }
                "accept" => Then::Accept,
                "drop" => Then::Drop,
                "reject" => Then::Reject,
                "return" => Then::Return,
                "continue" => continue,
                "jump" | "goto" => {
                    let to = self.named(body["target"].as_str().unwrap_or_default());
                    match kind.as_str() {
                        "jump" => Then::Jump(to),
                        _ => Then::Goto(to),
                    }
                }
                "queue" => Then::Unknown("a queue to a program".into()),
                "xt" => match (body["type"].as_str(), body["name"].as_str()) {
                    (Some("target"), Some("ACCEPT")) => Then::Accept,
                    (Some("target"), Some("DROP")) => Then::Drop,
                    (Some("target"), Some("REJECT")) => Then::Reject,
                    (Some("target"), Some(name)) => Then::Unknown(format!("xt target {name}")),
                    (_, name) => {
                        tests.push(Test::Unknown(format!("xt match {}", name.unwrap_or("?"))));
                        continue;
                    }
                },
                "vmap" => return self.vmap(&tests, body),
                "limit" | "quota" | "meter" | "connlimit" => {
                    tests.push(Test::Unknown(format!("a {kind}")));
                    continue;
                }
                "set" | "map" if body.get("stmt").is_some() => {
                    tests.push(Test::Unknown(format!(
                        "a rate kept in @{}",
                        words(&body["set"]).concat()
                    )));
                    continue;
                }
                // Counters, logs, marks, set updates: on to the next statement.
                _ => continue,
            };
            return vec![(tests, then)];
        }
        vec![(tests, Then::Next)]
    }

    /// `KEY vmap { k : verdict, ... }`: one rule per entry.
    fn vmap(&self, before: &[Test], body: &Value) -> Vec<(Vec<Test>, Then)> {
        let entries = body["data"]["set"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            let mut tests = before.to_vec();
            tests.push(Test::Unknown("a named verdict map".into()));
            return vec![(tests, Then::Unknown("a named verdict map".into()))];
        }
        entries
            .iter()
            .map(|entry| {
                let mut tests = before.to_vec();
                let test = serde_json::json!({"op": "==", "left": body["key"], "right": entry[0]});
                tests.extend(self.test(&test));
                let (_, then) = self
                    .rule(std::slice::from_ref(&entry[1]))
                    .pop()
                    .unwrap_or((Vec::new(), Then::Next));
                (tests, then)
            })
            .collect()
    }

    /// One `match` statement as tests.
    fn test(&self, m: &Value) -> Vec<Test> {
        let negated = m["op"].as_str() == Some("!=");
        let (left, right) = (&m["left"], &m["right"]);
        let unknown = |what: &str| vec![Test::Unknown(what.to_string())];
        let set_ref = right
            .as_str()
            .and_then(|s| s.strip_prefix('@'))
            .map(|name| self.named(name));
        if let Some(payload) = left.get("payload") {
            let (proto, field) = (
                payload["protocol"].as_str().unwrap_or_default(),
                payload["field"].as_str().unwrap_or_default(),
            );
            return match (proto, field) {
                ("ip" | "ip6", "saddr" | "daddr") => {
                    let end = match field {
                        "saddr" => End::Source,
                        _ => End::Destination,
                    };
                    let family = match proto {
                        "ip" => Family::V4,
                        _ => Family::V6,
                    };
                    let given = match (set_ref, spans(right)) {
                        (Some(set), _) => Given::Set(set),
                        (None, Some(spans)) => Given::These(spans),
                        (None, None) => return unknown(&format!("{proto} {field} {right}")),
                    };
                    vec![
                        Test::Family(family),
                        Test::Addr {
                            end,
                            given,
                            negated,
                        },
                    ]
                }
                ("ip", "protocol") | ("ip6", "nexthdr") => self.l4(right, negated),
                ("tcp" | "th", "dport") => {
                    let given = match (set_ref, ports(right)) {
                        (Some(set), _) => Given::Set(set),
                        (None, Some(p)) => Given::These(p),
                        (None, None) => return unknown(&format!("{proto} dport {right}")),
                    };
                    let mut tests = vec![Test::Port { given, negated }];
                    if proto == "tcp" {
                        tests.insert(0, Test::Tcp { negated: false });
                    }
                    tests
                }
                ("tcp", "flags") => self.flags(m["op"].as_str(), 255, right),
                ("udp" | "udplite" | "sctp" | "dccp" | "icmp" | "icmpv6", _) => vec![Test::Never],
                _ => unknown(&format!("{proto} {field}")),
            };
        }
        if let Some([value, mask]) = left.get("&").and_then(Value::as_array).map(Vec::as_slice) {
            if value["payload"]["field"].as_str() == Some("flags")
                && value["payload"]["protocol"].as_str() == Some("tcp")
            {
                return self.flags(m["op"].as_str(), tcp_flags(mask), right);
            }
        }
        if let Some(key) = left["meta"]["key"].as_str() {
            return match key {
                "l4proto" => self.l4(right, negated),
                "iifname" | "iif" => vec![Test::InIface {
                    names: words(right),
                    negated,
                }],
                "nfproto" => {
                    let v4 = words(right).iter().any(|w| w == "ipv4");
                    let v6 = words(right).iter().any(|w| w == "ipv6");
                    match (v4 != negated, v6 != negated) {
                        (true, true) => Vec::new(),
                        (true, false) => vec![Test::Family(Family::V4)],
                        (false, true) => vec![Test::Family(Family::V6)],
                        (false, false) => vec![Test::Never],
                    }
                }
                other => unknown(&format!("meta {other}")),
            };
        }
        if left["ct"]["key"].as_str() == Some("state") {
            let new = words(right).iter().any(|w| w == "new");
            return vec![Test::New(new != negated)];
        }
        let what = left
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_else(|| left.to_string());
        unknown(&format!("a {what} match"))
    }

    /// `meta l4proto`, `ip protocol`: TCP or not.
    fn l4(&self, right: &Value, negated: bool) -> Vec<Test> {
        let names = words(right);
        let numbers: Vec<u64> = match right.get("set").and_then(Value::as_array) {
            Some(items) => items.iter().filter_map(Value::as_u64).collect(),
            None => right.as_u64().into_iter().collect(),
        };
        let tcp = names.iter().any(|n| n == "tcp") || numbers.contains(&6);
        match (tcp, negated) {
            (true, negated) => vec![Test::Tcp { negated }],
            (false, false) => vec![Test::Never],
            (false, true) => Vec::new(),
        }
    }

    /// A test of TCP flags (masked by `mask`) against a SYN.
    fn flags(&self, op: Option<&str>, mask: u8, right: &Value) -> Vec<Test> {
        let (syn, want) = (2 & mask, tcp_flags(right));
        let holds = match op {
            Some("==") => syn == want,
            Some("!=") => syn != want,
            // `tcp flags syn`: the bits given are set.
            _ => syn & want == want && want != 0,
        };
        match holds {
            true => Vec::new(),
            false => vec![Test::Never],
        }
    }
}

/// Each rule's text in `nft -a list ruleset`, by family, table, chain and handle.
pub fn texts(listing: &str) -> HashMap<Handle, String> {
    let mut out = HashMap::new();
    let (mut table, mut chain): (Option<(String, String)>, Option<String>) = (None, None);
    let mut depth: usize = 0;
    for line in listing.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match (depth, words.as_slice()) {
            (0, ["table", family, name, ..]) => {
                table = Some((family.to_string(), name.to_string()));
            }
            (1, ["chain", name, ..]) => chain = Some(name.to_string()),
            (2, _) => {
                if let (Some((family, name)), Some(chain), Some((text, handle))) =
                    (&table, &chain, line.rsplit_once("# handle "))
                {
                    if let Ok(handle) = handle.trim().parse() {
                        let key = (family.clone(), name.clone(), chain.clone(), handle);
                        out.insert(key, text.trim().to_string());
                    }
                }
            }
            _ => {}
        }
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        depth = (depth + opens).saturating_sub(closes);
        if depth < 2 {
            chain = None;
        }
    }
    out
}
