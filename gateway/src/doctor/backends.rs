//! Each backend probed now (a TCP connect, the TLS handshake of an HTTPS backend, the pool's
//! HTTP check), named by the error Cloudflare would show if that backend faced it directly,
//! beside what the running holdfast says of it; and each pool as a whole.

use super::report::{Finding, Layer, Verdict};
use holdfast_health::probe::CheckFailure;
use std::time::Duration;

/// What doctor saw of one backend.
#[derive(Debug, Clone)]
pub struct Probed {
    /// `pool/tier/backend`.
    pub name: String,
    pub address: String,
    /// The TCP connect (with the TLS handshake of an HTTPS backend).
    pub connect: Result<Duration, CheckFailure>,
    /// The pool's HTTP check, when it has one and the connect worked.
    pub http: Option<Result<Duration, CheckFailure>>,
    /// What the running holdfast says: usable, and its last transition's reason and time.
    pub seen: Option<Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub usable: bool,
    /// `down since 03:12:09 (refused)`, `drained by an operator`...
    pub why: String,
}

/// The error Cloudflare would show for a failed probe: `connect` for the TCP (and TLS) part.
pub fn code(failure: &CheckFailure, connect: bool) -> u16 {
    match (failure, connect) {
        (CheckFailure::Refused, _) => 521,
        (CheckFailure::Timeout, true) => 522,
        (CheckFailure::Io(std::io::ErrorKind::HostUnreachable), _)
        | (CheckFailure::Io(std::io::ErrorKind::NetworkUnreachable), _) => 523,
        (CheckFailure::Timeout, false) => 524,
        (CheckFailure::Tls(_), _) => 525,
        _ => 520,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What one backend's probes mean. A failure is a warning (with its code) while its pool can
/// serve without it ([`settle`]).
pub fn judge(p: &Probed) -> Finding {
    let check = format!("backend {} ({})", p.name, p.address);
    let theirs = match &p.seen {
        Some(seen) => format!("; holdfast: {}", seen.why),
        None => String::new(),
    };
    let (failure, connect) = match (&p.connect, &p.http) {
        (Err(f), _) => (f, true),
        (Ok(_), Some(Err(f))) => (f, false),
        (Ok(c), http) => {
            let http = match http {
                Some(Ok(h)) => format!(", HTTP check passed in {}", ms(*h)),
                _ => String::new(),
            };
            let found = format!("connects in {}{http}{theirs}", ms(*c));
            return match &p.seen {
                Some(seen) if !seen.usable => Finding::warn(
                    Layer::Backends,
                    check,
                    found,
                    "doctor finds it well but holdfast has it out: it comes back after its checks' rise (or an operator's `holdfast backend up`)",
                ),
                _ => Finding::ok(Layer::Backends, check, found),
            };
        }
    };
    let code = code(failure, connect);
    let what = match (failure, connect) {
        (CheckFailure::Timeout, false) => {
            "connects, but does not answer the check in time (stopped, hung or overloaded)"
                .to_string()
        }
        (f, true) => format!("connect: {f}"),
        (f, false) => format!("HTTP check: {f}"),
    };
    let fix = match code {
        521 => "nothing listens at that address: start the service (systemctl start ...), or fix its address in the config",
        522 => "connections to it time out: is the machine up, and does a firewall drop the packets?",
        523 => "no route to that address: check the address, the network and the routes",
        524 => "the service accepts but does not answer: look at it (is it stopped, deadlocked, out of workers?) and restart it",
        525 => "its TLS does not work: check its certificate and that it speaks TLS on that port",
        _ => "it answers but not as the check expects: look at its log and the check's path",
    };
    Finding::fail(
        Layer::Backends,
        check,
        Some(code),
        format!("{what}{theirs}"),
        fix,
    )
}

/// What a pool's backends mean together: none usable (visitors get the fallback), or serving
/// from a backup tier. `usable` is per tier (by name), in order, as doctor found them.
pub fn judge_pool(pool: &str, usable: &[(&str, usize)]) -> Finding {
    let check = format!("pool {pool}");
    match usable.iter().position(|&(_, n)| n > 0) {
        None => Finding::fail(
            Layer::Backends,
            check,
            None,
            "no backend can serve: visitors get the fallback answer (503)",
            "bring a backend back (the failures above say why each is out)",
        ),
        Some(0) => Finding::ok(
            Layer::Backends,
            check,
            format!("{} of tier {} serve", usable[0].1, usable[0].0),
        ),
        Some(tier) => Finding::warn(
            Layer::Backends,
            check,
            format!(
                "no backend of tier {} can serve: tier {} (a backup) serves",
                usable[0].0, usable[tier].0
            ),
            "bring a primary back; the backups carry the site meanwhile",
        ),
    }
}

/// A pool's findings, once it is known whether the pool can serve: a backend's failure makes
/// Cloudflare show nothing while another backend serves, so it is a warning then (its code
/// kept: what that backend alone would cause).
pub fn settle(backends: &mut [Finding], pool: &Finding) {
    if pool.verdict == Verdict::Fail {
        return;
    }
    for f in backends.iter_mut().filter(|f| f.verdict == Verdict::Fail) {
        f.verdict = Verdict::Warn;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(
        connect: Result<u64, CheckFailure>,
        http: Option<Result<u64, CheckFailure>>,
        usable: Option<bool>,
    ) -> Probed {
        let d = Duration::from_millis;
        Probed {
            name: "app/primary/web-1".into(),
            address: "10.0.0.1:8080".into(),
            connect: connect.map(d),
            http: http.map(|h| h.map(d)),
            seen: usable.map(|usable| Seen {
                usable,
                why: if usable {
                    "up".into()
                } else {
                    "down (refused)".into()
                },
            }),
        }
    }

    #[test]
    fn backend_rows() {
        use CheckFailure::*;
        let unreachable = Io(std::io::ErrorKind::HostUnreachable);
        // (connect, http check, holdfast says usable, verdict, code, found holds)
        let rows = [
            (
                Ok(1),
                Some(Ok(2)),
                Some(true),
                Verdict::Ok,
                None,
                "HTTP check passed",
            ),
            (Ok(1), None, None, Verdict::Ok, None, "connects in 1.0 ms"),
            (
                Ok(1),
                Some(Ok(2)),
                Some(false),
                Verdict::Warn,
                None,
                "holdfast: down (refused)",
            ),
            (
                Err(Refused),
                None,
                Some(false),
                Verdict::Fail,
                Some(521),
                "connect: connection refused; holdfast: down",
            ),
            (
                Err(Timeout),
                None,
                None,
                Verdict::Fail,
                Some(522),
                "connect: timed out",
            ),
            (
                Err(unreachable),
                None,
                None,
                Verdict::Fail,
                Some(523),
                "connect",
            ),
            (
                Ok(1),
                Some(Err(Timeout)),
                None,
                Verdict::Fail,
                Some(524),
                "does not answer",
            ),
            (
                Err(Tls("bad".into())),
                None,
                None,
                Verdict::Fail,
                Some(525),
                "tls: bad",
            ),
            (
                Ok(1),
                Some(Err(Status(500))),
                None,
                Verdict::Fail,
                Some(520),
                "status 500",
            ),
            (
                Ok(1),
                Some(Err(BadResponse("x"))),
                None,
                Verdict::Fail,
                Some(520),
                "bad response",
            ),
        ];
        for (connect, http, usable, verdict, code, holds) in rows {
            let f = judge(&probed(connect, http, usable));
            assert_eq!((f.verdict, f.code), (verdict, code), "{f:?}");
            assert!(f.found.contains(holds), "{holds:?} not in {:?}", f.found);
        }
    }

    #[test]
    fn pool_rows() {
        let rows: [(&[(&str, usize)], Verdict); 4] = [
            (&[("main", 2), ("spare", 1)], Verdict::Ok),
            (&[("main", 0), ("spare", 1)], Verdict::Warn),
            (&[("main", 0), ("spare", 0)], Verdict::Fail),
            (&[], Verdict::Fail),
        ];
        for (usable, verdict) in rows {
            assert_eq!(judge_pool("app", usable).verdict, verdict, "{usable:?}");
        }
    }

    #[test]
    fn a_failed_backend_is_a_warning_while_its_pool_serves() {
        let failed = || vec![judge(&probed(Err(CheckFailure::Refused), None, None))];
        for (usable, verdict) in [
            (&[("main", 0), ("spare", 1)][..], Verdict::Warn),
            (&[("main", 0), ("spare", 0)][..], Verdict::Fail),
        ] {
            let mut found = failed();
            backends_settled(&mut found, usable);
            assert_eq!((found[0].verdict, found[0].code), (verdict, Some(521)));
        }
    }

    fn backends_settled(found: &mut [Finding], usable: &[(&str, usize)]) {
        settle(found, &judge_pool("app", usable));
    }
}
