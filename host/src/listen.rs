//! The listening socket.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// How many connections the kernel may queue for the gateway to accept (capped by the kernel's
/// `net.core.somaxconn`). The standard library's 128 overflowed in bursts on a busy machine:
/// a client whose connection attempt finds the queue full waits a second or more to retry.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind `addr` (`HOST:PORT`; port 0 picks a free one), listening with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await.map_err(fail)? {
        match listen_on(resolved) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "the name resolves to no address",
        )
    })))
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As the standard library does on Unix: a restarted gateway can bind its port while
    // connections of the old one linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
