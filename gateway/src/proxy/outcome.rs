//! What a Pingora error means for health and metrics.

use holdfast_health::TrafficFailure;
use pingora::prelude::*;

/// The kind of a failure to connect (nothing was sent to the backend).
pub fn connect_failure(e: &Error) -> TrafficFailure {
    match e.etype() {
        ErrorType::ConnectRefused => TrafficFailure::Refused,
        ErrorType::ConnectTimedout => TrafficFailure::Timeout,
        ErrorType::ConnectNoRoute => TrafficFailure::NoRoute,
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::TLSWantX509Lookup
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => TrafficFailure::Tls,
        _ if is_reset(e) => TrafficFailure::Reset,
        _ => TrafficFailure::Other,
    }
}

/// The connection broke: reset, closed, or a read or write that failed.
pub fn is_reset(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}
