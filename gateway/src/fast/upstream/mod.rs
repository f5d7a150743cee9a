//! Connections to backends: plain TCP or TLS (or a lane to an HTTP/2 backend's shared
//! connection), opened with the attempt's connect timeout, and a failure to open one
//! classified the way health and metrics count it: the backend's failure, or the gateway's
//! own trouble ([`LocalError`]), which no backend is blamed for.

use crate::cap::{Cap, Ticket};
mod conn;
mod h2;

pub use conn::{ConnectError, Io};
use h2::H2Backends;
use holdfast_config::{Backend, BackendProtocol};
use holdfast_health::tls::{HandshakeError, TlsClient};
use holdfast_health::{LocalError, TrafficFailure};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The descriptors visitor and backend connections may use together: the open-file limit less
/// what checks, the admin listener, logs and the runtime need. A backend connection that would
/// go past it is not tried (the gateway's trouble, answered with the fallback), rather than
/// failing with EMFILE. An HTTP/2 visitor connection may hold a backend connection per stream,
/// so visitors and backends draw on one budget instead of a fixed share each.
#[derive(Debug)]
pub struct Descriptors {
    usable: usize,
    visitors: Arc<Cap>,
    backends: Arc<Cap>,
}

impl Descriptors {
    /// `usable` descriptors, shared with the visitor connections `visitors` counts.
    pub fn new(usable: usize, visitors: Arc<Cap>) -> Self {
        Descriptors {
            usable,
            visitors,
            backends: Cap::new(usize::MAX),
        }
    }

    /// A descriptor for one more backend connection, if the budget has room.
    fn take(&self) -> Option<Ticket> {
        let (ticket, _) = self.backends.take();
        let used = self.backends.live() + self.visitors.live();
        (used <= self.usable).then_some(ticket)
    }
}

/// Opens connections to backends.
pub struct Connector {
    tls: TlsClient,
    descriptors: Descriptors,
    /// The shared connections to HTTP/2 backends.
    h2: H2Backends,
}

impl Connector {
    pub fn new(tls: TlsClient, descriptors: Descriptors) -> Self {
        Connector {
            tls,
            descriptors,
            h2: H2Backends::default(),
        }
    }

    /// Connects to `backend` within `timeout` (the TLS handshake included). To an HTTP/2
    /// backend, what comes back is a lane to its shared connection, opened first if there is
    /// none ([`h2::H2Backends`]); it speaks HTTP/1.1 like any other.
    pub async fn connect(
        &self,
        backend: &Backend,
        timeout: Duration,
    ) -> Result<Box<dyn Io>, ConnectError> {
        let attempt = async {
            match backend.protocol {
                BackendProtocol::Http1 => self.open(backend).await,
                BackendProtocol::H2 => self.h2.lane(backend, self.open(backend)).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Backend(TrafficFailure::Timeout)),
        }
    }

    /// Opens a byte stream to `backend`: TCP, and TLS over it when configured; counted against
    /// the descriptor budget while it is open.
    async fn open(&self, backend: &Backend) -> Result<Box<dyn Io>, ConnectError> {
        let ticket = self
            .descriptors
            .take()
            .ok_or(ConnectError::Local(LocalError::Descriptors))?;
        let tcp = TcpStream::connect(backend.addr)
            .await
            .map_err(|e| ConnectError::of(&e))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &backend.tls else {
            return Ok(Box::new(Counted {
                io: tcp,
                _ticket: ticket,
            }));
        };
        match self.tls.handshake(tcp, tls, backend.protocol).await {
            Ok(stream) => Ok(Box::new(Counted {
                io: stream,
                _ticket: ticket,
            })),
            Err(HandshakeError::Io(e)) => match ConnectError::of(&e) {
                reset @ ConnectError::Backend(TrafficFailure::Reset) => Err(reset),
                local @ ConnectError::Local(_) => Err(local),
                ConnectError::Backend(_) => Err(ConnectError::Backend(TrafficFailure::Tls)),
            },
            Err(_) => Err(ConnectError::Backend(TrafficFailure::Tls)),
        }
    }
}

/// A backend connection counted against the descriptor budget until it is dropped.
struct Counted<T> {
    io: T,
    _ticket: Ticket,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Stands in for a backend connection while its two halves are in use apart (a request body
/// going out while its answer is watched for): reads end, writes fail. Zero-sized, so boxing it
/// allocates nothing.
pub struct Detached;

impl AsyncRead for Detached {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Detached {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
