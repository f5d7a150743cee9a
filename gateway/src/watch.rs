//! Reloads when the config file, or a file it names (certificate, key, fallback body), changes
//! on disk, with no signal. The directories are watched rather than the files: editors and
//! config management replace a file by renaming a new one over it, and Kubernetes swaps a
//! symlinked directory. After any change in those directories (debounced, so that an editor's
//! several writes make one reload) the files' contents are compared with what they were: a
//! reload follows only when one of them really changed.

use crate::reload::Reloader;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A change is acted on once no other has come for this long.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Whether an event is a change of content or of which file is there (not a mere read).
fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    )
}

/// The files a reload depends on: the config file and those it names now.
fn files(reloader: &Reloader) -> Vec<PathBuf> {
    std::iter::once(reloader.path().to_path_buf())
        .chain(reloader.named_files())
        .collect()
}

/// What a file holds: the SHA-256 of its bytes (through symlinks), `None` when unreadable.
type Print = Option<[u8; 32]>;

/// What the files hold now.
fn fingerprint(files: &[PathBuf]) -> Vec<Print> {
    files.iter().map(|f| print(f)).collect()
}

fn print(file: &Path) -> Print {
    std::fs::read(file).ok().map(|b| openssl::sha::sha256(&b))
}

/// What the files held when a config was read: taken before they were read, so that a write
/// after this point is a change the watcher applies (at worst a write just before is reloaded
/// once more, which changes nothing).
#[derive(Debug, Default)]
pub struct Loaded(Vec<(PathBuf, Print)>);

impl Loaded {
    /// The config file at `path`, before it is read.
    pub fn before(path: &Path) -> Self {
        Loaded(vec![(path.to_path_buf(), print(path))])
    }

    /// With the files `config` names, before they are read (certificates are read after the
    /// config is; a fallback body as it is, a moment before this).
    pub fn and_named(mut self, config: &holdfast_config::Config) -> Self {
        self.0.extend(config.files().into_iter().map(|f| {
            let p = print(&f);
            (f, p)
        }));
        self
    }
}

/// What is taken as seen after a reload that took: for each file it depends on now, what it
/// held just before the reload read it (`before`, by the files of then), or, for a file the new
/// config names for the first time, what it holds now. Never what the files hold after the
/// reload: a write that landed while it ran would pass for seen, and never be applied.
fn seen_after(wanted: &[PathBuf], before: &[(PathBuf, Print)]) -> Vec<Print> {
    wanted
        .iter()
        .map(|f| match before.iter().find(|(g, _)| g == f) {
            Some((_, p)) => *p,
            None => print(f),
        })
        .collect()
}

/// The directory `file` is in, resolved (absolute, symlinks followed).
fn directory(file: &Path) -> Option<PathBuf> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()
}

/// Starts watching, on the current runtime, until it shuts down. `loaded`: what the files held
/// when the running config was read; anything else found when the watch starts is a change.
pub fn config_files(reloader: Arc<Reloader>, loaded: Loaded) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| is_change(&e.kind)) {
            let _ = tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or `holdfast reload`");
            return;
        }
    };
    let mut watching: HashSet<PathBuf> = HashSet::new();
    let mut wanted = files(&reloader);
    watch_dirs(&mut watcher, &wanted, &mut watching);
    tokio::spawn(async move {
        // Files are read on a blocking thread: one slow to read (a network file system, a
        // FIFO) must not hold up the runtime, which also runs the health checks.
        let Some(mut seen) = blocking(&wanted, move |w| seen_after(w, &loaded.0)).await else {
            return;
        };
        tracing::info!(files = ?wanted, "watching the config file and the files it names");
        // A change between the load and now: as if its event had come.
        let changed = blocking(&wanted, fingerprint)
            .await
            .is_some_and(|now| now != seen);
        let mut first = changed.then_some(());
        while let Some(()) = match first.take() {
            Some(()) => Some(()),
            None => rx.recv().await,
        } {
            // Debounce: wait until DEBOUNCE passes with no further event.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => {}
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let Some(now) = blocking(&wanted, fingerprint).await else {
                continue;
            };
            if now == seen {
                continue;
            }
            let before: Vec<_> = wanted.iter().cloned().zip(now.iter().copied()).collect();
            seen = now;
            let reloaded = reloader.reload("file changed").await;
            if reloaded.is_ok() {
                // A reload may name other files (a new certificate path): watch them too.
                wanted = files(&reloader);
                watch_dirs(&mut watcher, &wanted, &mut watching);
                let Some(after) = blocking(&wanted, move |w| seen_after(w, &before)).await else {
                    continue;
                };
                seen = after;
            }
            // A write while the reload ran has queued its event: it is compared with `seen`
            // on the next round, and reloaded.
        }
    });
}

/// Runs `f` on `files` on a blocking thread; `None` if it could not run.
async fn blocking<T, F>(files: &[PathBuf], f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&[PathBuf]) -> T + Send + 'static,
{
    let files = files.to_vec();
    tokio::task::spawn_blocking(move || f(&files)).await.ok()
}

fn watch_dirs<W: Watcher>(watcher: &mut W, files: &[PathBuf], watching: &mut HashSet<PathBuf>) {
    for dir in files.iter().filter_map(|f| directory(f)) {
        if watching.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watching.insert(dir);
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for config changes")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_seen_is_what_was_there_before_the_reload() {
        let dir = std::env::temp_dir().join(format!("holdfast-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (config, cert) = (dir.join("c.toml"), dir.join("cert.pem"));
        std::fs::write(&config, "first").expect("write");
        let before = vec![(config.clone(), print(&config))];
        // Written while the reload ran, and a file the new config names.
        std::fs::write(&config, "second").expect("write");
        std::fs::write(&cert, "pem").expect("write");
        let seen = seen_after(&[config.clone(), cert.clone()], &before);
        assert_eq!(seen[0], Some(openssl::sha::sha256(b"first")));
        assert_ne!(
            seen[0],
            print(&config),
            "the write during the reload is not seen"
        );
        assert_eq!(seen[1], Some(openssl::sha::sha256(b"pem")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
