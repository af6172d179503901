//! What a completion belongs to, packed into the 64-bit `user_data`.
//!
//! Layout: `op` (4 bits) | `generation` (28 bits) | slab `index` (32 bits).
//! The generation changes every time a slab slot is reused, so a completion
//! for a connection that is gone can never act on the one now in its slot.
//! Ring-level operations (accepts, tick, wake) use the reserved op `RING` and
//! live at the top of the `u64` range, above every connection token.

/// Operations that belong to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnOp {
    /// The multishot receive.
    Recv = 1,
    /// The one send (or sendmsg) in flight.
    Send = 2,
    /// Closing the direct descriptor.
    Close = 3,
    /// Cancelling the connection's pending operations.
    Cancel = 4,
    /// Half-closing the socket (SHUT_WR) before the final close.
    Shutdown = 5,
}

const RING: u64 = 0xF;
const GEN_BITS: u32 = 28;
/// Generations wrap within this mask.
pub const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// An operation of the connection at `index`, created with `generation`.
    Conn {
        op: ConnOp,
        index: u32,
        generation: u32,
    },
    /// A ring-level operation.
    Ring(RingOp),
    /// Lane `n` (an extra ring of the core) has completions to reap.
    LaneReady(u8),
    /// The accept that writes the peer's address into slot `n` of the
    /// completing lane's [`crate::accept::Acceptor`].
    Accept(u16),
    /// The readiness poll of the descriptor the handler watches as `key`
    /// (see [`crate::Ctx::watch_readable`]).
    Watch(u16),
    /// A value this reactor never submits (ignored, counted as a bug).
    Unknown(u64),
}

/// Operations of the ring itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RingOp {
    /// Another core's MSG_RING: mail is waiting.
    Mail = 6,
    /// The periodic tick driving the timer wheel.
    Tick = 2,
    /// The read on the wake eventfd (mailbox, shutdown).
    Wake = 3,
    /// A cancel of a ring-level op whose result does not matter.
    Cancel = 4,
    /// The one-shot timeout armed for [`crate::Ctx::wake_at`].
    Alarm = 7,
}

/// Ring-level values from this one up name lane `value - LANE_BASE`'s
/// completion eventfd becoming readable.
const LANE_BASE: u64 = 0x100;
/// Ring-level values from this one up name accept slot `value - ACCEPT_BASE`.
const ACCEPT_BASE: u64 = 0x1_0000;
/// Ring-level values from this one up name the handler's watch `value -
/// WATCH_BASE`.
const WATCH_BASE: u64 = 0x2_0000;

impl Token {
    /// Packs a connection operation.
    pub fn conn(op: ConnOp, index: u32, generation: u32) -> u64 {
        ((op as u64) << 60) | (u64::from(generation & GEN_MASK) << 32) | u64::from(index)
    }

    /// Packs a ring-level operation.
    pub fn ring(op: RingOp) -> u64 {
        (RING << 60) | op as u64
    }

    /// Packs the readiness poll of lane `lane`'s eventfd.
    pub fn lane_ready(lane: u8) -> u64 {
        (RING << 60) | (LANE_BASE + u64::from(lane))
    }

    /// Packs the accept writing into address slot `slot`.
    pub fn accept(slot: u16) -> u64 {
        (RING << 60) | (ACCEPT_BASE + u64::from(slot))
    }

    /// Packs the readiness poll of the handler's watch `key`.
    pub fn watch(key: u16) -> u64 {
        (RING << 60) | (WATCH_BASE + u64::from(key))
    }

    /// Unpacks a `user_data` from a completion.
    pub fn decode(user_data: u64) -> Token {
        let op = user_data >> 60;
        let generation = ((user_data >> 32) as u32) & GEN_MASK;
        let index = user_data as u32;
        let conn = |op| Token::Conn {
            op,
            index,
            generation,
        };
        match op {
            1 => conn(ConnOp::Recv),
            2 => conn(ConnOp::Send),
            3 => conn(ConnOp::Close),
            4 => conn(ConnOp::Cancel),
            5 => conn(ConnOp::Shutdown),
            RING => match user_data & 0xFFFF_FFFF {
                2 => Token::Ring(RingOp::Tick),
                3 => Token::Ring(RingOp::Wake),
                4 => Token::Ring(RingOp::Cancel),
                6 => Token::Ring(RingOp::Mail),
                7 => Token::Ring(RingOp::Alarm),
                n if (LANE_BASE..LANE_BASE + 256).contains(&n) => {
                    Token::LaneReady((n - LANE_BASE) as u8)
                }
                n if (ACCEPT_BASE..ACCEPT_BASE + 0x1_0000).contains(&n) => {
                    Token::Accept((n - ACCEPT_BASE) as u16)
                }
                n if (WATCH_BASE..WATCH_BASE + 0x1_0000).contains(&n) => {
                    Token::Watch((n - WATCH_BASE) as u16)
                }
                _ => Token::Unknown(user_data),
            },
            _ => Token::Unknown(user_data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_tokens_round_trip_at_the_edges() {
        for (op, index, generation) in [
            (ConnOp::Recv, 0, 0),
            (ConnOp::Send, u32::MAX, GEN_MASK),
            (ConnOp::Close, 12345, 7),
            (ConnOp::Cancel, 1, 1 << 27),
            (ConnOp::Shutdown, 99, 5),
        ] {
            let t = Token::decode(Token::conn(op, index, generation));
            assert_eq!(
                t,
                Token::Conn {
                    op,
                    index,
                    generation
                }
            );
        }
    }

    #[test]
    fn generation_wraps_inside_its_bits() {
        let t = Token::decode(Token::conn(ConnOp::Recv, 3, GEN_MASK + 2));
        assert_eq!(
            t,
            Token::Conn {
                op: ConnOp::Recv,
                index: 3,
                generation: 1
            }
        );
    }

    #[test]
    fn ring_tokens_sit_above_every_conn_token() {
        let highest_conn = Token::conn(ConnOp::Cancel, u32::MAX, GEN_MASK);
        for op in [
            RingOp::Tick,
            RingOp::Wake,
            RingOp::Cancel,
            RingOp::Mail,
            RingOp::Alarm,
        ] {
            assert!(Token::ring(op) > highest_conn);
            assert_eq!(Token::decode(Token::ring(op)), Token::Ring(op));
        }
        assert_eq!(Token::decode(0), Token::Unknown(0));
        for lane in [0u8, 1, 255] {
            assert!(Token::lane_ready(lane) > highest_conn);
            assert_eq!(
                Token::decode(Token::lane_ready(lane)),
                Token::LaneReady(lane)
            );
        }
        for slot in [0u16, 31, u16::MAX] {
            assert!(Token::accept(slot) > highest_conn);
            assert_eq!(Token::decode(Token::accept(slot)), Token::Accept(slot));
        }
        for key in [0u16, 7, u16::MAX] {
            assert!(Token::watch(key) > highest_conn);
            assert_eq!(Token::decode(Token::watch(key)), Token::Watch(key));
        }
    }
}
