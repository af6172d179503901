//! Frame parse, unmask and encode. Run with
//! `cargo bench -p ringhub-proto --bench frame -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringhub_proto::{
    Decoded, FrameHead, Limits, MessageAssembler, Opcode, ParsedFrame, Role, apply_mask,
    encode_frame, encode_header, encode_masked_frame, parse_frame,
};

const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];

fn masked_frame(opcode: Opcode, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut wire = Vec::new();
    encode_masked_frame(&mut wire, FrameHead::new(opcode), &payload, KEY);
    wire
}

/// The byte-at-a-time loop the word-at-a-time one replaces.
fn unmask_bytewise(buf: &mut [u8], key: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let limits = Limits::default();
    for len in [64, 16 * 1024] {
        group.throughput(Throughput::Bytes(len as u64));
        // Parsing unmasks in place, so each run flips the payload between
        // masked and clear; binary payloads do not care.
        let mut wire = masked_frame(Opcode::Binary, len);
        group.bench_with_input(BenchmarkId::new("binary", len), &len, |b, _| {
            b.iter(
                || match parse_frame(black_box(&mut wire), Role::Server, &limits, false) {
                    Ok(ParsedFrame::Complete { frame, consumed }) => {
                        black_box((frame.payload.len(), consumed))
                    }
                    _ => unreachable!(),
                },
            )
        });
        // Decode a text message: parse, unmask, UTF-8 check, message out.
        let wire = masked_frame(Opcode::Text, len);
        let mut assembler = MessageAssembler::new();
        group.bench_with_input(BenchmarkId::new("text_message", len), &len, |b, _| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| match assembler.decode(buf, Role::Server, &limits, false) {
                    Ok(Decoded::Frame { message, .. }) => black_box(message.is_some()),
                    _ => unreachable!(),
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for len in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = vec![0x5Au8; len + 1];
        // Start one byte in, so the slice is not word-aligned.
        group.bench_with_input(BenchmarkId::new("word", len), &len, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf[1..]), KEY))
        });
        group.bench_with_input(BenchmarkId::new("bytewise", len), &len, |b, _| {
            b.iter(|| unmask_bytewise(black_box(&mut buf[1..]), KEY))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.bench_function("header", |b| {
        b.iter(|| {
            encode_header(
                black_box(FrameHead::new(Opcode::Text)),
                black_box(16 * 1024),
            )
        })
    });
    for len in [64, 16 * 1024] {
        group.throughput(Throughput::Bytes(len as u64));
        let payload = vec![b'x'; len];
        let mut out = Vec::with_capacity(len + 14);
        group.bench_with_input(BenchmarkId::new("server_frame", len), &len, |b, _| {
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, FrameHead::new(Opcode::Text), black_box(&payload));
                black_box(out.len())
            })
        });
        group.bench_with_input(
            BenchmarkId::new("masked_client_frame", len),
            &len,
            |b, _| {
                b.iter(|| {
                    out.clear();
                    encode_masked_frame(
                        &mut out,
                        FrameHead::new(Opcode::Text),
                        black_box(&payload),
                        KEY,
                    );
                    black_box(out.len())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse, unmask, encode);
criterion_main!(benches);
