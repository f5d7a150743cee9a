//! Free loopback ports for gateways (which bind their own listeners from the config).
//!
//! Ports come from a range below Linux's ephemeral range (32768-60999), so they cannot collide
//! with the source ports of outgoing connections, and each test process starts at an offset of
//! its own. A port is checked free by binding it just before it is handed out.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};

const FIRST: u16 = 20_000;
const SPAN: u16 = 12_000;

static NEXT: AtomicU16 = AtomicU16::new(0);

/// A loopback address whose port was free a moment ago.
pub fn free_loopback() -> SocketAddr {
    let offset = (std::process::id() % u32::from(SPAN / 4)) as u16 * 4;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset.wrapping_add(n) % SPAN);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}
