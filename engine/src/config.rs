//! Tunables of the engine, with defaults sized for a dense messaging server.

use std::net::SocketAddr;
use std::time::Duration;

/// How the engine runs. `Default` is a sensible production start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where every core listens (`SO_REUSEPORT`).
    pub addr: SocketAddr,
    /// Threads (each with its ring and listener). 0: one per available CPU.
    pub cores: usize,
    /// Pin core `i` to CPU `cpu_offset + i` (mod CPUs).
    pub pin: bool,
    /// First CPU to pin to.
    pub cpu_offset: usize,
    /// Submission queue entries of a core's main ring (extra lanes get a
    /// quarter).
    pub ring_entries: u32,
    /// Provided receive buffers per lane (a power of two).
    pub recv_buffers: u16,
    /// Size of each receive buffer.
    pub recv_buffer_size: u32,
    /// Connections one core may hold. Sockets live in fixed file tables of
    /// at most `files_per_lane` (and `RLIMIT_NOFILE`) entries; past that,
    /// the core runs more rings ("lanes"), one table each.
    pub max_connections_per_core: u32,
    /// The size of one lane's fixed file table.
    pub files_per_lane: u32,
    /// Listen backlog.
    pub backlog: i32,
    /// Bytes queued for one connection before it is closed as a slow
    /// consumer. An empty queue always takes one message, so a connection
    /// holds at most this or one message (plus its header), whichever is
    /// larger.
    pub send_queue_limit: usize,
    /// The close code a slow consumer gets: 1008 (policy) by default, or
    /// 1013 (try again later) to invite a reconnect.
    pub slow_consumer_code: ringhub_proto::CloseCode,
    /// Largest frame and message accepted from a client.
    pub limits: ringhub_proto::Limits,
    /// Largest upgrade request head.
    pub max_request_head: usize,
    /// Largest body of a plain HTTP request (see `Handler::on_request`).
    pub max_request_body: usize,
    /// Plain HTTP requests one kept-alive connection may make before the
    /// server closes it (1: close after every response). Between requests
    /// the client has `handshake_timeout` to send the next one, so idle
    /// keep-alive connections cannot hold slots for long.
    pub max_requests_per_connection: u32,
    /// Offer permessage-deflate (no context takeover).
    pub deflate: bool,
    /// Time to finish the HTTP upgrade (or a plain request) after accept,
    /// and to send the next plain request on a kept-alive connection.
    pub handshake_timeout: Duration,
    /// Ping a connection this long after its last byte.
    pub ping_interval: Duration,
    /// Close a connection that stays silent this long after a ping.
    pub idle_timeout: Duration,
    /// Time a close handshake (or a final flush) may take.
    pub close_timeout: Duration,
    /// Time to drain on shutdown before dropping the remaining connections.
    pub shutdown_grace: Duration,
    /// Timer resolution.
    pub tick: Duration,
    /// Messages a core's mailbox holds.
    pub mailbox_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([0, 0, 0, 0], 9000)),
            cores: 0,
            pin: true,
            cpu_offset: 0,
            ring_entries: 4096,
            recv_buffers: 1024,
            recv_buffer_size: 4096,
            max_connections_per_core: 65_536,
            files_per_lane: 16_384,
            backlog: 4096,
            send_queue_limit: 1 << 20,
            slow_consumer_code: ringhub_proto::CloseCode::Policy,
            limits: ringhub_proto::Limits::default(),
            max_request_head: 8 * 1024,
            max_request_body: 64 * 1024,
            max_requests_per_connection: 1000,
            deflate: true,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(3),
            shutdown_grace: Duration::from_secs(5),
            tick: Duration::from_millis(100),
            mailbox_capacity: 65_536,
        }
    }
}

impl Config {
    /// Checks the values the kernel or the engine would refuse later, with
    /// a message naming the field.
    pub fn validate(&self) -> Result<(), crate::EngineError> {
        let bad = |msg: String| Err(crate::EngineError::Config(msg));
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 1 << 15 {
            return bad(format!(
                "recv_buffers = {} must be a power of two no larger than 32768",
                self.recv_buffers
            ));
        }
        if self.recv_buffer_size < 512 {
            return bad(format!(
                "recv_buffer_size = {} is below 512 bytes",
                self.recv_buffer_size
            ));
        }
        if self.ring_entries == 0 || self.ring_entries > 1 << 15 {
            return bad(format!(
                "ring_entries = {} must be in 1..=32768",
                self.ring_entries
            ));
        }
        if self.core_count() > usize::from(u16::MAX) {
            return bad(format!("cores = {} is more than 65535", self.cores));
        }
        if self.tick.is_zero() {
            return bad("tick must be longer than zero".into());
        }
        if self.max_connections_per_core == 0 {
            return bad("max_connections_per_core must be at least 1".into());
        }
        Ok(())
    }

    /// `d` in ticks, at least one.
    pub(crate) fn ticks(&self, d: Duration) -> u32 {
        let tick = self.tick.as_millis().max(1);
        (d.as_millis().div_ceil(tick)).clamp(1, u128::from(u32::MAX / 2)) as u32
    }

    /// The number of cores to run.
    pub(crate) fn core_count(&self) -> usize {
        if self.cores > 0 {
            self.cores
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_bad_values_are_named() {
        assert!(Config::default().validate().is_ok());
        let c = Config {
            recv_buffers: 1000,
            ..Config::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("recv_buffers = 1000"), "{msg}");
        let c = Config {
            tick: Duration::ZERO,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("tick"));
    }
}
