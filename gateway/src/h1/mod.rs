//! HTTP/1.1 wire rules that holdfast enforces itself, never weaker than Pingora's parser and
//! stricter where ambiguity could let a message be read one way here and another way by a
//! backend (request smuggling, RFC 9112 6.3 and 11.2). Plain code over bytes, no I/O, so the
//! same rules serve any data path:
//!
//! - [`request`]: judges a request head (framing, `Host`, limits); guards every request today;
//! - [`chunked`]: scans a chunked body as it streams, refusing bad chunk framing before it is
//!   forwarded;
//! - [`response`]: frames a backend's response head (length, chunked, until close, none) and says
//!   whether the connection can be reused;
//! - [`rewrite`]: the request head as forwarded (hop-by-hop headers out, `X-Forwarded-*` in).
//!
//! `chunked`, `response` and `rewrite` are the wire rules of the lean HTTP/1.1 data path
//! (issue 8), which is being built on them; Pingora's pipeline applies its own equivalents until
//! that path replaces it.

pub mod chunked;
pub mod request;
pub mod response;
pub mod rewrite;
