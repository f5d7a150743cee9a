//! Moving a message body from one side to the other as it arrives, by its framing. The bytes go
//! on as they came (chunked framing included), checked by [`ChunkedScanner`] before they go.

use crate::h1::chunked::{ChunkError, ChunkedScanner};
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes asked of the socket per read while a body streams.
const READ_CHUNK: usize = 32 * 1024;

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Where forwarding a body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The sender closed or failed before the body ended.
    Source,
    /// The sender went quiet for longer than the read timeout.
    Timeout,
    /// The receiver failed or stopped taking bytes.
    Sink,
    /// Malformed chunked framing from the sender.
    Chunk(ChunkError),
}

/// Room asked for before reading a message head: most heads fit (Cloudflare's run 1-2 KB), and a
/// larger one grows the buffer.
pub const HEAD_CHUNK: usize = 2048;

/// Reads more bytes into `buf`, making room for at least `room` first; `Ok(0)` at end of
/// stream.
pub async fn fill<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    room: usize,
    timeout: Duration,
) -> Result<usize, BodyError> {
    buf.reserve(room);
    match tokio::time::timeout(timeout, src.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) => Err(BodyError::Source),
        Err(_) => Err(BodyError::Timeout),
    }
}

/// Writes all of `data`.
pub async fn send<W: AsyncWrite + Unpin>(
    dst: &mut W,
    data: &[u8],
    timeout: Duration,
) -> Result<(), BodyError> {
    match tokio::time::timeout(timeout, dst.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(BodyError::Sink),
    }
}

/// Flushes what `dst` buffered.
pub async fn flush<W: AsyncWrite + Unpin>(dst: &mut W, timeout: Duration) -> Result<(), BodyError> {
    match tokio::time::timeout(timeout, dst.flush()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(BodyError::Sink),
    }
}

/// Forwards a body from `src` to `dst`. `buf` holds what was already read from `src` past the
/// head; on success it holds only what follows the body (a pipelined request).
pub async fn forward<R, W>(
    body: Body,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    read_timeout: Duration,
    write_timeout: Duration,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match body {
        Body::Empty => {}
        Body::Length(mut left) => {
            while left > 0 {
                if buf.is_empty() && fill(src, buf, READ_CHUNK, read_timeout).await? == 0 {
                    return Err(BodyError::Source);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                send(dst, &buf[..take], write_timeout).await?;
                buf.advance(take);
                left -= take as u64;
            }
        }
        Body::Chunked => {
            let mut scanner = ChunkedScanner::default();
            while !scanner.is_done() {
                if buf.is_empty() && fill(src, buf, READ_CHUNK, read_timeout).await? == 0 {
                    return Err(BodyError::Source);
                }
                let take = scanner.scan(buf).map_err(BodyError::Chunk)?;
                send(dst, &buf[..take], write_timeout).await?;
                buf.advance(take);
            }
        }
        Body::UntilClose => loop {
            if buf.is_empty() && fill(src, buf, READ_CHUNK, read_timeout).await? == 0 {
                break;
            }
            send(dst, buf, write_timeout).await?;
            buf.clear();
        },
    }
    flush(dst, write_timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(body: Body, pre: &[u8], rest: &[u8]) -> (Result<(), BodyError>, Vec<u8>, Vec<u8>) {
        let mut src = rest;
        let mut buf = BytesMut::from(pre);
        let mut out = Vec::new();
        let t = Duration::from_secs(1);
        let r = forward(body, &mut src, &mut buf, &mut out, t, t).await;
        (r, out, buf.to_vec())
    }

    #[tokio::test]
    async fn lengths_chunks_and_close_delimited_bodies() {
        let (r, out, left) = run(Body::Length(5), b"he", b"lloGET").await;
        assert_eq!(
            (r, &out[..], &left[..]),
            (Ok(()), &b"hello"[..], &b"GET"[..])
        );

        let chunked = b"5\r\nhello\r\n0\r\n\r\n";
        let (r, out, left) = run(
            Body::Chunked,
            &chunked[..4],
            &[&chunked[4..], &b"NEXT"[..]].concat(),
        )
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(out, chunked);
        assert_eq!(left, b"NEXT");

        let (r, out, _) = run(Body::UntilClose, b"ab", b"cdef").await;
        assert_eq!((r, &out[..]), (Ok(()), &b"abcdef"[..]));

        let (r, out, left) = run(Body::Empty, b"GET", b"").await;
        assert_eq!((r, out.len(), &left[..]), (Ok(()), 0, &b"GET"[..]));
    }

    #[tokio::test]
    async fn truncated_and_malformed_bodies_fail() {
        assert_eq!(
            run(Body::Length(10), b"abc", b"de").await.0,
            Err(BodyError::Source)
        );
        assert_eq!(
            run(Body::Chunked, b"5\r\nhel", b"").await.0,
            Err(BodyError::Source)
        );
        let (r, out, _) = run(Body::Chunked, b"5\r\nhello\r\nzz\r\n", b"").await;
        assert_eq!(r, Err(BodyError::Chunk(ChunkError::BadSize)));
        assert!(
            out.is_empty(),
            "nothing of a read holding bad framing goes on"
        );
    }
}
