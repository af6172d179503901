//! Loss and duplicate accounting for one stream of sequence numbers.
//!
//! A stream (one echo connection, or one publisher as seen by one
//! subscriber) arrives in order over TCP, so the tracker keeps only the
//! highest number seen and a 128-bit window below it: a late arrival inside
//! the window still counts once, a number seen twice counts as a duplicate.
//! Loss is not guessed from gaps; it is `expected - unique` once the run has
//! drained, because only the sender knows how many were sent.

/// How far below the newest number an arrival is still told apart.
pub const WINDOW: u64 = 128;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// One past the highest sequence number seen (0: none yet).
    next: u64,
    /// Bit `i` is set when `next - 1 - i` has been seen.
    seen: u128,
    unique: u64,
    duplicates: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time this number arrived.
    New,
    /// Seen before, or too far behind the window to tell.
    Duplicate,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.next = seq + 1;
        } else {
            let age = self.next - 1 - seq;
            let bit = 1u128.checked_shl(age as u32).filter(|_| age < WINDOW);
            match bit {
                Some(bit) if self.seen & bit == 0 => self.seen |= bit,
                _ => {
                    self.duplicates += 1;
                    return Arrival::Duplicate;
                }
            }
        }
        self.unique += 1;
        Arrival::New
    }

    /// Distinct numbers received.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_stream_is_all_unique() {
        let t = feed(&(0..1000).collect::<Vec<_>>());
        assert_eq!((t.unique(), t.duplicates()), (1000, 0));
    }

    #[test]
    fn gaps_are_not_counted_until_the_sender_says_how_many() {
        let t = feed(&[0, 1, 5, 9]);
        assert_eq!((t.unique(), t.duplicates()), (4, 0));
    }

    #[test]
    fn repeats_are_duplicates_and_late_arrivals_are_not() {
        let mut t = feed(&[0, 1, 2, 4]);
        assert_eq!(t.record(3), Arrival::New);
        assert_eq!(t.record(3), Arrival::Duplicate);
        assert_eq!(t.record(4), Arrival::Duplicate);
        assert_eq!(t.record(0), Arrival::Duplicate);
        assert_eq!((t.unique(), t.duplicates()), (5, 3));
    }

    #[test]
    fn window_edges() {
        let mut t = feed(&[0, WINDOW]);
        // `0` is now exactly WINDOW behind: too old to tell, so not counted twice.
        assert_eq!(t.record(0), Arrival::Duplicate);
        assert_eq!(
            t.record(1),
            Arrival::New,
            "WINDOW - 1 behind is still tracked"
        );
        assert_eq!(t.record(1), Arrival::Duplicate);
        // A jump larger than the window clears it without overflowing the shift.
        assert_eq!(t.record(10 * WINDOW), Arrival::New);
        assert_eq!(t.record(10 * WINDOW), Arrival::Duplicate);
        assert_eq!(t.record(u64::from(u32::MAX) << 4), Arrival::New);
        assert_eq!(t.unique(), 5);
    }
}
