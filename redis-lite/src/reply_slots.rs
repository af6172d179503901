//! Replies waiting for the caller of a blocking client, by request id.
//! Ids are handed out in sequence and replies mostly arrive in that order,
//! so a sliding window of slots beats a hash map.

use std::collections::VecDeque;

use crate::client::RequestId;

#[derive(Debug)]
enum Slot<T> {
    Waiting,
    Ready(T),
    Taken,
}

/// Replies by request id, for ids from `base` on.
#[derive(Debug)]
pub(crate) struct ReplySlots<T> {
    base: u64,
    slots: VecDeque<Slot<T>>,
}

impl<T> Default for ReplySlots<T> {
    fn default() -> Self {
        Self {
            base: 0,
            slots: VecDeque::new(),
        }
    }
}

impl<T> ReplySlots<T> {
    /// Registers a request just sent, so that its reply has a slot
    /// whatever order replies arrive in.
    pub(crate) fn expect(&mut self, id: RequestId) {
        if self.slots.is_empty() {
            self.base = id.0;
        }
        while id.0 >= self.base + self.slots.len() as u64 {
            self.slots.push_back(Slot::Waiting);
        }
    }

    /// Stores the reply to `id` (ignored unless it is expected and waiting).
    pub(crate) fn insert(&mut self, id: RequestId, reply: T) {
        let Some(index) =
            id.0.checked_sub(self.base)
                .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if let Some(slot @ Slot::Waiting) = self.slots.get_mut(index) {
            *slot = Slot::Ready(reply);
        }
    }

    /// Takes the reply to `id`, if it arrived.
    pub(crate) fn take(&mut self, id: RequestId) -> Option<T> {
        let index = usize::try_from(id.0.checked_sub(self.base)?).ok()?;
        let slot = self.slots.get_mut(index)?;
        if !matches!(slot, Slot::Ready(_)) {
            return None;
        }
        let Slot::Ready(reply) = std::mem::replace(slot, Slot::Taken) else {
            return None;
        };
        while matches!(self.slots.front(), Some(Slot::Taken)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_and_out_of_order() {
        let mut r = ReplySlots::default();
        for id in 5..=8 {
            r.expect(RequestId(id));
        }
        r.insert(RequestId(7), "c");
        r.insert(RequestId(5), "a");
        assert_eq!(r.take(RequestId(6)), None, "not arrived");
        r.insert(RequestId(6), "b");
        assert_eq!(r.take(RequestId(7)), Some("c"));
        assert_eq!(r.take(RequestId(5)), Some("a"));
        assert_eq!(r.take(RequestId(5)), None, "taken once");
        r.insert(RequestId(5), "again");
        assert_eq!(r.take(RequestId(5)), None, "a taken id stays taken");
        assert_eq!(r.take(RequestId(6)), Some("b"));
        assert_eq!(
            r.slots.len(),
            1,
            "the window closes behind the taken replies"
        );
        r.insert(RequestId(9), "never expected");
        assert_eq!(r.take(RequestId(9)), None);
        r.insert(RequestId(8), "d");
        assert_eq!(r.take(RequestId(8)), Some("d"));
        assert!(r.slots.is_empty());
    }
}
