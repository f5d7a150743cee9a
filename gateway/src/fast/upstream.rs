//! Connections to backends: plain TCP or TLS, opened with the attempt's connect timeout, and a
//! failure to open one classified the way health and metrics count it.

use holdfast_config::Backend;
use holdfast_health::TrafficFailure;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// A byte stream to a backend.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Opens connections to backends.
pub struct Connector {
    tls: SslConnector,
}

impl Connector {
    /// A connector trusting the system's certificate store for HTTPS backends.
    pub fn new() -> Result<Self, openssl::error::ErrorStack> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        builder.set_default_verify_paths()?;
        Ok(Connector {
            tls: builder.build(),
        })
    }

    /// Connects to `backend` within `timeout` (the TLS handshake included).
    pub async fn connect(
        &self,
        backend: &Backend,
        timeout: Duration,
    ) -> Result<Box<dyn Io>, TrafficFailure> {
        let attempt = async {
            let tcp = TcpStream::connect(backend.addr)
                .await
                .map_err(|e| classify(&e))?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &backend.tls else {
                return Ok(Box::new(tcp) as Box<dyn Io>);
            };
            let mut config = self.tls.configure().map_err(|_| TrafficFailure::Tls)?;
            config.set_use_server_name_indication(!tls.sni.is_empty());
            config.set_verify_hostname(tls.verify && !tls.sni.is_empty());
            if !tls.verify {
                config.set_verify(SslVerifyMode::NONE);
            }
            let ssl = config.into_ssl(&tls.sni).map_err(|_| TrafficFailure::Tls)?;
            let mut stream = SslStream::new(ssl, tcp).map_err(|_| TrafficFailure::Tls)?;
            match Pin::new(&mut stream).connect().await {
                Ok(()) => Ok(Box::new(stream) as Box<dyn Io>),
                Err(e) => Err(match e.io_error() {
                    Some(io) if io.kind() == io::ErrorKind::ConnectionReset => {
                        TrafficFailure::Reset
                    }
                    _ => TrafficFailure::Tls,
                }),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(TrafficFailure::Timeout),
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
