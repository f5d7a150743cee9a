//! HTTP/1.1 wire rules that holdfast enforces itself, never weaker than Pingora's parser and
//! stricter where ambiguity could let a request be read one way here and another way by a
//! backend (request smuggling, RFC 9112 6.3 and 11.2).
//!
//! [`request`] parses and judges a request head: the request line, every header line, the body
//! framing (`Content-Length` or `chunked`), `Host`, and the size limits. It is plain code over
//! bytes, with no I/O, so the same rules serve any data path.

pub mod request;
