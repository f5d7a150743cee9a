//! holdfast: the origin gateway that Cloudflare connects to, in front of backends arranged in
//! ordered tiers.
//!
//! The decisions are plain types that know nothing of Pingora's `ProxyHttp`:
//! [`select`] (which backend next), [`attempts`] (whether to try again, with what time left),
//! [`fallback`] (what visitors get when nothing can serve), [`h1`] (which requests are refused
//! as ambiguous or malformed). [`proxy`] wires them into Pingora;
//! [`runtime`] is the immutable snapshot a request works from; [`metrics`] and [`admin`] show
//! what happens; [`server`] assembles the process; [`demo`] runs it with built-in backends.

pub mod admin;
pub mod attempts;
pub mod cli;
pub mod demo;
pub mod fallback;
pub mod h1;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod select;
pub mod server;
