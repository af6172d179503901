//! What the connections of a run do.
//!
//! A workload is a plain description (it crosses to worker processes as
//! JSON) that assigns every connection a [`Role`]; the session turns roles
//! into frames. `direct` (user to user across servers) and `mixed` (a
//! chat-like load: users, rooms, direct messages at a target rate) need the
//! full server's client protocol (DESIGN.md, "Client protocol") and become
//! variants here with roles of their own once it exists.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::payload::{Payload, PayloadError};

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
}

impl Workload {
    /// Connections a step of `n` opens: for fan-out `n` is the number of
    /// subscribers, and the publishers come on top.
    pub fn connections(&self, n: usize) -> usize {
        match self {
            Workload::Fanout { publishers, .. } => n + *publishers as usize,
            _ => n,
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
        match *self {
            Workload::Fanout {
                publishers, rate, ..
            } if publishers > 0 && rate > 0 => {
                Some(Duration::from_secs_f64(f64::from(publishers) / rate as f64))
            }
            _ => None,
        }
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
        }
    }

    /// A name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Connect => "connect",
            Workload::Echo { .. } => "echo",
            Workload::Fanout { .. } => "fanout",
        }
    }
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
