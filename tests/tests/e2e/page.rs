//! The status page in a real browser (issue 23): Debian's chromium, headless, driven over
//! WebDriver (its chromium-driver, through the `fantoccini` crate). The page shows the pools;
//! a backend stopped shows as down without a reload of the page, within 3 s, and its refused
//! connect as a would-be 521 of the last minute; the drain button drains it; a screenshot is
//! saved (target/status-page.png).

use fantoccini::{Client, ClientBuilder, Locator};
use holdfast_tests::gateway::{ADMIN_TOKEN, ADMIN_TOKEN_LISTEN};
use holdfast_tests::ports::free_loopback;
use holdfast_tests::{backend, wait_until, Gateway};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// chromedriver, started by this test and stopped by its PID.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// A headless chromium under WebDriver, or `None` (and why) where there is none.
async fn browser() -> Option<(Driver, Client)> {
    if Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_err()
    {
        let why = "chromedriver is missing: apt-get install chromium chromium-driver";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    let port = free_loopback().port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    wait_until(Duration::from_secs(10), "chromedriver listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,800"] }),
    );
    let client = ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");
    Some((driver, client))
}

/// Waits (`limit` at most) until the page shows an element for `css`, without reloading it.
async fn until_shown(client: &Client, css: &str, what: &str, limit: Duration) {
    let what = format!("the page shows {what}");
    wait_until(limit, &what, || shows(client, css)).await;
}

/// Whether the page shows an element for `css` now.
async fn shows(client: &Client, css: &str) -> bool {
    client.find(Locator::Css(css)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_a_backend_and_drains_it() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let (primary, backup) = (backend("primary").await, backend("backup").await);
    let gw = Gateway::start_with_listen(
        ADMIN_TOKEN_LISTEN,
        &format!(
            "[pools.app.health.tcp]\ninterval = \"1s\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\
             [[pools.app.tiers]]\nbackends = [{{ name = \"primary\", address = \"{}\" }}]\n\
             [[pools.app.tiers]]\nbackends = [{{ name = \"backup\", address = \"{}\" }}]\n",
            primary.addr(),
            backup.addr()
        ),
    )
    .await;
    client.goto(&gw.admin_url("/")).await.expect("the page");
    let primary_up = r#"[data-pool="app"] tr[data-backend="primary"] [data-state="up"]"#;
    until_shown(
        &client,
        primary_up,
        "the primary up",
        Duration::from_secs(5),
    )
    .await;
    // A mark on the page: gone if it were reloaded.
    client
        .execute("window.notReloaded = true; return true;", vec![])
        .await
        .unwrap();

    // The client is made before the stop: making one takes long enough in a test build for
    // the health check to notice the stop before the first request does. The check runs once
    // a second, so that it rarely comes between the stop and the first request (every 200 ms,
    // it did now and then under the whole suite's load, and the page showed no 521).
    let visitor = holdfast_tests::client();
    primary.stop();
    // Requests at once, before a check notices: the first meets the refusal (a would-be 521).
    for _ in 0..5 {
        let _ = visitor.get(gw.url("/")).send().await;
    }
    let primary_down = r#"[data-pool="app"] tr[data-backend="primary"] [data-state="down"]"#;
    until_shown(
        &client,
        primary_down,
        "the primary down",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        shows(&client, r#"[data-pool="app"] .backup"#).await,
        "serving from the backup"
    );
    // The page follows /status once a second; under the whole suite's load (and chromium's)
    // a few seconds more may pass before it shows.
    wait_until(
        Duration::from_secs(15),
        "the page shows the 521 of the last minute",
        || async {
            match client
                .find(Locator::Css(r#"[data-pool="app"] [data-last-minute]"#))
                .await
            {
                Ok(e) => e.text().await.is_ok_and(|t| t.contains("521 ×")),
                Err(_) => false,
            }
        },
    )
    .await;
    let same_page = client
        .execute("return window.notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same_page,
        serde_json::Value::Bool(true),
        "updated without a reload"
    );

    // Back, then drained from the page (the token typed in; the confirmation accepted).
    primary.restart().await.unwrap();
    until_shown(
        &client,
        primary_up,
        "the primary up again",
        Duration::from_secs(5),
    )
    .await;
    let token = client.find(Locator::Id("token")).await.unwrap();
    token.send_keys(ADMIN_TOKEN).await.unwrap();
    client
        .execute(
            "document.getElementById('token').dispatchEvent(new Event('change')); return true;",
            vec![],
        )
        .await
        .unwrap();
    let drain = r#"[data-pool="app"] tr[data-backend="primary"] button[data-action="drain"]"#;
    client
        .find(Locator::Css(drain))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client.accept_alert().await.expect("the confirmation");
    let drained = r#"[data-pool="app"] tr[data-backend="primary"] [data-admin="drain"]"#;
    until_shown(
        &client,
        drained,
        "the primary drained",
        Duration::from_secs(5),
    )
    .await;
    let status = gw.status().await;
    assert!(status.contains("\"state\": \"drain\""), "{status}");

    let png = client.screenshot().await.unwrap();
    std::fs::create_dir_all("../target").ok();
    let _ = std::fs::write("../target/status-page.png", png);
    client.close().await.unwrap();
}
