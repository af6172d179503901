//! Messages for other servers, gathered per Redis channel so that each
//! channel costs one publish per loop turn at most, and none while its last
//! publish is unanswered, whatever the number of messages (see
//! [`crate::wire`] for the payload).

use crate::names::NameMap;

use bytes::Bytes;

use crate::wire;

/// A batch ready to publish, with what its reply settles.
#[derive(Debug)]
pub struct Ready {
    /// The Redis channel, e.g. `server:b`.
    pub channel: Bytes,
    pub payload: Bytes,
    /// Records in the payload.
    pub records: u32,
    /// The groups (forwards waiting for an outcome) with a record here,
    /// one entry per record; records without a group only count failures.
    pub groups: Vec<usize>,
}

#[derive(Debug)]
struct Open {
    batch: wire::Batch,
    groups: Vec<usize>,
}

/// Open batches, one per channel.
#[derive(Debug)]
pub struct Batcher {
    origin: Box<str>,
    open: NameMap<Vec<u8>, Open>,
    /// The channel name being looked up, reused to spare an allocation per
    /// message.
    scratch: Vec<u8>,
}

impl Batcher {
    pub fn new(origin: &str) -> Batcher {
        Batcher {
            origin: origin.into(),
            open: NameMap::default(),
            scratch: Vec::with_capacity(64),
        }
    }

    /// Adds a message for channel `prefix` + `name`. Returns the channel's
    /// batch once it is full: publish it before anything else for that
    /// channel, so messages keep their order.
    pub fn push(
        &mut self,
        prefix: &str,
        name: &str,
        audience: wire::Audience<'_>,
        frame: &[u8],
        group: Option<usize>,
    ) -> Option<Ready> {
        self.scratch.clear();
        self.scratch.extend_from_slice(prefix.as_bytes());
        self.scratch.extend_from_slice(name.as_bytes());
        if !self.open.contains_key(&self.scratch[..]) {
            let open = Open {
                batch: wire::Batch::new(&self.origin),
                groups: Vec::new(),
            };
            self.open.insert(self.scratch.clone(), open);
        }
        let open = self.open.get_mut(&self.scratch[..])?;
        open.batch.push(audience, frame);
        open.groups.extend(group);
        if !open.batch.is_full() {
            return None;
        }
        let (channel, open) = self.open.remove_entry(&self.scratch[..])?;
        Some(ready(channel, open))
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Every open batch, to publish at the end of the loop turn.
    pub fn drain(&mut self) -> impl Iterator<Item = Ready> + '_ {
        self.open
            .drain()
            .map(|(channel, open)| ready(channel, open))
    }

    /// The open batches of the channels `may_send` allows; the others stay
    /// open (and keep filling).
    pub fn drain_where<'a>(
        &'a mut self,
        mut may_send: impl FnMut(&[u8]) -> bool + 'a,
    ) -> impl Iterator<Item = Ready> + 'a {
        self.open
            .extract_if(move |channel, _| may_send(channel))
            .map(|(channel, open)| ready(channel, open))
    }
}

fn ready(channel: Vec<u8>, open: Open) -> Ready {
    Ready {
        channel: Bytes::from(channel),
        records: open.batch.len() as u32,
        payload: open.batch.finish(),
        groups: open.groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message for user `u` on `server:<server>`.
    fn to_user(b: &mut Batcher, server: &str, frame: &[u8], group: Option<usize>) -> Option<Ready> {
        b.push("server:", server, wire::Audience::User("u"), frame, group)
    }

    #[test]
    fn a_held_channel_keeps_filling_while_others_go() {
        let mut b = Batcher::new("a");
        for (server, frame) in [("b", "1"), ("c", "2"), ("b", "3")] {
            assert!(to_user(&mut b, server, frame.as_bytes(), None).is_none());
        }
        let sent: Vec<Ready> = b.drain_where(|c| c != b"server:b").collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].channel[..], b"server:c");
        assert!(!b.is_empty(), "server:b waits");
        to_user(&mut b, "b", b"4", None);
        let held: Vec<Ready> = b.drain_where(|_| true).collect();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].records, 3, "one publish for all three");
        assert!(b.is_empty());
    }

    #[test]
    fn one_batch_per_channel_in_order() {
        let mut b = Batcher::new("a");
        for (i, server) in ["b", "c", "b", "b"].iter().enumerate() {
            let frame = i.to_string();
            let group = (i % 2 == 0).then_some(i);
            assert!(to_user(&mut b, server, frame.as_bytes(), group).is_none());
        }
        let mut ready: Vec<Ready> = b.drain().collect();
        assert!(b.is_empty());
        ready.sort_by(|x, y| x.channel.cmp(&y.channel));
        assert_eq!(&ready[0].channel[..], b"server:b");
        assert_eq!(ready[0].records, 3);
        assert_eq!(ready[0].groups, vec![0, 2]);
        let frames: Vec<Bytes> = wire::decode(&ready[0].payload)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.frame)
            .collect();
        assert_eq!(frames, vec!["0", "2", "3"]);
        assert_eq!(&ready[1].channel[..], b"server:c");
        assert_eq!((ready[1].records, ready[1].groups.len()), (1, 0));
    }

    #[test]
    fn a_full_batch_is_handed_back_at_once() {
        let mut b = Batcher::new("a");
        let frame = vec![b'x'; 4096];
        let mut pushed = 0;
        let full = loop {
            pushed += 1;
            if let Some(r) = b.push(
                "topic:",
                "t",
                wire::Audience::Topic("t"),
                &frame,
                Some(pushed),
            ) {
                break r;
            }
        };
        assert_eq!(full.records as usize, pushed);
        assert_eq!(full.groups.len(), pushed);
        assert!(full.payload.len() >= wire::MAX_BATCH_BYTES);
        assert!(b.is_empty(), "the full batch left the batcher");
    }
}
