//! The JSON client protocol (DESIGN.md, "Client protocol"): parsing client
//! frames in place, and writing server frames into a caller buffer.
//!
//! `data` is carried as the client's raw JSON text from the frame payload to
//! every recipient: parsed once to validate it, never re-encoded.

use std::borrow::Cow;
use std::io::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest `to` or `topic`, in bytes: names become Redis keys and channels.
pub const MAX_NAME_LEN: usize = 256;

/// Longest `id`, in bytes of JSON text: it is echoed back in acks.
pub const MAX_ID_LEN: usize = 128;

/// A client frame, borrowing from the frame payload.
#[derive(Debug, Clone)]
pub enum ClientMessage<'a> {
    /// Deliver `data` to every connection of user `to`, on any server.
    Send {
        /// The recipient user.
        to: Cow<'a, str>,
        /// Any JSON value, as sent.
        data: &'a RawValue,
        /// Echoed in the `ack` (a JSON string or number, as sent).
        id: Option<&'a RawValue>,
    },
    /// Start receiving messages published to `topic`.
    Subscribe {
        /// The topic name.
        topic: Cow<'a, str>,
        /// Echoed in the `ack` sent once the subscription is in effect.
        id: Option<&'a RawValue>,
    },
    /// Stop receiving messages published to `topic`.
    Unsubscribe {
        /// The topic name.
        topic: Cow<'a, str>,
        /// Echoed in the `ack`.
        id: Option<&'a RawValue>,
    },
    /// Deliver `data` to every subscriber of `topic`.
    Publish {
        /// The topic name.
        topic: Cow<'a, str>,
        /// Any JSON value, as sent.
        data: &'a RawValue,
        /// Echoed in the `ack`.
        id: Option<&'a RawValue>,
    },
    /// Deliver `data` to every connection (needs the permission claim).
    Broadcast {
        /// Any JSON value, as sent.
        data: &'a RawValue,
        /// Echoed in the `ack`.
        id: Option<&'a RawValue>,
    },
    /// Asks for a `pong`.
    Ping,
    /// The client's measured round-trip latency, for the metrics.
    Latency {
        /// Milliseconds, finite and non-negative.
        ms: f64,
    },
}

/// What was wrong with a client frame.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeErrorKind {
    /// Not JSON (syntax error, trailing bytes, a repeated field).
    #[error("frame is not valid JSON: {0}")]
    BadJson(serde_json::Error),
    /// Valid JSON, but not an object.
    #[error("frame must be a JSON object")]
    NotAnObject,
    /// `type` names no client message.
    #[error(
        "unknown message type; expected send, subscribe, unsubscribe, publish, broadcast, ping or latency"
    )]
    UnknownType,
    /// A required field is absent.
    #[error("missing field \"{0}\"")]
    MissingField(&'static str),
    /// A field has the wrong type or an out-of-range value.
    #[error("invalid field \"{0}\": {1}")]
    InvalidField(&'static str, &'static str),
}

/// A client frame that could not be parsed, with the frame's `id` when it
/// had a usable one, so the `error` reply can carry it.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct EnvelopeError<'a> {
    /// What went wrong.
    pub kind: EnvelopeErrorKind,
    /// The frame's `id`, if it was valid.
    pub id: Option<&'a RawValue>,
}

impl EnvelopeError<'_> {
    /// The stable `code` of the `error` frame.
    pub fn code(&self) -> &'static str {
        match self.kind {
            EnvelopeErrorKind::BadJson(_) | EnvelopeErrorKind::NotAnObject => "bad_json",
            EnvelopeErrorKind::UnknownType => "unknown_type",
            EnvelopeErrorKind::MissingField(_) => "missing_field",
            EnvelopeErrorKind::InvalidField(..) => "invalid_field",
        }
    }

    /// Appends the `error` frame answering this error.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        let message = self.to_string();
        write_error(out, self.code(), &message, self.id);
    }
}

/// Every field any client frame may have, each kept as raw JSON so that a
/// wrong type is reported per field rather than as a parse failure. Unknown
/// fields are ignored, so clients may add their own. `null` counts as present
/// (`"data": null` is a value).
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    topic: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    ms: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

impl<'a> ClientMessage<'a> {
    /// Parses a text frame's payload.
    pub fn parse(payload: &'a str) -> Result<Self, EnvelopeError<'a>> {
        // serde would also read a struct from an array, positionally.
        if !payload
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            let kind = match serde_json::from_str::<&RawValue>(payload) {
                Ok(_) => EnvelopeErrorKind::NotAnObject,
                Err(e) => EnvelopeErrorKind::BadJson(e),
            };
            return Err(EnvelopeError { kind, id: None });
        }
        let wire: Wire<'a> = serde_json::from_str(payload).map_err(|e| EnvelopeError {
            kind: EnvelopeErrorKind::BadJson(e),
            id: None,
        })?;
        // A bad id is reported without an id to echo.
        let id = match wire.id.map(message_id).transpose().map(Option::flatten) {
            Ok(id) => id,
            Err(kind) => return Err(EnvelopeError { kind, id: None }),
        };
        Self::from_wire(&wire, id).map_err(|kind| EnvelopeError { kind, id })
    }

    fn from_wire(wire: &Wire<'a>, id: Option<&'a RawValue>) -> Result<Self, EnvelopeErrorKind> {
        let kind = wire.kind.ok_or(EnvelopeErrorKind::MissingField("type"))?;
        let kind =
            json_str(kind).ok_or(EnvelopeErrorKind::InvalidField("type", "expected a string"))?;
        let data = || wire.data.ok_or(EnvelopeErrorKind::MissingField("data"));
        Ok(match &*kind {
            "send" => ClientMessage::Send {
                to: name(wire.to, "to")?,
                data: data()?,
                id,
            },
            "subscribe" => ClientMessage::Subscribe {
                topic: name(wire.topic, "topic")?,
                id,
            },
            "unsubscribe" => ClientMessage::Unsubscribe {
                topic: name(wire.topic, "topic")?,
                id,
            },
            "publish" => ClientMessage::Publish {
                topic: name(wire.topic, "topic")?,
                data: data()?,
                id,
            },
            "broadcast" => ClientMessage::Broadcast { data: data()?, id },
            "ping" => ClientMessage::Ping,
            "latency" => {
                let ms = wire.ms.ok_or(EnvelopeErrorKind::MissingField("ms"))?;
                let ms = serde_json::from_str::<f64>(ms.get())
                    .ok()
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .ok_or(EnvelopeErrorKind::InvalidField(
                        "ms",
                        "expected a non-negative number",
                    ))?;
                ClientMessage::Latency { ms }
            }
            _ => return Err(EnvelopeErrorKind::UnknownType),
        })
    }
}

/// A JSON string's value, borrowed when it has no escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        // RawValue holds validated JSON: a string without escapes is its text.
        Some(Cow::Borrowed(inner))
    }
}

fn name<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Cow<'a, str>, EnvelopeErrorKind> {
    let raw = raw.ok_or(EnvelopeErrorKind::MissingField(field))?;
    let value = json_str(raw).ok_or(EnvelopeErrorKind::InvalidField(field, "expected a string"))?;
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(EnvelopeErrorKind::InvalidField(
            field,
            "expected 1 to 256 bytes",
        ));
    }
    Ok(value)
}

/// A usable `id`: a string or a number; `null` means none.
fn message_id(raw: &RawValue) -> Result<Option<&RawValue>, EnvelopeErrorKind> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let scalar = text.starts_with('"')
        || text.starts_with('-')
        || text.starts_with(|c: char| c.is_ascii_digit());
    if !scalar {
        return Err(EnvelopeErrorKind::InvalidField(
            "id",
            "expected a string or a number",
        ));
    }
    if text.len() > MAX_ID_LEN {
        return Err(EnvelopeErrorKind::InvalidField(
            "id",
            "longer than 128 bytes",
        ));
    }
    Ok(Some(raw))
}

/// Who a `message` frame was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient<'a> {
    /// Sent to a user (`"to"`).
    User(&'a str),
    /// Published on a topic (`"topic"`), including broadcasts' topic if any.
    Topic(&'a str),
    /// Broadcast to everyone: neither field.
    Everyone,
}

/// A `message` frame to write.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingMessage<'a> {
    /// The sending user.
    pub from: &'a str,
    /// The addressee.
    pub to: Recipient<'a>,
    /// The JSON value, written as-is.
    pub data: &'a RawValue,
    /// The sender's id, if it gave one.
    pub id: Option<&'a RawValue>,
    /// Server time the message was accepted, in milliseconds since the Unix
    /// epoch.
    pub ts: u64,
}

// Writing into a Vec cannot fail, and serde_json cannot fail on a &str, so the
// results below are ignored.

fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `{"type":"welcome","user":…,"conn":…,"server":…}`.
pub fn write_welcome(out: &mut Vec<u8>, user: &str, conn: u64, server: &str) {
    out.extend_from_slice(br#"{"type":"welcome","user":"#);
    write_str(out, user);
    out.extend_from_slice(br#","conn":"#);
    let _ = write!(out, "{conn}");
    out.extend_from_slice(br#","server":"#);
    write_str(out, server);
    out.push(b'}');
}

/// Appends a `message` frame; `data` and `id` are copied byte for byte.
pub fn write_message(out: &mut Vec<u8>, message: &OutgoingMessage<'_>) {
    out.extend_from_slice(br#"{"type":"message","from":"#);
    write_str(out, message.from);
    match message.to {
        Recipient::User(user) => {
            out.extend_from_slice(br#","to":"#);
            write_str(out, user);
        }
        Recipient::Topic(topic) => {
            out.extend_from_slice(br#","topic":"#);
            write_str(out, topic);
        }
        Recipient::Everyone => {}
    }
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(message.data.get().as_bytes());
    if let Some(id) = message.id {
        out.extend_from_slice(br#","id":"#);
        out.extend_from_slice(id.get().as_bytes());
    }
    out.extend_from_slice(br#","ts":"#);
    let _ = write!(out, "{}", message.ts);
    out.push(b'}');
}

/// Appends `{"type":"ack","id":…}`.
pub fn write_ack(out: &mut Vec<u8>, id: &RawValue) {
    out.extend_from_slice(br#"{"type":"ack","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    out.push(b'}');
}

/// Appends `{"type":"error","code":…,"message":…,"id":…}`.
pub fn write_error(out: &mut Vec<u8>, code: &str, message: &str, id: Option<&RawValue>) {
    out.extend_from_slice(br#"{"type":"error","code":"#);
    write_str(out, code);
    out.extend_from_slice(br#","message":"#);
    write_str(out, message);
    if let Some(id) = id {
        out.extend_from_slice(br#","id":"#);
        out.extend_from_slice(id.get().as_bytes());
    }
    out.push(b'}');
}

/// Appends `{"type":"pong"}`.
pub fn write_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"type":"pong"}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let msg = ClientMessage::parse(r#"{"type":"subscribe","topic":"news"}"#).expect("parse");
        assert!(matches!(
            msg,
            ClientMessage::Subscribe {
                topic: Cow::Borrowed("news"),
                id: None
            }
        ));
        let msg = ClientMessage::parse(r#"{"type":"subscribe","topic":"n\u00e9"}"#).expect("parse");
        assert!(
            matches!(msg, ClientMessage::Subscribe { topic: Cow::Owned(ref t), .. } if t == "né")
        );
    }
}
