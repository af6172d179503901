//! RESP framing: commands out (hand-written, the hot path), replies in
//! (decoded by `redis-protocol` straight from the receive buffer, zero-copy).

use bytes::{BufMut, BytesMut};
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

    #[test]
    fn garbage_is_an_error() {
        assert!(one(b"?what\r\n", Protocol::Resp2).is_err());
        assert!(one(b"$abc\r\n", Protocol::Resp3).is_err());
    }
}
