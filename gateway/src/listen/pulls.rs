//! Authenticated Origin Pulls: whether a TLS handshake on a listener that asks for Cloudflare's
//! client certificate shows a certificate that failed, and why. Counted and logged, whatever
//! the mode: `require` has refused the connection already (in the handshake, or right after it
//! under TLS 1.3), `log` serves it. A plain function with its table test.

/// How the handshake went, as far as the client's certificate goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake<'a> {
    /// Completed: whether the client showed a certificate, and the verification's error if it
    /// did not verify.
    Done {
        certificate: bool,
        verify_error: Option<&'a str>,
    },
    /// Refused by TLS, with the reasons OpenSSL gave.
    Refused(&'a [&'a str]),
    /// Did not complete in time.
    TimedOut,
}

/// Why the client's certificate failed; `None` when it did not (or the handshake failed for
/// something else: a client that went away is no failed pull).
pub fn failure(handshake: Handshake<'_>) -> Option<String> {
    match handshake {
        Handshake::Done {
            certificate: false, ..
        } => Some("no client certificate".to_string()),
        Handshake::Done {
            verify_error: Some(why),
            ..
        } => Some(why.to_string()),
        Handshake::Done { .. } => None,
        Handshake::Refused(reasons) => reasons
            .iter()
            .find(|r| r.contains("certificate"))
            .map(|r| r.to_string()),
        Handshake::TimedOut => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_handshake_says_of_the_client_certificate() {
        let done = |certificate, verify_error| Handshake::Done {
            certificate,
            verify_error,
        };
        let cases: &[(Handshake, Option<&str>)] = &[
            (done(true, None), None),
            (done(false, None), Some("no client certificate")),
            (
                done(true, Some("unable to get local issuer certificate")),
                Some("unable to get local issuer certificate"),
            ),
            (
                Handshake::Refused(&["peer did not return a certificate"]),
                Some("peer did not return a certificate"),
            ),
            (
                Handshake::Refused(&["tlsv1 alert unknown ca", "certificate verify failed"]),
                Some("certificate verify failed"),
            ),
            (Handshake::Refused(&["unexpected eof while reading"]), None),
            (Handshake::Refused(&[]), None),
            (Handshake::TimedOut, None),
        ];
        for (handshake, want) in cases {
            assert_eq!(failure(*handshake).as_deref(), *want, "{handshake:?}");
        }
    }
}
