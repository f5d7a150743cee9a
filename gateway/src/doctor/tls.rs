//! The certificates of the HTTPS listeners: on disk (readable, the key matching, not expired,
//! the names the config routes covered) and as served (the same as on disk, or renewed but not
//! loaded). Judged by [`judge`], a plain function with its table test; [`served`] asks a
//! listener.

use super::report::{Finding, Layer};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Under this many days left, a certificate is warned about.
pub const WARN_DAYS: i64 = 14;

/// What doctor found of one certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    pub file: String,
    /// Its names and expiry (Unix seconds), or why it cannot be used.
    pub loaded: Result<(Vec<String>, i64), String>,
    /// Whether a listener serves this very certificate: `None` when not asked or no answer.
    pub served_same: Option<bool>,
}

/// What one certificate means: `now` in Unix seconds; `uncovered` the routed host names no
/// certificate of the config holds (reported once, with the default certificate).
pub fn judge(c: &OnDisk, now: i64, uncovered: &[String]) -> Vec<Finding> {
    let check = format!("certificate {}", c.file);
    let (names, not_after) = match &c.loaded {
        Err(why) if why.contains("expired") => {
            return vec![Finding::fail(
                Layer::Tls,
                check,
                Some(526),
                why.clone(),
                "renew it (certbot renew, or a new Cloudflare Origin CA certificate) and reload",
            )]
        }
        Err(why) => {
            return vec![Finding::fail(
                Layer::Tls,
                check,
                Some(525),
                format!("{why}: HTTPS cannot start with it (the next restart fails)"),
                "fix the file's path, permissions or key (the key must be this certificate's), then reload",
            )]
        }
        Ok(loaded) => loaded,
    };
    let days = (not_after - now) / 86_400;
    let mut out = vec![match days < WARN_DAYS {
        true => Finding::warn(
            Layer::Tls,
            check.clone(),
            format!("{}: expires in {days} days", names.join(", ")),
            "renew it now: once expired, Full (strict) shows 526",
        )
        .code(526),
        false => Finding::ok(
            Layer::Tls,
            check.clone(),
            format!("{}: {days} days left", names.join(", ")),
        ),
    }];
    match c.served_same {
        Some(false) => out.push(Finding::warn(
            Layer::Tls,
            format!("{check} served"),
            "the listener serves another certificate than the file holds (renewed but not loaded?)",
            "holdfast reload (holdfast picks up changed files by itself: if it did not, its log says why)",
        )),
        Some(true) => out.push(Finding::ok(
            Layer::Tls,
            format!("{check} served"),
            "the listener serves this very certificate",
        )),
        None => {}
    }
    if !uncovered.is_empty() {
        out.push(Finding::warn(
            Layer::Tls,
            "names",
            format!("no certificate holds {}", uncovered.join(", ")),
            "add a certificate for them (listen.certificates): under Full (strict), Cloudflare shows 526 for those sites",
        ).code(526));
    }
    out
}

/// The leaf certificate a listener at `addr` presents for `sni`, DER-encoded.
pub fn served(addr: SocketAddr, sni: &str, timeout: Duration) -> Option<Vec<u8>> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let mut config = connector.configure().ok()?;
    config.set_verify_hostname(false);
    let mut tls = config.connect(sni, tcp).ok()?;
    let der = tls.ssl().peer_certificate()?.to_der().ok();
    let _ = tls.shutdown();
    der
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Verdict;

    #[test]
    fn certificate_rows() {
        let now = 1_800_000_000;
        let day = 86_400;
        let cert = |loaded: Result<(Vec<String>, i64), String>, served| OnDisk {
            file: "/etc/holdfast/origin.pem".into(),
            loaded,
            served_same: served,
        };
        let names = vec!["example.com".to_string()];
        // (certificate, uncovered names, verdicts in order, codes in order)
        type Row = (OnDisk, Vec<String>, Vec<Verdict>, Vec<Option<u16>>);
        let rows: [Row; 7] = [
            (
                cert(Ok((names.clone(), now + 90 * day)), Some(true)),
                vec![],
                vec![Verdict::Ok, Verdict::Ok],
                vec![None, None],
            ),
            (
                cert(Ok((names.clone(), now + 90 * day)), None),
                vec![],
                vec![Verdict::Ok],
                vec![None],
            ),
            (
                cert(Ok((names.clone(), now + 5 * day)), None),
                vec![],
                vec![Verdict::Warn],
                vec![Some(526)],
            ),
            (
                cert(Ok((names.clone(), now + 90 * day)), Some(false)),
                vec![],
                vec![Verdict::Ok, Verdict::Warn],
                vec![None, None],
            ),
            (
                cert(Err("origin.pem: expired on Jan 1 2026".into()), None),
                vec![],
                vec![Verdict::Fail],
                vec![Some(526)],
            ),
            (
                cert(
                    Err("origin.pem: the key origin.key is not this certificate's".into()),
                    None,
                ),
                vec![],
                vec![Verdict::Fail],
                vec![Some(525)],
            ),
            (
                cert(Ok((names, now + 90 * day)), None),
                vec!["shop.example.net".into()],
                vec![Verdict::Ok, Verdict::Warn],
                vec![None, Some(526)],
            ),
        ];
        for (c, uncovered, verdicts, codes) in rows {
            let found = judge(&c, now, &uncovered);
            let got: Vec<Verdict> = found.iter().map(|f| f.verdict).collect();
            let got_codes: Vec<Option<u16>> = found.iter().map(|f| f.code).collect();
            assert_eq!((got, got_codes), (verdicts, codes), "{found:?}");
        }
    }
}
