//! The few OS facts the bench reads: the monotonic clock shared by every
//! process on the host, thread CPU time, the fd limit, and sockets bound to
//! a chosen loopback source address.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd as _;

use nix::errno::Errno;
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
use nix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process on the
/// host, so a stamp written by one worker process is read by another.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only skew one sample.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// CPU time (user + system) the calling thread has used, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let ns = |t: nix::sys::time::TimeVal| {
                t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1000
            };
            ns(u.user_time()) + ns(u.system_time())
        })
        .unwrap_or(0)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns it.
pub fn raise_fd_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Starts a non-blocking connect from `source` to `target`.
///
/// `IP_BIND_ADDRESS_NO_PORT` defers the choice of source port to
/// `connect()`, so ports are shared across destinations and each source
/// address gives its own ~28k ports toward the same server, instead of all
/// binds drawing from one global pool.
pub fn connect_from(source: Ipv4Addr, target: SocketAddrV4) -> io::Result<mio::net::TcpStream> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)?;
    socket::setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(target)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(mio::net::TcpStream::from_std(std::net::TcpStream::from(fd)))
}
