use super::read::{banned, default_v4, default_v6, jails, Outside};
use super::rules::{Given, Test};
use super::*;
use crate::doctor::report::{Finding, Layer, Verdict};
use std::collections::HashMap;
use std::net::IpAddr;

/// Cloudflare's ranges as doctor walks them.
fn cloudflare() -> Vec<Span> {
    crate::trust::cloudflare()
        .into_iter()
        .map(Span::net)
        .collect()
}

/// An `iptables-save` dump: a filter table with INPUT's policy, the user chains named, and
/// the `-A` lines given.
fn saved(policy: &str, chains: &[&str], rules: &[&str]) -> String {
    let mut text = format!("*filter\n:INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n");
    for c in chains {
        text.push_str(&format!(":{c} - [0:0]\n"));
    }
    for r in rules {
        text.push_str(r);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

fn port(port: u16) -> Target {
    Target {
        port,
        to: None,
        families: vec![Family::V4],
    }
}

fn findings(ruleset: &Ruleset, target: &Target, outside: &Outside) -> Vec<Finding> {
    judge(ruleset, target, &cloudflare(), outside)
}

/// (verdict, code, found) of each finding, for the tables below.
fn summary(found: &[Finding]) -> Vec<(Verdict, Option<u16>, String)> {
    found
        .iter()
        .map(|f| (f.verdict, f.code, f.found.clone()))
        .collect()
}

#[test]
fn spans_parse_and_print() {
    let cases = [
        ("192.0.2.1", Some("192.0.2.1")),
        ("192.0.2.0/24", Some("192.0.2.0/24")),
        ("192.0.2.7/24", Some("192.0.2.0/24")),
        ("10.0.0.1-10.0.0.9", Some("10.0.0.1-10.0.0.9")),
        ("10.0.0.0-10.0.0.255", Some("10.0.0.0/24")),
        ("0.0.0.0/0", Some("0.0.0.0/0")),
        ("::/0", Some("::/0")),
        ("2400:cb00::/32", Some("2400:cb00::/32")),
        ("10.0.0.9-10.0.0.1", None),
        ("10.0.0.1-::1", None),
        ("nonsense", None),
    ];
    for (text, shown) in cases {
        assert_eq!(
            Span::parse(text).map(|s| s.to_string()).as_deref(),
            shown,
            "{text}"
        );
    }
    let net = |s| Span::parse(s).expect("a span");
    assert!(net("104.16.0.0/13").covers(&net("104.16.0.9")));
    assert!(!net("104.16.0.9").covers(&net("104.16.0.0/13")));
    assert_eq!(
        net("10.0.0.0/24").meet(&net("10.0.0.128-10.0.1.5")),
        Some(net("10.0.0.128/25"))
    );
    assert_eq!(net("10.0.0.0/24").meet(&net("::/0")), None);
}

/// Each row: the rules of INPUT (policy, user chains, lines), the port, and what doctor says
/// of it: the verdicts, codes and the words each finding must hold.
#[test]
fn iptables_walked_as_the_kernel_would() {
    struct Case {
        name: &'static str,
        policy: &'static str,
        chains: &'static [&'static str],
        rules: &'static [&'static str],
        port: u16,
        want: &'static [(Verdict, Option<u16>, &'static str)],
    }
    const OK: (Verdict, Option<u16>, &str) =
        (Verdict::Ok, None, "all 15 of Cloudflare's ranges get in");
    let cases = [
        Case {
            name: "nothing filters",
            policy: "ACCEPT",
            chains: &[],
            rules: &[],
            port: 443,
            want: &[OK],
        },
        Case {
            name: "a DROP policy with nothing let in",
            policy: "DROP",
            chains: &[],
            rules: &["-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"],
            port: 443,
            want: &[(
                Verdict::Fail,
                Some(522),
                "all 15 of Cloudflare's IPv4 ranges are dropped by the policy of iptables filter INPUT",
            )],
        },
        Case {
            name: "one range rejected on 443",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT -s 173.245.48.0/20 -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset"],
            port: 443,
            want: &[(
                Verdict::Fail,
                Some(521),
                "173.245.48.0/20 (Cloudflare's) is rejected by iptables filter INPUT rule 1",
            )],
        },
        Case {
            name: "the same rule leaves port 80 alone",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT -s 173.245.48.0/20 -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset"],
            port: 80,
            want: &[OK],
        },
        Case {
            name: "DROP everything, with the ranges accepted before it",
            policy: "ACCEPT",
            chains: &[],
            rules: &[
                "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A INPUT -s 173.245.48.0/20,103.21.244.0/22,103.22.200.0/22,103.31.4.0/22,141.101.64.0/18,108.162.192.0/18,190.93.240.0/20,188.114.96.0/20,197.234.240.0/22,198.41.128.0/17,162.158.0.0/15,104.16.0.0/13,104.24.0.0/14,172.64.0.0/13,131.0.72.0/22 -p tcp -m multiport --dports 80,443 -j ACCEPT",
                "-A INPUT -s 0.0.0.0/0 -j DROP",
            ],
            port: 443,
            want: &[OK],
        },
        Case {
            name: "some ranges accepted, the rest to the policy",
            policy: "DROP",
            chains: &[],
            rules: &[
                "-A INPUT -s 173.245.48.0/20 -p tcp --dport 443 -j ACCEPT",
                "-A INPUT -s 104.16.0.0/12 -p tcp --dport 443 -j ACCEPT",
            ],
            port: 443,
            want: &[(
                Verdict::Fail,
                Some(522),
                "12 of Cloudflare's 15 IPv4 ranges (103.21.244.0/22, 103.22.200.0/22, 103.31.4.0/22, 141.101.64.0/18, 8 more) are dropped by the policy",
            )],
        },
        Case {
            name: "a new connection dropped; an established one's rule does not touch a SYN",
            policy: "ACCEPT",
            chains: &[],
            rules: &[
                "-A INPUT -m conntrack --ctstate ESTABLISHED -j DROP",
                "-A INPUT -p tcp -m state --state NEW -m tcp --dport 443 -j DROP",
            ],
            port: 443,
            want: &[(Verdict::Fail, Some(522), "all 15 of Cloudflare's IPv4 ranges are dropped by iptables filter INPUT rule 2")],
        },
        Case {
            name: "not-SYN, UDP, fragments and ESTABLISHED rules leave a SYN alone",
            policy: "ACCEPT",
            chains: &[],
            rules: &[
                "-A INPUT -p tcp ! --syn -j DROP",
                "-A INPUT -p tcp --tcp-flags SYN,ACK SYN,ACK -j DROP",
                "-A INPUT -p udp --dport 443 -j DROP",
                "-A INPUT -f -j DROP",
                "-A INPUT -m state --state INVALID -j DROP",
                "-A INPUT -p tcp --tcp-flags ALL NONE -j DROP",
            ],
            port: 443,
            want: &[OK],
        },
        Case {
            name: "a negated source drops everyone else, Cloudflare included",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT ! -s 10.0.0.0/8 -p tcp --dport 443 -j DROP"],
            port: 443,
            want: &[(Verdict::Fail, Some(522), "all 15 of Cloudflare's IPv4 ranges are dropped by iptables filter INPUT rule 1")],
        },
        Case {
            name: "fail2ban's chain bans one Cloudflare address",
            policy: "ACCEPT",
            chains: &["f2b-nginx-http-auth"],
            rules: &[
                "-A INPUT -p tcp -m multiport --dports 80,443 -j f2b-nginx-http-auth",
                "-A f2b-nginx-http-auth -s 104.16.0.9/32 -j REJECT --reject-with icmp-port-unreachable",
                "-A f2b-nginx-http-auth -s 198.51.100.7/32 -j REJECT --reject-with icmp-port-unreachable",
                "-A f2b-nginx-http-auth -j RETURN",
            ],
            port: 443,
            want: &[(
                Verdict::Fail,
                Some(521),
                "104.16.0.9 (Cloudflare's) is banned by fail2ban's jail nginx-http-auth: rejected by iptables filter f2b-nginx-http-auth rule 1",
            )],
        },
        Case {
            name: "a jail on ssh does not block the web ports",
            policy: "ACCEPT",
            chains: &["f2b-sshd"],
            rules: &[
                "-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd",
                "-A f2b-sshd -s 104.16.0.9/32 -j REJECT",
                "-A f2b-sshd -j RETURN",
            ],
            port: 443,
            want: &[OK],
        },
        Case {
            name: "several banned addresses: one finding",
            policy: "ACCEPT",
            chains: &["f2b-web"],
            rules: &[
                "-A INPUT -p tcp -j f2b-web",
                "-A f2b-web -s 104.16.0.9/32 -j REJECT",
                "-A f2b-web -s 172.64.0.7/32 -j REJECT",
                "-A f2b-web -s 104.16.0.10/32 -j REJECT",
                "-A f2b-web -j RETURN",
            ],
            port: 443,
            want: &[(Verdict::Fail, Some(521), "3 addresses (104.16.0.9, 104.16.0.10, 172.64.0.7) (Cloudflare's) are banned by fail2ban's jail web: rejected by iptables filter f2b-web (3 rules)")],
        },
        Case {
            name: "an ipset a ban tool fills",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT -m set --match-set blocklist src -j DROP"],
            port: 443,
            want: &[(Verdict::Fail, Some(522), "108.162.192.5 (Cloudflare's) is in the ipset blocklist: dropped by iptables filter INPUT rule 1")],
        },
        Case {
            name: "fail2ban's ipset action",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT -p tcp -m multiport --dports 80,443 -m set --match-set f2b-web src -j REJECT --reject-with icmp-port-unreachable"],
            port: 80,
            want: &[(Verdict::Fail, Some(521), "172.64.1.1 (Cloudflare's) is banned by fail2ban's jail web")],
        },
        Case {
            name: "a set holding a whole range",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT -m set --match-set nets src -j DROP"],
            port: 443,
            want: &[(Verdict::Fail, Some(522), "131.0.72.0/22 (Cloudflare's) is dropped by iptables filter INPUT rule 1")],
        },
        Case {
            name: "a set that is not there",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT -m set --match-set gone src -j DROP"],
            port: 443,
            want: &[(Verdict::Warn, None, "doctor cannot evaluate the set ipset gone cannot be read")],
        },
        Case {
            name: "a rate limit doctor cannot evaluate",
            policy: "ACCEPT",
            chains: &[],
            rules: &["-A INPUT -p tcp --dport 443 -m hashlimit --hashlimit-above 50/sec --hashlimit-mode srcip --hashlimit-name web -j DROP"],
            port: 443,
            want: &[(Verdict::Warn, None, "may be dropped by iptables filter INPUT rule 1")],
        },
        Case {
            name: "a user chain returns; a goto's chain returns to the caller's caller",
            policy: "DROP",
            chains: &["web", "more", "last"],
            rules: &[
                "-A INPUT -p tcp --dport 443 -j web",
                "-A INPUT -p tcp --dport 443 -j ACCEPT",
                "-A web -s 10.0.0.0/8 -j RETURN",
                "-A web -g more",
                "-A web -j DROP",
                "-A more -s 192.0.2.0/24 -j DROP",
            ],
            port: 443,
            want: &[OK],
        },
        Case {
            name: "a jump into a loop ends",
            policy: "ACCEPT",
            chains: &["a", "b"],
            rules: &["-A INPUT -j a", "-A a -j b", "-A b -j a"],
            port: 443,
            want: &[OK],
        },
        Case {
            name: "a log rule goes on; a queue cannot be told",
            policy: "ACCEPT",
            chains: &[],
            rules: &[
                "-A INPUT -p tcp --dport 443 -j LOG --log-prefix \"web in: \"",
                "-A INPUT -p tcp --dport 443 -j NFQUEUE --queue-num 1",
            ],
            port: 443,
            want: &[(Verdict::Warn, None, "-j NFQUEUE (a program decides)")],
        },
    ];
    let ipsets = "create blocklist hash:ip family inet hashsize 1024 maxelem 65536\n\
                  add blocklist 198.51.100.1\nadd blocklist 108.162.192.5\n\
                  create f2b-web hash:ip family inet\nadd f2b-web 172.64.1.1\n\
                  create nets hash:net family inet\nadd nets 131.0.72.0/22\n";
    for case in cases {
        let mut ruleset = iptables::parse(&saved(case.policy, case.chains, case.rules), "iptables");
        ruleset.sets.extend(iptables::ipsets(ipsets));
        let found = findings(&ruleset, &port(case.port), &Outside::default());
        let got = summary(&found);
        assert_eq!(got.len(), case.want.len(), "{}: {got:#?}", case.name);
        for ((verdict, code, text), want) in got.iter().zip(case.want) {
            assert_eq!(
                (*verdict, *code),
                (want.0, want.1),
                "{}: {got:#?}",
                case.name
            );
            assert!(
                text.contains(want.2),
                "{}: {text:?} lacks {:?}",
                case.name,
                want.2
            );
        }
    }
}

#[test]
fn fixes_name_the_command() {
    let ruleset = iptables::parse(
        &saved(
            "ACCEPT",
            &["f2b-nginx"],
            &[
                "-A INPUT -p tcp -j f2b-nginx",
                "-A INPUT -s 173.245.48.0/20 -p tcp --dport 443 -j REJECT",
                "-A f2b-nginx -s 104.16.0.9/32 -j REJECT",
            ],
        ),
        "iptables",
    );
    let found = findings(&ruleset, &port(443), &Outside::default());
    let fixes: Vec<&str> = found.iter().filter_map(|f| f.fix.as_deref()).collect();
    assert!(
        fixes[0]
            .contains("`iptables -t filter -I INPUT 2 -p tcp --dport 443 -s <range> -j ACCEPT`"),
        "{fixes:?}"
    );
    assert!(
        fixes[1].contains("`fail2ban-client set nginx unbanip 104.16.0.9`")
            && fixes[1].contains("ignoreip"),
        "{fixes:?}"
    );
}

#[test]
fn the_interface_facing_cloudflare() {
    let ruleset = iptables::parse(
        &saved(
            "DROP",
            &[],
            &[
                "-A INPUT -i lo -j ACCEPT",
                "-A INPUT -i eth+ -p tcp --dport 443 -j ACCEPT",
            ],
        ),
        "iptables",
    );
    let outside = |name: Option<&str>| Outside {
        v4: name.map(Into::into),
        v6: None,
    };
    let verdicts = |o: &Outside| -> Vec<Verdict> {
        findings(&ruleset, &port(443), o)
            .iter()
            .map(|f| f.verdict)
            .collect()
    };
    assert_eq!(verdicts(&outside(Some("eth0"))), [Verdict::Ok]);
    assert_eq!(verdicts(&outside(Some("ens3"))), [Verdict::Fail]);
    // Not known: the ACCEPT may not apply, so the policy drops.
    assert_eq!(verdicts(&outside(None)), [Verdict::Fail]);
}

#[test]
fn destinations_and_families() {
    let ruleset = iptables::parse(
        &saved(
            "DROP",
            &[],
            &["-A INPUT -d 192.0.2.10/32 -p tcp --dport 443 -j ACCEPT"],
        ),
        "iptables",
    );
    let to = |ip: Option<&str>| Target {
        port: 443,
        to: ip.map(|i| i.parse().expect("an address")),
        families: vec![Family::V4, Family::V6],
    };
    let got = |t: &Target| summary(&findings(&ruleset, t, &Outside::default()));
    // The listener's own address: accepted.
    assert_eq!(got(&to(Some("192.0.2.10")))[0].0, Verdict::Ok);
    // Another address: the policy.
    assert_eq!(got(&to(Some("192.0.2.11")))[0].1, Some(522));
    // Every address: the accept may not apply, and the policy drops.
    assert_eq!(got(&to(None))[0].0, Verdict::Fail);
    // IPv6 ranges pass iptables (ip6tables was not read): 7 of them in.
    let v6 = Target {
        families: vec![Family::V6],
        ..to(None)
    };
    assert_eq!(
        got(&v6)[0].2,
        "all 7 of Cloudflare's ranges get in (1 rules in 2 chains walked)"
    );
}

#[test]
fn ip6tables_and_iptables_together() {
    let mut ruleset = iptables::parse(&saved("ACCEPT", &[], &[]), "iptables");
    ruleset.merge(iptables::parse(
        &saved(
            "DROP",
            &[],
            &["-A INPUT -s 2400:cb00::/32 -p tcp --dport 443 -j ACCEPT"],
        ),
        "ip6tables",
    ));
    let target = Target {
        port: 443,
        to: None,
        families: vec![Family::V4, Family::V6],
    };
    let got = summary(&findings(&ruleset, &target, &Outside::default()));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0]
            .2
            .starts_with("6 of Cloudflare's 7 IPv6 ranges (2606:4700::/32,")
            && got[0]
                .2
                .ends_with("dropped by the policy of ip6tables filter INPUT"),
        "{got:#?}"
    );
}

fn nft_fixture() -> Ruleset {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("testdata/nft-ruleset.json")).expect("JSON");
    let texts = nft::texts(include_str!("testdata/nft-ruleset.txt"));
    nft::parse(&doc, true, &texts)
}

#[test]
fn nft_rules_sets_and_verdict_maps() {
    let ruleset = nft_fixture();
    let keys: Vec<&str> = ruleset.chains.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "nft inet fw input",
            "nft inet fw extra",
            "nft inet f2b-table f2b-chain"
        ]
    );
    // The verdict map became three rules, one per state.
    assert_eq!(
        ruleset.chains[0].rules[0].text,
        "ct state vmap { invalid : drop, established : accept, related : accept }"
    );
    assert_eq!(ruleset.chains[0].rules.len(), 3 + 8);
    let target = |port| Target {
        port,
        to: None,
        families: vec![Family::V4, Family::V6],
    };
    let table = [
        (
            443,
            vec![
                (Verdict::Fail, Some(522), "13 of Cloudflare's 15 IPv4 ranges (103.22.200.0/22, 103.31.4.0/22, 141.101.64.0/18, 108.162.192.0/18, 9 more) are dropped by the policy of nft inet fw input"),
                (Verdict::Fail, Some(522), "6 of Cloudflare's 7 IPv6 ranges (2606:4700::/32, 2803:f800::/32, 2405:b500::/32, 2405:8100::/32, 2 more) are dropped by nft inet fw extra rule 2 `drop`"),
                (Verdict::Fail, Some(521), "104.16.0.9 (Cloudflare's) is banned by fail2ban's jail nginx: rejected by nft inet f2b-table f2b-chain rule 1 `tcp dport { 80, 443 } ip saddr @addr-set-nginx reject with icmp port-unreachable`"),
            ],
        ),
        (
            8050,
            vec![(Verdict::Fail, Some(521), "all 15 of Cloudflare's IPv4 ranges are rejected by nft inet fw input rule 10 `tcp dport 8000-8100 reject with tcp reset`"),
                 (Verdict::Fail, Some(521), "all 7 of Cloudflare's IPv6 ranges are rejected by nft inet fw input rule 10")],
        ),
    ];
    for (port, want) in table {
        let got = summary(&findings(&ruleset, &target(port), &Outside::default()));
        assert_eq!(got.len(), want.len(), "{port}: {got:#?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, g.1), (w.0, w.1), "{port}: {got:#?}");
            assert!(g.2.starts_with(w.2), "{port}: {:?} is not {:?}", g.2, w.2);
        }
    }
    // The fix names nft and the chain.
    let found = findings(&ruleset, &target(443), &Outside::default());
    assert!(
        found[0]
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("`nft insert rule inet fw input ip saddr { <Cloudflare's IPv4 ranges> } tcp dport 443 accept`")),
        "{found:#?}"
    );
    assert!(found[2]
        .fix
        .as_deref()
        .is_some_and(|f| f.contains("fail2ban-client set nginx unbanip 104.16.0.9")));
}

#[test]
fn nft_leaves_iptables_tables_to_iptables_save() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("testdata/nft-iptables-compat.json")).expect("JSON");
    let texts = HashMap::new();
    assert!(nft::parse(&doc, true, &texts).chains.is_empty());
    // Without iptables-save to read them, they are read here (their xt matches unsure).
    let read = nft::parse(&doc, false, &texts);
    assert_eq!(read.chains[0].key, "nft ip filter INPUT");
    assert!(read.chains[0].policy_drops);
    assert!(read.chains[0].rules.iter().any(|r| r
        .tests
        .contains(&Test::Unknown("xt match multiport".into()))));
}

#[test]
fn nft_priorities() {
    use serde_json::json;
    let cases = [
        (json!(0), 0),
        (json!(-1), -1),
        (json!("filter"), 0),
        (json!("raw"), -300),
        (json!("mangle - 5"), -155),
        (json!("filter + 10"), 10),
    ];
    for (prio, want) in cases {
        let doc = json!({"nftables": [{"chain": {"family": "inet", "table": "t", "name": "c",
            "type": "filter", "hook": "input", "prio": prio, "policy": "accept"}}]});
        let r = nft::parse(&doc, false, &HashMap::new());
        assert_eq!(r.chains[0].hook.map(|h| h.priority), Some(want), "{prio}");
    }
}

#[test]
fn iptables_words_and_unknown_options() {
    let r = iptables::parse(
        &saved(
            "ACCEPT",
            &[],
            &[
                "-A INPUT -p tcp -m comment --comment \"a \\\"quoted\\\" word\" --dport https -j ACCEPT",
                "-A INPUT -m recent --rcheck --seconds 60 --name bad -j DROP",
                "-A INPUT -m iprange --src-range 104.16.0.1-104.16.0.3 -j DROP",
            ],
        ),
        "iptables",
    );
    let rules = &r.chains[0].rules;
    assert_eq!(
        rules[0].tests,
        [
            Test::Tcp { negated: false },
            Test::Port {
                given: Given::These(vec![(443, 443)]),
                negated: false
            }
        ]
    );
    assert_eq!(
        rules[1].tests,
        [
            Test::Unknown("--rcheck of -m recent".into()),
            Test::Unknown("--seconds of -m recent".into()),
            Test::Unknown("--name of -m recent".into())
        ]
    );
    // Port 80: the first rule lets 443 in.
    let found = findings(&r, &port(80), &Outside::default());
    assert!(
        found.iter().any(|f| f.verdict == Verdict::Fail
            && f.found
                .starts_with("104.16.0.1-104.16.0.3 (part of Cloudflare's ranges) is dropped")),
        "{found:#?}"
    );
}

#[test]
fn reading_the_machine() {
    let route =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 ens3\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 ens3\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
    assert_eq!(default_v4(route).as_deref(), Some("ens3"));
    assert_eq!(default_v4("Iface\tDestination\n"), None);
    let route6 = "00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 00200001       lo\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
    assert_eq!(default_v6(route6).as_deref(), Some("eth0"));
    let status = "Status\n|- Number of jail:\t2\n`- Jail list:\tnginx-http-auth, sshd\n";
    assert_eq!(jails(status), ["nginx-http-auth", "sshd"]);
    let jail = "Status for the jail: sshd\n|- Filter\n`- Actions\n   |- Currently banned:\t2\n   `- Banned IP list:\t104.16.0.9 198.51.100.7\n";
    assert_eq!(
        banned(jail),
        [
            "104.16.0.9".parse::<IpAddr>().expect("ip"),
            "198.51.100.7".parse().expect("ip")
        ]
    );
}

#[test]
fn bans_told_once() {
    let ranges = cloudflare();
    let jails = vec![
        (
            "sshd".to_string(),
            vec![
                "104.16.0.9".parse().expect("ip"),
                "198.51.100.7".parse().expect("ip"),
            ],
        ),
        (
            "quiet".to_string(),
            vec!["198.51.100.8".parse().expect("ip")],
        ),
        ("nginx".to_string(), vec!["172.64.0.1".parse().expect("ip")]),
    ];
    // The firewall findings already name the nginx jail's ban.
    let named = Finding::fail(
        Layer::Firewall,
        "port 443 from Cloudflare",
        Some(521),
        "172.64.0.1 (Cloudflare's) is banned by fail2ban's jail nginx: ...",
        "unban",
    );
    let got = judge_bans(&jails, &ranges, &[named]);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].verdict, Verdict::Warn);
    assert_eq!(got[0].check, "fail2ban jail sshd");
    assert!(got[0]
        .found
        .starts_with("1 of Cloudflare's addresses banned (104.16.0.9)"));
    assert!(got[0]
        .fix
        .as_deref()
        .is_some_and(|f| f.contains("fail2ban-client set sshd unbanip 104.16.0.9")));
}

#[test]
fn what_could_be_read() {
    assert_eq!(
        judge_reading(&[], &[]).map(|f| f.verdict),
        Some(Verdict::Ok)
    );
    assert_eq!(
        judge_reading(
            &["nft".into()],
            &["iptables-save: Permission denied (you must be root)".into()]
        )
        .map(|f| f.verdict),
        Some(Verdict::Warn)
    );
    assert_eq!(judge_reading(&["nft".into()], &[]), None);
    let beyond = beyond(&cloudflare(), &[80, 443]);
    assert!(beyond
        .found
        .contains("TCP 80, 443 in from Cloudflare's 22 ranges: 173.245.48.0/20 "));
}
