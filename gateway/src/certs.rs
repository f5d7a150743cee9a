//! The HTTPS listeners' TLS toward Cloudflare: certificates chosen by the name the client asks
//! for (SNI) with a default, Authenticated Origin Pulls (client certificates checked against a
//! CA, in `log` or `require` mode), and each certificate's expiry. Built at start and at every
//! reload: a certificate that does not load, does not match its key or has expired is refused
//! with its file and the reason, and the running one goes on serving.

use holdfast_config::{Alpn, ListenerTls, OriginPulls, PullMode};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    AlpnError, NameType, SniError, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod,
    SslVerifyMode,
};
use openssl::x509::{X509Name, X509};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A certificate expiring within this long is warned about in the log.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// One loaded certificate: its chain and key, the names it holds, when it expires.
#[derive(Clone)]
pub struct Certificate {
    pub file: String,
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl Certificate {
    /// The leaf certificate, DER-encoded (to compare with the one a listener presents).
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        self.chain.first().and_then(|leaf| leaf.to_der().ok())
    }

    /// The chain as the file holds it, leaf first.
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("file", &self.file)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Seconds since the Unix epoch of an ASN.1 time.
fn unix(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Loads `cert` (a PEM chain, leaf first) and `key`, checking that they match and that the
/// leaf has not expired.
pub fn load(cert: &Path, key: &Path) -> Result<Certificate, String> {
    let file = cert.display().to_string();
    let pem = std::fs::read(cert).map_err(|e| format!("{file}: cannot read: {e}"))?;
    let chain =
        X509::stack_from_pem(&pem).map_err(|e| format!("{file}: not a PEM certificate: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{file}: no certificate in it"));
    };
    let key_text =
        std::fs::read(key).map_err(|e| format!("{}: cannot read: {e}", key.display()))?;
    let key_pem = PKey::private_key_from_pem(&key_text)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key_pem))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "{file}: the key {} is not this certificate's",
            key.display()
        ));
    }
    let now = Asn1Time::days_from_now(0).map_err(|e| e.to_string())?;
    if leaf.not_after() < now {
        return Err(format!("{file}: expired on {}", leaf.not_after()));
    }
    let mut names: Vec<String> = leaf
        .subject_alt_names()
        .into_iter()
        .flatten()
        .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
        .collect();
    if names.is_empty() {
        names.extend(
            leaf.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase())),
        );
    }
    Ok(Certificate {
        file,
        names,
        not_after: unix(leaf.not_after()).unwrap_or(0),
        chain,
        key: key_pem,
    })
}

/// Whether a certificate for `pattern` (`example.com`, `*.example.com`) covers `name`: a
/// wildcard stands for exactly one label.
pub fn covers(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Which of the certificates holding `names` serves `name`: one that names it exactly first,
/// then one with a wildcard for it.
pub fn pick(names: &[Vec<String>], name: &str) -> Option<usize> {
    let exact = names
        .iter()
        .position(|n| n.iter().any(|n| !n.starts_with("*.") && covers(n, name)));
    exact.or_else(|| names.iter().position(|n| n.iter().any(|n| covers(n, name))))
}

/// Mozilla's "intermediate" profile (TLS 1.2 and 1.3) with `cert`, records read ahead, and the
/// client-certificate check of `pulls`.
fn builder(
    cert: &Certificate,
    pulls: Option<&OriginPulls>,
    alpn: &[Alpn],
) -> Result<SslAcceptorBuilder, String> {
    let e = |e: openssl::error::ErrorStack| format!("{}: {e}", cert.file);
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(e)?;
    let mut chain = cert.chain.iter();
    if let Some(leaf) = chain.next() {
        b.set_certificate(leaf).map_err(e)?;
    }
    for extra in chain {
        b.add_extra_chain_cert(extra.clone()).map_err(e)?;
    }
    b.set_private_key(&cert.key).map_err(e)?;
    b.check_private_key().map_err(e)?;
    b.set_read_ahead(true);
    // The first protocol of ours the client also offers; a client offering none of them gets
    // no ALPN answer and speaks HTTP/1.1.
    let ours = alpn.to_vec();
    b.set_alpn_select_callback(move |_, theirs| select_alpn(&ours, theirs).ok_or(AlpnError::NOACK));
    if let Some(pulls) = pulls {
        let ca = pulls.ca.display().to_string();
        let bad = |e: openssl::error::ErrorStack| format!("{ca}: {e}");
        b.set_ca_file(&pulls.ca).map_err(bad)?;
        let names = X509Name::load_client_ca_file(&pulls.ca).map_err(bad)?;
        b.set_client_ca_list(names);
        match pulls.mode {
            PullMode::Require => {
                b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT)
            }
            // Verified (the result is looked at after the handshake), never refused.
            PullMode::Log => b.set_verify_callback(SslVerifyMode::PEER, |_, _| true),
        }
    }
    Ok(b)
}

/// Every certificate of `tls`, the default first.
pub fn load_all(tls: &ListenerTls) -> Result<Vec<Certificate>, String> {
    std::iter::once((&tls.cert, &tls.key))
        .chain(tls.more.iter().map(|c| (&c.cert, &c.key)))
        .map(|(cert, key)| load(cert, key))
        .collect()
}

/// Our first protocol that the client offers too, from the client's list in ALPN's wire
/// format (each protocol's length, then its name).
pub fn select_alpn<'c>(ours: &[Alpn], theirs: &'c [u8]) -> Option<&'c [u8]> {
    let offered = || {
        let mut rest = theirs;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (name, after) = tail.split_at_checked(usize::from(len))?;
            rest = after;
            Some(name)
        })
    };
    ours.iter()
        .find_map(|a| offered().find(|o| *o == a.id().as_bytes()))
}

/// The TLS of one HTTPS listener: the default certificate, the others chosen by SNI; `alpn`
/// offered in that order of preference.
pub fn acceptor(
    certs: &[Certificate],
    pulls: Option<&OriginPulls>,
    alpn: &[Alpn],
) -> Result<SslAcceptor, String> {
    let Some(default) = certs.first() else {
        return Err("no certificate".to_string());
    };
    let others: Vec<SslContext> = certs[1..]
        .iter()
        .map(|c| builder(c, pulls, alpn).map(|b| b.build().into_context()))
        .collect::<Result<_, _>>()?;
    let mut b = builder(default, pulls, alpn)?;
    if !others.is_empty() {
        let names: Arc<Vec<Vec<String>>> =
            Arc::new(certs[1..].iter().map(|c| c.names.clone()).collect());
        b.set_servername_callback(move |ssl, _| {
            let Some(name) = ssl.servername(NameType::HOST_NAME).map(str::to_string) else {
                return Ok(()); // no SNI: the default
            };
            if let Some(ctx) = pick(&names, &name).and_then(|i| others.get(i)) {
                ssl.set_ssl_context(ctx)
                    .map_err(|_| SniError::ALERT_FATAL)?;
            }
            Ok(())
        });
    }
    Ok(b.build())
}

/// Certificates made for tests.
#[cfg(test)]
pub(crate) mod testing {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::{X509Builder, X509NameBuilder, X509};

    /// A certificate for `name` (its CN), signed by `issuer` (self-signed without one), valid
    /// from `from` to `to` (Unix seconds); and its key.
    pub fn build(
        name: &str,
        issuer: Option<&(X509, PKey<Private>)>,
        from: i64,
        to: i64,
    ) -> (X509, PKey<Private>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
        let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("key");
        let mut subject = X509NameBuilder::new().expect("name");
        subject.append_entry_by_text("CN", name).expect("cn");
        let subject = subject.build();
        let mut b = X509Builder::new().expect("builder");
        b.set_version(2).expect("version");
        b.set_subject_name(&subject).expect("subject");
        let (issuer_name, signer) = match issuer {
            Some((cert, key)) => (cert.subject_name().to_owned().expect("name"), key),
            None => (subject.to_owned().expect("name"), &key),
        };
        b.set_issuer_name(&issuer_name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::from_unix(from).expect("time"))
            .expect("from");
        b.set_not_after(&Asn1Time::from_unix(to).expect("time"))
            .expect("to");
        b.sign(signer, MessageDigest::sha256()).expect("sign");
        (b.build(), key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_follows_our_order() {
        let both = [Alpn::H2, Alpn::Http11];
        type Case<'a> = (&'a [Alpn], &'a [u8], Option<&'a [u8]>);
        let cases: [Case; 6] = [
            (&both, b"\x08http/1.1\x02h2", Some(b"h2")),
            (&both, b"\x08http/1.1", Some(b"http/1.1")),
            (&[Alpn::Http11], b"\x02h2\x08http/1.1", Some(b"http/1.1")),
            (&[Alpn::H2], b"\x08http/1.1", None),
            (&both, b"\x06spdy/3", None),
            (&both, b"\x09http/1.1", None), // a length past the end
        ];
        for (ours, theirs, expected) in cases {
            assert_eq!(select_alpn(ours, theirs), expected, "{ours:?} {theirs:?}");
        }
    }

    #[test]
    fn names_and_wildcards() {
        // (pattern, name, covered)
        let table = [
            ("example.com", "example.com", true),
            ("example.com", "EXAMPLE.com", true),
            ("example.com", "www.example.com", false),
            ("*.example.com", "www.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
        ];
        for (pattern, name, covered) in table {
            assert_eq!(covers(pattern, name), covered, "{pattern} / {name}");
        }
    }

    #[test]
    fn an_exact_name_wins_over_a_wildcard() {
        let names = vec![
            vec!["*.example.com".to_string()],
            vec!["shop.example.com".to_string(), "example.com".to_string()],
            vec!["other.test".to_string()],
        ];
        // (asked for, the certificate)
        let table = [
            ("shop.example.com", Some(1)),
            ("www.example.com", Some(0)),
            ("example.com", Some(1)),
            ("other.test", Some(2)),
            ("nothing.test", None),
        ];
        for (name, want) in table {
            assert_eq!(pick(&names, name), want, "{name}");
        }
    }

    /// A self-signed certificate for `name` valid from `from` to `to` (Unix seconds), as PEM.
    fn certificate(name: &str, from: i64, to: i64) -> (Vec<u8>, Vec<u8>) {
        let (cert, key) = testing::build(name, None, from, to);
        (
            cert.to_pem().expect("pem"),
            key.private_key_to_pem_pkcs8().expect("key pem"),
        )
    }

    #[test]
    fn a_certificate_is_refused_expired_or_with_another_key() {
        let dir = std::env::temp_dir().join(format!("holdfast-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let (cert, key) = certificate("ok.test", now - 3600, now + 86_400);
        let (c, k) = (write("ok.pem", &cert), write("ok.key", &key));
        let loaded = load(&c, &k).expect("valid");
        assert_eq!(loaded.names, ["ok.test"]);
        assert!(
            (loaded.not_after - (now + 86_400)).abs() <= 1,
            "{}",
            loaded.not_after
        );

        let (old, old_key) = certificate("old.test", now - 7200, now - 3600);
        let err = load(&write("old.pem", &old), &write("old.key", &old_key)).expect_err("expired");
        assert!(err.contains("old.pem") && err.contains("expired"), "{err}");

        let err = load(&c, &write("other.key", &old_key)).expect_err("another key");
        assert!(err.contains("is not this certificate's"), "{err}");

        let err = load(&write("garbage.pem", b"garbage"), &k).expect_err("garbage");
        assert!(err.contains("garbage.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
