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

/// A CLOCK_MONOTONIC timer with nanosecond resolution the poll can wait
/// on: epoll's own timeout counts in whole milliseconds, far too coarse to
/// send on a schedule of tens of microseconds.
#[derive(Debug)]
pub struct Alarm {
    fd: nix::sys::timerfd::TimerFd,
    armed_ns: u64,
}

impl Alarm {
    pub fn new() -> io::Result<Self> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Alarm { fd, armed_ns: 0 })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd as _;
        self.fd.as_fd().as_raw_fd()
    }

    /// Fires at `monotonic_ns` (of [`monotonic_ns`]'s clock). Arming resets
    /// the timer's readiness, so an edge-triggered poll sees each firing.
    pub fn arm_at(&mut self, at_ns: u64) -> io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        if at_ns == self.armed_ns {
            return Ok(());
        }
        let at = TimeSpec::from(std::time::Duration::from_nanos(at_ns.max(1)));
        self.fd.set(
            Expiration::OneShot(at),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        self.armed_ns = at_ns;
        Ok(())
    }
}
