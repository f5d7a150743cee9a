//! One active probe of one backend: a TCP connect, or an HTTP request and its answer.
//!
//! The HTTP probe speaks HTTP/1.0 with `Connection: close`, as HAProxy's `httpchk` does: the
//! backend must then answer without chunked framing and close, so the probe reads the answer to
//! its end (at most [`MAX_RESPONSE_BYTES`]) and needs no HTTP client beyond a head parser. To a
//! backend configured for HTTP/2 it speaks HTTP/2 instead (a backend that speaks only h2, such
//! as a gRPC server, would refuse HTTP/1.0), on a connection of its own, closed after.

use crate::local::LocalError;
use crate::tls::{HandshakeError, TlsClient};
use bytes::Bytes;
use holdfast_config::{Backend, BackendProtocol, CheckKind, HttpCheck};
use std::fmt;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer the HTTP probe reads; a body substring is looked for in this prefix.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// `User-Agent` of the HTTP probe, so backend logs can tell checks from visitors.
pub const USER_AGENT: &str = concat!("holdfast-health/", env!("CARGO_PKG_VERSION"));

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    Refused,
    Timeout,
    Reset,
    Io(io::ErrorKind),
    /// The answer was not HTTP, or ended before its head.
    BadResponse(&'static str),
    /// An HTTP status outside the accepted set.
    Status(u16),
    /// The body lacks the expected substring.
    BodyMismatch,
    /// The TLS handshake failed (bad certificate, no TLS on the port, no shared cipher).
    Tls(String),
    /// The probe could not run: the gateway itself is out of descriptors, ports or memory.
    /// Says nothing of the backend, so it counts neither way.
    Local(LocalError),
}

impl CheckFailure {
    /// Whether this is the gateway's own trouble rather than the backend's.
    pub fn is_local(&self) -> bool {
        matches!(self, CheckFailure::Local(_))
    }
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Refused => f.write_str("connection refused"),
            CheckFailure::Timeout => f.write_str("timed out"),
            CheckFailure::Reset => f.write_str("connection reset"),
            CheckFailure::Io(kind) => write!(f, "i/o error: {kind}"),
            CheckFailure::BadResponse(why) => write!(f, "bad response: {why}"),
            CheckFailure::Status(s) => write!(f, "status {s}"),
            CheckFailure::BodyMismatch => f.write_str("body lacks the expected text"),
            CheckFailure::Tls(why) => write!(f, "tls: {why}"),
            CheckFailure::Local(why) => write!(f, "not run: holdfast is {why}"),
        }
    }
}

impl From<HandshakeError> for CheckFailure {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Io(e) => e.into(),
            HandshakeError::Tls(why) => CheckFailure::Tls(why),
        }
    }
}

impl From<io::Error> for CheckFailure {
    fn from(e: io::Error) -> Self {
        if let Some(local) = LocalError::of(&e) {
            return CheckFailure::Local(local);
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => CheckFailure::Refused,
            io::ErrorKind::TimedOut => CheckFailure::Timeout,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => CheckFailure::Reset,
            kind => CheckFailure::Io(kind),
        }
    }
}

/// Runs one probe of `kind` against `backend`, bounded by `timeout`. For an HTTPS backend the
/// TCP check also completes the TLS handshake, and the HTTP check runs over TLS.
pub async fn probe(
    kind: &CheckKind,
    backend: &Backend,
    tls: &TlsClient,
    timeout: Duration,
) -> Result<(), CheckFailure> {
    let attempt = async {
        let tcp = TcpStream::connect(backend.addr).await?;
        match (&backend.tls, kind) {
            (None, CheckKind::Tcp) => Ok(()),
            (None, CheckKind::Http(check)) => http(tcp, check, backend).await,
            (Some(t), CheckKind::Tcp) => {
                tls.handshake(tcp, t, backend.protocol).await?;
                Ok(())
            }
            (Some(t), CheckKind::Http(check)) => {
                let stream = tls.handshake(tcp, t, backend.protocol).await?;
                http(stream, check, backend).await
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(CheckFailure::Timeout),
    }
}

/// The HTTP check on an open connection, in the backend's protocol.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    check: &HttpCheck,
    backend: &Backend,
) -> Result<(), CheckFailure> {
    let host = match (&check.host, &backend.tls) {
        (Some(h), _) => h.clone(),
        (None, Some(t)) if !t.sni.is_empty() => t.sni.clone(),
        (None, _) => backend.addr.to_string(),
    };
    match backend.protocol {
        BackendProtocol::Http1 => http1(stream, check, &host).await,
        BackendProtocol::H2 => http2(stream, check, backend.scheme(), &host).await,
    }
}

async fn http1<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    check: &HttpCheck,
    host: &str,
) -> Result<(), CheckFailure> {
    let request = format!(
        "{} {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.method, check.path
    );
    stream.write_all(request.as_bytes()).await?;

    let mut buf = Vec::with_capacity(1024);
    while buf.len() < MAX_RESPONSE_BYTES {
        match stream.read_buf(&mut buf).await {
            Ok(0) => break,
            // Without a body to look for, the head is all the probe needs.
            Ok(_) if check.body.is_none() && head_complete(&buf) => break,
            Ok(_) => {}
            // A reset after a complete answer still leaves the answer to judge.
            Err(e) if !buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(MAX_RESPONSE_BYTES);
    judge(&buf, check)
}

/// The HTTP check over HTTP/2: the request on a stream of a connection of its own, the status
/// judged, and as much of the body as [`MAX_RESPONSE_BYTES`] when a substring is looked for.
async fn http2<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    check: &HttpCheck,
    scheme: &str,
    host: &str,
) -> Result<(), CheckFailure> {
    let (client, connection) = h2::client::handshake(stream).await.map_err(h2_failure)?;
    let ask = async {
        let request = http::Request::builder()
            .method(check.method.as_str())
            .uri(format!("{scheme}://{host}{}", check.path))
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "*/*")
            .body(())
            .map_err(|_| CheckFailure::BadResponse("the check's request is not valid HTTP/2"))?;
        let mut client = client.ready().await.map_err(h2_failure)?;
        let (response, _) = client.send_request(request, true).map_err(h2_failure)?;
        let response = response.await.map_err(h2_failure)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut seen = Vec::new();
        if check.body.is_some() {
            while seen.len() < MAX_RESPONSE_BYTES {
                let Some(data) = body.data().await else {
                    break;
                };
                let data: Bytes = data.map_err(h2_failure)?;
                let _ = body.flow_control().release_capacity(data.len());
                seen.extend_from_slice(&data);
            }
            seen.truncate(MAX_RESPONSE_BYTES);
        }
        judge_answer(status, &seen, check)
    };
    // The connection is driven beside the request; dropped with it when the answer is judged.
    tokio::select! {
        judged = ask => judged,
        ended = connection => Err(match ended {
            Ok(()) => CheckFailure::BadResponse("closed without answering"),
            Err(e) => h2_failure(e),
        }),
    }
}

/// What an HTTP/2 error means for a check.
fn h2_failure(e: h2::Error) -> CheckFailure {
    if e.is_io() {
        return match e.into_io() {
            Some(io) => io.into(),
            None => CheckFailure::Reset,
        };
    }
    if e.is_reset() || e.is_go_away() {
        return CheckFailure::BadResponse("the backend reset the HTTP/2 stream");
    }
    CheckFailure::BadResponse("not an HTTP/2 answer")
}

fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Judges a raw HTTP answer against the check's expectations.
pub fn judge(answer: &[u8], check: &HttpCheck) -> Result<(), CheckFailure> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(answer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if answer.is_empty() => {
            return Err(CheckFailure::BadResponse("closed without answering"))
        }
        Ok(httparse::Status::Partial) => {
            return Err(CheckFailure::BadResponse("incomplete response head"))
        }
        Err(_) => return Err(CheckFailure::BadResponse("not an HTTP response")),
    };
    judge_answer(response.code.unwrap_or(0), &answer[head_len..], check)
}

/// Judges an answer's status and (the start of) its body against the check's expectations.
fn judge_answer(status: u16, body: &[u8], check: &HttpCheck) -> Result<(), CheckFailure> {
    if !check.accepts(status) {
        return Err(CheckFailure::Status(status));
    }
    if let Some(expected) = &check.body {
        let found = body
            .windows(expected.len())
            .any(|w| w == expected.as_bytes());
        if !found {
            return Err(CheckFailure::BodyMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_config::BackendTls;

    fn check(status: Vec<u16>, body: Option<&str>) -> HttpCheck {
        HttpCheck {
            method: "GET".into(),
            path: "/health".into(),
            host: None,
            status,
            body: body.map(Into::into),
        }
    }

    #[test]
    fn judges_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nall ok";
        assert_eq!(judge(ok, &check(vec![], None)), Ok(()));
        assert_eq!(judge(ok, &check(vec![], Some("all ok"))), Ok(()));
        assert_eq!(
            judge(ok, &check(vec![], Some("broken"))),
            Err(CheckFailure::BodyMismatch)
        );
        assert_eq!(
            judge(ok, &check(vec![204], None)),
            Err(CheckFailure::Status(200))
        );
        let unavailable = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert_eq!(
            judge(unavailable, &check(vec![], None)),
            Err(CheckFailure::Status(503))
        );
        assert_eq!(judge(unavailable, &check(vec![503], None)), Ok(()));
        assert_eq!(
            judge(b"HTTP/1.1 301 Moved\r\n\r\n", &check(vec![], None)),
            Ok(())
        );
    }

    #[test]
    fn rejects_what_is_not_an_answer() {
        let c = check(vec![], None);
        assert!(matches!(judge(b"", &c), Err(CheckFailure::BadResponse(_))));
        assert!(matches!(
            judge(b"HTTP/1.1 200 OK\r\n", &c),
            Err(CheckFailure::BadResponse(_))
        ));
        assert!(matches!(
            judge(b"SSH-2.0-OpenSSH\r\n\r\n", &c),
            Err(CheckFailure::BadResponse(_))
        ));
    }

    fn backend(addr: std::net::SocketAddr, tls: Option<BackendTls>) -> Backend {
        Backend {
            name: "b".into(),
            address: addr.to_string(),
            addr,
            weight: std::num::NonZeroU32::MIN,
            tls,
            max_in_flight: None,
            protocol: BackendProtocol::Http1,
        }
    }

    #[tokio::test]
    async fn probes_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 503 No\r\n\r\ndown").await;
            }
        });
        let timeout = Duration::from_secs(2);
        let tls = TlsClient::new();
        let plain = backend(addr, None);
        assert_eq!(probe(&CheckKind::Tcp, &plain, &tls, timeout).await, Ok(()));
        let http = CheckKind::Http(check(vec![], None));
        assert_eq!(
            probe(&http, &plain, &tls, timeout).await,
            Err(CheckFailure::Status(503))
        );

        // TLS expected, plain HTTP found: the handshake fails.
        let tls_config = BackendTls {
            sni: "localhost".into(),
            verify: false,
            ca: None,
        };
        let https = backend(addr, Some(tls_config));
        let failed = probe(&CheckKind::Tcp, &https, &tls, timeout).await;
        assert!(
            matches!(failed, Err(CheckFailure::Tls(_)) | Err(CheckFailure::Reset)),
            "{failed:?}"
        );

        // A port nobody listens on.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = backend(listener.local_addr().unwrap(), None);
        drop(listener);
        assert_eq!(
            probe(&CheckKind::Tcp, &closed, &tls, timeout).await,
            Err(CheckFailure::Refused)
        );
    }
}
