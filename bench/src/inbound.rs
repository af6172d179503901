//! What a ringhub server's frame is, read from its first bytes: the server
//! writes `"type"` first in every frame (docs/protocol.md), so telling a
//! delivery from a `welcome` or an `error` needs no JSON parser and no
//! allocation.

/// A frame from a ringhub server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A delivery (`send`, `publish` or `broadcast`): the stamp is in its `data`.
    Message,
    Welcome,
    Pong,
    Ack,
    /// An `error` frame and its stable `code` (empty if it had none).
    Error {
        code: &'a str,
    },
    /// Anything else: not a ringhub frame, or a type this bench does not know.
    Other,
}

const TYPE: &[u8] = br#"{"type":""#;
const CODE: &[u8] = br#""code":""#;

pub fn classify(frame: &[u8]) -> Inbound<'_> {
    let Some(rest) = frame.strip_prefix(TYPE) else {
        return Inbound::Other;
    };
    let Some(end) = rest.iter().position(|&b| b == b'"') else {
        return Inbound::Other;
    };
    match &rest[..end] {
        b"message" => Inbound::Message,
        b"welcome" => Inbound::Welcome,
        b"pong" => Inbound::Pong,
        b"ack" => Inbound::Ack,
        b"error" => Inbound::Error {
            code: error_code(&rest[end..]),
        },
        _ => Inbound::Other,
    }
}

/// The `code` string of an error frame; codes are plain ASCII words.
fn error_code(frame: &[u8]) -> &str {
    let Some(at) = frame.windows(CODE.len()).position(|w| w == CODE) else {
        return "";
    };
    let value = &frame[at + CODE.len()..];
    let end = value.iter().position(|&b| b == b'"').unwrap_or(0);
    std::str::from_utf8(&value[..end]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_of_the_protocol_document() {
        let cases: [(&[u8], Inbound<'_>); 7] = [
            (
                br#"{"type":"message","from":"bob","to":"alice","data":{"text":"hi"},"id":"m1","ts":1764129600000}"#,
                Inbound::Message,
            ),
            (
                br#"{"type":"message","from":"bob","topic":"room:42","data":1,"ts":1}"#,
                Inbound::Message,
            ),
            (
                br#"{"type":"welcome","user":"alice","conn":4398046511105,"server":"eu-1-a3f9"}"#,
                Inbound::Welcome,
            ),
            (br#"{"type":"pong"}"#, Inbound::Pong),
            (br#"{"type":"ack","id":"m1"}"#, Inbound::Ack),
            (
                br#"{"type":"error","code":"rate_limited","message":"slow down: message rate limit"}"#,
                Inbound::Error {
                    code: "rate_limited",
                },
            ),
            (
                br#"{"type":"error","code":"missing_field","message":"missing field \"to\"","id":"m2"}"#,
                Inbound::Error {
                    code: "missing_field",
                },
            ),
        ];
        for (frame, want) in cases {
            assert_eq!(classify(frame), want, "{}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn anything_else_is_other_and_never_panics() {
        for frame in [
            &b""[..],
            b"{",
            br#"{"type":"#,
            br#"{"type":"mess"#,
            br#"{"type":"echo","k":"0"}"#,
            br#"{ "type":"message"}"#,
            b"\xff\xfe",
        ] {
            assert_eq!(classify(frame), Inbound::Other);
        }
        assert_eq!(
            classify(br#"{"type":"error"}"#),
            Inbound::Error { code: "" }
        );
        assert_eq!(
            classify(br#"{"type":"error","code":"x"#),
            Inbound::Error { code: "" }
        );
    }
}
