//! How a lane accepts, from how full its fixed file table is.
//!
//! A multishot accept takes every connection waiting in the listen queue each
//! time it runs, up to the whole backlog, before we see a single completion.
//! When that overshoots the table, the kernel accepts the connection and
//! then drops it (the completion is `-ENFILE`, the client gets a reset). So
//! multishot is used only while the table has room for a full backlog; closer
//! to the end a few single-shot accepts are kept in flight, each holding a
//! reserved slot; a table with too little room accepts nothing and the next
//! lane takes over.

/// Free slots kept beyond the backlog while a multishot accept is armed.
const MULTISHOT_MARGIN: u32 = 256;
/// Single-shot accepts kept in flight near the end of a table.
const MAX_SINGLE: u32 = 8;

/// What a lane should have armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptPlan {
    /// One multishot accept.
    Multishot,
    /// This many single-shot accepts in flight.
    Single(u32),
    /// Nothing: the table is full (or about to be).
    Full,
}

/// The plan for a table with `free` slots not yet taken or reserved, behind
/// a listen queue of up to `backlog` connections.
pub fn accept_plan(free: u32, backlog: u32) -> AcceptPlan {
    if free > backlog.saturating_add(MULTISHOT_MARGIN) {
        AcceptPlan::Multishot
    } else if free > 0 {
        AcceptPlan::Single(free.min(MAX_SINGLE))
    } else {
        AcceptPlan::Full
    }
}

/// Accept operations a lane has in flight.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptState {
    /// A multishot accept is armed (until its last completion arrives).
    pub multishot: bool,
    /// Its cancel has been submitted.
    pub cancelling: bool,
    /// Single-shot accepts in flight, each holding a reserved slot.
    pub singles: u32,
}

impl AcceptState {
    /// Whether anything is armed.
    pub fn active(&self) -> bool {
        self.multishot || self.singles > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multishot_only_while_a_whole_backlog_fits() {
        assert_eq!(accept_plan(16_384, 4096), AcceptPlan::Multishot);
        assert_eq!(accept_plan(4096 + 257, 4096), AcceptPlan::Multishot);
        assert_eq!(accept_plan(4096 + 256, 4096), AcceptPlan::Single(8));
    }

    #[test]
    fn the_end_of_a_table_fills_one_reserved_slot_at_a_time() {
        assert_eq!(accept_plan(100, 4096), AcceptPlan::Single(8));
        assert_eq!(accept_plan(3, 4096), AcceptPlan::Single(3));
        assert_eq!(accept_plan(0, 4096), AcceptPlan::Full);
    }
}
