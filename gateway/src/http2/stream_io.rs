//! One h2 stream as the HTTP/1.1 data path sees a visitor connection that carries one request,
//! served in the stream's own task: no pipe and no second task between them. Reading gives
//! the request's HTTP/1.1 head ([`translate::request_head`]), then its body as DATA frames bring
//! it (chunked when it came without a length, with its trailers), then the end of the
//! connection. What the data path writes, an answer's HTTP/1.1 head and body, goes to the
//! visitor as it is written: the head as a HEADERS frame, the body as DATA frames within the
//! visitor's flow control (chunked framing taken off), trailers as a trailing HEADERS frame.
//!
//! Writing holds back at most one write's worth while the visitor's window is closed: the next
//! write (or a flush) waits until it went out, so the data path's own deadlines on writes to a
//! visitor apply here as on an HTTP/1.1 connection.

use crate::bridge::translate::{self, BodyFraming as RequestBody};
use crate::bridge::{lock, poll_window};
use crate::h1::chunked::{ChunkedScanner, Step};
use crate::h1::response::{self, BodyFraming};
use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream, as the byte stream of an HTTP/1.1 connection with one request on it.
pub(super) struct StreamIo {
    /// Request bytes ready to be read: the head, then each piece of the body.
    ready: Bytes,
    /// The request body still to come; `None` once it ended.
    body: Option<RecvStream>,
    chunked: bool,
    answer: Arc<Mutex<Answer>>,
}

/// The answer side of a stream: shared with the stream's task, which watches it for the
/// visitor's reset while the data path works.
pub(super) struct Answer {
    respond: SendResponse<Bytes>,
    head_method: bool,
    state: State,
    /// Written and not yet sent on: part of a head, framing, data awaiting the visitor's window.
    pending: BytesMut,
}

enum State {
    Head,
    Body {
        stream: SendStream<Bytes>,
        framing: Framing,
        /// Nothing of the body has been sent yet.
        first: bool,
    },
    /// The answer went whole; anything written after it is dropped.
    Done,
    /// The answer cannot go on (the visitor reset the stream, or what was written is not an
    /// HTTP/1.1 answer): the stream was reset.
    Broken,
}

enum Framing {
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
}

impl StreamIo {
    /// A stream whose request head is `head` in HTTP/1.1 and whose body is framed as `framing`
    /// (both from [`translate::request_head`]).
    pub(super) fn new(
        head: Vec<u8>,
        framing: RequestBody,
        body: RecvStream,
        head_method: bool,
        respond: SendResponse<Bytes>,
    ) -> Self {
        StreamIo {
            ready: Bytes::from(head),
            body: (framing != RequestBody::None).then_some(body),
            chunked: framing == RequestBody::Chunked,
            answer: Arc::new(Mutex::new(Answer {
                respond,
                head_method,
                state: State::Head,
                pending: BytesMut::new(),
            })),
        }
    }

    /// The answer side, for the stream's task to watch for a reset.
    pub(super) fn answer(&self) -> Arc<Mutex<Answer>> {
        self.answer.clone()
    }
}

impl Answer {
    /// Ready when the visitor reset the stream.
    pub(super) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let reset = match &mut self.state {
            State::Head => self.respond.poll_reset(cx),
            State::Body { stream, .. } => stream.poll_reset(cx),
            State::Done | State::Broken => return Poll::Pending,
        };
        reset.map(drop)
    }

    /// Sends on what was written, as far as the visitor's window lets it; ready when nothing
    /// waits.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                State::Head => {
                    let head = match response::parse_forwarded(&self.pending, self.head_method) {
                        Ok(Some(head)) => head,
                        Ok(None) => return Poll::Ready(Ok(())),
                        Err(_) => return Poll::Ready(Err(self.broken(not_http()))),
                    };
                    if head.interim {
                        self.pending.advance(head.len);
                        continue;
                    }
                    // The head's bytes go with the answer: its values are views of them.
                    let text = self.pending.split_to(head.len).freeze();
                    let Some(response) = translate::response(&text) else {
                        return Poll::Ready(Err(self.broken(not_http())));
                    };
                    let framing = match head.framing {
                        BodyFraming::Empty => None,
                        BodyFraming::Length(n) => Some(Framing::Length(n)),
                        BodyFraming::Chunked => Some(Framing::Chunked(ChunkedScanner::default())),
                        BodyFraming::UntilClose => Some(Framing::UntilClose),
                    };
                    let stream = match self.respond.send_response(response, framing.is_none()) {
                        Ok(stream) => stream,
                        Err(_) => return Poll::Ready(Err(self.broken(gone()))),
                    };
                    self.state = match framing {
                        Some(framing) => State::Body {
                            stream,
                            framing,
                            first: true,
                        },
                        None => State::Done,
                    };
                }
                State::Body {
                    stream,
                    framing,
                    first,
                } => {
                    let (n, end) = match framing {
                        Framing::Length(left) => {
                            let n = usize::try_from(*left)
                                .unwrap_or(usize::MAX)
                                .min(self.pending.len());
                            (n, n as u64 == *left)
                        }
                        Framing::UntilClose => (self.pending.len(), false),
                        Framing::Chunked(chunks) => match chunks.step(&self.pending) {
                            Ok(Step::NeedMore) => (0, false),
                            Ok(Step::Framing(n)) => {
                                self.pending.advance(n);
                                continue;
                            }
                            Ok(Step::Data(n)) => (n, false),
                            Ok(Step::Trailers(n)) => {
                                let trailers = translate::response_trailers(&self.pending[..n]);
                                self.pending.advance(n);
                                let ended = match trailers {
                                    Some(trailers) => stream.send_trailers(trailers),
                                    None => stream.send_data(Bytes::new(), true),
                                };
                                if ended.is_err() {
                                    return Poll::Ready(Err(self.broken(gone())));
                                }
                                self.state = State::Done;
                                continue;
                            }
                            Err(_) => return Poll::Ready(Err(self.broken(not_http()))),
                        },
                    };
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // The first piece goes with the head, in the same write to the visitor,
                    // without waiting for a window: `h2` holds it until the window lets it go,
                    // and it is one write's worth at most.
                    let allowed = if std::mem::take(first) {
                        n
                    } else {
                        match poll_window(stream, n, cx) {
                            Poll::Ready(Ok(allowed)) => allowed,
                            Poll::Ready(Err(())) => return Poll::Ready(Err(self.broken(gone()))),
                            Poll::Pending => return Poll::Pending,
                        }
                    };
                    let piece = self.pending.split_to(allowed).freeze();
                    let end = end && allowed == n;
                    if stream.send_data(piece, end).is_err() {
                        return Poll::Ready(Err(self.broken(gone())));
                    }
                    if let Framing::Length(left) = framing {
                        *left -= allowed as u64;
                    }
                    if end {
                        self.state = State::Done;
                    }
                }
                State::Done => {
                    self.pending.clear();
                    return Poll::Ready(Ok(()));
                }
                State::Broken => return Poll::Ready(Err(gone())),
            }
        }
    }

    /// The data path is through with the stream: an answer that ends with the connection ends
    /// here; one cut short, or none at all, resets the stream.
    fn finish(&mut self) {
        match &mut self.state {
            State::Body {
                stream,
                framing: Framing::UntilClose,
                ..
            } if self.pending.is_empty() => {
                let _ = stream.send_data(Bytes::new(), true);
                self.state = State::Done;
            }
            State::Done | State::Broken => {}
            _ => {
                self.broken(gone());
            }
        }
    }

    /// Resets the stream: its answer cannot go on.
    fn broken(&mut self, why: io::Error) -> io::Error {
        match &mut self.state {
            State::Head => self.respond.send_reset(Reason::INTERNAL_ERROR),
            State::Body { stream, .. } => stream.send_reset(Reason::INTERNAL_ERROR),
            State::Done | State::Broken => {}
        }
        self.state = State::Broken;
        self.pending = BytesMut::new();
        why
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the visitor reset the stream")
}

fn not_http() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.1 answer")
}

impl AsyncRead for StreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            let Some(body) = &mut this.body else {
                return Poll::Ready(Ok(())); // the request is through: the end
            };
            match ready!(body.poll_data(cx)) {
                Some(Ok(data)) => {
                    let n = data.len();
                    let _ = body.flow_control().release_capacity(n);
                    // An empty DATA frame carries nothing (and an empty chunk would end the
                    // body).
                    if n == 0 {
                        continue;
                    }
                    this.ready = match this.chunked {
                        false => data,
                        true => {
                            let mut chunk = BytesMut::with_capacity(n + 12);
                            let _ =
                                std::fmt::Write::write_fmt(&mut chunk, format_args!("{n:x}\r\n"));
                            chunk.put_slice(&data);
                            chunk.put_slice(b"\r\n");
                            chunk.freeze()
                        }
                    };
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None if this.chunked => {
                    let trailers = match ready!(body.poll_trailers(cx)) {
                        Ok(trailers) => trailers,
                        Err(e) => return Poll::Ready(Err(io::Error::other(e))),
                    };
                    let mut end = Vec::new();
                    translate::last_chunk(trailers.as_ref(), &mut end);
                    this.ready = Bytes::from(end);
                    this.body = None;
                }
                None => this.body = None,
            }
        }
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut answer = lock(&self.answer);
        // What waits from the last write goes first: at most one write's worth is held.
        ready!(answer.drain(cx))?;
        answer.pending.extend_from_slice(buf);
        if let Poll::Ready(Err(e)) = answer.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.answer).drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut answer = lock(&self.answer);
        ready!(answer.drain(cx))?;
        answer.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        lock(&self.answer).finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Request};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real h2 client and server over a pipe: the client's side of one stream, and the
    /// server's side as a [`StreamIo`]. `window`: the client's stream window.
    async fn exchange(
        request: Request<()>,
        body: Option<(&'static [u8], Option<HeaderMap>)>,
        window: u32,
    ) -> (h2::client::ResponseFuture, StreamIo) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            let (request, respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            (request, respond)
        });
        let (mut client, conn) = h2::client::Builder::new()
            .initial_window_size(window)
            .handshake::<_, Bytes>(client_io)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let ended = body.is_none();
        let (response, mut send) = client.send_request(request, ended).unwrap();
        if let Some((data, trailers)) = body {
            send.send_data(Bytes::from_static(data), trailers.is_none())
                .unwrap();
            if let Some(trailers) = trailers {
                send.send_trailers(trailers).unwrap();
            }
        }
        let (request, respond) = server.await.unwrap();
        let (parts, body) = request.into_parts();
        let mut head = Vec::new();
        let framing = translate::request_head(&parts, body.is_end_stream(), &mut head).unwrap();
        let head_method = parts.method == http::Method::HEAD;
        (
            response,
            StreamIo::new(head, framing, body, head_method, respond),
        )
    }

    fn post(length: Option<usize>) -> Request<()> {
        let mut request = Request::post("https://example.com/up").body(()).unwrap();
        if let Some(n) = length {
            request
                .headers_mut()
                .insert("content-length", HeaderValue::from(n));
        }
        request
    }

    async fn read_all(io: &mut StreamIo) -> String {
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn the_request_reads_as_http11_then_ends() {
        let get = Request::get("https://example.com/a?b").body(()).unwrap();
        let (_, mut io) = exchange(get, None, 65_535).await;
        assert_eq!(
            read_all(&mut io).await,
            "GET /a?b HTTP/1.1\r\nHost: example.com\r\n\r\n"
        );

        let (_, mut io) = exchange(post(Some(5)), Some((b"hello", None)), 65_535).await;
        let text = read_all(&mut io).await;
        assert!(text.starts_with("POST /up HTTP/1.1\r\n"), "{text}");
        assert!(text.ends_with("content-length: 5\r\n\r\nhello"), "{text}");

        // No length: chunked, its trailers after the last chunk.
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let (_, mut io) = exchange(post(None), Some((b"hello", Some(trailers))), 65_535).await;
        let text = read_all(&mut io).await;
        assert!(
            text.ends_with(
                "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n"
            ),
            "{text}"
        );
    }

    /// An answer written a few bytes at a time, interim answer, chunked body and trailers
    /// included, reaches the visitor as h2: status, fields (connection-specific ones dropped),
    /// data without chunk framing, trailers.
    #[tokio::test]
    async fn an_answer_goes_out_as_it_is_written() {
        let get = Request::get("https://example.com/").body(()).unwrap();
        let (response, mut io) = exchange(get, None, 65_535).await;
        let _ = read_all(&mut io).await;
        let answer: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Done: yes\r\n\r\n";
        for piece in answer.chunks(7) {
            io.write_all(piece).await.unwrap();
        }
        io.flush().await.unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-a"], "1");
        assert!(response.headers().get("connection").is_none());
        assert!(response.headers().get("transfer-encoding").is_none());
        let mut body = response.into_body();
        let mut got = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            let _ = body.flow_control().release_capacity(data.len());
            got.extend_from_slice(&data);
        }
        assert_eq!(got, b"hello world");
        let trailers = body.trailers().await.unwrap().unwrap();
        assert_eq!(trailers["x-done"], "yes");
    }

    /// A body larger than the visitor's window goes out as the visitor takes it: writes wait
    /// (one write's worth held at most) and nothing is lost.
    #[tokio::test]
    async fn a_large_body_waits_for_the_window() {
        let get = Request::get("https://example.com/").body(()).unwrap();
        let (response, mut io) = exchange(get, None, 1024).await;
        let _ = read_all(&mut io).await;
        let size = 192 * 1024;
        let writer = tokio::spawn(async move {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            io.write_all(head.as_bytes()).await.unwrap();
            let piece = vec![b'x'; 16 * 1024];
            for _ in 0..size / piece.len() {
                io.write_all(&piece).await.unwrap();
            }
            io.flush().await.unwrap();
            let held = lock(&io.answer).pending.len();
            (io, held)
        });
        let mut body = response.await.unwrap().into_body();
        let mut got = 0;
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            let _ = body.flow_control().release_capacity(data.len());
            got += data.len();
        }
        let (_io, held) = writer.await.unwrap();
        assert_eq!((got, held), (size, 0));
    }

    /// An answer cut short (the data path let go of the stream mid-body), or none at all,
    /// resets the stream: the visitor never takes a part for the whole.
    #[tokio::test]
    async fn an_answer_cut_short_resets_the_stream() {
        for written in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"[..],
            b"",
            b"HTTP/1.1 20",
        ] {
            let get = Request::get("https://example.com/").body(()).unwrap();
            let (response, mut io) = exchange(get, None, 65_535).await;
            let _ = read_all(&mut io).await;
            io.write_all(written).await.unwrap();
            io.flush().await.unwrap();
            drop(io);
            let outcome = match response.await {
                Err(e) => e.reason(),
                Ok(response) => {
                    let mut body = response.into_body();
                    loop {
                        match body.data().await {
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => break e.reason(),
                            None => break None,
                        }
                    }
                }
            };
            assert_eq!(outcome, Some(Reason::INTERNAL_ERROR), "{written:?}");
        }

        // An answer that ends with the connection ends with the data path's shutdown.
        let get = Request::get("https://example.com/").body(()).unwrap();
        let (response, mut io) = exchange(get, None, 65_535).await;
        let _ = read_all(&mut io).await;
        io.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
            .await
            .unwrap();
        io.shutdown().await.unwrap();
        let mut body = response.await.unwrap().into_body();
        let mut got = Vec::new();
        while let Some(data) = body.data().await {
            got.extend_from_slice(&data.unwrap());
        }
        assert_eq!(got, b"all of it");
    }
}
