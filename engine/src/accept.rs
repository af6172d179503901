//! How a lane accepts: a few single-shot accepts kept in flight, each with
//! its own address buffer, so the handler learns who connected.
//!
//! Multishot accept would cost fewer submissions but reports no peer
//! address, and it overshoots: it takes every connection waiting in the
//! listen queue before we see a completion, and when that passes the end of
//! the fixed file table the kernel accepts the socket and drops it (`-ENFILE`,
//! the client gets a reset). A single-shot accept takes one connection into
//! one table slot, so holding a slot for each one in flight makes the table
//! impossible to overfill: a lane with no room left arms nothing and the next
//! lane takes over.
//!
//! The address buffers live in the lane (the kernel writes them when the
//! accept completes), not in the connection: the engine hands the address to
//! the handler during the HTTP phase and keeps nothing per open connection.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Accepts kept in flight per lane. Each completion re-arms one in the same
/// loop turn; 32 keeps a connect burst draining at one `io_uring_enter` per
/// 32 accepts without reserving many table slots near a table's end.
pub const ACCEPTS_IN_FLIGHT: u32 = 32;

/// How many more accepts to arm on a lane with `room` table slots not taken
/// by a connection and `in_flight` accepts already armed (each of which will
/// take one of those slots).
pub fn accepts_to_arm(room: u32, in_flight: u32) -> u32 {
    room.min(ACCEPTS_IN_FLIGHT).saturating_sub(in_flight)
}

/// The memory one accept in flight writes the peer's address into.
#[derive(Clone, Copy)]
#[repr(C)]
struct AddrSlot {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl std::fmt::Debug for AddrSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddrSlot").field("len", &self.len).finish()
    }
}

/// A lane's accepts in flight and their address buffers. Boxed so the
/// addresses the kernel holds never move.
#[derive(Debug)]
pub struct Acceptor {
    slots: Box<[AddrSlot; ACCEPTS_IN_FLIGHT as usize]>,
    /// Bit `i` set: slot `i` has an accept in flight.
    armed: u32,
}

impl Default for Acceptor {
    fn default() -> Self {
        Acceptor {
            // SAFETY: sockaddr_storage and socklen_t are plain old data;
            // all-zero is a valid (empty) value.
            slots: Box::new(unsafe { std::mem::zeroed() }),
            armed: 0,
        }
    }
}

impl Acceptor {
    /// Accepts in flight.
    pub fn in_flight(&self) -> u32 {
        self.armed.count_ones()
    }

    /// The slots with an accept in flight.
    pub fn armed(&self) -> impl Iterator<Item = u16> + use<> {
        let armed = self.armed;
        (0..ACCEPTS_IN_FLIGHT as u16).filter(move |&i| armed & (1 << i) != 0)
    }

    /// Reserves a free slot for a new accept: its index and the `addr` and
    /// `addrlen` pointers for `IORING_OP_ACCEPT`, valid until
    /// [`Acceptor::complete`] is called with the index.
    pub fn arm(&mut self) -> Option<(u16, *mut libc::sockaddr, *mut libc::socklen_t)> {
        let free = !self.armed;
        if free == 0 {
            return None;
        }
        let i = free.trailing_zeros();
        self.armed |= 1 << i;
        let slot = &mut self.slots[i as usize];
        slot.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let addr = (&raw mut slot.storage).cast::<libc::sockaddr>();
        Some((i as u16, addr, &raw mut slot.len))
    }

    /// The accept of `slot` completed (with `accepted` true if it took a
    /// connection): frees the slot and returns the address it received.
    pub fn complete(&mut self, slot: u16, accepted: bool) -> Option<SocketAddr> {
        let bit = 1u32.checked_shl(u32::from(slot))?;
        if self.armed & bit == 0 {
            return None;
        }
        self.armed &= !bit;
        let s = &self.slots[usize::from(slot)];
        accepted.then(|| socket_addr(&s.storage, s.len)).flatten()
    }
}

/// Reads an IPv4 or IPv6 address the kernel wrote; None for anything else.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // fits in (and is no more aligned than) sockaddr_storage.
            let sin = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_never_promised_more_than_its_room() {
        assert_eq!(accepts_to_arm(16_384, 0), ACCEPTS_IN_FLIGHT);
        assert_eq!(accepts_to_arm(16_384, 30), 2);
        assert_eq!(accepts_to_arm(5, 0), 5);
        // Three in flight will take three of the last five slots.
        assert_eq!(accepts_to_arm(5, 3), 2);
        assert_eq!(accepts_to_arm(3, 3), 0);
        assert_eq!(accepts_to_arm(0, 0), 0);
    }

    #[test]
    fn slots_are_reused_and_never_handed_out_twice() {
        let mut a = Acceptor::default();
        let taken: Vec<u16> = (0..ACCEPTS_IN_FLIGHT)
            .map(|_| a.arm().expect("a free slot").0)
            .collect();
        assert_eq!(taken, (0..ACCEPTS_IN_FLIGHT as u16).collect::<Vec<_>>());
        assert!(a.arm().is_none(), "all slots in flight");
        assert_eq!(a.armed().count(), ACCEPTS_IN_FLIGHT as usize);
        assert_eq!(a.in_flight(), ACCEPTS_IN_FLIGHT);
        assert_eq!(a.complete(7, false), None);
        assert_eq!(a.complete(7, false), None, "a slot completes once");
        assert_eq!(a.in_flight(), ACCEPTS_IN_FLIGHT - 1);
        assert_eq!(a.arm().map(|s| s.0), Some(7));
        assert_eq!(a.complete(u16::MAX, true), None, "out of range");
    }

    fn write_v4(addr: *mut libc::sockaddr, len: *mut libc::socklen_t, ip: [u8; 4], port: u16) {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `addr` points at a slot's sockaddr_storage, large enough
        // for a sockaddr_in, as the kernel would write it.
        unsafe {
            addr.cast::<libc::sockaddr_in>().write(sin);
            *len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
    }

    #[test]
    fn ipv4_and_ipv6_addresses_are_read_back() {
        let mut a = Acceptor::default();
        let (slot, addr, len) = a.arm().unwrap();
        write_v4(addr, len, [127, 0, 0, 2], 40_000);
        assert_eq!(
            a.complete(slot, true),
            Some("127.0.0.2:40000".parse().unwrap())
        );

        let (slot, addr, len) = a.arm().unwrap();
        let sin6 = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 443u16.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets(),
            },
            sin6_scope_id: 0,
        };
        // SAFETY: as in write_v4, for a sockaddr_in6.
        unsafe {
            addr.cast::<libc::sockaddr_in6>().write(sin6);
            *len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        }
        assert_eq!(
            a.complete(slot, true),
            Some("[2001:db8::7]:443".parse().unwrap())
        );
    }

    #[test]
    fn a_failed_or_short_accept_gives_no_address() {
        let mut a = Acceptor::default();
        let (slot, addr, len) = a.arm().unwrap();
        write_v4(addr, len, [10, 0, 0, 1], 1);
        assert_eq!(a.complete(slot, false), None, "the accept failed");
        let (slot, addr, len) = a.arm().unwrap();
        write_v4(addr, len, [10, 0, 0, 1], 1);
        // SAFETY: `len` points at the slot's length field.
        unsafe { *len = 4 };
        assert_eq!(a.complete(slot, true), None, "truncated address");
    }
}
