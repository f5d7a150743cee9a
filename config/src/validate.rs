//! From the file structs to the model: applies defaults and checks every rule, collecting all
//! problems (not only the first) so one `holdfast check` run shows everything to fix.

use crate::defaults as d;
use crate::file;
use crate::model::*;
use crate::Problem;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Built-in fallback page, used unless `fallback.body_file` is set.
const BUILTIN_FALLBACK_PAGE: &str = include_str!("fallback.html");

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem::new(path, reason));
    }
}

pub fn validate(raw: file::File, base_dir: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();
    let file::File {
        listen,
        routes,
        fallback,
        pools,
        trust,
    } = raw;

    let listen = validate_listen(listen, base_dir, &mut p);
    let fallback = validate_fallback(fallback, base_dir, &mut p);
    let pools: Vec<Pool> = pools
        .into_iter()
        .map(|(name, pool)| validate_pool(name, pool, base_dir, &mut p))
        .collect();
    let routes = validate_routes(routes, &pools, &mut p);
    let trust = validate_trust(trust, base_dir, &mut p);

    if p.0.is_empty() {
        Ok(Config {
            listen,
            pools,
            routes,
            fallback,
            trust,
        })
    } else {
        Err(p.0)
    }
}

fn validate_listen(raw: file::Listen, base_dir: &Path, p: &mut Problems) -> Listen {
    let file::Listen {
        http,
        https,
        tls_cert,
        tls_key,
        certificates,
        origin_pulls,
        admin,
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
                        base_dir,
                        &c.cert,
                        &format!("listen.certificates[{i}].cert"),
                        p,
                    ),
                    key: readable_file(
                        base_dir,
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
                let ca = readable_file(base_dir, &o.ca, &format!("{at}.ca"), p);
                pulls.insert(addr, OriginPulls { ca, mode });
            }
            Some(ListenerTls {
                cert: readable_file(base_dir, &cert, "listen.tls_cert", p),
                key: readable_file(base_dir, &key, "listen.tls_key", p),
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

/// CIDRs (`10.0.0.0/8`) or single addresses (`192.0.2.7`), with the host bits cleared.
fn cidrs(key: &str, written: &[String], p: &mut Problems) -> Vec<ipnet::IpNet> {
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

/// Whether `name` can be a header name (RFC 9110 5.1: a token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_trust(raw: file::Trust, base_dir: &Path, p: &mut Problems) -> Trust {
    let file::Trust {
        cloudflare,
        trusted_proxies,
        visitor_ip_header,
        forwarded_for_header,
        real_ip_header,
        refresh_url,
        refresh_interval,
        refresh_file,
    } = raw;
    let cloudflare = cloudflare.unwrap_or(true);
    let refresh = match refresh_url {
        None => {
            if refresh_interval.is_some() || refresh_file.is_some() {
                p.add(
                    "trust.refresh_url",
                    "refresh_interval and refresh_file need a refresh_url",
                );
            }
            None
        }
        Some(url) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                p.add(
                    "trust.refresh_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                );
            }
            if !cloudflare {
                p.add(
                    "trust.refresh_url",
                    "refreshes Cloudflare's ranges: needs cloudflare = true",
                );
            }
            let interval = refresh_interval.unwrap_or(d::RANGE_REFRESH_INTERVAL);
            if interval < Duration::from_secs(1) {
                p.add("trust.refresh_interval", "must be at least 1s");
            }
            Some(RangeRefresh {
                url,
                interval,
                file: refresh_file.map(|f| base_dir.join(f)),
            })
        }
    };
    let mut header = |key: &str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_string());
        if !is_token(&value) {
            p.add(
                format!("trust.{key}"),
                format!("{value:?} is not a header name"),
            );
        }
        value
    };
    let visitor_ip_header = header("visitor_ip_header", visitor_ip_header, d::VISITOR_IP_HEADER);
    let forwarded_for_header = header(
        "forwarded_for_header",
        forwarded_for_header,
        d::FORWARDED_FOR_HEADER,
    );
    let real_ip_header = header("real_ip_header", real_ip_header, d::REAL_IP_HEADER);
    let proxies = cidrs(
        "trust.trusted_proxies",
        &trusted_proxies.unwrap_or_default(),
        p,
    );
    Trust {
        cloudflare,
        refresh,
        proxies,
        visitor_ip_header,
        forwarded_for_header,
        real_ip_header,
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

/// A file named in the config, relative to the config's folder, that must be readable.
fn readable_file(base_dir: &Path, name: &str, key: &str, p: &mut Problems) -> PathBuf {
    let path = base_dir.join(name);
    if let Err(e) = std::fs::File::open(&path) {
        p.add(key, format!("{}: cannot read: {e}", path.display()));
    }
    path
}

fn validate_fallback(raw: file::Fallback, base_dir: &Path, p: &mut Problems) -> Fallback {
    let file::Fallback {
        status,
        retry_after,
        body_file,
        content_type,
    } = raw;
    let status = status.unwrap_or(d::FALLBACK_STATUS);
    match status {
        502 | 504 => p.add(
            "fallback.status",
            format!(
                "{status} would be replaced by Cloudflare's own error page; use 503, 500 or 429"
            ),
        ),
        500..=599 | 429 => {}
        _ => p.add(
            "fallback.status",
            format!("{status} is not an error status; use 503 (or another 5xx, or 429)"),
        ),
    }
    let retry_after = retry_after.unwrap_or(d::FALLBACK_RETRY_AFTER);
    if retry_after < Duration::from_secs(1) {
        p.add("fallback.retry_after", "must be at least 1s");
    }
    let body_path = body_file.as_ref().map(|name| base_dir.join(name));
    let (body, default_type): (Arc<[u8]>, &str) = match body_file {
        None => (
            Arc::from(BUILTIN_FALLBACK_PAGE.as_bytes()),
            "text/html; charset=utf-8",
        ),
        Some(name) => {
            let path = base_dir.join(&name);
            match read_body_file(&path) {
                Ok(bytes) if bytes.is_empty() => {
                    p.add("fallback.body_file", format!("{} is empty", path.display()));
                    (Arc::from(&b""[..]), "")
                }
                Ok(bytes) => (Arc::from(bytes), guess_content_type(&name)),
                Err(e) => {
                    p.add("fallback.body_file", format!("{}: {e}", path.display()));
                    (Arc::from(&b""[..]), "")
                }
            }
        }
    };
    // It goes into the answer's head as it is: a line break there would let the config write
    // headers (or a second answer) of its own.
    if let Some(value) = &content_type {
        if value.trim().is_empty() || value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            p.add(
                "fallback.content_type",
                format!("{value:?} is not a header value: it must not be empty nor hold control characters"),
            );
        }
    }
    Fallback {
        status,
        retry_after,
        content_type: content_type.unwrap_or_else(|| default_type.to_string()),
        body,
        body_file: body_path,
    }
}

fn read_body_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > d::FALLBACK_BODY_MAX_BYTES {
        return Err(format!(
            "is {} bytes, more than the {} allowed",
            meta.len(),
            d::FALLBACK_BODY_MAX_BYTES
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

fn guess_content_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
    {
        Some(ext) if ext == "html" || ext == "htm" => "text/html; charset=utf-8",
        Some(ext) if ext == "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn validate_routes(raw: file::Routes, pools: &[Pool], p: &mut Problems) -> Routes {
    let file::Routes { default, hosts } = raw;
    let index: HashMap<&str, usize> = pools
        .iter()
        .enumerate()
        .map(|(i, pool)| (pool.name.as_str(), i))
        .collect();
    if pools.is_empty() {
        p.add("pools", "at least one pool is needed");
    }
    let default = match default {
        Some(name) => index.get(name.as_str()).copied().unwrap_or_else(|| {
            p.add(
                "routes.default",
                format!("no pool named {name:?} (pools: {})", names(&index)),
            );
            0
        }),
        None if pools.len() > 1 => {
            p.add(
                "routes.default",
                "several pools are defined: name the default one",
            );
            0
        }
        None => 0,
    };
    let mut table = HashMap::new();
    for (host, pool) in hosts {
        let path = format!("routes.hosts.{host:?}");
        let Some(&i) = index.get(pool.as_str()) else {
            p.add(
                path,
                format!("no pool named {pool:?} (pools: {})", names(&index)),
            );
            continue;
        };
        let key = host.to_ascii_lowercase();
        if key.is_empty() || key.contains(['/', ' ', ':']) && !key.starts_with('[') {
            p.add(
                path,
                "a host route is a host name without scheme, port or path",
            );
            continue;
        }
        if table.insert(key, i).is_some() {
            p.add(
                path,
                "this host is routed twice (host names are case-insensitive)",
            );
        }
    }
    Routes {
        hosts: table,
        default,
    }
}

fn names(index: &HashMap<&str, usize>) -> String {
    let mut v: Vec<&str> = index.keys().copied().collect();
    v.sort_unstable();
    v.join(", ")
}

fn validate_pool(name: String, raw: file::Pool, base_dir: &Path, p: &mut Problems) -> Pool {
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
                    let backend = validate_backend(backend, &b_at, base_dir, p)?;
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
    }
}

fn validate_hedge(raw: file::Hedge, at: &str, p: &mut Problems) -> HedgePolicy {
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
    if response_max < response_min {
        p.add(
            format!("{at}.response_max"),
            format!(
                "{} is shorter than response_min ({})",
                humantime::format_duration(response_max),
                humantime::format_duration(response_min)
            ),
        );
    }
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

fn validate_backend(
    raw: file::Backend,
    at: &str,
    base_dir: &Path,
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
    let addr = match resolve(&address) {
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
            match std::fs::read(&path) {
                Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                    tls.ca = Some(CaFile {
                        path,
                        pem: Arc::from(pem),
                    });
                }
                Ok(_) => p.add(
                    format!("{at}.tls_ca"),
                    format!("{}: no PEM certificate in it", path.display()),
                ),
                Err(e) => p.add(
                    format!("{at}.tls_ca"),
                    format!("{}: cannot read: {e}", path.display()),
                ),
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

fn validate_tls(
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

/// `IP:port` as is; `host:port` through the system resolver (first address), once, at load.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{address:?}: port 0 is not a backend port"));
        }
        return Ok(addr);
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!(
            "{address:?} is not host:port (the port is missing)"
        ));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{address:?}: {port:?} is not a port number")),
        Ok(_) => {}
    }
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(format!("{address:?} is not host:port"));
    }
    match address.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{address:?}: the host name resolved to no address")),
        Err(e) => Err(format!("{address:?}: cannot resolve: {e}")),
    }
}

fn validate_health(raw: file::Health, at: &str, p: &mut Problems) -> HealthPolicy {
    let file::Health {
        tcp,
        http,
        passive_fall,
        status_fall,
        hold_down,
        hold_down_max,
        flap_window,
        failure_rate,
        max_ejection_percent,
        slow_start,
    } = raw;
    let mut checks = Vec::new();
    let tcp_enabled = tcp.as_ref().and_then(|t| t.enabled).unwrap_or(true);
    if tcp_enabled {
        let timing = tcp.as_ref().map(file::TcpCheck::timing);
        checks.push(check(CheckKind::Tcp, timing, &format!("{at}.tcp"), p));
    }
    if let Some(h) = http {
        let h_at = format!("{at}.http");
        let timing = h.timing();
        let file::HttpCheck {
            method,
            path,
            host,
            status,
            body,
            ..
        } = h;
        let method = method.unwrap_or_else(|| d::HTTP_CHECK_METHOD.to_string());
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            p.add(
                format!("{h_at}.method"),
                format!("{method:?} is not an HTTP method"),
            );
        }
        let path = path.unwrap_or_else(|| d::HTTP_CHECK_PATH.to_string());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.add(
                format!("{h_at}.path"),
                format!("{path:?} must start with '/' and hold no spaces or control characters"),
            );
        }
        if let Some(host) = &host {
            if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
                p.add(
                    format!("{h_at}.host"),
                    format!("{host:?} is not a host name"),
                );
            }
        }
        let status = status.unwrap_or_default();
        for (i, s) in status.iter().enumerate() {
            if !(100..=599).contains(s) {
                p.add(
                    format!("{h_at}.status[{i}]"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
        if body.as_deref() == Some("") {
            p.add(
                format!("{h_at}.body"),
                "must not be empty (leave it out to not check the body)",
            );
        }
        let kind = CheckKind::Http(HttpCheck {
            method,
            path,
            host,
            status,
            body,
        });
        checks.push(check(kind, Some(timing), &h_at, p));
    }
    if checks.is_empty() {
        p.add(
            at,
            "the TCP check is off and no HTTP check is set: a backend taken out could never come back",
        );
    }
    HealthPolicy {
        checks,
        passive_fall: non_zero(
            passive_fall,
            d::PASSIVE_FALL,
            &format!("{at}.passive_fall"),
            p,
        ),
        status_fall: non_zero(status_fall, d::STATUS_FALL, &format!("{at}.status_fall"), p),
        hold_down: validate_hold_down(hold_down, hold_down_max, flap_window, at, p),
        failure_rate: validate_failure_rate(failure_rate.unwrap_or_default(), at, p),
        max_ejection_percent: percent(
            max_ejection_percent,
            d::MAX_EJECTION_PERCENT,
            &format!("{at}.max_ejection_percent"),
            p,
        ),
        slow_start: slow_start.unwrap_or(Duration::ZERO),
    }
}

/// A share in percent, 0 to 100.
fn percent(value: Option<u32>, default: u32, at: &str, p: &mut Problems) -> u32 {
    let value = value.unwrap_or(default);
    if value > 100 {
        p.add(at, format!("{value} is not a share in percent (0 to 100)"));
    }
    value.min(100)
}

fn validate_failure_rate(raw: file::FailureRate, at: &str, p: &mut Problems) -> FailureRatePolicy {
    let at = format!("{at}.failure_rate");
    let percent = raw.percent.unwrap_or(d::FAILURE_RATE_PERCENT);
    if percent > 100 {
        p.add(
            format!("{at}.percent"),
            format!("{percent} is not a share in percent (0 turns the threshold off, at most 100)"),
        );
    }
    FailureRatePolicy {
        percent: percent.min(100),
        min_requests: non_zero(
            raw.min_requests,
            d::FAILURE_RATE_MIN_REQUESTS,
            &format!("{at}.min_requests"),
            p,
        )
        .get(),
        window: positive(
            raw.window,
            d::FAILURE_RATE_WINDOW,
            &format!("{at}.window"),
            p,
        ),
    }
}

fn validate_hold_down(
    base: Option<Duration>,
    max: Option<Duration>,
    window: Option<Duration>,
    at: &str,
    p: &mut Problems,
) -> HoldDown {
    let base = base.unwrap_or(d::HOLD_DOWN);
    let max = max.unwrap_or(d::HOLD_DOWN_MAX.max(base));
    if max < base {
        p.add(
            format!("{at}.hold_down_max"),
            format!(
                "{} is shorter than hold_down ({})",
                humantime::format_duration(max),
                humantime::format_duration(base)
            ),
        );
    }
    let window = positive(window, d::FLAP_WINDOW, &format!("{at}.flap_window"), p);
    HoldDown { base, max, window }
}

fn check(kind: CheckKind, timing: Option<file::Timing>, at: &str, p: &mut Problems) -> Check {
    let file::Timing {
        interval,
        timeout,
        rise,
        fall,
        jitter,
    } = timing.unwrap_or(file::Timing {
        interval: None,
        timeout: None,
        rise: None,
        fall: None,
        jitter: None,
    });
    let interval = positive(interval, d::CHECK_INTERVAL, &format!("{at}.interval"), p);
    let timeout = positive(timeout, d::CHECK_TIMEOUT, &format!("{at}.timeout"), p);
    if timeout > interval {
        p.add(
            format!("{at}.timeout"),
            "must not be longer than the interval",
        );
    }
    let jitter = jitter.unwrap_or_else(|| interval.mul_f64(d::JITTER_FRACTION));
    if jitter > interval {
        p.add(
            format!("{at}.jitter"),
            "must not be longer than the interval",
        );
    }
    Check {
        kind,
        interval,
        timeout,
        jitter,
        rise: non_zero(rise, d::RISE, &format!("{at}.rise"), p),
        fall: non_zero(fall, d::FALL, &format!("{at}.fall"), p),
    }
}

fn positive(value: Option<Duration>, default: Duration, at: &str, p: &mut Problems) -> Duration {
    match value {
        Some(v) if v.is_zero() => {
            p.add(at, "must be longer than 0s");
            default
        }
        Some(v) => v,
        None => default,
    }
}

fn non_zero(value: Option<u32>, default: u32, at: &str, p: &mut Problems) -> NonZeroU32 {
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
