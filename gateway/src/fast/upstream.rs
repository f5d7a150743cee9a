//! Connections to backends: plain TCP or TLS (or a lane to an HTTP/2 backend's shared
//! connection), opened with the attempt's connect timeout, and a failure to open one
//! classified the way health and metrics count it.

use crate::http2::H2Backends;
use holdfast_config::{Backend, BackendProtocol};
use holdfast_health::tls::{HandshakeError, TlsClient};
use holdfast_health::TrafficFailure;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to a backend.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Opens connections to backends.
pub struct Connector {
    tls: TlsClient,
    /// The shared connections to HTTP/2 backends.
    h2: H2Backends,
}

impl Connector {
    pub fn new(tls: TlsClient) -> Self {
        Connector {
            tls,
            h2: H2Backends::default(),
        }
    }

    /// Connects to `backend` within `timeout` (the TLS handshake included). To an HTTP/2
    /// backend, what comes back is a lane to its shared connection, opened first if there is
    /// none ([`crate::http2::H2Backends`]); it speaks HTTP/1.1 like any other.
    pub async fn connect(
        &self,
        backend: &Backend,
        timeout: Duration,
    ) -> Result<Box<dyn Io>, TrafficFailure> {
        let attempt = async {
            match backend.protocol {
                BackendProtocol::Http1 => self.open(backend).await,
                BackendProtocol::H2 => self.h2.lane(backend, self.open(backend)).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(TrafficFailure::Timeout),
        }
    }

    /// Opens a byte stream to `backend`: TCP, and TLS over it when configured.
    async fn open(&self, backend: &Backend) -> Result<Box<dyn Io>, TrafficFailure> {
        let tcp = TcpStream::connect(backend.addr)
            .await
            .map_err(|e| classify(&e))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &backend.tls else {
            return Ok(Box::new(tcp));
        };
        match self.tls.handshake(tcp, tls, backend.protocol).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(HandshakeError::Io(e)) if classify(&e) == TrafficFailure::Reset => {
                Err(TrafficFailure::Reset)
            }
            Err(_) => Err(TrafficFailure::Tls),
        }
    }
}

/// What an I/O error on connect means.
pub fn classify(e: &io::Error) -> TrafficFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TrafficFailure::Refused,
        io::ErrorKind::TimedOut => TrafficFailure::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            TrafficFailure::NoRoute
        }
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TrafficFailure::Reset,
        _ => TrafficFailure::Other,
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
