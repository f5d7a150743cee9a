//! A load generator that records what each visitor saw: several keep-alive clients sending
//! requests without pause (or with a pause) for a bounded time, and optionally visitors arriving
//! at a steady rate on new connections, every answer and error kept with its time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// One answer (or failure) as a visitor saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the request was sent, from the start of the load.
    pub sent: Duration,
    pub took: Duration,
    /// The backend that answered (`X-Backend`), or the failure.
    pub outcome: Result<String, String>,
}

/// Load running in the background.
pub struct Load {
    start: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients, each with its own keep-alive connection, sending GETs to `url`
    /// until [`finish`](Self::finish) or `limit`, whichever comes first.
    pub fn start(url: String, clients: usize, limit: Duration) -> Load {
        Self::start_paced(url, clients, Duration::ZERO, limit)
    }

    /// Like [`start`](Self::start), each client pausing `pause` after every answer.
    pub fn start_paced(url: String, clients: usize, pause: Duration, limit: Duration) -> Load {
        let start = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop, seen) = (url.clone(), stop.clone(), seen.clone());
                tokio::spawn(async move {
                    let client = crate::client();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && start.elapsed() < limit
                    {
                        let sent = start.elapsed();
                        let t = Instant::now();
                        let outcome = visit(&client, &url).await;
                        let record = Seen {
                            sent,
                            took: t.elapsed(),
                            outcome,
                        };
                        seen.lock().unwrap().push(record);
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            start,
            stop,
            seen,
            tasks,
        }
    }

    /// Adds open-loop arrivals: a GET to `url` every `every`, each on a new connection, sent
    /// whether or not the earlier ones were answered (as visitors arrive), until the load ends.
    pub fn with_arrivals(mut self, url: String, every: Duration, limit: Duration) -> Load {
        let (start, stop, seen) = (self.start, self.stop.clone(), self.seen.clone());
        self.tasks.push(tokio::spawn(async move {
            // No connection is kept: each visitor connects afresh.
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let mut visitors = Vec::new();
            let mut tick = tokio::time::interval(every);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && start.elapsed() < limit {
                tick.tick().await;
                let (client, url, seen) = (client.clone(), url.clone(), seen.clone());
                visitors.push(tokio::spawn(async move {
                    let sent = start.elapsed();
                    let t = Instant::now();
                    let outcome = visit(&client, &url).await;
                    let took = t.elapsed();
                    seen.lock().unwrap().push(Seen {
                        sent,
                        took,
                        outcome,
                    });
                }));
            }
            for visitor in visitors {
                visitor.await.unwrap();
            }
        }));
        self
    }

    /// Requests seen so far, answered or failed.
    pub fn seen(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until `n` more requests than now have been seen (answered or failed): traffic
    /// measured in requests, not in time. Panics after 10 s.
    pub async fn more(&self, n: usize) {
        let target = self.seen() + n;
        let what = format!("{n} more requests");
        crate::wait_until(Duration::from_secs(10), &what, || async {
            self.seen() >= target
        })
        .await;
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Answers so far from `backend`.
    pub fn served_by(&self, backend: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.outcome.as_deref() == Ok(backend))
            .count()
    }

    /// Whether the last `n` answers all came from `backend`.
    pub fn last_from(&self, n: usize, backend: &str) -> bool {
        self.last_all(n, |s| s.outcome.as_deref() == Ok(backend))
    }

    /// The share of the last `n` answers that came from `backend`.
    pub fn last_share(&self, n: usize, backend: &str) -> f64 {
        let seen = self.seen.lock().unwrap();
        let last: Vec<_> = seen.iter().rev().take(n).collect();
        let from = last
            .iter()
            .filter(|s| s.outcome.as_deref() == Ok(backend))
            .count();
        from as f64 / last.len().max(1) as f64
    }

    /// Whether there are `n` answers and the last `n` all match `what`.
    pub fn last_all(&self, n: usize, what: impl Fn(&Seen) -> bool) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.len() >= n && seen.iter().rev().take(n).all(what)
    }

    /// Stops the clients and returns what they saw.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.run_out().await
    }

    /// Lets the clients run to the time limit and returns what they saw.
    pub async fn run_out(self) -> LoadReport {
        for task in self.tasks {
            task.await.unwrap();
        }
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap());
        seen.sort_by_key(|s| s.sent);
        LoadReport { seen }
    }
}

async fn visit(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("error: {e}"))?;
    let status = response.status();
    let backend = response
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let response_retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = response
        .bytes()
        .await
        .map_err(|e| format!("body error: {e}"))?;
    if status.is_success() {
        Ok(backend)
    } else {
        let retry_after =
            response_retry_after.map_or(String::new(), |v| format!(", Retry-After {v}"));
        Err(format!(
            "status {} from {backend:?}{retry_after}",
            status.as_u16()
        ))
    }
}

/// What the visitors saw.
#[derive(Debug)]
pub struct LoadReport {
    pub seen: Vec<Seen>,
}

impl LoadReport {
    pub fn sent(&self) -> usize {
        self.seen.len()
    }

    pub fn failures(&self) -> Vec<&Seen> {
        self.seen.iter().filter(|s| s.outcome.is_err()).collect()
    }

    /// Panics, naming how many failed and the first few, unless every request was answered.
    pub fn assert_none_failed(&self) {
        let failed = self.failures();
        assert!(
            failed.is_empty(),
            "{} of {} requests failed, first: {:?}",
            failed.len(),
            self.sent(),
            &failed[..failed.len().min(5)]
        );
    }

    pub fn by_backend(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for s in &self.seen {
            if let Ok(b) = &s.outcome {
                *counts.entry(b.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// The first answer from `backend` sent at or after `at`: its send time and latency.
    pub fn first_from_after(&self, backend: &str, at: Duration) -> Option<&Seen> {
        self.seen
            .iter()
            .find(|s| s.sent >= at && s.outcome.as_deref() == Ok(backend))
    }

    /// The longest any request took.
    pub fn longest(&self) -> Duration {
        self.seen.iter().map(|s| s.took).max().unwrap_or_default()
    }

    /// Answers from `backend` sent at or after `at`.
    pub fn from_after(&self, backend: &str, at: Duration) -> usize {
        self.seen
            .iter()
            .filter(|s| s.sent >= at && s.outcome.as_deref() == Ok(backend))
            .count()
    }
}
