//! The experiments of issue 27: the same minimal HTTP/1.1 relay on three event loops, to learn
//! what io_uring would save holdfast's data path before building on it, and behind two TLS
//! libraries, to learn what rustls would save against OpenSSL.
//!
//!     relay MODEL LISTEN BACKEND THREADS [CERT KEY]
//!
//! MODEL: `tokio` (epoll; holdfast's model: a current-thread runtime per thread, a listener
//! per thread with SO_REUSEPORT, a task per connection), `monoio-epoll` (monoio's epoll
//! driver) or `monoio-uring` (monoio's io_uring driver); and the TLS libraries, on tokio,
//! visitors over TLS (CERT, KEY: PEM files): `openssl` (tokio-openssl, the vendored OpenSSL
//! holdfast's listeners use) or `rustls` (tokio-rustls with aws-lc-rs). Each visitor connection gets its own
//! backend connection, kept for its life (as holdfast pins one); each request head (GETs: no
//! body) goes to the backend whole, the answer (framed by `Content-Length`) comes back whole,
//! and a request that says `Connection: close` closes the connection after its answer. The
//! buffer lives while an exchange does, so an idle connection holds only its sockets, its
//! task and its TLS state.
//! The relays do the same work per request, so what differs is the event loop (or the TLS
//! library) and its system calls. Not a proxy: no checks, no limits, no errors answered; `run.py` measures it.

use std::io;
use std::net::SocketAddr;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (model, listen, backend, threads, pem) = match &args[..] {
        [_, model, listen, backend, threads] => (model, listen, backend, threads, None),
        [_, model, listen, backend, threads, cert, key] => (
            model,
            listen,
            backend,
            threads,
            Some((cert.clone(), key.clone())),
        ),
        _ => {
            eprintln!(
                "usage: relay tokio|monoio-epoll|monoio-uring|openssl|rustls LISTEN BACKEND \
                 THREADS [CERT KEY]"
            );
            std::process::exit(2);
        }
    };
    let (listen, backend): (SocketAddr, SocketAddr) = match (listen.parse(), backend.parse()) {
        (Ok(l), Ok(b)) => (l, b),
        _ => {
            eprintln!("relay: LISTEN and BACKEND are ADDRESS:PORT");
            std::process::exit(2);
        }
    };
    let threads: usize = threads.parse().unwrap_or(1);
    let model = model.clone();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let model = model.clone();
            let pem = pem.clone();
            std::thread::spawn(move || {
                let tls = || {
                    let (cert, key) = pem.clone().ok_or_else(|| io::Error::other("CERT KEY?"))?;
                    tls::Acceptor::new(&model, &cert, &key)
                };
                let served = match model.as_str() {
                    "tokio" => tokio_loop::serve(listen, backend, None),
                    "openssl" | "rustls" => {
                        tls().and_then(|tls| tokio_loop::serve(listen, backend, Some(tls)))
                    }
                    "monoio-epoll" => monoio_loop::serve_epoll(listen, backend),
                    "monoio-uring" => monoio_loop::serve_uring(listen, backend),
                    other => Err(io::Error::other(format!("unknown model {other}"))),
                };
                if let Err(e) = served {
                    eprintln!("relay: {e}");
                    std::process::exit(1);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

/// What both loops share: the listener, and where a request or an answer ends.
mod wire {
    use std::io;
    use std::net::SocketAddr;

    /// Room for a request head or a small answer; a larger one grows the buffer.
    pub const BUF: usize = 16 * 1024;

    /// A listening socket of its own for one thread (SO_REUSEPORT: the kernel spreads connections
    /// over the threads' listeners, as holdfast's accept workers do).
    pub fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        Ok(socket.into())
    }

    /// Where the request head at the start of `buf` ends, once it is all there.
    pub fn request_end(buf: &[u8]) -> Option<usize> {
        buf.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
    }

    /// Where the answer at the start of `buf` ends (head and `Content-Length` body), once its
    /// head is there.
    pub fn response_end(buf: &[u8]) -> Option<usize> {
        let mut lines = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut lines);
        let Ok(httparse::Status::Complete(head)) = response.parse(buf) else {
            return None;
        };
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        Some(head + length)
    }

    /// Whether a request head asks to close the connection after its answer.
    pub fn closes(head: &[u8]) -> bool {
        let mut lines = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut lines);
        let _ = request.parse(head);
        request.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        })
    }

    pub fn eof() -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the backend closed")
    }
}

mod tokio_loop {
    use super::tls;
    use super::wire::{closes, eof, listener, request_end, response_end, BUF};
    use std::io;
    use std::net::SocketAddr;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub fn serve(
        listen: SocketAddr,
        backend: SocketAddr,
        tls: Option<tls::Acceptor>,
    ) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        runtime.block_on(async {
            let listener = TcpListener::from_std(listener(listen)?)?;
            loop {
                let (visitor, _) = listener.accept().await?;
                visitor.set_nodelay(true)?;
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = match tls {
                        None => relay(visitor, backend).await,
                        Some(tls::Acceptor::OpenSsl(context)) => {
                            match tls::openssl_accept(&context, visitor).await {
                                Ok(visitor) => relay(visitor, backend).await,
                                Err(e) => Err(e),
                            }
                        }
                        Some(tls::Acceptor::Rustls(acceptor)) => {
                            match acceptor.accept(visitor).await {
                                Ok(visitor) => relay(visitor, backend).await,
                                Err(e) => Err(e),
                            }
                        }
                    };
                });
            }
        })
    }

    async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
        mut visitor: S,
        backend: SocketAddr,
    ) -> io::Result<()> {
        let mut up = TcpStream::connect(backend).await?;
        up.set_nodelay(true)?;
        loop {
            let mut buf = Vec::with_capacity(BUF);
            let end = loop {
                if visitor.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
                if let Some(end) = request_end(&buf) {
                    break end;
                }
            };
            let close = closes(&buf[..end]);
            up.write_all(&buf[..end]).await?;
            buf.clear();
            let end = loop {
                if up.read_buf(&mut buf).await? == 0 {
                    return Err(eof());
                }
                match response_end(&buf) {
                    Some(end) if buf.len() >= end => break end,
                    _ => {}
                }
            };
            visitor.write_all(&buf[..end]).await?;
            if close {
                return visitor.shutdown().await;
            }
        }
    }
}

/// The two TLS libraries, each set up as holdfast would (one certificate, TLS 1.2 and 1.3,
/// ALPN http/1.1).
mod tls {
    use std::io;
    use std::sync::Arc;

    #[derive(Clone)]
    pub enum Acceptor {
        OpenSsl(openssl::ssl::SslContext),
        Rustls(tokio_rustls::TlsAcceptor),
    }

    impl Acceptor {
        pub fn new(library: &str, cert: &str, key: &str) -> io::Result<Acceptor> {
            match library {
                "openssl" => openssl_context(cert, key)
                    .map(Acceptor::OpenSsl)
                    .map_err(io::Error::other),
                _ => rustls_acceptor(cert, key).map(Acceptor::Rustls),
            }
        }
    }

    fn openssl_context(
        cert: &str,
        key: &str,
    ) -> Result<openssl::ssl::SslContext, openssl::error::ErrorStack> {
        use openssl::ssl::{select_next_proto, AlpnError, SslAcceptor, SslFiletype, SslMethod};
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        builder.set_certificate_chain_file(cert)?;
        builder.set_private_key_file(key, SslFiletype::PEM)?;
        builder.set_read_ahead(true); // as holdfast's listeners: one read per record, not two
        builder.set_alpn_select_callback(|_, client| {
            select_next_proto(b"\x08http/1.1", client).ok_or(AlpnError::NOACK)
        });
        Ok(builder.build().into_context())
    }

    pub async fn openssl_accept(
        context: &openssl::ssl::SslContext,
        tcp: tokio::net::TcpStream,
    ) -> io::Result<tokio_openssl::SslStream<tokio::net::TcpStream>> {
        let ssl = openssl::ssl::Ssl::new(context).map_err(io::Error::other)?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(io::Error::other)?;
        std::pin::Pin::new(&mut stream)
            .accept()
            .await
            .map_err(io::Error::other)?;
        Ok(stream)
    }

    fn rustls_acceptor(cert: &str, key: &str) -> io::Result<tokio_rustls::TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(io::Error::other)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(io::Error::other)?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

mod monoio_loop {
    use super::wire::{closes, eof, listener, request_end, response_end, BUF};
    use monoio::buf::{IoBuf, IoBufMut};
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    use std::io;
    use std::net::SocketAddr;

    pub fn serve_epoll(listen: SocketAddr, backend: SocketAddr) -> io::Result<()> {
        RuntimeBuilder::<LegacyDriver>::new()
            .build()?
            .block_on(accept(listen, backend))
    }

    pub fn serve_uring(listen: SocketAddr, backend: SocketAddr) -> io::Result<()> {
        RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(1024)
            .build()?
            .block_on(accept(listen, backend))
    }

    async fn accept(listen: SocketAddr, backend: SocketAddr) -> io::Result<()> {
        let listener = TcpListener::from_std(listener(listen)?)?;
        loop {
            let (visitor, _) = listener.accept().await?;
            monoio::spawn(async move {
                let _ = relay(visitor, backend).await;
            });
        }
    }

    /// Reads what comes after what `buf` holds (ownership goes to the kernel and back).
    async fn read_more(stream: &mut TcpStream, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.len() == buf.capacity() {
            buf.reserve(BUF);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (read, slice) = stream.read(buf.slice_mut(len..cap)).await;
        (read, slice.into_inner())
    }

    async fn relay(visitor: TcpStream, backend: SocketAddr) -> io::Result<()> {
        visitor.set_nodelay(true)?;
        let mut visitor = visitor;
        let mut up = TcpStream::connect(backend).await?;
        up.set_nodelay(true)?;
        loop {
            let mut buf = Vec::with_capacity(BUF);
            let end = loop {
                let (read, back) = read_more(&mut visitor, buf).await;
                buf = back;
                if read? == 0 {
                    return Ok(());
                }
                if let Some(end) = request_end(&buf) {
                    break end;
                }
            };
            let close = closes(&buf[..end]);
            let (sent, back) = up.write_all(buf.slice(..end)).await;
            buf = back.into_inner();
            sent?;
            buf.clear();
            let end = loop {
                let (read, back) = read_more(&mut up, buf).await;
                buf = back;
                if read? == 0 {
                    return Err(eof());
                }
                match response_end(&buf) {
                    Some(end) if buf.len() >= end => break end,
                    _ => {}
                }
            };
            let (sent, _) = visitor.write_all(buf.slice(..end)).await;
            sent?;
            if close {
                return Ok(());
            }
        }
    }
}
