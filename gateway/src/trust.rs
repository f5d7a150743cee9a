//! Who is believed about the visitor's address: Cloudflare's published ranges (built in, from
//! `../shared/cloudflare-origin.md`, and optionally refreshed from Cloudflare's API) and the
//! config's `trust.trusted_proxies`, held as prefix tries (`prefix-trie`): one lookup per
//! request, whatever the number of ranges. What a trusted peer may say, and what anyone else's
//! headers lose, is [`crate::h1::rewrite`]'s rule.
//!
//! A refresh adds to the built-in ranges and never takes from them: the ranges in use are the
//! built-in ones and those of the last good refresh. A refresh that fails, or answers something
//! that is not a full list of ranges, changes nothing. The refreshing itself (the HTTP client,
//! the file, the loop that follows the running config) is [`crate::refresh`]'s; this module is
//! the pure part.

use crate::h1::rewrite::HeaderNames;
use arc_swap::ArcSwap;
use holdfast_config::Trust;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;
use std::net::IpAddr;

/// Cloudflare's IPv4 ranges, as published at <https://www.cloudflare.com/ips-v4>.
pub const CLOUDFLARE_V4: [&str; 15] = [
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
];

/// Cloudflare's IPv6 ranges, as published at <https://www.cloudflare.com/ips-v6>.
pub const CLOUDFLARE_V6: [&str; 7] = [
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// Cloudflare's ranges, built in.
pub fn cloudflare() -> Vec<IpNet> {
    CLOUDFLARE_V4
        .iter()
        .chain(CLOUDFLARE_V6.iter())
        .filter_map(|r| r.parse().ok())
        .collect()
}

/// A set of CIDR ranges.
#[derive(Debug, Clone, Default)]
pub struct Ranges {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
    len: usize,
}

impl Ranges {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut ranges = Ranges::default();
        for net in nets {
            let added = match net.trunc() {
                IpNet::V4(n) => ranges.v4.insert(n),
                IpNet::V6(n) => ranges.v6.insert(n),
            };
            ranges.len += usize::from(added);
        }
        ranges
    }

    /// Whether `ip` is in one of the ranges. An IPv4 address mapped into IPv6
    /// (`::ffff:192.0.2.1`, as a dual-stack listener sees IPv4 peers) is looked up as IPv4.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).is_some(),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).is_some(),
        }
    }

    /// How many ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Cloudflare's ranges from the last good refresh (empty before one), for the whole process:
/// they outlive config reloads.
pub static REFRESHED: std::sync::LazyLock<ArcSwap<Ranges>> =
    std::sync::LazyLock::new(|| ArcSwap::from_pointee(Ranges::default()));

/// A list of ranges as Cloudflare's API answers it (`result.ipv4_cidrs`, `result.ipv6_cidrs`,
/// `result.etag`), judged whole: `Err` unless `success` is not false, both lists are there,
/// hold at least one range between them, and every entry is a CIDR.
pub fn parse_ranges(body: &[u8]) -> Result<(Vec<IpNet>, Option<String>), String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if doc["success"] == serde_json::Value::Bool(false) {
        return Err(format!("the API says it failed: {}", doc["errors"]));
    }
    let result = &doc["result"];
    let mut nets = Vec::new();
    for key in ["ipv4_cidrs", "ipv6_cidrs"] {
        let Some(list) = result[key].as_array() else {
            return Err(format!("no result.{key} list"));
        };
        for entry in list {
            let net = entry
                .as_str()
                .and_then(|s| s.parse::<IpNet>().ok())
                .ok_or_else(|| format!("result.{key}: {entry} is not a CIDR"))?;
            nets.push(net.trunc());
        }
    }
    if nets.is_empty() {
        return Err("an empty list".to_string());
    }
    Ok((nets, result["etag"].as_str().map(str::to_string)))
}

/// The trust of one config: the trusted peers and the headers that carry the visitor.
#[derive(Debug, Clone)]
pub struct Trusted {
    pub peers: Ranges,
    /// Whether Cloudflare's refreshed ranges count too.
    cloudflare: bool,
    pub names: HeaderNames,
}

impl Trusted {
    pub fn new(trust: &Trust) -> Self {
        let cloudflare = if trust.cloudflare {
            cloudflare()
        } else {
            Vec::new()
        };
        Trusted {
            peers: Ranges::new(cloudflare.into_iter().chain(trust.proxies.iter().copied())),
            cloudflare: trust.cloudflare,
            names: HeaderNames {
                visitor_ip: trust.visitor_ip_header.clone(),
                forwarded_for: trust.forwarded_for_header.clone(),
                real_ip: trust.real_ip_header.clone(),
            },
        }
    }

    #[inline]
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.peers.contains(peer) || (self.cloudflare && REFRESHED.load().contains(peer))
    }

    /// How many ranges are trusted now (a refreshed range also built in counts twice).
    pub fn len(&self) -> usize {
        self.peers.len()
            + if self.cloudflare {
                REFRESHED.load().len()
            } else {
                0
            }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn cloudflare_ranges_and_more() {
        let extra: IpNet = "10.1.0.0/16".parse().expect("cidr");
        let ranges = Ranges::new(cloudflare().into_iter().chain([extra]));
        assert_eq!(ranges.len(), 23);
        // (address, trusted)
        let table = [
            ("173.245.48.1", true),
            ("173.245.63.255", true),
            ("173.245.64.0", false),
            ("104.16.0.0", true),
            ("104.23.255.255", true),
            ("104.32.0.0", false),
            ("2606:4700::1111", true),
            ("2606:4701::1", false),
            ("2a06:98c7:ffff::1", true),
            ("::ffff:162.158.1.1", true),
            ("::ffff:127.0.0.1", false),
            ("10.1.200.3", true),
            ("10.2.0.1", false),
            ("127.0.0.1", false),
            ("::1", false),
        ];
        for (addr, trusted) in table {
            assert_eq!(ranges.contains(ip(addr)), trusted, "{addr}");
        }
    }

    #[test]
    fn without_cloudflare_only_the_configured_peers() {
        let trust = Trust {
            cloudflare: false,
            proxies: vec!["127.0.0.2/32".parse().expect("cidr")],
            visitor_ip_header: "True-Client-IP".into(),
            forwarded_for_header: "X-Forwarded-For".into(),
            real_ip_header: "X-Client-IP".into(),
            refresh: None,
        };
        let t = Trusted::new(&trust);
        assert!(t.trusts(ip("127.0.0.2")));
        assert!(!t.trusts(ip("127.0.0.1")));
        assert!(!t.trusts(ip("173.245.48.1")));
        assert_eq!(t.names.visitor_ip, "True-Client-IP");
        assert_eq!(t.names.real_ip, "X-Client-IP");
    }

    #[test]
    fn a_refresh_is_taken_only_whole() {
        let good = br#"{"result":{"ipv4_cidrs":["173.245.48.0/20","198.51.100.0/24"],
            "ipv6_cidrs":["2400:cb00::/32"],"etag":"abc"},"success":true,"errors":[]}"#;
        let (nets, etag) = parse_ranges(good).expect("a good list");
        assert_eq!(nets.len(), 3);
        assert_eq!(etag.as_deref(), Some("abc"));
        // (what came, why it is refused)
        let table: [(&[u8], &str); 6] = [
            (b"<html>502</html>", "not JSON"),
            (br#"{"success":false,"errors":["down"]}"#, "failed"),
            (br#"{"result":{"ipv4_cidrs":[]}}"#, "no result.ipv6_cidrs"),
            (br#"{"result":{"ipv4_cidrs":[],"ipv6_cidrs":[]}}"#, "empty"),
            (
                br#"{"result":{"ipv4_cidrs":["10.0.0.0/33"],"ipv6_cidrs":[]}}"#,
                "not a CIDR",
            ),
            (
                br#"{"result":{"ipv4_cidrs":[7],"ipv6_cidrs":[]}}"#,
                "not a CIDR",
            ),
        ];
        for (body, why) in table {
            let err = parse_ranges(body).expect_err("refused");
            assert!(err.contains(why), "{err} (wanted {why})");
        }
    }
}
