//! The request head: parsed with `httparse`, then judged by the rules `httparse` leaves to its
//! caller. A request is refused (never forwarded) when any rule is broken:
//!
//! | rule | answer |
//! |---|---|
//! | a line of the head ends in a bare LF, or a header is folded (obs-fold) | 400 |
//! | a control character in a header name or value, whitespace before a colon | 400 |
//! | `Content-Length` and `Transfer-Encoding` together | 400 |
//! | `Content-Length` not all digits, or several that differ | 400 |
//! | `Transfer-Encoding` other than exactly `chunked` (`xchunked`, `chunked, identity`, `gzip, chunked`, `chunked` twice) | 400 |
//! | `Transfer-Encoding` in an HTTP/1.0 request | 400 |
//! | a header name that reads as `Content-Length` or `Transfer-Encoding` once `_` is taken for `-` (`Transfer_Encoding`: CGI, WSGI and Rack turn both spellings into one variable) | 400 |
//! | HTTP/1.1 without `Host`, any request with two `Host` lines, or a `Host` that is not a host | 400 |
//! | request target longer than [`MAX_TARGET_BYTES`] | 414 |
//! | head longer than [`MAX_HEAD_BYTES`], or more than [`MAX_VISITOR_HEADERS`] header lines | 431 |
//!
//! A request with a body in some other coding than chunked cannot be framed by a proxy, so it
//! gets 400 rather than a guess (RFC 9112 6.3, rule 4, leaves the server no other safe choice).

use super::{parse_length, trimmed};

/// Longest request target (Cloudflare's limit for a URL is 16 KB).
pub const MAX_TARGET_BYTES: usize = 16 * 1024;

/// Longest request head, request line included (Cloudflare sends at most 32 KB of headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header lines in a request head the gateway handles, as forwarded.
pub const MAX_HEADERS: usize = 128;

/// Most header lines accepted from a visitor: room is kept for the three the gateway may add
/// (`X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`), so that whatever is accepted can be
/// forwarded and reads the same way after rewriting (found by the `request_head` fuzz target,
/// twice: when the second and when the third were added).
pub const MAX_VISITOR_HEADERS: usize = MAX_HEADERS - 3;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the data path needs to know of a valid request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Length of the head in bytes, the blank line included.
    pub len: usize,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    pub framing: Framing,
    /// The visitor wants the connection kept open after the answer.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The method is `HEAD` (the answer has no body).
    pub head_method: bool,
    /// The method, as far as forwarding decisions need it.
    pub method: Method,
    /// Byte range of the `Host` value within the head, if any.
    pub host: Option<(usize, usize)>,
    /// A `GET` asking to switch protocols (`Upgrade`, named in `Connection`): only then may a
    /// backend's `101` open a tunnel.
    pub upgrade: bool,
}

/// A request method, as far as forwarding decisions need it: the idempotent ones by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Trace,
    Put,
    Delete,
    /// POST, PATCH and every other method: not idempotent.
    Other,
}

impl Method {
    /// The idempotent methods (RFC 9110 9.2.2): sent twice, they have the effect of once.
    pub const IDEMPOTENT: [Method; 6] = [
        Method::Get,
        Method::Head,
        Method::Options,
        Method::Trace,
        Method::Put,
        Method::Delete,
    ];

    pub fn from_name(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    pub fn is_idempotent(self) -> bool {
        self != Method::Other
    }

    /// One bit per method, for sets of them.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Why a request head is refused, and with which status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BareLf,
    Malformed,
    LengthAndChunked,
    BadLength,
    BadTransferEncoding,
    ChunkedInHttp10,
    /// `Content_Length`, `Transfer_Encoding` and the like.
    FramingLookalike,
    MissingHost,
    RepeatedHost,
    BadHost,
    TargetTooLong,
    HeadTooLarge,
    /// The head did not arrive whole within the header timeout (a slow client).
    HeadTimeout,
}

impl Refusal {
    /// Every kind, in declaration order (`ALL[r as usize] == r`).
    pub const ALL: [Refusal; 13] = [
        Refusal::BareLf,
        Refusal::Malformed,
        Refusal::LengthAndChunked,
        Refusal::BadLength,
        Refusal::BadTransferEncoding,
        Refusal::ChunkedInHttp10,
        Refusal::FramingLookalike,
        Refusal::MissingHost,
        Refusal::RepeatedHost,
        Refusal::BadHost,
        Refusal::TargetTooLong,
        Refusal::HeadTooLarge,
        Refusal::HeadTimeout,
    ];

    /// A short name, for metric labels.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::BareLf => "bare_lf",
            Refusal::Malformed => "malformed",
            Refusal::LengthAndChunked => "length_and_chunked",
            Refusal::BadLength => "bad_length",
            Refusal::BadTransferEncoding => "bad_transfer_encoding",
            Refusal::ChunkedInHttp10 => "chunked_in_http10",
            Refusal::FramingLookalike => "framing_lookalike",
            Refusal::MissingHost => "missing_host",
            Refusal::RepeatedHost => "repeated_host",
            Refusal::BadHost => "bad_host",
            Refusal::TargetTooLong => "target_too_long",
            Refusal::HeadTooLarge => "head_too_large",
            Refusal::HeadTimeout => "head_timeout",
        }
    }

    /// The status to answer with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::TargetTooLong => 414,
            Refusal::HeadTooLarge => 431,
            Refusal::HeadTimeout => 408,
            _ => 400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BareLf => "a line of the head ends in a bare LF",
            Refusal::Malformed => {
                "malformed request line or header (folded line, control character, bad name)"
            }
            Refusal::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Refusal::BadLength => "invalid or conflicting Content-Length",
            Refusal::BadTransferEncoding => "Transfer-Encoding other than chunked",
            Refusal::ChunkedInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            Refusal::FramingLookalike => {
                "a header name that reads as Content-Length or Transfer-Encoding with '_' for '-'"
            }
            Refusal::MissingHost => "HTTP/1.1 request without Host",
            Refusal::RepeatedHost => "more than one Host",
            Refusal::BadHost => "invalid Host",
            Refusal::TargetTooLong => "request target too long",
            Refusal::HeadTooLarge => "request head too large",
            Refusal::HeadTimeout => "request head not received in time",
        }
    }
}

/// Judges a complete request head (`buf` starts with the request line and holds at least the
/// whole head). `Ok(None)` means the head is not complete yet.
pub fn parse(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    parse_with::<MAX_VISITOR_HEADERS>(buf)
}

/// Judges a head as forwarded to a backend: the same rules, with room for the headers the
/// gateway adds. What [`parse`] accepts, rewritten, passes here with the same framing (the
/// `request_head` fuzz target checks it).
pub fn parse_forwarded(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    parse_with::<MAX_HEADERS>(buf)
}

fn parse_with<const LINES: usize>(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut lines = super::header_room::<LINES>();
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut lines) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Refusal::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Refusal::HeadTooLarge);
    }
    check_line_endings(&buf[..len])?;
    if req.path.is_some_and(|p| p.len() > MAX_TARGET_BYTES) {
        return Err(Refusal::TargetTooLong);
    }
    let http11 = req.version == Some(1);

    let (mut length, mut chunked, mut te_seen) = (None::<u64>, false, false);
    let mut hosts = 0;
    let (mut close, mut keep_alive_token, mut expect_continue) = (false, false, false);
    let (mut upgrade_token, mut upgrade_header) = (false, false);
    let mut host = None;
    let base = buf.as_ptr() as usize;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_length(h.value).ok_or(Refusal::BadLength)?;
            if length.is_some_and(|l| l != value) {
                return Err(Refusal::BadLength);
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a single `chunked`, across all lines, frames a request body safely.
            if te_seen || !trimmed(h.value).eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::BadTransferEncoding);
            }
            te_seen = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 {
                return Err(Refusal::RepeatedHost);
            }
            let value = trimmed(h.value);
            if !valid_host(value) {
                return Err(Refusal::BadHost);
            }
            let start = value.as_ptr() as usize - base;
            host = Some((start, start + value.len()));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(trimmed) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= trimmed(h.value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_header = true;
        } else if name.contains(&b'_') && reads_as_framing(name) {
            return Err(Refusal::FramingLookalike);
        }
    }
    if chunked && !http11 {
        return Err(Refusal::ChunkedInHttp10);
    }
    if http11 && hosts == 0 {
        return Err(Refusal::MissingHost);
    }
    let framing = match (length, chunked) {
        (Some(_), true) => return Err(Refusal::LengthAndChunked),
        (None, true) => Framing::Chunked,
        (Some(0) | None, false) => Framing::Empty,
        (Some(n), false) => Framing::Length(n),
    };
    let method = req.method.unwrap_or("");
    Ok(Some(Head {
        len,
        http11,
        framing,
        keep_alive: !close && (http11 || keep_alive_token),
        expect_continue,
        head_method: method == "HEAD",
        method: Method::from_name(method),
        host,
        upgrade: upgrade_token && upgrade_header && method == "GET",
    }))
}

/// Whether a header name with `_` in it reads as `Content-Length` or `Transfer-Encoding` once
/// each `_` is taken for `-`.
fn reads_as_framing(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding"]
        .iter()
        .any(|framing| {
            name.len() == framing.len()
                && name
                    .iter()
                    .zip(framing.iter())
                    .all(|(&n, &f)| n.eq_ignore_ascii_case(&f) || (n == b'_' && f == b'-'))
        })
}

/// Every line of the head ends in CRLF, and none is folded onto the previous one.
fn check_line_endings(head: &[u8]) -> Result<(), Refusal> {
    let mut previous = 0u8;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            if previous != b'\r' {
                return Err(Refusal::BareLf);
            }
            if matches!(head.get(i + 1), Some(b' ' | b'\t')) {
                return Err(Refusal::Malformed);
            }
        }
        previous = b;
    }
    Ok(())
}

/// `uri-host [ ":" port ]`: a registered name, an IPv4 address or a bracketed IPv6 literal.
/// Empty is allowed (RFC 9112 3.2, a target without authority).
fn valid_host(host: &[u8]) -> bool {
    host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'[' | b']' | b'%')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(head: &str) -> Result<Option<Head>, Refusal> {
        parse(head.as_bytes())
    }

    #[test]
    fn valid_requests_and_their_framing() {
        let cases: &[(&str, Framing)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Framing::Empty),
            ("GET / HTTP/1.0\r\n\r\n", Framing::Empty),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
                Framing::Length(5),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                Framing::Empty,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 7\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n",
                Framing::Chunked,
            ),
            ("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", Framing::Empty),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", Framing::Empty),
            (
                "GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Obs: caf\u{e9}\r\n\r\n",
                Framing::Empty,
            ),
        ];
        for (head, framing) in cases {
            let parsed = judge(head)
                .unwrap_or_else(|e| panic!("{head:?}: {e:?}"))
                .unwrap();
            assert_eq!(parsed.framing, *framing, "{head:?}");
            assert_eq!(parsed.len, head.find("\r\n\r\n").unwrap() + 4);
        }
    }

    #[test]
    fn connection_semantics_and_host() {
        let text = "GET / HTTP/1.1\r\nHost: www.example.com:8080\r\n\r\n";
        let h = judge(text).unwrap().unwrap();
        assert!(h.keep_alive && h.method == Method::Get && !h.head_method && !h.expect_continue);
        let (a, b) = h.host.unwrap();
        assert_eq!(&text[a..b], "www.example.com:8080");
        let h = judge("POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive && h.expect_continue && !h.method.is_idempotent());
        assert!(!judge("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(
            judge("HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            judge("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .unwrap()
                .head_method
        );
    }

    #[test]
    fn an_upgrade_is_a_get_that_names_upgrade_in_connection() {
        let cases = [
            ("GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true),
            ("GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\nUpgrade: h2c\r\n\r\n", true),
            ("POST /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false),
            ("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false),
            ("GET /chat HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
        ];
        for (head, upgrade) in cases {
            assert_eq!(judge(head).unwrap().unwrap().upgrade, upgrade, "{head:?}");
        }
    }

    #[test]
    fn other_names_with_underscores_pass() {
        for name in [
            "X_Custom",
            "Content_Type",
            "Content_Lengths",
            "Transfer_Encodin",
        ] {
            let head = format!("GET / HTTP/1.1\r\nHost: a\r\n{name}: 1\r\n\r\n");
            assert!(judge(&head).is_ok_and(|h| h.is_some()), "{head:?}");
        }
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(judge("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(judge("GET / HT"), Ok(None));
    }

    #[test]
    fn ambiguous_and_malformed_requests_are_refused() {
        use Refusal::*;
        let cases: &[(&str, Refusal)] = &[
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", LengthAndChunked),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", LengthAndChunked),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\n", BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", Malformed),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", Malformed),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ChunkedInHttp10),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", FramingLookalike),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent_length: 50\r\n\r\n", FramingLookalike),
            ("POST / HTTP/1.1\r\nHost: a\r\nCONTENT_LENGTH: 5\r\n\r\n", FramingLookalike),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer_encoding: x\r\n\r\n", FramingLookalike),
            ("GET / HTTP/1.1\nHost: a\n\n", BareLf),
            ("GET / HTTP/1.1\r\nHost: a\n\r\n", BareLf),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x7fb\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\nX\x00Bad: 1\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\n\r\n", MissingHost),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", RepeatedHost),
            ("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", RepeatedHost),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BadHost),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BadHost),
            ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", BadHost),
            ("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", BadHost),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Malformed),
            ("GET / FOO/1.1\r\nHost: a\r\n\r\n", Malformed),
            ("G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ];
        for (head, refusal) in cases {
            assert_eq!(judge(head), Err(*refusal), "{head:?}");
            assert_eq!(refusal.status(), 400);
        }
    }

    #[test]
    fn limits_answer_414_and_431() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_TARGET_BYTES)
        );
        assert_eq!(judge(&long_target), Err(Refusal::TargetTooLong));
        assert_eq!(Refusal::TargetTooLong.status(), 414);

        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(judge(&big), Err(Refusal::HeadTooLarge));
        let endless = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}",
            "b".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(judge(&endless), Err(Refusal::HeadTooLarge));
        let lines = |n: usize| -> String {
            let more: String = (1..n).map(|i| format!("X-{i}: 1\r\n")).collect();
            format!("GET / HTTP/1.1\r\nHost: a\r\n{more}\r\n")
        };
        assert!(judge(&lines(MAX_VISITOR_HEADERS)).is_ok());
        assert_eq!(
            judge(&lines(MAX_VISITOR_HEADERS + 1)),
            Err(Refusal::HeadTooLarge)
        );
        assert_eq!(Refusal::HeadTooLarge.status(), 431);
        assert_eq!(Refusal::HeadTimeout.status(), 408);
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
    }

    /// Bounded mutation fuzzing: random edits of valid and hostile heads never panic, and
    /// whatever is accepted has a framing consistent with its headers.
    #[test]
    fn mutated_heads_never_panic() {
        let seeds = [
            "POST /upload?x=1 HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "GET / HTTP/1.0\r\nX: y\r\n\r\n",
        ];
        let alphabet = b"\r\n :,\t\x00\x01\x7f\xffHTTP/1.0chunkedContent-LengthTransfer-EncodingHost0123456789";
        let mut rng = fastrand::Rng::with_seed(0x4f1d);
        for _ in 0..20_000 {
            let mut bytes = seeds[rng.usize(..seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.usize(1..5) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => bytes[at] = alphabet[rng.usize(..alphabet.len())],
                    1 => bytes.insert(at, alphabet[rng.usize(..alphabet.len())]),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            if let Ok(Some(head)) = parse(&bytes) {
                let text = String::from_utf8_lossy(&bytes[..head.len]).to_ascii_lowercase();
                if head.framing == Framing::Chunked {
                    assert!(!text.contains("content-length"), "{text:?}");
                }
            }
        }
    }
}
