//! The visitor's connection as `h2` sees it: its bytes shown to the flood guard as they are
//! read, a frame's header and payload written in one TLS record, and a lingering close.

use super::guard::{Abuse, FrameGuard};
use crate::bridge::lock;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes of a vectored write to a visitor put together into one TLS write.
const COALESCE: usize = 32 * 1024;
/// After a connection's close, how long what the client still sends is read away.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// What a connection keeps of its write scratch between writes.
const KEEP_SCRATCH: usize = 4 * 1024;

/// Where the guard says a connection is an attack.
#[derive(Default)]
pub(super) struct Alarm {
    abuse: Mutex<Option<Abuse>>,
    pub(super) notify: tokio::sync::Notify,
}

impl Alarm {
    pub(super) fn trip(&self, abuse: Abuse) {
        *lock(&self.abuse) = Some(abuse);
        self.notify.notify_one();
    }

    pub(super) fn take(&self) -> Option<Abuse> {
        lock(&self.abuse).take()
    }
}

/// A visitor's connection with its bytes shown to the [`FrameGuard`] as they are read.
pub(super) struct Guarded<S> {
    pub(super) io: S,
    pub(super) guard: FrameGuard,
    pub(super) alarm: Arc<Alarm>,
    /// Once the alarm went off, nothing more is read.
    pub(super) tripped: bool,
    /// Where the slices of one vectored write are put together.
    pub(super) scratch: Vec<u8>,
    /// Once shut down: the end of the lingering close.
    pub(super) closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            if let Some(abuse) = this.guard.feed(&buf.filled()[before..], Instant::now()) {
                this.tripped = true;
                this.alarm.trip(abuse);
            }
        }
        read
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    /// `h2` hands a frame's header and its payload as two slices; over TLS, which writes one
    /// slice at a time, they would go as two records and two system calls. They are copied
    /// into one (up to [`COALESCE`] bytes) and written at once. A write that must be retried
    /// is retried with the same bytes first: `h2` only ever adds to what it hands.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let (Some(first), Some(_)) = (slices.next(), slices.next()) else {
            let only = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(&mut this.io).poll_write(cx, only);
        };
        if first.len() >= COALESCE {
            return Pin::new(&mut this.io).poll_write(cx, first);
        }
        this.scratch.clear();
        for b in bufs {
            let room = COALESCE - this.scratch.len();
            if room == 0 {
                break;
            }
            this.scratch.extend_from_slice(&b[..b.len().min(room)]);
        }
        let poll = Pin::new(&mut this.io).poll_write(cx, &this.scratch);
        // Small writes (heads, small answers) keep theirs; a large one's memory is given back,
        // so that thousands of idle connections hold none.
        if this.scratch.capacity() > KEEP_SCRATCH {
            this.scratch = Vec::new();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// TLS `close_notify` and the TCP FIN, then what the client still sends is read and dropped
    /// (its own `close_notify`, an acknowledgement) until it closes too, for at most
    /// [`CLOSE_LINGER`]: closing a socket with unread bytes would reset the connection, and the
    /// client could lose the end of what was sent to it (nginx's lingering close).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let linger = match &mut this.closing {
            Some(linger) => linger,
            None => {
                std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                this.closing
                    .insert(Box::pin(tokio::time::sleep(CLOSE_LINGER)))
            }
        };
        let mut sink = [0u8; 1024];
        loop {
            if linger.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
