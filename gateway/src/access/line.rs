//! One request's line in the access log: what the data path gathered as the request went
//! ([`Record`]), written as text (nginx's "combined" format, then the rest as `key=value`) or as
//! one JSON object with stable keys. A plain type: no I/O, table-tested.
//!
//! Text, one line:
//!
//! ```text
//! VISITOR - - [05/Dec/2026:15:07:47 +0000] "GET /path?query HTTP/1.1" 200 512 "REFERER" "USER AGENT"
//!   host="example.com" in=120 duration=0.012 head=0.010 pool=app tier=primary backend=app-1
//!   attempts=2 failed="app-2:connect_refused(521)" rescued=0 hedged=0 stale=0 fallback=-
//!   cf_ray="8f2a-LHR"
//! ```
//!
//! (without the line breaks). What a visitor sent is escaped as nginx does (`"`, `\`, control
//! and non-ASCII bytes as `\xHH`), so a line is always one line and its quotes always pair.

use crate::attempts::GiveUp;
use holdfast_health::{BackendHealth, LocalError, TrafficFailure};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How an attempt at a backend failed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened.
    Connect(TrafficFailure),
    /// No answer came on an open connection.
    NoAnswer(TrafficFailure),
    /// An answer with a status the pool retries on, held back.
    Status(u16),
    /// The backend was taken out while the request waited for its answer.
    Rescued,
    /// The gateway's own trouble (descriptors, ports, memory), not the backend's.
    Local(LocalError),
}

impl Failure {
    /// The failure's name: `connect_refused`, `timeout`, `status_503` ...
    pub fn reason(self, out: &mut String) {
        let _ = match self {
            Failure::Connect(f) => write!(out, "connect_{}", f.as_str()),
            Failure::NoAnswer(f) => write!(out, "{}", f.as_str()),
            Failure::Status(s) => write!(out, "status_{s}"),
            Failure::Rescued => write!(out, "rescued"),
            Failure::Local(l) => write!(out, "local_{}", l.as_str()),
        };
    }

    /// The error Cloudflare would have shown had it met this failure itself (520 to 525).
    pub fn would_be(self) -> Option<u16> {
        match self {
            Failure::Connect(f) => Some(crate::history::would_be(f, true)),
            Failure::NoAnswer(f) => Some(crate::history::would_be(f, false)),
            _ => None,
        }
    }
}

/// An attempt that failed: where, and how.
#[derive(Debug, Clone)]
pub struct Failed {
    pub backend: Arc<BackendHealth>,
    pub how: Failure,
}

/// What the visitor sent that the line shows, copied from the request head (which is gone by
/// the time the line is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Method,
    Target,
    Host,
    Referer,
    UserAgent,
    CfRay,
}

const PARTS: usize = 6;

/// The status logged for a request that got no answer because the visitor's side went away
/// first (nginx's 499).
pub const VISITOR_GONE: u16 = 499;

/// What one request came to, gathered by the data path as it goes. Kept per connection and
/// [`clear`](Record::clear)ed for each request, so that its memory is reused.
#[derive(Debug, Default)]
pub struct Record {
    /// When the request's head was read.
    pub at: Option<SystemTime>,
    /// The visitor, as the backend is told of it (the trusted address).
    pub visitor: Option<IpAddr>,
    /// `HTTP/1.1`, `HTTP/1.0`, `HTTP/2.0`.
    pub protocol: &'static str,
    /// The parts of the head the line shows, one after another; `parts` says where.
    text: Vec<u8>,
    parts: [Option<Range<usize>>; PARTS],
    /// The answer's status; 0 while none went out.
    pub status: u16,
    /// Bytes of the request (head and body) and of the answer.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From the head read to the answer's end.
    pub duration: Duration,
    /// From the request sent to the backend to its answer's head.
    pub head_time: Option<Duration>,
    /// The backend whose answer went to the visitor.
    pub backend: Option<Arc<BackendHealth>>,
    /// The pool the request was routed to.
    pub pool: Option<Arc<str>>,
    pub attempts: u32,
    pub failed: Vec<Failed>,
    pub hedged: bool,
    /// Answered with a kept copy (serve-stale) instead of the fallback answer.
    pub stale: bool,
    /// Why the request fell back (no backend answered): to the fallback answer, or to a kept
    /// copy (`stale`).
    pub fallback: Option<GiveUp>,
}

impl Record {
    /// Empties it for the next request, keeping its memory.
    pub fn clear(&mut self) {
        let text = std::mem::take(&mut self.text);
        let failed = std::mem::take(&mut self.failed);
        *self = Record {
            text,
            failed,
            ..Record::default()
        };
        self.text.clear();
        self.failed.clear();
    }

    /// Keeps `bytes` (from the request head) as `part`.
    pub fn set(&mut self, part: Part, bytes: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        self.parts[part as usize] = Some(start..self.text.len());
    }

    pub fn get(&self, part: Part) -> Option<&[u8]> {
        self.parts[part as usize]
            .clone()
            .and_then(|r| self.text.get(r))
    }

    /// Whether the request was rescued: taken off a backend that went out while it waited.
    pub fn rescued(&self) -> bool {
        self.failed.iter().any(|f| f.how == Failure::Rescued)
    }

    /// The target with its query cut to `query_max` bytes (`...` marks a cut; with 0 the query
    /// goes, `?` included).
    fn target(&self, query_max: usize) -> (&[u8], bool) {
        let target = self.get(Part::Target).unwrap_or(b"-");
        let Some(q) = target.iter().position(|&b| b == b'?') else {
            return (target, false);
        };
        let query = target.len() - q - 1;
        match (query_max, query <= query_max) {
            (_, true) => (target, false),
            (0, _) => (&target[..q], false),
            (max, _) => (&target[..q + 1 + max], true),
        }
    }

    /// The line in text: nginx's "combined" format, then the rest as `key=value`.
    pub fn text(&self, query_max: usize, out: &mut Vec<u8>) {
        match self.visitor {
            Some(v) => drop(write!(out, "{v}")),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b" - - [");
        local_time(self.at, out);
        out.extend_from_slice(b"] \"");
        match self.get(Part::Method) {
            Some(method) => {
                escape(method, out);
                out.push(b' ');
                let (target, cut) = self.target(query_max);
                escape(target, out);
                if cut {
                    out.extend_from_slice(b"...");
                }
                out.push(b' ');
                out.extend_from_slice(self.protocol.as_bytes());
            }
            None => out.push(b'-'),
        }
        let _ = write!(out, "\" {} {} \"", self.status, self.bytes_out);
        escape(self.get(Part::Referer).unwrap_or(b"-"), out);
        out.extend_from_slice(b"\" \"");
        escape(self.get(Part::UserAgent).unwrap_or(b"-"), out);
        out.extend_from_slice(b"\" host=");
        value(self.get(Part::Host), out);
        let _ = write!(
            out,
            " in={} duration={:.3} head=",
            self.bytes_in,
            self.duration.as_secs_f64()
        );
        match self.head_time {
            Some(head) => drop(write!(out, "{:.3}", head.as_secs_f64())),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b" pool=");
        value(self.pool.as_deref().map(str::as_bytes), out);
        let backend = self.backend.as_deref();
        out.extend_from_slice(b" tier=");
        value(backend.map(|b| b.tier.as_bytes()), out);
        out.extend_from_slice(b" backend=");
        value(backend.map(|b| b.backend.name.as_bytes()), out);
        let _ = write!(out, " attempts={} failed=", self.attempts);
        let mut failed = String::new();
        for (i, f) in self.failed.iter().enumerate() {
            if i > 0 {
                failed.push(',');
            }
            failed.push_str(&f.backend.backend.name);
            failed.push(':');
            f.how.reason(&mut failed);
            if let Some(code) = f.how.would_be() {
                let _ = write!(failed, "({code})");
            }
        }
        value((!failed.is_empty()).then_some(failed.as_bytes()), out);
        let _ = write!(
            out,
            " rescued={} hedged={} stale={} fallback={} cf_ray=",
            u8::from(self.rescued()),
            u8::from(self.hedged),
            u8::from(self.stale),
            self.fallback.map_or("-", GiveUp::as_str)
        );
        value(self.get(Part::CfRay), out);
        out.push(b'\n');
    }

    /// The line as one JSON object, its keys always the same and in the same order (absent
    /// values are `null`).
    pub fn json(&self, query_max: usize, out: &mut Vec<u8>) {
        let string = |bytes: Option<&[u8]>, out: &mut Vec<u8>| match bytes {
            Some(b) => {
                let _ = serde_json::to_writer(&mut *out, &*String::from_utf8_lossy(b));
            }
            None => out.extend_from_slice(b"null"),
        };
        out.extend_from_slice(b"{\"time\":\"");
        utc_time(self.at, out);
        out.extend_from_slice(b"\",\"visitor\":");
        match self.visitor {
            Some(v) => drop(write!(out, "\"{v}\"")),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"method\":");
        string(self.get(Part::Method), out);
        out.extend_from_slice(b",\"host\":");
        string(self.get(Part::Host), out);
        out.extend_from_slice(b",\"path\":");
        match self.get(Part::Target) {
            Some(_) => {
                let (target, cut) = self.target(query_max);
                let mut shown = target.to_vec();
                if cut {
                    shown.extend_from_slice(b"...");
                }
                string(Some(&shown), out);
            }
            None => string(None, out),
        }
        out.extend_from_slice(b",\"protocol\":");
        string(
            Some(self.protocol.as_bytes()).filter(|p| !p.is_empty()),
            out,
        );
        let _ = write!(
            out,
            ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration\":{:.6},\"head_time\":",
            self.status,
            self.bytes_in,
            self.bytes_out,
            self.duration.as_secs_f64()
        );
        match self.head_time {
            Some(head) => drop(write!(out, "{:.6}", head.as_secs_f64())),
            None => out.extend_from_slice(b"null"),
        }
        let backend = self.backend.as_deref();
        out.extend_from_slice(b",\"pool\":");
        string(self.pool.as_deref().map(str::as_bytes), out);
        out.extend_from_slice(b",\"tier\":");
        string(backend.map(|b| b.tier.as_bytes()), out);
        out.extend_from_slice(b",\"backend\":");
        string(backend.map(|b| b.backend.name.as_bytes()), out);
        let _ = write!(out, ",\"attempts\":{},\"failed\":[", self.attempts);
        let mut reason = String::new();
        for (i, f) in self.failed.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"backend\":");
            string(Some(f.backend.backend.name.as_bytes()), out);
            reason.clear();
            f.how.reason(&mut reason);
            let _ = write!(out, ",\"reason\":\"{reason}\",\"would_be\":");
            match f.how.would_be() {
                Some(code) => drop(write!(out, "{code}")),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        let _ = write!(
            out,
            "],\"rescued\":{},\"hedged\":{},\"stale\":{},\"fallback\":",
            self.rescued(),
            self.hedged,
            self.stale
        );
        string(self.fallback.map(|f| f.as_str().as_bytes()), out);
        out.extend_from_slice(b",\"cf_ray\":");
        string(self.get(Part::CfRay), out);
        out.extend_from_slice(b",\"referer\":");
        string(self.get(Part::Referer), out);
        out.extend_from_slice(b",\"user_agent\":");
        string(self.get(Part::UserAgent), out);
        out.extend_from_slice(b"}\n");
    }
}

/// Writes `bytes` as nginx does inside quotes: `"`, `\`, control and non-ASCII bytes as
/// `\xHH`.
fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f.. => drop(write!(out, "\\x{b:02X}")),
            _ => out.push(b),
        }
    }
}

/// Writes a `key=value` value: bare when it is a plain token, quoted and escaped otherwise;
/// `-` when absent.
fn value(bytes: Option<&[u8]>, out: &mut Vec<u8>) {
    match bytes {
        None => out.push(b'-'),
        Some(b) if !b.is_empty() && b.iter().all(|&c| c.is_ascii_graphic() && c != b'"') => {
            out.extend_from_slice(b)
        }
        Some(b) => {
            out.push(b'"');
            escape(b, out);
            out.push(b'"');
        }
    }
}

thread_local! {
    /// The last second formatted on this thread, both ways: a line per request formats the
    /// same second many times.
    static SECOND: RefCell<(u64, String, String)> = const { RefCell::new((u64::MAX, String::new(), String::new())) };
}

/// Writes `at`'s second as RFC 3339 (`2026-12-05T15:07:47`) or as nginx's `$time_local` in
/// UTC (`05/Dec/2026:15:07:47 +0000`), from this thread's cache when it is the same second;
/// and returns its milliseconds.
fn second(at: Option<SystemTime>, nginx: bool, out: &mut Vec<u8>) -> u32 {
    let since = at
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, iso, local)| {
        if *cached != secs {
            *cached = secs;
            // `2026-12-05T15:07:47Z`
            let stamp = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            *iso = humantime::format_rfc3339_seconds(stamp).to_string();
            iso.pop();
            *local = nginx_time(iso);
        }
        out.extend_from_slice(if nginx { local } else { iso }.as_bytes());
    });
    since.subsec_millis()
}

/// `2026-12-05T15:07:47.123Z`.
fn utc_time(at: Option<SystemTime>, out: &mut Vec<u8>) {
    let millis = second(at, false, out);
    let _ = write!(out, ".{millis:03}Z");
}

/// nginx's `$time_local` (in UTC): `05/Dec/2026:15:07:47 +0000`.
fn local_time(at: Option<SystemTime>, out: &mut Vec<u8>) {
    second(at, true, out);
}

/// `2026-12-05T15:07:47` as `05/Dec/2026:15:07:47 +0000`.
fn nginx_time(iso: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (Some(year), Some(month), Some(day), Some(time)) = (
        iso.get(0..4),
        iso.get(5..7),
        iso.get(8..10),
        iso.get(11..19),
    ) else {
        return iso.to_string();
    };
    let month = month
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"???");
    format!("{day}/{month}/{year}:{time} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_health::HealthTable;

    fn backends() -> Vec<Arc<BackendHealth>> {
        let text = "[[pools.app.tiers]]\nname = \"primary\"\nbackends = [{ address = \"127.0.0.1:9\", name = \"app-1\" }, { address = \"127.0.0.1:10\", name = \"app 2\" }]\n";
        let config = holdfast_config::from_toml_str(text, std::path::Path::new("t.toml")).unwrap();
        let table = HealthTable::new(&config, Arc::new(holdfast_health::table::NoObserver));
        table.pools()[0].tiers[0].clone()
    }

    /// A retried request that the second backend answered.
    fn retried() -> Record {
        let b = backends();
        let mut r = Record {
            at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_483_267_123)),
            visitor: Some("203.0.113.9".parse().unwrap()),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 120,
            bytes_out: 512,
            duration: Duration::from_millis(12),
            head_time: Some(Duration::from_micros(10_400)),
            backend: Some(b[0].clone()),
            pool: Some("app".into()),
            attempts: 2,
            failed: vec![Failed {
                backend: b[1].clone(),
                how: Failure::Connect(TrafficFailure::Refused),
            }],
            ..Record::default()
        };
        r.set(Part::Method, b"GET");
        r.set(Part::Target, b"/a?b=c");
        r.set(Part::Host, b"example.com");
        r.set(Part::UserAgent, b"curl/8.5");
        r.set(Part::CfRay, b"8f2a-LHR");
        r
    }

    fn text(r: &Record, query_max: usize) -> String {
        let mut out = Vec::new();
        r.text(query_max, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn json(r: &Record, query_max: usize) -> serde_json::Value {
        let mut out = Vec::new();
        r.json(query_max, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_retried_request_in_text() {
        assert_eq!(
            text(&retried(), 256),
            "203.0.113.9 - - [05/Dec/2026:15:07:47 +0000] \"GET /a?b=c HTTP/1.1\" 200 512 \"-\" \"curl/8.5\" \
             host=example.com in=120 duration=0.012 head=0.010 pool=app tier=primary backend=app-1 \
             attempts=2 failed=\"app 2:connect_refused(521)\" rescued=0 hedged=0 stale=0 fallback=- cf_ray=8f2a-LHR\n"
        );
    }

    #[test]
    fn a_retried_request_in_json() {
        let v = json(&retried(), 256);
        let mut raw = Vec::new();
        retried().json(256, &mut raw);
        let raw = String::from_utf8(raw).unwrap();
        let mut keys: Vec<(usize, &str)> = v
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (raw.find(&format!("\"{k}\":")).unwrap(), k.as_str()))
            .collect();
        keys.sort();
        let keys: Vec<&str> = keys.into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            keys,
            [
                "time",
                "visitor",
                "method",
                "host",
                "path",
                "protocol",
                "status",
                "bytes_in",
                "bytes_out",
                "duration",
                "head_time",
                "pool",
                "tier",
                "backend",
                "attempts",
                "failed",
                "rescued",
                "hedged",
                "stale",
                "fallback",
                "cf_ray",
                "referer",
                "user_agent"
            ]
        );
        assert_eq!(v["time"], "2026-12-05T15:07:47.123Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration"], 0.012);
        assert_eq!(v["head_time"], 0.0104);
        assert_eq!(
            v["failed"],
            serde_json::json!([{"backend": "app 2", "reason": "connect_refused", "would_be": 521}])
        );
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["fallback"], serde_json::Value::Null);
    }

    /// The fallback's answer, after a rescue and a held 503; a request refused before it was
    /// understood; what a visitor sent that would break a line.
    #[test]
    fn rows() {
        let b = backends();
        let mut fallback = retried();
        fallback.status = 503;
        fallback.backend = None;
        fallback.head_time = None;
        fallback.hedged = true;
        fallback.fallback = Some(GiveUp::AttemptsExhausted);
        fallback.failed = vec![
            Failed {
                backend: b[0].clone(),
                how: Failure::Rescued,
            },
            Failed {
                backend: b[1].clone(),
                how: Failure::Status(503),
            },
        ];
        let refused = Record {
            visitor: Some("198.51.100.7".parse().unwrap()),
            status: 400,
            ..Record::default()
        };
        let mut hostile = retried();
        hostile.clear();
        hostile.set(Part::Method, b"GET");
        hostile.set(Part::Target, b"/\"x\\\x01\xff");
        hostile.set(Part::Host, b"a b");
        hostile.set(Part::CfRay, b"\"");
        // (record, query_max, what the text holds)
        let rows: [(&Record, usize, &[&str]); 5] = [
            (
                &fallback,
                256,
                &[" 503 512 ", " head=- pool=app tier=- backend=- "],
            ),
            (
                &fallback,
                256,
                &[" rescued=1 hedged=1 stale=0 fallback=attempts_exhausted "],
            ),
            (
                &refused,
                256,
                &["198.51.100.7 - - [01/Jan/1970:00:00:00 +0000] \"-\" 400 0 \"-\" \"-\" host=- "],
            ),
            (&retried(), 1, &["\"GET /a?b... HTTP/1.1\""]),
            (
                &hostile,
                256,
                &[
                    "\"GET /\\x22x\\x5C\\x01\\xFF \"",
                    "host=\"a b\"",
                    "cf_ray=\"\\x22\"",
                ],
            ),
        ];
        for (record, query_max, holds) in rows {
            let line = text(record, query_max);
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            for part in holds {
                assert!(line.contains(part), "{part:?} not in {line}");
            }
        }
        // The backend names of failed attempts are the config's own: quoted as a whole value.
        let line = text(&fallback, 256);
        assert!(
            line.contains(" failed=\"app-1:rescued,app 2:status_503\" "),
            "{line}"
        );

        let v = json(&fallback, 256);
        assert_eq!(v["rescued"], true);
        assert_eq!(v["fallback"], "attempts_exhausted");
        assert_eq!(v["failed"][1]["would_be"], serde_json::Value::Null);
        assert_eq!(json(&retried(), 0)["path"], "/a");
        assert_eq!(json(&retried(), 2)["path"], "/a?b=...");
        assert_eq!(json(&retried(), 3)["path"], "/a?b=c");
        assert_eq!(json(&hostile, 256)["path"], "/\"x\\\u{1}\u{fffd}");
        assert_eq!(json(&refused, 256)["method"], serde_json::Value::Null);
        assert_eq!(json(&refused, 256)["protocol"], serde_json::Value::Null);
    }
}
