//! `[pools.NAME]`: timeouts, retries, hedging, and the tiers of backends (their TLS too).

use super::address::{self, Address};
use super::common::{non_zero, not_shorter, percent, positive, Problems};
use super::health::validate_health;
use super::io::Found;
use crate::defaults as d;
use crate::file;
use crate::model::*;
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

pub(super) fn validate_pool(
    name: String,
    raw: file::Pool,
    base_dir: &Path,
    found: &Found,
    p: &mut Problems,
) -> Pool {
    let file::Pool {
        connect_timeout,
        read_timeout,
        write_timeout,
        total_timeout,
        response_timeout,
        tunnel_idle_timeout,
        max_attempts,
        retry_on_status,
        retry_methods,
        retry_body_max_bytes,
        health,
        hedge,
        stale,
        tiers,
    } = raw;
    let at = format!("pools.{name}");
    let timeouts = Timeouts {
        connect: positive(
            connect_timeout,
            d::CONNECT_TIMEOUT,
            &format!("{at}.connect_timeout"),
            p,
        ),
        read: positive(
            read_timeout,
            d::READ_TIMEOUT,
            &format!("{at}.read_timeout"),
            p,
        ),
        write: positive(
            write_timeout,
            d::WRITE_TIMEOUT,
            &format!("{at}.write_timeout"),
            p,
        ),
        total: positive(
            total_timeout,
            d::TOTAL_TIMEOUT,
            &format!("{at}.total_timeout"),
            p,
        ),
        response: response_timeout,
        tunnel_idle: positive(
            tunnel_idle_timeout,
            d::TUNNEL_IDLE_TIMEOUT,
            &format!("{at}.tunnel_idle_timeout"),
            p,
        ),
    };
    if response_timeout.is_some_and(|t| t.is_zero()) {
        p.add(format!("{at}.response_timeout"), "must be more than 0s");
    }
    if timeouts.total < timeouts.connect {
        p.add(
            format!("{at}.total_timeout"),
            "must be at least connect_timeout: no attempt could ever complete",
        );
    }
    if timeouts.total >= Duration::from_secs(100) {
        p.add(
            format!("{at}.total_timeout"),
            "must be under 100s: Cloudflare answers 524 to the visitor after 100s",
        );
    }
    let max_attempts = non_zero(
        max_attempts,
        d::MAX_ATTEMPTS,
        &format!("{at}.max_attempts"),
        p,
    );
    let retry_on_status = retry_on_status.unwrap_or_else(|| d::RETRY_ON_STATUS.to_vec());
    for (i, status) in retry_on_status.iter().enumerate() {
        if !(500..=599).contains(status) {
            p.add(
                format!("{at}.retry_on_status[{i}]"),
                format!("{status} is not a 5xx status"),
            );
        }
    }
    let retry_methods =
        retry_methods.unwrap_or_else(|| d::RETRY_METHODS.iter().map(|m| m.to_string()).collect());
    for (i, method) in retry_methods.iter().enumerate() {
        if !IDEMPOTENT_METHODS.contains(&method.as_str()) {
            p.add(
                format!("{at}.retry_methods[{i}]"),
                format!(
                    "{method:?} is not an idempotent method (RFC 9110 9.2.2): sent twice, it could \
                     act twice; these may be listed: {}",
                    IDEMPOTENT_METHODS.join(", ")
                ),
            );
        }
    }
    let retry_body_max_bytes = retry_body_max_bytes.unwrap_or(d::RETRY_BODY_MAX_BYTES);
    if retry_body_max_bytes > d::RETRY_BODY_MAX_BYTES_LIMIT {
        p.add(
            format!("{at}.retry_body_max_bytes"),
            format!(
                "{retry_body_max_bytes} is more than {} (each such request holds its body in memory)",
                d::RETRY_BODY_MAX_BYTES_LIMIT
            ),
        );
    }
    let health = validate_health(health, &format!("{at}.health"), p);
    let hedge = validate_hedge(hedge, &format!("{at}.hedge"), p);
    let stale = stale.map(|s| super::stale::validate_stale(s, &format!("{at}.stale"), p));

    if tiers.is_empty() {
        p.add(
            format!("{at}.tiers"),
            "a pool needs at least one tier of backends",
        );
    }
    let mut names_seen = HashSet::new();
    let mut addrs_seen = HashSet::new();
    let tiers = tiers
        .into_iter()
        .enumerate()
        .map(|(t, tier)| {
            let file::Tier {
                name: tier_name,
                backends,
            } = tier;
            let tier_at = format!("{at}.tiers[{t}]");
            if backends.is_empty() {
                p.add(
                    format!("{tier_at}.backends"),
                    "a tier needs at least one backend",
                );
            }
            let backends = backends
                .into_iter()
                .enumerate()
                .filter_map(|(b, backend)| {
                    let b_at = format!("{tier_at}.backends[{b}]");
                    let backend = validate_backend(backend, &b_at, (base_dir, found), p)?;
                    if !names_seen.insert(backend.name.clone()) {
                        p.add(
                            format!("{b_at}.name"),
                            format!(
                                "another backend of pool {name:?} is named {:?}",
                                backend.name
                            ),
                        );
                    }
                    if !addrs_seen.insert(backend.addr) {
                        p.add(
                            format!("{b_at}.address"),
                            format!("{} is already a backend of pool {name:?}", backend.addr),
                        );
                    }
                    Some(backend)
                })
                .collect();
            Tier {
                name: tier_name.unwrap_or_else(|| default_tier_name(t)),
                backends,
            }
        })
        .collect::<Vec<_>>();
    let mut tier_names = HashSet::new();
    for (t, tier) in tiers.iter().enumerate() {
        if !tier_names.insert(tier.name.as_str()) {
            p.add(
                format!("{at}.tiers[{t}].name"),
                format!("two tiers are named {:?}", tier.name),
            );
        }
    }
    Pool {
        name,
        tiers,
        health,
        timeouts,
        max_attempts,
        retry_on_status,
        retry_methods,
        retry_body_max_bytes: retry_body_max_bytes.min(d::RETRY_BODY_MAX_BYTES_LIMIT),
        hedge,
        stale,
    }
}

pub(super) fn validate_hedge(raw: file::Hedge, at: &str, p: &mut Problems) -> HedgePolicy {
    let file::Hedge {
        connect,
        connect_min,
        response,
        response_min,
        response_max,
        budget_percent,
    } = raw;
    let connect_min = positive(
        connect_min,
        d::HEDGE_CONNECT_MIN,
        &format!("{at}.connect_min"),
        p,
    );
    let response_min = positive(
        response_min,
        d::HEDGE_RESPONSE_MIN,
        &format!("{at}.response_min"),
        p,
    );
    let response_max = response_max.unwrap_or(d::HEDGE_RESPONSE_MAX.max(response_min));
    not_shorter(
        (response_max, &format!("{at}.response_max")),
        (response_min, "response_min"),
        p,
    );
    HedgePolicy {
        connect: connect.unwrap_or(true).then_some(connect_min),
        response: response
            .unwrap_or(true)
            .then_some((response_min, response_max.max(response_min))),
        budget_percent: percent(
            budget_percent,
            d::HEDGE_BUDGET_PERCENT,
            &format!("{at}.budget_percent"),
            p,
        ),
    }
}

/// The methods `retry_methods` may list: RFC 9110's idempotent ones.
const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

fn default_tier_name(t: usize) -> String {
    match t {
        0 => "primary".to_string(),
        1 => "backup".to_string(),
        n => format!("backup{n}"),
    }
}

pub(super) fn validate_backend(
    raw: file::Backend,
    at: &str,
    (base_dir, found): (&Path, &Found),
    p: &mut Problems,
) -> Option<Backend> {
    let file::Backend {
        address,
        name,
        weight,
        tls,
        sni,
        tls_verify,
        tls_ca,
        max_in_flight,
        protocol,
    } = raw;
    let protocol = match protocol {
        None => BackendProtocol::default(),
        Some(name) => match BackendProtocol::ALL
            .into_iter()
            .find(|b| b.as_str() == name)
        {
            Some(protocol) => protocol,
            None => {
                p.add(
                    format!("{at}.protocol"),
                    format!("unknown protocol {name:?} (expected \"http/1.1\" or \"h2\")"),
                );
                BackendProtocol::default()
            }
        },
    };
    let weight = non_zero(weight, 1, &format!("{at}.weight"), p);
    if max_in_flight == Some(0) {
        p.add(
            format!("{at}.max_in_flight"),
            "must be at least 1 (leave it out for no cap)",
        );
    }
    let max_in_flight = max_in_flight.and_then(NonZeroU32::new);
    if weight.get() > d::MAX_WEIGHT {
        p.add(
            format!("{at}.weight"),
            format!("must be at most {}", d::MAX_WEIGHT),
        );
    }
    let addr = match address::parse(&address) {
        Ok(Address::Ip(addr)) => Ok(addr),
        Ok(Address::Name) => found.address(&address),
        Err(reason) => Err(reason),
    };
    let addr = match addr {
        Ok(addr) => addr,
        Err(reason) => {
            p.add(format!("{at}.address"), reason);
            return None;
        }
    };
    if let Some(n) = &name {
        if n.is_empty() {
            p.add(format!("{at}.name"), "must not be empty");
        }
    }
    let mut tls = validate_tls(tls, sni, tls_verify, &address, at, p);
    match (&mut tls, tls_ca) {
        (_, None) => {}
        (None, Some(_)) => p.add(format!("{at}.tls_ca"), "only meaningful with tls = true"),
        (Some(tls), Some(ca)) => {
            let path = base_dir.join(&ca);
            match found.bytes(&path) {
                Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                    tls.ca = Some(CaFile { path, pem });
                }
                Ok(_) => p.add(
                    format!("{at}.tls_ca"),
                    format!("{}: no PEM certificate in it", path.display()),
                ),
                Err(e) => p.add(format!("{at}.tls_ca"), format!("{}: {e}", path.display())),
            }
        }
    }
    Some(Backend {
        name: name.unwrap_or_else(|| address.clone()),
        address,
        addr,
        weight,
        tls,
        max_in_flight,
        protocol,
    })
}

pub(super) fn validate_tls(
    tls: Option<bool>,
    sni: Option<String>,
    verify: Option<bool>,
    address: &str,
    at: &str,
    p: &mut Problems,
) -> Option<BackendTls> {
    if tls != Some(true) {
        if sni.is_some() || verify.is_some() {
            let key = if sni.is_some() { "sni" } else { "tls_verify" };
            p.add(format!("{at}.{key}"), "only meaningful with tls = true");
        }
        return None;
    }
    let verify = verify.unwrap_or(true);
    // The host part of a `hostname:port` address is the natural server name.
    let host = address.rsplit_once(':').map_or("", |(h, _)| h);
    let sni = sni.unwrap_or_else(|| match host.parse::<std::net::IpAddr>() {
        Ok(_) => String::new(),
        Err(_) => host.to_string(),
    });
    if sni.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
        p.add(format!("{at}.sni"), format!("{sni:?} is not a host name"));
    }
    if verify && sni.is_empty() {
        p.add(
            format!("{at}.sni"),
            "certificate verification needs the name on the backend's certificate: set sni, or tls_verify = false",
        );
    }
    Some(BackendTls {
        sni,
        verify,
        ca: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::io::Found;
    use super::super::table::{config, rows, DIR};
    use crate::model::BackendProtocol;

    fn found() -> Found {
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        Found::default()
            .with_name("db.internal:5432", Ok("10.0.0.5:5432".parse().unwrap()))
            .with_name(
                "gone.internal:80",
                Err("\"gone.internal:80\": cannot resolve: failed to lookup address".into()),
            )
            .with_file(format!("{DIR}/ca.pem"), Ok(pem))
            .with_file(format!("{DIR}/junk.pem"), Ok(b"junk"))
            .with_file(
                format!("{DIR}/gone.pem"),
                Err("cannot read: No such file or directory (os error 2)".into()),
            )
    }

    /// A pool `app` with `keys`, one tier of `backends` (inline tables, one per line).
    fn pool(keys: &str, backends: &[&str]) -> String {
        format!(
            "[pools.app]\n{keys}\n[[pools.app.tiers]]\nbackends = [{}]\n",
            backends.join(", ")
        )
    }

    const ONE: &[&str] = &[r#"{ address = "127.0.0.1:8080" }"#];

    #[test]
    fn pool_rules() {
        let b = "pools.app.tiers[0].backends";
        let cases = [
            (pool("", ONE), "", ""),
            (pool(r#"total_timeout = "100s""#, ONE), "pools.app.total_timeout", "under 100s"),
            (
                pool("total_timeout = \"1s\"\nconnect_timeout = \"2s\"", ONE),
                "pools.app.total_timeout",
                "at least connect_timeout",
            ),
            (
                pool(r#"response_timeout = "0s""#, ONE),
                "pools.app.response_timeout",
                "more than 0s",
            ),
            (pool(r#"read_timeout = "0s""#, ONE), "pools.app.read_timeout", "longer than 0s"),
            (pool("max_attempts = 0", ONE), "pools.app.max_attempts", "at least 1"),
            (
                pool("retry_on_status = [503, 404]", ONE),
                "pools.app.retry_on_status[1]",
                "404 is not a 5xx",
            ),
            (
                pool(r#"retry_methods = ["GET", "POST"]"#, ONE),
                "pools.app.retry_methods[1]",
                "not an idempotent method",
            ),
            (
                pool("retry_body_max_bytes = 1000000000000", ONE),
                "pools.app.retry_body_max_bytes",
                "is more than",
            ),
            ("[pools.app]\nmax_attempts = 2\n".to_string(), "pools.app.tiers", "at least one tier"),
            (
                "[[pools.app.tiers]]\nbackends = []\n".to_string(),
                "pools.app.tiers[0].backends",
                "at least one backend",
            ),
            (
                pool("", &[r#"{ address = "127.0.0.1:8080" }"#, r#"{ address = "127.0.0.1:8080", name = "b" }"#]),
                "pools.app.tiers[0].backends[1].address",
                "is already a backend of pool \"app\"",
            ),
            (
                pool("", &[r#"{ address = "127.0.0.1:8080", name = "a" }"#, r#"{ address = "127.0.0.1:8081", name = "a" }"#]),
                "pools.app.tiers[0].backends[1].name",
                "is named \"a\"",
            ),
            (
                "[[pools.app.tiers]]\nname = \"x\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n[[pools.app.tiers]]\nname = \"x\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n".to_string(),
                "pools.app.tiers[1].name",
                "two tiers are named \"x\"",
            ),
            (
                "[pools.app.hedge]\nresponse_min = \"2s\"\nresponse_max = \"1s\"\n[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:1\" }]\n".to_string(),
                "pools.app.hedge.response_max",
                "shorter than response_min",
            ),
            (
                "[pools.app.hedge]\nbudget_percent = 101\n[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:1\" }]\n".to_string(),
                "pools.app.hedge.budget_percent",
                "not a share in percent",
            ),
        ];
        let backend = |fields: &str| pool("", &[&format!("{{ {fields} }}")]);
        let backends = [
            (backend(r#"address = "db.internal:5432""#), "", ""),
            (
                backend(r#"address = "127.0.0.1""#),
                "address",
                "the port is missing",
            ),
            (
                backend(r#"address = "gone.internal:80""#),
                "address",
                "cannot resolve",
            ),
            (
                backend(r#"address = "127.0.0.1:1", weight = 0"#),
                "weight",
                "at least 1",
            ),
            (
                backend(r#"address = "127.0.0.1:1", weight = 1000000"#),
                "weight",
                "must be at most",
            ),
            (
                backend(r#"address = "127.0.0.1:1", max_in_flight = 0"#),
                "max_in_flight",
                "leave it out",
            ),
            (
                backend(r#"address = "127.0.0.1:1", protocol = "h3""#),
                "protocol",
                "unknown protocol \"h3\"",
            ),
            (
                backend(r#"address = "127.0.0.1:1", name = """#),
                "name",
                "must not be empty",
            ),
            (
                backend(r#"address = "127.0.0.1:1", sni = "a""#),
                "sni",
                "only meaningful with tls = true",
            ),
            (
                backend(r#"address = "127.0.0.1:1", tls_verify = false"#),
                "tls_verify",
                "only meaningful",
            ),
            (
                backend(r#"address = "127.0.0.1:1", tls_ca = "ca.pem""#),
                "tls_ca",
                "only meaningful",
            ),
            (
                backend(r#"address = "127.0.0.1:1", tls = true"#),
                "sni",
                "certificate verification needs",
            ),
            (
                backend(r#"address = "127.0.0.1:1", tls = true, tls_verify = false"#),
                "",
                "",
            ),
            (
                backend(r#"address = "127.0.0.1:1", tls = true, sni = "a b""#),
                "sni",
                "is not a host name",
            ),
            (
                backend(r#"address = "db.internal:5432", tls = true, tls_ca = "ca.pem""#),
                "",
                "",
            ),
            (
                backend(r#"address = "db.internal:5432", tls = true, tls_ca = "junk.pem""#),
                "tls_ca",
                "no PEM certificate",
            ),
            (
                backend(r#"address = "db.internal:5432", tls = true, tls_ca = "gone.pem""#),
                "tls_ca",
                "/etc/holdfast/gone.pem: cannot read",
            ),
        ];
        rows(&cases, &found());
        // A backend's key, under `pools.app.tiers[0].backends[0]`.
        let backends: Vec<_> = backends
            .iter()
            .map(|(t, key, r)| match *key {
                "" => (t, String::new(), *r),
                key => (t, format!("{b}[0].{key}"), *r),
            })
            .collect();
        rows(&backends, &found());
    }

    #[test]
    fn a_pool_as_the_model_has_it() {
        let text = pool(
            "retry_methods = [\"GET\"]",
            &[
                r#"{ address = "db.internal:5432", tls = true, tls_ca = "ca.pem", protocol = "h2" }"#,
            ],
        );
        let config = config(
            &format!("{text}[[pools.app.tiers]]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n"),
            &found(),
        );
        let pool = &config.pools[0];
        assert_eq!(pool.tiers.len(), 2);
        assert_eq!(
            (pool.tiers[0].name.as_str(), pool.tiers[1].name.as_str()),
            ("primary", "backup")
        );
        let db = &pool.tiers[0].backends[0];
        assert_eq!(db.addr, "10.0.0.5:5432".parse().unwrap());
        assert_eq!(db.name, "db.internal:5432", "named by its address");
        assert_eq!(db.protocol, BackendProtocol::H2);
        let tls = db.tls.as_ref().expect("tls");
        assert_eq!(
            tls.sni, "db.internal",
            "the host of the address is the server name"
        );
        assert!(tls.verify && tls.ca.is_some());
        assert_eq!(pool.retry_methods, vec!["GET".to_string()]);
        assert!(pool.hedge.connect.is_some() && pool.hedge.response.is_some());
    }
}
