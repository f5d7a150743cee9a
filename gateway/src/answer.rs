//! What becomes of an answer once its head is read, and how long the wait for that head lasts:
//! the rules `fast/exchange.rs` and the fallback ask, as plain functions. The data path reads and
//! writes; no condition below is written in the I/O code.
//!
//! | the answer's head | then |
//! |---|---|
//! | a status the attempt holds (`retry_on_status`, the request may go again, its body read whole) | held back while the next backend is tried |
//! | `101` to a request that did not ask to upgrade | not an answer (`bad_response`): nothing reaches the visitor |
//! | `101` to a request that asked to upgrade | the tunnel opens; the connection ends with it |
//! | anything else | relayed, the visitor's connection kept open when [`keep_open`] says so |
//!
//! The visitor's connection stays open after an answer (the backend's or the fallback's) only
//! when the visitor asked for keep-alive, its request body was read to its end, the answer's end
//! is framed (not "until close"), and the gateway is not shutting down. Otherwise it closes, and
//! when the visitor's body is still coming it is read away first ([`Exchange::Linger`]).

use crate::attempts::AttemptLimits;
use std::time::{Duration, Instant};

/// What became of one request, for the visitor's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Answered; the visitor's connection may carry another request.
    KeepOpen,
    /// Answered (or failed past answering); close the connection.
    Close,
    /// Answered before the visitor's body was read whole: read the rest away (for a while),
    /// then close, so that the close does not reset the connection before the visitor has
    /// read the answer.
    Linger,
}

/// What the visitor's request and the gateway's state say about its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    /// The visitor asked for keep-alive (HTTP/1.1 without `close`, or 1.0 with `keep-alive`).
    pub keep_alive: bool,
    /// The visitor asked to upgrade (`Upgrade` with `Connection: upgrade`).
    pub upgrade: bool,
    /// The visitor's request body was read to its end (or it had none).
    pub body_whole: bool,
    /// The gateway is shutting down: no connection is kept.
    pub closing: bool,
}

/// What to do with an answer whose head was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Keep it back and try the next backend.
    Hold,
    /// Not an answer that can be passed on (`bad_response`).
    Refuse,
    /// Pass the `101` on and open the tunnel.
    Tunnel,
    /// Pass it on; the visitor's connection stays open after it or not.
    Relay { keep_open: bool },
}

/// What to do with an answer of `status` (its body framed "until close" or not) when the
/// attempt holds the statuses in `hold` (empty when nothing more is tried).
pub fn answer(status: u16, until_close: bool, hold: &[u16], asked: Asked) -> Answer {
    if asked.body_whole && hold.contains(&status) {
        return Answer::Hold;
    }
    match (status, asked.upgrade) {
        (101, false) => Answer::Refuse,
        (101, true) => Answer::Tunnel,
        _ => Answer::Relay {
            keep_open: keep_open(asked, until_close),
        },
    }
}

/// Whether the visitor's connection stays open after an answer.
pub fn keep_open(asked: Asked, until_close: bool) -> bool {
    asked.keep_alive && asked.body_whole && !until_close && !asked.closing
}

/// How the visitor's connection goes on once an answer was sent (`sent`: all of it went out).
pub fn after(sent: bool, keep_open: bool, body_whole: bool) -> Exchange {
    match (sent, keep_open, body_whole) {
        (true, true, _) => Exchange::KeepOpen,
        // The rest of the visitor's body is still coming: read it away before closing, or
        // the close would reset the connection before the answer is read.
        (true, false, false) => Exchange::Linger,
        _ => Exchange::Close,
    }
}

/// Whether the backend's connection may carry another request after an answer: its body went
/// through whole, its framing allows it (`framed`), nothing follows it (`leftover`: the backend
/// said more than it framed), and the visitor's request went out whole.
pub fn backend_reusable(sent: bool, framed: bool, leftover: bool, body_whole: bool) -> bool {
    sent && framed && !leftover && body_whole
}

/// When the wait for an answer's head ends at the latest, for a request sent at `sent`: the
/// attempt's `read_timeout` after it, or the end of the chain's `total_timeout` if sooner; and
/// for a request that may be sent again (`repeatable`), the pool's `response_timeout` after it
/// if that is sooner still (a silent backend then costs such a request that long, and the next
/// backend gets it).
pub fn head_deadline(
    sent: Instant,
    limits: &AttemptLimits,
    response: Option<Duration>,
    repeatable: bool,
) -> Instant {
    let until = limits.deadline.min(sent + limits.read);
    match (repeatable, response) {
        (true, Some(response)) => until.min(sent + response),
        _ => until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: &[u16] = &[502, 503, 504];

    fn asked(keep_alive: bool, upgrade: bool, body_whole: bool, closing: bool) -> Asked {
        Asked {
            keep_alive,
            upgrade,
            body_whole,
            closing,
        }
    }

    /// A row: name, status, body until close, statuses held, what was asked, the answer.
    type Row = (&'static str, u16, bool, &'static [u16], Asked, Answer);

    #[test]
    fn what_becomes_of_an_answer() {
        use Answer::*;
        let plain = asked(true, false, true, false);
        let kept = Relay { keep_open: true };
        let closed = Relay { keep_open: false };
        let cases: &[Row] = &[
            ("200, keep-alive", 200, false, HOLD, plain, kept),
            ("503 held", 503, false, HOLD, plain, Hold),
            ("503, nothing held", 503, false, &[], plain, kept),
            (
                "503, body not whole: cannot go again",
                503,
                false,
                HOLD,
                asked(true, false, false, false),
                closed,
            ),
            ("500 is not held", 500, false, HOLD, plain, kept),
            ("body until close", 200, true, HOLD, plain, closed),
            (
                "visitor asked to close",
                200,
                false,
                HOLD,
                asked(false, false, true, false),
                closed,
            ),
            (
                "gateway shutting down",
                200,
                false,
                HOLD,
                asked(true, false, true, true),
                closed,
            ),
            ("101 nobody asked for", 101, false, HOLD, plain, Refuse),
            (
                "101 to an upgrade",
                101,
                false,
                HOLD,
                asked(true, true, true, false),
                Tunnel,
            ),
            (
                "no upgrade answered: a plain answer",
                426,
                false,
                HOLD,
                asked(true, true, true, false),
                kept,
            ),
        ];
        for (name, status, until_close, hold, asked, want) in cases {
            assert_eq!(answer(*status, *until_close, hold, *asked), *want, "{name}");
        }
    }

    #[test]
    fn how_the_visitor_connection_goes_on() {
        use Exchange::*;
        // (sent whole, keep open, visitor's body whole) -> what follows
        let cases = [
            ((true, true, true), KeepOpen),
            ((true, false, true), Close),
            ((true, false, false), Linger),
            ((false, true, true), Close),
            ((false, false, false), Close),
        ];
        for ((sent, keep, whole), want) in cases {
            assert_eq!(after(sent, keep, whole), want, "{sent} {keep} {whole}");
        }
        // The backend's connection: only a whole, framed answer with nothing after it, to a
        // request that went out whole.
        assert!(backend_reusable(true, true, false, true));
        assert!(!backend_reusable(false, true, false, true));
        assert!(!backend_reusable(true, false, false, true));
        assert!(!backend_reusable(true, true, true, true));
        assert!(!backend_reusable(true, true, false, false));
    }

    #[test]
    fn the_wait_for_a_head_ends_at_the_earliest_deadline() {
        let sent = Instant::now();
        let s = Duration::from_secs;
        let limits = |read, total| AttemptLimits {
            connect: s(1),
            read: s(read),
            write: s(30),
            deadline: sent + s(total),
        };
        // (read, chain left, response_timeout, may go again) -> seconds after sending
        let cases = [
            ((60, 75, None, true), 60),
            ((60, 20, None, true), 20),
            ((60, 75, Some(5), true), 5),
            // response_timeout is only for requests that may go to the next backend
            ((60, 75, Some(5), false), 60),
            ((3, 75, Some(5), true), 3),
            ((60, 4, Some(5), true), 4),
        ];
        for ((read, total, response, repeatable), want) in cases {
            let until = head_deadline(sent, &limits(read, total), response.map(s), repeatable);
            assert_eq!(
                until - sent,
                s(want),
                "{read} {total} {response:?} {repeatable}"
            );
        }
    }
}
