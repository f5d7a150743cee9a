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
