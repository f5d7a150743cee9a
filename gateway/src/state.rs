//! The health state handed from one process to the next at an upgrade (HAProxy's
//! `server-state-file`): every backend's status, its ejections in the flap window and what is
//! left of its hold-down, matched in the new process by pool, tier, name and address. So the new
//! process sends no request to a backend the old one knew was down. The file names the config
//! file it was written for: a process serving another one ignores it (two instances on one
//! machine never take each other's state), and what it restores is clamped to what the config
//! allows (a hold-down no longer than the pool's `hold_down_max`). An operator's mark (drain,
//! down) is kept whatever the file's age: it is an intent, not an observation that ages.

use holdfast_health::admin::{Admin, Mark};
use holdfast_health::table::PoolHealth;
use holdfast_health::{HealthTable, Status};
use serde_json::{json, Value};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A state file older than this is not used: what it says is no longer news.
const STALE: Duration = Duration::from_secs(60);

/// Writes the state of every backend to `path` (atomically: a new file renamed over the old).
/// Returns how many backends it holds.
pub fn write(path: &Path, config: &str, health: &HealthTable) -> io::Result<usize> {
    let pools = health.pools();
    let backends: Vec<Value> = pools
        .iter()
        .flat_map(|p| p.backends())
        .map(|b| {
            let (status, ago, held) = b.handed_over();
            let admin = b.admin().map(|m| {
                json!({
                    "state": m.admin.as_str(),
                    "by": m.by,
                    "at_ms": millis(m.at),
                })
            });
            json!({
                "pool": &*b.pool,
                "tier": &*b.tier,
                "name": b.backend.name,
                "address": b.backend.address,
                "status": status.as_str(),
                "ejections_ms_ago": ago.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
                "held_down_ms": held.map(|d| d.as_millis() as u64),
                "admin": admin,
            })
        })
        .collect();
    let written = millis(SystemTime::now());
    let doc =
        json!({ "version": 1, "config": config, "written_ms": written, "backends": backends });
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&doc).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)?;
    Ok(backends.len())
}

/// Gives every backend of `pools` the state `path` has for it, if it was written for `config`.
/// Returns how many it matched; a missing, unreadable, stale or foreign file matches none (the
/// start-up probe decides, as always).
pub fn restore(path: &Path, config: &str, pools: &[PoolHealth]) -> Result<usize, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    match doc["config"].as_str() {
        Some(c) if c == config => {}
        Some(other) => return Err(format!("written for another config file ({other})")),
        None => return Err("it names no config file".to_string()),
    }
    let written = doc["written_ms"].as_u64().unwrap_or(0);
    let age = Duration::from_millis(millis(SystemTime::now()).saturating_sub(written));
    let Some(entries) = doc["backends"].as_array() else {
        return Err("no backends in it".to_string());
    };
    let entry = |b: &holdfast_health::BackendHealth| {
        entries.iter().find(|e| {
            e["pool"] == *b.pool
                && e["tier"] == *b.tier
                && e["name"] == b.backend.name
                && e["address"] == b.backend.address
        })
    };
    // An operator's marks, whatever the age.
    for b in pools.iter().flat_map(|p| p.backends()) {
        let Some(mark) = entry(b).and_then(|e| mark_of(&e["admin"])) else {
            continue;
        };
        tracing::info!(pool = %b.pool, backend = %b.backend.name, admin = mark.admin.as_str(), by = %mark.by, "an operator's mark kept from the previous process");
        b.restore_admin(Some(mark));
    }
    if age > STALE {
        return Err(format!(
            "written {} ago: too old to trust",
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        ));
    }
    let mut matched = 0;
    for b in pools.iter().flat_map(|p| p.backends()) {
        let Some(e) = entry(b) else { continue };
        let status = match e["status"].as_str() {
            Some("up") => Status::Up,
            Some("down") => Status::Down,
            _ => continue,
        };
        // Time went on while the file waited: ejections are older, hold-downs shorter.
        let ago: Vec<Duration> = e["ejections_ms_ago"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|ms| Duration::from_millis(ms) + age)
                    .collect()
            })
            .unwrap_or_default();
        let held = e["held_down_ms"]
            .as_u64()
            .map(Duration::from_millis)
            .and_then(|d| d.checked_sub(age));
        b.restore(status, &ago, held);
        matched += 1;
    }
    Ok(matched)
}

/// Milliseconds since the Unix epoch.
fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An operator's mark as the file has it (`null`: none).
fn mark_of(v: &Value) -> Option<Mark> {
    let admin = Admin::from_name(v["state"].as_str()?)?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(v["at_ms"].as_u64()?);
    let by = v["by"].as_str()?.to_string();
    (admin != Admin::Auto).then_some(Mark { admin, by, at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_health::admin::Action;
    use holdfast_health::table::NoObserver;
    use std::sync::Arc;

    #[test]
    fn a_state_is_taken_only_by_a_process_serving_the_same_config_file() {
        let text =
            "[[pools.app.tiers]]\nbackends = [{ name = \"a\", address = \"127.0.0.1:9\" }]\n";
        let config = holdfast_config::from_toml_str(text, Path::new("t.toml")).expect("config");
        let health = HealthTable::new(&config, Arc::new(NoObserver));
        let dir = std::env::temp_dir().join(format!("holdfast-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("state.json");
        health.pools()[0].tiers[0][0].restore(Status::Down, &[], None);
        write(&file, "/etc/holdfast/a.toml", &health).expect("written");
        let pools = health.pools();
        assert_eq!(restore(&file, "/etc/holdfast/a.toml", &pools), Ok(1));
        let other = restore(&file, "/etc/holdfast/b.toml", &pools).unwrap_err();
        assert!(other.contains("another config file"), "{other}");
        // An operator's mark is kept even from a file too old for the health state.
        let b = &pools[0].tiers[0][0];
        health
            .act(b, Action::Drain, "127.0.0.1", true)
            .expect("drained");
        write(&file, "/etc/holdfast/a.toml", &health).expect("written");
        let text = std::fs::read_to_string(&file).expect("read");
        let mut doc: Value = serde_json::from_str(&text).expect("json");
        doc["written_ms"] = 1.into();
        std::fs::write(&file, doc.to_string()).expect("write");
        let fresh = HealthTable::new(&config, Arc::new(NoObserver));
        let stale = restore(&file, "/etc/holdfast/a.toml", &fresh.pools()).unwrap_err();
        assert!(stale.contains("too old"), "{stale}");
        let kept = fresh.pools()[0].tiers[0][0].admin().expect("the mark kept");
        assert_eq!((kept.admin, kept.by.as_str()), (Admin::Drain, "127.0.0.1"));
        std::fs::write(&file, r#"{"version":1,"written_ms":0,"backends":[]}"#).expect("write");
        let unnamed = restore(&file, "/etc/holdfast/a.toml", &pools).unwrap_err();
        assert!(unnamed.contains("names no config file"), "{unnamed}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
