//! The process's log (issue 23): `[log] format = "json"` writes every event as one JSON line
//! (for journald, Loki); the format changes only at a restart, and a reload says so.

use holdfast_tests::{backend, Gateway};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_is_one_json_object_per_line() {
    let a = backend("a").await;
    let pools = |format: &str| {
        format!(
            "[log]\nformat = \"{format}\"\n[[pools.app.tiers]]\nbackends = [{{ name = \"a\", address = \"{}\" }}]\n",
            a.addr()
        )
    };
    let gw = Gateway::start(&pools("json")).await;
    let log = gw.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    let up = lines
        .iter()
        .find(|l| l["message"] == "backend up")
        .unwrap_or_else(|| panic!("no backend up event: {log}"));
    assert_eq!(up["level"], "INFO");
    assert_eq!(up["pool"], "app");
    assert_eq!(up["backend"], "a");
    assert!(up["timestamp"].is_string());

    gw.rewrite(None, &pools("text"));
    let out = gw.reload();
    assert!(out.contains("needs a restart: log.format"), "{out}");
}
