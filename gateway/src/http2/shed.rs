//! Connections over the cap that speak h2: every stream gets the fallback answer, then GOAWAY.

use super::conn::{abuse_of, attacked, calm_down, handshake};
use crate::bridge::translate;
use crate::fast::{FastPath, VisitorIo};
use bytes::Bytes;
use std::net::IpAddr;
use std::time::Duration;

/// An over-the-cap connection: how long it has to send its requests before they are
/// answered with the fallback and it is closed.
const SHED_WAIT: Duration = Duration::from_secs(1);

/// Answers every stream of an HTTP/2 connection over the cap with the fallback answer, and
/// closes it: the HTTP/2 form of [`FastPath::shed`]. The same guard and limits as any other
/// connection: being over the cap gives a flood no more room.
pub async fn shed<S: VisitorIo + 'static>(app: &FastPath, io: S, client: IpAddr) {
    let runtime = app.runtime();
    runtime.metrics.shed();
    let max_streams = runtime.config.listen.h2_max_concurrent_streams;
    let Some((mut conn, alarm)) = handshake(io, client, max_streams, SHED_WAIT).await else {
        return;
    };
    let metrics = &runtime.metrics;
    // Streams are answered as they come; the first one answered starts the GOAWAY (streams
    // the client sent before it hears it are answered too). A client that sends nothing for
    // SHED_WAIT gets the GOAWAY then.
    let answer = &runtime.fallback;
    let Some(response) = translate::response(&Bytes::copy_from_slice(answer.head(true))) else {
        return;
    };
    let mut deadline = tokio::time::Instant::now() + SHED_WAIT;
    let mut closing = false;
    loop {
        let accepted = tokio::select! {
            accepted = tokio::time::timeout_at(deadline, conn.accept()) => accepted,
            () = alarm.notify.notified() => return calm_down(&mut conn, &alarm, metrics, client).await,
        };
        match accepted {
            Ok(Some(Err(e))) => {
                if let Some(kind) = abuse_of(&alarm, &e) {
                    attacked(metrics, client, kind);
                }
                return;
            }
            Ok(Some(Ok((request, mut respond)))) => {
                let head_method = request.method() == http::Method::HEAD;
                if let Ok(mut tx) = respond.send_response(response.clone(), head_method) {
                    if !head_method {
                        let _ = tx.send_data(answer.body.clone(), true);
                    }
                }
                if !closing {
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
            Ok(_) => return,
            Err(_) if !closing => {
                conn.graceful_shutdown();
                closing = true;
                deadline = tokio::time::Instant::now() + SHED_WAIT;
            }
            Err(_) => return,
        }
    }
}
