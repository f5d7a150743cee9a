//! Delivers events to the `[[notify]]` targets of the running config: a webhook (the event as
//! JSON, POSTed with a timeout and retries) and/or a command (run with the event in its
//! environment, no shell, killed at its timeout). Never on the request path: one task sorts the
//! events, and each target has its own queue and worker, so that its events arrive in order
//! and a slow target holds up no other. A backend's transition
//! also tells whether its pool now serves from another tier, or from none.

use crate::events::{Event, Limiter, Tiers};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use holdfast_config::{EventKind, Notify};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events waiting for one target, at most; more are dropped (and counted).
const TARGET_QUEUE: usize = 256;

/// The first pause before a webhook call is tried again; it doubles each time.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Delivers what `inbox` brings until the process ends.
pub async fn deliver(mut inbox: mpsc::Receiver<Event>, runtime: Arc<ArcSwap<Runtime>>) {
    // Made for the first event a target is told of: the client loads the system's CA
    // certificates (a few MB), which a holdfast without `[[notify]]` has no use for.
    let mut client: Option<reqwest::Client> = None;
    let host = hostname();
    let (mut limiter, mut tiers) = (Limiter::default(), Tiers::default());
    // One queue and one worker per target: its events arrive in order, and a slow target holds
    // up no other.
    let mut queues: HashMap<usize, mpsc::Sender<(Notify, Event)>> = HashMap::new();
    // Every pool's tier as it is now: a change from here on is news.
    for pool in runtime.load().health_pools.iter() {
        tiers.observe(&pool.name, pool.active_tier(), &[]);
    }
    while let Some(event) = inbox.recv().await {
        let runtime = runtime.load_full();
        let mut all = vec![event];
        if let Some(pool_name) = all[0].pool.clone().filter(|_| is_backend(&all[0])) {
            if let Some((pool, config)) = runtime
                .health_pools
                .iter()
                .zip(&runtime.config.pools)
                .find(|(p, _)| *p.name == *pool_name)
            {
                let names: Vec<&str> = config.tiers.iter().map(|t| t.name.as_str()).collect();
                all.extend(tiers.observe(&pool.name, pool.active_tier(), &names));
            }
        }
        for event in all {
            for (i, target) in runtime.config.notify.iter().enumerate() {
                if !target.events.contains(&event.kind) {
                    continue;
                }
                let metrics = runtime.metrics.clone();
                if !limiter.allow(i, &event.subject(), target.min_interval, Instant::now()) {
                    for way in ways(target) {
                        metrics.notification(way, "limited");
                    }
                    continue;
                }
                let client = match &client {
                    Some(c) => c.clone(),
                    None => match reqwest::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")))
                        .build()
                    {
                        Ok(c) => client.insert(c).clone(),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot make the webhook client: [[notify]] is off");
                            return;
                        }
                    },
                };
                let queue = queues.entry(i).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(TARGET_QUEUE);
                    tokio::spawn(worker(rx, client, host.clone(), metrics.clone()));
                    tx
                });
                if queue.try_send((target.clone(), event.clone())).is_err() {
                    for way in ways(target) {
                        metrics.notification(way, "dropped");
                    }
                }
            }
        }
    }
}

/// Delivers one target's events, one after another.
async fn worker(
    mut queue: mpsc::Receiver<(Notify, Event)>,
    client: reqwest::Client,
    host: String,
    metrics: Metrics,
) {
    while let Some((target, event)) = queue.recv().await {
        send(&target, &event, &client, &host, &metrics).await;
    }
}

fn is_backend(event: &Event) -> bool {
    matches!(event.kind, EventKind::BackendDown | EventKind::BackendUp)
}

/// How `target` is told: `webhook`, `exec`, or both.
fn ways(target: &Notify) -> impl Iterator<Item = &'static str> {
    let webhook = target.url.is_some().then_some("webhook");
    let exec = (!target.exec.is_empty()).then_some("exec");
    webhook.into_iter().chain(exec)
}

/// Tells one target of one event, every way it has.
async fn send(
    target: &Notify,
    event: &Event,
    client: &reqwest::Client,
    host: &str,
    metrics: &Metrics,
) {
    if let Some(url) = &target.url {
        let result = match webhook(client, url, event, host, target).await {
            Ok(()) => "sent",
            Err(why) => {
                tracing::warn!(
                    url,
                    event = event.kind.as_str(),
                    why,
                    "webhook not delivered"
                );
                "failed"
            }
        };
        metrics.notification("webhook", result);
    }
    if !target.exec.is_empty() {
        let result = match exec(&target.exec, event, host, target.timeout).await {
            Ok(()) => "sent",
            Err(why) => {
                tracing::warn!(program = %target.exec[0], event = event.kind.as_str(), why, "notify command failed");
                "failed"
            }
        };
        metrics.notification("exec", result);
    }
}

/// POSTs the event, tried again `retries` times after a failure (a network error, a status
/// other than 2xx), each call within `timeout`.
async fn webhook(
    client: &reqwest::Client,
    url: &str,
    event: &Event,
    host: &str,
    target: &Notify,
) -> Result<(), String> {
    let body = event.json(host);
    let mut pause = RETRY_PAUSE;
    let mut last = String::new();
    for attempt in 0..=target.retries {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        let sent = client
            .post(url)
            .timeout(target.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("answered {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{last} (after {} tries)", target.retries + 1))
}

/// Runs the command with the event in its environment, no shell, stdin closed; killed at
/// `timeout`. Its output goes to holdfast's log (standard error), so it can be read there.
async fn exec(argv: &[String], event: &Event, host: &str, timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no program".to_string());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(event.env(host))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("ended with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "killed after {}",
                humantime::format_duration(timeout)
            ))
        }
    }
}

/// This machine's name, for the events (`host`).
fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}
