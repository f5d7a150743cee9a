//! Authenticated Origin Pulls: whether a TLS handshake on a listener that asks for Cloudflare's
//! client certificate shows a certificate that failed, and why. Counted and logged, whatever
//! the mode: `require` has refused the connection already (in the handshake), `log` serves it. A plain function with its table test.

/// How the handshake went, as far as the client's certificate goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Handshake<'a> {
    /// Completed: whether the client showed a certificate, and the verification's error if it
    /// did not verify.
    Done {
        certificate: bool,
        verify_error: Option<&'a str>,
    },
    /// Refused by TLS, for this reason.
    Refused(&'a rustls::Error),
    /// The connection failed under it (closed, reset) or the handshake did not complete in
    /// time.
    Failed,
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
        Handshake::Refused(rustls::Error::NoCertificatesPresented) => {
            Some("no client certificate".to_string())
        }
        // A server checks no certificate but its client's.
        Handshake::Refused(e @ rustls::Error::InvalidCertificate(_)) => Some(e.to_string()),
        // Anything else (the client refusing ours, no common protocol) is no failed pull.
        Handshake::Refused(_) => None,
        Handshake::Failed => None,
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
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let none = rustls::Error::NoCertificatesPresented;
        let theirs = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        let garbled = rustls::Error::DecryptError;
        let cases: &[(Handshake, Option<&str>)] = &[
            (done(true, None), None),
            (done(false, None), Some("no client certificate")),
            (
                done(true, Some("invalid peer certificate: UnknownIssuer")),
                Some("invalid peer certificate: UnknownIssuer"),
            ),
            (Handshake::Refused(&none), Some("no client certificate")),
            (
                Handshake::Refused(&unknown),
                Some("invalid peer certificate: UnknownIssuer"),
            ),
            (
                Handshake::Refused(&expired),
                Some("invalid peer certificate: Expired"),
            ),
            (Handshake::Refused(&theirs), None),
            (Handshake::Refused(&garbled), None),
            (Handshake::Failed, None),
        ];
        for (handshake, want) in cases {
            assert_eq!(failure(*handshake).as_deref(), *want, "{handshake:?}");
        }
    }
}
