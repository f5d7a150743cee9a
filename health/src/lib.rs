//! Backend health for holdfast.
//!
//! - [`state`]: the pure state machine (rise, fall, passive reports), no I/O, no clock;
//! - [`probe`]: one TCP or HTTP probe of one backend;
//! - [`rate`]: the failure-rate threshold of passive detection;
//! - [`table`]: every backend's current state, readable from the request path without locks;
//! - [`checker`]: the loops that probe each backend on its interval, with jitter, until shutdown;
//! - [`tls`]: the TLS client for HTTPS backends, shared with the data path.

pub mod checker;
pub mod probe;
pub mod rate;
pub mod state;
pub mod table;
pub mod tls;

pub use probe::CheckFailure;
pub use state::{Outcome, Reason, Status, TrafficFailure, Transition};
pub use table::{BackendHealth, BackendId, CheckRecord, HealthTable, Observer, TransitionRecord};
