//! Serve-stale's store: per pool, the last good answer of each cacheable `GET` (by URL, and by
//! the request headers it varies on), in memory bounded by `max_bytes` (`moka`, least recently
//! used out first), served while no backend can answer. What may be kept and what a copy
//! answers are [`crate::h1::cache`]'s rules; this is the keeping.
//!
//! Keeping costs the data path little: a URL whose copy was renewed less than [`RENEW`] ago is
//! not copied again; otherwise the answer streams to the visitor as always and is copied on
//! the side ([`Tee`]) while it stays under `max_object_bytes`, and stored once it is whole.

use crate::h1::cache::{self, Kept, Lookup};
use bytes::Bytes;
use holdfast_config::StalePolicy;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A URL's copy is renewed at most this often: a hot page costs one copy a second, not one
/// per request.
pub const RENEW: Duration = Duration::from_secs(1);

/// What the store holds under a key: a copy, or (under a URL whose answers vary) the request
/// headers its copies are keyed by.
#[derive(Clone)]
enum Entry {
    Copy(Arc<Copy>),
    Varies { names: Arc<[String]> },
}

/// A kept answer.
pub struct Copy {
    pub kept: Kept,
    pub body: Bytes,
    /// When it was kept.
    pub at: Instant,
}

/// Bytes counted per entry beyond its key, head and body (the store's own bookkeeping).
const ENTRY_OVERHEAD: usize = 160;

/// URLs whose last answer could not be kept, remembered this many at most (each for
/// [`RENEW`]).
const UNKEPT_MAX: u64 = 100_000;

/// One pool's store.
pub struct Store {
    cache: Cache<String, Entry>,
    /// URLs whose last answer could not be kept (private, too large...): not copied again for
    /// [`RENEW`], so that such pages cost a copy a second, not one per request.
    unkept: Cache<String, ()>,
    /// The memory it was made with (a reload that changes it makes a new store).
    pub max_bytes: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Store {
    pub fn new(max_bytes: u64) -> Store {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &String, entry: &Entry| {
                let size = key.len()
                    + ENTRY_OVERHEAD
                    + match entry {
                        Entry::Copy(c) => c.kept.lines.len() + c.body.len(),
                        Entry::Varies { names } => names.iter().map(String::len).sum(),
                    };
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .build();
        let unkept = Cache::builder()
            .max_capacity(UNKEPT_MAX)
            .time_to_live(RENEW)
            .build();
        Store {
            cache,
            unkept,
            max_bytes,
        }
    }

    /// Whether the copy for `url` (and `request`, its head, for an answer that varies) was
    /// kept less than [`RENEW`] ago, or its last answer could not be kept that recently: no
    /// need to copy its answer again.
    pub fn recent(&self, url: &str, request: &[u8], now: Instant) -> bool {
        let at = match self.cache.get(url) {
            Some(Entry::Copy(c)) => Some(c.at),
            Some(Entry::Varies { names }) => {
                match self.cache.get(&cache::vary_key(url, &names, request)) {
                    Some(Entry::Copy(c)) => Some(c.at),
                    _ => None,
                }
            }
            None => None,
        };
        at.is_some_and(|at| now.saturating_duration_since(at) < RENEW)
            || self.unkept.contains_key(url)
    }

    /// Notes that `url`'s answer could not be kept (see [`Store::recent`]).
    pub fn unkept(&self, url: &str) {
        self.unkept.insert(url.to_string(), ());
    }

    /// Whether `url` has anything kept (a copy, or copies by variant).
    pub fn has(&self, url: &str) -> bool {
        self.cache.contains_key(url)
    }

    /// Keeps `copy` of the answer to `request` (its head as forwarded) under `url`.
    pub fn put(&self, url: &str, request: &[u8], copy: Copy) {
        if copy.kept.vary.is_empty() {
            self.cache
                .insert(url.to_string(), Entry::Copy(Arc::new(copy)));
            return;
        }
        let key = cache::vary_key(url, &copy.kept.vary, request);
        let names: Arc<[String]> = copy.kept.vary.clone().into();
        self.cache.insert(key, Entry::Copy(Arc::new(copy)));
        self.cache.insert(url.to_string(), Entry::Varies { names });
    }

    /// The copy for `lookup` (of `request`, its head as forwarded), if one is kept and may
    /// still be served (`max_age`, the answer's own `stale-if-error`).
    pub fn get(
        &self,
        lookup: &Lookup,
        request: &[u8],
        max_age: Duration,
        now: Instant,
    ) -> Option<Arc<Copy>> {
        let copy = match self.cache.get(&lookup.url)? {
            Entry::Copy(c) => c,
            Entry::Varies { names, .. } => {
                match self
                    .cache
                    .get(&cache::vary_key(&lookup.url, &names, request))?
                {
                    Entry::Copy(c) => c,
                    Entry::Varies { .. } => return None,
                }
            }
        };
        let resident = now.saturating_duration_since(copy.at);
        cache::servable(&copy.kept, resident, max_age).then_some(copy)
    }

    /// Entries and the bytes they are counted for (after the store's pending work).
    pub fn size(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

/// A pool's serve-stale: what it keeps and for how long, and its store.
#[derive(Debug, Clone)]
pub struct Keeper {
    pub store: Arc<Store>,
    pub policy: Arc<StalePolicy>,
}

impl Keeper {
    /// The pool's for `policy` (none when it has none): the store `previous` had when its
    /// memory is the same (a reload keeps the copies), else a new one.
    pub fn new(policy: Option<&StalePolicy>, previous: Option<&Keeper>) -> Option<Keeper> {
        let policy = policy?;
        let store = match previous {
            Some(p) if p.store.max_bytes == policy.max_bytes => Arc::clone(&p.store),
            _ => Arc::new(Store::new(policy.max_bytes)),
        };
        Some(Keeper {
            store,
            policy: Arc::new(policy.clone()),
        })
    }
}

/// An answer's head and body copied on the side as they go to the visitor, while they stay
/// under the limit.
pub struct Tee {
    /// The response head, as the backend sent it.
    pub head: Vec<u8>,
    /// The body as it came (chunk framing included, when chunked).
    pub body: Vec<u8>,
    pub chunked: bool,
    limit: usize,
    /// More came than the limit: nothing is kept.
    pub over: bool,
    /// The body went to the visitor whole.
    pub whole: bool,
}

impl Tee {
    pub fn new(head: &[u8], chunked: bool, limit: u64) -> Tee {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Tee {
            over: head.len() > limit,
            head: head.to_vec(),
            body: Vec::new(),
            chunked,
            limit,
            whole: false,
        }
    }

    /// Copies the next piece of the body.
    pub fn take(&mut self, piece: &[u8]) {
        if self.over {
            return;
        }
        if self.head.len() + self.body.len() + piece.len() > self.limit {
            self.over = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(piece);
    }

    /// The copy to keep, when the answer may be kept (`request` being its request's head as
    /// forwarded) and came whole under the limit.
    pub fn finish(self, request: &[u8], policy: &StalePolicy, now: Instant) -> Option<Copy> {
        if self.over || !self.whole {
            return None;
        }
        let kept =
            cache::keep(request, &self.head, &policy.statuses, policy.ignore_cookies).ok()?;
        let body = match self.chunked {
            true => cache::dechunk(&self.body)?,
            false => self.body,
        };
        Some(Copy {
            kept,
            body: Bytes::from(body),
            at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> StalePolicy {
        StalePolicy {
            max_bytes: 1 << 20,
            max_object_bytes: 1 << 20,
            max_age: Duration::from_secs(86_400),
            statuses: vec![200, 404],
            ignore_cookies: false,
        }
    }

    fn request(url: &str, lines: &str) -> Vec<u8> {
        format!("GET {url} HTTP/1.1\r\nHost: example.com\r\n{lines}\r\n").into_bytes()
    }

    fn copy(head: &str, body: &[u8], request: &[u8], at: Instant) -> Copy {
        let mut tee = Tee::new(head.as_bytes(), false, 1 << 20);
        tee.take(body);
        tee.whole = true;
        tee.finish(request, &policy(), at).expect("kept")
    }

    fn lookup(request: &[u8]) -> Lookup {
        cache::lookup("https", request).expect("a lookup")
    }

    #[test]
    fn kept_found_and_aged_out() {
        let store = Store::new(1 << 20);
        let now = Instant::now();
        let req = request("/a", "");
        let url = lookup(&req).url;
        assert!(!store.recent(&url, &req, now));
        store.put(
            &url,
            &req,
            copy(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                b"hi",
                &req,
                now,
            ),
        );
        assert!(store.recent(&url, &req, now));
        assert!(!store.recent(&url, &req, now + RENEW));
        let other = request("/private", "");
        let private = lookup(&other).url;
        assert!(!store.recent(&private, &other, now));
        store.unkept(&private);
        assert!(
            store.recent(&private, &other, now),
            "not copied again for a while"
        );
        let day = Duration::from_secs(86_400);
        let got = store.get(&lookup(&req), &req, day, now).expect("a copy");
        assert_eq!(&got.body[..], b"hi");
        assert!(
            store
                .get(
                    &lookup(&req),
                    &req,
                    Duration::from_secs(10),
                    now + Duration::from_secs(11)
                )
                .is_none(),
            "older than max_age"
        );
        assert!(store
            .get(&lookup(&request("/b", "")), &request("/b", ""), day, now)
            .is_none());
    }

    #[test]
    fn variants_kept_apart() {
        let store = Store::new(1 << 20);
        let now = Instant::now();
        let head = "HTTP/1.1 200 OK\r\nVary: Accept-Language\r\nContent-Length: 2\r\n\r\n";
        let fr = request("/", "Accept-Language: fr\r\n");
        let en = request("/", "Accept-Language: en\r\n");
        let url = lookup(&fr).url;
        store.put(&url, &fr, copy(head, b"fr", &fr, now));
        assert!(store.recent(&url, &fr, now));
        assert!(
            !store.recent(&url, &en, now),
            "each variant is renewed on its own"
        );
        store.put(&url, &en, copy(head, b"en", &en, now));
        let day = Duration::from_secs(86_400);
        assert_eq!(
            &store.get(&lookup(&fr), &fr, day, now).expect("fr").body[..],
            b"fr"
        );
        assert_eq!(
            &store.get(&lookup(&en), &en, day, now).expect("en").body[..],
            b"en"
        );
        let de = request("/", "Accept-Language: de\r\n");
        assert!(
            store.get(&lookup(&de), &de, day, now).is_none(),
            "no copy for another language"
        );
    }

    #[test]
    fn bounded_with_the_latest_kept() {
        let store = Store::new(64 * 1024);
        let now = Instant::now();
        let body = vec![b'x'; 1000];
        for i in 0..1000 {
            let req = request(&format!("/{i}"), "");
            let url = lookup(&req).url;
            store.put(
                &url,
                &req,
                copy(
                    "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                    &body,
                    &req,
                    now,
                ),
            );
        }
        let (entries, bytes) = store.size();
        assert!(bytes <= 64 * 1024, "{bytes} bytes");
        assert!(entries > 10 && entries < 100, "{entries} entries");
        let last = request("/999", "");
        let day = Duration::from_secs(86_400);
        assert!(
            store.get(&lookup(&last), &last, day, now).is_some(),
            "the latest is kept"
        );
        let first = request("/0", "");
        assert!(
            store.get(&lookup(&first), &first, day, now).is_none(),
            "the oldest went"
        );
    }

    #[test]
    fn tees() {
        let req = request("/", "");
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut tee = Tee::new(head.as_bytes(), true, 1 << 20);
        tee.take(b"5\r\nhello\r\n");
        tee.take(b"0\r\n\r\n");
        assert!(
            tee.finish(&req, &policy(), Instant::now()).is_none(),
            "not whole: not kept"
        );
        let mut tee = Tee::new(head.as_bytes(), true, 1 << 20);
        tee.take(b"5\r\nhello\r\n0\r\n\r\n");
        tee.whole = true;
        let copy = tee.finish(&req, &policy(), Instant::now()).expect("kept");
        assert_eq!(&copy.body[..], b"hello");
        let mut small = Tee::new(head.as_bytes(), true, (head.len() + 8) as u64);
        small.take(b"5\r\nhello\r\n");
        small.whole = true;
        assert!(small.over);
        assert!(
            small.finish(&req, &policy(), Instant::now()).is_none(),
            "over max_object_bytes"
        );
        let private = Tee::new(
            b"HTTP/1.1 200 OK\r\nCache-Control: private\r\n\r\n",
            false,
            1 << 20,
        );
        let mut private = private;
        private.whole = true;
        assert!(private.finish(&req, &policy(), Instant::now()).is_none());
    }
}
