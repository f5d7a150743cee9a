//! Every backend's health, shared by the checkers, the request path and the admin endpoints.
//!
//! The request path reads one atomic per backend ([`BackendHealth::is_usable`]); the state
//! machine and the details shown by `/status` sit behind mutexes that only checks, failures and
//! the admin listener take.

use crate::admin::{self, Action, Admin, Mark};
use crate::passive::{self, Attempt, Ejection, Passive, PassivePolicy};
use crate::probe::CheckFailure;
use crate::state::{HealthState, Outcome, Reason, Status, Thresholds, Transition};
use arc_swap::ArcSwap;
use holdfast_config::{Backend, Check, CheckKind, Config, HoldDown, Pool};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

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
    /// What each check is (`tcp`, `http`), by check index: for the label of a transition.
    pub kinds: Vec<&'static str>,
    pub last_transition: Option<TransitionRecord>,
}

/// One backend's health.
#[derive(Debug)]
pub struct BackendHealth {
    pub pool: Arc<str>,
    pub tier: Arc<str>,
    /// Its definition when it was first configured. What makes it this backend (pool, tier,
    /// name, address, TLS) never changes; its weight and caps may have since (the runtime
    /// snapshot has them).
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
    /// Slow start's length, in milliseconds (its pool's, which a reload may change).
    slow_start_ms: AtomicU64,
    state: Mutex<HealthState>,
    details: Mutex<Details>,
    /// An operator's mark (drain, down), if any: with the checks' verdict, whether it is usable.
    /// Locked after `state` when both are.
    admin: Mutex<Option<Mark>>,
    /// Requests being served by it now (a drain is over when none is left).
    in_flight: AtomicUsize,
    /// Idle connections to it the gateway keeps for the next visitor (all workers together).
    spares: AtomicUsize,
}

/// Counts a request at a backend until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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

    /// Counts a request served here until the guard is dropped.
    #[inline]
    pub fn busy(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Requests being served here now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One more idle connection to it kept for the next visitor.
    pub fn spare_kept(&self) {
        self.spares.fetch_add(1, Ordering::Relaxed);
    }

    /// One kept connection taken or closed.
    pub fn spare_gone(&self) {
        self.spares.fetch_sub(1, Ordering::Relaxed);
    }

    /// Idle connections to it kept for the next visitor now.
    pub fn spares(&self) -> usize {
        self.spares.load(Ordering::Relaxed)
    }

    /// The operator's mark, if any.
    pub fn admin(&self) -> Option<Mark> {
        lock(&self.admin).clone()
    }

    /// Where the operator put it (`Auto` when nowhere).
    pub fn admin_state(&self) -> Admin {
        lock(&self.admin).as_ref().map_or(Admin::Auto, |m| m.admin)
    }

    /// Takes the mark an earlier process had (from the state file).
    pub fn restore_admin(&self, mark: Option<Mark>) {
        let state = lock(&self.state);
        let admits = mark.as_ref().is_none_or(|m| m.admin.admits());
        *lock(&self.admin) = mark;
        self.usable
            .store(state.status() == Status::Up && admits, Ordering::Release);
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
        let over = self.slow_start_ms.load(Ordering::Relaxed);
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

    /// What to hand to a new process: status, ejections in the flap window (how long ago,
    /// oldest first) and what is left of a hold-down.
    pub fn handed_over(&self) -> (Status, Vec<Duration>, Option<Duration>) {
        let now = tokio::time::Instant::now().into_std();
        let state = lock(&self.state);
        (
            state.status(),
            state.ejections_ago(now),
            state.held_for(now),
        )
    }

    /// Takes what an earlier process knew (see [`HealthState::restore`]).
    pub fn restore(&self, status: Status, ago: &[Duration], held_for: Option<Duration>) {
        let now = tokio::time::Instant::now().into_std();
        let mut state = lock(&self.state);
        state.restore(status, ago, held_for, now);
        let admits = lock(&self.admin).as_ref().is_none_or(|m| m.admin.admits());
        self.usable
            .store(state.status() == Status::Up && admits, Ordering::Release);
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
    /// Held while a bounded ejection is weighed against the cap and carried out.
    ejecting: Mutex<()>,
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
            match (std::ptr::eq(&**b, backend), b.is_usable()) {
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
}

pub fn check_kind_label(kind: &CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http(_) => "http",
    }
}

/// How a backend is judged: its pool's health settings, as one config has them.
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    checks: Vec<Check>,
    thresholds: Vec<Thresholds>,
    hold_down: HoldDown,
    passive: PassivePolicy,
    slow_start: Duration,
}

impl Policy {
    fn of(pool: &Pool) -> Self {
        Policy {
            checks: pool.health.checks.clone(),
            thresholds: pool
                .health
                .checks
                .iter()
                .map(|c| Thresholds {
                    rise: c.rise.get(),
                    fall: c.fall.get(),
                })
                .collect(),
            hold_down: pool.health.hold_down,
            passive: PassivePolicy {
                passive_fall: pool.health.passive_fall.get(),
                status_fall: pool.health.status_fall.get(),
                failure_rate: pool.health.failure_rate,
            },
            slow_start: pool.health.slow_start,
        }
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .map(|c| check_kind_label(&c.kind))
            .collect()
    }
}

/// Whether `a` and `b` are the same backend: what is connected to, how it is spoken to, and
/// what it is called (its metrics' labels). Weight and caps may differ.
fn same_backend(a: &Backend, b: &Backend) -> bool {
    a.name == b.name
        && a.address == b.address
        && a.addr == b.addr
        && a.tls == b.tls
        && a.protocol == b.protocol
}

impl BackendHealth {
    fn new(
        pool: Arc<str>,
        tier: Arc<str>,
        backend: &Backend,
        policy: &Policy,
        epoch: std::time::Instant,
    ) -> Self {
        BackendHealth {
            pool,
            tier,
            backend: backend.clone(),
            usable: AtomicBool::new(false),
            passive_counting: AtomicBool::new(false),
            taken_out: Notify::new(),
            passive: Mutex::new(Passive::new(policy.passive)),
            back_at: AtomicU64::new(0),
            epoch,
            slow_start_ms: AtomicU64::new(policy.slow_start.as_millis() as u64),
            state: Mutex::new(HealthState::with_hold_down(
                &policy.thresholds,
                policy.hold_down,
            )),
            details: Mutex::new(Details {
                checks: vec![None; policy.thresholds.len()],
                kinds: policy.kinds(),
                last_transition: None,
            }),
            admin: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            spares: AtomicUsize::new(0),
        }
    }

    /// Takes its pool's new settings; what it has learned stays (status, hold-down history).
    /// With other checks than before, each new check starts from the backend's status.
    fn reconfigure(&self, policy: &Policy, same_checks: bool) {
        lock(&self.state).reconfigure(&policy.thresholds, policy.hold_down, same_checks);
        {
            let mut passive = lock(&self.passive);
            if passive.policy() != policy.passive {
                *passive = Passive::new(policy.passive);
                self.passive_counting.store(false, Ordering::Relaxed);
            }
        }
        self.slow_start_ms
            .store(policy.slow_start.as_millis() as u64, Ordering::Relaxed);
        let mut details = lock(&self.details);
        details.kinds = policy.kinds();
        if !same_checks {
            details.checks = vec![None; policy.thresholds.len()];
        }
    }
}

/// What a new config does to the table, worked out before anything changes: the new pools,
/// with the very object of every backend the config keeps.
#[derive(Debug)]
pub struct Plan {
    pub pools: Arc<Vec<PoolHealth>>,
    /// Backends new with this config: not usable until probed.
    pub added: Vec<Arc<BackendHealth>>,
    /// Backends the config no longer has.
    pub removed: Vec<Arc<BackendHealth>>,
    /// Backends it keeps, with their (possibly new) settings and whether their checks are the
    /// same as before.
    kept: Vec<(Arc<BackendHealth>, Policy, bool)>,
}

impl Plan {
    /// How many backends the config keeps.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}

/// The health of every backend, across reloads: the current pools, swapped whole by
/// [`commit`](HealthTable::commit); a backend a new config keeps keeps its object.
pub struct HealthTable {
    pools: ArcSwap<Vec<PoolHealth>>,
    observer: Arc<dyn Observer>,
    epoch: std::time::Instant,
}

impl std::fmt::Debug for HealthTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthTable")
            .field("pools", &self.pools.load())
            .finish()
    }
}

impl HealthTable {
    /// Every backend of `config`, not yet probed (no backend is usable until probed).
    pub fn new(config: &Config, observer: Arc<dyn Observer>) -> Self {
        let table = HealthTable {
            pools: ArcSwap::from_pointee(Vec::new()),
            observer,
            epoch: std::time::Instant::now(),
        };
        let plan = table.plan(config);
        table.commit(&plan);
        table
    }

    /// The pools now.
    pub fn pools(&self) -> Arc<Vec<PoolHealth>> {
        self.pools.load_full()
    }

    /// Works out what `config` changes, without changing anything: a backend with the same
    /// pool, tier, name, address and TLS as now keeps its object; any other is new.
    pub fn plan(&self, config: &Config) -> Plan {
        let current = self.pools.load();
        let mut old: Vec<(&PoolHealth, &Arc<BackendHealth>)> = current
            .iter()
            .flat_map(|p| p.backends().map(move |b| (p, b)))
            .collect();
        let (mut added, mut kept) = (Vec::new(), Vec::new());
        let pools = config
            .pools
            .iter()
            .map(|pool| {
                let pool_name: Arc<str> = Arc::from(pool.name.as_str());
                let policy = Policy::of(pool);
                let tiers = pool
                    .tiers
                    .iter()
                    .map(|tier| {
                        let tier_name: Arc<str> = Arc::from(tier.name.as_str());
                        tier.backends
                            .iter()
                            .map(|backend| {
                                let found = old.iter().position(|(p, b)| {
                                    *p.name == *pool_name
                                        && *b.tier == *tier_name
                                        && same_backend(&b.backend, backend)
                                });
                                match found.map(|i| old.swap_remove(i)) {
                                    Some((p, b)) => {
                                        let same_checks = p.checks == policy.checks;
                                        kept.push((b.clone(), policy.clone(), same_checks));
                                        b.clone()
                                    }
                                    None => {
                                        let b = Arc::new(BackendHealth::new(
                                            pool_name.clone(),
                                            tier_name.clone(),
                                            backend,
                                            &policy,
                                            self.epoch,
                                        ));
                                        added.push(b.clone());
                                        b
                                    }
                                }
                            })
                            .collect()
                    })
                    .collect();
                PoolHealth {
                    name: pool_name,
                    checks: pool.health.checks.clone(),
                    max_ejection_percent: pool.health.max_ejection_percent,
                    tiers,
                    ejecting: Mutex::new(()),
                }
            })
            .collect();
        Plan {
            pools: Arc::new(pools),
            added,
            removed: old.into_iter().map(|(_, b)| b.clone()).collect(),
            kept,
        }
    }

    /// Makes `plan` the table: the backends kept take their new settings, and the pools are
    /// swapped whole. Probe `plan.added` first, so that they serve as soon as they can.
    pub fn commit(&self, plan: &Plan) {
        for (backend, policy, same_checks) in &plan.kept {
            backend.reconfigure(policy, *same_checks);
        }
        self.pools.store(plan.pools.clone());
    }

    /// An operator's action on `backend` (see [`crate::admin`]), asked by `by`: refused (with
    /// why) when it would take out the last backend of its pool that can serve, unless `force`.
    /// Decided under the pool's lock, as ejections are. Requests in flight finish either way;
    /// `up` returns the backend to what its checks say, through slow start.
    pub fn act(
        &self,
        backend: &BackendHealth,
        action: Action,
        by: &str,
        force: bool,
    ) -> Result<(), String> {
        let pools = self.pools.load();
        let pool = pools.iter().find(|pool| *pool.name == *backend.pool);
        let _deciding = pool.map(|pool| lock(&pool.ejecting));
        let others = pool.map_or(0, |pool| {
            pool.backends()
                .filter(|b| !std::ptr::eq(&***b, backend) && b.is_usable())
                .count()
        });
        admin::allowed(action, backend.is_usable(), others, force)?;
        let state = lock(&backend.state);
        let target = action.target();
        *lock(&backend.admin) = match target {
            Admin::Auto => None,
            admin => Some(Mark {
                admin,
                by: by.to_string(),
                at: SystemTime::now(),
            }),
        };
        let usable = state.status() == Status::Up && target.admits();
        let was = backend.usable.swap(usable, Ordering::AcqRel);
        if usable && !was && backend.slow_start_ms.load(Ordering::Relaxed) > 0 {
            let now = tokio::time::Instant::now().into_std();
            backend
                .back_at
                .store(millis_since(backend.epoch, now), Ordering::Relaxed);
        }
        Ok(())
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
        if !ejection.bounded {
            self.observer.on_ejection(backend, &ejection, true);
            return self.apply(backend, Outcome::Ejected(ejection.reason));
        }
        // A backend its pool no longer has (a reload removed it) is never taken out on a
        // bounded ejection: there is no pool to weigh it against. The cap is weighed and the
        // backend taken out under the pool's lock, so that two workers ejecting at once cannot
        // both see the other's backend usable and take out the last two.
        let pools = self.pools.load();
        let allowed = match pools.iter().find(|pool| *pool.name == *backend.pool) {
            None => false,
            Some(pool) => {
                let _deciding = lock(&pool.ejecting);
                let allowed = backend.is_usable() && pool.may_eject(backend);
                if allowed {
                    self.apply(backend, Outcome::Ejected(ejection.reason));
                }
                allowed
            }
        };
        self.observer.on_ejection(backend, &ejection, allowed);
    }

    /// Records the result of active check number `check`.
    /// A probe that could not run for the gateway's own trouble (out of descriptors, ports,
    /// memory) is shown and counted, but is neither a pass nor a failure of the backend.
    pub fn report_check(&self, backend: &BackendHealth, check: usize, record: CheckRecord) {
        self.observer.on_check(backend, &record);
        let passed = record.result.is_ok();
        let local = matches!(&record.result, Err(e) if e.is_local());
        if let Some(slot) = lock(&backend.details).checks.get_mut(check) {
            *slot = Some(record);
        }
        if !local {
            self.apply(backend, Outcome::Check { check, passed });
        }
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
                let slow_start = backend.slow_start_ms.load(Ordering::Relaxed) > 0;
                if t.from == Status::Down && t.to == Status::Up && slow_start {
                    backend
                        .back_at
                        .store(millis_since(backend.epoch, now), Ordering::Relaxed);
                }
                let admits = lock(&backend.admin)
                    .as_ref()
                    .is_none_or(|m| m.admin.admits());
                backend
                    .usable
                    .store(t.to == Status::Up && admits, Ordering::Release);
                if t.to == Status::Down {
                    backend.taken_out.notify_waiters();
                }
            }
            t.map(|t| (t, held))
        };
        let Some((transition, hold_down)) = transition else {
            return;
        };
        let record = {
            let mut details = lock(&backend.details);
            let record = TransitionRecord {
                transition,
                reason: reason_label(&details.kinds, transition.reason),
                at: SystemTime::now(),
                hold_down,
            };
            details.last_transition = Some(record.clone());
            record
        };
        self.observer.on_transition(backend, &record);
    }
}

/// The label of a reason, as in metrics: `checks_passed`, `http_check_failed`, `refused`...
fn reason_label(kinds: &[&'static str], reason: Reason) -> &'static str {
    match reason {
        Reason::ChecksPassed => "checks_passed",
        Reason::CheckFailed(i) => match kinds.get(i) {
            Some(&"http") => "http_check_failed",
            _ => "tcp_check_failed",
        },
        Reason::Traffic(kind) => kind.as_str(),
        Reason::FailureRate => "failure_rate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TrafficFailure;

    fn config(tiers: &str, fall: u32) -> Config {
        let text = format!(
            "[pools.app.health.tcp]\nfall = {fall}\n[pools.app.health]\nhold_down = \"10s\"\n{tiers}"
        );
        holdfast_config::from_toml_str(&text, std::path::Path::new("test.toml")).expect("config")
    }

    const AB: &str = r#"
        [[pools.app.tiers]]
        backends = [{ name = "a", address = "127.0.0.1:1001" }, { name = "b", address = "127.0.0.1:1002" }]
    "#;
    const AC: &str = r#"
        [[pools.app.tiers]]
        backends = [{ name = "a", address = "127.0.0.1:1001", weight = 5 }, { name = "c", address = "127.0.0.1:1003" }]
    "#;

    fn passed(table: &HealthTable, b: &BackendHealth) {
        let record = CheckRecord {
            kind: "tcp",
            result: Ok(()),
            at: SystemTime::now(),
            took: Duration::ZERO,
        };
        table.report_check(b, 0, record);
    }

    /// Workers ejecting at once: however the reports interleave, a two-backend pool keeps one
    /// (a broken connection is a bounded ejection: never the last usable backend).
    #[test]
    fn concurrent_ejections_never_take_out_the_last_backend() {
        let threads = 8;
        for round in 0..300 {
            let table = HealthTable::new(&config(AB, 3), Arc::new(NoObserver));
            let pool = &table.pools()[0];
            let (a, b) = (pool.tiers[0][0].clone(), pool.tiers[0][1].clone());
            passed(&table, &a);
            passed(&table, &b);
            let barrier = std::sync::Barrier::new(threads);
            std::thread::scope(|scope| {
                for i in 0..threads {
                    let (table, barrier) = (&table, &barrier);
                    let backend = if i % 2 == 0 { &a } else { &b };
                    scope.spawn(move || {
                        barrier.wait();
                        table.report(backend, Attempt::Broken(TrafficFailure::Reset));
                    });
                }
            });
            assert!(
                a.is_usable() || b.is_usable(),
                "round {round}: both backends taken out"
            );
        }
    }

    /// A check that could not run for the gateway's own trouble counts neither way.
    #[tokio::test]
    async fn a_check_the_gateway_could_not_run_counts_neither_way() {
        let table = HealthTable::new(&config(AB, 1), Arc::new(NoObserver));
        let a = table.pools()[0].tiers[0][0].clone();
        passed(&table, &a);
        let not_run = CheckRecord {
            kind: "tcp",
            result: Err(CheckFailure::Local(crate::LocalError::Descriptors)),
            at: SystemTime::now(),
            took: Duration::ZERO,
        };
        table.report_check(&a, 0, not_run);
        assert!(a.is_usable(), "fall = 1, yet still up");
        assert!(matches!(
            a.details().checks[0].as_ref().map(|c| &c.result),
            Some(Err(CheckFailure::Local(_)))
        ));
    }

    #[tokio::test]
    async fn a_reload_keeps_the_object_of_every_backend_it_keeps() {
        let table = HealthTable::new(&config(AB, 3), Arc::new(NoObserver));
        let before = table.pools();
        let (a, b) = (before[0].tiers[0][0].clone(), before[0].tiers[0][1].clone());
        passed(&table, &a);
        passed(&table, &b);
        table.report(&a, Attempt::ConnectFailed(TrafficFailure::Refused));
        assert!(!a.is_usable() && b.is_usable());

        // a's weight changes, b goes, c comes; the checks' fall changes.
        let plan = table.plan(&config(AC, 1));
        assert_eq!(plan.kept(), 1);
        assert!(Arc::ptr_eq(&plan.added[0], &plan.pools[0].tiers[0][1]));
        assert_eq!(plan.added[0].backend.name, "c");
        assert!(Arc::ptr_eq(&plan.removed[0], &b));
        assert_eq!(
            table.pools()[0].tiers[0].len(),
            2,
            "nothing changes before commit"
        );
        table.commit(&plan);

        let after = table.pools();
        assert!(Arc::ptr_eq(&after[0].tiers[0][0], &a), "the same object");
        assert_eq!(a.status(), Status::Down, "down before, down after");
        assert_eq!(
            a.details().last_transition.map(|t| t.reason),
            Some("refused")
        );
        assert!(
            !after[0].tiers[0][1].is_usable(),
            "new: not usable until probed"
        );

        // A backend moved to another tier is another backend (its metrics' labels change).
        let moved = r#"
            [[pools.app.tiers]]
            backends = [{ name = "c", address = "127.0.0.1:1003" }]
            [[pools.app.tiers]]
            backends = [{ name = "a", address = "127.0.0.1:1001" }]
        "#;
        let plan = table.plan(&config(moved, 1));
        assert_eq!(
            (plan.kept(), plan.added.len(), plan.removed.len()),
            (1, 1, 1)
        );
    }

    /// Drain, down and up: the checks go on but do not bring a marked backend back; `up` does;
    /// the last backend that can serve is kept unless forced; a request in flight is counted.
    #[tokio::test(start_paused = true)]
    async fn an_operator_drains_forces_out_and_returns_a_backend() {
        let table = HealthTable::new(&config(AB, 1), Arc::new(NoObserver));
        let pools = table.pools();
        let (a, b) = (&pools[0].tiers[0][0], &pools[0].tiers[0][1]);
        passed(&table, a);
        passed(&table, b);
        assert!(a.is_usable() && b.is_usable());

        let busy = a.busy();
        assert_eq!(a.in_flight(), 1);
        table.act(a, Action::Drain, "127.0.0.1", false).unwrap();
        assert!(!a.is_usable(), "drained: no new request");
        assert_eq!(a.admin_state(), Admin::Drain);
        assert_eq!(a.admin_state().shown(a.in_flight()), Some("draining"));
        drop(busy);
        assert_eq!(a.admin_state().shown(a.in_flight()), Some("drained"));
        passed(&table, a);
        assert!(!a.is_usable(), "a passing check does not end a drain");
        assert_eq!(a.status(), Status::Up, "the checks go on");

        let refused = table.act(b, Action::Down, "127.0.0.1", false).unwrap_err();
        assert!(refused.contains("last backend"), "{refused}");
        assert!(b.is_usable());
        table.act(b, Action::Down, "127.0.0.1", true).unwrap();
        assert!(!b.is_usable(), "forced");

        table.act(a, Action::Up, "127.0.0.1", false).unwrap();
        assert!(a.is_usable(), "back to what its checks say");
        assert_eq!(a.admin(), None);
        assert_eq!(
            b.admin().map(|m| (m.admin, m.by)),
            Some((Admin::Down, "127.0.0.1".to_string()))
        );
    }
}
