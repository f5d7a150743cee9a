//! A backend process whose faults a test turns on and off: the fault-matrix suite
//! (`tests/tests/faults.rs`) starts it inside its network namespace, sends it commands on its
//! standard input, and stops (SIGSTOP) or kills it by its PID.
//!
//! `fault-backend NAME ADDRESS [--tls]` prints `ready ADDRESS` once it listens. It answers every
//! request (health checks included) as the mode in force says, read when a request head has
//! arrived, so a change reaches open keep-alive connections at their next request. Commands, one
//! per line, each acknowledged with a line `done`:
//!
//! - `ok`: 200 with `X-Backend: NAME` (the default)
//! - `status N`: that status for everything
//! - `reset`: the head is read, then the connection reset (RST) before any answer byte
//! - `close`: a new connection is closed at once; an open one is closed when its next head comes
//! - `garbage`: something that is not HTTP instead of an answer, then the connection closed
//! - `slow MS`: the answer's head written MS milliseconds after the request head
//! - `hang`: the head is read and never answered
//! - `stall`: no more accepts, the accept queue filled (new SYNs go unanswered), and open
//!   connections hang: a machine out of workers
//! - `unlisten`, `listen ADDRESS`: the listening socket closed, or moved to ADDRESS
//!
//! The process exits when its standard input closes (the test that started it has gone).
#![allow(clippy::unwrap_used)]

use openssl::ssl::SslAcceptor;
use std::io::BufRead;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_openssl::SslStream;

/// Room for a burst of new connections (a gateway's clients all coming back at once); `stall`
/// fills it with connections of its own.
const BACKLOG: u32 = 128;

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Ok,
    Status(u16),
    Reset,
    Close,
    Garbage,
    Slow(Duration),
    Hang,
    Stall,
}

enum Command {
    Mode(Mode),
    Listen(SocketAddr),
    Unlisten,
}

fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let word = words.next().unwrap_or("");
    let arg = words.next();
    let number = |what: &str| -> Result<u64, String> {
        arg.and_then(|a| a.parse().ok())
            .ok_or(format!("{what} needs a number"))
    };
    Ok(match word {
        "ok" => Command::Mode(Mode::Ok),
        "status" => Command::Mode(Mode::Status(number("status")? as u16)),
        "reset" => Command::Mode(Mode::Reset),
        "close" => Command::Mode(Mode::Close),
        "garbage" => Command::Mode(Mode::Garbage),
        "slow" => Command::Mode(Mode::Slow(Duration::from_millis(number("slow")?))),
        "hang" => Command::Mode(Mode::Hang),
        "stall" => Command::Mode(Mode::Stall),
        "unlisten" => Command::Unlisten,
        "listen" => Command::Listen(
            arg.and_then(|a| a.parse().ok())
                .ok_or("listen needs an address")?,
        ),
        other => return Err(format!("unknown command {other:?}")),
    })
}

struct Backend {
    name: String,
    tls: Option<SslAcceptor>,
    mode: watch::Receiver<Mode>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: fault-backend NAME ADDRESS [--tls]");
        std::process::exit(2);
    }
    let address: SocketAddr = args[2].parse().expect("an address");
    let tls = (args.get(3).map(String::as_str) == Some("--tls"))
        .then(|| holdfast_tests::tls::self_signed("localhost"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args[1].clone(), address, tls));
}

async fn run(name: String, address: SocketAddr, tls: Option<SslAcceptor>) {
    let (mode_tx, mode) = watch::channel(Mode::Ok);
    let backend = Arc::new(Backend { name, tls, mode });
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if commands_tx.send(parse(&line)).is_err() {
                return;
            }
        }
        std::process::exit(0);
    });

    let mut listening = Some(listen(&backend, address));
    println!("ready {address}");
    while let Some(command) = commands.recv().await {
        match command {
            Ok(Command::Mode(m)) => {
                mode_tx.send_replace(m);
            }
            Ok(Command::Unlisten) => {
                if let Some(task) = listening.take() {
                    task.abort();
                    let _ = task.await;
                }
            }
            Ok(Command::Listen(addr)) => {
                if let Some(task) = listening.take() {
                    task.abort();
                    let _ = task.await;
                }
                listening = Some(listen(&backend, addr));
            }
            Err(e) => eprintln!("fault-backend: {e}"),
        }
        println!("done");
    }
}

/// Binds `addr` (retrying while the old socket lets go of it) and accepts until aborted.
fn listen(backend: &Arc<Backend>, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = bind(addr);
    let backend = backend.clone();
    tokio::spawn(async move {
        let mut mode = backend.mode.clone();
        loop {
            if *mode.borrow_and_update() == Mode::Stall {
                // Connections of its own fill the accept queue: then the kernel leaves new SYNs
                // unanswered, as on a machine whose server stopped accepting.
                let addr = listener.local_addr().unwrap();
                let mut filler = Vec::new();
                while let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
                {
                    filler.push(s);
                }
                while *mode.borrow_and_update() == Mode::Stall {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                drop(filler);
            }
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if *backend.mode.borrow() == Mode::Close {
                        drop(stream);
                        continue;
                    }
                    tokio::spawn(serve(backend.clone(), stream));
                }
                _ = mode.changed() => {}
            }
        }
    })
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket.listen(BACKLOG).unwrap()
}

async fn serve(backend: Arc<Backend>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    match &backend.tls {
        None => exchange(&backend, stream).await,
        Some(acceptor) => {
            let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                return;
            };
            let Ok(mut tls) = SslStream::new(ssl, stream) else {
                return;
            };
            if Pin::new(&mut tls).accept().await.is_ok() {
                exchange(&backend, tls).await;
            }
        }
    }
}

/// The TCP connection under a stream, to reset it.
trait Tcp {
    fn tcp(&self) -> &TcpStream;
}

impl Tcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Tcp for SslStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// Requests on one connection until it closes or the mode ends it.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Tcp>(backend: &Backend, mut stream: S) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        // A body, when there is one, is read and dropped.
        let mut body = content_length(&head);
        while body > 0 {
            if buf.is_empty() {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let take = body.min(buf.len());
            buf.drain(..take);
            body -= take;
        }
        let close = head.starts_with("get / http/1.0")
            || head.contains(" http/1.0\r\n")
            || head.contains("\r\nconnection: close");
        let mode = backend.mode.borrow().clone();
        let status = match mode {
            Mode::Ok => 200,
            Mode::Status(s) => s,
            Mode::Slow(wait) => {
                tokio::time::sleep(wait).await;
                200
            }
            Mode::Reset => {
                let _ = stream.tcp().set_zero_linger();
                return;
            }
            Mode::Close => return,
            Mode::Garbage => {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n\r\n").await;
                let _ = stream.shutdown().await;
                return;
            }
            Mode::Hang | Mode::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        };
        let body = format!("{} {status}\n", backend.name);
        let answer = format!(
            "HTTP/1.1 {status} {}\r\nX-Backend: {}\r\nContent-Length: {}\r\n{}\r\n{body}",
            if status == 200 { "OK" } else { "Fault" },
            backend.name,
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        if stream.write_all(answer.as_bytes()).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
