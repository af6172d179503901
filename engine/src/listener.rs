//! One `SO_REUSEPORT` listening socket per core, so the kernel spreads new
//! connections across cores with no shared accept queue.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A listening TCP socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn set_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed with it.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The `sockaddr_storage` form of `addr` and its length.
fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A fresh non-blocking TCP socket for `addr`'s family.
fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = check(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

impl Listener {
    /// Binds the first listener of a group, refusing an address another
    /// process already listens on. `SO_REUSEPORT` would otherwise let a
    /// second server (of the same user) silently take half of the first
    /// one's connections; a probe socket bound without it fails with
    /// `EADDRINUSE` in that case.
    pub fn bind_exclusive(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        if addr.port() != 0 {
            let probe = tcp_socket(&addr)?;
            // As the listeners do: connections of a previous run lingering
            // in TIME_WAIT don't block a restart (a listening socket does).
            set_opt(probe.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            let (storage, len) = to_sockaddr(&addr);
            // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
            let bound =
                check(unsafe { libc::bind(probe.as_raw_fd(), (&raw const storage).cast(), len) });
            if let Err(e) = bound {
                if e.kind() == io::ErrorKind::AddrInUse {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process already listens on {addr}"),
                    ));
                }
                return Err(e);
            }
        }
        Listener::bind(addr, backlog)
    }

    /// Binds a non-blocking listener sharing `addr` with its siblings.
    /// Accepted sockets inherit `TCP_NODELAY` from it.
    pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        let fd = tcp_socket(&addr)?;
        let raw = fd.as_raw_fd();
        set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        set_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        let (storage, len) = to_sockaddr(&addr);
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
        check(unsafe { libc::bind(raw, (&raw const storage).cast(), len) })?;
        // SAFETY: listen(2) on a bound socket we own.
        check(unsafe { libc::listen(raw, backlog) })?;
        Ok(Listener { fd })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: all-zero sockaddr_storage is valid; getsockname fills at
        // most `len` bytes of it.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: as above.
        check(unsafe {
            libc::getsockname(self.fd.as_raw_fd(), (&raw mut storage).cast(), &mut len)
        })?;
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const storage).cast()) };
                let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Ok(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((&raw const storage).cast()) };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Ok(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unknown address family",
            )),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_share_one_port() {
        let a = Listener::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = a.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let b = Listener::bind(addr, 16).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
        std::net::TcpStream::connect(addr).expect("one of them accepts");
    }

    #[test]
    fn a_second_server_on_a_taken_port_is_refused() {
        let a = Listener::bind_exclusive("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = a.local_addr().unwrap();
        let err = Listener::bind_exclusive(addr, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("another process"), "{err}");
        drop(a);
        let again = Listener::bind_exclusive(addr, 16).expect("free once the first is gone");
        assert_eq!(again.local_addr().unwrap(), addr);
    }

    #[test]
    fn a_restart_is_not_blocked_by_connections_in_time_wait() {
        let a = Listener::bind_exclusive("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = a.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            // SAFETY: accept(2) on our listening socket without an address
            // buffer; the result is checked.
            let fd =
                unsafe { libc::accept(a.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
            if fd >= 0 {
                // SAFETY: a fresh descriptor nothing else owns.
                break unsafe { OwnedFd::from_raw_fd(fd) };
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        // The server closes first, as a shutdown does: its side lingers.
        drop(accepted);
        drop(client);
        drop(a);
        Listener::bind_exclusive(addr, 16).expect("TIME_WAIT does not hold the port");
    }
}
