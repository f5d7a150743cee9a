//! What visitors get when no backend can serve: the configured status (503 by default), with
//! `Retry-After` and `Cache-Control: no-store` and a non-empty body. Never 502 or 504, which
//! Cloudflare would replace with its own error page; never a refused or reset connection.

use crate::h1;
use bytes::Bytes;
use holdfast_config::Fallback;

/// The fallback answer, rendered to wire bytes once per config: during an outage every
/// request is answered with it.
#[derive(Debug, Clone)]
pub struct FallbackAnswer {
    pub status: u16,
    /// The head for a connection that stays open.
    head_keep_open: Bytes,
    /// The same head with `Connection: close`.
    head_close: Bytes,
    pub body: Bytes,
}

impl FallbackAnswer {
    pub fn new(config: &Fallback) -> Self {
        let body = Bytes::copy_from_slice(&config.body);
        let head = format!(
            "HTTP/1.1 {} {}\r\nRetry-After: {}\r\nCache-Control: no-store\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            config.status,
            h1::reason(config.status),
            config.retry_after.as_secs().max(1),
            config.content_type,
            body.len()
        );
        FallbackAnswer {
            status: config.status,
            head_keep_open: Bytes::from(format!("{head}\r\n")),
            head_close: Bytes::from(format!("{head}Connection: close\r\n\r\n")),
            body,
        }
    }

    /// The head to send, for a connection that stays open or not.
    pub fn head(&self, keep_open: bool) -> &[u8] {
        if keep_open {
            &self.head_keep_open
        } else {
            &self.head_close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn heads_for_open_and_closing_connections() {
        let answer = FallbackAnswer::new(&Fallback {
            status: 503,
            retry_after: Duration::from_secs(17),
            content_type: "text/plain".into(),
            body: Arc::from(&b"down"[..]),
            body_file: None,
        });
        let open =
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 17\r\nCache-Control: no-store\r\n\
                    Content-Type: text/plain\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(answer.head(true), open.as_bytes());
        let close = open.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        assert_eq!(answer.head(false), close.as_bytes());
        assert_eq!(&answer.body[..], b"down");
    }
}
