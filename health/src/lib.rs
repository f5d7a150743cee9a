//! Backend health for holdfast.
//!
//! - [`admin`]: what an operator asked of a backend (drain, down, up), a plain type;
//! - [`state`]: the pure state machine (rise, fall, passive reports), no I/O, no clock;
//! - [`probe`]: one TCP or HTTP probe of one backend;
//! - [`local`]: the gateway's own trouble (out of descriptors, ports, memory), never a
//!   backend's;
//! - [`passive`]: passive detection, what real requests tell about a backend (streaks, the
//!   failure rate, the pool's ejection cap);
//! - [`table`]: every backend's current state, readable from the request path without locks;
//! - [`checker`]: the loops that probe each backend on its interval, with jitter, until shutdown;
//! - [`tls`]: the TLS client for HTTPS backends, shared with the data path.

pub mod admin;
pub mod checker;
pub mod local;
pub mod passive;
pub mod probe;
pub mod state;
pub mod table;
pub mod tls;

pub use local::LocalError;
pub use passive::Attempt;
pub use probe::CheckFailure;
pub use state::{Outcome, Reason, Status, TrafficFailure, Transition};
pub use table::{BackendHealth, CheckRecord, HealthTable, Observer, Plan, TransitionRecord};
