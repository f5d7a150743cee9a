//! What happens after each attempt of a request: the failover rules of the README's steps, as a
//! plain type. The data path tells [`Failover::after`] how an attempt ended and does what the
//! [`Decision`] says (report to health, answer, try again, hold an answer, give up); no retry
//! condition is written in the I/O code.
//!
//! | how the attempt ended | health hears | then |
//! |---|---|---|
//! | the connect failed (refused, timed out, TLS, no route) | that failure | the next backend, whatever the request: nothing was sent |
//! | the gateway itself is out of descriptors, ports or memory | nothing: no backend's fault | the fallback (503, `Retry-After`) |
//! | the backend is at its `max_in_flight` | nothing | the next backend |
//! | a kept connection turned out closed before any answer | nothing | a fresh connection to the same backend if the request may be sent again, else the fallback |
//! | no answer: broken, silent past its deadline, not HTTP | that failure | the next backend if the request may be sent again, else the fallback |
//! | an answer with a `retry_on_status` status, request may be sent again | `RetryableStatus` | hold the answer, the next backend (the held answer is passed on if none is left) |
//! | any other answer | `Answered` (a `RetryableStatus` if its status is one) | pass it on |
//! | the backend was taken out while the answer was awaited | nothing more | the next backend (only requests that may be sent again wait that way) |
//! | the visitor's side failed | nothing | close the visitor's connection |
//!
//! A request may be sent again when its method is in the pool's `retry_methods` and its body
//! (if any) was read whole first.

use crate::attempts::{GiveUp, RetryCause};
use holdfast_health::{Attempt, LocalError, TrafficFailure};

/// The request body, as far as sending it again goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    /// Read whole before the first attempt: it can go out again.
    Buffered,
    /// Forwarded as it comes: once sent, it is gone.
    Streamed,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The connection to the backend could not be opened.
    ConnectFailed(TrafficFailure),
    /// No connection was opened for the gateway's own trouble (out of descriptors, ports or
    /// memory): nothing the backend did.
    Local(LocalError),
    /// The backend filled up to its `max_in_flight` since it was picked.
    Full,
    /// No answer came: the connection broke, stayed silent past its deadline, or what came is
    /// not HTTP. `reused`: on a connection kept from an earlier request; `body_sent`: a request
    /// body (or part of it) went out.
    NoAnswer {
        failure: TrafficFailure,
        body_sent: bool,
        reused: bool,
    },
    /// The backend answered with this status (its head is read, nothing passed on yet).
    Answered(u16),
    /// The backend was taken out while the request waited for its answer.
    Rescued,
    /// The visitor's connection failed or the visitor's request turned out malformed.
    VisitorGone,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Pass this answer on: the exchange ends with it.
    Relay,
    /// Open a fresh connection to the same backend and send the request again.
    SameBackend,
    /// Try the next backend; a retry counted as this cause.
    Next(RetryCause),
    /// Keep this answer back and try the next backend; passed on if none is left.
    HoldAndNext(RetryCause),
    /// Answer with the fallback, for this reason.
    GiveUp(GiveUp),
    /// Close the visitor's connection.
    Close,
}

/// The decision after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the attempt tells the backend's passive detection, if anything.
    pub report: Option<Attempt>,
    pub then: Then,
}

/// The failover rules for one request.
#[derive(Debug, Clone, Copy)]
pub struct Failover<'a> {
    may_repeat: bool,
    body: RequestBody,
    retry_on_status: &'a [u16],
}

impl<'a> Failover<'a> {
    /// `may_repeat`: the request's method is in the pool's `retry_methods`.
    pub fn new(may_repeat: bool, body: RequestBody, retry_on_status: &'a [u16]) -> Self {
        Failover {
            may_repeat,
            body,
            retry_on_status,
        }
    }

    /// Whether the request may go to another backend once one had it.
    pub fn repeatable(&self) -> bool {
        self.may_repeat && self.body != RequestBody::Streamed
    }

    /// Whether the request may go on a spare backend connection (one another visitor
    /// connection left open). The backend may close a kept connection just as a request goes
    /// out on it; a request that may be sent again then goes again on a fresh one, unseen,
    /// and one that may not is lost. A visitor on a connection of its own that it kept open
    /// knows that risk (and may send such a request again itself: RFC 9112 9.3.1), so its
    /// later requests may take a spare; its first request takes one only when holdfast can
    /// send it again (HAProxy's `http-reuse safe`).
    pub fn takes_spare(&self, first_request: bool) -> bool {
        !first_request || self.repeatable()
    }

    /// The statuses whose answers are held back while another backend is tried.
    pub fn hold(&self) -> &'a [u16] {
        match self.repeatable() {
            true => self.retry_on_status,
            false => &[],
        }
    }

    /// Whether the request waits for its answer watching for its backend being taken out (a
    /// rescue sends it to the next backend).
    pub fn rescuable(&self) -> bool {
        self.repeatable()
    }

    /// The decision after an attempt that ended so.
    pub fn after(&self, ended: Ended) -> Decision {
        let decide = |report, then| Decision { report, then };
        match ended {
            Ended::ConnectFailed(kind) => decide(
                Some(Attempt::ConnectFailed(kind)),
                Then::Next(RetryCause::Failed(kind)),
            ),
            // Another backend would meet the same shortage: answer now, blame nobody.
            Ended::Local(_) => decide(None, Then::GiveUp(GiveUp::Local)),
            Ended::Full => decide(None, Then::Next(RetryCause::Busy)),
            // Closed by the backend while it was kept, the request sent into the close: not the
            // backend's failure. Whether the backend began on the request cannot be told, so
            // only a request that may be sent again is (RFC 9110 9.2.2: a non-idempotent one
            // is not retried automatically); another gets the fallback, never a second copy.
            Ended::NoAnswer {
                failure: TrafficFailure::Reset,
                body_sent,
                reused: true,
            } => match (
                self.may_repeat && (!body_sent || self.repeatable()),
                body_sent,
            ) {
                (true, _) => decide(None, Then::SameBackend),
                (false, false) => decide(None, Then::GiveUp(GiveUp::AttemptsExhausted)),
                // A body that went out and broke the connection: as on a fresh one.
                (false, true) => decide(
                    Some(Attempt::Broken(TrafficFailure::Reset)),
                    Then::GiveUp(GiveUp::AttemptsExhausted),
                ),
            },
            Ended::NoAnswer {
                failure, body_sent, ..
            } => {
                let report = Some(Attempt::Broken(failure));
                let again = self.repeatable() || (self.may_repeat && !body_sent);
                match again {
                    true => decide(report, Then::Next(RetryCause::Failed(failure))),
                    false => decide(report, Then::GiveUp(GiveUp::AttemptsExhausted)),
                }
            }
            Ended::Answered(status) if self.retry_on_status.contains(&status) => {
                let report = Some(Attempt::RetryableStatus);
                match self.hold().contains(&status) {
                    true => decide(
                        report,
                        Then::HoldAndNext(RetryCause::Failed(TrafficFailure::BadStatus)),
                    ),
                    false => decide(report, Then::Relay),
                }
            }
            Ended::Answered(_) => decide(Some(Attempt::Answered), Then::Relay),
            Ended::Rescued => decide(None, Then::Next(RetryCause::Rescued)),
            Ended::VisitorGone => decide(None, Then::Close),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestBody::*;
    use TrafficFailure::*;

    const STATUSES: &[u16] = &[502, 503, 504];

    /// A GET (may be sent again) and a POST (may not), each with a body as given.
    fn get(body: RequestBody) -> Failover<'static> {
        Failover::new(true, body, STATUSES)
    }
    fn post(body: RequestBody) -> Failover<'static> {
        Failover::new(false, body, STATUSES)
    }

    fn no_answer(failure: TrafficFailure, body_sent: bool, reused: bool) -> Ended {
        Ended::NoAnswer {
            failure,
            body_sent,
            reused,
        }
    }

    /// Which requests may go on a connection another visitor connection left open.
    #[test]
    fn a_spare_connection_for_what_may_go_again_or_a_kept_visitor() {
        let cases: &[(&str, bool, RequestBody, bool, bool)] = &[
            ("GET, first request", true, RequestBody::None, true, true),
            (
                "GET, small body read whole",
                true,
                RequestBody::Buffered,
                true,
                true,
            ),
            (
                "GET, body streamed",
                true,
                RequestBody::Streamed,
                true,
                false,
            ),
            ("POST, first request", false, RequestBody::None, true, false),
            (
                "POST with a body, first",
                false,
                RequestBody::Buffered,
                true,
                false,
            ),
            (
                "POST, a later request",
                false,
                RequestBody::Streamed,
                false,
                true,
            ),
            ("GET, a later request", true, RequestBody::None, false, true),
        ];
        for (name, may_repeat, body, first, takes) in cases {
            let failover = Failover::new(*may_repeat, *body, STATUSES);
            assert_eq!(failover.takes_spare(*first), *takes, "{name}");
        }
    }

    /// The README's failover steps, row by row.
    #[test]
    fn the_failover_steps_as_a_table() {
        use Then::*;
        let failed = |kind| Next(RetryCause::Failed(kind));
        let exhausted = GiveUp(crate::attempts::GiveUp::AttemptsExhausted);
        let held = HoldAndNext(RetryCause::Failed(BadStatus));
        let cases: &[(&str, Failover, Ended, Option<Attempt>, Then)] = &[
            // Step 3: a failed connect goes on whatever the request.
            (
                "refused GET",
                get(None),
                Ended::ConnectFailed(Refused),
                Some(Attempt::ConnectFailed(Refused)),
                failed(Refused),
            ),
            (
                "refused POST with a body",
                post(Streamed),
                Ended::ConnectFailed(Refused),
                Some(Attempt::ConnectFailed(Refused)),
                failed(Refused),
            ),
            (
                "connect timeout",
                post(None),
                Ended::ConnectFailed(Timeout),
                Some(Attempt::ConnectFailed(Timeout)),
                failed(Timeout),
            ),
            // The gateway's own shortage is nobody's failure: the fallback at once.
            (
                "out of descriptors",
                get(None),
                Ended::Local(LocalError::Descriptors),
                Option::None,
                GiveUp(crate::attempts::GiveUp::Local),
            ),
            (
                "out of ports, POST",
                post(Streamed),
                Ended::Local(LocalError::Ports),
                Option::None,
                GiveUp(crate::attempts::GiveUp::Local),
            ),
            // A full backend is passed over and costs it nothing.
            (
                "full",
                post(Streamed),
                Ended::Full,
                Option::None,
                Next(RetryCause::Busy),
            ),
            // Step 8: a kept connection closed meanwhile: again on a fresh one, unreported.
            (
                "kept, closed",
                get(None),
                no_answer(Reset, false, true),
                Option::None,
                SameBackend,
            ),
            // A request that may not be repeated is never sent twice: it may have been taken.
            (
                "kept, closed, POST head only",
                post(None),
                no_answer(Reset, false, true),
                Option::None,
                exhausted,
            ),
            (
                "kept, closed, POST body not yet sent",
                post(Streamed),
                no_answer(Reset, false, true),
                Option::None,
                exhausted,
            ),
            (
                "kept, closed, GET streamed body not yet sent",
                get(Streamed),
                no_answer(Reset, false, true),
                Option::None,
                SameBackend,
            ),
            (
                "kept, closed, buffered body",
                get(Buffered),
                no_answer(Reset, true, true),
                Option::None,
                SameBackend,
            ),
            (
                "kept, closed, streamed body gone",
                post(Streamed),
                no_answer(Reset, true, true),
                Some(Attempt::Broken(Reset)),
                exhausted,
            ),
            (
                "kept, closed, GET's streamed body gone",
                get(Streamed),
                no_answer(Reset, true, true),
                Some(Attempt::Broken(Reset)),
                exhausted,
            ),
            (
                "kept, silent: a real timeout",
                get(None),
                no_answer(Timeout, false, true),
                Some(Attempt::Broken(Timeout)),
                failed(Timeout),
            ),
            // A fresh connection that breaks is the backend's failure.
            (
                "fresh, reset, GET",
                get(None),
                no_answer(Reset, false, false),
                Some(Attempt::Broken(Reset)),
                failed(Reset),
            ),
            (
                "fresh, not HTTP, GET",
                get(None),
                no_answer(BadResponse, false, false),
                Some(Attempt::Broken(BadResponse)),
                failed(BadResponse),
            ),
            (
                "fresh, reset, POST",
                post(None),
                no_answer(Reset, false, false),
                Some(Attempt::Broken(Reset)),
                exhausted,
            ),
            (
                "fresh, silent, POST",
                post(Streamed),
                no_answer(Timeout, true, false),
                Some(Attempt::Broken(Timeout)),
                exhausted,
            ),
            // Step 9: a GET whose body streamed cannot go again; one read whole can.
            (
                "GET, streamed body sent",
                get(Streamed),
                no_answer(Reset, true, false),
                Some(Attempt::Broken(Reset)),
                exhausted,
            ),
            (
                "GET, streamed body not yet sent",
                get(Streamed),
                no_answer(Reset, false, false),
                Some(Attempt::Broken(Reset)),
                failed(Reset),
            ),
            (
                "GET, buffered body",
                get(Buffered),
                no_answer(Reset, true, false),
                Some(Attempt::Broken(Reset)),
                failed(Reset),
            ),
            // Step 10: 502/503/504 held back for a request that may go again, else passed on.
            (
                "503 to a GET",
                get(None),
                Ended::Answered(503),
                Some(Attempt::RetryableStatus),
                held,
            ),
            (
                "503 to a buffered PUT",
                get(Buffered),
                Ended::Answered(503),
                Some(Attempt::RetryableStatus),
                held,
            ),
            (
                "503 to a POST",
                post(None),
                Ended::Answered(503),
                Some(Attempt::RetryableStatus),
                Relay,
            ),
            (
                "503 to a streamed GET",
                get(Streamed),
                Ended::Answered(503),
                Some(Attempt::RetryableStatus),
                Relay,
            ),
            // Step 15: any other answer is an answer, a 4xx too.
            (
                "200",
                get(None),
                Ended::Answered(200),
                Some(Attempt::Answered),
                Relay,
            ),
            (
                "413 to an upload",
                post(Streamed),
                Ended::Answered(413),
                Some(Attempt::Answered),
                Relay,
            ),
            (
                "500 is not retried by default",
                get(None),
                Ended::Answered(500),
                Some(Attempt::Answered),
                Relay,
            ),
            // Step 12: rescued from a backend taken out.
            (
                "rescued",
                get(None),
                Ended::Rescued,
                Option::None,
                Next(RetryCause::Rescued),
            ),
            // The visitor's side: nothing the backend did.
            (
                "visitor gone",
                post(Streamed),
                Ended::VisitorGone,
                Option::None,
                Close,
            ),
        ];
        for (what, failover, ended, report, then) in cases {
            let d = failover.after(*ended);
            assert_eq!((d.report, d.then), (*report, *then), "{what}");
        }
    }

    #[test]
    fn what_may_go_again() {
        assert!(get(None).repeatable() && get(Buffered).repeatable());
        assert!(!get(Streamed).repeatable() && !post(None).repeatable());
        assert_eq!(get(None).hold(), STATUSES);
        assert!(post(None).hold().is_empty() && get(Streamed).hold().is_empty());
        assert!(get(None).rescuable() && !post(None).rescuable());
    }
}
