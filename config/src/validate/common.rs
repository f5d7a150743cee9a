//! What the rules of every section share: the list of problems found, and the checks of
//! single values (a positive duration, a count of at least 1, a share in percent, CIDRs).

use crate::Problem;
use std::num::NonZeroU32;
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem::new(path, reason));
    }
}

/// CIDRs (`10.0.0.0/8`) or single addresses (`192.0.2.7`), with the host bits cleared.
pub(crate) fn cidrs(key: &str, written: &[String], p: &mut Problems) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, w) in written.iter().enumerate() {
        let parsed = w
            .parse::<ipnet::IpNet>()
            .or_else(|_| w.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => out.push(net.trunc()),
            Err(_) => p.add(
                format!("{key}[{i}]"),
                format!("{w:?} is not a CIDR (10.0.0.0/8, 2001:db8::/32) nor an IP address"),
            ),
        }
    }
    out
}

/// A share in percent, 0 to 100.
pub(crate) fn percent(value: Option<u32>, default: u32, at: &str, p: &mut Problems) -> u32 {
    let value = value.unwrap_or(default);
    if value > 100 {
        p.add(at, format!("{value} is not a share in percent (0 to 100)"));
    }
    value.min(100)
}

pub(crate) fn positive(
    value: Option<Duration>,
    default: Duration,
    at: &str,
    p: &mut Problems,
) -> Duration {
    match value {
        Some(v) if v.is_zero() => {
            p.add(at, "must be longer than 0s");
            default
        }
        Some(v) => v,
        None => default,
    }
}

pub(crate) fn non_zero(value: Option<u32>, default: u32, at: &str, p: &mut Problems) -> NonZeroU32 {
    let fallback = NonZeroU32::new(default).unwrap_or(NonZeroU32::MIN);
    match value.map(NonZeroU32::new) {
        Some(None) => {
            p.add(at, "must be at least 1");
            fallback
        }
        Some(Some(v)) => v,
        None => fallback,
    }
}

/// A longest time that must not be shorter than its shortest: the problem goes to `at`, and
/// names the other key.
pub(crate) fn not_shorter(
    (max, at): (Duration, &str),
    (min, min_key): (Duration, &str),
    p: &mut Problems,
) {
    if max < min {
        p.add(
            at,
            format!(
                "{} is shorter than {min_key} ({})",
                humantime::format_duration(max),
                humantime::format_duration(min)
            ),
        );
    }
}
