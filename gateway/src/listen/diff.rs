//! What a reload does to the listeners: which addresses stay (never closed, their TLS and
//! caps replaced), which are new (bound before anything changes), which go (they stop
//! accepting while their connections finish). A plain function with its table test.

use std::net::SocketAddr;

/// The change from the running addresses to the wanted ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Running and wanted: kept open, in the wanted order.
    pub kept: Vec<SocketAddr>,
    /// Wanted, not running: to bind, in the wanted order.
    pub added: Vec<SocketAddr>,
    /// Running, not wanted: to stop accepting, in the running order.
    pub removed: Vec<SocketAddr>,
}

/// How to go from `running` to `wanted`.
pub fn diff(running: &[SocketAddr], wanted: &[SocketAddr]) -> Diff {
    let mut d = Diff::default();
    for &addr in wanted {
        match running.contains(&addr) {
            true => d.kept.push(addr),
            false => d.added.push(addr),
        }
    }
    d.removed = running
        .iter()
        .copied()
        .filter(|a| !wanted.contains(a))
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    /// Ports: running, wanted; then kept, added, removed.
    type Row = (
        &'static [u16],
        &'static [u16],
        &'static [u16],
        &'static [u16],
        &'static [u16],
    );

    #[test]
    fn a_reload_keeps_adds_and_removes() {
        // (running, wanted) -> (kept, added, removed), by port
        let cases: &[Row] = &[
            (&[], &[80, 443], &[], &[80, 443], &[]),
            (&[80, 443], &[80, 443], &[80, 443], &[], &[]),
            (&[80, 443], &[443, 80], &[443, 80], &[], &[]),
            (&[80], &[80, 8080], &[80], &[8080], &[]),
            (&[80, 8080], &[80], &[80], &[], &[8080]),
            (&[80, 8080], &[443], &[], &[443], &[80, 8080]),
            (&[80, 443], &[], &[], &[], &[80, 443]),
        ];
        for (running, wanted, kept, added, removed) in cases {
            let want = Diff {
                kept: addrs(kept),
                added: addrs(added),
                removed: addrs(removed),
            };
            assert_eq!(
                diff(&addrs(running), &addrs(wanted)),
                want,
                "{running:?} -> {wanted:?}"
            );
        }
    }
}
