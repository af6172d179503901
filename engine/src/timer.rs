//! A per-core timing wheel of connection keys.
//!
//! One slot per tick; a key is due when its slot comes round. The wheel does
//! not know deadlines: the owner checks the connection's real deadline when a
//! key fires and re-arms it if the deadline moved later. So activity on a
//! connection (which pushes its deadline back) costs no wheel operation, and
//! an idle connection costs one `u64` here. Deadlines beyond one revolution
//! simply fire early and are re-armed.

/// Ticks are counted from the start of the core.
pub type Tick = u32;

/// A hashed timing wheel with `slots.len()` (a power of two) ticks per turn.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<u64>>,
    /// The last tick whose slot was drained.
    now: Tick,
}

impl TimerWheel {
    /// A wheel whose revolution is `slots` ticks (rounded up to a power of two).
    pub fn new(slots: usize) -> TimerWheel {
        let n = slots.max(2).next_power_of_two();
        TimerWheel {
            slots: (0..n).map(|_| Vec::new()).collect(),
            now: 0,
        }
    }

    #[cfg(test)]
    /// The last tick processed by [`TimerWheel::advance`].
    pub fn now(&self) -> Tick {
        self.now
    }

    fn slot(&self, tick: Tick) -> usize {
        tick as usize & (self.slots.len() - 1)
    }

    /// Arms `key` to fire at `at`; a tick already passed fires on the next one.
    /// Returns the tick it will fire at, to record as the key's armed tick.
    pub fn schedule(&mut self, key: u64, at: Tick) -> Tick {
        let at = at.max(self.now.wrapping_add(1));
        let slot = self.slot(at);
        self.slots[slot].push(key);
        at
    }

    /// Moves time forward to `to`, appending every key due by then to `due`.
    pub fn advance(&mut self, to: Tick, due: &mut Vec<u64>) {
        let steps = to.saturating_sub(self.now);
        let turns = (steps as usize).min(self.slots.len());
        for i in 1..=turns {
            let slot = self.slot(self.now.wrapping_add(i as Tick));
            due.append(&mut self.slots[slot]);
        }
        self.now = self.now.max(to);
    }

    #[cfg(test)]
    /// How many keys are armed (including stale ones the owner will drop).
    pub fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }

    #[cfg(test)]
    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advance(w: &mut TimerWheel, to: Tick) -> Vec<u64> {
        let mut due = Vec::new();
        w.advance(to, &mut due);
        due.sort_unstable();
        due
    }

    #[test]
    fn keys_fire_at_their_tick_and_not_before() {
        let mut w = TimerWheel::new(8);
        w.schedule(1, 3);
        w.schedule(2, 5);
        w.schedule(3, 5);
        assert!(advance(&mut w, 2).is_empty());
        assert_eq!(advance(&mut w, 3), vec![1]);
        assert!(advance(&mut w, 4).is_empty());
        assert_eq!(advance(&mut w, 5), vec![2, 3]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_past_deadline_fires_on_the_next_tick() {
        let mut w = TimerWheel::new(8);
        advance(&mut w, 10);
        assert_eq!(w.schedule(7, 4), 11);
        assert_eq!(advance(&mut w, 11), vec![7]);
    }

    #[test]
    fn a_long_jump_drains_every_slot_once() {
        let mut w = TimerWheel::new(4);
        for k in 0..4 {
            w.schedule(k, k as Tick + 1);
        }
        assert_eq!(advance(&mut w, 1000), vec![0, 1, 2, 3]);
        assert_eq!(w.now(), 1000);
    }

    #[test]
    fn deadlines_beyond_a_turn_fire_early_for_the_owner_to_rearm() {
        let mut w = TimerWheel::new(4);
        w.schedule(9, 6);
        assert_eq!(advance(&mut w, 2), vec![9], "slot 2 == 6 mod 4");
        assert_eq!(w.len(), 0);
    }
}
