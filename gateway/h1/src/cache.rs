//! Serve-stale's rules over heads: which answers a shared cache may keep (RFC 9111 3 and 5.2,
//! RFC 5861's `stale-if-error`), under which key (the URL and the request headers the answer
//! varies on), and the answer a kept copy gives (its status and headers, `Age`, the stale
//! marker; a `304` for a conditional request that matches it). No I/O, no clock: the caller
//! says how long a copy has been kept.

use crate::trimmed;
use std::time::{Duration, SystemTime};

/// The header that marks an answer served from a kept copy while no backend could answer.
pub const STALE_HEADER: &str = "X-Holdfast-Stale";

/// Request headers read per request: a request with more is not looked up.
const MAX_LINES: usize = crate::request::MAX_HEADERS;

/// Why an answer is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a `GET` (a `HEAD` is answered from a `GET`'s copy, never kept itself).
    Method,
    /// The request had a body.
    RequestBody,
    /// The request said `Cache-Control: no-store`.
    RequestNoStore,
    /// A status the pool does not keep.
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`: one visitor's answer.
    Private,
    /// `no-cache`, `must-revalidate` or `proxy-revalidate`: never used without asking the
    /// backend first, which is what cannot be done here.
    MustRevalidate,
    /// `Set-Cookie`: one visitor's answer.
    SetCookie,
    /// A request with `Authorization`, the answer not saying `public` or `s-maxage`.
    Authorization,
    /// A request with `Cookie` (when cookies are not ignored), the answer not saying `public`
    /// or `s-maxage`: it may be one visitor's page.
    Cookie,
    /// `Vary: *`: no request can be known to match.
    VaryStar,
    /// A head that cannot be read.
    Malformed,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Method => "method",
            Skip::RequestBody => "request_body",
            Skip::RequestNoStore => "request_no_store",
            Skip::Status => "status",
            Skip::NoStore => "no_store",
            Skip::Private => "private",
            Skip::MustRevalidate => "must_revalidate",
            Skip::SetCookie => "set_cookie",
            Skip::Authorization => "authorization",
            Skip::Cookie => "cookie",
            Skip::VaryStar => "vary_star",
            Skip::Malformed => "malformed",
        }
    }
}

/// What a request asks of the store: its key, and what a kept copy's answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// `scheme://host/target`, the host in lower case without its port.
    pub url: String,
    /// A `HEAD`: the answer without its body.
    pub head_only: bool,
    /// `If-None-Match`, as sent.
    pub if_none_match: Option<Vec<u8>>,
    /// `If-Modified-Since`, when it is a date.
    pub if_modified_since: Option<SystemTime>,
}

/// An answer kept: what its copy is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub status: u16,
    /// Its header lines (`Name: value\r\n` each) but the hop-by-hop ones, `Content-Length`
    /// and `Age`.
    pub lines: Vec<u8>,
    /// The request headers it varies on (lower case), in the order `Vary` names them.
    pub vary: Vec<String>,
    /// Its `Age` when it was kept, in seconds.
    pub age: u64,
    /// How long after it was kept it may still be served, when the answer says
    /// (`stale-if-error`, on top of its freshness: RFC 5861).
    pub limit: Option<Duration>,
    pub etag: Option<Vec<u8>>,
    pub last_modified: Option<SystemTime>,
}

/// The answer a kept copy gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The status line and header lines, without the blank line that ends the head (the
    /// caller adds `Connection` as it needs).
    pub head: Vec<u8>,
    /// Whether the body follows (not for a `304` or a `HEAD`).
    pub body: bool,
}

/// `Cache-Control` directives of a head, every line of it, names in lower case.
#[derive(Debug, Default)]
struct Directives(Vec<(String, Option<String>)>);

impl Directives {
    fn add(&mut self, value: &[u8]) {
        let text = String::from_utf8_lossy(value);
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, arg) = match part.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"').to_string())),
                None => (part, None),
            };
            self.0.push((name.to_ascii_lowercase(), arg));
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    fn seconds(&self, name: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, a)| a.as_deref()?.parse().ok())
    }
}

/// Headers that belong to one connection and are never kept (RFC 9110 7.6.1), with those
/// recomputed when a copy is served.
fn dropped(name: &str) -> bool {
    const DROPPED: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "content-length",
        "age",
        "x-holdfast-stale",
    ];
    DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d))
}

/// A list header's values (`Vary`, `Connection`), lower case.
fn tokens(value: &[u8]) -> impl Iterator<Item = String> + '_ {
    value
        .split(|&b| b == b',')
        .map(trimmed)
        .filter(|t| !t.is_empty())
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
}

fn date(value: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(value).ok()?.trim()).ok()
}

/// The request as the store sees it: `None` unless it is a `GET` or `HEAD` without a body,
/// with a `Host`. `scheme` is how the visitor came (`http` or `https`).
pub fn lookup(scheme: &str, request: &[u8]) -> Option<Lookup> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_LINES];
    let mut req = httparse::Request::new(&mut lines);
    let Ok(httparse::Status::Complete(_)) = req.parse(request) else {
        return None;
    };
    let head_only = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = req.path?;
    let mut found = Lookup {
        url: String::new(),
        head_only,
        if_none_match: None,
        if_modified_since: None,
    };
    let mut host = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            host = std::str::from_utf8(h.value).ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && trimmed(h.value) != b"0")
        {
            return None;
        } else if name.eq_ignore_ascii_case("if-none-match") {
            found.if_none_match = Some(h.value.to_vec());
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            found.if_modified_since = date(h.value);
        }
    }
    found.url = url(scheme, host?.as_bytes(), target.as_bytes());
    Some(found)
}

/// The key of a request's copy: `scheme://host/target`, the host in lower case without its
/// port, as the router takes it (`Example.com:443` is `example.com`; an IPv6 literal keeps its
/// brackets); the target as sent.
pub fn url(scheme: &str, host: &[u8], target: &[u8]) -> String {
    let host = trimmed(host);
    let host = match host.iter().rposition(|&b| b == b':') {
        Some(at) if at > 0 && host[at + 1..].iter().all(u8::is_ascii_digit) => &host[..at],
        _ => host,
    };
    let mut url = String::with_capacity(scheme.len() + 3 + host.len() + target.len());
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(&String::from_utf8_lossy(host).to_ascii_lowercase());
    url.push_str(&String::from_utf8_lossy(target));
    url
}

/// A chunked body's data without its framing (trailers dropped); `None` when it is not a
/// whole, well-formed chunked body.
pub fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let mut scanner = crate::chunked::ChunkedScanner::default();
    let mut data = Vec::with_capacity(raw.len());
    let mut at = 0;
    while !scanner.is_done() {
        match scanner.step(&raw[at..]).ok()? {
            crate::chunked::Step::NeedMore => return None,
            crate::chunked::Step::Framing(n) | crate::chunked::Step::Trailers(n) => at += n,
            crate::chunked::Step::Data(n) => {
                data.extend_from_slice(&raw[at..at + n]);
                at += n;
            }
        }
    }
    Some(data)
}

/// The key of a copy that varies on `vary`: the URL and the request's values of those headers
/// (every line of each, joined by `, `).
pub fn vary_key(url: &str, vary: &[String], request: &[u8]) -> String {
    let mut lines = [httparse::EMPTY_HEADER; MAX_LINES];
    let mut req = httparse::Request::new(&mut lines);
    let _ = req.parse(request);
    let mut key = url.to_string();
    for name in vary {
        key.push('\n');
        key.push_str(name);
        key.push(':');
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(trimmed(h.value)).into_owned())
            .collect();
        key.push_str(&values.join(", "));
    }
    key
}

/// Whether the answer `response` (its head, as the backend sent it) to `request` may be kept,
/// and what of it: RFC 9111's rules for a shared cache, for the statuses the pool keeps. A
/// request with `Cookie` is kept only when the answer says `public` or `s-maxage`, as
/// Varnish's default does, unless `cookies_ignored`.
pub fn keep(
    request: &[u8],
    response: &[u8],
    statuses: &[u16],
    cookies_ignored: bool,
) -> Result<Kept, Skip> {
    let mut req_lines = [httparse::EMPTY_HEADER; MAX_LINES];
    let mut req = httparse::Request::new(&mut req_lines);
    let Ok(httparse::Status::Complete(_)) = req.parse(request) else {
        return Err(Skip::Malformed);
    };
    if req.method != Some("GET") {
        return Err(Skip::Method);
    }
    let mut asked = Directives::default();
    let (mut authorization, mut cookie) = (false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("cache-control") {
            asked.add(h.value);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = true;
        } else if h.name.eq_ignore_ascii_case("cookie") {
            cookie = !cookies_ignored;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && trimmed(h.value) != b"0")
        {
            return Err(Skip::RequestBody);
        }
    }
    if asked.has("no-store") {
        return Err(Skip::RequestNoStore);
    }

    let mut res_lines = [httparse::EMPTY_HEADER; MAX_LINES];
    let mut res = httparse::Response::new(&mut res_lines);
    let Ok(httparse::Status::Complete(_)) = res.parse(response) else {
        return Err(Skip::Malformed);
    };
    let status = res.code.ok_or(Skip::Malformed)?;
    if !statuses.contains(&status) {
        return Err(Skip::Status);
    }
    let mut says = Directives::default();
    let (mut vary, mut age, mut etag, mut last_modified) = (Vec::new(), 0, None, None);
    let mut connection: Vec<String> = Vec::new();
    for h in res.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("cache-control") {
            says.add(h.value);
        } else if name.eq_ignore_ascii_case("set-cookie") {
            return Err(Skip::SetCookie);
        } else if name.eq_ignore_ascii_case("vary") {
            for t in tokens(h.value) {
                if t == "*" {
                    return Err(Skip::VaryStar);
                }
                if !vary.contains(&t) {
                    vary.push(t);
                }
            }
        } else if name.eq_ignore_ascii_case("age") {
            age = std::str::from_utf8(trimmed(h.value))
                .ok()
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
        } else if name.eq_ignore_ascii_case("etag") {
            etag = Some(trimmed(h.value).to_vec());
        } else if name.eq_ignore_ascii_case("last-modified") {
            last_modified = date(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection.extend(tokens(h.value));
        }
    }
    if says.has("no-store") {
        return Err(Skip::NoStore);
    }
    if says.has("private") {
        return Err(Skip::Private);
    }
    if ["no-cache", "must-revalidate", "proxy-revalidate"]
        .iter()
        .any(|d| says.has(d))
    {
        return Err(Skip::MustRevalidate);
    }
    let shared = says.has("public") || says.has("s-maxage");
    if authorization && !shared {
        return Err(Skip::Authorization);
    }
    if cookie && !shared {
        return Err(Skip::Cookie);
    }
    let limit = says.seconds("stale-if-error").map(|grace| {
        let fresh = says
            .seconds("s-maxage")
            .or_else(|| says.seconds("max-age"))
            .unwrap_or(0);
        Duration::from_secs(fresh.saturating_add(grace).saturating_sub(age))
    });
    let mut lines = Vec::new();
    for h in res.headers.iter() {
        let lower = h.name.to_ascii_lowercase();
        if dropped(h.name) || connection.contains(&lower) {
            continue;
        }
        lines.extend_from_slice(h.name.as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(h.value);
        lines.extend_from_slice(b"\r\n");
    }
    Ok(Kept {
        status,
        lines,
        vary,
        age,
        limit,
        etag,
        last_modified,
    })
}

/// Whether a copy kept `resident` ago may still be served, at most `max_age` old.
pub fn servable(kept: &Kept, resident: Duration, max_age: Duration) -> bool {
    let age = Duration::from_secs(kept.age).saturating_add(resident);
    age <= max_age && kept.limit.is_none_or(|limit| resident <= limit)
}

/// Whether `If-None-Match` holds a tag equal to `etag` by the weak comparison, or `*`.
fn none_match(asked: &[u8], etag: Option<&[u8]>) -> bool {
    let weak = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    asked
        .split(|&b| b == b',')
        .map(trimmed)
        .any(|tag| tag == b"*" || etag.is_some_and(|e| weak(e) == weak(tag)))
}

/// The answer a copy of `body_len` bytes, kept `resident` ago, gives to `lookup`: its status
/// and headers with `Age` and the stale marker, or `304 Not Modified` when a conditional
/// request matches it (RFC 9110 13.1: `If-None-Match` first, else `If-Modified-Since`; only
/// for a 2xx copy).
pub fn answer(kept: &Kept, body_len: u64, resident: Duration, lookup: &Lookup) -> Answer {
    let age = kept.age.saturating_add(resident.as_secs());
    let ok = (200..300).contains(&kept.status);
    let not_modified = ok
        && match (&lookup.if_none_match, lookup.if_modified_since) {
            (Some(asked), _) => none_match(asked, kept.etag.as_deref()),
            (None, Some(since)) => kept.last_modified.is_some_and(|m| m <= since),
            (None, None) => false,
        };
    let status = if not_modified { 304 } else { kept.status };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", crate::reason(status)).into_bytes();
    if not_modified {
        // RFC 9110 15.4.5: what the 200 would have carried of these.
        const KEPT_IN_304: [&[u8]; 7] = [
            b"cache-control",
            b"content-location",
            b"date",
            b"etag",
            b"expires",
            b"vary",
            b"last-modified",
        ];
        for line in kept.lines.split_inclusive(|&b| b == b'\n') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            if KEPT_IN_304.iter().any(|k| name.eq_ignore_ascii_case(k)) {
                head.extend_from_slice(line);
            }
        }
    } else {
        head.extend_from_slice(&kept.lines);
        if kept.status != 204 {
            head.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
        }
    }
    head.extend_from_slice(format!("Age: {age}\r\n{STALE_HEADER}: 1\r\n").as_bytes());
    Answer {
        status,
        head,
        body: !not_modified && !lookup.head_only && kept.status != 204,
    }
}

#[cfg(test)]
mod tests;
