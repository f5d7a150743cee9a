//! Request framing that Pingora's HTTP/1 parser tolerates but holdfast refuses (RFC 9112 6.3):
//! a request that carries both `Content-Length` and `Transfer-Encoding` (Pingora drops the
//! length and forwards it), and a head whose lines end in a bare LF. Either can make holdfast
//! and a backend disagree about where a request ends: request smuggling. Such requests are
//! answered 400 and never forwarded.
//!
//! Pingora itself rejects differing `Content-Length`s, HTTP/1.0 with `Transfer-Encoding`, a
//! final transfer coding other than `chunked`, and obsolete line folding; the end-to-end tests
//! check those too.

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// A line of the head ends in LF without CR.
    BareLf,
}

impl Ambiguity {
    pub fn as_str(self) -> &'static str {
        match self {
            Ambiguity::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Ambiguity::BareLf => "a header line ends in a bare LF",
        }
    }
}

/// Checks a raw request head (request line and header lines, as received).
pub fn check_head(head: &[u8]) -> Result<(), Ambiguity> {
    let mut previous = 0u8;
    let (mut length, mut chunked) = (false, false);
    let mut line_start = 0;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            if previous != b'\r' {
                return Err(Ambiguity::BareLf);
            }
            let line = &head[line_start..i];
            length |= is_header(line, b"content-length");
            chunked |= is_header(line, b"transfer-encoding");
            line_start = i + 1;
        }
        previous = b;
    }
    if length && chunked {
        return Err(Ambiguity::LengthAndChunked);
    }
    Ok(())
}

fn is_header(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_pass() {
        assert_eq!(check_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
        assert_eq!(
            check_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(())
        );
        // A header whose name merely starts with the same letters is another header.
        assert_eq!(
            check_head(
                b"POST / HTTP/1.1\r\nContent-Lengthy: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Ok(())
        );
    }

    #[test]
    fn length_and_chunked_together_are_refused_in_any_case() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n",
        ] {
            assert_eq!(check_head(head), Err(Ambiguity::LengthAndChunked));
        }
    }

    #[test]
    fn bare_lf_is_refused() {
        assert_eq!(
            check_head(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Err(Ambiguity::BareLf)
        );
        assert_eq!(
            check_head(b"GET / HTTP/1.1\r\nHost: a\n\r\n"),
            Err(Ambiguity::BareLf)
        );
        assert_eq!(
            check_head(b"GET / HTTP/1.1\r\nHost: a\r\n\n"),
            Err(Ambiguity::BareLf)
        );
    }
}
