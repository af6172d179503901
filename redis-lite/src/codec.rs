//! RESP framing: commands out (hand-written, the hot path), replies in
//! (decoded by `redis-protocol` straight from the receive buffer, zero-copy).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use redis_protocol::resp3::types::BytesFrame as Resp3Frame;

use crate::error::ServerError;
use crate::value::Value;

/// The wire protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2: pushes are told apart from replies by the connection's state.
    Resp2,
    /// RESP3 (after `HELLO 3`): pushes are `>` frames.
    Resp3,
}

/// One decoded frame.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A reply (or, in RESP2, possibly a push: the connection decides).
    Reply(Result<Value, ServerError>),
    /// A RESP3 out-of-band push.
    Push(Vec<Value>),
}

/// Decodes one frame from the front of `buf`, splitting it off. `Ok(None)`:
/// more bytes are needed. `Err`: the bytes are not RESP; the connection is done.
pub(crate) fn decode(buf: &mut BytesMut, protocol: Protocol) -> Result<Option<Frame>, String> {
    match decode_scalar(buf, protocol) {
        Scalar::Frame(frame) => Ok(Some(frame)),
        Scalar::Incomplete => Ok(None),
        Scalar::Other => decode_general(buf, protocol),
    }
}

enum Scalar {
    Frame(Frame),
    Incomplete,
    /// Not a well-formed scalar: let `redis-protocol` decide (or explain).
    Other,
}

/// The replies of a pipeline of `SET`/`GET`/`INCR`/`PUBLISH` are scalars;
/// they are parsed here without the general decoder's machinery.
/// Aggregates, pushes and anything unusual go to `redis-protocol`.
fn decode_scalar(buf: &mut BytesMut, protocol: Protocol) -> Scalar {
    let Some(&kind) = buf.first() else {
        return Scalar::Incomplete;
    };
    let scalar =
        matches!(kind, b'+' | b'-' | b':' | b'$') || (kind == b'_' && protocol == Protocol::Resp3);
    if !scalar {
        return Scalar::Other;
    }
    let Some(cr) = memchr_cr(&buf[1..]) else {
        // A header line longer than any scalar header is not ours to judge.
        return if buf.len() > 64 && kind != b'+' && kind != b'-' {
            Scalar::Other
        } else {
            Scalar::Incomplete
        };
    };
    let line_end = 1 + cr;
    if buf.len() < line_end + 2 {
        return Scalar::Incomplete;
    }
    if buf[line_end + 1] != b'\n' {
        return Scalar::Other;
    }
    let header = &buf[1..line_end];
    let frame = match kind {
        b'+' | b'-' => {
            if header.contains(&b'\n') || (kind == b'-' && std::str::from_utf8(header).is_err()) {
                return Scalar::Other;
            }
            if kind == b'+' && header == b"OK" {
                // The most common reply of all, without touching the buffer's refcount.
                buf.advance(5);
                return Scalar::Frame(Frame::Reply(Ok(Value::Status(Bytes::from_static(b"OK")))));
            }
            let mut line = buf.split_to(line_end + 2).freeze();
            line.truncate(line_end);
            let text = line.slice(1..);
            if kind == b'+' {
                Ok(Value::Status(text))
            } else {
                Err(ServerError::new(text))
            }
        }
        b':' => match parse_i64(header) {
            Some(n) => {
                buf.advance(line_end + 2);
                Ok(Value::Int(n))
            }
            None => return Scalar::Other,
        },
        b'_' if protocol == Protocol::Resp3 && header.is_empty() => {
            buf.advance(3);
            Ok(Value::Nil)
        }
        b'$' => match parse_i64(header) {
            Some(-1) if protocol == Protocol::Resp2 => {
                buf.advance(line_end + 2);
                Ok(Value::Nil)
            }
            Some(len) if len >= 0 => {
                let Ok(len) = usize::try_from(len) else {
                    return Scalar::Other;
                };
                let body = line_end + 2;
                let Some(total) = body.checked_add(len).and_then(|n| n.checked_add(2)) else {
                    return Scalar::Other;
                };
                if buf.len() < total {
                    return Scalar::Incomplete;
                }
                if &buf[total - 2..total] != b"\r\n" {
                    return Scalar::Other;
                }
                let mut frame = buf.split_to(total).freeze();
                frame.truncate(total - 2);
                Ok(Value::Bulk(frame.slice(body..)))
            }
            _ => return Scalar::Other,
        },
        _ => return Scalar::Other,
    };
    Scalar::Frame(Frame::Reply(frame))
}

fn memchr_cr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\r')
}

/// A RESP integer: optional `-`, then 1 to 19 digits.
fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits.iter().try_fold(0i64, |n, &d| {
        n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Any frame, through `redis-protocol`.
fn decode_general(buf: &mut BytesMut, protocol: Protocol) -> Result<Option<Frame>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    match protocol {
        Protocol::Resp2 => match redis_protocol::resp2::decode::decode_bytes_mut(buf) {
            Ok(Some((frame, _, _))) => Ok(Some(Frame::Reply(from_resp2(frame)))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.details().to_owned()),
        },
        Protocol::Resp3 => match redis_protocol::resp3::decode::complete::decode_bytes_mut(buf) {
            Ok(Some((Resp3Frame::Push { data, .. }, _, _))) => {
                let items = data.into_iter().map(nested3).collect::<Result<_, _>>()?;
                Ok(Some(Frame::Push(items)))
            }
            Ok(Some((frame, _, _))) => Ok(Some(Frame::Reply(top3(frame)?))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.details().to_owned()),
        },
    }
}

fn from_resp2(frame: Resp2Frame) -> Result<Value, ServerError> {
    match frame {
        Resp2Frame::Error(s) => Err(ServerError::new(s.into_inner())),
        other => Ok(nested2(other)),
    }
}

fn nested2(frame: Resp2Frame) -> Value {
    match frame {
        Resp2Frame::SimpleString(b) => Value::Status(b),
        Resp2Frame::Error(s) => Value::Error(ServerError::new(s.into_inner())),
        Resp2Frame::Integer(i) => Value::Int(i),
        Resp2Frame::BulkString(b) => Value::Bulk(b),
        Resp2Frame::Array(items) => Value::Array(items.into_iter().map(nested2).collect()),
        Resp2Frame::Null => Value::Nil,
    }
}

fn top3(frame: Resp3Frame) -> Result<Result<Value, ServerError>, String> {
    match frame {
        Resp3Frame::SimpleError { data, .. } => Ok(Err(ServerError::new(data.into_inner()))),
        Resp3Frame::BlobError { data, .. } => Ok(Err(ServerError::new(data))),
        other => nested3(other).map(Ok),
    }
}

fn nested3(frame: Resp3Frame) -> Result<Value, String> {
    Ok(match frame {
        Resp3Frame::BlobString { data, .. } => Value::Bulk(data),
        Resp3Frame::VerbatimString { data, .. } => Value::Bulk(data),
        Resp3Frame::SimpleString { data, .. } => Value::Status(data),
        Resp3Frame::SimpleError { data, .. } => Value::Error(ServerError::new(data.into_inner())),
        Resp3Frame::BlobError { data, .. } => Value::Error(ServerError::new(data)),
        Resp3Frame::Boolean { data, .. } => Value::Bool(data),
        Resp3Frame::Null => Value::Nil,
        Resp3Frame::Number { data, .. } => Value::Int(data),
        Resp3Frame::Double { data, .. } => Value::Double(data),
        Resp3Frame::BigNumber { data, .. } => Value::BigNumber(data),
        Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => {
            Value::Array(data.into_iter().map(nested3).collect::<Result<_, _>>()?)
        }
        Resp3Frame::Set { data, .. } => {
            Value::Set(data.into_iter().map(nested3).collect::<Result<_, _>>()?)
        }
        Resp3Frame::Map { data, .. } => Value::Map(
            data.into_iter()
                .map(|(k, v)| Ok((nested3(k)?, nested3(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Resp3Frame::Hello { .. } | Resp3Frame::ChunkedString(_) => {
            return Err("unexpected HELLO or streamed-string frame from a server".to_owned());
        }
    })
}

/// Writes the RESP array header `*<n>\r\n`.
pub(crate) fn put_array_header(out: &mut BytesMut, n: usize) {
    out.put_u8(b'*');
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn one(bytes: &[u8], p: Protocol) -> Result<Option<Frame>, String> {
        decode(&mut BytesMut::from(bytes), p)
    }

    #[test]
    fn resp2_nulls_and_errors() {
        assert!(matches!(
            one(b"$-1\r\n", Protocol::Resp2),
            Ok(Some(Frame::Reply(Ok(Value::Nil))))
        ));
        assert!(matches!(
            one(b"*-1\r\n", Protocol::Resp2),
            Ok(Some(Frame::Reply(Ok(Value::Nil))))
        ));
        let Ok(Some(Frame::Reply(Err(e)))) = one(b"-WRONGTYPE bad\r\n", Protocol::Resp2) else {
            panic!()
        };
        assert_eq!(e.code(), "WRONGTYPE");
    }

    #[test]
    fn resp3_push_and_map() {
        let Ok(Some(Frame::Push(items))) = one(
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n",
            Protocol::Resp3,
        ) else {
            panic!()
        };
        assert_eq!(items[0], Value::Bulk(Bytes::from_static(b"message")));
        let Ok(Some(Frame::Reply(Ok(v)))) = one(b"%1\r\n+a\r\n:1\r\n", Protocol::Resp3) else {
            panic!()
        };
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let partial = &b"*2\r\n$3\r\nfoo\r\n$3\r\nba"[..];
        let mut buf = BytesMut::from(partial);
        assert!(decode(&mut buf, Protocol::Resp2).unwrap().is_none());
        assert_eq!(
            buf.len(),
            partial.len(),
            "a partial frame must stay buffered"
        );
        buf.extend_from_slice(b"r\r\n:7\r\n");
        assert!(matches!(
            decode(&mut buf, Protocol::Resp2),
            Ok(Some(Frame::Reply(Ok(Value::Array(_)))))
        ));
        assert!(matches!(
            decode(&mut buf, Protocol::Resp2),
            Ok(Some(Frame::Reply(Ok(Value::Int(7)))))
        ));
        assert!(buf.is_empty());
    }

    fn scalar() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            "[A-Z]{1,8} [a-z ]{0,20}".prop_map(|s| format!("-{s}\r\n").into_bytes()),
            any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
                let mut v = format!("${}\r\n", b.len()).into_bytes();
                v.extend_from_slice(&b);
                v.extend_from_slice(b"\r\n");
                v
            }),
            Just(b"$-1\r\n".to_vec()),
            Just(b"_\r\n".to_vec()),
            Just(b"*2\r\n:1\r\n$1\r\nx\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 1..12),
        ]
    }

    /// Decodes everything in `input` fed in `cuts`-sized reads.
    fn run(
        input: &[u8],
        cuts: &[usize],
        protocol: Protocol,
        general_only: bool,
    ) -> Vec<Result<String, ()>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = input;
        for &cut in cuts.iter().cycle().take(input.len() + 1) {
            let n = cut.min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                let r = if general_only {
                    decode_general(&mut buf, protocol)
                } else {
                    decode(&mut buf, protocol)
                };
                match r {
                    Ok(Some(f)) => out.push(Ok(format!("{f:?}"))),
                    Ok(None) => break,
                    Err(_) => {
                        out.push(Err(()));
                        return out;
                    }
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        out
    }

    proptest::proptest! {
        /// The scalar fast path and redis-protocol agree on every input,
        /// however it is cut into reads.
        #[test]
        fn fast_path_agrees_with_redis_protocol(
            frames in proptest::collection::vec(scalar(), 1..8),
            cuts in proptest::collection::vec(1usize..16, 1..8),
            resp3 in proptest::bool::ANY,
        ) {
            let input: Vec<u8> = frames.concat();
            let protocol = if resp3 { Protocol::Resp3 } else { Protocol::Resp2 };
            let fast = run(&input, &cuts, protocol, false);
            let reference = run(&input, &cuts, protocol, true);
            proptest::prop_assert_eq!(fast, reference);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(one(b"?what\r\n", Protocol::Resp2).is_err());
        assert!(one(b"$abc\r\n", Protocol::Resp3).is_err());
    }
}
