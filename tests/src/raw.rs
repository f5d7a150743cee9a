//! A raw HTTP/1.1 backend for tests of the data path: it answers each request with the bytes a
//! test gives it (chunked, close-delimited, 1xx, 101 followed by an echo), and keeps every
//! request it received, byte for byte.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the backend does with one request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The bytes to send back.
    pub bytes: Vec<u8>,
    /// Close the connection after sending them.
    pub close: bool,
    /// After sending, echo whatever arrives (an upgraded connection).
    pub echo: bool,
}

impl Answer {
    pub fn keep(bytes: &[u8]) -> Answer {
        Answer {
            bytes: bytes.to_vec(),
            close: false,
            echo: false,
        }
    }

    pub fn close(bytes: &[u8]) -> Answer {
        Answer {
            bytes: bytes.to_vec(),
            close: true,
            echo: false,
        }
    }

    pub fn upgrade(bytes: &[u8]) -> Answer {
        Answer {
            bytes: bytes.to_vec(),
            close: false,
            echo: true,
        }
    }
}

/// A running raw backend.
pub struct RawBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    /// Answers every request with `answer(request_head)`. Request bodies are read by their
    /// `Content-Length` (chunked bodies up to the terminating `0\r\n\r\n`).
    pub async fn start<F>(answer: F) -> RawBackend
    where
        F: Fn(&[u8]) -> Answer + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (seen, answer) = (seen2.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut s, &mut buf).await else {
                            return;
                        };
                        let a = answer(&request);
                        seen.lock().unwrap().push(request);
                        if s.write_all(&a.bytes).await.is_err() {
                            return;
                        }
                        if a.echo {
                            let (mut r, mut w) = s.split();
                            if !buf.is_empty() {
                                let _ = w.write_all(&buf).await;
                            }
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            return;
                        }
                        if a.close {
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        RawBackend { addr, seen, task }
    }

    /// Every request received so far (head and body), in order.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
            let mut total = end + 4;
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                total += len;
            } else if head.contains("transfer-encoding: chunked") {
                match find(&buf[end + 4..], b"0\r\n\r\n") {
                    Some(at) => total += at + 5,
                    None => total = usize::MAX,
                }
            }
            if total != usize::MAX && buf.len() >= total {
                let request: Vec<u8> = buf.drain(..total).collect();
                return Some(request);
            }
        }
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
