//! Support for the end-to-end tests: the real `holdfast` binary started as a process with a
//! generated config, real backends ([`holdfast::demo::DemoBackend`]) on loopback, a load
//! generator that records what every visitor saw, and polling helpers with deadlines.
#![allow(clippy::unwrap_used)]

pub mod fault;
pub mod gateway;
pub mod load;
pub mod netns;
pub mod other;
pub mod ports;
pub mod raw;
pub mod tls;

pub use gateway::Gateway;
pub use holdfast::demo::DemoBackend;
pub use load::{Load, LoadReport};

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A backend on a free loopback port.
pub async fn backend(name: &str) -> DemoBackend {
    DemoBackend::start(name, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start a backend")
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A keep-alive HTTP client that never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}
