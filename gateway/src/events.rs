//! Events an operator is told of (`[[notify]]`): what happened, to what, and when. The health
//! observer, the reloader and the certificate check put them in a bounded queue that never
//! blocks them (a full queue drops the event, counted); `notify.rs` delivers them. The rules
//! (when a pool's tier change is news, how often one subject may be told of) are plain types
//! here, with their tests.

use holdfast_config::EventKind;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Events waiting for delivery, at most; more are dropped (and counted).
const QUEUE: usize = 1024;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub pool: Option<String>,
    pub tier: Option<String>,
    pub backend: Option<String>,
    pub address: Option<String>,
    /// Why, in a word or a line: the transition's reason (`refused`, `checks_passed`), the
    /// first problem of a refused reload, the days a certificate has left.
    pub reason: String,
    /// More, when there is: every problem of a refused reload, the tiers of a change.
    pub detail: Option<String>,
    pub at: SystemTime,
}

impl Event {
    pub fn new(kind: EventKind, reason: impl Into<String>) -> Event {
        Event {
            kind,
            pool: None,
            tier: None,
            backend: None,
            address: None,
            reason: reason.into(),
            detail: None,
            at: SystemTime::now(),
        }
    }

    /// What it is about, for rate limiting: one backend, one pool (and the tier it went to),
    /// one certificate file, or the whole process.
    pub fn subject(&self) -> String {
        let part = |o: &Option<String>| o.as_deref().unwrap_or("").to_string();
        let of = match self.kind {
            EventKind::CertificateExpiring => part(&self.detail),
            // To a tier: a pool that flaps is limited each way, while the way back is told.
            EventKind::TierChanged => format!("{}/{}", part(&self.pool), part(&self.tier)),
            _ => format!("{}/{}", part(&self.pool), part(&self.backend)),
        };
        format!("{}/{of}", self.kind.as_str())
    }

    /// The webhook's JSON body (README, "Notifications").
    pub fn json(&self, host: &str) -> Value {
        json!({
            "event": self.kind.as_str(),
            "pool": self.pool,
            "tier": self.tier,
            "backend": self.backend,
            "address": self.address,
            "reason": self.reason,
            "detail": self.detail,
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "host": host,
            "pid": std::process::id(),
        })
    }

    /// The command's environment: `HOLDFAST_EVENT`, `HOLDFAST_POOL`... (empty when not set).
    pub fn env(&self, host: &str) -> Vec<(&'static str, String)> {
        let part = |o: &Option<String>| o.clone().unwrap_or_default();
        vec![
            ("HOLDFAST_EVENT", self.kind.as_str().to_string()),
            ("HOLDFAST_POOL", part(&self.pool)),
            ("HOLDFAST_TIER", part(&self.tier)),
            ("HOLDFAST_BACKEND", part(&self.backend)),
            ("HOLDFAST_ADDRESS", part(&self.address)),
            ("HOLDFAST_REASON", self.reason.clone()),
            ("HOLDFAST_DETAIL", part(&self.detail)),
            (
                "HOLDFAST_AT",
                humantime::format_rfc3339_millis(self.at).to_string(),
            ),
            ("HOLDFAST_HOST", host.to_string()),
        ]
    }
}

/// Where events are put. Cheap to clone; before [`Events::take_inbox`] is called (no
/// `[[notify]]` delivery running yet), events still queue, up to the bound.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::Sender<Event>,
    rx: Arc<Mutex<Option<mpsc::Receiver<Event>>>>,
}

impl Default for Events {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Events {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

impl Events {
    /// Queues `event`; `false` when the queue is full (the event is dropped).
    pub fn send(&self, event: Event) -> bool {
        self.tx.try_send(event).is_ok()
    }

    /// The queue's other end, once.
    pub fn take_inbox(&self) -> Option<mpsc::Receiver<Event>> {
        self.rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// How often one subject may be told of, per target: at most once per `min_interval`.
#[derive(Debug, Default)]
pub struct Limiter {
    last: HashMap<(usize, String), Instant>,
}

impl Limiter {
    /// Whether target `target` may be told of `subject` at `now`; remembers it if so.
    pub fn allow(&mut self, target: usize, subject: &str, min: Duration, now: Instant) -> bool {
        let key = (target, subject.to_string());
        match self.last.get(&key) {
            Some(&at) if now.saturating_duration_since(at) < min => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

/// Which tier each pool serves from, to tell when that changes: to another tier
/// (`tier_changed`), or to none (`fallback`: no backend can serve).
#[derive(Debug, Default)]
pub struct Tiers {
    active: HashMap<String, Option<usize>>,
}

impl Tiers {
    /// Pool `pool` serves from tier `now` (its index; `None`: from no tier). The event this is,
    /// if it is news (the first look at a pool only remembers it). `names` are the tiers' names.
    pub fn observe(&mut self, pool: &str, now: Option<usize>, names: &[&str]) -> Option<Event> {
        let before = self.active.insert(pool.to_string(), now)?;
        if before == now {
            return None;
        }
        let name = |t: Option<usize>| match t {
            Some(t) => names.get(t).copied().unwrap_or("?").to_string(),
            None => "none".to_string(),
        };
        let mut event = match now {
            None => Event::new(EventKind::Fallback, "no backend can serve"),
            Some(_) => Event::new(
                EventKind::TierChanged,
                format!("serving from {} (was {})", name(now), name(before)),
            ),
        };
        event.pool = Some(pool.to_string());
        event.tier = now.map(|t| name(Some(t)));
        event.detail = Some(format!("from {} to {}", name(before), name(now)));
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subject_is_told_of_at_most_once_per_interval() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(l.allow(0, "backend_down/app/a", s(60), t0));
        assert!(!l.allow(0, "backend_down/app/a", s(60), t0 + s(30)));
        assert!(
            l.allow(0, "backend_up/app/a", s(60), t0 + s(30)),
            "another kind"
        );
        assert!(
            l.allow(0, "backend_down/app/b", s(60), t0 + s(30)),
            "another backend"
        );
        assert!(
            l.allow(1, "backend_down/app/a", s(60), t0 + s(30)),
            "another target"
        );
        assert!(l.allow(0, "backend_down/app/a", s(60), t0 + s(60)));
        assert!(l.allow(0, "x", Duration::ZERO, t0) && l.allow(0, "x", Duration::ZERO, t0));
    }

    #[test]
    fn a_pool_changing_tier_is_news() {
        let names = ["primary", "backup"];
        let mut t = Tiers::default();
        // (active tier now) -> (event kind, detail) or nothing
        type Step = (Option<usize>, Option<(EventKind, &'static str)>);
        let steps: &[Step] = &[
            (Some(0), None), // first look: remembered
            (Some(0), None),
            (
                Some(1),
                Some((EventKind::TierChanged, "from primary to backup")),
            ),
            (None, Some((EventKind::Fallback, "from backup to none"))),
            (None, None),
            (
                Some(0),
                Some((EventKind::TierChanged, "from none to primary")),
            ),
        ];
        for (now, want) in steps {
            let got = t
                .observe("app", *now, &names)
                .map(|e| (e.kind, e.detail.unwrap_or_default()));
            let want = want.map(|(k, d)| (k, d.to_string()));
            assert_eq!(got, want, "{now:?}");
        }
        assert_eq!(
            t.observe("api", None, &names),
            None,
            "another pool, first look"
        );
    }

    #[test]
    fn an_event_as_a_webhook_and_a_command_see_it() {
        let mut e = Event::new(EventKind::BackendDown, "refused");
        e.pool = Some("app".into());
        e.backend = Some("web-1".into());
        let doc = e.json("host-1");
        assert_eq!(doc["event"], "backend_down");
        assert_eq!(doc["backend"], "web-1");
        assert_eq!(doc["tier"], Value::Null);
        let env = e.env("host-1");
        assert!(env.contains(&("HOLDFAST_EVENT", "backend_down".to_string())));
        assert!(env.contains(&("HOLDFAST_TIER", String::new())));
        assert_eq!(e.subject(), "backend_down/app/web-1");
        let events = Events::default();
        let mut inbox = events.take_inbox().expect("once");
        assert!(events.take_inbox().is_none());
        assert!(events.send(e.clone()));
        assert_eq!(inbox.try_recv().ok(), Some(e));
    }
}
