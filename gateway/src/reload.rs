//! Hot reload: the whole file is read and validated (as `holdfast check` does), the complete
//! new runtime is built, and it is swapped in at once. A request sees the old runtime or the
//! new one, never a mixture, and a request in flight finishes on the one it started with. An
//! invalid file changes nothing.
//!
//! What a reload changes is decided by plain functions ([`restart_needed`]); [`Reloader`] does
//! the reading, probing and swapping.

use crate::events::Event;
use crate::fingerprint::Loaded;
use crate::listen::Listeners;
use crate::metrics::Metrics;
use crate::runtime::{Hashes, Runtime, Version};
use arc_swap::ArcSwap;
use holdfast_config::EventKind;
use holdfast_config::{Config, ConfigError, Problem};
use holdfast_health::checker::{CheckLoops, NetProber};
use holdfast_health::HealthTable;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Reads and validates the config file at `path`; with it, its [`Hashes`].
pub fn read(path: &Path) -> Result<(Config, Hashes), ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            path,
            vec![Problem::new("", format!("cannot read file: {e}"))],
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        ConfigError::new(path, vec![Problem::new("", format!("not UTF-8 text: {e}"))])
    })?;
    let config = holdfast_config::from_toml_str(&text, path)?;
    let hashes = Hashes {
        file: hex(&openssl::sha::sha256(text.as_bytes())),
        serving: serving_hash(&text),
    };
    Ok((config, hashes))
}

/// The SHA-256 of the config without `[listen]` and `[log]`, written in one canonical form
/// (keys sorted, no comments). Sorted here rather than by relying on `toml::Table`'s order,
/// which is the file's own once any crate turns on toml's `preserve_order`. The text has been
/// validated already.
fn serving_hash(text: &str) -> String {
    let mut table = text.parse::<toml::Table>().unwrap_or_default();
    table.remove("listen");
    table.remove("log");
    let mut canonical = String::new();
    canon(&toml::Value::Table(table), &mut canonical);
    hex(&openssl::sha::sha256(canonical.as_bytes()))
}

fn canon(value: &toml::Value, out: &mut String) {
    use std::fmt::Write;
    match value {
        toml::Value::Table(t) => {
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                let _ = write!(out, "{k:?}=");
                canon(&t[k], out);
                out.push(',');
            }
            out.push('}');
        }
        toml::Value::Array(a) => {
            out.push('[');
            for v in a {
                canon(v, out);
                out.push(',');
            }
            out.push(']');
        }
        toml::Value::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the running process cannot take from a new config without a restart, each with why.
/// The rest of the reload applies.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<String> {
    let mut needs = Vec::new();
    if running.listen.admin != new.listen.admin {
        needs.push(format!(
            "listen.admin: the admin listener stays on {} until a restart (or an upgrade)",
            running.listen.admin
        ));
    }
    if running.log.json != new.log.json {
        needs.push("log.format: the log keeps its format until a restart (or an upgrade)".into());
    }
    if running.log.access != new.log.access {
        needs.push(
            "log.access: the access log keeps its file and settings until a restart (or an upgrade)"
                .into(),
        );
    }
    needs
}

/// What a reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub generation: u64,
    pub hash: String,
    pub summary: String,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub backends_kept: usize,
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    pub fn to_json(&self) -> Value {
        json!({
            "result": "success",
            "generation": self.generation,
            "hash": self.hash,
            "summary": self.summary,
            "backends": {
                "added": self.backends_added,
                "removed": self.backends_removed,
                "kept": self.backends_kept,
            },
            "listeners": {
                "added": self.listeners_added,
                "removed": self.listeners_removed,
            },
            "needs_restart": self.needs_restart,
        })
    }
}

/// Why a reload did not take; the running config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is not a valid config: every problem, as `holdfast check` prints them.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// Valid, but it could not be applied (a new listener address in use, a certificate that
    /// does not load).
    #[error("{0}")]
    Apply(String),
}

impl ReloadError {
    pub fn to_json(&self) -> Value {
        let problems: Vec<String> = match self {
            ReloadError::Invalid(e) => e.to_string().lines().map(str::to_string).collect(),
            ReloadError::Apply(why) => vec![why.clone()],
        };
        json!({ "result": "failure", "problems": problems })
    }
}

/// Reloads the config file into the running process; one reload at a time.
pub struct Reloader {
    path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
    health: Arc<HealthTable>,
    prober: Arc<NetProber>,
    checks: Arc<Mutex<CheckLoops<NetProber>>>,
    listeners: Arc<Listeners>,
    metrics: Metrics,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// The last reload: when, by what, and its result (for `/status`).
    last: Mutex<Option<Value>>,
    /// Configs replaced by reloads, until nothing holds them.
    retired: Mutex<Vec<std::sync::Weak<Runtime>>>,
    /// What the files of the running config held when it was read.
    loaded: Mutex<Arc<Loaded>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish()
    }
}

impl Reloader {
    /// `loaded`: the config file, and what it and the files it names held when the running
    /// config was read.
    pub fn new(
        loaded: Loaded,
        runtime: Arc<ArcSwap<Runtime>>,
        health: Arc<HealthTable>,
        prober: Arc<NetProber>,
        checks: Arc<Mutex<CheckLoops<NetProber>>>,
        listeners: Arc<Listeners>,
        metrics: Metrics,
    ) -> Self {
        Reloader {
            path: loaded.path().to_path_buf(),
            runtime,
            health,
            prober,
            checks,
            listeners,
            metrics,
            one_at_a_time: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
            retired: Mutex::new(Vec::new()),
            loaded: Mutex::new(Arc::new(loaded)),
        }
    }

    /// What the files of the running config held when it was read (at start or by the last
    /// reload that took, whatever triggered it).
    pub fn loaded(&self) -> Arc<Loaded> {
        lock(&self.loaded).clone()
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last reload (`None` before the first): its time, trigger and result, as JSON.
    pub fn last(&self) -> Option<Value> {
        lock(&self.last).clone()
    }

    /// Remembers a config that was replaced, to see when nothing holds it any more.
    fn retire(&self, old: &Arc<Runtime>) {
        let mut retired = lock(&self.retired);
        retired.retain(|r| r.strong_count() > 0);
        retired.push(Arc::downgrade(old));
    }

    /// How many configs are still held in memory: the running one, and replaced ones that a
    /// request or connection still uses (a tunnel, a slow answer). More than a few for long
    /// after reloads means something holds old configs.
    pub fn generations_live(&self) -> usize {
        let retired = lock(&self.retired);
        1 + retired.iter().filter(|r| r.strong_count() > 0).count()
    }

    /// The files the running config names.
    pub fn named_files(&self) -> Vec<PathBuf> {
        self.runtime.load().config.files()
    }

    /// Reads the config file again and, if it is valid, makes it the running config; `why`
    /// names the trigger in the log. systemd hears RELOADING before and READY after, whatever
    /// the trigger.
    pub async fn reload(&self, why: &str) -> Result<Reloaded, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        tracing::info!(trigger = why, "reloading the config");
        crate::systemd::reloading();
        let result = self.apply().await;
        crate::systemd::ready();
        self.metrics.reloaded(result.is_ok());
        let mut last = match &result {
            Ok(r) => r.to_json(),
            Err(e) => e.to_json(),
        };
        last["trigger"] = why.into();
        last["at"] = humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .into();
        *lock(&self.last) = Some(last);
        match &result {
            Ok(r) => {
                tracing::info!(
                    trigger = why,
                    generation = r.generation,
                    hash = %r.hash,
                    backends_added = r.backends_added,
                    backends_removed = r.backends_removed,
                    listeners_added = ?r.listeners_added,
                    listeners_removed = ?r.listeners_removed,
                    "config reloaded: {}",
                    r.summary
                );
                for what in &r.needs_restart {
                    tracing::warn!("reload: needs a restart: {what}");
                }
            }
            Err(e) => {
                tracing::error!(
                    trigger = why,
                    "config reload failed; the running config keeps serving:\n{e}"
                );
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("").to_string();
                let mut event = Event::new(EventKind::ReloadFailed, first);
                event.detail = Some(format!("trigger: {why}\n{text}"));
                self.metrics.event(event);
            }
        }
        result
    }

    async fn apply(&self) -> Result<Reloaded, ReloadError> {
        // Everything that can fail comes first: nothing has changed if it does. Reading the
        // files, resolving names, loading certificates and binding new addresses block, so they
        // run on a blocking thread: the runtime they would hold up also runs the health checks.
        let (path, listeners) = (self.path.clone(), self.listeners.clone());
        let (config, hashes, listening, loaded) = tokio::task::spawn_blocking(move || {
            let before = Loaded::before(&path);
            let (config, hashes) = read(&path)?;
            let loaded = before.and_named(&config);
            let listening = listeners.prepare(&config).map_err(ReloadError::Apply)?;
            Ok::<_, ReloadError>((config, hashes, listening, loaded))
        })
        .await
        .map_err(|e| ReloadError::Apply(format!("the reload stopped: {e}")))??;
        let running = self.runtime.load_full();
        let needs_restart = restart_needed(&running.config, &config);
        let plan = self.health.plan(&config);
        // New backends are probed by every check before the config that has them serves.
        self.health
            .probe_once(&plan.pools, &plan.added, &self.prober)
            .await;
        self.health.commit(&plan);
        let version = Version {
            generation: running.generation + 1,
            hashes,
        };
        let runtime = Runtime::new(
            Arc::new(config),
            version,
            self.health.clone(),
            plan.pools.clone(),
            self.metrics.clone(),
            Some(&running),
        );
        let summary = runtime.config.summary();
        self.metrics
            .running(&runtime.hashes.file, runtime.generation, runtime.loaded_at);
        let (generation, hash) = (runtime.generation, runtime.hashes.file.clone());
        self.runtime.store(Arc::new(runtime));
        *lock(&self.loaded) = Arc::new(loaded);
        self.retire(&running);
        let (listeners_added, listeners_removed) = self.listeners.commit(listening);
        lock(&self.checks).sync();
        Ok(Reloaded {
            generation,
            hash,
            summary,
            backends_added: plan.added.len(),
            backends_removed: plan.removed.len(),
            backends_kept: plan.kept(),
            listeners_added,
            listeners_removed,
            needs_restart,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain assignments under these locks: a panic cannot leave them half-done.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(admin: &str) -> Config {
        let text = format!(
            "[listen]\nadmin = \"{admin}\"\n[[pools.app.tiers]]\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n"
        );
        holdfast_config::from_toml_str(&text, Path::new("t.toml")).expect("config")
    }

    #[test]
    fn only_the_admin_address_needs_a_restart() {
        let a = config("127.0.0.1:9180");
        assert!(restart_needed(&a, &a).is_empty());
        let b = config("127.0.0.1:9181");
        let needs = restart_needed(&a, &b);
        assert_eq!(needs.len(), 1);
        assert!(needs[0].starts_with("listen.admin"), "{needs:?}");
    }

    #[test]
    fn the_hash_is_sha256_of_the_file_and_the_serving_hash_ignores_listen_log_and_layout() {
        let dir = std::env::temp_dir().join(format!("holdfast-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("c.toml");
        let hashes = |text: &str| {
            std::fs::write(&path, text).expect("write");
            read(&path).expect("valid").1
        };
        let first = hashes("[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:9\" }]\n");
        // As `sha256sum` prints it for the same bytes.
        assert_eq!(
            first.file,
            "4f5a10cf876369f502717c0cc0f2af2ae6ea04378547e58f43ae19b7beaee4c0"
        );
        // Another machine's addresses, a log, comments, key order: another file, the same
        // serving config.
        let same = hashes(
            "# this machine\n[listen]\nhttp = [\"10.0.0.2:80\"]\n[log]\nformat = \"json\"\n\n\
             [[pools.app.tiers]]\nbackends = [ { address = \"127.0.0.1:9\" } ] # one\n",
        );
        assert_ne!(same.file, first.file);
        assert_eq!(same.serving, first.serving);
        let other = hashes("[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:10\" }]\n");
        assert_ne!(other.serving, first.serving, "another backend");
        let routed = hashes(
            "[pools.app]\nmax_attempts = 3\n[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:9\" }]\n",
        );
        assert_ne!(routed.serving, first.serving, "another pool setting");
        std::fs::write(&path, "[[pools.app.tiers]]\n").expect("write");
        assert!(read(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
