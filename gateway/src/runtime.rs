//! The runtime snapshot: everything a request needs, built once from a validated config and
//! shared immutably. A request loads the current snapshot once and works from it to the end, so
//! it sees exactly one version (a reload will build a new one and swap it in whole).

use crate::attempts::{AttemptLimits, Attempts, GiveUp};
use crate::cap::{Cap, Ticket};
use crate::fallback::FallbackAnswer;
use crate::h1::request::Method;
use crate::hedge::{Budget, Latency};
use crate::metrics::{BackendMetrics, Metrics, PoolMetrics};
use crate::select::{Selector, Slot};
use crate::trust::Trusted;
use holdfast_config::defaults::HEDGE_BURST;
use holdfast_config::{Config, HedgePolicy, Timeouts};
use holdfast_health::table::PoolHealth;
use holdfast_health::{BackendHealth, HealthTable};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One immutable version of the gateway's state.
#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// Which config this is: 1 at start, one more at each reload that took.
    pub generation: u64,
    pub hashes: Hashes,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Every backend's health, across reloads (passive reports go here).
    pub health: Arc<HealthTable>,
    /// The pools' backends as this config has them.
    pub health_pools: Arc<Vec<PoolHealth>>,
    pub pools: Vec<PoolRuntime>,
    /// Who is believed about the visitor's address.
    pub trust: Trusted,
    pub fallback: FallbackAnswer,
    pub metrics: Metrics,
}

/// A pool's backends with their selection order, limits and counters.
#[derive(Debug)]
pub struct PoolRuntime {
    pub name: Arc<str>,
    selector: Selector,
    pub timeouts: Timeouts,
    pub max_attempts: u32,
    /// Backend statuses after which an idempotent request goes on to the next backend.
    pub retry_on_status: Vec<u16>,
    /// Methods whose requests may be sent again once a backend had them (bits of
    /// [`Method::bit`]).
    retry_methods: u8,
    /// Largest body of such a request read whole first, so that it can be sent again.
    pub retry_body_max_bytes: u64,
    pub metrics: PoolMetrics,
    /// When a slow attempt gets a second one beside it.
    pub hedge: HedgePolicy,
    /// Answer hedges left to spend.
    pub hedge_budget: Budget,
    /// `[tier][index]`; one shared object per backend, so that a later snapshot can carry a
    /// backend over unchanged.
    backends: Vec<Vec<Arc<BackendRuntime>>>,
    /// Serve-stale, when on: what is kept and for how long, and the store (kept across reloads
    /// while the pool stays with the same memory).
    pub stale: Option<crate::stale::Keeper>,
}

#[derive(Debug)]
pub struct BackendRuntime {
    pub health: Arc<BackendHealth>,
    pub metrics: BackendMetrics,
    /// How long connects to it and its answers' heads usually take, for hedging.
    pub connect_latency: Latency,
    pub head_latency: Latency,
    /// Its `max_in_flight`, counting the requests it has now; no cap when `None`.
    in_flight: Option<Arc<Cap>>,
}

impl BackendRuntime {
    /// Whether it may take one more request now.
    #[inline]
    pub fn has_room(&self) -> bool {
        self.in_flight.as_ref().is_none_or(|cap| cap.has_room())
    }

    /// Counts a request against the cap; `None` when it is full (another request took the last
    /// place since [`has_room`](Self::has_room)). Without a cap, nothing is counted.
    pub fn enter(&self) -> Option<Option<Ticket>> {
        match self.in_flight.as_ref().map(|cap| cap.take()) {
            None => Some(None),
            Some((_, true)) => None, // the ticket goes at once
            Some((ticket, false)) => Some(Some(ticket)),
        }
    }
}

/// What identifies a config: the SHA-256 of the file's bytes (as `sha256sum` prints it), and
/// the SHA-256 of what it says outside `[listen]` and `[log]` (pools, routes, fallback, trust,
/// notify), whatever its comments, layout and key order: what decides where a request goes
/// and what a visitor gets. Machines of one fleet usually differ in their `[listen]` (their
/// own addresses) and agree on the rest; `holdfast status --all` compares this one. Both in
/// hex; made by [`crate::reload::read`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hashes {
    pub file: String,
    pub serving: String,
}

/// Which config a runtime is built from.
#[derive(Debug, Clone)]
pub struct Version {
    pub generation: u64,
    pub hashes: Hashes,
}

impl Runtime {
    /// The snapshot for `config`, whose backends are `health_pools` (a [`HealthTable::plan`]).
    /// A backend `previous` had keeps its runtime object: in-flight count, latency estimates.
    pub fn new(
        config: Arc<Config>,
        version: Version,
        health: Arc<HealthTable>,
        health_pools: Arc<Vec<PoolHealth>>,
        metrics: Metrics,
        previous: Option<&Runtime>,
    ) -> Self {
        let before: Vec<&Arc<BackendRuntime>> = previous
            .iter()
            .flat_map(|r| r.pools.iter())
            .flat_map(|p| p.backends.iter().flatten())
            .collect();
        let carried = |health: &Arc<BackendHealth>, max: Option<u32>| {
            let old = before.iter().find(|b| Arc::ptr_eq(&b.health, health))?;
            match (&old.in_flight, max) {
                (None, None) => Some(Arc::clone(old)),
                (Some(cap), Some(max)) => {
                    cap.set_max(max as usize);
                    Some(Arc::clone(old))
                }
                _ => None, // a cap added or taken away: a new object with the new cap
            }
        };
        let pools = config
            .pools
            .iter()
            .zip(health_pools.iter())
            .map(|(pool, pool_health)| {
                let weights: Vec<Vec<u32>> = pool
                    .tiers
                    .iter()
                    .map(|t| t.backends.iter().map(|b| b.weight.get()).collect())
                    .collect();
                let backends = pool_health
                    .tiers
                    .iter()
                    .zip(&pool.tiers)
                    .map(|(tier, configured)| {
                        tier.iter()
                            .zip(&configured.backends)
                            .map(|(b, configured)| {
                                let max = configured.max_in_flight.map(|m| m.get());
                                carried(b, max).unwrap_or_else(|| {
                                    Arc::new(BackendRuntime {
                                        in_flight: max.map(|m| Cap::new(m as usize)),
                                        health: b.clone(),
                                        metrics: metrics.backend(&pool.name, &b.backend.name),
                                        connect_latency: Latency::default(),
                                        head_latency: Latency::default(),
                                    })
                                })
                            })
                            .collect()
                    })
                    .collect();
                PoolRuntime {
                    name: pool_health.name.clone(),
                    selector: Selector::new(&weights),
                    timeouts: pool.timeouts,
                    max_attempts: pool.max_attempts.get(),
                    retry_on_status: pool.retry_on_status.clone(),
                    retry_methods: pool
                        .retry_methods
                        .iter()
                        .map(|m| Method::from_name(m))
                        .filter(|m| m.is_idempotent())
                        .fold(0, |set, m| set | m.bit()),
                    retry_body_max_bytes: pool.retry_body_max_bytes,
                    metrics: metrics.pool(&pool.name),
                    hedge: pool.hedge,
                    hedge_budget: Budget::new(pool.hedge.budget_percent, HEDGE_BURST),
                    backends,
                    stale: crate::stale::Keeper::new(
                        pool.stale.as_ref(),
                        previous
                            .and_then(|r| r.pools.iter().find(|p| *p.name == *pool.name))
                            .and_then(|p| p.stale.as_ref()),
                    ),
                }
            })
            .collect();
        Runtime {
            fallback: FallbackAnswer::new(&config.fallback),
            trust: Trusted::new(&config.trust),
            config,
            generation: version.generation,
            hashes: version.hashes,
            loaded_at: SystemTime::now(),
            health,
            health_pools,
            pools,
            metrics,
        }
    }

    /// The pool for a request's `Host` header.
    pub fn route(&self, host: Option<&str>) -> usize {
        self.config.routes.pool_for(host)
    }
}

impl PoolRuntime {
    /// Every backend of the pool, tier by tier.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<BackendRuntime>> {
        self.backends.iter().flatten()
    }

    pub fn backend(&self, (tier, index): Slot) -> Option<&Arc<BackendRuntime>> {
        self.backends.get(tier)?.get(index)
    }

    /// Whether a request with `method` may be sent again once a backend had it.
    pub fn may_repeat(&self, method: Method) -> bool {
        method.is_idempotent() && self.retry_methods & method.bit() != 0
    }

    /// Whether any backend of the pool may take traffic now.
    pub fn can_serve(&self) -> bool {
        self.backends.iter().flatten().any(|b| b.health.is_usable())
    }

    /// The next attempt for a request, or why there is none. `coin` draws a number in `0..1`
    /// for each backend in slow start met on the way (the data path passes `fastrand::f64`;
    /// tests pass numbers they choose).
    pub fn next_attempt(
        &self,
        attempts: &mut Attempts,
        now: Instant,
        coin: impl Fn() -> f64,
    ) -> Result<(Slot, AttemptLimits), GiveUp> {
        let picked = attempts.next(&self.timeouts, self.max_attempts, now, |tried| {
            let usable = |slot| {
                self.backend(slot)
                    .is_some_and(|b| b.health.is_usable() && b.has_room())
            };
            // A backend in slow start takes its growing share of the requests; the others go
            // where they would go without it, unless nothing else can take them.
            let admitted = |slot| {
                usable(slot)
                    && self
                        .backend(slot)
                        .and_then(|b| b.health.ramp())
                        .is_none_or(|share| coin() < share)
            };
            self.selector
                .next(admitted, tried)
                .or_else(|| self.selector.next(usable, tried))
        });
        match picked {
            // Nothing usable with room: busy if something usable was only full.
            Err(GiveUp::NoBackend) if self.full() => Err(GiveUp::Busy),
            other => other,
        }
    }

    /// Whether a usable backend is at its `max_in_flight`.
    fn full(&self) -> bool {
        self.backends
            .iter()
            .flatten()
            .any(|b| b.health.is_usable() && !b.has_room())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_health::table::{CheckRecord, NoObserver};
    use holdfast_health::CheckFailure;
    use std::time::Duration;

    /// A pool of two equal backends in one tier, `a` back from down 3 s into a 10 s slow start
    /// (a share of 0.3): the coin decides whether `a` takes the request, and nothing else does.
    #[tokio::test(start_paused = true)]
    async fn slow_start_admits_a_recovering_backend_by_the_coin() {
        let text = r#"
            [pools.app.health]
            slow_start = "10s"
            [pools.app.health.tcp]
            rise = 1
            fall = 1
            [[pools.app.tiers]]
            backends = [{ name = "a", address = "127.0.0.1:1001" }, { name = "b", address = "127.0.0.1:1002" }]
        "#;
        let config = holdfast_config::from_toml_str(text, std::path::Path::new("t.toml")).unwrap();
        let config = Arc::new(config);
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(HealthTable::new(&config, Arc::new(NoObserver)));
        let pools = health.pools();
        let (a, b) = (pools[0].tiers[0][0].clone(), pools[0].tiers[0][1].clone());
        let check = |result| CheckRecord {
            kind: "tcp",
            result,
            at: SystemTime::now(),
            took: Duration::ZERO,
        };
        health.report_check(&b, 0, check(Ok(())));
        assert!(b.is_usable());
        health.report_check(&a, 0, check(Err(CheckFailure::Refused)));
        assert!(!a.is_usable());
        tokio::time::advance(Duration::from_secs(60)).await; // past any hold-down
        health.report_check(&a, 0, check(Ok(())));
        tokio::time::advance(Duration::from_secs(3)).await;
        let share = a.ramp().expect("ramping");
        assert!((share - 0.3).abs() < 0.01, "{share}");
        let version = Version {
            generation: 1,
            hashes: Hashes::default(),
        };
        let runtime = Runtime::new(config, version, health.clone(), pools, metrics, None);
        let pool = &runtime.pools[0];

        // Which backend each of 8 requests gets with the coin always showing `coin`.
        let picks = |coin: f64| -> Vec<usize> {
            (0..8)
                .map(|_| {
                    let mut attempts = Attempts::default();
                    let now = tokio::time::Instant::now().into_std();
                    let ((_, index), _) = pool.next_attempt(&mut attempts, now, || coin).unwrap();
                    index
                })
                .collect()
        };
        // Under its share: `a` takes its round-robin turns as if it were fully back.
        assert_eq!(picks(0.29).iter().filter(|&&i| i == 0).count(), 4);
        // Over it: every request goes to `b`.
        assert_eq!(picks(0.31), vec![1; 8]);
        // `b` gone: `a` takes everything whatever the coin, rather than no one.
        health.report_check(&b, 0, check(Err(CheckFailure::Refused)));
        assert_eq!(picks(0.99), vec![0; 8]);
    }
}
