//! The proxy listeners. Every worker thread runs its own single-threaded runtime and accepts on
//! every listening socket (a duplicate of the one socket per address), and a connection stays
//! on the thread that accepted it for its whole life: no hand-off between threads and no
//! cross-thread wake-up, the costs of serving from Pingora's shared runtimes
//! (`shared/pingora-performance.md`). The accept queue stays one per address, so there is no
//! per-thread queue whose closing could reset waiting connections.
//!
//! A reload changes the set live ([`Listeners::prepare`] binds what is new before anything
//! changes, [`Listeners::commit`] swaps): an added address serves, a removed one stops accepting
//! while its connections finish, one that stays is never closed; each worker watches the set.
//!
//! `set.rs` holds the set and its reload (the change itself a plain function, `diff.rs`),
//! `service.rs` the Pingora service that starts it, `accept.rs` the workers, the accept loop
//! and the TLS handshake, `pulls.rs` what a handshake says of Authenticated Origin Pulls (a
//! plain function), `socket.rs` binding and inheriting sockets.
//!
//! The sockets are handed over in a graceful binary upgrade through Pingora's table of listening
//! sockets: taken from it when inherited, or bound here with a duplicate put into it; the table
//! goes to the next process (see [`crate::lifecycle`]).

mod accept;
mod diff;
mod pulls;
mod service;
mod set;
mod socket;

pub use service::ProxyService;
pub use set::{Listeners, Prepared};
