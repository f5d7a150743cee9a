//! The visitor's connection as `h2` sees it: its bytes shown to the flood guard as they are
//! read, what `h2` writes in one turn of the connection and the next sent in one TLS write,
//! and a lingering close.

use super::guard::{Abuse, FrameGuard};
use crate::bridge::lock;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes put together into one TLS write to a visitor.
const COALESCE: usize = 32 * 1024;
/// After a connection's close, how long what the client still sends is read away.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// What a connection keeps of its write buffer between writes.
const KEEP_PENDING: usize = 4 * 1024;

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
    /// What `h2` wrote and flushed, not sent yet: see [`Guarded::poll_flush`].
    pub(super) pending: Vec<u8>,
    /// How much of `pending` is on its way already (a write that took part of it).
    pub(super) sent: usize,
    /// A flush found `pending` and woke the task: the next turn sends it.
    pub(super) deferred: bool,
    /// Once shut down: the end of the lingering close.
    pub(super) closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A new turn of the connection: what the last one flushed goes out first. A socket
        // that takes no more now does not stop the reading (its waker is registered).
        if this.deferred {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
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

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Sends what is pending; ready once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.pending[self.sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        self.deferred = false;
        // Small turns (heads, small answers) keep their buffer; a large one's memory is given
        // back, so that thousands of idle connections hold none.
        if self.pending.capacity() > KEEP_PENDING {
            self.pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Takes what fits of `bufs` into `pending` (sending it first when full): how much.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() >= COALESCE {
            std::task::ready!(self.poll_drain(cx))?;
        }
        // A busy turn (the answers of many streams) gets the most a turn sends at once, once
        // it outgrows what a connection keeps between turns: one allocation, given back after
        // the turn, rather than a doubling every few frames.
        let needed = self.pending.len() + bufs.iter().map(|b| b.len()).sum::<usize>();
        if needed > self.pending.capacity() && needed > KEEP_PENDING {
            self.pending.reserve_exact(COALESCE - self.pending.len());
        }
        let mut taken = 0;
        for b in bufs {
            let room = COALESCE - self.pending.len();
            let n = b.len().min(room);
            self.pending.extend_from_slice(&b[..n]);
            taken += n;
            if n < b.len() {
                break;
            }
        }
        Poll::Ready(Ok(taken))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_take(cx, &[io::IoSlice::new(buf)])
    }

    /// `h2` hands a frame's header and its payload as two slices: they are put together with
    /// the other frames of the turn (up to [`COALESCE`] bytes); see [`Self::poll_flush`].
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_take(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Over TLS each write is a record and a system call, and `h2` flushes before it takes
    /// each answer's body (a DATA frame it does not copy): a write per stream, where the
    /// answers of several streams ready at once could share one. So a flush does not send:
    /// it wakes the connection's task, which goes behind the tasks already woken (the streams
    /// whose answers arrived with this one, which add their frames), and the next turn's first
    /// read sends everything at once. Nothing waits longer than that turn: the task is woken
    /// here, and every turn of an open connection reads.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() && !this.deferred {
            this.deferred = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
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
                std::task::ready!(this.poll_drain(cx))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A connection that records each write it is given, taking at most `most` bytes of one.
    struct Recorder {
        writes: Vec<Vec<u8>>,
        most: usize,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.most);
            this.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn guarded(most: usize) -> Guarded<Recorder> {
        Guarded {
            io: Recorder {
                writes: Vec::new(),
                most,
            },
            guard: FrameGuard::new(Instant::now()),
            alarm: Arc::new(Alarm::default()),
            tripped: false,
            pending: Vec::new(),
            sent: 0,
            deferred: false,
            closing: None,
        }
    }

    fn sizes(g: &Guarded<Recorder>) -> Vec<usize> {
        g.io.writes.iter().map(Vec::len).collect()
    }

    /// What a turn writes and flushes goes out at the next turn's read, in one write and in
    /// order, the task woken once for it; a turn larger than COALESCE goes in pieces of
    /// COALESCE; a short write is taken up where it stopped; a close sends what waits.
    #[tokio::test]
    async fn the_frames_of_a_turn_go_out_in_one_write_at_the_next_turn() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut g = guarded(usize::MAX);
        for stream in 1..=3u8 {
            let head = [stream; 9];
            let payload = vec![stream; 1024];
            let bufs = [io::IoSlice::new(&head), io::IoSlice::new(&payload)];
            let taken = Pin::new(&mut g).poll_write_vectored(&mut cx, &bufs);
            assert!(matches!(taken, Poll::Ready(Ok(1033))));
            // h2 flushes before each DATA frame it does not copy.
            assert!(Pin::new(&mut g).poll_flush(&mut cx).is_ready());
        }
        assert!(g.io.writes.is_empty(), "nothing sent within the turn");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "the task woken once");
        let mut space = [0u8; 64];
        let mut read = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut g).poll_read(&mut cx, &mut read).is_pending());
        assert_eq!(sizes(&g), vec![3 * 1033], "sent at the next turn, at once");
        assert!(g.io.writes[0][..1033].iter().all(|&b| b == 1));
        assert!(g.io.writes[0][2066..].iter().all(|&b| b == 3));
        assert!(!g.deferred && g.pending.is_empty());

        let mut g = guarded(usize::MAX);
        let big = vec![7u8; COALESCE + 100];
        let mut at = 0;
        while at < big.len() {
            match Pin::new(&mut g).poll_write(&mut cx, &big[at..]) {
                Poll::Ready(Ok(n)) => at += n,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            sizes(&g),
            vec![COALESCE],
            "a full buffer goes out before more is taken"
        );
        let _ = Pin::new(&mut g).poll_flush(&mut cx);
        let _ = Pin::new(&mut g).poll_read(&mut cx, &mut ReadBuf::new(&mut space));
        assert_eq!(sizes(&g), vec![COALESCE, 100]);
        assert!(
            g.pending.capacity() <= KEEP_PENDING,
            "a large turn's buffer is not kept"
        );

        let mut g = guarded(1000);
        let _ = Pin::new(&mut g).poll_write(&mut cx, &[5u8; 2500]);
        let _ = Pin::new(&mut g).poll_flush(&mut cx);
        let _ = Pin::new(&mut g).poll_read(&mut cx, &mut ReadBuf::new(&mut space));
        assert_eq!(
            sizes(&g),
            vec![1000, 1000, 500],
            "taken up where a short write stopped"
        );

        let mut g = guarded(usize::MAX);
        let _ = Pin::new(&mut g).poll_write(&mut cx, b"goaway");
        let _ = Pin::new(&mut g).poll_flush(&mut cx);
        let _ = Pin::new(&mut g).poll_shutdown(&mut cx);
        assert_eq!(
            g.io.writes,
            vec![b"goaway".to_vec()],
            "a close sends what waits"
        );
    }

    #[test]
    fn a_busy_turn_grows_its_buffer_once() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut g = guarded(usize::MAX);
        let mut capacities = Vec::new();
        for stream in 0..20u8 {
            let (head, payload) = ([stream; 9], [stream; 1024]);
            let bufs = [io::IoSlice::new(&head), io::IoSlice::new(&payload)];
            assert!(matches!(
                Pin::new(&mut g).poll_write_vectored(&mut cx, &bufs),
                Poll::Ready(Ok(1033))
            ));
            capacities.push(g.pending.capacity());
        }
        // Small while the turn is about what a connection keeps; then the whole room, once.
        assert!(
            capacities[..4].iter().all(|&c| c < COALESCE),
            "{capacities:?}"
        );
        assert!(
            capacities[4..].iter().all(|&c| c == COALESCE),
            "{capacities:?}"
        );
        let mut space = [0u8; 64];
        let _ = Pin::new(&mut g).poll_flush(&mut cx);
        let _ = Pin::new(&mut g).poll_read(&mut cx, &mut ReadBuf::new(&mut space));
        assert_eq!(sizes(&g), vec![20 * 1033]);
        assert_eq!(g.pending.capacity(), 0, "a busy turn's room is given back");
    }
}
