//! The request head as holdfast forwards it to a backend (RFC 9110 7.6.1): the request line as
//! received; every header except the hop-by-hop ones (`Connection`, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, and whatever `Connection` names, save a few
//! that framing and routing rest on).
//!
//! Who the visitor is depends on whether the peer is trusted (Cloudflare, or a configured
//! proxy): a trusted peer names the visitor (`CF-Connecting-IP`), keeps the headers it sent, and
//! the visitor's address is appended to its `X-Forwarded-For`; for any other peer the visitor
//! is the peer itself, and every header that could name someone else (`CF-Connecting-IP`,
//! `True-Client-IP`, `X-Real-IP`, `Forwarded`, the configured visitor header) is removed,
//! `X-Forwarded-For` starts afresh with the peer's address and `X-Forwarded-Proto` is the
//! listener's scheme. Either way backends get the visitor alone in `X-Real-IP`. (The three
//! header names are configurable.) An upgrade request (`Connection: upgrade` with `Upgrade`)
//! keeps both, so WebSockets pass through.
//! `Transfer-Encoding: chunked` stays: the body is forwarded as it came. Response heads get the
//! same treatment, and the gateway's own `Connection` header.

use super::request::MAX_HEADERS;
use super::trimmed;
use std::io::Write;
use std::net::IpAddr;
use std::ops::Range;

/// What the gateway adds about the visitor's connection.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The TCP peer.
    pub client: IpAddr,
    /// `http` or `https`: the scheme of the listener the request came in on.
    pub proto: &'static str,
    /// Whether the peer is believed when it names the visitor.
    pub trusted: bool,
    pub names: &'a HeaderNames,
}

/// The headers that carry the visitor's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    /// Where a trusted peer names the visitor (`CF-Connecting-IP`).
    pub visitor_ip: String,
    /// The chain of addresses (`X-Forwarded-For`).
    pub forwarded_for: String,
    /// The visitor alone (`X-Real-IP`).
    pub real_ip: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            visitor_ip: "CF-Connecting-IP".to_string(),
            forwarded_for: "X-Forwarded-For".to_string(),
            real_ip: "X-Real-IP".to_string(),
        }
    }
}

/// Headers that name a visitor: removed when the peer is not trusted.
const NAMES_A_VISITOR: [&str; 4] = [
    "cf-connecting-ip",
    "true-client-ip",
    "x-real-ip",
    "forwarded",
];

/// The visitor's address: what a trusted peer names in `header` (the first valid one), or the
/// peer itself.
pub fn visitor(headers: &[httparse::Header<'_>], fwd: &Forwarding<'_>) -> IpAddr {
    if !fwd.trusted {
        return fwd.client;
    }
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(&fwd.names.visitor_ip))
        .find_map(|h| std::str::from_utf8(trimmed(h.value)).ok()?.parse().ok())
        .unwrap_or(fwd.client)
}

/// Hop-by-hop headers, always removed (re-added for upgrades).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Headers that a `Connection` token may not remove: the request's framing and routing.
const PROTECTED: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// The tokens of a head's `Connection` lines, trimmed, empty ones left out.
fn connection_tokens<'h>(
    headers: &'h [httparse::Header<'h>],
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trimmed)
        .filter(|t| !t.is_empty())
}

fn upgrade_of<'h>(headers: &'h [httparse::Header<'h>]) -> Option<&'h [u8]> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let protocol = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value);
    protocol.filter(|_| asks)
}

/// The tokens of a head's `Connection` lines, gathered once, so that each header line is
/// checked against them without reading the head again. Most heads have none, or one.
struct ConnectionTokens<'h> {
    tokens: [&'h [u8]; 8],
    len: usize,
    /// More tokens than `tokens` holds: each check reads the `Connection` lines themselves.
    many: Option<&'h [httparse::Header<'h>]>,
}

impl<'h> ConnectionTokens<'h> {
    fn of(headers: &'h [httparse::Header<'h>]) -> Self {
        let mut found = ConnectionTokens {
            tokens: [&[]; 8],
            len: 0,
            many: None,
        };
        for token in connection_tokens(headers) {
            let Some(slot) = found.tokens.get_mut(found.len) else {
                found.many = Some(headers);
                break;
            };
            *slot = token;
            found.len += 1;
        }
        found
    }

    /// Whether a `Connection` line names the header `name` (which it may not for the few that
    /// framing and routing rest on: [`PROTECTED`]).
    fn name(&self, name: &str) -> bool {
        if self.len == 0 || PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p)) {
            return false;
        }
        let name = name.as_bytes();
        match self.many {
            None => self.tokens[..self.len]
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name)),
            Some(headers) => connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name)),
        }
    }
}

/// Writes `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes `ip` as its `Display` does (without the formatting machinery for IPv4, the common
/// case: a request's rewrite writes the visitor twice).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u16::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Room for what a rewrite adds to a head (forwarding headers, the gateway's `Connection`),
/// reserved at once: a head written into a new buffer grows it once, not line by line.
const ADDED: usize = 192;

/// What the rewrite saw of a request, for its line in the access log: the visitor as the
/// backend is told of it, and where in the head the method, the target, `CF-Ray`, `Referer`
/// and `User-Agent` are (the first of each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub visitor: IpAddr,
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub cf_ray: Option<Range<usize>>,
    pub referer: Option<Range<usize>>,
    pub user_agent: Option<Range<usize>>,
}

/// Where `part` (a slice of `whole`) lies within it.
fn span(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

/// Writes the head to send to the backend into `out` (cleared first). `head` is a complete
/// request head already judged valid by [`super::request::parse`]; `None` if it is not.
pub fn request_head(head: &[u8], fwd: Forwarding, out: &mut Vec<u8>) -> Option<Seen> {
    out.clear();
    out.reserve(head.len() + ADDED);
    let mut lines = super::header_room::<MAX_HEADERS>();
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(head, &mut lines);
    let (Ok(httparse::Status::Complete(_)), Some(method), Some(path), Some(version)) =
        (parsed, req.method, req.path, req.version)
    else {
        return None;
    };
    let mut seen = Seen {
        visitor: fwd.client,
        method: span(head, method.as_bytes()),
        target: span(head, path.as_bytes()),
        cf_ray: None,
        referer: None,
        user_agent: None,
    };
    let headers = req.headers;
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.");
    push_decimal(out, u16::from(version));
    out.extend_from_slice(b"\r\n");

    let connection = ConnectionTokens::of(headers);
    let names = fwd.names;
    let is_forwarded_for = |name: &str| name.eq_ignore_ascii_case(&names.forwarded_for);
    let is_proto = |name: &str| name.eq_ignore_ascii_case("x-forwarded-proto");
    let names_a_visitor = |name: &str| {
        NAMES_A_VISITOR.iter().any(|n| name.eq_ignore_ascii_case(n))
            || name.eq_ignore_ascii_case(&names.visitor_ip)
    };
    let visitor = visitor(headers, &fwd);
    seen.visitor = visitor;
    let mut proto_seen = false;
    for h in headers.iter() {
        let name = h.name;
        let noted = match name.len() {
            6 if name.eq_ignore_ascii_case("cf-ray") => Some(&mut seen.cf_ray),
            7 if name.eq_ignore_ascii_case("referer") => Some(&mut seen.referer),
            10 if name.eq_ignore_ascii_case("user-agent") => Some(&mut seen.user_agent),
            _ => None,
        };
        if let Some(at @ None) = noted {
            *at = Some(span(head, trimmed(h.value)));
        }
        let untrusted_claim = !fwd.trusted && (names_a_visitor(name) || is_proto(name));
        if HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
            || connection.name(name)
            || is_forwarded_for(name)
            || name.eq_ignore_ascii_case(&names.real_ip)
            || untrusted_claim
        {
            continue;
        }
        proto_seen |= is_proto(name);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    // From a trusted peer, every prior `X-Forwarded-For` line merged into one and the visitor
    // appended; from any other, the peer alone.
    out.extend_from_slice(names.forwarded_for.as_bytes());
    out.extend_from_slice(b": ");
    if fwd.trusted {
        let prior = headers
            .iter()
            .filter(|h| is_forwarded_for(h.name) && !connection.name(h.name))
            .map(|h| trimmed(h.value))
            .filter(|v| !v.is_empty());
        for value in prior {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
    }
    let at = out.len();
    push_ip(out, visitor);
    let written = at..out.len();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(names.real_ip.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_within(written);
    out.extend_from_slice(b"\r\n");
    if !proto_seen {
        out.extend_from_slice(b"X-Forwarded-Proto: ");
        out.extend_from_slice(fwd.proto.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(protocol) = upgrade_of(headers) {
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        out.extend_from_slice(protocol);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(seen)
}

/// The fields of a response head that go on to the visitor, in their order: all but the
/// hop-by-hop ones, those a `Connection` line names (save the few framing rests on), and a
/// `Content-Length` beside a `Transfer-Encoding`. [`response_head`] writes them as HTTP/1.1; an
/// h2 visitor's stream takes them from the backend's head directly.
pub fn forwarded_fields<'h>(
    headers: &'h [httparse::Header<'h>],
) -> impl Iterator<Item = &'h httparse::Header<'h>> {
    // With `Transfer-Encoding`, the body is framed by it (chunked) or by the close, never by
    // a `Content-Length` beside it: that one is dropped, so that the answer cannot be read two
    // ways downstream (RFC 9112 6.3 rule 3: a sender must remove it before forwarding).
    // (A `Transfer-Encoding` naming no coding frames nothing, as in `response::parse`.)
    let transfer_coded = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|coding| !trimmed(coding).is_empty());
    let connection = ConnectionTokens::of(headers);
    headers.iter().filter(move |h| {
        let name = h.name;
        let dropped = (transfer_coded && name.eq_ignore_ascii_case("content-length"))
            || HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
            || connection.name(name);
        !dropped
    })
}

/// Writes the response head to send to the visitor into `out` (cleared first): the status line
/// as received, every header but the hop-by-hop ones (and `Content-Length` beside
/// `Transfer-Encoding`), and the gateway's own `Connection` header:
/// `close` when the visitor's connection ends after this answer, `keep-alive` for an HTTP/1.0
/// visitor whose connection stays open, `upgrade` (with `Upgrade`) for a 101. `head` is a
/// complete response head; returns false if it is not.
pub fn response_head(
    head: &[u8],
    keep_alive: bool,
    http11_visitor: bool,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    out.reserve(head.len() + ADDED);
    let mut lines = super::header_room::<MAX_HEADERS>();
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, head, &mut lines);
    let (Ok(httparse::Status::Complete(_)), Some(code), Some(version)) =
        (parsed, res.code, res.version)
    else {
        return false;
    };
    out.extend_from_slice(b"HTTP/1.");
    push_decimal(out, u16::from(version));
    out.push(b' ');
    push_decimal(out, code);
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let headers = res.headers;
    let upgrade = (code == 101).then(|| upgrade_of(headers)).flatten();
    for h in forwarded_fields(headers) {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    match upgrade {
        Some(protocol) => {
            out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
            out.extend_from_slice(protocol);
            out.extend_from_slice(b"\r\n");
        }
        None if !keep_alive => out.extend_from_slice(b"Connection: close\r\n"),
        None if !http11_visitor => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(head: &str) -> String {
        rewrite_from(head, true)
    }

    fn rewrite_from(head: &str, trusted: bool) -> String {
        let names = HeaderNames::default();
        let fwd = Forwarding {
            client: "198.51.100.7".parse().unwrap(),
            proto: "https",
            trusted,
            names: &names,
        };
        let mut out = Vec::new();
        assert!(
            request_head(head.as_bytes(), fwd, &mut out).is_some(),
            "{head:?}"
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_a_trusted_peer_names_the_visitor() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nCF-Connecting-IP: 203.0.113.9\r\n\
                    True-Client-IP: 203.0.113.10\r\nX-Real-IP: 203.0.113.11\r\n\
                    Forwarded: for=203.0.113.12\r\nX-Forwarded-For: 203.0.113.13\r\n\
                    X-Forwarded-Proto: https\r\nCF-Ray: 8a1\r\n\r\n";
        // (trusted, what backends get, what they must not get)
        let table: [(bool, &[&str], &[&str]); 2] = [
            (
                true,
                &[
                    "CF-Connecting-IP: 203.0.113.9\r\n",
                    "True-Client-IP: 203.0.113.10\r\n",
                    "X-Forwarded-For: 203.0.113.13, 203.0.113.9\r\n",
                    "X-Real-IP: 203.0.113.9\r\n",
                    "X-Forwarded-Proto: https\r\n",
                    "CF-Ray: 8a1\r\n",
                ],
                &["203.0.113.11", "198.51.100.7"],
            ),
            (
                false,
                &[
                    "X-Forwarded-For: 198.51.100.7\r\n",
                    "X-Real-IP: 198.51.100.7\r\n",
                    "X-Forwarded-Proto: https\r\n",
                    "CF-Ray: 8a1\r\n",
                ],
                &[
                    "203.0.113.",
                    "Forwarded: ",
                    "CF-Connecting-IP",
                    "True-Client-IP",
                ],
            ),
        ];
        for (trusted, has, lacks) in table {
            let out = rewrite_from(head, trusted);
            for h in has {
                assert!(out.contains(h), "trusted {trusted}: no {h:?} in {out}");
            }
            for h in lacks {
                assert!(!out.contains(h), "trusted {trusted}: {h:?} in {out}");
            }
            assert_eq!(out.matches("X-Real-IP").count(), 1, "{out}");
        }
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_https_and_a_bad_visitor_header_is_ignored() {
        let out = rewrite_from(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n",
            false,
        );
        // The listener's scheme (https in these tests) whatever was claimed.
        assert_eq!(out.matches("X-Forwarded-Proto").count(), 1, "{out}");
        let out = rewrite_from(
            "GET / HTTP/1.1\r\nHost: a\r\nCF-Connecting-IP: not-an-ip\r\n\r\n",
            true,
        );
        assert!(out.contains("X-Real-IP: 198.51.100.7\r\n"), "{out}");
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
        let out = rewrite(
            "GET /a?b=c HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive, X-Secret\r\n\
             Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
             X-Secret: 1\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET /a?b=c HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\
             X-Forwarded-For: 198.51.100.7\r\nX-Real-IP: 198.51.100.7\r\n\
             X-Forwarded-Proto: https\r\n\r\n"
        );
    }

    #[test]
    fn prior_forwarding_headers_are_kept_and_merged() {
        let out = rewrite(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.1\r\n\
             X-Forwarded-For: 203.0.113.2, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n",
        );
        assert!(
            out.contains("X-Forwarded-For: 203.0.113.1, 203.0.113.2, 10.0.0.1, 198.51.100.7\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Proto: http\r\n"), "{out}");
        assert_eq!(out.matches("X-Forwarded-").count(), 2, "{out}");
        assert!(out.contains("X-Real-IP: 198.51.100.7\r\n"), "{out}");
    }

    #[test]
    fn connection_cannot_remove_framing_or_routing() {
        let out = rewrite(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: Host, Content-Length, Transfer-Encoding\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
        );
        assert!(out.contains("Host: a\r\n"), "{out}");
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("connection"), "{out}");
    }

    #[test]
    fn upgrades_pass_through() {
        let head = "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                    Sec-WebSocket-Key: x\r\n\r\n";
        let out = rewrite(head);
        assert!(
            out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{out}"
        );
        assert!(out.contains("Sec-WebSocket-Key: x\r\n"));
        // `Upgrade` without `Connection: upgrade` is not an upgrade: it is dropped.
        let plain = rewrite("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert!(!plain.contains("Upgrade"), "{plain}");
    }

    #[test]
    fn response_heads_get_the_gateways_connection_header() {
        let mut out = Vec::new();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-App: 2\r\n\r\n";
        assert!(response_head(head, true, true, &mut out));
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: 2\r\n\r\n"
        );
        assert!(response_head(head, false, true, &mut out));
        assert!(out.ends_with(b"X-App: 2\r\nConnection: close\r\n\r\n"));
        assert!(response_head(head, true, false, &mut out));
        assert!(out.ends_with(b"Connection: keep-alive\r\n\r\n"));
        let switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: k\r\n\r\n";
        assert!(response_head(switching, false, true, &mut out));
        assert_eq!(out, b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    }

    #[test]
    fn content_length_beside_transfer_encoding_is_dropped() {
        let cases: &[(&str, &str)] = &[
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nX: 1\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            ),
            // Found by the response_head fuzz target: an empty Transfer-Encoding frames
            // nothing, so the Content-Length stays.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: \r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: \r\n\r\n",
            ),
        ];
        for (from, to) in cases {
            let mut out = Vec::new();
            assert!(response_head(from.as_bytes(), true, true, &mut out));
            assert_eq!(String::from_utf8_lossy(&out), *to, "{from:?}");
        }
    }

    #[test]
    fn http10_request_line_is_kept() {
        let out = rewrite("GET / HTTP/1.0\r\n\r\n");
        assert!(out.starts_with("GET / HTTP/1.0\r\n"), "{out}");
    }

    /// What the access log takes from a request: the method, the target and `CF-Ray` as they
    /// are in the head, and the visitor as the backend is told of it.
    #[test]
    fn what_the_rewrite_saw() {
        let names = HeaderNames::default();
        // (head, trusted, visitor, method, target, cf-ray, user agent and referer)
        let rows = [
            (
                "GET /a?b=c HTTP/1.1\r\nHost: x\r\nCF-Ray: 8f2a-LHR \r\nCF-Connecting-IP: 203.0.113.9\r\n\
                 User-Agent: curl/8\r\nReferer: https://x/\r\nUser-Agent: second\r\n\r\n",
                true,
                "203.0.113.9",
                "GET",
                "/a?b=c",
                Some("8f2a-LHR"),
                Some(("curl/8", "https://x/")),
            ),
            (
                "PATCH /x HTTP/1.1\r\ncf-ray:1\r\nCF-Connecting-IP: 203.0.113.9\r\n\r\n",
                false,
                "198.51.100.7",
                "PATCH",
                "/x",
                Some("1"),
                None,
            ),
            (
                "OPTIONS * HTTP/1.0\r\n\r\n",
                true,
                "198.51.100.7",
                "OPTIONS",
                "*",
                None,
                None,
            ),
        ];
        for (head, trusted, visitor, method, target, cf_ray, ua_referer) in rows {
            let fwd = Forwarding {
                client: "198.51.100.7".parse().unwrap(),
                proto: "http",
                trusted,
                names: &names,
            };
            let seen = request_head(head.as_bytes(), fwd, &mut Vec::new()).unwrap();
            let at = |r: Range<usize>| &head[r];
            assert_eq!(seen.visitor.to_string(), visitor, "{head:?}");
            assert_eq!(at(seen.method), method, "{head:?}");
            assert_eq!(at(seen.target), target, "{head:?}");
            assert_eq!(seen.cf_ray.map(at), cf_ray, "{head:?}");
            assert_eq!(seen.user_agent.map(at), ua_referer.map(|u| u.0), "{head:?}");
            assert_eq!(seen.referer.map(at), ua_referer.map(|u| u.1), "{head:?}");
        }
    }

    #[test]
    fn addresses_and_numbers_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "198.51.100.7",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes());
        }
        for n in [0, 7, 10, 99, 100, 204, 999, 1000, 65535] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn every_header_connection_names_goes_however_many_it_names() {
        // (tokens named before the one that matters, in one line or one line each)
        for before in [0, 7, 8, 20] {
            for one_line in [true, false] {
                let names: Vec<String> = (0..before).map(|i| format!("x-opt-{i}")).collect();
                let mut connection = String::new();
                let mut tokens = names.clone();
                tokens.push("X-Secret".into());
                if one_line {
                    connection = format!("Connection: {}\r\n", tokens.join(", "));
                } else {
                    for t in &tokens {
                        connection.push_str(&format!("Connection: {t}\r\n"));
                    }
                }
                let head = format!(
                    "GET / HTTP/1.1\r\nHost: a\r\n{connection}X-Secret: 1\r\nX-Kept: 2\r\n\
                     Content-Length: 0\r\n\r\n"
                );
                let out = rewrite(&head);
                assert!(!out.contains("X-Secret"), "{before} {one_line}: {out}");
                assert!(out.contains("X-Kept: 2\r\n"), "{out}");
                assert!(out.contains("Content-Length: 0\r\n"), "{out}");
                let answer = format!("HTTP/1.1 200 OK\r\n{connection}X-Secret: 1\r\n\r\n");
                let mut out = Vec::new();
                assert!(response_head(answer.as_bytes(), true, true, &mut out));
                let out = String::from_utf8(out).unwrap();
                assert!(!out.contains("X-Secret"), "{before} {one_line}: {out}");
            }
        }
    }
}
