//! What a connection's timer means when it fires: the handshake deadline,
//! the ping interval, the idle timeout and the close timeout, decided from
//! the connection's phase and its last activity. Pure, so every rule is
//! tested without a clock.

use crate::config::Config;
use crate::conn::Phase;
use crate::timer::Tick;

/// The configured durations, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Tick,
    pub ping_interval: Tick,
    pub idle: Tick,
    pub close: Tick,
}

impl Timeouts {
    pub fn from_config(c: &Config) -> Timeouts {
        Timeouts {
            handshake: c.ticks(c.handshake_timeout),
            ping_interval: c.ticks(c.ping_interval),
            idle: c.ticks(c.idle_timeout),
            close: c.ticks(c.close_timeout),
        }
    }
}

/// The timer state of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerView {
    pub phase: Phase,
    /// A ping is out and nothing arrived since.
    pub ping_out: bool,
    /// When the phase (or the outstanding ping) started.
    pub mark: Tick,
    /// When bytes last arrived.
    pub last_rx: Tick,
}

/// What to do when the timer fires at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Not due yet: fire again at this tick.
    Rearm(Tick),
    /// Silent for a ping interval: send a ping, fire again at `next`.
    Ping { next: Tick },
    /// The upgrade request did not complete in time: drop the socket.
    HandshakeExpired,
    /// No byte (not even a pong) for the idle timeout after a ping.
    IdleExpired,
    /// The close handshake or final flush took too long.
    CloseExpired,
    /// The connection is already going away.
    Nothing,
}

/// The action for a connection whose timer fired at `now`.
pub fn on_deadline(v: TimerView, now: Tick, t: &Timeouts) -> TimerAction {
    let due = |deadline: Tick, expired: TimerAction| {
        if now >= deadline {
            expired
        } else {
            TimerAction::Rearm(deadline)
        }
    };
    match v.phase {
        Phase::Gone => TimerAction::Nothing,
        Phase::Handshake => due(v.mark + t.handshake, TimerAction::HandshakeExpired),
        Phase::Closing => due(v.mark + t.close, TimerAction::CloseExpired),
        Phase::Open if v.ping_out => due(v.mark + t.idle, TimerAction::IdleExpired),
        Phase::Open => due(
            v.last_rx + t.ping_interval,
            TimerAction::Ping { next: now + t.idle },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        handshake: 100,
        ping_interval: 300,
        idle: 50,
        close: 30,
    };

    fn view(phase: Phase, ping_out: bool, mark: Tick, last_rx: Tick) -> TimerView {
        TimerView {
            phase,
            ping_out,
            mark,
            last_rx,
        }
    }

    #[test]
    fn a_handshake_has_until_its_deadline() {
        let v = view(Phase::Handshake, false, 10, 10);
        assert_eq!(on_deadline(v, 50, &T), TimerAction::Rearm(110));
        assert_eq!(on_deadline(v, 110, &T), TimerAction::HandshakeExpired);
    }

    #[test]
    fn activity_pushes_the_ping_back_without_touching_the_wheel() {
        // Armed for tick 300 at open, but bytes came at 200.
        let v = view(Phase::Open, false, 0, 200);
        assert_eq!(on_deadline(v, 300, &T), TimerAction::Rearm(500));
        assert_eq!(on_deadline(v, 500, &T), TimerAction::Ping { next: 550 });
    }

    #[test]
    fn an_unanswered_ping_ends_the_connection() {
        let v = view(Phase::Open, true, 500, 200);
        assert_eq!(on_deadline(v, 520, &T), TimerAction::Rearm(550));
        assert_eq!(on_deadline(v, 550, &T), TimerAction::IdleExpired);
    }

    #[test]
    fn closing_is_bounded_and_gone_is_left_alone() {
        let v = view(Phase::Closing, false, 40, 0);
        assert_eq!(on_deadline(v, 60, &T), TimerAction::Rearm(70));
        assert_eq!(on_deadline(v, 70, &T), TimerAction::CloseExpired);
        assert_eq!(
            on_deadline(view(Phase::Gone, false, 0, 0), 1000, &T),
            TimerAction::Nothing
        );
    }
}
