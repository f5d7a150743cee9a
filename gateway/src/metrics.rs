//! Prometheus metrics. Every per-request counter is resolved to its label values once, when the
//! runtime snapshot is built, so the request path only increments atomics. Gauges that describe
//! state (backend up, active tier) are read from the health table at scrape time, so they can
//! never disagree with it.

use crate::attempts::{GiveUp, RetryCause};
use crate::events::{Event, Events};
use crate::h1::request::Refusal;
use holdfast_config::EventKind;
use holdfast_health::admin::Action;
use holdfast_health::passive::Ejection;
use holdfast_health::table::{BackendHealth, CheckRecord, Observer, PoolHealth, TransitionRecord};
use holdfast_health::{CheckFailure, LocalError, Status, TrafficFailure};
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Seconds; active checks on a LAN take well under a millisecond, timeouts reach seconds.
const CHECK_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric holdfast exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Where events for `[[notify]]` go.
    events: Events,
    notifications: IntCounterVec,
    backend_up: IntGaugeVec,
    backend_admin: IntGaugeVec,
    backend_spares: IntGaugeVec,
    admin_actions: IntCounterVec,
    admin_denied: IntCounterVec,
    access_dropped: IntCounterVec,
    transitions: IntCounterVec,
    check_duration: HistogramVec,
    connect_failures: IntCounterVec,
    no_answers: IntCounterVec,
    retryable_answers: IntCounterVec,
    connections: IntCounterVec,
    rescued: IntCounterVec,
    stale_responses: IntCounterVec,
    stale_entries: IntGaugeVec,
    stale_bytes: IntGaugeVec,
    retries: IntCounterVec,
    requests: IntCounterVec,
    fallbacks: IntCounterVec,
    hedges: IntCounterVec,
    active_tier: IntGaugeVec,
    /// Pre-resolved, indexed by `Refusal as usize`.
    refusals: Arc<[IntCounter]>,
    shed: IntCounter,
    reloads: IntCounterVec,
    rejected: IntCounterVec,
    origin_pulls: IntCounterVec,
    ranges: IntGauge,
    range_refreshes: IntCounterVec,
    range_refreshed_at: IntGauge,
    certificate_expiry: IntGaugeVec,
    last_reload: IntGauge,
    config_info: IntGaugeVec,
    /// Pre-resolved: `h2`, then `http/1.1`.
    tls_connections: [IntCounter; 2],
    h2_streams: IntCounter,
    h2_abuse: IntCounterVec,
    generations: IntGauge,
    visitor_connections: IntGauge,
    requests_in_flight: IntGauge,
    /// Pre-resolved, indexed by `LocalError as usize`.
    local_errors: [IntCounter; LocalError::ALL.len()],
    /// The second (since the epoch) a local error was last logged: at most one line a second.
    local_logged: Arc<AtomicU64>,
}

/// Counters of one pool, resolved once.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    /// By status class: index 0 for 1xx ... 4 for 5xx.
    requests: [IntCounter; 5],
    /// By cause, indexed by [`RetryCause::index`].
    retries: [IntCounter; RetryCause::ALL.len()],
    /// Requests taken off a backend that was taken out while they waited for its answer.
    pub rescued: IntCounter,
    /// Requests answered with a kept copy instead of the fallback.
    pub stale: IntCounter,
    fallbacks: [IntCounter; GiveUp::ALL.len()],
    /// By [`HedgeKind`] and [`HedgeResult`].
    hedges: [[IntCounter; 3]; 2],
}

/// What was hedged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeKind {
    Connect = 0,
    Response = 1,
}

/// How a hedge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeResult {
    /// The second attempt completed first and was used.
    Won = 0,
    /// The first attempt completed first; the second was dropped.
    Lost = 1,
    /// Not started: the pool's hedge budget was spent.
    NoBudget = 2,
}

impl PoolMetrics {
    pub fn hedge(&self, kind: HedgeKind, result: HedgeResult) {
        self.hedges[kind as usize][result as usize].inc();
    }

    pub fn request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
    }

    /// What the pool has answered so far: all requests, and those answered 5xx (the fallback
    /// included); its rescues; its hedges (won or lost).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let all = self.requests.iter().map(IntCounter::get).sum();
        let hedged = self
            .hedges
            .iter()
            .flat_map(|k| {
                [
                    &k[HedgeResult::Won as usize],
                    &k[HedgeResult::Lost as usize],
                ]
            })
            .map(IntCounter::get)
            .sum();
        (all, self.requests[4].get(), self.rescued.get(), hedged)
    }

    pub fn retry(&self, cause: RetryCause) {
        self.retries[cause.index()].inc();
    }

    pub fn fallback(&self, why: GiveUp) {
        self.fallbacks[why as usize].inc();
    }
}

/// Counters of one backend, resolved once.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    connect_failures: [IntCounter; TrafficFailure::ALL.len()],
    no_answers: [IntCounter; TrafficFailure::ALL.len()],
    /// Answers with a status the pool retries on.
    pub retryable_answers: IntCounter,
    /// Connections opened for requests.
    pub opened: IntCounter,
    /// Spare connections (left by a visitor connection that ended) taken by another.
    pub spares_taken: IntCounter,
}

impl BackendMetrics {
    /// A connection that could not be opened.
    pub fn connect_failure(&self, kind: TrafficFailure) {
        self.connect_failures[kind as usize].inc();
    }

    /// A request that went out and got no answer.
    pub fn no_answer(&self, kind: TrafficFailure) {
        self.no_answers[kind as usize].inc();
    }

    /// Its failures so far, by kind: connects that failed, and requests that got no answer.
    pub fn failures(&self) -> impl Iterator<Item = (TrafficFailure, bool, u64)> + '_ {
        TrafficFailure::ALL
            .into_iter()
            .enumerate()
            .flat_map(move |(i, kind)| {
                [
                    (kind, true, self.connect_failures[i].get()),
                    (kind, false, self.no_answers[i].get()),
                ]
            })
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let backend = ["pool", "tier", "backend"];
        let refused = IntCounterVec::new(
            Opts::new(
                "holdfast_refused_requests_total",
                "Requests answered 400, 408, 414 or 431 and never forwarded, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        let tls_connections = IntCounterVec::new(
            Opts::new(
                "holdfast_tls_connections_total",
                "TLS connections that finished their handshake, by the protocol agreed by ALPN: \
                 h2 or http/1.1 (also a client that offered none)",
            ),
            &["protocol"],
        )?;
        registry.register(Box::new(tls_connections.clone()))?;
        let m = Metrics {
            backend_up: IntGaugeVec::new(
                Opts::new("holdfast_backend_up", "1 while the backend may take traffic, 0 otherwise"),
                &backend,
            )?,
            backend_admin: IntGaugeVec::new(
                Opts::new(
                    "holdfast_backend_admin_state",
                    "What an operator asked of the backend: 0 nothing (its checks decide), 1 drain \
                     (no new requests), 2 down (forced out)",
                ),
                &backend,
            )?,
            backend_spares: IntGaugeVec::new(
                Opts::new(
                    "holdfast_upstream_spare_connections",
                    "Idle connections to the backend kept for the next visitor connections (left \
                     by visitor connections that ended), all workers together",
                ),
                &backend,
            )?,
            admin_actions: IntCounterVec::new(
                Opts::new(
                    "holdfast_admin_actions_total",
                    "Operator actions taken on backends (POST /backends/..., holdfast backend), by \
                     action: drain, down, up",
                ),
                &["action"],
            )?,
            admin_denied: IntCounterVec::new(
                Opts::new(
                    "holdfast_admin_denied_total",
                    "Writes (POST) refused on the admin listener, by reason: no_token (none \
                     given), wrong_token, no_token_configured (writes over TCP are off)",
                ),
                &["reason"],
            )?,
            access_dropped: IntCounterVec::new(
                Opts::new(
                    "holdfast_access_log_dropped_total",
                    "Access log lines lost, by reason: queue_full (the writer fell behind; the \
                     request was not slowed), write_failed (the file could not be written)",
                ),
                &["reason"],
            )?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "holdfast_backend_transitions_total",
                    "Changes of backend status, by new status and reason",
                ),
                &["pool", "tier", "backend", "to", "reason"],
            )?,
            check_duration: HistogramVec::new(
                HistogramOpts::new(
                    "holdfast_health_check_duration_seconds",
                    "Time taken by active health checks, by check kind and result (pass, fail, not_run: holdfast was short of descriptors, ports or memory)",
                )
                .buckets(CHECK_DURATION_BUCKETS.to_vec()),
                &["pool", "backend", "check", "result"],
            )?,
            connect_failures: IntCounterVec::new(
                Opts::new(
                    "holdfast_upstream_connect_failures_total",
                    "Connections to a backend that could not be opened for a real request, by \
                     kind: refused (would-be 521), timeout (522), no_route (523), tls (525), \
                     reset (520), other",
                ),
                &["pool", "backend", "kind"],
            )?,
            no_answers: IntCounterVec::new(
                Opts::new(
                    "holdfast_upstream_no_answer_total",
                    "Real requests sent to a backend that gave no answer, by kind: reset (the \
                     connection broke, would-be 520), timeout (no response head by its deadline), \
                     bad_response (not HTTP, 520) (answers with a retry_on_status status are \
                     holdfast_upstream_retryable_answers_total)",
                ),
                &["pool", "backend", "kind"],
            )?,
            retryable_answers: IntCounterVec::new(
                Opts::new(
                    "holdfast_upstream_retryable_answers_total",
                    "Backend answers with a status in the pool's retry_on_status (502, 503, 504 by \
                     default): the request went on to the next backend, or this answer was passed \
                     on when none was left",
                ),
                &["pool", "backend"],
            )?,
            connections: IntCounterVec::new(
                Opts::new(
                    "holdfast_upstream_connections_total",
                    "Backend connections a visitor connection began to use, by source: opened \
                     (a new connection; a hedge's that lost included) or spare (one another visitor connection left when it \
                     ended); a connection kept for the same visitor's next request is not counted \
                     again",
                ),
                &["pool", "backend", "source"],
            )?,
            stale_responses: IntCounterVec::new(
                Opts::new(
                    "holdfast_stale_responses_total",
                    "Requests answered with a kept copy (serve-stale) when they would have got the \
                     fallback: no backend could answer",
                ),
                &["pool"],
            )?,
            stale_entries: IntGaugeVec::new(
                Opts::new(
                    "holdfast_stale_entries",
                    "Entries in the pool's serve-stale store (copies, and per-URL indexes of the \
                     copies of an answer that varies)",
                ),
                &["pool"],
            )?,
            stale_bytes: IntGaugeVec::new(
                Opts::new(
                    "holdfast_stale_bytes",
                    "Memory the pool's serve-stale store counts for its entries (keys, heads, \
                     bodies and bookkeeping), at most its max_bytes",
                ),
                &["pool"],
            )?,
            rescued: IntCounterVec::new(
                Opts::new(
                    "holdfast_rescued_requests_total",
                    "Idempotent requests waiting for an answer from a backend when it was taken out, \
                     sent again to another backend",
                ),
                &["pool"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "holdfast_upstream_retries_total",
                    "Attempts beyond the first, each sent to another backend, by why the previous \
                     one did not answer: how it failed (refused, timeout, reset, tls, no_route, \
                     other, bad_response, bad_status for a held 502/503/504), rescued (its \
                     backend taken out meanwhile), busy (at its max_in_flight)",
                ),
                &["pool", "reason"],
            )?,
            requests: IntCounterVec::new(
                Opts::new("holdfast_requests_total", "Requests answered, by pool and status class"),
                &["pool", "class"],
            )?,
            fallbacks: IntCounterVec::new(
                Opts::new(
                    "holdfast_fallback_responses_total",
                    "Requests answered with the fallback because no backend could serve, by reason",
                ),
                &["pool", "reason"],
            )?,
            hedges: IntCounterVec::new(
                Opts::new(
                    "holdfast_upstream_hedges_total",
                    "Second attempts started beside a slow one on the next backend, by kind (connect, \
                     response) and result: won (it completed first and was used), lost (the first \
                     did), no_budget (not started: the pool's hedge budget was spent)",
                ),
                &["pool", "kind", "result"],
            )?,
            refusals: Refusal::ALL
                .iter()
                .map(|r| refused.with_label_values(&[r.key()]))
                .collect(),
            shed: IntCounter::new(
                "holdfast_shed_connections_total",
                "Visitor connections over listen.max_connections, answered with the fallback \
                 (503, Retry-After) and closed",
            )?,
            active_tier: IntGaugeVec::new(
                Opts::new(
                    "holdfast_active_tier",
                    "Index of the tier taking new requests (0 = primaries), -1 when none can serve",
                ),
                &["pool"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "holdfast_config_reloads_total",
                    "Config reloads, by result: success (the new config serves), failure (it was \
                     invalid or could not be applied; the running config kept serving)",
                ),
                &["result"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "holdfast_rejected_connections_total",
                    "Connections closed at accept, before a byte was read, by reason: untrusted \
                     (a peer outside the trusted ranges and the exceptions on a listen.trusted_only \
                     listener)",
                ),
                &["reason"],
            )?,
            origin_pulls: IntCounterVec::new(
                Opts::new(
                    "holdfast_origin_pull_failures_total",
                    "TLS clients without a client certificate that verifies against the listener's \
                     Authenticated Origin Pulls CA, by mode: require (the handshake was refused), \
                     log (served all the same)",
                ),
                &["mode"],
            )?,
            ranges: IntGauge::new(
                "holdfast_trusted_ranges",
                "Address ranges whose peers are trusted to name the visitor: Cloudflare's (built in \
                 and refreshed) and trust.trusted_proxies",
            )?,
            range_refreshes: IntCounterVec::new(
                Opts::new(
                    "holdfast_trusted_ranges_refreshes_total",
                    "Refreshes of Cloudflare's ranges from trust.refresh_url, by result: success (a \
                     whole list, now in use), failure (unreachable, an error or not a list: the \
                     ranges in use stay)",
                ),
                &["result"],
            )?,
            range_refreshed_at: IntGauge::new(
                "holdfast_trusted_ranges_last_refresh_success_timestamp_seconds",
                "When Cloudflare's ranges were last refreshed, in seconds since the Unix epoch (0: \
                 never)",
            )?,
            certificate_expiry: IntGaugeVec::new(
                Opts::new(
                    "holdfast_certificate_expiry_timestamp_seconds",
                    "When each HTTPS certificate in use expires, in seconds since the Unix epoch, by \
                     its first name and file",
                ),
                &["name", "file"],
            )?,
            last_reload: IntGauge::new(
                "holdfast_config_last_reload_success_timestamp_seconds",
                "When the running config was loaded (at start or by the last reload that took), \
                 in seconds since the Unix epoch",
            )?,
            config_info: IntGaugeVec::new(
                Opts::new(
                    "holdfast_config_info",
                    "1 for the running config: its SHA-256 (of the config file, as sha256sum \
                     prints it) and generation (1 at start, one more at each reload that took)",
                ),
                &["hash", "generation"],
            )?,
            tls_connections: ["h2", "http/1.1"].map(|p| tls_connections.with_label_values(&[p])),
            h2_streams: IntCounter::new(
                "holdfast_h2_streams_total",
                "HTTP/2 streams (requests) accepted from visitors",
            )?,
            h2_abuse: IntCounterVec::new(
                Opts::new(
                    "holdfast_h2_abuse_total",
                    "HTTP/2 connections closed with ENHANCE_YOUR_CALM as an attack, by kind: \
                     rapid_reset, ping_flood, settings_flood, priority_flood, empty_frames \
                     (holdfast's limits), limits (the h2 library's: resets of streams not yet \
                     accepted, CONTINUATION frames, header list size)",
                ),
                &["kind"],
            )?,
            local_errors: {
                let vec = IntCounterVec::new(
                    Opts::new(
                        "holdfast_local_errors_total",
                        "Connections the gateway could not open or accept for its own trouble, by \
                         kind: descriptors (open-file limit, or the budget kept for backend \
                         connections), ports (no local port or address), memory. Never counted \
                         against a backend; its request got the fallback",
                    ),
                    &["kind"],
                )?;
                registry.register(Box::new(vec.clone()))?;
                LocalError::ALL.map(|kind| vec.with_label_values(&[kind.as_str()]))
            },
            local_logged: Arc::new(AtomicU64::new(0)),
            generations: {
                let gauge = IntGauge::new(
                    "holdfast_config_generations_live",
                    "Configs held in memory: the running one, and replaced ones a request still \
                     uses (a slow answer, an open tunnel). Stays above 1 long after a reload only \
                     while such requests last",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            visitor_connections: {
                let gauge = IntGauge::new(
                    "holdfast_visitor_connections",
                    "Visitor connections open now, all listeners together (over-the-cap ones \
                     being answered included); new ones beyond listen.max_connections get a \
                     fast 503",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            requests_in_flight: {
                let gauge = IntGauge::new(
                    "holdfast_requests_in_flight",
                    "Requests being answered now (HTTP/2 streams included), from their head read \
                     to their answer sent",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            events: Events::default(),
            notifications: {
                let vec = IntCounterVec::new(
                    Opts::new(
                        "holdfast_notifications_total",
                        "[[notify]] deliveries, by way (webhook, exec) and result: sent, failed \
                         (after its retries), limited (min_interval), dropped (the target's \
                         queue of 256 was full); events the process's queue could not take \
                         are way=queue, result=dropped",
                    ),
                    &["way", "result"],
                )?;
                registry.register(Box::new(vec.clone()))?;
                for way in ["webhook", "exec"] {
                    for result in ["sent", "failed", "limited", "dropped"] {
                        vec.with_label_values(&[way, result]);
                    }
                }
                vec.with_label_values(&["queue", "dropped"]);
                vec
            },
            registry,
        };
        for kind in [
            "rapid_reset",
            "ping_flood",
            "settings_flood",
            "priority_flood",
            "empty_frames",
            "limits",
        ] {
            m.h2_abuse.with_label_values(&[kind]);
        }
        for result in ["success", "failure"] {
            m.reloads.with_label_values(&[result]);
        }
        m.rejected.with_label_values(&["untrusted"]);
        for mode in ["log", "require"] {
            m.origin_pulls.with_label_values(&[mode]);
        }
        for result in ["success", "failure"] {
            m.range_refreshes.with_label_values(&[result]);
        }
        // process_open_fds, process_max_fds, process_resident_memory_bytes, CPU seconds: the
        // resources the guides for a 521 say to watch.
        m.registry
            .register(Box::new(ProcessCollector::for_self()))?;
        m.registry.register(Box::new(m.backend_up.clone()))?;
        m.registry.register(Box::new(m.backend_admin.clone()))?;
        m.registry.register(Box::new(m.backend_spares.clone()))?;
        m.registry.register(Box::new(m.admin_actions.clone()))?;
        m.registry.register(Box::new(m.admin_denied.clone()))?;
        for reason in ["no_token", "wrong_token", "no_token_configured"] {
            m.admin_denied.with_label_values(&[reason]);
        }
        for action in Action::ALL {
            m.admin_actions.with_label_values(&[action.as_str()]);
        }
        m.registry.register(Box::new(m.access_dropped.clone()))?;
        m.registry.register(Box::new(m.transitions.clone()))?;
        m.registry.register(Box::new(m.check_duration.clone()))?;
        m.registry.register(Box::new(m.connect_failures.clone()))?;
        m.registry.register(Box::new(m.no_answers.clone()))?;
        m.registry.register(Box::new(m.retryable_answers.clone()))?;
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.rescued.clone()))?;
        m.registry.register(Box::new(m.stale_responses.clone()))?;
        m.registry.register(Box::new(m.stale_entries.clone()))?;
        m.registry.register(Box::new(m.stale_bytes.clone()))?;
        m.registry.register(Box::new(m.retries.clone()))?;
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.fallbacks.clone()))?;
        m.registry.register(Box::new(m.hedges.clone()))?;
        m.registry.register(Box::new(m.active_tier.clone()))?;
        m.registry.register(Box::new(m.shed.clone()))?;
        m.registry.register(Box::new(m.reloads.clone()))?;
        m.registry.register(Box::new(m.rejected.clone()))?;
        m.registry.register(Box::new(m.origin_pulls.clone()))?;
        m.registry.register(Box::new(m.ranges.clone()))?;
        m.registry.register(Box::new(m.range_refreshes.clone()))?;
        m.registry
            .register(Box::new(m.range_refreshed_at.clone()))?;
        m.registry
            .register(Box::new(m.certificate_expiry.clone()))?;
        m.registry.register(Box::new(m.last_reload.clone()))?;
        m.registry.register(Box::new(m.config_info.clone()))?;
        m.registry.register(Box::new(m.h2_streams.clone()))?;
        m.registry.register(Box::new(m.h2_abuse.clone()))?;
        Ok(m)
    }

    /// Counts a refresh of Cloudflare's ranges.
    pub fn ranges_refreshed(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.range_refreshes.with_label_values(&[result]).inc();
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.range_refreshed_at
                .set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }

    /// How many configs are held in memory now (at scrape time).
    pub fn generations_live(&self, n: usize) {
        self.generations.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Where events for `[[notify]]` are put.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Queues an event for `[[notify]]`; counted when the queue is full.
    pub fn event(&self, event: Event) {
        if !self.events.send(event) {
            self.notification("queue", "dropped");
        }
    }

    /// One `[[notify]]` delivery: `way` webhook or exec, `result` sent, failed or limited (or
    /// `queue`, `dropped`: an event the full queue could not take).
    pub fn notification(&self, way: &str, result: &str) {
        self.notifications.with_label_values(&[way, result]).inc();
    }

    /// The access log's counters (created at 0, so that they show before anything is lost).
    pub fn access_log(&self) -> crate::access::Counters {
        crate::access::Counters {
            queue_full: self.access_dropped.with_label_values(&["queue_full"]),
            write_failed: self.access_dropped.with_label_values(&["write_failed"]),
        }
    }

    /// A write refused on the admin listener.
    pub fn admin_denied(&self, reason: &str) {
        self.admin_denied.with_label_values(&[reason]).inc();
    }

    /// An operator's action on a backend.
    pub fn admin_action(&self, action: Action) {
        self.admin_actions
            .with_label_values(&[action.as_str()])
            .inc();
    }

    /// Visitor connections open and requests in flight now (at scrape time).
    pub fn load(&self, connections: usize, in_flight: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.visitor_connections.set(gauge(connections));
        self.requests_in_flight.set(gauge(in_flight));
    }

    /// The number of trusted ranges now (set before each scrape).
    pub fn trusted_ranges(&self, n: usize) {
        self.ranges.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a client certificate that did not verify.
    pub fn origin_pull_failed(&self, mode: holdfast_config::PullMode) {
        let mode = match mode {
            holdfast_config::PullMode::Log => "log",
            holdfast_config::PullMode::Require => "require",
        };
        self.origin_pulls.with_label_values(&[mode]).inc();
    }

    /// The certificates in use now: their expiry, and a warning for each that expires within
    /// [`crate::certs::EXPIRY_WARNING`].
    pub fn certificates(&self, certs: &[crate::certs::Certificate]) {
        self.certificate_expiry.reset();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for c in certs {
            let name = c.names.first().map_or("", String::as_str);
            self.certificate_expiry
                .with_label_values(&[name, &c.file])
                .set(c.not_after);
            let left = c.not_after - now;
            if left < crate::certs::EXPIRY_WARNING.as_secs() as i64 {
                tracing::warn!(file = %c.file, name, days_left = left / 86_400, "an HTTPS certificate expires soon: renew it (the new files are picked up without a restart)");
                let mut event = Event::new(
                    EventKind::CertificateExpiring,
                    format!("{name}: {} days left", left / 86_400),
                );
                event.detail = Some(c.file.clone());
                self.event(event);
            }
        }
    }

    /// Counts a TLS connection by the protocol ALPN agreed on (HTTP/1.1 when not `h2`).
    pub fn tls_connection(&self, h2: bool) {
        self.tls_connections[usize::from(!h2)].inc();
    }

    /// Counts an HTTP/2 stream accepted.
    pub fn h2_stream(&self) {
        self.h2_streams.inc();
    }

    /// Counts an HTTP/2 connection closed as an attack.
    pub fn h2_abuse(&self, kind: &str) {
        self.h2_abuse.with_label_values(&[kind]).inc();
    }

    /// Counts a connection closed at accept.
    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a reload, by whether it took.
    pub fn reloaded(&self, took: bool) {
        let result = if took { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// The config now running, loaded at `at`.
    pub fn running(&self, hash: &str, generation: u64, at: std::time::SystemTime) {
        self.config_info.reset();
        self.config_info
            .with_label_values(&[hash, &generation.to_string()])
            .set(1);
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// Counts the gateway's own trouble met while `doing` (`connect`, `accept`, `check`), and
    /// logs it at most once a second (under exhaustion it comes thousands of times a second).
    pub fn local_error(&self, kind: LocalError, doing: &'static str) {
        self.local_errors[kind as usize].inc();
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.local_logged.load(Ordering::Relaxed);
        if last != second
            && self
                .local_logged
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                kind = kind.as_str(), doing,
                "holdfast is short of resources: what met it gets the fallback and no backend is blamed (holdfast_local_errors_total counts each; raise LimitNOFILE, or lower listen.max_connections)"
            );
        }
    }

    /// Counts a connection shed for being over the cap.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// Counts a request refused before forwarding.
    pub fn refused(&self, refusal: Refusal) {
        if let Some(counter) = self.refusals.get(refusal as usize) {
            counter.inc();
        }
    }

    pub fn pool(&self, pool: &str) -> PoolMetrics {
        PoolMetrics {
            requests: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .map(|class| self.requests.with_label_values(&[pool, class])),
            retries: RetryCause::ALL
                .map(|cause| self.retries.with_label_values(&[pool, cause.as_str()])),
            rescued: self.rescued.with_label_values(&[pool]),
            stale: self.stale_responses.with_label_values(&[pool]),
            fallbacks: GiveUp::ALL
                .map(|why| self.fallbacks.with_label_values(&[pool, why.as_str()])),
            hedges: ["connect", "response"].map(|kind| {
                ["won", "lost", "no_budget"]
                    .map(|result| self.hedges.with_label_values(&[pool, kind, result]))
            }),
        }
    }

    pub fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
        BackendMetrics {
            connect_failures: TrafficFailure::ALL.map(|kind| {
                self.connect_failures
                    .with_label_values(&[pool, backend, kind.as_str()])
            }),
            no_answers: TrafficFailure::ALL.map(|kind| {
                self.no_answers
                    .with_label_values(&[pool, backend, kind.as_str()])
            }),
            retryable_answers: self.retryable_answers.with_label_values(&[pool, backend]),
            opened: self
                .connections
                .with_label_values(&[pool, backend, "opened"]),
            spares_taken: self
                .connections
                .with_label_values(&[pool, backend, "spare"]),
        }
    }

    /// The serve-stale stores' sizes, `(pool, entries, bytes)` for each pool that has one (a
    /// pool without is no longer shown).
    pub fn stale_stores(&self, stores: impl Iterator<Item = (String, u64, u64)>) {
        self.stale_entries.reset();
        self.stale_bytes.reset();
        for (pool, entries, bytes) in stores {
            let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.stale_entries
                .with_label_values(&[&pool])
                .set(as_gauge(entries));
            self.stale_bytes
                .with_label_values(&[&pool])
                .set(as_gauge(bytes));
        }
    }

    /// The text exposition of every metric, state gauges refreshed from `pools` first (a
    /// backend or pool a reload removed is no longer shown).
    pub fn render(&self, pools: &[PoolHealth]) -> Vec<u8> {
        self.active_tier.reset();
        self.backend_up.reset();
        self.backend_admin.reset();
        self.backend_spares.reset();
        for pool in pools {
            let tier = pool.active_tier().map_or(-1, |t| t as i64);
            self.active_tier.with_label_values(&[&pool.name]).set(tier);
            for b in pool.backends() {
                self.backend_up
                    .with_label_values(&[&b.pool, &b.tier, &b.backend.name])
                    .set(i64::from(b.is_usable()));
                self.backend_admin
                    .with_label_values(&[&b.pool, &b.tier, &b.backend.name])
                    .set(b.admin_state().gauge());
                self.backend_spares
                    .with_label_values(&[&b.pool, &b.tier, &b.backend.name])
                    .set(i64::try_from(b.spares()).unwrap_or(i64::MAX));
            }
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Observer for Metrics {
    fn on_check(&self, b: &BackendHealth, record: &CheckRecord) {
        let result = match &record.result {
            Ok(()) => "pass",
            Err(CheckFailure::Local(kind)) => {
                self.local_error(*kind, "check");
                "not_run"
            }
            Err(_) => "fail",
        };
        self.check_duration
            .with_label_values(&[&b.pool, &b.backend.name, record.kind, result])
            .observe(record.took.as_secs_f64());
        if let Err(why) = &record.result {
            tracing::debug!(pool = %b.pool, backend = %b.backend.name, check = record.kind, %why, "check failed");
        }
    }

    fn on_ejection(&self, b: &BackendHealth, ejection: &Ejection, taken_out: bool) {
        let (pool, backend) = (&b.pool, &b.backend.name);
        if let Some((failures, requests)) = ejection.rate {
            tracing::warn!(%pool, %backend, failures, requests, "failure rate at or above the pool's threshold");
        }
        if !taken_out {
            tracing::warn!(
                %pool, %backend, reason = ejection.label(),
                "passive detection would take this backend out; kept in: the pool would be left with too few backends (max_ejection_percent, or the last that can serve)"
            );
        }
    }

    fn on_transition(&self, b: &BackendHealth, record: &TransitionRecord) {
        let to = record.transition.to;
        self.transitions
            .with_label_values(&[
                &b.pool,
                &b.tier,
                &b.backend.name,
                to.as_str(),
                record.reason,
            ])
            .inc();
        let (pool, tier, backend, addr) = (&b.pool, &b.tier, &b.backend.name, b.backend.addr);
        let kind = match to {
            Status::Up => EventKind::BackendUp,
            _ => EventKind::BackendDown,
        };
        // A backend found up by its first check is no news; one found down is.
        if !(kind == EventKind::BackendUp && record.transition.from == Status::Unknown) {
            let mut event = Event::new(kind, record.reason);
            event.pool = Some(pool.to_string());
            event.tier = Some(tier.to_string());
            event.backend = Some(backend.clone());
            event.address = Some(b.backend.address.clone());
            event.detail = record
                .hold_down
                .map(|hold| format!("held down for {}", humantime::format_duration(hold)));
            self.event(event);
        }
        match to {
            Status::Up => {
                tracing::info!(%pool, %tier, %backend, %addr, reason = record.reason, "backend up")
            }
            _ => match record.hold_down {
                Some(hold) => tracing::warn!(
                    %pool, %tier, %backend, %addr, reason = record.reason,
                    hold_down = %humantime::format_duration(hold),
                    "backend down again soon after coming back: kept out for the hold-down at least"
                ),
                None => {
                    tracing::warn!(%pool, %tier, %backend, %addr, reason = record.reason, "backend down")
                }
            },
        }
    }
}
