//! Every backend's health, shared by the checkers, the request path and the admin endpoints.
//!
//! The request path reads one atomic per backend ([`BackendHealth::is_usable`]); the state
//! machine and the details shown by `/status` sit behind mutexes that only checks, failures and
//! the admin listener take.

use crate::passive::{self, Attempt, Ejection, Passive, PassivePolicy};
use crate::probe::CheckFailure;
use crate::state::{HealthState, Outcome, Reason, Status, Thresholds, Transition};
use holdfast_config::{Backend, Check, CheckKind, Config};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Where a backend sits: pool index, tier index, index within the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendId {
    pub pool: usize,
    pub tier: usize,
    pub index: usize,
}

/// The result of the latest run of one check.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    /// `tcp` or `http`.
    pub kind: &'static str,
    pub result: Result<(), CheckFailure>,
    pub at: SystemTime,
    pub took: Duration,
}

/// The latest change of status.
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    pub transition: Transition,
    /// Short label of the reason, as in metrics: `checks_passed`, `http_check_failed`, `refused`.
    pub reason: &'static str,
    pub at: SystemTime,
    /// For a backend taken out again soon: how long it stays out whatever its checks say.
    pub hold_down: Option<Duration>,
}

/// Told of every check and every change of status (metrics, logs).
pub trait Observer: Send + Sync {
    fn on_check(&self, _backend: &BackendHealth, _record: &CheckRecord) {}
    fn on_transition(&self, _backend: &BackendHealth, _record: &TransitionRecord) {}
    /// Passive detection called for `ejection`; `taken_out` unless the pool's ejection cap
    /// kept the backend in.
    fn on_ejection(&self, _backend: &BackendHealth, _ejection: &Ejection, _taken_out: bool) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;
impl Observer for NoObserver {}

#[derive(Debug, Default, Clone)]
pub struct Details {
    /// Latest record of each check, by check index.
    pub checks: Vec<Option<CheckRecord>>,
    pub last_transition: Option<TransitionRecord>,
}

/// One backend's health.
#[derive(Debug)]
pub struct BackendHealth {
    pub id: BackendId,
    pub pool: Arc<str>,
    pub tier: Arc<str>,
    pub backend: Backend,
    usable: AtomicBool,
    /// Set while passive detection counts something, so that a good answer takes the lock only
    /// when it has a streak to end or a window to count in.
    passive_counting: AtomicBool,
    /// Woken when the backend is taken out, for requests still waiting on it.
    taken_out: Notify,
    passive: Mutex<Passive>,
    /// Slow start: when it last came back from down, in milliseconds since `epoch` (0: not
    /// ramping), and over how long it ramps up.
    back_at: AtomicU64,
    epoch: std::time::Instant,
    slow_start: Duration,
    state: Mutex<HealthState>,
    details: Mutex<Details>,
}

/// Milliseconds from `epoch` to `now`, at least 1 (0 means "not set" where this is stored).
fn millis_since(epoch: std::time::Instant, now: std::time::Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain assignments).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BackendHealth {
    /// Resolves when the backend is next taken out (by a check or by real traffic). Create it
    /// before checking [`is_usable`](Self::is_usable), so that no transition falls in between.
    pub fn taken_out(&self) -> Notified<'_> {
        self.taken_out.notified()
    }

    /// Whether the request path may send traffic here. Lock-free.
    #[inline]
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// During slow start after coming back: the share of requests it takes now (from 0.1 to
    /// 1); `None` once it takes them all. One relaxed load when not ramping; the clock is read
    /// only while it is.
    #[inline]
    pub fn ramp(&self) -> Option<f64> {
        let back_at = self.back_at.load(Ordering::Relaxed);
        if back_at == 0 {
            return None;
        }
        let now = tokio::time::Instant::now().into_std();
        let since = millis_since(self.epoch, now).saturating_sub(back_at);
        let over = self.slow_start.as_millis() as u64;
        if since >= over {
            self.back_at.store(0, Ordering::Relaxed);
            return None;
        }
        Some((since as f64 / over as f64).max(0.1))
    }

    pub fn status(&self) -> Status {
        lock(&self.state).status()
    }

    /// How much longer the backend is held out as flapping, and its ejections in the window.
    pub fn hold_down(&self) -> (Option<Duration>, usize) {
        let now = tokio::time::Instant::now().into_std();
        let state = lock(&self.state);
        (state.held_for(now), state.recent_ejections(now))
    }

    pub fn details(&self) -> Details {
        lock(&self.details).clone()
    }
}

/// The backends of one pool, by tier, and how they are checked.
#[derive(Debug)]
pub struct PoolHealth {
    pub name: Arc<str>,
    pub checks: Vec<Check>,
    /// Passive detection holds out at most this share of the backends on bounded ejections.
    pub max_ejection_percent: u32,
    pub tiers: Vec<Vec<Arc<BackendHealth>>>,
}

impl PoolHealth {
    pub fn backends(&self) -> impl Iterator<Item = &Arc<BackendHealth>> {
        self.tiers.iter().flatten()
    }

    /// Whether passive detection may take `backend` out on a bounded ejection now.
    fn may_eject(&self, backend: &BackendHealth) -> bool {
        let (mut total, mut out, mut usable_others) = (0, 0, 0);
        for b in self.backends() {
            total += 1;
            match (b.id == backend.id, b.is_usable()) {
                (true, _) => {}
                (false, true) => usable_others += 1,
                (false, false) => out += 1,
            }
        }
        passive::may_eject(total, out, usable_others, self.max_ejection_percent)
    }

    /// Index of the first tier with a usable backend, if any.
    pub fn active_tier(&self) -> Option<usize> {
        self.tiers
            .iter()
            .position(|tier| tier.iter().any(|b| b.is_usable()))
    }

    fn reason_label(&self, reason: Reason) -> &'static str {
        match reason {
            Reason::ChecksPassed => "checks_passed",
            Reason::CheckFailed(i) => match self.checks.get(i).map(|c| &c.kind) {
                Some(CheckKind::Http(_)) => "http_check_failed",
                _ => "tcp_check_failed",
            },
            Reason::Traffic(kind) => kind.as_str(),
            Reason::FailureRate => "failure_rate",
        }
    }
}

pub fn check_kind_label(kind: &CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http(_) => "http",
    }
}

/// The health of every backend of a config.
pub struct HealthTable {
    pools: Vec<PoolHealth>,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for HealthTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthTable")
            .field("pools", &self.pools)
            .finish()
    }
}

impl HealthTable {
    /// Every backend of `config`, not yet probed (no backend is usable until probed).
    pub fn new(config: &Config, observer: Arc<dyn Observer>) -> Self {
        let epoch = std::time::Instant::now();
        let pools = config
            .pools
            .iter()
            .enumerate()
            .map(|(p, pool)| {
                let pool_name: Arc<str> = Arc::from(pool.name.as_str());
                let passive = PassivePolicy {
                    passive_fall: pool.health.passive_fall.get(),
                    status_fall: pool.health.status_fall.get(),
                    failure_rate: pool.health.failure_rate,
                };
                let thresholds: Vec<Thresholds> = pool
                    .health
                    .checks
                    .iter()
                    .map(|c| Thresholds {
                        rise: c.rise.get(),
                        fall: c.fall.get(),
                    })
                    .collect();
                let tiers = pool
                    .tiers
                    .iter()
                    .enumerate()
                    .map(|(t, tier)| {
                        let tier_name: Arc<str> = Arc::from(tier.name.as_str());
                        tier.backends
                            .iter()
                            .enumerate()
                            .map(|(index, backend)| {
                                Arc::new(BackendHealth {
                                    id: BackendId {
                                        pool: p,
                                        tier: t,
                                        index,
                                    },
                                    pool: pool_name.clone(),
                                    tier: tier_name.clone(),
                                    backend: backend.clone(),
                                    usable: AtomicBool::new(false),
                                    passive_counting: AtomicBool::new(false),
                                    taken_out: Notify::new(),
                                    passive: Mutex::new(Passive::new(passive)),
                                    back_at: AtomicU64::new(0),
                                    epoch,
                                    slow_start: pool.health.slow_start,
                                    state: Mutex::new(HealthState::with_hold_down(
                                        &thresholds,
                                        pool.health.hold_down,
                                    )),
                                    details: Mutex::new(Details {
                                        checks: vec![None; thresholds.len()],
                                        last_transition: None,
                                    }),
                                })
                            })
                            .collect()
                    })
                    .collect();
                PoolHealth {
                    name: pool_name,
                    checks: pool.health.checks.clone(),
                    max_ejection_percent: pool.health.max_ejection_percent,
                    tiers,
                }
            })
            .collect();
        HealthTable { pools, observer }
    }

    pub fn pools(&self) -> &[PoolHealth] {
        &self.pools
    }

    pub fn pool(&self, index: usize) -> Option<&PoolHealth> {
        self.pools.get(index)
    }

    /// Reports how one attempt of a real request at `backend` ended (passive detection). A
    /// good answer from a backend with nothing counted costs one relaxed load.
    #[inline]
    pub fn report(&self, backend: &BackendHealth, attempt: Attempt) {
        if attempt == Attempt::Answered && !backend.passive_counting.load(Ordering::Relaxed) {
            return;
        }
        self.observe(backend, attempt);
    }

    fn observe(&self, backend: &BackendHealth, attempt: Attempt) {
        let now = tokio::time::Instant::now().into_std();
        let ejection = {
            let mut passive = lock(&backend.passive);
            let ejection = passive.observe(attempt, now);
            backend
                .passive_counting
                .store(!passive.is_idle(), Ordering::Relaxed);
            ejection
        };
        let Some(ejection) = ejection else {
            return;
        };
        if !backend.is_usable() {
            return; // already out
        }
        let allowed = !ejection.bounded
            || self
                .pools
                .get(backend.id.pool)
                .is_some_and(|pool| pool.may_eject(backend));
        self.observer.on_ejection(backend, &ejection, allowed);
        if allowed {
            self.apply(backend, Outcome::Ejected(ejection.reason));
        }
    }

    /// Records the result of active check number `check`.
    pub fn report_check(&self, backend: &BackendHealth, check: usize, record: CheckRecord) {
        self.observer.on_check(backend, &record);
        let passed = record.result.is_ok();
        if let Some(slot) = lock(&backend.details).checks.get_mut(check) {
            *slot = Some(record);
        }
        self.apply(backend, Outcome::Check { check, passed });
    }

    fn apply(&self, backend: &BackendHealth, outcome: Outcome) {
        let transition = {
            let mut state = lock(&backend.state);
            // Tokio's clock, so that tests on paused time see hold-downs pass.
            let now = tokio::time::Instant::now().into_std();
            let t = state.observe(outcome, now);
            let held = state.held_for(now);
            if let Some(t) = t {
                if t.to == Status::Up {
                    // Back: what real traffic counted before it went out is history.
                    lock(&backend.passive).reset();
                    backend.passive_counting.store(false, Ordering::Relaxed);
                }
                if t.from == Status::Down && t.to == Status::Up && !backend.slow_start.is_zero() {
                    backend
                        .back_at
                        .store(millis_since(backend.epoch, now), Ordering::Relaxed);
                }
                backend.usable.store(t.to == Status::Up, Ordering::Release);
                if t.to == Status::Down {
                    backend.taken_out.notify_waiters();
                }
            }
            t.map(|t| (t, held))
        };
        let Some((transition, hold_down)) = transition else {
            return;
        };
        let Some(pool) = self.pools.get(backend.id.pool) else {
            return;
        };
        let record = TransitionRecord {
            transition,
            reason: pool.reason_label(transition.reason),
            at: SystemTime::now(),
            hold_down,
        };
        lock(&backend.details).last_transition = Some(record.clone());
        self.observer.on_transition(backend, &record);
    }
}
