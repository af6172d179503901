//! A reply, the same shape whether it arrived as RESP2 or RESP3.

use bytes::Bytes;

use crate::error::ServerError;

/// One reply value. RESP2 and RESP3 both map onto it; RESP3-only types
/// (maps, sets, doubles, booleans) appear only on RESP3 connections.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `$-1`, `*-1` or `_`.
    Nil,
    /// An integer (`:`).
    Int(i64),
    /// A bulk (blob) or verbatim string.
    Bulk(Bytes),
    /// A simple string such as `OK`.
    Status(Bytes),
    /// An array.
    Array(Vec<Value>),
    /// A RESP3 map, in the order the server sent it.
    Map(Vec<(Value, Value)>),
    /// A RESP3 set.
    Set(Vec<Value>),
    /// A RESP3 double.
    Double(f64),
    /// A RESP3 boolean.
    Bool(bool),
    /// A RESP3 big number, as its decimal text.
    BigNumber(Bytes),
    /// An error nested in an aggregate (for example in an `EXEC` result).
    Error(ServerError),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) | Value::Status(b) | Value::BigNumber(b) => Some(b),
            _ => None,
        }
    }

    /// A bulk or simple string as UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer, or a string holding one (RESP2 sends some numbers as text).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => self.as_str()?.parse().ok(),
        }
    }

    /// The elements of an array or set.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Key/value pairs of a RESP3 map, or of a RESP2 array of alternating
    /// keys and values (how RESP2 sends maps such as `CLUSTER SHARDS`).
    pub fn map_pairs(&self) -> Option<Vec<(&Value, &Value)>> {
        match self {
            Value::Map(m) => Some(m.iter().map(|(k, v)| (k, v)).collect()),
            Value::Array(a) if a.len() % 2 == 0 => {
                Some(a.chunks_exact(2).map(|p| (&p[0], &p[1])).collect())
            }
            _ => None,
        }
    }

    /// The value under `key` in a map (see [`Value::map_pairs`]).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map_pairs()?
            .into_iter()
            .find(|(k, _)| k.as_bytes() == Some(key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// True for `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Value::Status(s) if &s[..] == b"OK")
    }
}
