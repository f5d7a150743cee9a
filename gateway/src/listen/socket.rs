//! Listening sockets: bound the way servers bind them, or duplicated from the ones the previous
//! process handed over.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// Connections the kernel queues for each listening socket before refusing: a burst of new
/// connections (a deploy at Cloudflare, a reconnect wave) waits instead of being refused.
/// Linux caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 65_535;

/// A duplicate of a listening socket inherited from the previous process.
#[allow(unsafe_code)]
pub(super) fn duplicate_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `fd` came from the previous process through Pingora's hand-over table, which
    // keeps it open for this process's whole life (it is passed on at the next upgrade); it is
    // only borrowed here, to duplicate it.
    let inherited = unsafe { BorrowedFd::borrow_raw(fd) };
    inherited.try_clone_to_owned()
}

/// Binds a listening socket the way servers do: address reuse (a restart does not wait for
/// old connections in TIME_WAIT), a deep accept queue.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
