//! Arbitrary bytes, cut into arbitrary reads, through `parse_frame` and the
//! message assembler as a receive loop drives them: nothing may panic, and
//! no buffer may grow past the limits whatever the frames claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub_proto::{Limits, MessageAssembler, ParsedFrame, Role, parse_frame};

const LIMITS: Limits = Limits {
    max_frame: 1024,
    max_message: 4096,
};

fuzz_target!(|data: &[u8]| {
    // First byte: role, compression and how big each read is.
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let compression = control & 2 != 0;
    let read_size = usize::from(control >> 2) + 1;

    let mut pending = Vec::new();
    let mut assembler = MessageAssembler::new();
    for read in stream.chunks(read_size) {
        pending.extend_from_slice(read);
        let mut start = 0;
        loop {
            match parse_frame(&mut pending[start..], role, &LIMITS, compression) {
                Ok(ParsedFrame::Complete { frame, consumed }) => {
                    start += consumed;
                    if assembler.push(frame, &LIMITS).is_err() {
                        return;
                    }
                    assert!(assembler.capacity() <= LIMITS.max_message);
                }
                Ok(ParsedFrame::Incomplete { needed }) => {
                    assert!(needed > 0);
                    assert!(pending.len() - start + needed <= LIMITS.max_frame + 14);
                    break;
                }
                Err(error) => {
                    let _ = error.close_code();
                    return;
                }
            }
        }
        pending.drain(..start);
    }
});
