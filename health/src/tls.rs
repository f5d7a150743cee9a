//! TLS towards HTTPS backends, shared by the health probes and the data path: one client that
//! trusts the system's certificate store (or, for a backend with `tls_ca`, that file's CAs),
//! and a handshake that sends SNI and verifies the certificate as the backend's config says.

use holdfast_config::{BackendProtocol, BackendTls, CaFile};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Why a TLS handshake with a backend failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The connection itself failed (reset, closed) during the handshake.
    Io(io::Error),
    /// TLS failed: no TLS on the port, a certificate refused, no shared cipher.
    Tls(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Tls(why) => f.write_str(why),
        }
    }
}

/// A TLS client for backends.
#[derive(Clone, Default)]
pub struct TlsClient {
    /// The client trusting the system's store, made when a backend first needs it: loading the
    /// store costs about a megabyte, for nothing when no backend speaks TLS or each has its CA.
    system: Arc<OnceLock<Result<SslConnector, openssl::error::ErrorStack>>>,
    /// Clients trusting a CA file's certificates, by the file's bytes (built on first use).
    with_ca: Arc<Mutex<HashMap<Arc<[u8]>, SslConnector>>>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// A client trusting the system's certificate store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client for `ca`: one trusting that file's certificates only.
    fn connector(&self, ca: Option<&CaFile>) -> Result<SslConnector, String> {
        let Some(ca) = ca else {
            let system = self.system.get_or_init(|| {
                let mut builder = SslConnector::builder(SslMethod::tls_client())?;
                builder.set_default_verify_paths()?;
                Ok(builder.build())
            });
            return system
                .clone()
                .map_err(|e| format!("the system's certificate store: {e}"));
        };
        let mut cache = self
            .with_ca
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = cache.get(&ca.pem) {
            return Ok(c.clone());
        }
        let bad = |e: openssl::error::ErrorStack| format!("{}: {e}", ca.path.display());
        let mut store = X509StoreBuilder::new().map_err(bad)?;
        for cert in X509::stack_from_pem(&ca.pem).map_err(bad)? {
            store.add_cert(cert).map_err(bad)?;
        }
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(bad)?;
        builder.set_verify_cert_store(store.build()).map_err(bad)?;
        let connector = builder.build();
        cache.insert(ca.pem.clone(), connector.clone());
        Ok(connector)
    }

    /// Completes a handshake on `tcp`: SNI when `tls.sni` is set; chain and name verified
    /// unless `tls.verify` is off; ALPN `h2` offered to an HTTP/2 backend (and spoken whatever
    /// the backend picks, as Envoy and HAProxy do: the config says what it speaks).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        tls: &BackendTls,
        protocol: BackendProtocol,
    ) -> Result<SslStream<TcpStream>, HandshakeError> {
        let failed = |e: &dyn fmt::Display| HandshakeError::Tls(e.to_string());
        let connector = self.connector(tls.ca.as_ref()).map_err(|e| failed(&e))?;
        let mut config = connector.configure().map_err(|e| failed(&e))?;
        config.set_use_server_name_indication(!tls.sni.is_empty());
        config.set_verify_hostname(tls.verify && !tls.sni.is_empty());
        if !tls.verify {
            config.set_verify(SslVerifyMode::NONE);
        }
        if protocol == BackendProtocol::H2 {
            config.set_alpn_protos(b"\x02h2").map_err(|e| failed(&e))?;
        }
        let ssl = config.into_ssl(&tls.sni).map_err(|e| failed(&e))?;
        let mut stream = SslStream::new(ssl, tcp).map_err(|e| failed(&e))?;
        match Pin::new(&mut stream).connect().await {
            Ok(()) => Ok(stream),
            Err(e) => match e.into_io_error() {
                Ok(io) => Err(HandshakeError::Io(io)),
                Err(e) => Err(failed(&e)),
            },
        }
    }
}
