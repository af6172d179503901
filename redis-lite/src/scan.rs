//! Finds where a buffered aggregate reply ends, resuming where the last
//! read left off. Without it, a large array arriving over many reads would
//! be parsed from its start after every read (quadratic); with it, the
//! general decoder runs once per complete frame.

/// What the buffered bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// A whole frame of this many bytes is buffered.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// Something the scanner does not follow (malformed or streamed):
    /// let the decoder judge.
    Decode,
}

/// Progress through the frame at the front of the buffer.
#[derive(Debug, Default)]
pub(crate) struct FrameScanner {
    /// Bytes of the frame known to be well formed so far.
    pos: usize,
    /// Elements still expected by each aggregate opened and not finished.
    open: Vec<u64>,
}

impl FrameScanner {
    /// Forgets the progress: call after the front frame was consumed.
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
    }

    /// Continues scanning `buf`, which holds what it held at the last call
    /// plus more bytes at the end.
    pub(crate) fn scan(&mut self, buf: &[u8]) -> Scan {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Scan::Incomplete;
            };
            let Some(cr) = buf[self.pos..].iter().position(|&b| b == b'\r') else {
                return Scan::Incomplete;
            };
            let line_end = self.pos + cr;
            if buf.len() < line_end + 2 {
                return Scan::Incomplete;
            }
            if buf[line_end + 1] != b'\n' {
                return Scan::Decode;
            }
            let header = &buf[self.pos + 1..line_end];
            let after_header = line_end + 2;
            let children = match kind {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => 0,
                b'$' | b'=' | b'!' => match parse_len(header) {
                    Some(-1) => 0,
                    Some(len) if len >= 0 => {
                        let Some(end) = usize::try_from(len)
                            .ok()
                            .and_then(|l| after_header.checked_add(l))
                        else {
                            return Scan::Decode;
                        };
                        if buf.len() < end + 2 {
                            return Scan::Incomplete;
                        }
                        if &buf[end..end + 2] != b"\r\n" {
                            return Scan::Decode;
                        }
                        self.pos = end + 2;
                        if self.element_done() {
                            return Scan::Complete(self.pos);
                        }
                        continue;
                    }
                    _ => return Scan::Decode,
                },
                b'*' | b'~' | b'>' => match parse_len(header) {
                    Some(-1) => 0,
                    Some(n) if n >= 0 => n as u64,
                    _ => return Scan::Decode,
                },
                // A map's pairs; an attribute's pairs plus the value it annotates.
                b'%' | b'|' => match parse_len(header) {
                    Some(n) if n >= 0 => (n as u64) * 2 + u64::from(kind == b'|'),
                    _ => return Scan::Decode,
                },
                _ => return Scan::Decode,
            };
            self.pos = after_header;
            if children > 0 {
                self.open.push(children);
            } else if self.element_done() {
                return Scan::Complete(self.pos);
            }
        }
    }

    /// One element finished: close every aggregate it completes. True when
    /// the outermost frame is complete.
    fn element_done(&mut self) -> bool {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }
}

fn parse_len(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random RESP2/RESP3 frames, nested.
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-z]{0,8}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            "[a-z]{0,8}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
            any::<i32>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| {
                let mut v = format!("${}\r\n", b.len()).into_bytes();
                v.extend_from_slice(&b);
                v.extend_from_slice(b"\r\n");
                v
            }),
            Just(b"_\r\n".to_vec()),
            Just(b"#t\r\n".to_vec()),
            Just(b",1.5\r\n".to_vec()),
            Just(b"$-1\r\n".to_vec()),
        ];
        leaf.prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                    let mut v = format!("*{}\r\n", items.len()).into_bytes();
                    v.extend(items.concat());
                    v
                }),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                    let mut v = format!(">{}\r\n", items.len()).into_bytes();
                    v.extend(items.concat());
                    v
                }),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(|pairs| {
                    let mut v = format!("%{}\r\n", pairs.len()).into_bytes();
                    for (k, val) in pairs {
                        v.extend(k);
                        v.extend(val);
                    }
                    v
                }),
                (inner.clone(), inner).prop_map(|(k, val)| {
                    let mut v = b"|1\r\n+key\r\n".to_vec();
                    v.extend(k);
                    v.extend(val);
                    v
                }),
            ]
        })
    }

    proptest! {
        /// Fed any prefix growth, the scanner finds exactly the frame's end.
        #[test]
        fn finds_frame_ends_across_reads(f in frame(), next in frame(), cuts in proptest::collection::vec(1usize..9, 1..6)) {
            let mut wire = f.clone();
            wire.extend_from_slice(&next);
            let mut scanner = FrameScanner::default();
            let mut fed = 0;
            let mut found = None;
            for cut in cuts.iter().cycle() {
                fed = (fed + cut).min(wire.len());
                match scanner.scan(&wire[..fed]) {
                    Scan::Complete(n) => { found = Some(n); break; }
                    Scan::Incomplete => prop_assert!(fed < f.len(), "incomplete with the whole frame buffered"),
                    Scan::Decode => prop_assert!(false, "valid frame judged malformed"),
                }
                if fed == wire.len() { break; }
            }
            prop_assert_eq!(found, Some(f.len()));
        }

        /// The frame end agrees with what redis-protocol's RESP3 decoder consumes.
        #[test]
        fn agrees_with_redis_protocol(f in frame()) {
            let mut scanner = FrameScanner::default();
            let theirs = redis_protocol::resp3::decode::complete::decode(&f).ok().flatten().map(|(_, n)| n);
            if let Some(n) = theirs {
                prop_assert_eq!(scanner.scan(&f), Scan::Complete(n));
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = FrameScanner::default().scan(&bytes);
        }
    }

    #[test]
    fn huge_declared_lengths_are_left_to_the_decoder() {
        assert_eq!(
            FrameScanner::default().scan(b"$99999999999999999999\r\n"),
            Scan::Decode
        );
        assert_eq!(FrameScanner::default().scan(b"*?\r\n"), Scan::Decode);
        assert_eq!(
            FrameScanner::default().scan(b"*2\r\n:1\r\n"),
            Scan::Incomplete
        );
    }
}
