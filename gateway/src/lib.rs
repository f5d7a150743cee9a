//! holdfast: the origin gateway that Cloudflare connects to, in front of backends arranged in
//! ordered tiers.
//!
//! The decisions are plain types that know nothing of the data path: [`select`] (which backend
//! next), [`attempts`] (whether to try again, with what time left), [`failover`] (what each
//! attempt's outcome means: report it, answer, try again, hold an answer, give up), [`hedge`]
//! (when a slow attempt gets a second one beside it), [`fallback`] (what visitors
//! get when nothing can serve), [`h1`] (the HTTP/1.1 wire rules: which requests are refused,
//! how bodies are framed, what is forwarded; the `holdfast-h1` crate). [`fast`] is the data path
//! built on them and [`listen`] its listeners, one runtime per worker thread (Pingora keeps
//! signals, the admin listener, health checks and the socket hand-over of upgrades); [`runtime`] is
//! the immutable snapshot a request works from; [`metrics`] and [`admin`] show what happens;
//! [`server`] assembles the process; [`demo`] runs it with built-in backends.

pub mod access;
pub mod admin;
pub mod answer;
pub mod attempts;
pub(crate) mod bridge;
pub mod cap;
pub mod certs;
pub mod cli;
pub mod control;
pub mod demo;
pub mod doctor;
pub mod events;
pub mod failover;
pub mod fallback;
pub mod fast;
pub mod fingerprint;
pub mod fleet;
pub mod hedge;
pub mod history;
pub mod http2;
pub use holdfast_h1 as h1;
pub mod lifecycle;
pub mod listen;
pub mod metrics;
pub mod notifications;
pub mod process;
pub mod refresh;
pub mod reload;
pub mod rundir;
pub mod runtime;
pub mod select;
pub mod server;
pub mod stale;
pub mod state;
pub mod systemd;
pub mod trust;
pub mod watch;
