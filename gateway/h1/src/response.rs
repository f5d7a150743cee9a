//! The response head from a backend: parsed with `httparse`, then framed by RFC 9112 6.3 so
//! that a data path knows where the body ends and whether the connection can carry another
//! request. A head that cannot be framed safely is a broken backend (the would-be 520/502).

use super::{parse_length, trimmed};

/// Longest response head accepted from a backend.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header lines in one response head, as forwarded.
pub const MAX_HEADERS: usize = 128;

/// Most header lines taken from a backend: room is kept for the two the gateway may add
/// (`Connection`, `Upgrade`), so that what is accepted reads the same way once rewritten (found
/// by the `response_head` fuzz target).
pub const MAX_BACKEND_HEADERS: usize = MAX_HEADERS - 2;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a HEAD request, 1xx, 204 or 304, or `Content-Length: 0`.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// What the data path needs to know of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Length in bytes, the blank line included.
    pub len: usize,
    pub status: u16,
    /// An interim answer (1xx other than 101): another head follows.
    pub interim: bool,
    pub framing: BodyFraming,
    /// The backend connection may carry another request after this body.
    pub reusable: bool,
}

/// Why a response head is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadResponse {
    /// Not HTTP/1.x, a malformed line, or a status outside 100-599.
    Malformed,
    /// Several `Content-Length`s that differ, or one that is not digits.
    BadLength,
    /// Longer than [`MAX_HEAD_BYTES`] or [`MAX_BACKEND_HEADERS`] lines.
    TooLarge,
}

/// Parses a response head from a backend; `Ok(None)` while it is incomplete. `head_request`
/// tells whether the request was `HEAD` (whose response has no body whatever its headers say).
pub fn parse(buf: &[u8], head_request: bool) -> Result<Option<ResponseHead>, BadResponse> {
    parse_with::<MAX_BACKEND_HEADERS>(buf, head_request)
}

/// Parses a response head as the gateway forwards it: the same rules, with room for the lines
/// the gateway adds.
pub fn parse_forwarded(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, BadResponse> {
    parse_with::<MAX_HEADERS>(buf, head_request)
}

fn parse_with<const LINES: usize>(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut lines = super::header_room::<LINES>();
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut lines)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(BadResponse::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed),
    };
    if len > MAX_HEAD_BYTES {
        return Err(BadResponse::TooLarge);
    }
    // RFC 9110 15: a status outside 100-599 is invalid (found by the `response_head` fuzz
    // target: httparse takes any three digits, "002" included).
    let status = res
        .code
        .filter(|c| (100..=599).contains(c))
        .ok_or(BadResponse::Malformed)?;
    let http11 = res.version == Some(1);

    let (mut length, mut chunked, mut other_coding) = (None::<u64>, false, false);
    let (mut close, mut keep_alive) = (false, false);
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_length(h.value).ok_or(BadResponse::BadLength)?;
            if length.is_some_and(|l| l != value) {
                return Err(BadResponse::BadLength);
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the final coding matters for framing; every line counts.
            for coding in h
                .value
                .split(|&b| b == b',')
                .map(trimmed)
                .filter(|c| !c.is_empty())
            {
                chunked = coding.eq_ignore_ascii_case(b"chunked");
                other_coding |= !chunked;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(trimmed) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let interim = (100..200).contains(&status) && status != 101;
    let has_te = chunked || other_coding;
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        BodyFraming::Empty
    } else if has_te && chunked {
        // Transfer-Encoding overrides Content-Length (RFC 9112 6.3 rule 3).
        BodyFraming::Chunked
    } else if has_te {
        BodyFraming::UntilClose
    } else {
        match length {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::UntilClose,
        }
    };
    let persistent = if http11 { !close } else { keep_alive && !close };
    let reusable = persistent && framing != BodyFraming::UntilClose && status != 101;
    Ok(Some(ResponseHead {
        len,
        status,
        interim,
        framing,
        reusable,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use BodyFraming::*;

    fn head(text: &str, head_request: bool) -> ResponseHead {
        parse(text.as_bytes(), head_request)
            .unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
            .unwrap_or_else(|| panic!("{text:?}: incomplete"))
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let cases: &[(&str, bool, BodyFraming, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                false,
                Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, UntilClose, false),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false,
                Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
                Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                false,
                Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: Keep-Alive\r\n\r\n",
                false,
                Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                false,
                Length(7),
                true,
            ),
        ];
        for (text, head_request, framing, reusable) in cases {
            let h = head(text, *head_request);
            assert_eq!((h.framing, h.reusable), (*framing, *reusable), "{text:?}");
            assert_eq!(h.len, text.len());
        }
    }

    #[test]
    fn interim_and_switching_answers() {
        let h = head("HTTP/1.1 100 Continue\r\n\r\n", false);
        assert!(h.interim);
        assert_eq!(h.framing, Empty);
        let h = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            false,
        );
        assert!(!h.interim);
        assert!(
            !h.reusable,
            "after 101 the connection belongs to the upgraded protocol"
        );
    }

    #[test]
    fn unusable_heads() {
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false
            ),
            Err(BadResponse::BadLength)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", false),
            Err(BadResponse::BadLength)
        );
        assert_eq!(
            parse(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false),
            Err(BadResponse::Malformed)
        );
        for status in ["002", "099", "600", "999"] {
            let head = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(
                parse(head.as_bytes(), false),
                Err(BadResponse::Malformed),
                "{status}"
            );
        }
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", false),
            Ok(None)
        );
        let big = format!("HTTP/1.1 200 OK\r\nX: {}", "x".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(big.as_bytes(), false), Err(BadResponse::TooLarge));
        let lines = |n: usize| -> String {
            let more: String = (0..n).map(|i| format!("X-{i}: 1\r\n")).collect();
            format!("HTTP/1.1 200 OK\r\n{more}\r\n")
        };
        assert!(parse(lines(MAX_BACKEND_HEADERS).as_bytes(), false).is_ok());
        assert_eq!(
            parse(lines(MAX_BACKEND_HEADERS + 1).as_bytes(), false),
            Err(BadResponse::TooLarge)
        );
        assert!(parse_forwarded(lines(MAX_HEADERS).as_bytes(), false).is_ok());
    }
}
