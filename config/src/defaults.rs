//! Defaults, each a named constant with its unit and the reason for its value.
//! Cloudflare facts come from `../shared/cloudflare-origin.md`.

use std::time::Duration;

/// Admin listener (metrics, health, status): loopback only, so nothing is exposed by default.
pub const ADMIN_ADDR: &str = "127.0.0.1:9180";

/// Idle keep-alive timeout towards visitors (Cloudflare). Cloudflare reuses an idle origin
/// connection for up to 900 s; closing earlier races its reuse and shows visitors a 520.
pub const DOWNSTREAM_KEEPALIVE_IDLE: Duration = Duration::from_secs(930);

/// What the HTTPS listeners offer by ALPN: HTTP/2 first (Cloudflare uses HTTP/2 to an origin
/// only when ALPN offers it, and gRPC needs it), HTTP/1.1 for every other client.
pub const ALPN: [crate::model::Alpn; 2] = crate::model::Alpn::ALL;

/// HTTP/2 streams one visitor connection may have open at once. Cloudflare opens up to 200 on
/// one connection to an origin, or fewer when the origin says so; 256 leaves it room.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// What `h2_max_concurrent_streams` may be set to at most: every stream may hold a backend
/// connection.
pub const H2_MAX_CONCURRENT_STREAMS_LIMIT: u32 = 4096;

/// Longest time from the first byte of a request head to its end. Cloudflare sends a whole head
/// at once; a head that trickles in for longer is a slow client holding a connection (slowloris)
/// and gets 408. HAProxy's usual `timeout http-request` is 10 s (nginx's
/// `client_header_timeout`, 60 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Backend answers after which an idempotent request is tried on the next backend: the
/// statuses of a backend that cannot serve right now (bad gateway, overloaded or in
/// maintenance, timed out behind it). 500 is left out: it is usually the application's own
/// answer to this very request, and would be the same elsewhere.
pub const RETRY_ON_STATUS: [u16; 3] = [502, 503, 504];

/// Methods whose requests may be sent again after a backend had them: the idempotent ones that
/// applications keep idempotent. PUT and DELETE are idempotent by RFC 9110 too, but many
/// applications act on them in ways a second copy would repeat (a DELETE that logs, a PUT that
/// appends), so they are repeated only when an operator lists them.
pub const RETRY_METHODS: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];

/// Largest body of such a request held in memory so that it can be sent again (a PUT of a
/// small document); larger ones stream to the first backend only.
pub const RETRY_BODY_MAX_BYTES: u64 = 64 * 1024;
/// What `retry_body_max_bytes` may be set to at most.
pub const RETRY_BODY_MAX_BYTES_LIMIT: u64 = 16 * 1024 * 1024;

/// Time to open a TCP connection to a backend. Backends sit on the same network: a healthy one
/// answers a SYN in well under a millisecond, and 2 s still allows one SYN retransmission (1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait for a backend's response head once the request is sent (a deadline: a backend
/// trickling its head does not restart it), then for each read of the body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An upgraded connection (WebSocket) with no byte in either direction for this long is closed.
/// Cloudflare itself closes a WebSocket idle for about 100 s, so applications ping well within
/// that; HAProxy's `timeout tunnel` is commonly set to an hour, nginx's `proxy_read_timeout`
/// (60 s) applies to tunnels too.
pub const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest wait for a backend to take the request body, per write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on the whole attempt chain of one request (every connect, failover and the wait for a
/// response head). Cloudflare gives up at 100 s with a 524, so the gateway's own answer (a
/// backend's or the fallback) must come well before that.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(75);

/// Attempts per request, the first included. A refused connect costs microseconds, so four
/// attempts cover a primary pair and a backup failing at once.
pub const MAX_ATTEMPTS: u32 = 4;

/// Active check period. With `FALL` = 2, a dead backend that no real request touched is out
/// within about 4 s; real traffic takes it out at once (passive detection).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Active check timeout: a healthy backend on the same network answers in milliseconds.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Consecutive passing checks before a backend that was down takes traffic again.
pub const RISE: u32 = 2;

/// Consecutive failing checks before a backend is taken out.
pub const FALL: u32 = 2;

/// Consecutive connection failures on real traffic (refused, timed out, reset) that take a
/// backend out at once. 1: a refused connect is unambiguous.
pub const PASSIVE_FALL: u32 = 1;

/// Consecutive answers with a `retry_on_status` status (502, 503, 504) on real traffic that take
/// a backend out: a backend answering 503 to everything is out after a handful of requests
/// instead of an active check interval, while an occasional 503 does not eject it.
pub const STATUS_FALL: u32 = 5;

/// Hold-down of a backend taken out again (flapping): 10 s for each earlier ejection within
/// `FLAP_WINDOW`, at most `HOLD_DOWN_MAX`. A backend failing once comes back after `RISE`
/// passing checks as before; one that fails every few seconds is kept out longer and longer
/// instead of bouncing traffic between tiers. Envoy's outlier detection uses a 30 s base.
pub const HOLD_DOWN: Duration = Duration::from_secs(10);
pub const HOLD_DOWN_MAX: Duration = Duration::from_secs(300);
pub const FLAP_WINDOW: Duration = Duration::from_secs(300);

/// Failure-rate threshold of passive detection: a backend failing a quarter or more of at least
/// 20 real requests within 10 s is taken out, although its failures may never come `STATUS_FALL`
/// or `PASSIVE_FALL` in a row. (Envoy's failure-percentage ejection is off by default, at 85 %
/// when on; here it is on, lower, and never takes out the last usable backend of a pool.)
pub const FAILURE_RATE_PERCENT: u32 = 25;
pub const FAILURE_RATE_MIN_REQUESTS: u32 = 20;
pub const FAILURE_RATE_WINDOW: Duration = Duration::from_secs(10);

/// The largest share of a pool's backends that passive detection may hold out on what happened
/// after a request went out (a broken connection, a bad answer, `status_fall`, the failure
/// rate): what a visitor's requests can partly bring about. Half: a pool of a primary and a
/// backup can lose its broken one, three backends can lose one, and one always may go. Envoy's
/// `max_ejection_percent` defaults to 10 % (at least one); a smaller pool of origin servers
/// needs more room. Failed connects are not capped: nothing of the request was sent.
pub const MAX_EJECTION_PERCENT: u32 = 50;

/// Random extra delay added to each check period, as a fraction of the interval, so that the
/// checks of many backends do not fire together.
pub const JITTER_FRACTION: f64 = 0.1;

/// HTTP check: method and path.
pub const HTTP_CHECK_METHOD: &str = "GET";
pub const HTTP_CHECK_PATH: &str = "/";

/// The fallback answer when no backend can serve: 503 (Cloudflare passes it on; 502 and 504
/// would be replaced by its own error page), with `Retry-After` for visitors and crawlers.
pub const FALLBACK_STATUS: u16 = 503;
pub const FALLBACK_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Largest fallback body read from a file.
pub const FALLBACK_BODY_MAX_BYTES: u64 = 1 << 20;

/// Largest backend weight; weights expand into a schedule, so they stay small.
pub const MAX_WEIGHT: u32 = 1000;

/// Hedged connects: a connect to a backend not done after its smoothed connect time plus four
/// deviations (RFC 6298's retransmission estimate), and never before this, starts a second one
/// to the next backend, and the first to complete is used. Backends sit on the same network
/// (connects well under a millisecond) and a lost SYN is sent again only after 1 s, so a connect
/// still pending after 20 ms is all but lost: a firewall dropping packets, a full accept queue.
pub const HEDGE_CONNECT_MIN: Duration = Duration::from_millis(20);

/// Hedged answers: for a request that may be sent again, an answer not begun after the
/// backend's smoothed head latency plus four deviations, within these bounds, sends a copy to
/// the next backend, and the first answer wins. 100 ms keeps quick endpoints' ordinary jitter
/// from hedging; past 1 s a visitor waits longer than the fault matrix's checks would, and a
/// slower endpoint's own latency raises the estimate above it anyway.
pub const HEDGE_RESPONSE_MIN: Duration = Duration::from_millis(100);
pub const HEDGE_RESPONSE_MAX: Duration = Duration::from_secs(1);

/// Hedged answers cost a second backend the same work, so they are budgeted: at most this share
/// of a pool's requests (Envoy's retry budget is 20 % of active requests), with a burst of
/// `HEDGE_BURST` for a backend that hangs under a handful of waiting requests at once.
pub const HEDGE_BUDGET_PERCENT: u32 = 10;
pub const HEDGE_BURST: u32 = 32;

/// After SIGTERM, how long `/healthz` answers 503 while traffic is still served, before the
/// listeners stop accepting: long enough for a Kubernetes readiness probe on its usual 1-5 s
/// period, or a load balancer polling as often, to see it and stop sending; short enough that
/// `systemctl stop` stays quick. Behind Cloudflare Load Balancing, whose monitors poll every
/// 60 s by default, set it to the monitor's interval times (retries + 1).
pub const SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
pub const SHUTDOWN_DELAY_MAX: Duration = Duration::from_secs(600);

/// Once the listeners stop accepting, how long requests in flight may take to finish. The
/// process exits as soon as none is left.
pub const GRACE_PERIOD: Duration = Duration::from_secs(30);
pub const GRACE_PERIOD_MAX: Duration = Duration::from_secs(3600);

/// Where Cloudflare names the visitor; `True-Client-IP` (Enterprise) is the other choice.
pub const VISITOR_IP_HEADER: &str = "CF-Connecting-IP";
pub const FORWARDED_FOR_HEADER: &str = "X-Forwarded-For";
pub const REAL_IP_HEADER: &str = "X-Real-IP";

/// How often Cloudflare's ranges are refreshed when `trust.refresh_url` is set: daily, the
/// common practice (they change rarely and are published before use).
pub const RANGE_REFRESH_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// `[[notify]]`: each webhook call or command at most, and the longest allowed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
pub const NOTIFY_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Webhook calls tried again after a failure, and the most allowed.
pub const NOTIFY_RETRIES: u32 = 3;
pub const NOTIFY_RETRIES_MAX: u32 = 10;
/// At most one event of a kind per backend (or pool) in this time.
pub const NOTIFY_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Characters of a query string kept in the access log: enough for the usual parameters, not
/// for a page of tracking data or a token pasted into a URL.
pub const ACCESS_QUERY_MAX: usize = 256;
/// Access log lines waiting for the writer at most (about 300 bytes each: a few MiB).
pub const ACCESS_QUEUE: usize = 16 * 1024;
/// The smallest and largest queue one may ask for.
pub const ACCESS_QUEUE_MIN: usize = 16;
pub const ACCESS_QUEUE_MAX: usize = 1024 * 1024;

/// Serve-stale (`[pools.NAME.stale]`): memory for a pool's store, the largest answer kept, the
/// oldest copy served, and the statuses kept (RFC 9111's heuristically cacheable ones a page
/// answers with, less 206: ranges are not kept).
pub const STALE_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const STALE_MAX_OBJECT_BYTES: u64 = 1024 * 1024;
pub const STALE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
pub const STALE_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];
/// The statuses `statuses` may list: RFC 9111 4.2.2's heuristically cacheable ones, less 206.
pub const STALE_STATUSES_ALLOWED: [u16; 11] =
    [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];
/// The least and most memory a store may be given.
pub const STALE_MAX_BYTES_MIN: u64 = 64 * 1024;
pub const STALE_MAX_BYTES_LIMIT: u64 = 64 * 1024 * 1024 * 1024;
