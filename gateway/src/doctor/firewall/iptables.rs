//! `iptables-save` / `ip6tables-save` output, and `ipset list -o save`, read into a
//! [`Ruleset`]. The chains an incoming packet passes are `raw PREROUTING`, `mangle PREROUTING`,
//! `mangle INPUT` and `filter INPUT`, in that order.

use super::rules::{Chain, End, Family, Given, Hook, Members, Rule, Ruleset, Span, Test, Then};

/// The base chains on the way in: table, chain, stage, priority.
const ON_THE_WAY_IN: [(&str, &str, u8, i32); 4] = [
    ("raw", "PREROUTING", 0, -300),
    ("mangle", "PREROUTING", 0, -150),
    ("mangle", "INPUT", 1, -150),
    ("filter", "INPUT", 1, 0),
];

/// Targets that note or mark a packet and let it go on to the next rule.
const GOES_ON: [&str; 22] = [
    "LOG",
    "NFLOG",
    "ULOG",
    "MARK",
    "CONNMARK",
    "CT",
    "NOTRACK",
    "TRACE",
    "AUDIT",
    "CLASSIFY",
    "DSCP",
    "TOS",
    "TCPMSS",
    "TTL",
    "HL",
    "SET",
    "CHECKSUM",
    "TEE",
    "SECMARK",
    "CONNSECMARK",
    "IDLETIMER",
    "LED",
];

/// Reads the output of `iptables-save` (`tool` = `iptables`) or `ip6tables-save`
/// (`ip6tables`). Lines it cannot read become tests it cannot evaluate, never an error.
pub fn parse(text: &str, tool: &'static str) -> Ruleset {
    let family = match tool {
        "ip6tables" => Family::V6,
        _ => Family::V4,
    };
    let mut chains: Vec<Chain> = Vec::new();
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let name = words.next().unwrap_or_default();
            let policy = words.next().unwrap_or("-");
            let hook = ON_THE_WAY_IN
                .iter()
                .find(|(t, c, _, _)| *t == table && *c == name)
                .map(|(_, _, stage, priority)| Hook {
                    stage: *stage,
                    priority: *priority,
                });
            chains.push(Chain {
                key: format!("{tool} {table} {name}"),
                tool,
                families: vec![family],
                hook,
                policy_drops: hook.is_some() && policy == "DROP",
                rules: Vec::new(),
            });
        } else if line.starts_with("-A ") {
            let words = split(line);
            let Some(name) = words.get(1) else { continue };
            let key = format!("{tool} {table} {name}");
            let (tests, then) = rule(&words[2..], &|target| {
                chains
                    .iter()
                    .any(|c| c.key == format!("{tool} {table} {target}"))
                    .then(|| format!("{tool} {table} {target}"))
            });
            if let Some(chain) = chains.iter_mut().find(|c| c.key == key) {
                let number = chain.rules.len() + 1;
                chain.rules.push(Rule {
                    text: line.to_string(),
                    number,
                    tests,
                    then,
                });
            }
        }
    }
    Ruleset {
        chains,
        sets: Default::default(),
    }
}

/// The words of a line, as a shell would split them (iptables-save quotes comments).
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut escaped, mut started) = (false, false, false);
    for c in line.chars() {
        match c {
            _ if escaped => {
                word.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Ports as iptables prints them: `443`, `80:443`, `:1024`, `1024:`, comma-separated.
fn ports(value: &str) -> Option<Vec<(u16, u16)>> {
    value
        .split(',')
        .map(|one| match one.split_once(':') {
            Some((lo, hi)) => Some((
                if lo.is_empty() { 0 } else { port(lo)? },
                if hi.is_empty() { u16::MAX } else { port(hi)? },
            )),
            None => port(one).map(|p| (p, p)),
        })
        .collect()
}

/// A port by number, or by the names a web server's rules use.
pub(super) fn port(name: &str) -> Option<u16> {
    match name {
        "http" | "www" => Some(80),
        "https" => Some(443),
        "http-alt" => Some(8080),
        "ssh" => Some(22),
        n => n.parse().ok(),
    }
}

/// Whether a SYN (SYN set, nothing else) holds `--tcp-flags MASK COMP`: the flags of MASK
/// that are set must be exactly COMP.
fn syn_holds(mask: &str, comp: &str) -> bool {
    let flags = |list: &str| {
        list.split(',').fold(0u8, |all, flag| {
            all | match flag {
                "FIN" => 1,
                "SYN" => 2,
                "RST" => 4,
                "PSH" => 8,
                "ACK" => 16,
                "URG" => 32,
                "ALL" => 63,
                _ => 0,
            }
        })
    };
    2 & flags(mask) == flags(comp)
}

/// One rule's words after `-A CHAIN`: its tests and what it does. `chain` finds a user chain
/// of the same table by name.
fn rule(words: &[String], chain: &dyn Fn(&str) -> Option<String>) -> (Vec<Test>, Then) {
    let mut tests = Vec::new();
    let mut then = Then::Next;
    let mut negated = false;
    let mut module = String::new();
    let mut i = 0;
    // The value after the option at `i`, if any.
    let value = |i: usize| words.get(i + 1).map(String::as_str).unwrap_or_default();
    while i < words.len() {
        let word = words[i].as_str();
        if word == "!" {
            negated = true;
            i += 1;
            continue;
        }
        let mut used = 2;
        match word {
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                let end = match word.starts_with("-s") || word.starts_with("--s") {
                    true => End::Source,
                    false => End::Destination,
                };
                match value(i).split(',').map(Span::parse).collect() {
                    Some(spans) => tests.push(Test::Addr {
                        end,
                        given: Given::These(spans),
                        negated,
                    }),
                    None => tests.push(Test::Unknown(format!("the address {}", value(i)))),
                }
            }
            "--src-range" | "--dst-range" => {
                let end = match word {
                    "--src-range" => End::Source,
                    _ => End::Destination,
                };
                match Span::parse(value(i)) {
                    Some(span) => tests.push(Test::Addr {
                        end,
                        given: Given::These(vec![span]),
                        negated,
                    }),
                    None => tests.push(Test::Unknown(format!("the range {}", value(i)))),
                }
            }
            "-p" | "--protocol" => match (value(i).to_ascii_lowercase().as_str(), negated) {
                ("tcp" | "6", negated) => tests.push(Test::Tcp { negated }),
                ("all" | "0", false) => {}
                ("all" | "0", true) => tests.push(Test::Never),
                (_, false) => tests.push(Test::Never),
                (_, true) => {}
            },
            "-i" | "--in-interface" => tests.push(Test::InIface {
                names: vec![value(i).to_string()],
                negated,
            }),
            "-m" | "--match" => module = value(i).to_string(),
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" | "--ports" => {
                match ports(value(i)) {
                    Some(ranges) => tests.push(Test::Port {
                        given: Given::These(ranges),
                        negated,
                    }),
                    None => tests.push(Test::Unknown(format!("the port {}", value(i)))),
                }
            }
            "--syn" => {
                used = 1;
                if negated {
                    tests.push(Test::Never);
                }
            }
            "--tcp-flags" => {
                used = 3;
                let holds = syn_holds(value(i), value(i + 1));
                if holds == negated {
                    tests.push(Test::Never);
                }
            }
            "--ctstate" | "--state" => {
                let new = value(i).split(',').any(|s| s == "NEW");
                tests.push(Test::New(new != negated));
            }
            "--match-set" => {
                let dirs = words.get(i + 2).map(String::as_str).unwrap_or_default();
                used = 3;
                let set = Given::Set(format!("ipset {}", value(i)));
                match dirs {
                    "src" => tests.push(Test::Addr {
                        end: End::Source,
                        given: set,
                        negated,
                    }),
                    "dst" => tests.push(Test::Addr {
                        end: End::Destination,
                        given: set,
                        negated,
                    }),
                    other => tests.push(Test::Unknown(format!(
                        "the ipset {} matched on {other}",
                        value(i)
                    ))),
                }
            }
            "--dst-type" | "--src-type" => {
                let types: Vec<&str> = value(i).split(',').collect();
                let holds = match word {
                    "--dst-type" => types.iter().any(|t| matches!(*t, "LOCAL" | "UNICAST")),
                    _ => types.contains(&"UNICAST"),
                };
                if holds == negated {
                    tests.push(Test::Never);
                }
            }
            "-f" | "--fragment" => {
                used = 1;
                if !negated {
                    tests.push(Test::Never);
                }
            }
            "--comment" => {}
            "-j" | "--jump" | "-g" | "--goto" => {
                let target = value(i);
                then = match target {
                    "ACCEPT" => Then::Accept,
                    "DROP" => Then::Drop,
                    "REJECT" => Then::Reject,
                    "RETURN" => Then::Return,
                    "QUEUE" | "NFQUEUE" => {
                        Then::Unknown(format!("-j {target} (a program decides)"))
                    }
                    t if GOES_ON.contains(&t) => Then::Next,
                    t => match chain(t) {
                        Some(key) if word.starts_with("-g") || word == "--goto" => Then::Goto(key),
                        Some(key) => Then::Jump(key),
                        None => Then::Unknown(format!("-j {t}")),
                    },
                };
                // What follows is the target's own options.
                break;
            }
            w if w.starts_with('[') => used = 1,
            w => {
                // An option doctor does not know: it and its values are one unknown test.
                let mut n = 1;
                while words
                    .get(i + n)
                    .is_some_and(|v| !v.starts_with('-') && v != "!")
                {
                    n += 1;
                }
                used = n;
                let of = match module.as_str() {
                    "" => String::new(),
                    m => format!(" of -m {m}"),
                };
                tests.push(Test::Unknown(format!("{w}{of}")));
            }
        }
        negated = false;
        i += used;
    }
    (tests, then)
}

/// `ipset list -o save` read into sets named `ipset NAME`: address sets (`hash:ip`,
/// `hash:net`, `bitmap:ip`) and port sets (`bitmap:port`); any other kind is noted as such.
pub fn ipsets(text: &str) -> Vec<(String, Members)> {
    let mut sets: Vec<(String, Members)> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, kind, ..] => {
                let members = match *kind {
                    "hash:ip" | "hash:net" | "bitmap:ip" => Members::Addrs(Vec::new()),
                    "bitmap:port" => Members::Ports(Vec::new()),
                    other => Members::Other(format!("{other} members")),
                };
                sets.push((format!("ipset {name}"), members));
            }
            ["add", name, member, ..] => {
                let key = format!("ipset {name}");
                match sets.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, Members::Addrs(spans))) => match Span::parse(member) {
                        Some(span) => spans.push(span),
                        None => {
                            let why = format!("a member doctor cannot read ({member})");
                            sets.retain(|(k, _)| *k != key);
                            sets.push((key, Members::Other(why)));
                        }
                    },
                    Some((_, Members::Ports(p))) => {
                        if let Some(ranges) = ports(&member.replace('-', ":")) {
                            p.extend(ranges);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    sets
}
