//! The active checks: one loop per backend and check, each waiting its interval plus a random
//! jitter, and every wait racing shutdown; the loops follow the table across reloads.

use crate::probe::{self, CheckFailure};
use crate::table::{check_kind_label, BackendHealth, CheckRecord, HealthTable, PoolHealth};
use crate::tls::TlsClient;
use holdfast_config::{Backend, Check, CheckKind};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// The wait before the next probe: the interval plus `jitter` scaled by `unit` (in `[0, 1)`).
pub fn next_delay(interval: Duration, jitter: Duration, unit: f64) -> Duration {
    interval + jitter.mul_f64(unit.clamp(0.0, 1.0))
}

/// What runs one probe: the network ([`NetProber`]), or a stand-in in tests on paused time.
pub trait Prober: Send + Sync + 'static {
    fn probe(
        &self,
        kind: &CheckKind,
        backend: &Backend,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), CheckFailure>> + Send;
}

/// Probes over the network with [`probe::probe`].
#[derive(Debug)]
pub struct NetProber {
    tls: TlsClient,
}

impl NetProber {
    pub fn new(tls: TlsClient) -> Self {
        NetProber { tls }
    }
}

impl Prober for NetProber {
    fn probe(
        &self,
        kind: &CheckKind,
        backend: &Backend,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), CheckFailure>> + Send {
        probe::probe(kind, backend, &self.tls, timeout)
    }
}

/// Runs one probe and records its result.
async fn run_one<P: Prober>(
    prober: &P,
    table: &HealthTable,
    backend: &BackendHealth,
    index: usize,
    check: &Check,
) {
    let started = Instant::now();
    let at = SystemTime::now();
    let result = prober
        .probe(&check.kind, &backend.backend, check.timeout)
        .await;
    let record = CheckRecord {
        kind: check_kind_label(&check.kind),
        result,
        at,
        took: started.elapsed(),
    };
    table.report_check(backend, index, record);
}

impl HealthTable {
    /// Probes every backend once with every check, all at once; returns when each probe has
    /// answered or timed out. Run before the listeners take traffic.
    pub async fn probe_all_once<P: Prober>(self: &Arc<Self>, prober: &Arc<P>) {
        let pools = self.pools();
        let all: Vec<_> = pools
            .iter()
            .flat_map(PoolHealth::backends)
            .cloned()
            .collect();
        self.probe_once(&pools, &all, prober).await;
    }

    /// Probes `backends` of `pools` once with every check of their pool, all at once: the
    /// backends a reload adds, before the new config takes traffic.
    pub async fn probe_once<P: Prober>(
        self: &Arc<Self>,
        pools: &[PoolHealth],
        backends: &[Arc<BackendHealth>],
        prober: &Arc<P>,
    ) {
        let mut probes = JoinSet::new();
        for pool in pools {
            for backend in pool.backends() {
                if !backends.iter().any(|b| Arc::ptr_eq(b, backend)) {
                    continue;
                }
                for (index, check) in pool.checks.iter().enumerate() {
                    let (table, prober) = (self.clone(), prober.clone());
                    let (backend, check) = (backend.clone(), check.clone());
                    probes.spawn(async move {
                        run_one(&*prober, &table, &backend, index, &check).await
                    });
                }
            }
        }
        while probes.join_next().await.is_some() {}
    }
}

/// The check loops: one per backend and check, each waiting its interval plus a random jitter,
/// until shutdown. [`sync`](CheckLoops::sync) makes them follow the table after a reload: a
/// backend whose checks are the same keeps its loops; the others' start or stop.
pub struct CheckLoops<P> {
    table: Arc<HealthTable>,
    prober: Arc<P>,
    shutdown: watch::Receiver<bool>,
    /// Where the loops run; `None` until [`start`](CheckLoops::start).
    runtime: Option<tokio::runtime::Handle>,
    running: Vec<Running>,
}

struct Running {
    backend: Arc<BackendHealth>,
    checks: Vec<Check>,
    loops: Vec<AbortHandle>,
}

impl<P> std::fmt::Debug for CheckLoops<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckLoops")
            .field("backends", &self.running.len())
            .finish()
    }
}

impl<P: Prober> CheckLoops<P> {
    pub fn new(table: Arc<HealthTable>, prober: Arc<P>, shutdown: watch::Receiver<bool>) -> Self {
        CheckLoops {
            table,
            prober,
            shutdown,
            runtime: None,
            running: Vec::new(),
        }
    }

    /// Starts the loops of every backend on the current runtime.
    pub fn start(&mut self) {
        self.runtime = Some(tokio::runtime::Handle::current());
        self.sync();
    }

    /// Makes the loops follow the table: those of backends it no longer has, or whose checks
    /// changed, stop; the missing ones start. Returns how many backends' loops (re)started.
    pub fn sync(&mut self) -> usize {
        let Some(runtime) = self.runtime.clone() else {
            return 0;
        };
        let pools = self.table.pools();
        let mut wanted: Vec<(&Arc<BackendHealth>, &Vec<Check>)> = pools
            .iter()
            .flat_map(|p| p.backends().map(move |b| (b, &p.checks)))
            .collect();
        self.running.retain(|r| {
            let keep = wanted
                .iter()
                .position(|(b, checks)| Arc::ptr_eq(b, &r.backend) && **checks == r.checks);
            match keep {
                Some(i) => {
                    wanted.swap_remove(i);
                    true
                }
                None => {
                    r.loops.iter().for_each(AbortHandle::abort);
                    false
                }
            }
        });
        let started = wanted.len();
        for (backend, checks) in wanted {
            let loops = checks
                .iter()
                .enumerate()
                .map(|(index, check)| {
                    let task = check_loop(
                        self.table.clone(),
                        self.prober.clone(),
                        backend.clone(),
                        index,
                        check.clone(),
                        self.shutdown.clone(),
                    );
                    runtime.spawn(task).abort_handle()
                })
                .collect();
            self.running.push(Running {
                backend: backend.clone(),
                checks: checks.clone(),
                loops,
            });
        }
        started
    }
}

/// Checks one backend with one check on its interval until shutdown. The first round starts at
/// a random point of the first interval, so that the checks of many backends spread out instead
/// of firing together.
async fn check_loop<P: Prober>(
    table: Arc<HealthTable>,
    prober: Arc<P>,
    backend: Arc<BackendHealth>,
    index: usize,
    check: Check,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = check.interval.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => return,
        }
        tokio::select! {
            _ = run_one(&*prober, &table, &backend, index, &check) => {}
            _ = stopped(&mut shutdown) => return,
        }
        delay = next_delay(check.interval, check.jitter, fastrand::f64());
    }
}

/// Resolves once shutdown is signalled (the value turns true, or the sender is dropped).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passive::Attempt;
    use crate::state::{Status, TrafficFailure};
    use crate::table::NoObserver;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn jitter_stays_within_bounds() {
        let interval = Duration::from_secs(2);
        let jitter = Duration::from_millis(200);
        assert_eq!(next_delay(interval, jitter, 0.0), interval);
        assert_eq!(
            next_delay(interval, jitter, 0.5),
            Duration::from_millis(2100)
        );
        assert!(next_delay(interval, jitter, 0.999_999) < interval + jitter);
        assert_eq!(next_delay(interval, jitter, 7.0), interval + jitter);
        for _ in 0..1000 {
            let d = next_delay(interval, jitter, fastrand::f64());
            assert!(d >= interval && d <= interval + jitter);
        }
    }

    fn config(addr: std::net::SocketAddr) -> holdfast_config::Config {
        let text = format!(
            r#"
            [pools.app.health.tcp]
            interval = "1s"
            timeout = "500ms"
            rise = 3
            fall = 2
            [[pools.app.tiers]]
            backends = [{{ address = "{addr}" }}]
            "#
        );
        holdfast_config::from_toml_str(&text, std::path::Path::new("test.toml")).unwrap()
    }

    /// A backend that is up or down at the flip of a switch; a probe of it takes 10 ms.
    #[derive(Default)]
    struct Switch(AtomicBool);

    impl Prober for Switch {
        async fn probe(&self, _: &CheckKind, _: &Backend, _: Duration) -> Result<(), CheckFailure> {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match self.0.load(Ordering::SeqCst) {
                true => Ok(()),
                false => Err(CheckFailure::Refused),
            }
        }
    }

    /// The whole loop on paused time: the backend goes away, `fall` failed checks take it out;
    /// it comes back, `rise` passing checks bring it back, and shutdown stops the loops.
    #[tokio::test(start_paused = true)]
    async fn checks_follow_the_backend_on_paused_time() {
        let table = Arc::new(HealthTable::new(
            &config("127.0.0.1:8080".parse().unwrap()),
            Arc::new(NoObserver),
        ));
        let backend = table.pools()[0].tiers[0][0].clone();
        let prober = Arc::new(Switch(AtomicBool::new(true)));
        assert!(!backend.is_usable());

        table.probe_all_once(&prober).await;
        assert_eq!(backend.status(), Status::Up);

        let (stop, shutdown) = watch::channel(false);
        let mut loops = CheckLoops::new(table.clone(), prober.clone(), shutdown);
        loops.start();

        prober.0.store(false, Ordering::SeqCst);
        // Within the first interval, the second probe and its jitter: fall (2) failures.
        tokio::time::sleep(Duration::from_millis(1000 + 1100 + 20)).await;
        assert_eq!(backend.status(), Status::Down);
        assert!(!backend.is_usable());
        assert_eq!(
            backend.details().last_transition.unwrap().reason,
            "tcp_check_failed"
        );

        prober.0.store(true, Ordering::SeqCst);
        // At least two more probes, at most two: not yet rise (3).
        tokio::time::sleep(Duration::from_millis(2 * 1000 + 20)).await;
        assert_eq!(
            backend.status(),
            Status::Down,
            "rise is 3: two passes are not enough"
        );
        tokio::time::sleep(Duration::from_millis(2 * 1100)).await;
        assert_eq!(backend.status(), Status::Up);
        assert!(backend.is_usable());
        assert_eq!(
            backend.details().last_transition.unwrap().reason,
            "checks_passed"
        );

        // A real request is refused: out at once, before any check runs. This second ejection
        // within the flap window holds it out for the hold-down (10 s by default), although
        // the checks pass again after rise (3) of them.
        table.report(&backend, Attempt::ConnectFailed(TrafficFailure::Refused));
        assert!(!backend.is_usable());
        assert_eq!(backend.details().last_transition.unwrap().reason, "refused");
        assert_eq!(backend.hold_down(), (Some(Duration::from_secs(10)), 2));
        tokio::time::sleep(Duration::from_millis(5 * 1100)).await;
        assert_eq!(backend.status(), Status::Down, "held down");
        // Back at the first check after the hold-down.
        tokio::time::sleep(Duration::from_millis(4500 + 1100 + 20)).await;
        assert!(backend.is_usable());
        assert_eq!(backend.hold_down().0, None);

        stop.send(true).unwrap();
    }
}
