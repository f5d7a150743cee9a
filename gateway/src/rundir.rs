//! Where a running holdfast keeps its runtime files (the upgrade socket, its ready file, the
//! health state handed to the next process, the pid file): a private directory, never a place
//! another local user can write to. Whoever can create the upgrade socket first receives the
//! listening sockets at the next upgrade; whoever can plant a state file can hold backends down.
//!
//! The directory: `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
//! `$XDG_RUNTIME_DIR/holdfast`, else `/run/holdfast` as root, else `holdfast-UID` in the system's
//! temporary directory; created 0700 when missing. Its files are named after the config file's
//! path, so two instances with different config files never share one.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The runtime files of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    pub upgrade_sock: PathBuf,
    /// The admin endpoints, for this user only: what `holdfast reload|upgrade|backend` use.
    pub control_sock: PathBuf,
    pub state_file: PathBuf,
    pub pid_file: PathBuf,
}

/// Why a runtime path is refused.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{dir}: cannot create the runtime directory: {source}")]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: cannot read the runtime directory: {source}")]
    Inspect {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{dir}: refused as a place for runtime files: writable by other users (mode {mode:o}); \
         use a private directory (0700), e.g. systemd's RuntimeDirectory="
    )]
    WritableByOthers { dir: PathBuf, mode: u32 },
    #[error(
        "{dir}: refused as a place for runtime files: owned by uid {owner}, not by this \
         process's user (uid {uid}) or root"
    )]
    OwnedByOther { dir: PathBuf, owner: u32, uid: u32 },
}

/// The default runtime directory, from the environment (see the module doc).
pub fn default_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = env("RUNTIME_DIRECTORY") {
        // systemd lists one per RuntimeDirectory= entry, separated by colons.
        let first = dirs.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(dir) = first.filter(|d| d.is_absolute()) {
            return dir;
        }
    }
    if let Some(xdg) = env("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if xdg.is_absolute() {
            return xdg.join("holdfast");
        }
    }
    match uid() {
        0 => PathBuf::from("/run/holdfast"),
        uid => std::env::temp_dir().join(format!("holdfast-{uid}")),
    }
}

/// The files of the instance serving `config`, in `dir`: named after the config file's
/// absolute path, so that another instance's are other files.
pub fn files_for(dir: &Path, config: &Path) -> RunFiles {
    let key = instance_key(config);
    RunFiles {
        upgrade_sock: dir.join(format!("{key}.upgrade.sock")),
        control_sock: dir.join(format!("{key}.control.sock")),
        state_file: dir.join(format!("{key}.state.json")),
        pid_file: dir.join(format!("{key}.pid")),
    }
}

/// A short name for the instance serving `config`: the config file's name and a hash of its
/// absolute path (`holdfast-3f2a9c1d0b7e`).
pub fn instance_key(config: &Path) -> String {
    let path = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let hash = openssl::sha::sha256(path.as_os_str().as_encoded_bytes());
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        .unwrap_or_else(|| "holdfast".to_string());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{stem}-{hex}")
}

/// Creates `dir` (0700) if it is missing, then checks it is private: see [`check_private`].
pub fn ensure_private(dir: &Path) -> Result<(), RunDirError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| RunDirError::Create {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    check_private(dir)
}

/// Checks that only this process's user (or root) can put files in `dir`: owned by it or by
/// root, and writable by neither group nor others (so `/tmp`, sticky or not, is refused).
pub fn check_private(dir: &Path) -> Result<(), RunDirError> {
    let meta = std::fs::metadata(dir).map_err(|source| RunDirError::Inspect {
        dir: dir.to_path_buf(),
        source,
    })?;
    judge(dir, meta.uid(), meta.mode(), uid())
}

/// The rule of [`check_private`], on a directory's owner and mode.
fn judge(dir: &Path, owner: u32, mode: u32, uid: u32) -> Result<(), RunDirError> {
    if owner != uid && owner != 0 {
        return Err(RunDirError::OwnedByOther {
            dir: dir.to_path_buf(),
            owner,
            uid,
        });
    }
    if mode & 0o022 != 0 {
        return Err(RunDirError::WritableByOthers {
            dir: dir.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// The directory a runtime file is in.
pub fn parent(file: &Path) -> &Path {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `file` belongs to this process's user (a state file planted by another is ignored).
pub fn owned_by_us(file: &Path) -> bool {
    std::fs::metadata(file).is_ok_and(|m| m.uid() == uid())
}

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_directories_hold_runtime_files() {
        let dir = Path::new("/some/dir");
        let cases: &[(&str, u32, u32, u32, bool)] = &[
            ("ours, 0700", 1000, 0o40700, 1000, true),
            ("ours, 0755", 1000, 0o40755, 1000, true),
            ("root's, 0755 (/run)", 0, 0o40755, 1000, true),
            ("ours, group-writable", 1000, 0o40770, 1000, false),
            ("/tmp: sticky, writable by all", 0, 0o41777, 1000, false),
            ("/tmp, as root", 0, 0o41777, 0, false),
            ("another user's, 0700", 1001, 0o40700, 1000, false),
            ("another user's, as root", 1001, 0o40700, 0, false),
        ];
        for (what, owner, mode, uid, ok) in cases {
            assert_eq!(judge(dir, *owner, *mode, *uid).is_ok(), *ok, "{what}");
        }
    }

    #[test]
    fn two_config_files_never_share_runtime_files() {
        let dir = Path::new("/run/holdfast");
        let a = files_for(dir, Path::new("/etc/holdfast/a.toml"));
        let b = files_for(dir, Path::new("/etc/holdfast/b.toml"));
        let other_a = files_for(dir, Path::new("/srv/site/a.toml"));
        assert_ne!(a.upgrade_sock, b.upgrade_sock);
        assert_ne!(a.state_file, other_a.state_file, "same name, other path");
        assert_eq!(a, files_for(dir, Path::new("/etc/holdfast/a.toml")));
        assert!(a.upgrade_sock.starts_with(dir));
        let name = a
            .state_file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("a-") && name.ends_with(".state.json"),
            "{name}"
        );
    }

    #[test]
    fn a_directory_is_created_private() {
        let base = std::env::temp_dir().join(format!("holdfast-rundir-{}", std::process::id()));
        let dir = base.join("run");
        ensure_private(&dir).expect("created and private");
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let refused = ensure_private(&dir).unwrap_err().to_string();
        assert!(refused.contains("writable by other users"), "{refused}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
