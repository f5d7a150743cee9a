//! Reloads when the config file, or a file it names (certificate, key, fallback body), changes
//! on disk, with no signal. The directories are watched rather than the files: editors and
//! config management replace a file by renaming a new one over it, and Kubernetes swaps a
//! symlinked directory. After any change in those directories (debounced, so that an editor's
//! several writes make one reload) the files' contents are compared with what they were: a
//! reload follows only when one of them really changed.

use crate::fingerprint::{print, Loaded, Print};
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

/// What the files hold now.
fn fingerprint(files: &[PathBuf]) -> Vec<Print> {
    files.iter().map(|f| print(f)).collect()
}

/// What the running config was read from, for each file it depends on now: what the reload
/// (or the start) that made it running read, whoever triggered it (a signal, `holdfast reload`,
/// this watcher), or, for a file it did not read, what it holds now. Never what the files hold
/// after that reload: a write that landed while it ran would pass for seen, and never be applied.
fn seen(wanted: &[PathBuf], loaded: &Loaded) -> Vec<Print> {
    wanted
        .iter()
        .map(|f| loaded.of(f).unwrap_or_else(|| print(f)))
        .collect()
}

/// The directory `file` is in, resolved (absolute, symlinks followed).
fn directory(file: &Path) -> Option<PathBuf> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()
}

/// Starts watching, on the current runtime, until it shuts down.
pub fn config_files(reloader: Arc<Reloader>) {
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
        tracing::info!(files = ?wanted, "watching the config file and the files it names");
        // What a reload that failed found: not tried again until the files change once more.
        let mut failed: Option<Vec<Print>> = None;
        // A change between the load and now counts as if its event had come.
        let mut first = Some(());
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
            // Files are read on a blocking thread: one slow to read (a network file system, a
            // FIFO) must not hold up the runtime, which also runs the health checks.
            let loaded = reloader.loaded();
            let Some((now, seen)) =
                blocking(&wanted, move |w| (fingerprint(w), seen(w, &loaded))).await
            else {
                continue;
            };
            if now == seen || failed.as_ref() == Some(&now) {
                continue;
            }
            match reloader.reload("file changed").await {
                Ok(_) => {
                    failed = None;
                    // A reload may name other files (a new certificate path): watch them too.
                    wanted = files(&reloader);
                    watch_dirs(&mut watcher, &wanted, &mut watching);
                }
                Err(_) => failed = Some(now),
            }
            // A write while the reload ran has queued its event: it is compared with what that
            // reload read on the next round, and reloaded.
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
    fn what_counts_as_seen_is_what_the_running_config_read() {
        let dir = std::env::temp_dir().join(format!("holdfast-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (config, cert) = (dir.join("c.toml"), dir.join("cert.pem"));
        std::fs::write(&config, "first").expect("write");
        let loaded = Loaded::before(&config);
        // Written while the reload ran, and a file the new config names.
        std::fs::write(&config, "second").expect("write");
        std::fs::write(&cert, "pem").expect("write");
        let seen = seen(&[config.clone(), cert.clone()], &loaded);
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
