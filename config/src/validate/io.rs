//! The I/O pass: everything the config needs from outside the file, done before the rules run
//! and apart from them. It reads the files the config names and resolves backend host names;
//! the rules ([`super::validate`]) then only look the results up in [`Found`], so they are
//! plain functions of the file and what was found, tested with a hand-made `Found`.
//! What went wrong here is reported by the rules, with the key that named the file or address.

use super::address::{self, Address};
use crate::defaults as d;
use crate::file;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the I/O pass found: each file named (its bytes, or that it can be opened) and each
/// host name resolved, or why not.
#[derive(Debug, Default, Clone)]
pub struct Found {
    opened: HashMap<PathBuf, Result<(), String>>,
    read: HashMap<PathBuf, Result<Arc<[u8]>, String>>,
    names: HashMap<String, Result<SocketAddr, String>>,
}

/// Why a lookup has no result: the I/O pass did not foresee it (a bug, said so).
fn not_looked_at(what: &str) -> String {
    format!("{what} was not looked at before validation (a holdfast bug: please report it)")
}

impl Found {
    /// Whether `path` could be opened for reading.
    pub fn readable(&self, path: &Path) -> Result<(), String> {
        self.opened
            .get(path)
            .cloned()
            .unwrap_or_else(|| Err(not_looked_at("this file")))
    }

    /// The bytes of `path`.
    pub fn bytes(&self, path: &Path) -> Result<Arc<[u8]>, String> {
        self.read
            .get(path)
            .cloned()
            .unwrap_or_else(|| Err(not_looked_at("this file")))
    }

    /// The first address `address` (`host:port`) resolved to.
    pub fn address(&self, address: &str) -> Result<SocketAddr, String> {
        self.names
            .get(address)
            .cloned()
            .unwrap_or_else(|| Err(not_looked_at("this host name")))
    }

    /// As if `path` could be opened (or not).
    #[cfg(test)]
    pub fn with_readable(mut self, path: impl Into<PathBuf>, result: Result<(), String>) -> Self {
        self.opened.insert(path.into(), result);
        self
    }

    /// As if `path` held `bytes` (or could not be read).
    #[cfg(test)]
    pub fn with_file(mut self, path: impl Into<PathBuf>, bytes: Result<&[u8], String>) -> Self {
        self.read.insert(path.into(), bytes.map(Arc::from));
        self
    }

    /// As if `address` resolved so.
    #[cfg(test)]
    pub fn with_name(mut self, address: &str, result: Result<SocketAddr, String>) -> Self {
        self.names.insert(address.to_string(), result);
        self
    }
}

/// Reads what `raw` names (paths relative to `base_dir`) and resolves its backends' host names.
/// Blocking: the gateway runs it (with the rest of a load) off its async threads.
pub fn gather(raw: &file::File, base_dir: &Path) -> Found {
    let mut found = Found::default();
    let listen = &raw.listen;
    let certificates = listen.certificates.iter().flatten();
    let pulls = listen.origin_pulls.iter().flatten().map(|(_, o)| &o.ca);
    let opened = [&listen.tls_cert, &listen.tls_key]
        .into_iter()
        .flatten()
        .chain(certificates.flat_map(|c| [&c.cert, &c.key]))
        .chain(pulls);
    for name in opened {
        let path = base_dir.join(name);
        let result = std::fs::File::open(&path)
            .map(drop)
            .map_err(|e| format!("cannot read: {e}"));
        found.opened.insert(path, result);
    }
    if let Some(name) = &listen.admin_token_file {
        let path = base_dir.join(name);
        let token = read_at_most(&path, 4096);
        found.read.insert(path, token);
    }
    if let Some(name) = &raw.fallback.body_file {
        let path = base_dir.join(name);
        let body = read_at_most(&path, d::FALLBACK_BODY_MAX_BYTES);
        found.read.insert(path, body);
    }
    for backend in raw
        .pools
        .values()
        .flat_map(|p| &p.tiers)
        .flat_map(|t| &t.backends)
    {
        if let Some(ca) = &backend.tls_ca {
            let path = base_dir.join(ca);
            let pem = std::fs::read(&path)
                .map(Arc::from)
                .map_err(|e| format!("cannot read: {e}"));
            found.read.insert(path, pem);
        }
        if address::parse(&backend.address) == Ok(Address::Name) {
            let address = backend.address.as_str();
            found.names.insert(address.to_string(), resolve(address));
        }
    }
    found
}

/// The bytes of `path`, refused past `max` bytes without reading them.
fn read_at_most(path: &Path, max: u64) -> Result<Arc<[u8]>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > max {
        return Err(format!(
            "is {} bytes, more than the {max} allowed",
            meta.len()
        ));
    }
    std::fs::read(path)
        .map(Arc::from)
        .map_err(|e| format!("cannot read: {e}"))
}

/// `host:port` through the system resolver: its first address.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    match address.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{address:?}: the host name resolved to no address")),
        Err(e) => Err(format!("{address:?}: cannot resolve: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pass reads what the file names, relative to its folder, and nothing is judged here:
    /// a missing file and an oversized body are results for the rules to report.
    #[test]
    fn the_io_pass_reads_what_the_config_names() {
        let dir = std::env::temp_dir().join(format!("holdfast-gather-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), "c").unwrap();
        std::fs::write(dir.join("ca.pem"), "pem").unwrap();
        let big = vec![b'x'; usize::try_from(d::FALLBACK_BODY_MAX_BYTES).unwrap() + 1];
        std::fs::write(dir.join("big.html"), big).unwrap();
        let text = r#"
            [listen]
            https = ["127.0.0.1:443"]
            tls_cert = "cert.pem"
            tls_key = "missing.pem"
            [fallback]
            body_file = "big.html"
            [[pools.app.tiers]]
            backends = [
                { address = "localhost:8080", tls = true, tls_ca = "ca.pem" },
                { address = "127.0.0.1:8081" },
            ]
        "#;
        let raw = file::parse(text).unwrap();
        let found = gather(&raw, &dir);
        assert_eq!(found.readable(&dir.join("cert.pem")), Ok(()));
        let missing = found.readable(&dir.join("missing.pem")).unwrap_err();
        assert!(missing.starts_with("cannot read: "), "{missing}");
        assert_eq!(&*found.bytes(&dir.join("ca.pem")).unwrap(), b"pem");
        let big = found.bytes(&dir.join("big.html")).unwrap_err();
        assert!(big.contains("more than the"), "{big}");
        let localhost = found.address("localhost:8080").unwrap();
        assert!(localhost.ip().is_loopback() && localhost.port() == 8080);
        // An IP address needs no lookup, and what was not asked for is said to be a bug.
        assert!(found
            .address("127.0.0.1:8081")
            .unwrap_err()
            .contains("holdfast bug"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
