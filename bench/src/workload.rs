//! What the connections of a run do.
//!
//! A workload is a plain description (it crosses to worker processes as
//! JSON) that assigns every connection a [`Role`]; the session turns roles
//! into frames. `connect`, `echo` and `fanout` speak the peer protocol of
//! the engine's pub/sub example (and Bun's); `direct` and `mixed` speak the
//! ringhub server's client protocol (docs/protocol.md) to several servers at
//! once, each connection logged in as a user of its own.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::payload::{self, Name, Payload, PayloadError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// Open connections, upgrade them and hold them idle.
    Connect,
    /// Every connection keeps `in_flight` messages of `size` bytes out and
    /// sends the next one as each echo comes back.
    Echo { size: usize, in_flight: u32 },
    /// `publishers` connections publish `size`-byte messages at `rate` per
    /// second in total across `topics`; every other connection subscribes
    /// to one topic and receives all of that topic's messages.
    Fanout {
        size: usize,
        topics: u32,
        publishers: u32,
        rate: u64,
    },
    /// `pairs` users `s<i>` on the first server each send `size`-byte
    /// messages to their partner `r<i>` on the second (the first again when
    /// there is one), at `rate` messages per second in total.
    Direct { size: usize, pairs: u32, rate: u64 },
    /// A chat: `users` users spread round-robin over the servers, each in
    /// `rooms_per_user` of `rooms` rooms. At `rate` messages per second in
    /// total, `publish_permille` in 1000 are publishes to one of the
    /// sender's rooms and the rest sends to another user. Who joins what and
    /// who sends what to whom follow from `seed`.
    Mixed {
        size: usize,
        users: u32,
        rooms: u32,
        rooms_per_user: u32,
        publish_permille: u32,
        rate: u64,
        seed: u64,
    },
}

/// What one connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the connection open; answers pings.
    Idle,
    /// Sends stamped messages and expects them back; `stream` is the
    /// connection's index in the run.
    Echo {
        stream: u32,
    },
    Publisher {
        stream: u32,
        topic: u32,
    },
    Subscriber {
        topic: u32,
    },
    /// User `s<pair>`: sends to `r<pair>` on schedule.
    DirectSender {
        pair: u32,
    },
    /// User `r<pair>`: receives its partner's messages.
    DirectReceiver {
        pair: u32,
    },
    /// User `u<user>` of the chat: joins its rooms, sends on schedule and
    /// receives from anyone.
    Chatter {
        user: u32,
    },
}

impl Role {
    /// The user this connection logs in as, on ringhub workloads.
    pub fn user(self) -> Option<Name<'static>> {
        match self {
            Role::DirectSender { pair } => Some(Name {
                prefix: "s",
                number: pair,
            }),
            Role::DirectReceiver { pair } => Some(Name {
                prefix: "r",
                number: pair,
            }),
            Role::Chatter { user } => Some(Name {
                prefix: "u",
                number: user,
            }),
            _ => None,
        }
    }

    /// Place of this connection among the run's senders (its start is
    /// staggered by it), if it sends on a schedule.
    pub fn sender_index(self) -> Option<u32> {
        match self {
            Role::Publisher { stream, .. } => Some(stream),
            Role::DirectSender { pair } => Some(pair),
            Role::Chatter { user } => Some(user),
            _ => None,
        }
    }
}

/// Name of room `i` of the `mixed` workload.
pub fn room_name(i: u32) -> Name<'static> {
    Name {
        prefix: "room",
        number: i,
    }
}

impl Workload {
    /// Connections a step of `n` opens: for fan-out `n` is the number of
    /// subscribers, and the publishers come on top.
    /// For `direct`, `n` is the number of pairs, two sockets each.
    pub fn connections(&self, n: usize) -> usize {
        match self {
            Workload::Fanout { publishers, .. } => n + *publishers as usize,
            Workload::Direct { .. } => 2 * n,
            _ => n,
        }
    }

    /// Whether connections speak the ringhub client protocol (log in as a
    /// user, wait for `welcome`, count `error` frames).
    pub fn is_ringhub(&self) -> bool {
        matches!(self, Workload::Direct { .. } | Workload::Mixed { .. })
    }

    /// Which of `targets` servers connection `conn` goes to.
    pub fn target_of(&self, conn: usize, targets: usize) -> usize {
        let targets = targets.max(1);
        match (self, self.role(conn)) {
            (_, Role::DirectReceiver { .. }) => 1 % targets,
            (Workload::Mixed { .. }, _) => conn % targets,
            _ => 0,
        }
    }

    /// Role of the connection with index `conn` in the run. Publishers take
    /// the lowest indices, so they stay together in the first worker.
    pub fn role(&self, conn: usize) -> Role {
        let stream = u32::try_from(conn).unwrap_or(u32::MAX);
        match *self {
            Workload::Connect => Role::Idle,
            Workload::Echo { .. } => Role::Echo { stream },
            Workload::Fanout {
                topics, publishers, ..
            } => {
                let topics = topics.max(1);
                if stream < publishers {
                    Role::Publisher {
                        stream,
                        topic: stream % topics,
                    }
                } else {
                    Role::Subscriber {
                        topic: (stream - publishers) % topics,
                    }
                }
            }
            // Senders first, like publishers: they stay together.
            Workload::Direct { pairs, .. } if stream < pairs => Role::DirectSender { pair: stream },
            Workload::Direct { pairs, .. } => Role::DirectReceiver {
                pair: stream - pairs,
            },
            Workload::Mixed { .. } => Role::Chatter { user: stream },
        }
    }

    /// Topics a connection may subscribe to, by index: fan-out's topics or
    /// the chat's rooms.
    pub fn topic_names(&self) -> Vec<String> {
        match *self {
            Workload::Mixed { rooms, .. } => (0..rooms).map(|r| room_name(r).to_string()).collect(),
            _ => (0..self.topics() as u32)
                .map(|t| self.topic_name(t))
                .collect(),
        }
    }

    pub fn topics(&self) -> usize {
        match self {
            Workload::Fanout { topics, .. } => (*topics).max(1) as usize,
            _ => 0,
        }
    }

    /// Name of topic `i`: `t` when there is one, `t0`, `t1`, ... otherwise
    /// (short, so a 64-byte publish still fits).
    pub fn topic_name(&self, i: u32) -> String {
        if self.topics() <= 1 {
            "t".to_owned()
        } else {
            format!("t{i}")
        }
    }

    /// Interval between two sends of one publisher, if it publishes.
    pub fn publish_interval(&self) -> Option<Duration> {
        let senders = self.senders();
        match *self {
            Workload::Fanout { rate, .. }
            | Workload::Direct { rate, .. }
            | Workload::Mixed { rate, .. }
                if senders > 0 && rate > 0 =>
            {
                Some(Duration::from_secs_f64(f64::from(senders) / rate as f64))
            }
            _ => None,
        }
    }

    /// Connections that send on a schedule.
    pub fn senders(&self) -> u32 {
        match *self {
            Workload::Fanout { publishers, .. } => publishers,
            Workload::Direct { pairs, .. } => pairs,
            Workload::Mixed { users, .. } => users,
            _ => 0,
        }
    }

    /// Whether every worker sends (echo, chat) rather than only the first
    /// few holding the senders: the run's message bound is then split.
    pub fn sends_everywhere(&self) -> bool {
        matches!(self, Workload::Echo { .. } | Workload::Mixed { .. })
    }

    /// Builds the message template of every topic, checking sizes up front
    /// so a bad `--size` fails before any connection opens.
    pub fn templates(&self) -> Result<Templates, PayloadError> {
        match *self {
            Workload::Connect => Ok(Templates::default()),
            Workload::Echo { size, .. } => Ok(Templates {
                echo: Some(Payload::echo(size)?),
                ..Templates::default()
            }),
            Workload::Fanout { size, topics, .. } => {
                let publish = (0..topics.max(1))
                    .map(|t| Payload::publish(&self.topic_name(t), size))
                    .collect::<Result<_, _>>()?;
                Ok(Templates {
                    // Subscribers prove their subscription with an echoed probe.
                    echo: Some(Payload::echo(Payload::min_echo_size())?),
                    publish,
                })
            }
            // Written message by message (the recipient varies); only the
            // size is checked here, against the longest name.
            Workload::Direct { size, pairs, .. } => {
                let to = Name {
                    prefix: "r",
                    number: pairs.saturating_sub(1),
                };
                check_size(size, payload::send_head_len(to), "send")?;
                Ok(Templates::default())
            }
            Workload::Mixed {
                size,
                users,
                rooms,
                rooms_per_user,
                publish_permille,
                ..
            } => {
                let to = Name {
                    prefix: "u",
                    number: users.saturating_sub(1),
                };
                check_size(size, payload::send_head_len(to), "send")?;
                if rooms > 0 && rooms_per_user > 0 && publish_permille > 0 {
                    let room = room_name(rooms - 1);
                    check_size(size, payload::publish_head_len(room), "publish")?;
                }
                Ok(Templates::default())
            }
        }
    }

    /// A name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Connect => "connect",
            Workload::Echo { .. } => "echo",
            Workload::Fanout { .. } => "fanout",
            Workload::Direct { .. } => "direct",
            Workload::Mixed { .. } => "mixed",
        }
    }

    /// Default message size: 64 bytes where that fits; the ringhub
    /// envelopes (`send` with a user name, `data` object) need more.
    pub fn default_size(name: &str) -> usize {
        match name {
            "direct" | "mixed" => 100,
            _ => 64,
        }
    }
}

fn check_size(size: usize, head_len: usize, what: &str) -> Result<(), PayloadError> {
    let min = payload::min_stamped_len(head_len);
    if size < min {
        return Err(PayloadError::TooSmallFor {
            size,
            min,
            what: what.to_owned(),
        });
    }
    Ok(())
}

/// Message templates of a worker, stamped in place for each send.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub echo: Option<Payload>,
    /// One per topic.
    pub publish: Vec<Payload>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_roles_spread_subscribers_over_topics() {
        let w = Workload::Fanout {
            size: 64,
            topics: 3,
            publishers: 2,
            rate: 10,
        };
        assert_eq!(w.connections(9), 11);
        assert_eq!(
            w.role(0),
            Role::Publisher {
                stream: 0,
                topic: 0
            }
        );
        assert_eq!(
            w.role(1),
            Role::Publisher {
                stream: 1,
                topic: 1
            }
        );
        let topics: Vec<_> = (2..11)
            .map(|c| match w.role(c) {
                Role::Subscriber { topic } => topic,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(topics, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(w.publish_interval(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn direct_pairs_a_sender_on_the_first_server_with_a_receiver_on_the_second() {
        let w = Workload::Direct {
            size: 100,
            pairs: 3,
            rate: 300,
        };
        assert_eq!(w.connections(3), 6);
        let roles: Vec<_> = (0..6).map(|c| w.role(c)).collect();
        assert_eq!(
            roles,
            [
                Role::DirectSender { pair: 0 },
                Role::DirectSender { pair: 1 },
                Role::DirectSender { pair: 2 },
                Role::DirectReceiver { pair: 0 },
                Role::DirectReceiver { pair: 1 },
                Role::DirectReceiver { pair: 2 },
            ]
        );
        let servers: Vec<_> = (0..6).map(|c| w.target_of(c, 2)).collect();
        assert_eq!(servers, [0, 0, 0, 1, 1, 1]);
        // One server: both ends on it.
        assert!((0..6).all(|c| w.target_of(c, 1) == 0));
        assert_eq!(roles[4].user().unwrap().to_string(), "r1");
        assert_eq!(roles[1].user().unwrap().to_string(), "s1");
        assert_eq!(roles[2].sender_index(), Some(2));
        assert_eq!(roles[3].sender_index(), None);
        // Three pairs at 300/s: each sender every 10 ms.
        assert_eq!(w.publish_interval(), Some(Duration::from_millis(10)));
        assert!(w.is_ringhub() && !w.sends_everywhere());
    }

    #[test]
    fn mixed_users_spread_round_robin_and_all_send() {
        let w = Workload::Mixed {
            size: 100,
            users: 5,
            rooms: 3,
            rooms_per_user: 2,
            publish_permille: 500,
            rate: 50,
            seed: 1,
        };
        assert_eq!(w.connections(5), 5);
        assert_eq!(w.role(4), Role::Chatter { user: 4 });
        let servers: Vec<_> = (0..5).map(|c| w.target_of(c, 3)).collect();
        assert_eq!(servers, [0, 1, 2, 0, 1]);
        assert_eq!(w.topic_names(), ["room0", "room1", "room2"]);
        assert_eq!(w.publish_interval(), Some(Duration::from_millis(100)));
        assert!(w.sends_everywhere());
        assert_eq!(w.role(3).user().unwrap().to_string(), "u3");
    }

    #[test]
    fn ringhub_sizes_are_checked_against_the_longest_name() {
        let direct = |size, pairs| Workload::Direct {
            size,
            pairs,
            rate: 1,
        };
        let min = payload::min_stamped_len(payload::send_head_len(Name {
            prefix: "r",
            number: 99,
        }));
        assert!(direct(min, 100).templates().is_ok());
        assert!(matches!(
            direct(min, 101).templates(),
            Err(PayloadError::TooSmallFor { .. })
        ));
        assert!(
            direct(Workload::default_size("direct"), 1_000_000)
                .templates()
                .is_ok()
        );
        let mixed = |size, publish_permille| Workload::Mixed {
            size,
            users: 10,
            rooms: 1000,
            rooms_per_user: 1,
            publish_permille,
            rate: 1,
            seed: 0,
        };
        // `room999` is longer than `u9`: only publishes need the room.
        let publish_min = payload::min_stamped_len(payload::publish_head_len(room_name(999)));
        assert!(mixed(publish_min, 1).templates().is_ok());
        assert!(mixed(publish_min - 1, 1).templates().is_err());
        assert!(mixed(publish_min - 1, 0).templates().is_ok());
    }

    #[test]
    fn templates_check_sizes_before_anything_connects() {
        let w = Workload::Fanout {
            size: 64,
            topics: 1,
            publishers: 1,
            rate: 1,
        };
        assert_eq!(w.templates().unwrap().publish.len(), 1);
        // Two-character topic names no longer fit in 64 bytes.
        let w = Workload::Fanout {
            size: 64,
            topics: 2,
            publishers: 1,
            rate: 1,
        };
        assert!(w.templates().is_err());
        assert!(
            Workload::Echo {
                size: 10,
                in_flight: 1
            }
            .templates()
            .is_err()
        );
        assert_eq!(
            Workload::Echo {
                size: 64,
                in_flight: 1
            }
            .role(7),
            Role::Echo { stream: 7 }
        );
    }
}
