//! The request Cloudflare would send ("bypass Cloudflare and test the origin"): to each
//! listener, for each site the config routes, with `CF-Connecting-IP` and `CF-Ray`, over TLS
//! with SNI on an HTTPS listener; what came back and how long it took. [`judge`] is a plain
//! function with its table test; [`send`] does the I/O.

use super::report::{Finding, Layer};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How a request as Cloudflare sends it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The status of the answer, and how long the head took.
    Answered(u16, Duration),
    /// The connect failed: refused, timed out...
    Connect(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The connection closed or stalled before an answer, or what came is not HTTP.
    NoAnswer(String),
}

/// What one request means.
pub fn judge(to: &str, host: &str, sent: &Sent) -> Finding {
    let check = format!("request to {to} for {host}");
    match sent {
        Sent::Answered(status, took) => {
            let found = format!("{status} in {:.1} ms", took.as_secs_f64() * 1000.0);
            match *status {
                500..=599 => Finding::warn(
                    Layer::Request,
                    check,
                    format!("{found}: visitors get an error page, not a 52x"),
                    "the answer is the fallback's or the backend's own error: the backends' checks above say which",
                ),
                _ => Finding::ok(Layer::Request, check, found),
            }
        }
        Sent::Connect(why) => Finding::fail(
            Layer::Request,
            check,
            Some(if why.contains("timed out") { 522 } else { 521 }),
            format!("connect: {why}"),
            "see the listeners above: nothing accepts Cloudflare's connection",
        ),
        Sent::Tls(why) => Finding::fail(
            Layer::Request,
            check,
            Some(525),
            format!("TLS handshake: {why}"),
            "see the certificates above: Cloudflare's handshake fails the same way",
        ),
        Sent::NoAnswer(why) => Finding::fail(
            Layer::Request,
            check,
            Some(520),
            format!("no answer: {why}"),
            "the connection is accepted but nothing HTTP comes back: look at holdfast's log",
        ),
    }
}

/// Sends `GET /` for `host` to `addr` (over TLS with SNI when `tls`), as Cloudflare would.
pub fn send(addr: SocketAddr, host: &str, tls: bool, timeout: Duration) -> Sent {
    let started = Instant::now();
    let tcp = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(tcp) => tcp,
        Err(e) => return Sent::Connect(e.to_string()),
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: holdfast-doctor\r\nCF-Connecting-IP: 192.0.2.1\r\nCF-Ray: 0000000000000000-DOC\r\nConnection: close\r\n\r\n"
    );
    match tls {
        false => exchange(tcp, &request, started),
        true => {
            let connector = SslConnector::builder(SslMethod::tls_client()).map(|mut b| {
                b.set_verify(SslVerifyMode::NONE);
                b.build()
            });
            let configured = connector.and_then(|c| c.configure());
            let Ok(mut config) = configured else {
                return Sent::Tls("cannot set up TLS".into());
            };
            config.set_verify_hostname(false);
            match config.connect(host, tcp) {
                Ok(stream) => exchange(stream, &request, started),
                Err(e) => Sent::Tls(e.to_string()),
            }
        }
    }
}

fn exchange<S: Read + Write>(mut stream: S, request: &str, started: Instant) -> Sent {
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Sent::NoAnswer(e.to_string());
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 64 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => return Sent::NoAnswer(e.to_string()),
        }
    }
    let took = started.elapsed();
    let status = std::str::from_utf8(&got)
        .ok()
        .filter(|t| t.starts_with("HTTP/1."))
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    match status {
        Some(status) => Sent::Answered(status, took),
        None if got.is_empty() => Sent::NoAnswer("closed without a byte".into()),
        None => Sent::NoAnswer("not an HTTP answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Verdict;

    #[test]
    fn request_rows() {
        let ms = Duration::from_millis(3);
        let rows = [
            (Sent::Answered(200, ms), Verdict::Ok, None),
            (Sent::Answered(404, ms), Verdict::Ok, None),
            (Sent::Answered(503, ms), Verdict::Warn, None),
            (
                Sent::Connect("Connection refused (os error 111)".into()),
                Verdict::Fail,
                Some(521),
            ),
            (
                Sent::Connect("connection timed out".into()),
                Verdict::Fail,
                Some(522),
            ),
            (
                Sent::Tls("handshake failure".into()),
                Verdict::Fail,
                Some(525),
            ),
            (
                Sent::NoAnswer("closed without a byte".into()),
                Verdict::Fail,
                Some(520),
            ),
        ];
        for (sent, verdict, code) in rows {
            let f = judge("127.0.0.1:443", "example.com", &sent);
            assert_eq!((f.verdict, f.code), (verdict, code), "{sent:?}");
        }
    }
}
