//! An HTTP/2 client for the tests: the `h2` crate over TLS with ALPN `h2` (any certificate
//! accepted), and raw frames for the attacks the `h2` crate would never send.

use bytes::Bytes;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_openssl::SslStream;

pub type Tls = SslStream<tokio::net::TcpStream>;

/// A TLS connection offering `alpn` (in ALPN's wire format); the protocol agreed, if any.
pub async fn tls(addr: SocketAddr, alpn: &[u8]) -> (Tls, Option<Vec<u8>>) {
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_alpn_protos(alpn).unwrap();
    let ssl = connector
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl("localhost")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut stream).connect().await.unwrap();
    let agreed = stream.ssl().selected_alpn_protocol().map(<[u8]>::to_vec);
    (stream, agreed)
}

/// An h2 connection to an HTTPS listener; its connection task runs on its own and says how the
/// connection ended.
pub async fn connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let (stream, agreed) = tls(addr, b"\x02h2\x08http/1.1").await;
    assert_eq!(agreed.as_deref(), Some(&b"h2"[..]), "ALPN agreed on h2");
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    (send, tokio::spawn(conn))
}

/// What a visitor got for one h2 request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` with `body` (none when empty; then the HEADERS frame ends the stream) and
/// reads the whole answer, within 15 s.
pub async fn send(
    send: &mut h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    body: &[u8],
) -> Result<Answer, String> {
    let exchange = async {
        let mut ready = send.clone().ready().await.map_err(|e| e.to_string())?;
        let (response, mut stream) = ready
            .send_request(request, body.is_empty())
            .map_err(|e| e.to_string())?;
        if !body.is_empty() {
            stream
                .send_data(Bytes::copy_from_slice(body), true)
                .map_err(|e| e.to_string())?;
        }
        let (parts, mut recv) = response.await.map_err(|e| e.to_string())?.into_parts();
        let mut body = Vec::new();
        while let Some(data) = recv.data().await {
            let data = data.map_err(|e| e.to_string())?;
            let _ = recv.flow_control().release_capacity(data.len());
            body.extend_from_slice(&data);
        }
        let trailers = recv.trailers().await.map_err(|e| e.to_string())?;
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            trailers,
        })
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| "no answer within 15 s".to_string())?
}

/// `GET https://localhost{path}`.
pub fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap()
}

/// One frame: its nine-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
/// END_STREAM and END_HEADERS.
pub const END_STREAM_AND_HEADERS: u8 = 0x5;
/// The error code CANCEL (RFC 9113 7).
pub const CANCEL: u32 = 0x8;
/// The error code ENHANCE_YOUR_CALM.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A raw h2 connection: the client preface and an empty SETTINGS frame sent.
pub async fn raw(addr: SocketAddr) -> Tls {
    let (mut stream, agreed) = tls(addr, b"\x02h2").await;
    assert_eq!(agreed.as_deref(), Some(&b"h2"[..]));
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.unwrap();
    stream
}

/// The HEADERS frame of `GET https://localhost/` on `stream`, ending it (HPACK: indexed
/// `:method GET`, `:scheme https`, `:path /`, and `:authority` as a literal).
pub fn get_frame(stream: u32) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 9];
    block.extend_from_slice(b"localhost");
    frame(HEADERS, END_STREAM_AND_HEADERS, stream, &block)
}

/// Reads frames until a GOAWAY (its error code), the end of the connection (`None`), or 10 s.
pub async fn goaway(stream: &mut Tls) -> Option<u32> {
    let read = async {
        loop {
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).await.ok()?;
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.ok()?;
            if header[3] == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

/// An HTTP/2 backend that speaks nothing else (cleartext with prior knowledge, or TLS when
/// given an acceptor), as a gRPC server does. For each stream it answers 200 with what it
/// received: `x-backend` (its name), `x-method`, `x-authority`, `x-path`, `x-te`,
/// `x-trailers` (the request's trailers, `name=value` joined by `,`), and the request body
/// echoed (its name when there was none). `content-type: application/grpc` gets gRPC's
/// trailers after the body (`grpc-status: 0`, `grpc-message: fine`); `/sized` comes with a
/// `content-length`; `/slow` waits 300 ms first; `/never` is never answered (the backend notes
/// when the client cancels it). Stopping it closes every connection.
pub struct H2Backend {
    pub addr: SocketAddr,
    seen: std::sync::Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

/// What an [`H2Backend`] counts.
#[derive(Default)]
struct Seen {
    /// Connections that carried a request other than the health check's `/health`.
    used: std::sync::atomic::AtomicUsize,
    /// `/never` streams the client reset.
    cancelled: std::sync::atomic::AtomicUsize,
}

impl H2Backend {
    pub async fn start(name: &'static str, tls: Option<openssl::ssl::SslAcceptor>) -> H2Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(Seen::default());
        let counter = seen.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set: stopping the backend drops them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (tls, seen) = (tls.clone(), counter.clone());
                connections.spawn(async move {
                    match tls {
                        None => serve_h2(tcp, name, seen).await,
                        Some(acceptor) => {
                            let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                            let mut stream = SslStream::new(ssl, tcp).unwrap();
                            if std::pin::Pin::new(&mut stream).accept().await.is_ok() {
                                serve_h2(stream, name, seen).await;
                            }
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        H2Backend { addr, seen, task }
    }

    /// How many connections carried a request other than `/health`.
    pub fn connections_used(&self) -> usize {
        self.seen.used.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many `/never` streams the client cancelled.
    pub fn cancelled(&self) -> usize {
        self.seen
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the listener and every connection at once (a crashed server).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_h2<S>(io: S, name: &'static str, seen: std::sync::Arc<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    let mut counted = false;
    while let Some(Ok((request, respond))) = conn.accept().await {
        if !counted && request.uri().path() != "/health" {
            counted = true;
            seen.used.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        tokio::spawn(answer_h2(request, respond, name, seen.clone()));
    }
}

async fn answer_h2(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    name: &'static str,
    seen: std::sync::Arc<Seen>,
) {
    let (parts, mut recv) = request.into_parts();
    if parts.uri.path() == "/never" {
        if std::future::poll_fn(|cx| respond.poll_reset(cx))
            .await
            .is_ok()
        {
            seen.cancelled
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        return;
    }
    let mut body = Vec::new();
    while let Some(Ok(data)) = recv.data().await {
        let _ = recv.flow_control().release_capacity(data.len());
        body.extend_from_slice(&data);
    }
    let trailers = recv.trailers().await.ok().flatten().map(|t| {
        t.iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(",")
    });
    if parts.uri.path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if body.is_empty() {
        body = name.as_bytes().to_vec();
    }
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let grpc = header("content-type") == "application/grpc";
    let mut answer = http::Response::builder()
        .status(200)
        .header("x-backend", name)
        .header("x-method", parts.method.as_str())
        .header(
            "x-authority",
            parts.uri.authority().map_or("", |a| a.as_str()),
        )
        .header("x-path", parts.uri.path())
        .header("x-te", header("te"))
        .header("x-trailers", trailers.unwrap_or_default());
    if parts.uri.path() == "/sized" {
        answer = answer.header("content-length", body.len());
    }
    let head_only = parts.method == http::Method::HEAD;
    let Ok(mut stream) = respond.send_response(answer.body(()).unwrap(), head_only) else {
        return;
    };
    if head_only {
        return;
    }
    let _ = stream.send_data(Bytes::from(body), !grpc);
    if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("fine"));
        let _ = stream.send_trailers(trailers);
    }
}
