//! `[listen]`: the listeners, their TLS, caps, timeouts and ALPN.

use super::common::{cidrs, Problems};
use super::io::Found;
use crate::defaults as d;
use crate::file;
use crate::model::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) fn validate_listen(
    raw: file::Listen,
    base_dir: &Path,
    found: &Found,
    p: &mut Problems,
) -> Listen {
    let file::Listen {
        http,
        https,
        tls_cert,
        tls_key,
        certificates,
        origin_pulls,
        admin,
        admin_token,
        admin_token_file,
        keepalive_timeout,
        header_timeout,
        shutdown_delay,
        grace_period,
        trusted_only,
        trusted_only_exceptions,
        max_connections,
        limits,
        alpn,
        h2_max_concurrent_streams,
    } = raw;
    let https_given = https.as_ref().is_some_and(|h| !h.is_empty());
    // Plain HTTP on port 80 unless only HTTPS listeners are configured.
    let http_addrs = http.unwrap_or_else(|| match https_given {
        true => Vec::new(),
        false => vec!["0.0.0.0:80".to_string()],
    });
    let https_addrs = https.unwrap_or_default();
    if http_addrs.is_empty() && https_addrs.is_empty() {
        p.add(
            "listen.http",
            "at least one HTTP or HTTPS listener address is needed",
        );
    }
    let mut seen = HashSet::new();
    let http = listen_addrs("listen.http", &http_addrs, &mut seen, p);
    let https = listen_addrs("listen.https", &https_addrs, &mut seen, p);
    if https.is_empty() {
        if certificates.as_ref().is_some_and(|c| !c.is_empty()) {
            p.add(
                "listen.certificates",
                "only meaningful with HTTPS listeners (listen.https)",
            );
        }
        if origin_pulls.as_ref().is_some_and(|o| !o.is_empty()) {
            p.add(
                "listen.origin_pulls",
                "only meaningful with HTTPS listeners (listen.https)",
            );
        }
    }
    let tls = match (https.is_empty(), tls_cert, tls_key) {
        (true, None, None) => None,
        (true, _, _) => {
            p.add(
                "listen.tls_cert",
                "only meaningful with HTTPS listeners (listen.https)",
            );
            None
        }
        (false, Some(cert), Some(key)) => {
            let more = certificates
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, c)| CertKey {
                    cert: readable_file(
                        (base_dir, found),
                        &c.cert,
                        &format!("listen.certificates[{i}].cert"),
                        p,
                    ),
                    key: readable_file(
                        (base_dir, found),
                        &c.key,
                        &format!("listen.certificates[{i}].key"),
                        p,
                    ),
                })
                .collect();
            let mut pulls = HashMap::new();
            for (written, o) in origin_pulls.unwrap_or_default() {
                let at = format!("listen.origin_pulls.{written:?}");
                let Some(addr) = written
                    .parse::<SocketAddr>()
                    .ok()
                    .filter(|a| https.contains(a))
                else {
                    p.add(
                        at,
                        format!("{written:?} is not the address of a listener in listen.https"),
                    );
                    continue;
                };
                let mode = match o.mode.as_deref() {
                    None | Some("require") => PullMode::Require,
                    Some("log") => PullMode::Log,
                    Some(other) => {
                        p.add(
                            format!("{at}.mode"),
                            format!("{other:?} is not log or require"),
                        );
                        PullMode::Require
                    }
                };
                let ca = readable_file((base_dir, found), &o.ca, &format!("{at}.ca"), p);
                pulls.insert(addr, OriginPulls { ca, mode });
            }
            Some(ListenerTls {
                cert: readable_file((base_dir, found), &cert, "listen.tls_cert", p),
                key: readable_file((base_dir, found), &key, "listen.tls_key", p),
                more,
                origin_pulls: pulls,
            })
        }
        (false, cert, _) => {
            let missing = if cert.is_none() {
                "listen.tls_cert"
            } else {
                "listen.tls_key"
            };
            p.add(
                missing,
                "HTTPS listeners need a certificate (tls_cert) and its key (tls_key)",
            );
            None
        }
    };
    let admin_text = admin.unwrap_or_else(|| d::ADMIN_ADDR.to_string());
    let admin = match admin_text.parse::<SocketAddr>() {
        Ok(addr) => {
            if seen.contains(&addr) {
                p.add("listen.admin", format!("{addr} is also a proxy listener"));
            }
            addr
        }
        Err(_) => {
            p.add(
                "listen.admin",
                format!("{admin_text:?} is not an IP:port address"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let admin_token = token(admin_token, admin_token_file, (base_dir, found), p);
    if admin_token.is_none() && !admin.ip().is_loopback() {
        p.add(
            "listen.admin",
            format!(
                "{admin} is not a loopback address: set listen.admin_token (or admin_token_file), \
                 so that a write over it (reload, upgrade, drain) needs the token"
            ),
        );
    }
    let keepalive_timeout = keepalive_timeout.unwrap_or(d::DOWNSTREAM_KEEPALIVE_IDLE);
    if keepalive_timeout < Duration::from_secs(1) {
        p.add("listen.keepalive_timeout", "must be at least 1s");
    }
    let header_timeout = header_timeout.unwrap_or(d::HEADER_TIMEOUT);
    if header_timeout < Duration::from_millis(100) {
        p.add("listen.header_timeout", "must be at least 100ms");
    }
    let shutdown_delay = shutdown_delay.unwrap_or(d::SHUTDOWN_DELAY);
    if shutdown_delay > d::SHUTDOWN_DELAY_MAX {
        p.add("listen.shutdown_delay", "must be at most 10m");
    }
    let grace_period = grace_period.unwrap_or(d::GRACE_PERIOD);
    if grace_period > d::GRACE_PERIOD_MAX {
        p.add("listen.grace_period", "must be at most 1h");
    }
    let mut trusted_only_addrs = Vec::new();
    for (i, written) in trusted_only.unwrap_or_default().iter().enumerate() {
        match written
            .parse::<SocketAddr>()
            .ok()
            .filter(|a| http.contains(a) || https.contains(a))
        {
            Some(addr) => trusted_only_addrs.push(addr),
            None => p.add(
                format!("listen.trusted_only[{i}]"),
                format!(
                    "{written:?} is not the address of a listener in listen.http or listen.https"
                ),
            ),
        }
    }
    let trusted_only_exceptions = cidrs(
        "listen.trusted_only_exceptions",
        &trusted_only_exceptions.unwrap_or_default(),
        p,
    );
    if max_connections == Some(0) {
        p.add("listen.max_connections", "must be at least 1");
    }
    let mut by_addr = HashMap::new();
    for (written, l) in limits.unwrap_or_default() {
        let at = format!("listen.limits.{written:?}");
        let addr = written
            .parse::<SocketAddr>()
            .ok()
            .filter(|a| http.contains(a) || https.contains(a));
        let Some(addr) = addr else {
            p.add(
                at,
                format!(
                    "{written:?} is not the address of a listener in listen.http or listen.https"
                ),
            );
            continue;
        };
        for (key, value) in [
            ("max_connections", l.max_connections),
            ("max_in_flight", l.max_in_flight),
        ] {
            if value == Some(0) {
                p.add(
                    format!("{at}.{key}"),
                    "must be at least 1 (leave it out for no cap)",
                );
            }
        }
        by_addr.insert(
            addr,
            ListenerLimits {
                max_connections: l.max_connections.filter(|&n| n > 0),
                max_in_flight: l.max_in_flight.filter(|&n| n > 0),
            },
        );
    }
    let mut offered = Vec::new();
    for (i, id) in alpn.iter().flatten().enumerate() {
        let at = format!("listen.alpn[{i}]");
        match Alpn::ALL.into_iter().find(|a| a.id() == id) {
            Some(a) if offered.contains(&a) => p.add(at, format!("{id:?} is listed twice")),
            Some(a) => offered.push(a),
            None => p.add(at, format!("{id:?} is not \"h2\" or \"http/1.1\"")),
        }
    }
    if alpn.is_none() {
        offered = d::ALPN.to_vec();
    } else if offered.is_empty() {
        p.add("listen.alpn", "must offer \"h2\", \"http/1.1\" or both");
        offered.push(Alpn::Http11);
    }
    let h2_max_concurrent_streams =
        h2_max_concurrent_streams.unwrap_or(d::H2_MAX_CONCURRENT_STREAMS);
    if !(1..=d::H2_MAX_CONCURRENT_STREAMS_LIMIT).contains(&h2_max_concurrent_streams) {
        p.add(
            "listen.h2_max_concurrent_streams",
            format!(
                "must be from 1 to {} (Cloudflare opens up to 200 at once)",
                d::H2_MAX_CONCURRENT_STREAMS_LIMIT
            ),
        );
    }
    Listen {
        alpn: offered,
        h2_max_concurrent_streams,
        http,
        https,
        tls,
        admin,
        admin_token,
        keepalive_timeout,
        header_timeout,
        shutdown_delay,
        grace_period,
        max_connections,
        trusted_only: trusted_only_addrs,
        trusted_only_exceptions,
        limits: by_addr,
    }
}

fn listen_addrs(
    key: &str,
    addrs: &[String],
    seen: &mut HashSet<SocketAddr>,
    p: &mut Problems,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let path = format!("{key}[{i}]");
        match a.parse::<SocketAddr>() {
            Ok(addr) if !seen.insert(addr) => p.add(path, format!("{addr} is listed twice")),
            Ok(addr) => out.push(addr),
            Err(_) => p.add(path, format!("{a:?} is not an IP:port address")),
        }
    }
    out
}

/// The admin token, given or read from its file: one line of visible characters.
fn token(
    given: Option<String>,
    file: Option<String>,
    (base_dir, found): (&Path, &Found),
    p: &mut Problems,
) -> Option<Secret> {
    let (value, key) = match (given, file) {
        (Some(_), Some(_)) => {
            p.add(
                "listen.admin_token_file",
                "set admin_token or admin_token_file, not both",
            );
            return None;
        }
        (Some(token), None) => (token, "listen.admin_token"),
        (None, Some(name)) => {
            let path = base_dir.join(name);
            match found.bytes(&path) {
                Ok(bytes) => (
                    String::from_utf8_lossy(&bytes).trim().to_string(),
                    "listen.admin_token_file",
                ),
                Err(e) => {
                    p.add(
                        "listen.admin_token_file",
                        format!("{}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        (None, None) => return None,
    };
    if value.len() < 16 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        p.add(
            key,
            "must be at least 16 visible characters, on one line (e.g. `openssl rand -hex 32`)",
        );
        return None;
    }
    Some(Secret::new(value))
}

/// A file named in the config, relative to the config's folder, that must be readable.
fn readable_file(
    (base_dir, found): (&Path, &Found),
    name: &str,
    key: &str,
    p: &mut Problems,
) -> PathBuf {
    let path = base_dir.join(name);
    if let Err(e) = found.readable(&path) {
        p.add(key, format!("{}: {e}", path.display()));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::super::io::Found;
    use super::super::table::{config, rows, DIR, POOL};

    fn found() -> Found {
        Found::default()
            .with_file(format!("{DIR}/token"), Ok(b"0123456789abcdef0123\n"))
            .with_file(
                format!("{DIR}/gone"),
                Err("cannot read: No such file or directory (os error 2)".into()),
            )
            .with_readable(format!("{DIR}/cert.pem"), Ok(()))
            .with_readable(format!("{DIR}/key.pem"), Ok(()))
            .with_readable(
                format!("{DIR}/gone.pem"),
                Err("cannot read: No such file or directory (os error 2)".into()),
            )
    }

    #[test]
    fn listen_rules() {
        let with = |listen: &str| format!("[listen]\n{listen}\n{POOL}");
        let https = r#"https = ["127.0.0.1:443"]"#;
        let cases = [
            (with(""), "", ""),
            (with("http = []"), "listen.http", "at least one HTTP or HTTPS"),
            (
                with(r#"http = ["127.0.0.1:80", "127.0.0.1:80"]"#),
                "listen.http[1]",
                "is listed twice",
            ),
            (with(r#"http = ["localhost:80"]"#), "listen.http[0]", "is not an IP:port"),
            (
                with(&format!("{https}\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"")),
                "",
                "",
            ),
            (with(https), "listen.tls_cert", "need a certificate"),
            (
                with(&format!("{https}\ntls_cert = \"cert.pem\"")),
                "listen.tls_key",
                "need a certificate",
            ),
            (
                with(&format!("{https}\ntls_cert = \"gone.pem\"\ntls_key = \"key.pem\"")),
                "listen.tls_cert",
                "/etc/holdfast/gone.pem: cannot read",
            ),
            (
                with(r#"tls_cert = "cert.pem""#),
                "listen.tls_cert",
                "only meaningful with HTTPS",
            ),
            (
                with(r#"certificates = [{ cert = "cert.pem", key = "key.pem" }]"#),
                "listen.certificates",
                "only meaningful with HTTPS",
            ),
            (
                with("http = [\"127.0.0.1:9090\"]\nadmin = \"127.0.0.1:9090\""),
                "listen.admin",
                "is also a proxy listener",
            ),
            (with(r#"admin = "localhost""#), "listen.admin", "is not an IP:port"),
            (
                with(r#"admin = "0.0.0.0:9180""#),
                "listen.admin",
                "is not a loopback address: set listen.admin_token",
            ),
            (
                with("admin = \"0.0.0.0:9180\"\nadmin_token = \"0123456789abcdef0123\""),
                "",
                "",
            ),
            (
                with("admin_token_file = \"token\""),
                "",
                "",
            ),
            (
                with("admin_token = \"short\""),
                "listen.admin_token",
                "at least 16 visible characters",
            ),
            (
                with("admin_token = \"0123456789abcdef 0123\""),
                "listen.admin_token",
                "at least 16 visible characters",
            ),
            (
                with("admin_token = \"0123456789abcdef0123\"\nadmin_token_file = \"token\""),
                "listen.admin_token_file",
                "not both",
            ),
            (
                with("admin_token_file = \"gone\""),
                "listen.admin_token_file",
                "/etc/holdfast/gone: cannot read",
            ),
            (with(r#"keepalive_timeout = "500ms""#), "listen.keepalive_timeout", "at least 1s"),
            (with(r#"header_timeout = "50ms""#), "listen.header_timeout", "at least 100ms"),
            (with(r#"shutdown_delay = "11m""#), "listen.shutdown_delay", "at most 10m"),
            (with(r#"grace_period = "2h""#), "listen.grace_period", "at most 1h"),
            (
                with("http = [\"127.0.0.1:80\"]\ntrusted_only = [\"127.0.0.1:81\"]"),
                "listen.trusted_only[0]",
                "is not the address of a listener",
            ),
            (
                with(r#"trusted_only_exceptions = ["nope"]"#),
                "listen.trusted_only_exceptions[0]",
                "is not a CIDR",
            ),
            (with("max_connections = 0"), "listen.max_connections", "at least 1"),
            (
                with("http = [\"127.0.0.1:80\"]\n[listen.limits.\"127.0.0.1:80\"]\nmax_in_flight = 0"),
                "listen.limits.\"127.0.0.1:80\".max_in_flight",
                "at least 1",
            ),
            (
                with("http = [\"127.0.0.1:80\"]\n[listen.limits.\"127.0.0.1:81\"]\nmax_connections = 5"),
                "listen.limits.\"127.0.0.1:81\"",
                "is not the address of a listener",
            ),
            (with(r#"alpn = ["h3"]"#), "listen.alpn[0]", "is not \"h2\""),
            (with(r#"alpn = ["h2", "h2"]"#), "listen.alpn[1]", "is listed twice"),
            (with("alpn = []"), "listen.alpn", "must offer"),
            (
                with("h2_max_concurrent_streams = 0"),
                "listen.h2_max_concurrent_streams",
                "must be from 1",
            ),
            (
                with(&format!(
                    "{https}\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n[listen.origin_pulls.\"127.0.0.1:444\"]\nca = \"cert.pem\""
                )),
                "listen.origin_pulls.\"127.0.0.1:444\"",
                "is not the address of a listener in listen.https",
            ),
            (
                with(&format!(
                    "{https}\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n[listen.origin_pulls.\"127.0.0.1:443\"]\nca = \"cert.pem\"\nmode = \"maybe\""
                )),
                "listen.origin_pulls.\"127.0.0.1:443\".mode",
                "is not log or require",
            ),
        ];
        rows(&cases, &found());
    }

    #[test]
    fn listen_defaults() {
        let listen = config(POOL, &Found::default()).listen;
        assert_eq!(listen.http, vec!["0.0.0.0:80".parse().unwrap()]);
        assert!(listen.https.is_empty() && listen.tls.is_none());
        // Only HTTPS listeners given: no plain HTTP one is added.
        let text = format!(
            "[listen]\nhttps = [\"127.0.0.1:443\"]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n{POOL}"
        );
        let listen = config(&text, &found()).listen;
        assert!(listen.http.is_empty());
        let tls = listen.tls.expect("tls");
        assert_eq!(tls.cert, std::path::Path::new(DIR).join("cert.pem"));
    }
}
