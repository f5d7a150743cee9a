//! `X-Forwarded-For` and `X-Forwarded-Proto` towards the backends. The client address is
//! appended to any list the request brought (Cloudflare's own `X-Forwarded-For` included).
//! `X-Forwarded-Proto` is kept when the request has one (Cloudflare sets it to the visitor's
//! scheme, which backends need to avoid redirect loops), else set to the listener's scheme. The
//! `Host` header passes through untouched.

use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

pub fn add(session: &Session, req: &mut RequestHeader) -> Result<()> {
    if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
        let ip = client.ip().to_string();
        let value = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
            _ => ip,
        };
        req.insert_header("X-Forwarded-For", value)?;
    }
    if req.headers.get("x-forwarded-proto").is_none() {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        req.insert_header("X-Forwarded-Proto", if tls { "https" } else { "http" })?;
    }
    Ok(())
}
