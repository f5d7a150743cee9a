//! The gateway's own trouble, told apart from a backend's. A connect that fails because this
//! process or machine is out of descriptors, ephemeral ports or memory says nothing about the
//! backend: it is never reported to health (passive or active), so a load spike on the gateway
//! cannot take healthy backends out.

use std::io;

/// What the gateway itself ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    /// File descriptors: this process's open-file limit (EMFILE), the system's (ENFILE), or
    /// the share of the limit holdfast keeps for backend connections.
    Descriptors,
    /// Local addresses or ephemeral ports toward that destination (EADDRNOTAVAIL).
    Ports,
    /// Kernel buffers or memory (ENOBUFS, ENOMEM).
    Memory,
}

impl LocalError {
    pub const ALL: [LocalError; 3] = [
        LocalError::Descriptors,
        LocalError::Ports,
        LocalError::Memory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LocalError::Descriptors => "descriptors",
            LocalError::Ports => "ports",
            LocalError::Memory => "memory",
        }
    }

    /// Whether `e` is the gateway's own trouble, and which.
    pub fn of(e: &io::Error) -> Option<LocalError> {
        if e.kind() == io::ErrorKind::OutOfMemory {
            return Some(LocalError::Memory);
        }
        match e.raw_os_error()? {
            libc::EMFILE | libc::ENFILE => Some(LocalError::Descriptors),
            libc::EADDRNOTAVAIL => Some(LocalError::Ports),
            libc::ENOBUFS | libc::ENOMEM => Some(LocalError::Memory),
            _ => None,
        }
    }
}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LocalError::Descriptors => "out of file descriptors",
            LocalError::Ports => "out of local ports",
            LocalError::Memory => "out of memory or buffers",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_errors_are_the_gateways() {
        let os = io::Error::from_raw_os_error;
        let cases = [
            (os(libc::EMFILE), Some(LocalError::Descriptors)),
            (os(libc::ENFILE), Some(LocalError::Descriptors)),
            (os(libc::EADDRNOTAVAIL), Some(LocalError::Ports)),
            (os(libc::ENOBUFS), Some(LocalError::Memory)),
            (os(libc::ENOMEM), Some(LocalError::Memory)),
            (io::ErrorKind::OutOfMemory.into(), Some(LocalError::Memory)),
            // The backend's: refused, unreachable, reset, timed out.
            (os(libc::ECONNREFUSED), None),
            (os(libc::EHOSTUNREACH), None),
            (os(libc::ENETUNREACH), None),
            (os(libc::ECONNRESET), None),
            (os(libc::ETIMEDOUT), None),
            (io::ErrorKind::Other.into(), None),
        ];
        for (e, want) in cases {
            assert_eq!(LocalError::of(&e), want, "{e}");
        }
    }
}
