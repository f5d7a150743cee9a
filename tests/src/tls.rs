//! TLS for test backends: a self-signed certificate made at run time.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// A TLS server setup with a fresh self-signed certificate for `host` (trusted by nobody).
pub fn self_signed(host: &str) -> SslAcceptor {
    let (cert, key) = certificate(host);
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    acceptor.set_private_key(&key).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    acceptor.check_private_key().unwrap();
    acceptor.build()
}

/// A fresh self-signed certificate for `host` and its key, as PEM.
pub fn self_signed_pem(host: &str) -> (Vec<u8>, Vec<u8>) {
    let (cert, key) = certificate(host);
    (
        cert.to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

fn certificate(host: &str) -> (X509, PKey<Private>) {
    build(host, None, false)
}

/// A self-signed certificate for `host` that expires in `days` days (expired when negative),
/// and its key, as PEM.
pub fn expiring_pem(host: &str, days: i64) -> (Vec<u8>, Vec<u8>) {
    let (cert, key) = build_for(host, None, false, days);
    (
        cert.to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

/// A certificate for `name` (with it as a DNS name, unless `ca`), a fresh key, valid from now
/// for 30 days; self-signed, or signed by `issuer`. A `ca` may sign others.
fn build(name: &str, issuer: Option<&(X509, PKey<Private>)>, ca: bool) -> (X509, PKey<Private>) {
    build_for(name, issuer, ca, 30)
}

/// [`build`], valid for `days` days.
fn build_for(
    name: &str,
    issuer: Option<&(X509, PKey<Private>)>,
    ca: bool,
    days: i64,
) -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let mut cert = X509Builder::new().unwrap();
    cert.set_version(2).unwrap();
    let serial = BigNum::from_u32(fastrand::u32(1..))
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    cert.set_serial_number(&serial).unwrap();
    cert.set_subject_name(&subject).unwrap();
    match issuer {
        Some((issuer, _)) => cert.set_issuer_name(issuer.subject_name()).unwrap(),
        None => cert.set_issuer_name(&subject).unwrap(),
    }
    cert.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let from = now.min(now + days * 86_400) - 86_400;
    cert.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::from_unix(now + days * 86_400).unwrap())
        .unwrap();
    if ca {
        cert.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        let usage = KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build();
        cert.append_extension(usage.unwrap()).unwrap();
    } else {
        let context = cert.x509v3_context(issuer.map(|i| &*i.0), None);
        let san = SubjectAlternativeName::new()
            .dns(name)
            .build(&context)
            .unwrap();
        cert.append_extension(san).unwrap();
    }
    let signer = issuer.map_or(&key, |i| &i.1);
    cert.sign(signer, MessageDigest::sha256()).unwrap();
    (cert.build(), key)
}

/// Sends one raw HTTP/1.1 request over TLS (any certificate accepted) and returns the whole
/// answer as text; the request should ask for `Connection: close`.
pub async fn https_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_, mut stream) = handshake(addr, Some("localhost"), None).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The certificate a TLS listener presents now (DER), from a fresh handshake.
pub async fn presented_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    handshake(addr, Some("localhost"), None).await.unwrap().0
}

/// A CA for tests: its certificate and key.
pub fn ca(name: &str) -> (X509, PKey<Private>) {
    build(name, None, true)
}

/// A certificate for `host` signed by `ca` (a leaf, for a server or a client), and its key.
pub fn signed(host: &str, ca: &(X509, PKey<Private>)) -> (X509, PKey<Private>) {
    build(host, Some(ca), false)
}

/// PEM of a certificate and of a key.
pub fn pem(pair: &(X509, PKey<Private>)) -> (Vec<u8>, Vec<u8>) {
    (
        pair.0.to_pem().unwrap(),
        pair.1.private_key_to_pem_pkcs8().unwrap(),
    )
}

/// A TLS handshake with `addr`, naming `sni` (none when `None`) and presenting `client` (a
/// certificate and key) if given. Returns the certificate the server presented (DER), or the
/// handshake's error.
pub async fn handshake(
    addr: std::net::SocketAddr,
    sni: Option<&str>,
    client: Option<&(X509, PKey<Private>)>,
) -> Result<(Vec<u8>, tokio_openssl::SslStream<tokio::net::TcpStream>), String> {
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    if let Some((cert, key)) = client {
        connector.set_certificate(cert).unwrap();
        connector.set_private_key(key).unwrap();
    }
    let mut config = connector.build().configure().unwrap();
    config.set_use_server_name_indication(sni.is_some());
    config.set_verify_hostname(false);
    let ssl = config.into_ssl(sni.unwrap_or("localhost")).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let presented = stream
        .ssl()
        .peer_certificate()
        .map(|c| c.to_der().unwrap())
        .unwrap_or_default();
    Ok((presented, stream))
}
