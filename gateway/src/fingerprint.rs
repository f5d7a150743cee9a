//! What the files of a config held when it was read: the config file and the files it names
//! (certificates, keys, the fallback body, CAs), each as the SHA-256 of its bytes. Taken just
//! before they are read, so that a write after that point always shows as a change (at worst a
//! write just before is reloaded once more, which changes nothing).

use std::path::{Path, PathBuf};

/// What a file holds: the SHA-256 of its bytes (through symlinks), `None` when unreadable.
pub type Print = Option<[u8; 32]>;

/// The fingerprint of one file now. Only a regular file (through symlinks) is read: a FIFO
/// or a device would block, or never end.
pub fn print(file: &Path) -> Print {
    let regular = std::fs::metadata(file).is_ok_and(|m| m.is_file());
    regular
        .then(|| std::fs::read(file).ok())
        .flatten()
        .map(|b| openssl::sha::sha256(&b))
}

/// What the files of one loaded config held: the config file first, then those it names.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.0[0].0
    }

    /// What `file` held, if it is one of these.
    pub fn of(&self, file: &Path) -> Option<Print> {
        self.0.iter().find(|(f, _)| f == file).map(|(_, p)| *p)
    }
}
