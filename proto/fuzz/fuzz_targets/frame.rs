//! Arbitrary bytes, cut into arbitrary reads, through the frame parser and
//! the message assembler as a receive loop drives them (`decode`, or
//! `parse_frame` then `push`): nothing may panic, and no buffer may grow past
//! the limits whatever the frames claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub_proto::{
    Decoded, Limits, Message, MessageAssembler, ParsedFrame, ProtocolError, Role, parse_frame,
};

const LIMITS: Limits = Limits {
    max_frame: 1024,
    max_message: 4096,
};

/// One step of the receive loop: a frame consumed (maybe completing a
/// message), or the bytes it still needs.
type Step<'a> = Result<Result<(Option<Message<'a>>, usize), usize>, ProtocolError>;

fn step<'a>(
    assembler: &mut MessageAssembler,
    buf: &'a mut [u8],
    role: Role,
    compression: bool,
    via_decode: bool,
) -> Step<'a> {
    if via_decode {
        return assembler
            .decode(buf, role, &LIMITS, compression)
            .map(|decoded| match decoded {
                Decoded::Frame { message, consumed } => Ok((message, consumed)),
                Decoded::Incomplete { needed } => Err(needed),
            });
    }
    match parse_frame(buf, role, &LIMITS, compression)? {
        ParsedFrame::Complete { frame, consumed } => {
            Ok(Ok((assembler.push(frame, &LIMITS)?, consumed)))
        }
        ParsedFrame::Incomplete { needed } => Ok(Err(needed)),
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: role, compression, which API, and how big each read is.
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let compression = control & 2 != 0;
    let via_decode = control & 4 != 0;
    let read_size = usize::from(control >> 3) + 1;

    let mut pending = Vec::new();
    let mut assembler = MessageAssembler::new();
    for read in stream.chunks(read_size) {
        pending.extend_from_slice(read);
        let mut start = 0;
        loop {
            match step(
                &mut assembler,
                &mut pending[start..],
                role,
                compression,
                via_decode,
            ) {
                Ok(Ok((_message, consumed))) => {
                    assert!(consumed > 0);
                    start += consumed;
                    assert!(assembler.capacity() <= LIMITS.max_message);
                }
                Ok(Err(needed)) => {
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
