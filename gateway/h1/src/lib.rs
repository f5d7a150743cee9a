//! HTTP/1.1 wire rules that holdfast enforces itself, never weaker than Pingora's parser and
//! stricter where ambiguity could let a message be read one way here and another way by a
//! backend (request smuggling, RFC 9112 6.3 and 11.2). Plain code over bytes, no I/O, so the
//! same rules serve any data path:
//!
//! - [`request`]: judges a request head (framing, `Host`, limits); guards every request today;
//! - [`chunked`]: scans a chunked body as it streams, refusing bad chunk framing before it is
//!   forwarded;
//! - [`response`]: frames a backend's response head (length, chunked, until close, none) and says
//!   whether the connection can be reused;
//! - [`rewrite`]: the request head as forwarded (hop-by-hop headers out, `X-Forwarded-*` in);
//! - [`cache`]: serve-stale's rules: which answers may be kept, their key, a kept copy's answer.
//!
//! A crate of its own, with no dependency but `httparse`, `http` (status reasons) and
//! `httpdate`, so that the fuzz targets of `tests/fuzz/` build it in seconds with coverage
//! instrumentation.

use std::mem::MaybeUninit;

pub mod cache;
pub mod chunked;
pub mod request;
pub mod response;
pub mod rewrite;

/// The reason phrase of a status the gateway answers with itself.
pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// Room for `N` header lines for httparse to fill. Not cleared first: a parse writes the lines
/// it found before anything reads them, and a head's parse does not pay for clearing the
/// 4 KB a full table takes.
pub fn header_room<'b, const N: usize>() -> [MaybeUninit<httparse::Header<'b>>; N] {
    [const { MaybeUninit::uninit() }; N]
}

/// `1*DIGIT`, or a comma-separated list of the same `1*DIGIT` (RFC 9110 8.6); `None` otherwise.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in value.split(|&b| b == b',') {
        let digits = trimmed(part);
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

/// `v` without leading and trailing whitespace.
fn trimmed(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}
