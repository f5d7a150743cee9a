//! What a backend connection is to the data path, and what failing to open one means: the
//! backend's failure, or the gateway's own trouble. A leaf of the upstream side: both
//! transports (TCP/TLS in [`super`], lanes to h2 backends in [`super::h2`]) return these.

use crate::failover::Ended;
use holdfast_health::{LocalError, TrafficFailure};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a backend.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Why no connection to a backend was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The backend's doing (refused, timed out, TLS, no route): its health hears of it.
    Backend(TrafficFailure),
    /// The gateway's own (out of descriptors, ports, memory): no backend's.
    Local(LocalError),
}

impl ConnectError {
    /// What an I/O error on connect means.
    pub fn of(e: &io::Error) -> Self {
        match LocalError::of(e) {
            Some(local) => ConnectError::Local(local),
            None => ConnectError::Backend(classify(e)),
        }
    }
}

impl From<ConnectError> for Ended {
    fn from(e: ConnectError) -> Ended {
        match e {
            ConnectError::Backend(kind) => Ended::ConnectFailed(kind),
            ConnectError::Local(why) => Ended::Local(why),
        }
    }
}

/// What an I/O error on connect means for the backend (see [`ConnectError::of`] for the
/// gateway's own errors, told apart first).
fn classify(e: &io::Error) -> TrafficFailure {
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
