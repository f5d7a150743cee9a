//! The HTTPS listeners' TLS toward Cloudflare: certificates chosen by the name the client asks
//! for (SNI) with a default, Authenticated Origin Pulls (client certificates checked against a
//! CA, in `log` or `require` mode), and each certificate's expiry. Built at start and at every
//! reload: a certificate that does not load, does not match its key or has expired is refused
//! with its file and the reason, and the running one goes on serving.

use holdfast_config::{Alpn, ListenerTls, OriginPulls, PullMode};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::X509;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::aws_lc_rs::Ticketer;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use smallvec::SmallVec;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

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
    /// The chain and key as the listeners' TLS serves them.
    certified: Arc<CertifiedKey>,
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
    let der = |e: openssl::error::ErrorStack| format!("{file}: {e}");
    let chain_der = chain
        .iter()
        .map(|c| c.to_der().map(CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(der)?;
    let key_der = PrivatePkcs8KeyDer::from(key_pem.private_key_to_pkcs8().map_err(der)?);
    let certified = CertifiedKey::from_der(chain_der, PrivateKeyDer::Pkcs8(key_der), &provider())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok(Certificate {
        file,
        names,
        not_after: unix(leaf.not_after()).unwrap_or(0),
        chain,
        certified: Arc::new(certified),
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

/// The crypto every listener uses: rustls' defaults on aws-lc-rs (TLS 1.3's three AEAD suites,
/// TLS 1.2's ECDHE with AES-GCM or ChaCha20-Poly1305: Mozilla's "intermediate" profile without
/// its finite-field Diffie-Hellman, which Cloudflare does not use).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: SUITES.to_vec(),
                ..rustls::crypto::aws_lc_rs::default_provider()
            })
        })
        .clone()
}

/// The cipher suites, in the order the listeners choose by (`ignore_client_order`: the
/// client's order does not count): Mozilla's for servers ("intermediate"), AES-128-GCM first.
/// Its key schedule hashes with SHA-256 where AES-256-GCM's uses SHA-384, which was a fifth of
/// holdfast's CPU time on a full TLS 1.3 handshake (BENCHMARKS.md).
static SUITES: &[rustls::SupportedCipherSuite] = {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    &[
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
};

/// Every certificate of `tls`, the default first.
pub fn load_all(tls: &ListenerTls) -> Result<Vec<Certificate>, String> {
    std::iter::once((&tls.cert, &tls.key))
        .chain(tls.more.iter().map(|c| (&c.cert, &c.key)))
        .map(|(cert, key)| load(cert, key))
        .collect()
}

/// Our first protocol that the client offers too.
pub fn select_alpn(ours: &[Alpn], theirs: &[&[u8]]) -> Option<Alpn> {
    ours.iter()
        .copied()
        .find(|a| theirs.contains(&a.id().as_bytes()))
}

/// The certificate for the name a client asks for (SNI): one naming it exactly, then one with a
/// wildcard for it, else the default (as is a client that names none).
#[derive(Debug)]
struct ByName {
    default: Arc<CertifiedKey>,
    others: Vec<Arc<CertifiedKey>>,
    names: Vec<Vec<String>>,
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|name| pick(&self.names, name));
        Some(
            named
                .and_then(|i| self.others.get(i))
                .unwrap_or(&self.default)
                .clone(),
        )
    }
}

/// Authenticated Origin Pulls in `log` mode: a client certificate is asked for and its
/// signature of the handshake checked, but its chain is not held against the connection (the
/// chain is checked after the handshake, [`Acceptor::client_certificate`], to be logged).
#[derive(Debug)]
struct LogOnly(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for LogOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The check of client certificates against the CA file of `pulls`.
fn client_verifier(pulls: &OriginPulls) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let ca = pulls.ca.display().to_string();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&pulls.ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{ca}: {e}"))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{ca}: not a CA certificate: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("{ca}: {e}"))
}

/// The TLS of one HTTPS listener: its certificates (by SNI), what it offers by ALPN and the
/// client certificates it asks for.
pub struct Acceptor {
    /// One config for each answer ALPN can give: none, then each of ours.
    configs: Vec<(Option<Alpn>, Arc<ServerConfig>)>,
    alpn: Vec<Alpn>,
    /// In `log` mode, the check a client's certificate is put to after the handshake.
    log_only: Option<Arc<dyn ClientCertVerifier>>,
}

/// What a completed handshake says of the client's certificate.
pub struct ClientCertificate {
    pub shown: bool,
    /// Why it does not verify (`log` mode: a `require` listener has refused it already).
    pub verify_error: Option<String>,
}

impl Acceptor {
    /// The TLS of one HTTPS listener: the default certificate, the others chosen by SNI;
    /// `alpn` offered in that order of preference; the client certificates of `pulls`.
    pub fn new(
        certs: &[Certificate],
        pulls: Option<&OriginPulls>,
        alpn: &[Alpn],
    ) -> Result<Acceptor, String> {
        let Some((default, others)) = certs.split_first() else {
            return Err("no certificate".to_string());
        };
        let resolver = Arc::new(ByName {
            default: default.certified.clone(),
            others: others.iter().map(|c| c.certified.clone()).collect(),
            names: others.iter().map(|c| c.names.clone()).collect(),
        });
        // What the handshake checks of a client's certificate, and what is checked after it.
        let (verifier, log_only): (Option<Arc<dyn ClientCertVerifier>>, _) = match pulls {
            None => (None, None),
            Some(p) => {
                let check = client_verifier(p)?;
                match p.mode {
                    PullMode::Require => (Some(check), None),
                    PullMode::Log => (Some(Arc::new(LogOnly(check.clone()))), Some(check)),
                }
            }
        };
        // Resumption by tickets (stateless, keys rotated every 6 hours), as OpenSSL did: the
        // same keys for every config of the listener.
        let tickets = Ticketer::new().map_err(|e| e.to_string())?;
        let config = |answer: Option<Alpn>| -> Result<Arc<ServerConfig>, String> {
            let b = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?;
            let b = match &verifier {
                Some(v) => b.with_client_cert_verifier(v.clone()),
                None => b.with_no_client_auth(),
            };
            let mut config = b.with_cert_resolver(resolver.clone());
            config.alpn_protocols = answer
                .map(|a| a.id().as_bytes().to_vec())
                .into_iter()
                .collect();
            config.ticketer = tickets.clone();
            // One ticket per full handshake, not rustls's two: a client resumes with one, and
            // each costs an encryption and a write (a handshake per request: 1.10x, A/B).
            config.send_tls13_tickets = 1;
            config.ignore_client_order = true;
            Ok(Arc::new(config))
        };
        let configs = std::iter::once(None)
            .chain(alpn.iter().copied().map(Some))
            .map(|answer| config(answer).map(|c| (answer, c)))
            .collect::<Result<_, _>>()?;
        Ok(Acceptor {
            configs,
            alpn: alpn.to_vec(),
            log_only,
        })
    }

    /// The handshake on `tcp`. ALPN is decided on the client's hello: the first of ours it
    /// offers, or no answer (and HTTP/1.1) when it offers none of ours.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<Box<Tls>> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let answer = start
            .client_hello()
            .alpn()
            .and_then(|offered| select_alpn(&self.alpn, &offered.collect::<SmallVec<[_; 4]>>()));
        let config = self
            .configs
            .iter()
            .find(|(a, _)| *a == answer)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| std::io::Error::other("no TLS config for the protocol agreed"))?;
        start.into_stream(config).await.map(|s| Box::new(Tls(s)))
    }

    /// What the client's certificate was worth, on a completed handshake.
    pub fn client_certificate(&self, tls: &ServerConnection) -> ClientCertificate {
        let Some((leaf, chain)) = tls.peer_certificates().and_then(|c| c.split_first()) else {
            return ClientCertificate {
                shown: false,
                verify_error: None,
            };
        };
        let verify_error = self.log_only.as_ref().and_then(|check| {
            check
                .verify_client_cert(leaf, chain, UnixTime::now())
                .err()
                .map(|e| e.to_string())
        });
        ClientCertificate {
            shown: true,
            verify_error,
        }
    }
}

/// A visitor's TLS connection. A read returns what one read from the socket brought (the
/// records it held): `tokio-rustls` fills the whole buffer it is given, which costs a second
/// read of the socket, answered "would block", on every request.
pub struct Tls(TlsStream<TcpStream>);

impl Tls {
    pub fn connection(&self) -> &ServerConnection {
        self.0.get_ref().1
    }
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut inner = Pin::new(&mut self.0);
        let data = std::task::ready!(inner.as_mut().poll_fill_buf(cx))?;
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        inner.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
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
        type Case<'a> = (&'a [Alpn], &'a [&'a [u8]], Option<Alpn>);
        let cases: [Case; 6] = [
            (&both, &[b"http/1.1", b"h2"], Some(Alpn::H2)),
            (&both, &[b"http/1.1"], Some(Alpn::Http11)),
            (&[Alpn::Http11], &[b"h2", b"http/1.1"], Some(Alpn::Http11)),
            (&[Alpn::H2], &[b"http/1.1"], None),
            (&both, &[b"spdy/3"], None),
            (&both, &[], None),
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
