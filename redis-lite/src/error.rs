//! Every way a request, a connection or a configuration can fail.

use std::time::Duration;

use bytes::Bytes;

/// An error reply sent by the server (`-ERR ...`, `-MOVED ...`, `-WRONGTYPE ...`).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerError(Bytes);

impl ServerError {
    pub(crate) fn new(text: Bytes) -> Self {
        Self(text)
    }

    /// The whole line the server sent, without the leading `-`.
    pub fn message(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("<non-UTF-8 error>")
    }

    /// The first word: `ERR`, `MOVED`, `ASK`, `WRONGTYPE`, `NOAUTH`, ...
    pub fn code(&self) -> &str {
        self.message().split(' ').next().unwrap_or("")
    }

    /// A cluster redirection, if this is `MOVED <slot> <endpoint>` or `ASK <slot> <endpoint>`.
    pub fn redirect(&self) -> Option<Redirect> {
        let mut words = self.message().split(' ');
        let kind = match words.next()? {
            "MOVED" => RedirectKind::Moved,
            "ASK" => RedirectKind::Ask,
            _ => return None,
        };
        let slot = words.next()?.parse::<u16>().ok()?;
        let addr = words.next()?.to_owned();
        (slot < crate::slot::SLOT_COUNT).then_some(Redirect { kind, slot, addr })
    }
}

impl std::fmt::Debug for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerError({:?})", self.message())
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Whether a redirect moves the slot for good (`MOVED`) or for one command (`ASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// The slot now lives elsewhere: update the map and retry there.
    Moved,
    /// The slot is migrating: retry once on the target, preceded by `ASKING`.
    Ask,
}

/// A parsed `MOVED`/`ASK` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// MOVED or ASK.
    pub kind: RedirectKind,
    /// The slot of the key that was redirected.
    pub slot: u16,
    /// `host:port` of the node to retry on; the host may be empty, meaning
    /// "the host of the node that answered".
    pub addr: String,
}

/// Why a request, a connection or a configuration failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server answered with an error reply.
    #[error("redis replied with an error: {0}")]
    Server(ServerError),
    /// The connection closed or broke after the request was written (or queued
    /// on it) and before its reply arrived; the command may or may not have run.
    #[error(
        "connection to {addr} lost before the reply arrived ({reason}); the command may or may not have run"
    )]
    ConnectionLost {
        /// The node the request was sent to.
        addr: String,
        /// What broke the connection.
        reason: String,
    },
    /// No connection to the node is up (it is reconnecting with backoff); the
    /// command was not sent.
    #[error(
        "not connected to {addr}: {reason}; the command was not sent (reconnecting with backoff)"
    )]
    NotConnected {
        /// The node the request would have gone to.
        addr: String,
        /// Why the last connection attempt failed or the connection ended.
        reason: String,
    },
    /// No reply within the request timeout. The connection is closed because
    /// the replies after this one can no longer be matched to their requests.
    #[error(
        "no reply from {addr} within {timeout:?}; the connection was closed and is being re-established"
    )]
    Timeout {
        /// The node that did not answer.
        addr: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The peer sent bytes that are not RESP, or a reply of an unexpected shape.
    #[error("protocol error from {addr}: {detail}")]
    Protocol {
        /// The node that sent the bytes.
        addr: String,
        /// What was wrong with them.
        detail: String,
    },
    /// A command kept being redirected; the slot map keeps changing under it.
    #[error(
        "gave up after {0} MOVED/ASK redirects for one command; the cluster is resharding or misconfigured"
    )]
    TooManyRedirects(u8),
    /// The command cannot be sent to a single cluster node.
    #[error("cannot route `{command}` on a Redis Cluster: {reason}")]
    Unroutable {
        /// The command's name.
        command: String,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// No master serves the slot (cluster down, or map not known yet).
    #[error("no master serves slot {0}: the cluster is down or the slot map is not known yet")]
    SlotUnassigned(u16),
    /// A redis URL or another setting is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The client was shut down while the request was waiting.
    #[error("the client was shut down before the reply arrived")]
    Shutdown,
}

impl Error {
    /// The server's error reply, if this is one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redirects() {
        let e = ServerError::new(Bytes::from_static(b"MOVED 3999 127.0.0.1:6381"));
        let r = e.redirect().unwrap();
        assert_eq!(r.kind, RedirectKind::Moved);
        assert_eq!(r.slot, 3999);
        assert_eq!(r.addr, "127.0.0.1:6381");
        let e = ServerError::new(Bytes::from_static(b"ASK 12182 :7002"));
        assert_eq!(e.redirect().unwrap().kind, RedirectKind::Ask);
        assert_eq!(e.redirect().unwrap().addr, ":7002");
        assert_eq!(e.code(), "ASK");
        for bad in [
            &b"MOVED"[..],
            b"MOVED x 1:2",
            b"MOVED 20000 h:1",
            b"ERR MOVED 1 h:2",
            b"MOVED 1",
        ] {
            assert!(
                ServerError::new(Bytes::copy_from_slice(bad))
                    .redirect()
                    .is_none()
            );
        }
    }
}
