//! Commands, encoded to RESP as they are built so that sending one is a copy.

use bytes::{Bytes, BytesMut};

use crate::codec::put_array_header;

/// A command with its arguments, already RESP-encoded (minus the array
/// header). Build with [`cmd`] and [`Cmd::arg`].
#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    args: Vec<u8>,
    argc: usize,
}

/// Starts a command: `cmd("SET").arg("k").arg(1)`.
pub fn cmd(name: &str) -> Cmd {
    Cmd::new(name)
}

impl Cmd {
    /// A command with no arguments yet.
    pub fn new(name: &str) -> Self {
        let mut cmd = Self {
            args: Vec::with_capacity(64),
            argc: 0,
        };
        cmd.push_bytes(name.as_bytes());
        cmd
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Arg) -> Self {
        arg.push_to(&mut self);
        self
    }

    /// Appends one argument in place.
    pub fn push(&mut self, arg: impl Arg) -> &mut Self {
        arg.push_to(self);
        self
    }

    /// Appends raw bytes as one argument.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let mut digits = itoa::Buffer::new();
        let len = digits.format(bytes.len());
        self.args.reserve(bytes.len() + len.len() + 5);
        self.args.push(b'$');
        self.args.extend_from_slice(len.as_bytes());
        self.args.extend_from_slice(b"\r\n");
        self.args.extend_from_slice(bytes);
        self.args.extend_from_slice(b"\r\n");
        self.argc += 1;
    }

    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.argc
    }

    /// Never true: a command has at least its name.
    pub fn is_empty(&self) -> bool {
        self.argc == 0
    }

    /// The arguments, the command name first.
    pub fn args(&self) -> Args<'_> {
        Args { rest: &self.args }
    }

    /// The argument at `index` (0 is the command name).
    pub fn arg_at(&self, index: usize) -> Option<&[u8]> {
        self.args().nth(index)
    }

    /// The command name, upper-cased, for routing decisions.
    pub fn name_upper(&self) -> String {
        self.arg_at(0)
            .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
            .unwrap_or_default()
    }

    /// The size of the encoded command in bytes.
    pub fn encoded_len(&self) -> usize {
        self.args.len() + 16
    }

    /// Writes the whole RESP array into `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.args.len() + 16);
        put_array_header(out, self.argc);
        out.extend_from_slice(&self.args);
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for a in self.args() {
            list.entry(&String::from_utf8_lossy(a));
        }
        list.finish()
    }
}

/// Iterator over a command's arguments.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The buffer was written by `push_bytes`: `$<len>\r\n<bytes>\r\n`.
        let rest = self.rest.strip_prefix(b"$")?;
        let digits = rest.iter().position(|&b| b == b'\r')?;
        let len: usize = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let start = digits + 2;
        let arg = rest.get(start..start + len)?;
        self.rest = rest.get(start + len + 2..)?;
        Some(arg)
    }
}

/// Something that can be a command argument.
pub trait Arg {
    /// Appends `self` to `cmd` as one argument.
    fn push_to(&self, cmd: &mut Cmd);
}

impl<T: Arg + ?Sized> Arg for &T {
    fn push_to(&self, cmd: &mut Cmd) {
        (**self).push_to(cmd)
    }
}

macro_rules! bytes_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn push_to(&self, cmd: &mut Cmd) {
                cmd.push_bytes(AsRef::<[u8]>::as_ref(self))
            }
        }
    )*};
}
bytes_arg!(str, [u8], String, Vec<u8>, Bytes);

impl<const N: usize> Arg for [u8; N] {
    fn push_to(&self, cmd: &mut Cmd) {
        cmd.push_bytes(self)
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn push_to(&self, cmd: &mut Cmd) {
                cmd.push_bytes(itoa::Buffer::new().format(*self).as_bytes())
            }
        }
    )*};
}
int_arg!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_resp_arrays() {
        let c = cmd("SET").arg("key").arg(b"").arg(-42i64);
        let mut out = BytesMut::new();
        c.write_to(&mut out);
        assert_eq!(
            &out[..],
            b"*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n$3\r\n-42\r\n"
        );
        assert_eq!(
            c.args().collect::<Vec<_>>(),
            vec![&b"SET"[..], b"key", b"", b"-42"]
        );
        assert_eq!(c.name_upper(), "SET");
        assert_eq!(c.len(), 4);
    }

    proptest::proptest! {
        #[test]
        fn args_round_trip(args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..8)) {
            let mut c = cmd("X");
            for a in &args {
                c.push(&a[..]);
            }
            let back: Vec<Vec<u8>> = c.args().skip(1).map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(back, args);
        }
    }
}
