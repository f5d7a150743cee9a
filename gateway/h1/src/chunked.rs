//! A strict, incremental scanner of `chunked` bodies (RFC 9112 7.1), for a data path that
//! forwards the bytes as they are: it says how many of the bytes read so far belong to the body
//! and whether the body has ended, and refuses malformed framing before the bad bytes go on.
//!
//! Refused: a chunk size that is not hexadecimal digits (`0x10`, `+5`, ` 5`, empty), one wider
//! than 16 digits (no overflow games), bare LF or a CR not followed by LF anywhere in the framing,
//! chunk data not followed by CRLF, control characters in extensions or trailers, and size lines
//! or trailer sections beyond [`MAX_LINE_BYTES`] and [`MAX_TRAILER_BYTES`].

/// Longest chunk-size line, extensions included.
pub const MAX_LINE_BYTES: usize = 4096;

/// Longest trailer section.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeTooLong,
    BadLineEnd,
    MissingDataEnd,
    BadExtension,
    BadTrailer,
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
    },
    /// After the size, in `; extensions`, up to CR.
    Extension,
    /// After the CR ending a size line; `size` is the chunk's.
    SizeLf,
    /// Inside chunk data; bytes left.
    Data(u64),
    /// After chunk data: expecting CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After the CR of a trailer line; `last` when the line was empty (end of the body).
    TrailerLf {
        last: bool,
    },
    Done,
}

/// What the next bytes of a chunked body are ([`ChunkedScanner::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing can be said before more bytes arrive (or the body has ended).
    NeedMore,
    /// This many bytes of chunk sizes, extensions and line ends: dropped.
    Framing(usize),
    /// This many bytes of data.
    Data(usize),
    /// The trailer section, this long, its final empty line included (2 bytes when there
    /// are no trailers); the body ends with it.
    Trailers(usize),
}

/// Scans a chunked body as it arrives.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    line: usize,
    trailer: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            trailer: 0,
        }
    }
}

impl ChunkedScanner {
    /// Whether the last chunk and the trailer section have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans the next bytes of the body. Returns how many of them belong to the body: all of
    /// `input` until the body ends, then the part up to its end (what follows is the next
    /// request). Nothing of `input` may be forwarded when this fails.
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Data(left) => {
                    // Chunk data is opaque: skip over it in one step.
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Size { digits } => {
                    self.grow_line()?;
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            if digits >= 16 {
                                return Err(ChunkError::SizeTooLong);
                            }
                            let v = (b as char).to_digit(16).unwrap_or(0);
                            self.size = (self.size << 4) | u64::from(v);
                            self.state = State::Size { digits: digits + 1 };
                        }
                        b';' | b' ' | b'\t' if digits > 0 => self.state = State::Extension,
                        b'\r' if digits > 0 => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::BadLineEnd),
                        _ => return Err(ChunkError::BadSize),
                    }
                }
                State::Extension => {
                    self.grow_line()?;
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::BadLineEnd),
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(ChunkError::BadExtension),
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    self.line = 0;
                    self.state = match std::mem::take(&mut self.size) {
                        0 => State::TrailerStart,
                        size => State::Data(size),
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::MissingDataEnd);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::MissingDataEnd);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.grow_trailer()?;
                    self.state = match b {
                        b'\r' => State::TrailerLf { last: true },
                        b'\n' => return Err(ChunkError::BadLineEnd),
                        b' ' | b'\t' => return Err(ChunkError::BadTrailer), // obs-fold
                        _ if is_trailer_byte(b) => State::Trailer,
                        _ => return Err(ChunkError::BadTrailer),
                    };
                }
                State::Trailer => {
                    self.grow_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf { last: false },
                        b'\n' => return Err(ChunkError::BadLineEnd),
                        _ if is_trailer_byte(b) => {}
                        _ => return Err(ChunkError::BadTrailer),
                    }
                }
                State::TrailerLf { last } => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    if last {
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    self.state = State::TrailerStart;
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    /// Takes a chunked body apart, for a reader that passes its data on without the framing
    /// (HTTP/2 has no chunks): says what the next bytes of `buf` are, the same checks as
    /// [`ChunkedScanner::scan`] applied. The caller consumes the bytes named and asks again;
    /// [`Step::Trailers`] comes only once the whole trailer section is in `buf`.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, ChunkError> {
        if buf.is_empty() || self.is_done() {
            return Ok(Step::NeedMore);
        }
        match self.state {
            State::Data(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                self.scan(&buf[..n])?;
                Ok(Step::Data(n))
            }
            State::TrailerStart => {
                let mut probe = self.clone();
                let n = probe.scan(buf)?;
                if !probe.is_done() {
                    return Ok(Step::NeedMore);
                }
                *self = probe;
                Ok(Step::Trailers(n))
            }
            _ => {
                let mut n = 0;
                while n < buf.len()
                    && !matches!(
                        self.state,
                        State::Data(_) | State::TrailerStart | State::Done
                    )
                {
                    self.scan(&buf[n..n + 1])?;
                    n += 1;
                }
                Ok(Step::Framing(n))
            }
        }
    }

    fn grow_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_LINE_BYTES {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn grow_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer += 1;
        if self.trailer > MAX_TRAILER_BYTES {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }
}

fn is_trailer_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` split at every possible point; the result must not depend on the split.
    fn scan_all_splits(body: &[u8]) -> Result<(usize, bool), ChunkError> {
        let whole = {
            let mut s = ChunkedScanner::default();
            s.scan(body).map(|n| (n, s.is_done()))
        };
        for cut in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let split = s
                .scan(&body[..cut])
                .and_then(|a| {
                    if s.is_done() {
                        Ok(a)
                    } else {
                        s.scan(&body[cut..]).map(|b| a + b)
                    }
                })
                .map(|n| (n, s.is_done()));
            assert_eq!(
                split,
                whole,
                "split at {cut} of {:?}",
                String::from_utf8_lossy(body)
            );
        }
        whole
    }

    /// Takes `body` apart fed in pieces of `piece` bytes: its data and its trailer section.
    fn take_apart(body: &[u8], piece: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let (mut s, mut buf) = (ChunkedScanner::default(), Vec::new());
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        let mut fed = 0;
        while !s.is_done() {
            match s.step(&buf)? {
                Step::NeedMore if fed == body.len() => break,
                Step::NeedMore => {
                    let end = (fed + piece).min(body.len());
                    buf.extend_from_slice(&body[fed..end]);
                    fed = end;
                }
                Step::Framing(n) => drop(buf.drain(..n)),
                Step::Data(n) => data.extend(buf.drain(..n)),
                Step::Trailers(n) => trailers.extend(buf.drain(..n)),
            }
        }
        Ok((data, trailers))
    }

    #[test]
    fn bodies_are_taken_apart_into_data_and_trailers() {
        let cases: [(&str, &str, &str); 4] = [
            ("5\r\nhello\r\n0\r\n\r\n", "hello", "\r\n"),
            (
                "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n",
                "abcde",
                "grpc-status: 0\r\ngrpc-message: ok\r\n\r\n",
            ),
            ("0\r\n\r\n", "", "\r\n"),
            ("A\r\n0123456789\r\n0\r\n\r\n", "0123456789", "\r\n"),
        ];
        for (body, data, trailers) in cases {
            for piece in 1..=body.len() {
                let (d, t) = take_apart(body.as_bytes(), piece).expect(body);
                assert_eq!(String::from_utf8_lossy(&d), data, "{body:?} in {piece}s");
                assert_eq!(
                    String::from_utf8_lossy(&t),
                    trailers,
                    "{body:?} in {piece}s"
                );
            }
        }
    }

    #[test]
    fn taking_apart_refuses_what_scanning_refuses() {
        for body in [
            "5\nhello\r\n0\r\n\r\n",
            "5\r\nhelloX\r\n",
            "zz\r\n",
            "0\r\n bad\r\n\r\n",
        ] {
            for piece in 1..=body.len() {
                assert!(
                    take_apart(body.as_bytes(), piece).is_err(),
                    "{body:?} in {piece}s"
                );
            }
        }
    }

    #[test]
    fn valid_bodies_end_where_they_end() {
        let cases: &[&[u8]] = &[
            b"0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"00005\r\nhello\r\n000\r\n\r\n",
            b"5;name=value\r\nhello\r\n0;last\r\n\r\n",
            b"5 ; name=\"quoted value\"\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nChecksum: abc\r\nX-Other: 1\r\n\r\n",
        ];
        for body in cases {
            assert_eq!(
                scan_all_splits(body),
                Ok((body.len(), true)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn what_follows_the_body_is_not_part_of_it() {
        let mut s = ChunkedScanner::default();
        let input = b"3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
        assert_eq!(s.scan(input), Ok(13));
        assert!(s.is_done());
        assert_eq!(s.scan(b"more"), Ok(0));
    }

    #[test]
    fn partial_bodies_are_not_done() {
        for body in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r\n",
            b"5\r\nhello\r\n0\r\n",
            b"0\r\nTrailer: x\r\n",
        ] {
            assert_eq!(scan_all_splits(body), Ok((body.len(), false)));
        }
    }

    #[test]
    fn malformed_framing_is_refused() {
        use ChunkError::*;
        let cases: &[(&[u8], ChunkError)] = &[
            (b"zz\r\n", BadSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", BadSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", BadSize),
            (b"-5\r\n", BadSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", BadSize),
            (b"\r\n", BadSize),
            (b"5\nhello\r\n0\r\n\r\n", BadLineEnd),
            (b"5\rhello\r\n", BadLineEnd),
            (b"5\r\nhello\n0\r\n\r\n", MissingDataEnd),
            (b"5\r\nhelloX\r\n0\r\n\r\n", MissingDataEnd),
            (b"3\r\nhello\r\n0\r\n\r\n", MissingDataEnd),
            (b"10000000000000000\r\n", SizeTooLong),
            (b"5;a\x01b\r\nhello\r\n", BadExtension),
            (b"5;ext\nhello\r\n", BadLineEnd),
            (b"0\r\nX: 1\n\r\n", BadLineEnd),
            (b"0\r\nX: a\x00b\r\n\r\n", BadTrailer),
            (b"0\r\nX: 1\r\n folded\r\n\r\n", BadTrailer),
            (b"0\r\n\n", BadLineEnd),
        ];
        for (body, error) in cases {
            assert_eq!(
                scan_all_splits(body),
                Err(*error),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn limits_hold() {
        let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(MAX_LINE_BYTES));
        assert_eq!(
            ChunkedScanner::default().scan(long_ext.as_bytes()),
            Err(ChunkError::LineTooLong)
        );
        let big_trailer = format!("0\r\nX: {}\r\n\r\n", "y".repeat(MAX_TRAILER_BYTES));
        assert_eq!(
            ChunkedScanner::default().scan(big_trailer.as_bytes()),
            Err(ChunkError::LineTooLong)
        );
        // Sixteen hex digits is the widest size: fine (the data simply has not arrived).
        assert!(ChunkedScanner::default()
            .scan(b"ffffffffffffffff\r\n")
            .is_ok());
    }
}
