//! What visitors get when no backend can serve: the configured status (503 by default), with
//! `Retry-After` and `Cache-Control: no-store` and a non-empty body. Never 502 or 504, which
//! Cloudflare would replace with its own error page; never a refused or reset connection.

use bytes::Bytes;
use holdfast_config::Fallback;

/// The fallback answer, rendered once per config.
#[derive(Debug, Clone)]
pub struct FallbackAnswer {
    pub status: u16,
    /// `(name, value)` pairs, in order.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl FallbackAnswer {
    pub fn new(config: &Fallback) -> Self {
        let body = Bytes::copy_from_slice(&config.body);
        FallbackAnswer {
            status: config.status,
            headers: vec![
                (
                    "Retry-After",
                    config.retry_after.as_secs().max(1).to_string(),
                ),
                ("Cache-Control", "no-store".to_string()),
                ("Content-Type", config.content_type.clone()),
                ("Content-Length", body.len().to_string()),
            ],
            body,
        }
    }
}
