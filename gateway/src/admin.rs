//! The admin listener (loopback by default) and the control socket: `/` (the status page),
//! `/metrics` (Prometheus text), `/healthz` (200 while
//! the default pool can serve through any tier, 503 otherwise and while the process stops: for
//! Cloudflare Load Balancing monitors), `/readyz` (503 only while the process stops: Kubernetes'
//! readiness), `/livez` (503 when a worker thread's event loop does not answer: Kubernetes'
//! liveness), `/status` (JSON: the running
//! config, every pool, tier and backend), `POST /reload` (what `holdfast reload` calls) and
//! `POST /upgrade` (what `holdfast upgrade` calls: starts the next process, which takes the
//! listening sockets over) and `POST /backends/POOL/BACKEND/ACTION`. Writes need the control
//! socket or the admin token ([`Admin::may_write`]).

use crate::cap::Cap;
use crate::history::History;
use crate::lifecycle::Relaunch;
use crate::process::Lifecycle;
use crate::reload::Reloader;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use holdfast_health::admin::Action;
use holdfast_health::table::{CheckRecord, PoolHealth};
use holdfast_health::BackendHealth;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;

pub struct Admin {
    runtime: Arc<ArcSwap<Runtime>>,
    reloader: Arc<Reloader>,
    lifecycle: Arc<Lifecycle>,
    /// Visitor connections, all listeners together.
    visitors: Arc<Cap>,
    /// How to start the next process (not in the demo).
    pub relaunch: Option<Relaunch>,
    /// The control socket, where writes need no token (named in the refusal of one that
    /// needs it).
    pub control_sock: Option<std::path::PathBuf>,
    /// The last minutes of each pool, for the page's charts.
    pub history: Option<Arc<History>>,
    /// The worker threads, for `/livez` (not in the demo).
    pub listeners: Option<Arc<crate::listen::Listeners>>,
    /// When it started serving (the process's uptime, near enough).
    started: std::time::Instant,
}

impl Admin {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        reloader: Arc<Reloader>,
        lifecycle: Arc<Lifecycle>,
        visitors: Arc<Cap>,
    ) -> Self {
        Admin {
            runtime,
            reloader,
            lifecycle,
            visitors,
            relaunch: None,
            control_sock: None,
            history: None,
            listeners: None,
            started: std::time::Instant::now(),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let runtime = self.runtime.load_full();
        let path = session.req_header().uri.path().to_string();
        let post = session.req_header().method == http::Method::POST;
        if post {
            if let Err((status, why)) = self.may_write(session, &runtime) {
                return json_reply(status, &json!({ "error": why }));
            }
        }
        match path.as_str() {
            "/" | "/index.html" if !post => {
                let mut page = reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.into());
                // Nothing but itself: inline style and script, requests to this listener only.
                let policy = "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; \
                              script-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
                              form-action 'none'; frame-ancestors 'none'";
                if let Ok(v) = policy.parse() {
                    page.headers_mut()
                        .insert(http::header::CONTENT_SECURITY_POLICY, v);
                }
                page
            }
            "/metrics" => {
                runtime.metrics.trusted_ranges(runtime.trust.len());
                let live = self.reloader.generations_live();
                runtime.metrics.generations_live(live);
                runtime
                    .metrics
                    .load(self.visitors.live(), self.lifecycle.in_flight());
                runtime
                    .metrics
                    .stale_stores(runtime.pools.iter().filter_map(|p| {
                        let (entries, bytes) = p.stale.as_ref()?.store.size();
                        Some((p.name.to_string(), entries, bytes))
                    }));
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    runtime.metrics.render(&runtime.health_pools),
                )
            }
            "/reload" if post => {
                let reloaded = self.reloader.reload("POST /reload").await;
                let (status, doc) = match reloaded {
                    Ok(r) => (StatusCode::OK, r.to_json()),
                    Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_json()),
                };
                json_reply(status, &doc)
            }
            "/upgrade" if post => {
                let (status, doc) = match self.relaunch.clone() {
                    None => (
                        StatusCode::CONFLICT,
                        json!({ "error": "this process was not started by `holdfast run`" }),
                    ),
                    Some(relaunch) => {
                        match tokio::task::spawn_blocking(move || relaunch.start()).await {
                            Ok(Ok(pid)) => (
                                StatusCode::OK,
                                json!({ "old_pid": std::process::id(), "new_pid": pid }),
                            ),
                            Ok(Err(e)) => {
                                (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e }))
                            }
                            Err(e) => (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                json!({ "error": e.to_string() }),
                            ),
                        }
                    }
                };
                json_reply(status, &doc)
            }
            path if path.starts_with("/backends/") && post => {
                let peer = session
                    .client_addr()
                    .map_or_else(|| "unknown".to_string(), |a| a.to_string());
                let force = session
                    .req_header()
                    .uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "force=1"));
                let (status, doc) = backend_action(&runtime, path, &peer, force);
                json_reply(status, &doc)
            }
            "/reload" => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"POST /reload reloads the config file\n".to_vec(),
            ),
            // Kubernetes' readiness: whether to send this process traffic. Only a stop says no:
            // while no backend can serve, holdfast still answers (a stale copy, the fallback),
            // and taking every replica out of the Service would refuse connections instead.
            "/readyz" => match self.lifecycle.is_draining() {
                true => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"stopping\n".to_vec(),
                ),
                false => reply(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
            },
            // Kubernetes' liveness: every worker thread's event loop answers within a second
            // (what systemd's watchdog is fed on). A stuck process is restarted; one whose
            // backends are down is not.
            "/livez" => {
                let alive = match &self.listeners {
                    Some(listeners) => listeners.workers_answer().await,
                    None => true,
                };
                match alive {
                    true => reply(StatusCode::OK, "text/plain", b"alive\n".to_vec()),
                    false => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"a worker thread does not answer\n".to_vec(),
                    ),
                }
            }
            "/healthz" if self.lifecycle.is_draining() => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"stopping\n".to_vec(),
            ),
            "/healthz" => {
                let serving = runtime
                    .health_pools
                    .get(runtime.config.routes.default)
                    .and_then(PoolHealth::active_tier)
                    .is_some();
                match serving {
                    true => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
                    false => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"no backend of the default pool can serve\n".to_vec(),
                    ),
                }
            }
            "/status" => {
                let mut doc = status(&runtime);
                doc["draining"] = self.lifecycle.is_draining().into();
                doc["pid"] = std::process::id().into();
                let (open, max) = open_files();
                doc["process"] = json!({
                    "pid": std::process::id(),
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": self.started.elapsed().as_secs(),
                    "open_files": open,
                    "max_open_files": max,
                });
                doc["config"]["path"] = self.reloader.path().display().to_string().into();
                doc["config"]["last_reload"] = self.reloader.last().unwrap_or(Value::Null);
                doc["config"]["generations_live"] = self.reloader.generations_live().into();
                if let Some(history) = &self.history {
                    let pools = runtime.config.pools.iter().filter_map(|p| {
                        let ring = history.of(&p.name)?;
                        Some((p.name.clone(), ring.json()))
                    });
                    doc["history"] = Value::Object(pools.collect());
                }
                doc["visitors"] = json!({
                    "connections": self.visitors.live(),
                    "max_connections": self.visitors.max(),
                    "requests_in_flight": self.lifecycle.in_flight(),
                });
                json_reply(StatusCode::OK, &doc)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /metrics, /healthz, /status, POST /reload or POST /upgrade\n"
                    .to_vec(),
            ),
        }
    }
}

/// A JSON document, pretty-printed (operators read these with curl).
fn json_reply(status: StatusCode, doc: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(doc).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-store".parse() {
        response
            .headers_mut()
            .insert(http::header::CACHE_CONTROL, v);
    }
    let length = response.body().len();
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, length.into());
    response
}

impl Admin {
    /// Whether the request may write (reload, upgrade, act on a backend): always through the
    /// control socket (only its owner can connect); over TCP with `Authorization: Bearer
    /// TOKEN` matching `listen.admin_token`, and never when none is configured.
    fn may_write(
        &self,
        session: &ServerSession,
        runtime: &Runtime,
    ) -> Result<(), (StatusCode, String)> {
        let local = matches!(session.server_addr(), Some(SocketAddr::Unix(_)));
        if local {
            return Ok(());
        }
        let peer = session
            .client_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let socket = self
            .control_sock
            .as_ref()
            .map_or_else(String::new, |p| format!(" ({})", p.display()));
        let Some(token) = &runtime.config.listen.admin_token else {
            runtime.metrics.admin_denied("no_token_configured");
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "writes over TCP need listen.admin_token; without one they go through the \
                     control socket{socket}, which holdfast reload, upgrade and backend use"
                ),
            ));
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match given {
            Some(given) if token.matches(given) => Ok(()),
            given => {
                let reason = if given.is_some() {
                    "wrong_token"
                } else {
                    "no_token"
                };
                runtime.metrics.admin_denied(reason);
                tracing::warn!(%peer, reason, "admin write refused: a missing or wrong token");
                Err((
                    StatusCode::UNAUTHORIZED,
                    "this write needs Authorization: Bearer TOKEN (listen.admin_token)".to_string(),
                ))
            }
        }
    }
}

/// The descriptors this process has open, and its limit (`None` when /proc does not say).
fn open_files() -> (Option<usize>, Option<u64>) {
    let open = std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count);
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        });
    (open, max)
}

/// The status page: one file, no external assets (it polls `/status` once a second).
const PAGE: &str = include_str!("page.html");

/// `POST /backends/{pool}/{backend}/{drain|down|up}`, asked by `peer`: the backend's new state,
/// or why not (404: no such pool, backend or action; 409: the last backend that can serve,
/// without `force`).
fn backend_action(runtime: &Runtime, path: &str, peer: &str, force: bool) -> (StatusCode, Value) {
    let parts: Vec<&str> = path.trim_start_matches("/backends/").split('/').collect();
    let [pool_name, name, action] = parts[..] else {
        let why = "expected POST /backends/POOL/BACKEND/drain|down|up";
        return (StatusCode::NOT_FOUND, json!({ "error": why }));
    };
    let (pool_name, name) = (&*decoded(pool_name), &*decoded(name));
    let Some(action) = Action::from_name(action) else {
        let why = format!("{action:?} is not drain, down or up");
        return (StatusCode::NOT_FOUND, json!({ "error": why }));
    };
    let Some(pool) = runtime.health_pools.iter().find(|p| *p.name == *pool_name) else {
        let names: Vec<&str> = runtime.health_pools.iter().map(|p| &*p.name).collect();
        let why = format!("no pool named {pool_name:?} (pools: {})", names.join(", "));
        return (StatusCode::NOT_FOUND, json!({ "error": why }));
    };
    let Some(backend) = pool.backends().find(|b| b.backend.name == name) else {
        let names: Vec<&str> = pool.backends().map(|b| b.backend.name.as_str()).collect();
        let why = format!(
            "pool {pool_name:?} has no backend named {name:?} (backends: {})",
            names.join(", ")
        );
        return (StatusCode::NOT_FOUND, json!({ "error": why }));
    };
    match runtime.health.act(backend, action, peer, force) {
        Ok(()) => {
            runtime.metrics.admin_action(action);
            tracing::info!(
                pool = pool_name,
                backend = name,
                action = action.as_str(),
                by = peer,
                force,
                "backend {}",
                match action {
                    Action::Drain => "drained: no new requests, those in flight finish",
                    Action::Down => "forced out: no new requests, those in flight finish",
                    Action::Up => "returned to its checks' verdict",
                }
            );
            let weight = runtime
                .config
                .pools
                .iter()
                .filter(|p| p.name == pool_name)
                .flat_map(|p| p.backends())
                .find(|(_, b)| b.name == name)
                .map_or(1, |(_, b)| b.weight.get());
            (StatusCode::OK, self::backend(backend, weight, pool))
        }
        Err(why) => (StatusCode::CONFLICT, json!({ "error": why })),
    }
}

/// A path segment with its percent-escapes decoded (what `holdfast backend` encodes); an escape
/// that is not one is kept as it is.
fn decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `/status` document.
pub fn status(runtime: &Runtime) -> Value {
    let default = runtime.config.routes.default;
    let pools: Vec<Value> = runtime
        .health_pools
        .iter()
        .zip(&runtime.config.pools)
        .enumerate()
        .map(|(i, (pool, configured))| {
            let active = pool.active_tier();
            json!({
                "name": &*pool.name,
                "default": i == default,
                "can_serve": active.is_some(),
                "active_tier": active.map(|t| t as i64).unwrap_or(-1),
                "tiers": pool.tiers.iter().zip(&configured.tiers).map(|(tier, c)| json!({
                    "name": c.name,
                    "backends": tier.iter().zip(&c.backends).map(|(b, c)| backend(b, c.weight.get(), pool)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "config": {
            "hash": runtime.hashes.file,
            "serving_hash": runtime.hashes.serving,
            "generation": runtime.generation,
            "loaded_at": timestamp(runtime.loaded_at),
        },
        "pools": pools,
    })
}

fn backend(b: &BackendHealth, weight: u32, pool: &PoolHealth) -> Value {
    let details = b.details();
    let checks: Vec<Value> = details
        .checks
        .iter()
        .zip(&pool.checks)
        .map(|(record, check)| match record {
            Some(r) => check_json(r, check.interval),
            None => json!({ "kind": holdfast_health::table::check_kind_label(&check.kind), "result": null }),
        })
        .collect();
    let (held_for, recent_ejections) = b.hold_down();
    let in_flight = b.in_flight();
    let admin = b.admin().map(|m| {
        json!({
            "state": m.admin.as_str(),
            "shown": m.admin.shown(in_flight),
            "by": m.by,
            "at": timestamp(m.at),
        })
    });
    json!({
        "name": b.backend.name,
        "address": b.backend.address,
        "resolved": b.backend.addr.to_string(),
        "weight": weight,
        "status": b.status().as_str(),
        "usable": b.is_usable(),
        // What an operator asked (drain, down), by whom and when; `null` when the checks decide.
        "admin": admin,
        "in_flight": in_flight,
        "checks": checks,
        // Flapping: ejections within the pool's flap window, and what is left of the hold-down.
        "recent_ejections": recent_ejections,
        "held_down_ms": held_for.map(|d| d.as_millis() as u64),
        // Slow start: the share of its requests it takes now, while ramping up.
        "slow_start_share": b.ramp(),
        "last_transition": details.last_transition.map(|t| json!({
            "from": t.transition.from.as_str(),
            "to": t.transition.to.as_str(),
            "reason": t.reason,
            "at": timestamp(t.at),
        })),
    })
}

fn check_json(r: &CheckRecord, interval: std::time::Duration) -> Value {
    json!({
        "kind": r.kind,
        "result": if r.result.is_ok() { "pass" } else { "fail" },
        "detail": r.result.as_ref().err().map(ToString::to_string),
        "at": timestamp(r.at),
        "took_ms": r.took.as_secs_f64() * 1000.0,
        "interval_ms": interval.as_millis() as u64,
    })
}

fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_through_a_path_and_back() {
        for name in ["app", "127.0.0.1:8080", "web 1/a?b#c%d", "été"] {
            let segment = crate::control::path_segment(name);
            assert!(!segment.contains(['/', '?', '#', ' ']), "{segment}");
            assert_eq!(decoded(&segment), name);
        }
        assert_eq!(decoded("a%2"), "a%2", "a cut escape is kept");
        assert_eq!(decoded("a%+1"), "a%+1", "not hex digits");
    }
}
