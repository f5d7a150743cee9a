//! HTTP/2 requests as HTTP/1.1 heads, and HTTP/1.1 answers as HTTP/2 responses, apart from the
//! I/O. An h2 request becomes the head an HTTP/1.1 visitor would have sent (RFC 9113 8.3.1:
//! `:authority` as `Host`; 8.2.3: the `cookie` fields joined), which then goes through every
//! rule of the HTTP/1.1 path: the same judgement of the head, the same rewriting, the same
//! backends. Connection-specific fields (8.2.2) never cross in either direction.
//!
//! Toward a backend configured for h2 it is the other way round: the head the HTTP/1.1 path
//! forwards becomes an h2 request ([`backend_request`]), and the backend's h2 response the
//! HTTP/1.1 answer that path reads ([`backend_response`]), chunked when it has no length, so
//! that its trailers follow.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use std::io::Write;

/// Fields that describe one connection, not the message (RFC 9113 8.2.2): `h2` refuses them in
/// a request; they are dropped from an answer.
const CONNECTION_SPECIFIC: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// How an h2 request's body is framed toward the HTTP/1.1 path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// The request ended with its headers.
    None,
    /// A `content-length` came with it (`h2` holds the DATA frames to it).
    Length,
    /// No length: the body goes on `chunked`, with the request's trailers, if any.
    Chunked,
}

/// Why an h2 request is answered at once, without a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// CONNECT (a tunnel): not proxied.
    Connect,
}

/// Writes the HTTP/1.1 head of an h2 request into `out` (cleared first). `ended`: the request
/// has no body (its HEADERS frame ended the stream).
pub fn request_head(
    parts: &http::request::Parts,
    ended: bool,
    out: &mut Vec<u8>,
) -> Result<BodyFraming, Unsupported> {
    out.clear();
    if parts.method == Method::CONNECT {
        return Err(Unsupported::Connect);
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let _ = write!(out, "{} {target} HTTP/1.1\r\n", parts.method);
    let headers = &parts.headers;
    // `:authority` stands for `Host` (and wins over a `host` field beside it).
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    let host = authority.or_else(|| headers.get(http::header::HOST).map(HeaderValue::as_bytes));
    if let Some(host) = host {
        field(out, "Host", host);
    }
    let mut cookies = headers.get_all(http::header::COOKIE).iter().peekable();
    if cookies.peek().is_some() {
        out.extend_from_slice(b"Cookie: ");
        for (i, c) in cookies.enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if name == http::header::HOST
            || name == http::header::COOKIE
            || CONNECTION_SPECIFIC.contains(&name.as_str())
        {
            continue;
        }
        field(out, name, value);
    }
    let framing = if headers.contains_key(http::header::CONTENT_LENGTH) {
        BodyFraming::Length
    } else if ended {
        // A body-less POST says so, as an HTTP/1.1 client would (some backends want a length).
        if !matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE
        ) {
            out.extend_from_slice(b"Content-Length: 0\r\n");
        }
        BodyFraming::None
    } else {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        BodyFraming::Chunked
    };
    out.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// Writes one field line of an HTTP/1.1 head or trailer section.
fn field(out: &mut Vec<u8>, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    out.extend_from_slice(name.as_ref());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_ref());
    out.extend_from_slice(b"\r\n");
}

/// Writes the end of a chunked body: the last chunk, `trailers`, the final empty line.
pub fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// The fields of an HTTP/1.1 head or trailer section as h2 carries them: names in lower
/// case, connection-specific ones dropped, and a field h2 cannot carry dropped as well.
/// `lines`: at most this many. `whole`, the bytes the lines were parsed from, if at hand as
/// [`Bytes`]: the values are views of it rather than copies.
fn fields<'h>(
    headers: impl Iterator<Item = &'h httparse::Header<'h>>,
    lines: usize,
    whole: Option<&Bytes>,
) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(lines);
    for h in headers {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            continue;
        };
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        let value = match whole {
            Some(whole) => HeaderValue::from_maybe_shared(whole.slice_ref(h.value)),
            None => HeaderValue::from_bytes(h.value),
        };
        if let Ok(value) = value {
            map.append(name, value);
        }
    }
    map
}

/// The h2 response of an HTTP/1.1 answer head (`head`: a complete head, its blank line
/// included), with the fields an HTTP/1.1 visitor would get of it
/// ([`holdfast_h1::rewrite::forwarded_fields`]): a backend's head as it came, or one holdfast
/// wrote; `None` if it is not one.
pub fn response(head: &Bytes) -> Option<http::Response<()>> {
    let mut lines = holdfast_h1::header_room::<{ holdfast_h1::response::MAX_HEADERS }>();
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, head, &mut lines);
    let Ok(httparse::Status::Complete(_)) = parsed else {
        return None;
    };
    let status = StatusCode::from_u16(res.code?).ok()?;
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    let forwarded = holdfast_h1::rewrite::forwarded_fields(res.headers);
    *response.headers_mut() = fields(forwarded, res.headers.len(), Some(head));
    Some(response)
}

/// The trailers of a chunked answer: `section` is its trailer section, final empty line
/// included; `None` when it holds no field.
pub fn response_trailers(section: &[u8]) -> Option<HeaderMap> {
    let mut headers = [httparse::EMPTY_HEADER; holdfast_h1::response::MAX_HEADERS];
    match httparse::parse_headers(section, &mut headers) {
        Ok(httparse::Status::Complete((_, parsed))) if !parsed.is_empty() => {
            Some(fields(parsed.iter(), parsed.len(), None)).filter(|m| !m.is_empty())
        }
        _ => None,
    }
}

/// How the body of a request forwarded to an h2 backend is framed on the HTTP/1.1 side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// No body: the request ends with its headers.
    None,
    /// This many bytes.
    Length(u64),
    /// `chunked`: the chunks' data goes on as DATA frames, the trailers as trailers.
    Chunked,
}

/// A request head as it goes to an h2 backend.
#[derive(Debug)]
pub struct BackendRequest {
    pub request: http::Request<()>,
    pub body: Framed,
    /// How long the HTTP/1.1 head was.
    pub len: usize,
}

/// The h2 request for the HTTP/1.1 head at the start of `buf`, as the data path forwards it to
/// a backend (its rules applied: one framing, hop-by-hop fields gone). `Host` becomes
/// `:authority` (the backend's address when there is none); connection-specific fields are
/// dropped; `te: trailers` is added, which gRPC servers require (trailers pass through).
/// `Ok(None)`: the head is not complete yet; `Err`: not a head h2 can carry.
pub fn backend_request(
    buf: &[u8],
    scheme: &'static str,
    address: &str,
) -> Result<Option<BackendRequest>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; holdfast_h1::request::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let method = Method::from_bytes(req.method.ok_or(())?.as_bytes()).map_err(|_| ())?;
    let mut authority = address.as_bytes();
    let mut body = Framed::None;
    let mut fields = HeaderMap::with_capacity(req.headers.len() + 1);
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ())?;
        if name == http::header::HOST {
            authority = h.value;
            continue;
        }
        if name == http::header::TRANSFER_ENCODING {
            body = Framed::Chunked;
        }
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            // One value: h2 takes no list (`5, 5`, which HTTP/1.1 allows).
            let n = holdfast_h1::parse_length(h.value).ok_or(())?;
            body = Framed::Length(n);
            fields.append(name, HeaderValue::from(n));
            continue;
        }
        fields.append(name, HeaderValue::from_bytes(h.value).map_err(|_| ())?);
    }
    fields.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if body == Framed::Length(0) {
        body = Framed::None; // the HEADERS frame ends the stream
    }
    let target = req.path.ok_or(())?;
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(target)
        .build()
        .map_err(|_| ())?;
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = fields;
    Ok(Some(BackendRequest { request, body, len }))
}

/// Writes the HTTP/1.1 head of an h2 backend's response into `out` (cleared first) and says
/// how its body follows: none after a HEAD request or for a status without one, its length
/// when the backend gave one, else `chunked` (so that trailers can follow).
pub fn backend_response(
    parts: &http::response::Parts,
    head_method: bool,
    out: &mut Vec<u8>,
) -> Framed {
    out.clear();
    let status = parts.status;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut length = None;
    for (name, value) in &parts.headers {
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            length = holdfast_h1::parse_length(value.as_bytes());
        }
        field(out, name, value);
    }
    let bodiless = head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framed = match (bodiless, length) {
        (true, _) => Framed::None,
        (false, Some(n)) => Framed::Length(n),
        (false, None) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framed::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    framed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn head(
        parts: &http::request::Parts,
        ended: bool,
    ) -> (String, Result<BodyFraming, Unsupported>) {
        let mut out = Vec::new();
        let framing = request_head(parts, ended, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), framing)
    }

    #[test]
    fn requests_become_the_heads_an_http11_visitor_sends() {
        let cases: Vec<(http::request::Parts, bool, &str, Result<BodyFraming, Unsupported>)> = vec![
            (
                parts("GET", "https://example.com/a?b=c", &[("accept", "*/*")]),
                true,
                "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\naccept: */*\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                parts(
                    "GET",
                    "https://example.com:8443/",
                    &[("host", "other.example"), ("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers")],
                ),
                true,
                "GET / HTTP/1.1\r\nHost: example.com:8443\r\nCookie: a=1; b=2\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                parts("POST", "https://example.com/up", &[("content-length", "5")]),
                false,
                "POST /up HTTP/1.1\r\nHost: example.com\r\ncontent-length: 5\r\n\r\n",
                Ok(BodyFraming::Length),
            ),
            (
                parts("POST", "https://example.com/grpc.Svc/Call", &[("content-type", "application/grpc")]),
                false,
                "POST /grpc.Svc/Call HTTP/1.1\r\nHost: example.com\r\ncontent-type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(BodyFraming::Chunked),
            ),
            (
                parts("POST", "https://example.com/empty", &[]),
                true,
                "POST /empty HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                parts("GET", "/no-authority", &[("host", "h.example")]),
                true,
                "GET /no-authority HTTP/1.1\r\nHost: h.example\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (parts("CONNECT", "example.com:443", &[]), true, "", Err(Unsupported::Connect)),
        ];
        for (parts, ended, expected, framing) in cases {
            assert_eq!(
                head(&parts, ended),
                (expected.to_string(), framing),
                "{parts:?}"
            );
        }
    }

    #[test]
    fn a_translated_head_is_judged_like_any_other() {
        let (text, _) = head(
            &parts("GET", "https://example.com/x", &[("x-a", "1")]),
            true,
        );
        let judged = holdfast_h1::request::parse(text.as_bytes()).expect("valid");
        assert!(judged.is_some());
    }

    #[test]
    fn answers_lose_their_connection_fields() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        let r = response(&Bytes::from_static(head)).expect("response");
        assert_eq!(r.status(), StatusCode::OK);
        let names: Vec<&str> = r.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "set-cookie"]);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        let values: Vec<&[u8]> = r.headers().values().map(|v| v.as_bytes()).collect();
        assert_eq!(values, [&b"text/plain"[..], b"a=1", b"b=2"]);
        // A backend's head as it came: what an HTTP/1.1 visitor would not get, h2 does not
        // either (fields `Connection` names, `Trailer`, a length beside a coding).
        let head = b"HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\nTrailer: x\r\nProxy-Connection: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\nContent-Type: a/b\r\n\r\n";
        let r = response(&Bytes::from_static(head)).expect("response");
        let names: Vec<&str> = r.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept", "content-type"]);
        let head = b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n";
        let r = response(&Bytes::from_static(head)).expect("response");
        assert_eq!(
            r.headers().get("content-length").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        let incomplete = Bytes::from_static(b"HTTP/1.1 200 OK\r\n");
        assert!(response(&incomplete).is_none(), "incomplete");
    }

    #[test]
    fn trailers_come_across() {
        let t =
            response_trailers(b"grpc-status: 0\r\ngrpc-message: fine\r\n\r\n").expect("trailers");
        assert_eq!(t.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
        assert_eq!(t.len(), 2);
        assert_eq!(response_trailers(b"\r\n"), None);
        let mut out = Vec::new();
        last_chunk(Some(&t), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n");
    }

    /// A forwarded head, as an h2 backend gets it: (what the data path writes, the request's
    /// method, URI, fields in order, body framing), or `None` for `Err`.
    #[allow(clippy::type_complexity)]
    #[test]
    fn forwarded_heads_become_h2_requests() {
        let cases: Vec<(&str, Option<(&str, &str, Vec<(&str, &str)>, Framed)>)> = vec![
            (
                "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
                Some((
                    "GET",
                    "http://example.com/a?b=c",
                    vec![("accept", "*/*"), ("te", "trailers")],
                    Framed::None,
                )),
            ),
            (
                "POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5, 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
                Some((
                    "POST",
                    "http://example.com/up",
                    vec![("content-length", "5"), ("te", "trailers")],
                    Framed::Length(5),
                )),
            ),
            (
                "POST /rpc HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nTE: gzip\r\nUpgrade: h2c\r\n\r\n",
                Some((
                    "POST",
                    "http://example.com/rpc",
                    vec![("te", "trailers")],
                    Framed::Chunked,
                )),
            ),
            (
                "POST /empty HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
                Some((
                    "POST",
                    "http://example.com/empty",
                    vec![("content-length", "0"), ("te", "trailers")],
                    Framed::None,
                )),
            ),
            // No Host: the backend's address stands in.
            (
                "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
                Some(("GET", "http://10.0.0.1:8443/", vec![("x-a", "1"), ("te", "trailers")], Framed::None)),
            ),
            ("GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", None),
            ("NOT HTTP\r\n\r\n", None),
        ];
        for (head, expected) in cases {
            let got = backend_request(head.as_bytes(), "http", "10.0.0.1:8443");
            let Some((method, uri, fields, framed)) = expected else {
                assert!(got.is_err(), "{head:?}: {got:?}");
                continue;
            };
            let got = got.expect(head).expect("complete");
            assert_eq!(got.len, head.len(), "{head:?}");
            assert_eq!(got.request.method(), method, "{head:?}");
            assert_eq!(got.request.uri().to_string(), uri, "{head:?}");
            let seen: Vec<(&str, &str)> = got
                .request
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
                .collect();
            assert_eq!(seen, fields, "{head:?}");
            assert_eq!(got.body, framed, "{head:?}");
        }
        let partial = backend_request(b"GET / HTTP/1.1\r\nHost: a\r\n", "https", "a:1");
        assert!(
            matches!(partial, Ok(None)),
            "an incomplete head waits for more"
        );
    }

    /// An h2 backend's response as the HTTP/1.1 path reads it: (status, fields, HEAD request,
    /// the head written, how the body follows).
    #[allow(clippy::type_complexity)]
    #[test]
    fn h2_responses_become_http11_answers() {
        let cases: Vec<(u16, Vec<(&str, &str)>, bool, &str, Framed)> = vec![
            (
                200,
                vec![("content-type", "application/grpc")],
                false,
                "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n",
                Framed::Chunked,
            ),
            (
                200,
                vec![("content-length", "12")],
                false,
                "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
                Framed::Length(12),
            ),
            (
                200,
                vec![("content-length", "12")],
                true,
                "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
                Framed::None,
            ),
            (204, vec![], false, "HTTP/1.1 204 No Content\r\n\r\n", Framed::None),
            (304, vec![("etag", "\"x\"")], false, "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n", Framed::None),
            (
                599,
                vec![("set-cookie", "a=1"), ("set-cookie", "b=2")],
                false,
                "HTTP/1.1 599 \r\nset-cookie: a=1\r\nset-cookie: b=2\r\ntransfer-encoding: chunked\r\n\r\n",
                Framed::Chunked,
            ),
        ];
        for (status, fields, head_method, written, framed) in cases {
            let mut b = http::Response::builder().status(status);
            for (n, v) in &fields {
                b = b.header(*n, *v);
            }
            let parts = b.body(()).expect("response").into_parts().0;
            let mut out = Vec::new();
            let got = backend_response(&parts, head_method, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), written, "{status}");
            assert_eq!(got, framed, "{status}");
        }
    }
}
