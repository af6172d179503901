//! What one server publishes to another through Redis: the `message` frame
//! exactly as local clients get it, behind a small header that says who
//! published it and for whom.
//!
//! ```text
//! version (1) | origin length (1) | origin | kind (1: U, T, A) | name length (2, BE) | name | frame
//! ```
//!
//! The origin lets a server drop its own publishes when Redis echoes them
//! back (it subscribes to the topic channels it publishes on). The frame is
//! the encoded JSON text, so a receiving server only slices it out of the
//! Redis payload and shares it with its cores, without parsing or copying.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

/// Who a relayed message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    User(&'a str),
    Topic(&'a str),
    Everyone,
}

/// A relayed message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub origin: &'a str,
    pub audience: Audience<'a>,
    /// The `message` frame's JSON text.
    pub frame: Bytes,
}

/// Why a payload was not a relayed message (a foreign publisher on our
/// channels, or a newer version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown relay format version {0}")]
    Version(u8),
    #[error("truncated relay header")]
    Truncated,
    #[error("relay header is not UTF-8")]
    NotUtf8,
    #[error("unknown audience kind {0:#x}")]
    Kind(u8),
}

/// Encodes a relayed message. Names over 64 KiB and origins over 255
/// bytes can't occur: the protocol caps names at 256 and server ids at 64.
pub fn encode(origin: &str, audience: Audience<'_>, frame: &[u8]) -> Bytes {
    let (kind, name) = match audience {
        Audience::User(u) => (b'U', u),
        Audience::Topic(t) => (b'T', t),
        Audience::Everyone => (b'A', ""),
    };
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
    let mut out = BytesMut::with_capacity(5 + origin.len() + name.len() + frame.len());
    out.put_u8(VERSION);
    out.put_u8(origin.len() as u8);
    out.put_slice(origin);
    out.put_u8(kind);
    out.put_u16(name.len() as u16);
    out.put_slice(name);
    out.put_slice(frame);
    out.freeze()
}

/// Decodes a payload; the frame is a slice of `payload` (no copy).
pub fn decode(payload: &Bytes) -> Result<Relayed<'_>, WireError> {
    let p = &payload[..];
    let version = *p.first().ok_or(WireError::Truncated)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let origin_len = usize::from(*p.get(1).ok_or(WireError::Truncated)?);
    let origin = p.get(2..2 + origin_len).ok_or(WireError::Truncated)?;
    let at = 2 + origin_len;
    let kind = *p.get(at).ok_or(WireError::Truncated)?;
    let len = p.get(at + 1..at + 3).ok_or(WireError::Truncated)?;
    let name_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let name = p
        .get(at + 3..at + 3 + name_len)
        .ok_or(WireError::Truncated)?;
    let frame_at = at + 3 + name_len;
    let origin = std::str::from_utf8(origin).map_err(|_| WireError::NotUtf8)?;
    let name = std::str::from_utf8(name).map_err(|_| WireError::NotUtf8)?;
    let audience = match kind {
        b'U' => Audience::User(name),
        b'T' => Audience::Topic(name),
        b'A' => Audience::Everyone,
        other => return Err(WireError::Kind(other)),
    };
    Ok(Relayed {
        origin,
        audience,
        frame: payload.slice(frame_at..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_audience() {
        let frame = br#"{"type":"message","from":"a","to":"b","data":1,"ts":1}"#;
        for audience in [
            Audience::User("bob"),
            Audience::Topic("room:é"),
            Audience::Everyone,
        ] {
            let bytes = encode("server-1", audience, frame);
            let relayed = decode(&bytes).unwrap();
            assert_eq!(relayed.origin, "server-1");
            assert_eq!(relayed.audience, audience);
            assert_eq!(&relayed.frame[..], frame);
        }
    }

    #[test]
    fn foreign_and_truncated_payloads_are_refused() {
        assert_eq!(decode(&Bytes::from_static(b"")), Err(WireError::Truncated));
        assert_eq!(
            decode(&Bytes::from_static(b"hello")),
            Err(WireError::Version(b'h'))
        );
        let full = encode("s", Audience::User("bob"), b"{}");
        for cut in 1..full.len() - 2 {
            assert!(decode(&full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad = full.to_vec();
        bad[3] = b'Z';
        assert_eq!(decode(&Bytes::from(bad)), Err(WireError::Kind(b'Z')));
    }
}
