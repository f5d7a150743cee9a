//! The config file as written: serde structs that mirror the TOML exactly.
//! Optional keys are `Option`s here; defaults are applied by validation, not by serde, so that
//! the model is the only place a default takes effect.

use crate::duration;
use crate::Problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Parses TOML text into the file structs; the first syntax or type error becomes a [`Problem`]
/// with the key path where it was found.
pub fn parse(text: &str) -> Result<File, Problem> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut reason = inner.message().trim().replace('\n', "; ");
        // Syntax errors can lose their position on the way through serde; parse bare to find it.
        let span = inner
            .span()
            .or_else(|| text.parse::<toml::Table>().err().and_then(|e| e.span()));
        if let Some(span) = span {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            reason = format!("{reason} (line {line})");
        }
        let path = if path == "." { String::new() } else { path };
        Problem::new(path, reason)
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub routes: Routes,
    #[serde(default)]
    pub fallback: Fallback,
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    #[serde(default)]
    pub trust: Trust,
    /// `[[notify]]`: who is told of what happens to the backends.
    #[serde(default)]
    pub notify: Vec<Notify>,
    #[serde(default)]
    pub log: Log,
}

/// `[log]`: how holdfast writes its log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `text` (the default) or `json`: the process's events on standard error, and the access
    /// log's lines.
    pub format: Option<String>,
    /// `stdout`, or the path of a file: one line per request. Off when left out.
    pub access: Option<String>,
    /// Characters of a request's query string kept in the access log; the rest is cut.
    pub access_query_max: Option<usize>,
    /// Access log lines waiting for the writer at most; more are dropped and counted.
    pub access_queue: Option<usize>,
}

/// One `[[notify]]` entry: a webhook, a command, or both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// POSTed a JSON document per event.
    pub url: Option<String>,
    /// Run per event, with the event in environment variables (no shell).
    pub exec: Option<Vec<String>>,
    /// The events it is told of (all when left out).
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    /// At most one event of a kind per backend (or pool) in this time.
    #[serde(default, deserialize_with = "duration::opt")]
    pub min_interval: Option<Duration>,
}

/// Who is believed about the visitor's address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// Trust Cloudflare's published ranges (built in); default true.
    pub cloudflare: Option<bool>,
    /// More peers trusted as Cloudflare is (a load balancer in front), as CIDRs or addresses.
    pub trusted_proxies: Option<Vec<String>>,
    /// The header in which a trusted peer names the visitor: `CF-Connecting-IP` (default) or
    /// `True-Client-IP`.
    pub visitor_ip_header: Option<String>,
    /// The header backends get the chain of addresses in (default `X-Forwarded-For`).
    pub forwarded_for_header: Option<String>,
    /// The header backends get the visitor's address alone in (default `X-Real-IP`).
    pub real_ip_header: Option<String>,
    /// Where Cloudflare's ranges are refreshed from (its JSON API); not refreshed when unset.
    pub refresh_url: Option<String>,
    /// How often they are refreshed (default 24h).
    #[serde(default, deserialize_with = "duration::opt")]
    pub refresh_interval: Option<Duration>,
    /// Where the last good list is kept, so that a restart starts from it.
    pub refresh_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Plain HTTP listener addresses.
    pub http: Option<Vec<String>>,
    /// HTTPS listener addresses (TLS terminated here).
    pub https: Option<Vec<String>>,
    /// PEM certificate chain for the HTTPS listeners.
    pub tls_cert: Option<String>,
    /// PEM private key for the HTTPS listeners.
    pub tls_key: Option<String>,
    /// More certificates for the HTTPS listeners, chosen by the name the client asks for (SNI);
    /// `tls_cert` is the default.
    pub certificates: Option<Vec<CertificateFiles>>,
    /// Authenticated Origin Pulls: client certificates checked on an HTTPS listener, by its
    /// address as written in `https`.
    pub origin_pulls: Option<std::collections::BTreeMap<String, OriginPulls>>,
    /// Admin listener address (metrics, health, status).
    pub admin: Option<String>,
    /// The bearer token a write (POST) on the admin listener needs.
    pub admin_token: Option<String>,
    /// A file holding that token (relative to the config file's folder).
    pub admin_token_file: Option<String>,
    /// Idle keep-alive timeout towards visitors.
    #[serde(default, deserialize_with = "duration::opt")]
    pub keepalive_timeout: Option<Duration>,
    /// Longest time from a request head's first byte to its end.
    #[serde(default, deserialize_with = "duration::opt")]
    pub header_timeout: Option<Duration>,
    /// After SIGTERM: how long `/healthz` answers 503 while traffic is still served, before
    /// the listeners stop accepting.
    #[serde(default, deserialize_with = "duration::opt")]
    pub shutdown_delay: Option<Duration>,
    /// After the listeners stop accepting: how long requests in flight may take to finish.
    #[serde(default, deserialize_with = "duration::opt")]
    pub grace_period: Option<Duration>,
    /// Listeners that accept connections only from trusted peers (and the exceptions below);
    /// any other connection is closed at accept, before a byte is read.
    pub trusted_only: Option<Vec<String>>,
    /// Peers let in on `trusted_only` listeners although not trusted (loopback, monitoring).
    pub trusted_only_exceptions: Option<Vec<String>>,
    /// Visitor connections open at once, all listeners together; beyond, a fast 503.
    pub max_connections: Option<u32>,
    /// Caps of single listeners, by their address as written in `http` or `https`.
    pub limits: Option<std::collections::BTreeMap<String, ListenerLimits>>,
    /// Protocols the HTTPS listeners offer by ALPN, in order of preference (`h2`, `http/1.1`).
    pub alpn: Option<Vec<String>>,
    /// HTTP/2: streams one visitor connection may have open at once.
    pub h2_max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM certificate chain.
    pub cert: String,
    /// Its PEM private key.
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginPulls {
    /// PEM file of the CA that signs the client certificates (Cloudflare's origin-pull CA, or
    /// the zone's own).
    pub ca: String,
    /// `log` (verify and count, let every client through) or `require` (default).
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    pub max_connections: Option<u32>,
    pub max_in_flight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    /// Pool for requests whose Host matches no entry of `hosts`.
    pub default: Option<String>,
    /// Host name (without port) -> pool name.
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    pub status: Option<u16>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub retry_after: Option<Duration>,
    /// Path of the body to answer with; relative to the config file's folder.
    pub body_file: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[serde(default, deserialize_with = "duration::opt")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub write_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub total_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub response_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub tunnel_idle_timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    /// Backend answers that send an idempotent request on to the next backend.
    pub retry_on_status: Option<Vec<u16>>,
    /// Methods whose requests may be sent again once a backend had them.
    pub retry_methods: Option<Vec<String>>,
    /// Largest request body of such a request read whole first, so that it can be sent again.
    pub retry_body_max_bytes: Option<u64>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub hedge: Hedge,
    /// Serve-stale: the last good answers kept, served while no backend can answer. Off
    /// without the table.
    pub stale: Option<Stale>,
    #[serde(default)]
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stale {
    /// Memory for the pool's whole store, in bytes.
    pub max_bytes: Option<u64>,
    /// The largest answer (head and body) kept, in bytes.
    pub max_object_bytes: Option<u64>,
    /// How old a copy may be when served.
    #[serde(default, deserialize_with = "duration::opt")]
    pub max_age: Option<Duration>,
    /// The statuses kept.
    pub statuses: Option<Vec<u16>>,
    /// Keep answers to requests with `Cookie` by the other rules alone (else only `public` or
    /// `s-maxage` ones).
    pub ignore_cookies: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hedge {
    /// Hedge slow connects (on by default).
    pub connect: Option<bool>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub connect_min: Option<Duration>,
    /// Hedge slow answers of requests that may be sent again (on by default).
    pub response: Option<bool>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub response_min: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub response_max: Option<Duration>,
    pub budget_percent: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub tcp: Option<TcpCheck>,
    pub http: Option<HttpCheck>,
    /// Consecutive connection failures on real traffic that take a backend out.
    pub passive_fall: Option<u32>,
    /// Consecutive `retry_on_status` answers on real traffic that take a backend out.
    pub status_fall: Option<u32>,
    /// Extra time out for a backend ejected again: this, times the ejections before it within
    /// `flap_window`. "0s" turns it off.
    #[serde(default, deserialize_with = "duration::opt")]
    pub hold_down: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub hold_down_max: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub flap_window: Option<Duration>,
    pub failure_rate: Option<FailureRate>,
    /// Largest share of the pool's backends held out by passive detection on what a request
    /// could bring about.
    pub max_ejection_percent: Option<u32>,
    /// Time over which a backend back from down ramps up to its full share.
    #[serde(default, deserialize_with = "duration::opt")]
    pub slow_start: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    pub percent: Option<u32>,
    pub min_requests: Option<u32>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    /// `false` turns the TCP check off (an HTTP check must then be configured).
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub timeout: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub jitter: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    /// Accepted status codes; default: any 2xx or 3xx.
    pub status: Option<Vec<u16>>,
    /// A substring the response body must contain.
    pub body: Option<String>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub timeout: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub jitter: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: Option<String>,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `IP:port` or `hostname:port`, resolved when the config is loaded.
    pub address: String,
    pub name: Option<String>,
    pub weight: Option<u32>,
    /// Speak HTTPS to this backend.
    pub tls: Option<bool>,
    /// Server name sent in the TLS handshake and checked against the certificate.
    pub sni: Option<String>,
    /// Verify the backend's certificate (chain and name); default true.
    pub tls_verify: Option<bool>,
    /// PEM file of the CA(s) to verify the backend's certificate against, instead of the
    /// system's store.
    pub tls_ca: Option<String>,
    /// Requests this backend may have at once; no cap when left out.
    pub max_in_flight: Option<u32>,
    /// `http/1.1` (the default) or `h2`.
    pub protocol: Option<String>,
}

/// The timing keys shared by both kinds of check (serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, so each check struct spells them out and lends them through this).
pub struct Timing {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub jitter: Option<Duration>,
}

impl TcpCheck {
    pub fn timing(&self) -> Timing {
        let TcpCheck {
            enabled: _,
            interval,
            timeout,
            rise,
            fall,
            jitter,
        } = *self;
        Timing {
            interval,
            timeout,
            rise,
            fall,
            jitter,
        }
    }
}

impl HttpCheck {
    pub fn timing(&self) -> Timing {
        let HttpCheck {
            interval,
            timeout,
            rise,
            fall,
            jitter,
            ..
        } = *self;
        Timing {
            interval,
            timeout,
            rise,
            fall,
            jitter,
        }
    }
}
