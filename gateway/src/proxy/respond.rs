//! Answers the gateway writes itself.

use super::RequestCtx;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use pingora::ErrorSource;

/// Writes the fallback answer (503 with `Retry-After` unless configured otherwise). The
/// connection stays open for the next request when the request body allows it.
pub async fn fallback(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let Some(runtime) = &ctx.runtime else {
        return Err(Error::explain(InternalError, "request has no runtime"));
    };
    let answer = &runtime.fallback;
    let mut head = ResponseHeader::build(answer.status, Some(answer.headers.len()))?;
    for (name, value) in &answer.headers {
        head.insert_header(*name, value.as_str())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(head), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(answer.body.clone()), true)
            .await?;
    }
    Ok(())
}

/// Answers a failure that is not the backends' (a malformed request, an internal error).
pub async fn error(session: &mut Session, e: &Error) -> FailToProxy {
    let code = match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    };
    if code > 0 {
        if let Err(e) = session.respond_error(code).await {
            tracing::debug!(error = %e, "cannot answer the visitor");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}
