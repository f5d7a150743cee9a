//! The validated model: what the rest of holdfast is built from. It is never deserialised
//! directly; [`crate::load`] builds it from [`crate::file`] and checks every rule on the way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// Pools in name order; a pool's index here is its id everywhere else.
    pub pools: Vec<Pool>,
    pub routes: Routes,
    pub fallback: Fallback,
    pub trust: Trust,
    /// Who is told of events (`[[notify]]`), in the file's order.
    pub notify: Vec<Notify>,
    /// How holdfast writes its log.
    pub log: Log,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Log {
    /// The process's events, and the access log's lines, as JSON (for journald, Loki) rather
    /// than text.
    pub json: bool,
    /// One line per request, if asked for.
    pub access: Option<AccessLog>,
}

/// `[log] access`: where each request's line goes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub to: AccessTarget,
    /// Characters of the query string kept; the rest is cut (tokens, long tracking strings).
    pub query_max: usize,
    /// Lines waiting for the writer at most; more are dropped and counted.
    pub queue: usize,
}

/// Where access log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// Standard output (journald under systemd).
    Stdout,
    /// A file, appended to, reopened on SIGUSR1 (after logrotate moved it).
    File(PathBuf),
}

/// A secret from the config (the admin token): never printed, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// Whether `given` is the secret, in time that does not depend on where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut differ = mine.len() ^ given.len();
        for (i, b) in mine.iter().enumerate() {
            differ |= usize::from(b ^ given.get(i).copied().unwrap_or(!b));
        }
        differ == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What holdfast tells a `[[notify]]` target of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A backend was taken out (by its checks or by real traffic).
    BackendDown,
    /// A backend came back.
    BackendUp,
    /// A pool serves from another tier (a backup while the primaries are out, or back).
    TierChanged,
    /// No backend of a pool can serve: visitors get the fallback answer.
    Fallback,
    /// A reload was refused; the running config keeps serving.
    ReloadFailed,
    /// An HTTPS certificate expires within 14 days.
    CertificateExpiring,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::BackendDown,
        EventKind::BackendUp,
        EventKind::TierChanged,
        EventKind::Fallback,
        EventKind::ReloadFailed,
        EventKind::CertificateExpiring,
    ];

    /// Its name in the config, the webhook's `event` and `HOLDFAST_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BackendDown => "backend_down",
            EventKind::BackendUp => "backend_up",
            EventKind::TierChanged => "tier_changed",
            EventKind::Fallback => "fallback",
            EventKind::ReloadFailed => "reload_failed",
            EventKind::CertificateExpiring => "certificate_expiring",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One `[[notify]]` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// A webhook: each event POSTed as JSON.
    pub url: Option<String>,
    /// A command (program and arguments, no shell) run per event.
    pub exec: Vec<String>,
    /// What it is told of.
    pub events: Vec<EventKind>,
    /// Each webhook call or command, at most.
    pub timeout: Duration,
    /// Webhook calls tried again after a failure (with a growing pause).
    pub retries: u32,
    /// At most one event of a kind per backend (or pool) in this time; more are counted as
    /// limited, not sent.
    pub min_interval: Duration,
}

/// Who is believed about the visitor's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// Cloudflare's published ranges are trusted.
    pub cloudflare: bool,
    /// More trusted peers.
    pub proxies: Vec<ipnet::IpNet>,
    /// Where a trusted peer names the visitor (`CF-Connecting-IP`).
    pub visitor_ip_header: String,
    /// The chain of addresses for backends (`X-Forwarded-For`).
    pub forwarded_for_header: String,
    /// The visitor's address alone, for backends (`X-Real-IP`).
    pub real_ip_header: String,
    /// Cloudflare's ranges refreshed from a URL, if set.
    pub refresh: Option<RangeRefresh>,
}

/// Where and how often Cloudflare's ranges are refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRefresh {
    pub url: String,
    pub interval: Duration,
    /// The last good list, kept across restarts.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    /// Plain HTTP listeners (Cloudflare's "Flexible" mode connects to port 80).
    pub http: Vec<SocketAddr>,
    /// HTTPS listeners (Cloudflare's "Full" and "Full (strict)" modes connect to port 443).
    pub https: Vec<SocketAddr>,
    /// Certificate chain and key of the HTTPS listeners; set whenever `https` is not empty.
    pub tls: Option<ListenerTls>,
    /// Admin listener: `/metrics`, `/healthz`, `/status`.
    pub admin: SocketAddr,
    /// The bearer token a write (POST) over the admin listener needs; without one, writes go
    /// only through the control socket.
    pub admin_token: Option<Secret>,
    /// Idle keep-alive timeout towards visitors.
    pub keepalive_timeout: Duration,
    /// Longest time from a request head's first byte to its end; then 408.
    pub header_timeout: Duration,
    /// After SIGTERM, how long `/healthz` says 503 while traffic is still served.
    pub shutdown_delay: Duration,
    /// Then, how long requests in flight may take to finish.
    pub grace_period: Duration,
    /// Visitor connections open at once, all listeners together; a connection beyond gets the
    /// fallback answer (503, Retry-After) and is closed. `None`: derived from the open-file
    /// limit at start.
    pub max_connections: Option<u32>,
    /// Listeners that let in only trusted peers and `trusted_only_exceptions`.
    pub trusted_only: Vec<SocketAddr>,
    pub trusted_only_exceptions: Vec<ipnet::IpNet>,
    /// Caps of single listeners (beside `max_connections`), by address.
    pub limits: HashMap<SocketAddr, ListenerLimits>,
    /// What the HTTPS listeners offer by ALPN, in order of preference; never empty.
    pub alpn: Vec<Alpn>,
    /// HTTP/2: `SETTINGS_MAX_CONCURRENT_STREAMS` of every visitor connection.
    pub h2_max_concurrent_streams: u32,
}

/// A protocol an HTTPS listener offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 (Cloudflare's "HTTP/2 to origin", gRPC).
    H2,
    Http11,
}

impl Alpn {
    pub const ALL: [Alpn; 2] = [Alpn::H2, Alpn::Http11];

    /// The protocol's ALPN identifier.
    pub fn id(self) -> &'static str {
        match self {
            Alpn::H2 => "h2",
            Alpn::Http11 => "http/1.1",
        }
    }
}

/// Caps of one listener; beyond either, the fallback answer (503, `Retry-After`) at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Visitor connections open at once on this listener.
    pub max_connections: Option<u32>,
    /// Requests being answered at once on this listener.
    pub max_in_flight: Option<u32>,
}

/// The certificate the HTTPS listeners present (for Cloudflare's "Full (strict)" mode, a
/// publicly trusted one or a Cloudflare Origin CA certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first: the default certificate (for clients that name none,
    /// or a name no other certificate holds).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// More certificates, chosen by SNI among the names each holds.
    pub more: Vec<CertKey>,
    /// Authenticated Origin Pulls, by listener.
    pub origin_pulls: HashMap<SocketAddr, OriginPulls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Client certificates on an HTTPS listener (Authenticated Origin Pulls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPulls {
    pub ca: PathBuf,
    pub mode: PullMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// Verify, count and log a missing or bad certificate; serve all the same.
    Log,
    /// Refuse the handshake without a valid client certificate.
    Require,
}

/// Which pool serves a request, by its `Host` header.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Lower-case host name without port -> pool index.
    pub hosts: HashMap<String, usize>,
    /// Pool index for every other request.
    pub default: usize,
}

impl Routes {
    /// The pool for a `Host` header value (any port and letter case are ignored).
    pub fn pool_for(&self, host: Option<&str>) -> usize {
        let Some(host) = host else {
            return self.default;
        };
        let name = strip_port(host);
        if let Some(&pool) = self.hosts.get(name) {
            return pool;
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            if let Some(&pool) = self.hosts.get(&name.to_ascii_lowercase()) {
                return pool;
            }
        }
        self.default
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// What visitors get when no backend can serve.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// HTTP status; 503 unless configured (never 502/504, which Cloudflare would replace).
    pub status: u16,
    /// Value of the `Retry-After` header, whole seconds.
    pub retry_after: Duration,
    pub content_type: String,
    pub body: Arc<[u8]>,
    /// Where the body was read from, if not built in.
    pub body_file: Option<PathBuf>,
}

/// Serve-stale: the last good answer of a cacheable `GET` kept in memory, served (marked stale)
/// when the request would otherwise get the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePolicy {
    /// Memory for the whole store (heads, bodies and keys), in bytes.
    pub max_bytes: u64,
    /// The largest answer kept (head and body), in bytes.
    pub max_object_bytes: u64,
    /// The oldest a copy may be when served (the answer's own `stale-if-error` may say less).
    pub max_age: Duration,
    /// The statuses kept.
    pub statuses: Vec<u16>,
    /// Answers to requests with `Cookie` are kept by the other rules alone; when false (the
    /// default), only those that say `public` or `s-maxage`.
    pub ignore_cookies: bool,
}

/// A named set of backends in ordered tiers.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// Tier 0 holds the primaries; each later tier is used only while no earlier one can serve.
    pub tiers: Vec<Tier>,
    pub health: HealthPolicy,
    pub timeouts: Timeouts,
    pub hedge: HedgePolicy,
    /// Serve-stale, when on: what is kept, and for how long it may be served.
    pub stale: Option<StalePolicy>,
    /// Attempts per request, the first included.
    pub max_attempts: NonZeroU32,
    /// Backend answers (5xx) after which an idempotent request without a body goes on to the
    /// next backend; the last answer is passed on when no backend is left.
    pub retry_on_status: Vec<u16>,
    /// Methods whose requests may be sent again after a backend had them (an answer held back,
    /// a connection broken before the answer, a rescue): idempotent ones only.
    pub retry_methods: Vec<String>,
    /// A request of those methods with a body up to this size (`Content-Length`) is read whole
    /// before it goes out, so that it can be sent again; larger and chunked bodies stream and
    /// are never sent twice.
    pub retry_body_max_bytes: u64,
}

impl Pool {
    pub fn backends(&self) -> impl Iterator<Item = (usize, &Backend)> {
        self.tiers
            .iter()
            .enumerate()
            .flat_map(|(t, tier)| tier.backends.iter().map(move |b| (t, b)))
    }
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Unique within its pool; the address as written unless named.
    pub name: String,
    /// The address as written in the file (`host:port`).
    pub address: String,
    /// Resolved when the config was loaded.
    pub addr: SocketAddr,
    /// Share of its tier's traffic, relative to the other backends of the tier.
    pub weight: NonZeroU32,
    /// HTTPS towards this backend; plain HTTP when `None`.
    pub tls: Option<BackendTls>,
    /// Requests it may have at once (HAProxy's `maxconn` of a server); beyond, the next
    /// backend with room, or the fallback answer at once. No cap when `None`.
    pub max_in_flight: Option<NonZeroU32>,
    /// The HTTP version spoken to it.
    pub protocol: BackendProtocol,
}

impl Backend {
    /// The URI scheme of requests to it: `https` over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// The HTTP version holdfast speaks to a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1: a connection per request in flight, kept for the visitor's next one.
    #[default]
    Http1,
    /// HTTP/2 (over TLS with ALPN `h2`, or cleartext with prior knowledge): one connection
    /// shared by all requests, each a stream of its own (gRPC backends need it).
    H2,
}

impl BackendProtocol {
    pub const ALL: [BackendProtocol; 2] = [BackendProtocol::Http1, BackendProtocol::H2];

    /// As written in the config (`protocol = ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendProtocol::Http1 => "http/1.1",
            BackendProtocol::H2 => "h2",
        }
    }
}

/// How holdfast speaks TLS to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// Server name for SNI and certificate verification; empty sends no SNI.
    pub sni: String,
    /// Verify the certificate chain (system trust store, or `ca`) and that it names `sni`.
    pub verify: bool,
    /// The CA(s) to verify against instead of the system's store.
    pub ca: Option<CaFile>,
}

/// A CA file as it was read when the config was loaded (a changed file is a changed config).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Arc<[u8]>,
}

/// Per-attempt and per-request time limits towards the backends of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP connection.
    pub connect: Duration,
    /// The wait for the response head once the request is sent (a deadline), then each read of
    /// the body.
    pub read: Duration,
    /// Each write of the request to the backend.
    pub write: Duration,
    /// The whole attempt chain: every connect, failover and the wait for a response head.
    pub total: Duration,
    /// The wait for an answer's head, for requests that may be sent again (idempotent, no
    /// body): past it, the request goes to the next backend and the silent one is reported as
    /// timed out. `None` (the default): `read` alone, so slow but healthy endpoints work.
    pub response: Option<Duration>,
    /// An upgraded connection (WebSocket) idle this long in both directions is closed.
    pub tunnel_idle: Duration,
}

/// When a slow attempt gets a second one beside it, to the next backend; the first to complete
/// is used, the other dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgePolicy {
    /// A connect still pending after the backend's usual connect time (at least `connect_min`)
    /// starts one to the next backend. Nothing was sent: any request may.
    pub connect: Option<Duration>,
    /// For a request that may be sent again, an answer not begun after the backend's usual head
    /// latency, within these bounds, sends a copy to the next backend.
    pub response: Option<(Duration, Duration)>,
    /// Answer hedges at most this share of the pool's requests, in percent.
    pub budget_percent: u32,
}

/// How a pool's backends are judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// The active checks (at least one).
    pub checks: Vec<Check>,
    /// Consecutive connection failures on real traffic that take a backend out.
    pub passive_fall: NonZeroU32,
    /// Consecutive `retry_on_status` answers on real traffic that take a backend out.
    pub status_fall: NonZeroU32,
    /// How much longer a backend that keeps being taken out stays out.
    pub hold_down: HoldDown,
    /// The share of failed real requests that takes a backend out.
    pub failure_rate: FailureRatePolicy,
    /// Passive detection takes a backend out on what happened after a request went out (a
    /// broken connection, a bad answer, `status_fall`, the failure rate) only while no more
    /// than this share of the pool's backends, in percent, would be out, and never the last
    /// that can serve: a visitor's requests can cost a pool that much at most. One backend may
    /// always go. Failed connects are not bounded.
    pub max_ejection_percent: u32,
    /// A backend back from down takes a share of its requests growing from a tenth to all of
    /// them over this time (HAProxy's `slowstart`); the rest go where they went while it was
    /// down. Zero: all at once.
    pub slow_start: Duration,
}

/// A backend failing `percent` % or more of at least `min_requests` real requests within
/// `window` is taken out (unless it is the last usable backend of its pool). Failures: connects
/// that failed, connections that broke before an answer, `retry_on_status` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRatePolicy {
    /// 0 turns the threshold off.
    pub percent: u32,
    pub min_requests: u32,
    pub window: Duration,
}

/// Hysteresis for a flapping backend, like Envoy's outlier ejection time: a backend taken out
/// for the k-th time within `window` stays out for `base * (k - 1)` (at most `max`) even once its
/// checks pass again. The first ejection costs nothing beyond the checks' `rise`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldDown {
    pub base: Duration,
    pub max: Duration,
    pub window: Duration,
}

impl HoldDown {
    /// No hold-down: a backend returns as soon as its checks pass.
    pub const OFF: HoldDown = HoldDown {
        base: Duration::ZERO,
        max: Duration::ZERO,
        window: Duration::ZERO,
    };

    /// The extra time out after an ejection with `earlier` ejections before it in the window.
    pub fn after(&self, earlier: u32) -> Duration {
        self.base.saturating_mul(earlier).min(self.max)
    }
}

/// One active check; a backend serves only while every check of its pool passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub kind: CheckKind,
    /// Time between the end of one probe and the start of the next, before jitter.
    pub interval: Duration,
    /// Longest a probe may take before it counts as failed.
    pub timeout: Duration,
    /// Largest random delay added to each interval.
    pub jitter: Duration,
    /// Consecutive passes that bring a backend back.
    pub rise: NonZeroU32,
    /// Consecutive failures that take a backend out.
    pub fall: NonZeroU32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// The backend accepts a TCP connection.
    Tcp,
    /// The backend answers an HTTP request as expected.
    Http(HttpCheck),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `Host` header; the backend's address when unset.
    pub host: Option<String>,
    /// Accepted statuses; empty means any 2xx or 3xx.
    pub status: Vec<u16>,
    /// A substring the body must contain.
    pub body: Option<String>,
}

impl HttpCheck {
    pub fn accepts(&self, status: u16) -> bool {
        if self.status.is_empty() {
            (200..400).contains(&status)
        } else {
            self.status.contains(&status)
        }
    }
}

impl Config {
    /// The files the config names (certificates, the fallback body): a change of one of them
    /// is a change of the config.
    pub fn files(&self) -> Vec<PathBuf> {
        let tls = self.listen.tls.iter().flat_map(|t| {
            let more = t.more.iter().flat_map(|c| [c.cert.clone(), c.key.clone()]);
            let cas = t.origin_pulls.values().map(|p| p.ca.clone());
            [t.cert.clone(), t.key.clone()]
                .into_iter()
                .chain(more)
                .chain(cas)
                .collect::<Vec<_>>()
        });
        let backend_cas = self
            .pools
            .iter()
            .flat_map(|p| p.backends())
            .filter_map(|(_, b)| b.tls.as_ref()?.ca.as_ref().map(|c| c.path.clone()));
        tls.chain(self.fallback.body_file.clone())
            .chain(backend_cas)
            .collect()
    }

    /// A one-line summary, as `holdfast check` prints it.
    pub fn summary(&self) -> String {
        let tiers: usize = self.pools.iter().map(|p| p.tiers.len()).sum();
        let backends: usize = self.pools.iter().map(|p| p.backends().count()).sum();
        format!(
            "{} pool(s), {} tier(s), {} backend(s), {} HTTP and {} HTTPS listener(s), {} host route(s), admin on {}",
            self.pools.len(),
            tiers,
            backends,
            self.listen.http.len(),
            self.listen.https.len(),
            self.routes.hosts.len(),
            self.listen.admin
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_secret_matches_only_itself_and_is_never_printed() {
        let s = Secret::new("0123456789abcdef".into());
        assert!(s.matches(b"0123456789abcdef"));
        for other in [
            &b"0123456789abcdeg"[..],
            b"0123456789abcde",
            b"0123456789abcdef0",
            b"",
        ] {
            assert!(!s.matches(other), "{other:?}");
        }
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }
    use super::*;

    #[test]
    fn host_routing_ignores_port_and_case() {
        let routes = Routes {
            hosts: HashMap::from([("example.com".to_string(), 1), ("[::1]".to_string(), 2)]),
            default: 0,
        };
        assert_eq!(routes.pool_for(Some("example.com")), 1);
        assert_eq!(routes.pool_for(Some("Example.COM:8080")), 1);
        assert_eq!(routes.pool_for(Some("[::1]:80")), 2);
        assert_eq!(routes.pool_for(Some("other.com")), 0);
        assert_eq!(routes.pool_for(None), 0);
    }
}
