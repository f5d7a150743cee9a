//! Reloads when the config file, or a file it names (certificate, key, fallback body), changes
//! on disk, with no signal. The directories are watched rather than the files: editors and
//! config management replace a file by renaming a new one over it. Changes are debounced, so
//! that an editor's several writes make one reload.

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

/// `path` made absolute, its directory resolved (the file itself may be missing for a moment).
fn resolved(path: &Path) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()?;
    Some(dir.join(path.file_name()?))
}

/// The files a reload depends on: the config file and those it names now.
fn files(reloader: &Reloader, named: &[PathBuf]) -> HashSet<PathBuf> {
    std::iter::once(reloader.path())
        .chain(named.iter().map(PathBuf::as_path))
        .filter_map(resolved)
        .collect()
}

/// Starts watching, on the current runtime, until it shuts down. `named`: the files the running
/// config names.
pub fn config_files(reloader: Arc<Reloader>, named: Vec<PathBuf>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if is_change(&event.kind) {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
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
    let mut wanted = files(&reloader, &named);
    watch_dirs(&mut watcher, &wanted, &mut watching);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = wanted.contains(&first);
            // Debounce: wait until DEBOUNCE passes with no further event.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(path)) => changed |= wanted.contains(&path),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if !changed {
                continue;
            }
            crate::systemd::reloading();
            let reloaded = reloader.reload("file changed").await;
            crate::systemd::ready();
            if reloaded.is_ok() {
                // A reload may name other files (a new certificate path): watch them too.
                let named = reloader.named_files();
                wanted = files(&reloader, &named);
                watch_dirs(&mut watcher, &wanted, &mut watching);
            }
        }
    });
}

fn watch_dirs<W: Watcher>(
    watcher: &mut W,
    files: &HashSet<PathBuf>,
    watching: &mut HashSet<PathBuf>,
) {
    for dir in files.iter().filter_map(|f| f.parent()) {
        if watching.contains(dir) {
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watching.insert(dir.to_path_buf());
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for config changes")
            }
        }
    }
}
