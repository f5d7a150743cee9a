//! Moving a message body from one side to the other as it arrives, by its framing. The bytes go
//! on as they came (chunked framing included), checked by [`ChunkedScanner`] before they go.

use crate::h1::chunked::{ChunkError, ChunkedScanner};
use crate::stale::Tee;
use bytes::{Buf, BufMut, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

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

/// A timer kept by a connection from one wait to the next, for [`fill_until`].
pub type Timer = Pin<Box<tokio::time::Sleep>>;

/// A timer for [`fill_until`], not yet set.
pub fn timer() -> Timer {
    Box::pin(tokio::time::sleep(Duration::ZERO))
}

/// Like [`fill`], until the deadline `until`, kept by `timer`. A timer still set from the last
/// wait is only moved later, which costs a store; a new timer per wait goes into the runtime's
/// timer wheel and, there, often wakes the runtime's driver even though its thread is busy
/// (tokio issue #5207): a write to its eventfd and an `epoll_wait` more, 0.1 per request on
/// the wait for a backend's answer.
pub async fn fill_until<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    room: usize,
    timer: &mut Timer,
    until: std::time::Instant,
) -> Result<usize, BodyError> {
    buf.reserve(room);
    let until = tokio::time::Instant::from_std(until);
    if timer.deadline() != until {
        timer.as_mut().reset(until);
    }
    let mut read = std::pin::pin!(src.read_buf(buf));
    // As `tokio::time::timeout`: what was read first, then the deadline.
    std::future::poll_fn(|cx| {
        if let Poll::Ready(read) = read.as_mut().poll(cx) {
            return Poll::Ready(read.map_err(|_| BodyError::Source));
        }
        timer.as_mut().poll(cx).map(|()| Err(BodyError::Timeout))
    })
    .await
}

/// Like [`fill`], for a connection that holds no buffer while it waits: the first byte is read
/// on the stack within one poll, and `buf` gets its memory only once that byte exists.
pub async fn fill_unbuffered<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<usize, BodyError> {
    let first = std::future::poll_fn(|cx| {
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        Pin::new(&mut *src)
            .poll_read(cx, &mut read)
            .map_ok(|()| read.filled().first().copied())
    });
    match tokio::time::timeout(timeout, first).await {
        Ok(Ok(Some(byte))) => {
            buf.reserve(HEAD_CHUNK);
            buf.put_u8(byte);
            Ok(1)
        }
        Ok(Ok(None)) => Ok(0),
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

/// Body bytes up to this size, already read, go out in one write with the head before them
/// (one system call, one TLS record); larger ones are written after it.
const COALESCE: usize = 16 * 1024;

/// Forwards a body from `src` to `dst`. `buf` holds what was already read from `src` past the
/// head; on success it holds only what follows the body (a pipelined request). `lead` (a
/// message head, or nothing) goes out first: with the body bytes already at hand when they are
/// few, and always before waiting for more, so a slow body never holds its head back. It is
/// left empty. `tee`, if any, gets a copy of the body as it goes.
pub async fn forward<R, W>(
    body: Body,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    (lead, mut tee): (&mut Vec<u8>, Option<&mut Tee>),
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
                if buf.is_empty() {
                    send_lead(dst, lead, write_timeout).await?;
                    if fill(src, buf, READ_CHUNK, read_timeout).await? == 0 {
                        return Err(BodyError::Source);
                    }
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                send_led(dst, lead, &buf[..take], write_timeout).await?;
                if let Some(tee) = tee.as_deref_mut() {
                    tee.take(&buf[..take]);
                }
                buf.advance(take);
                left -= take as u64;
            }
        }
        Body::Chunked => {
            let mut scanner = ChunkedScanner::default();
            while !scanner.is_done() {
                if buf.is_empty() {
                    send_lead(dst, lead, write_timeout).await?;
                    if fill(src, buf, READ_CHUNK, read_timeout).await? == 0 {
                        return Err(BodyError::Source);
                    }
                }
                let take = scanner.scan(buf).map_err(BodyError::Chunk)?;
                send_led(dst, lead, &buf[..take], write_timeout).await?;
                if let Some(tee) = tee.as_deref_mut() {
                    tee.take(&buf[..take]);
                }
                buf.advance(take);
            }
        }
        Body::UntilClose => loop {
            if buf.is_empty() {
                send_lead(dst, lead, write_timeout).await?;
                if fill(src, buf, READ_CHUNK, read_timeout).await? == 0 {
                    break;
                }
            }
            send_led(dst, lead, buf, write_timeout).await?;
            if let Some(tee) = tee.as_deref_mut() {
                tee.take(buf);
            }
            buf.clear();
        },
    }
    send_lead(dst, lead, write_timeout).await?;
    flush(dst, write_timeout).await
}

/// Writes what is left of `lead`.
async fn send_lead<W: AsyncWrite + Unpin>(
    dst: &mut W,
    lead: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), BodyError> {
    if lead.is_empty() {
        return Ok(());
    }
    let sent = send(dst, lead, timeout).await;
    lead.clear();
    sent
}

/// Writes `lead` and then `piece`: in one write when `piece` is small.
async fn send_led<W: AsyncWrite + Unpin>(
    dst: &mut W,
    lead: &mut Vec<u8>,
    piece: &[u8],
    timeout: Duration,
) -> Result<(), BodyError> {
    if !lead.is_empty() && piece.len() <= COALESCE {
        lead.extend_from_slice(piece);
        return send_lead(dst, lead, timeout).await;
    }
    send_lead(dst, lead, timeout).await?;
    send(dst, piece, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(body: Body, pre: &[u8], rest: &[u8]) -> (Result<(), BodyError>, Vec<u8>, Vec<u8>) {
        let mut src = rest;
        let mut buf = BytesMut::from(pre);
        let mut out = Vec::new();
        let t = Duration::from_secs(1);
        let r = forward(
            body,
            &mut src,
            &mut buf,
            &mut out,
            (&mut Vec::new(), None),
            t,
            t,
        )
        .await;
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

    /// One timer kept across waits keeps each wait's own deadline: a later one, an earlier one
    /// after a later one (the timer must not wait for the old), and one after it fired.
    #[tokio::test]
    async fn a_kept_timer_keeps_each_waits_deadline() {
        use std::time::Instant;
        let (mut near, mut far) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let mut timer = timer();
        let ms = Duration::from_millis;
        // Each wait, bounded so that one that missed its deadline fails rather than hangs.
        macro_rules! wait {
            ($until:expr) => {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    fill_until(&mut near, &mut buf, 16, &mut timer, $until),
                )
                .await
            };
        }

        // Nothing comes within `$after`: the wait ends at its deadline, not before.
        macro_rules! times_out_after {
            ($after:expr) => {
                let start = Instant::now();
                assert_eq!(wait!(start + $after), Ok(Err(BodyError::Timeout)));
                let took = start.elapsed();
                assert!(took >= $after, "ended early: {took:?}");
            };
        }

        times_out_after!(ms(40));
        // Bytes waiting: read at once, whatever the deadline (here 10 s away: the timer is set
        // far, and stays set).
        far.write_all(b"ab").await.unwrap();
        assert_eq!(wait!(Instant::now() + Duration::from_secs(10)), Ok(Ok(2)));
        // A nearer deadline after that far one is kept: the wait ends in 40 ms, not 10 s.
        times_out_after!(ms(40));
        // A later deadline after one that fired.
        times_out_after!(ms(60));
        // A deadline already past: what is there is still read first, then the deadline.
        far.write_all(b"c").await.unwrap();
        assert_eq!(wait!(Instant::now()), Ok(Ok(1)));
        assert_eq!(wait!(Instant::now()), Ok(Err(BodyError::Timeout)));
        assert_eq!(&buf[..], b"abc");
    }

    /// Records each write separately.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_head_and_the_small_body_at_hand_go_out_in_one_write() {
        let t = Duration::from_secs(1);
        let mut out = Writes::default();
        let mut lead = b"HEAD ".to_vec();
        let mut buf = BytesMut::from(&b"hello"[..]);
        let r = forward(
            Body::Length(5),
            &mut &b""[..],
            &mut buf,
            &mut out,
            (&mut lead, None),
            t,
            t,
        )
        .await;
        assert_eq!((r, out.0), (Ok(()), vec![b"HEAD hello".to_vec()]));
        assert!(lead.is_empty());

        // A large body at hand: the head first, then the body as it is.
        let big = vec![b'x'; COALESCE + 1];
        let mut out = Writes::default();
        let mut lead = b"HEAD ".to_vec();
        let mut buf = BytesMut::from(&big[..]);
        let r = forward(
            Body::UntilClose,
            &mut &b""[..],
            &mut buf,
            &mut out,
            (&mut lead, None),
            t,
            t,
        )
        .await;
        assert_eq!((r, out.0), (Ok(()), vec![b"HEAD ".to_vec(), big]));

        // No body: the head alone.
        let mut out = Writes::default();
        let mut lead = b"HEAD ".to_vec();
        let r = forward(
            Body::Empty,
            &mut &b""[..],
            &mut BytesMut::new(),
            &mut out,
            (&mut lead, None),
            t,
            t,
        )
        .await;
        assert_eq!((r, out.0), (Ok(()), vec![b"HEAD ".to_vec()]));
    }

    #[tokio::test]
    async fn a_head_goes_out_before_waiting_for_a_slow_body() {
        use tokio::io::AsyncWriteExt;
        let t = Duration::from_secs(5);
        let (mut source, mut src) = tokio::io::duplex(64);
        let (mut dst, mut visitor) = tokio::io::duplex(64);
        let mut lead = b"HEAD\r\n\r\n".to_vec();
        let mut buf = BytesMut::new();
        let forwarding = forward(
            Body::Chunked,
            &mut src,
            &mut buf,
            &mut dst,
            (&mut lead, None),
            t,
            t,
        );
        let visitor_side = async {
            let mut head = [0u8; 8];
            visitor.read_exact(&mut head).await.unwrap();
            assert_eq!(
                &head, b"HEAD\r\n\r\n",
                "the head arrives before any body byte exists"
            );
            source.write_all(b"0\r\n\r\n").await.unwrap();
            let mut end = [0u8; 5];
            visitor.read_exact(&mut end).await.unwrap();
            assert_eq!(&end, b"0\r\n\r\n");
        };
        let (r, ()) = tokio::join!(forwarding, visitor_side);
        assert_eq!(r, Ok(()));
    }
}
