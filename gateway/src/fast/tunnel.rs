//! An upgraded connection (WebSocket, after a `101 Switching Protocols` to a request that asked
//! for it): bytes pass both ways as they come until either side closes, or until nothing has
//! passed either way for the pool's `tunnel_idle_timeout`. A half-close is passed on, so a side
//! that finished sending still gets the other side's last bytes.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Bytes read per wake-up, each way.
const CHUNK: usize = 16 * 1024;

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed, or one failed.
    Closed,
    /// Nothing passed either way for the idle timeout.
    Idle,
}

/// Passes bytes between `visitor` and `backend` until the tunnel ends. A write that cannot
/// complete within `idle` ends it too.
pub async fn run<V, B>(visitor: &mut V, backend: &mut B, idle: Duration) -> Ended
where
    V: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut from_visitor = vec![0u8; CHUNK];
    let mut from_backend = vec![0u8; CHUNK];
    let (mut visitor_open, mut backend_open) = (true, true);
    let mut quiet_until = Instant::now() + idle;
    while visitor_open || backend_open {
        let moved = tokio::select! {
            read = visitor.read(&mut from_visitor), if visitor_open => {
                pass(read, &from_visitor, backend, &mut visitor_open, idle).await
            }
            read = backend.read(&mut from_backend), if backend_open => {
                pass(read, &from_backend, visitor, &mut backend_open, idle).await
            }
            () = tokio::time::sleep_until(quiet_until) => return Ended::Idle,
        };
        if !moved {
            return Ended::Closed;
        }
        quiet_until = Instant::now() + idle;
    }
    Ended::Closed
}

/// Writes what one side read to the other; at its end, shuts the other's write side. `false`
/// when the tunnel cannot go on.
async fn pass<W: AsyncWrite + Unpin>(
    read: std::io::Result<usize>,
    data: &[u8],
    to: &mut W,
    open: &mut bool,
    idle: Duration,
) -> bool {
    let written = match read {
        Ok(0) => {
            *open = false;
            tokio::time::timeout(idle, to.shutdown()).await
        }
        Ok(n) => {
            tokio::time::timeout(idle, async {
                to.write_all(&data[..n]).await?;
                to.flush().await
            })
            .await
        }
        Err(_) => return false,
    };
    matches!(written, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_pass_both_ways_until_both_close() {
        let (mut visitor, mut visitor_end) = tokio::io::duplex(1024);
        let (mut backend, mut backend_end) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(async move {
            run(&mut visitor_end, &mut backend_end, Duration::from_secs(60)).await
        });
        visitor.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        backend.write_all(b"pong").await.unwrap();
        visitor.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // The visitor stops sending: the backend sees the end and may still answer.
        visitor.shutdown().await.unwrap();
        assert_eq!(backend.read(&mut got).await.unwrap(), 0);
        backend.write_all(b"last").await.unwrap();
        visitor.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"last");
        drop(backend);
        assert_eq!(tunnel.await.unwrap(), Ended::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_tunnel_ends_after_the_idle_timeout_and_traffic_restarts_it() {
        let (mut visitor, mut visitor_end) = tokio::io::duplex(1024);
        let (_backend, mut backend_end) = tokio::io::duplex(1024);
        let started = Instant::now();
        let tunnel = tokio::spawn(async move {
            run(&mut visitor_end, &mut backend_end, Duration::from_secs(30)).await
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        visitor.write_all(b"x").await.unwrap();
        assert_eq!(tunnel.await.unwrap(), Ended::Idle);
        let lasted = started.elapsed();
        assert!(
            (Duration::from_secs(50)..Duration::from_secs(51)).contains(&lasted),
            "idle 30 s after the last byte at 20 s: {lasted:?}"
        );
    }
}
