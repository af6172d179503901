//! permessage-deflate cost: compress and inflate of JSON-like messages with
//! no context takeover (the server default), and the resident memory a
//! connection costs when context takeover is on.
//!
//! `cargo bench -p ringhub-proto --bench deflate -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringhub_proto::{CompressionPolicy, Compressors, DeflateParams, Deflater, Inflater};

/// Chat- and ticker-like JSON: repeated keys, varying values.
fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 160);
    let mut i = 0u64;
    while out.len() < len {
        let line = format!(
            r#"{{"type":"message","from":"user{}","topic":"prices","data":{{"sym":"X{}","px":{}.{:02},"qty":{}}},"ts":{}}},"#,
            i * 7919 % 1000,
            i % 23,
            100 + i * 37 % 900,
            i * 13 % 100,
            i * 104_729 % 10_000,
            1_700_000_000_000 + i * 17
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// The message size limit a server runs with (the frame layer's default):
/// the inflater must not pay for the headroom a small message does not use.
const MESSAGE_LIMIT: usize = 16 << 20;

const SHARED: DeflateParams = DeflateParams {
    server_no_context_takeover: true,
    client_no_context_takeover: true,
    server_max_window_bits: 15,
    announce_server_window: false,
};

fn bench_deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for size in [256, 4 * 1024, 64 * 1024] {
        let message = json_like(size);
        let mut compressors = Compressors::new(CompressionPolicy::default());
        let mut compressed = Vec::with_capacity(size);
        compressors
            .compress(&SHARED, &message, &mut compressed)
            .expect("deflate")
            .expect("JSON shrinks");
        eprintln!(
            "deflate: {size} B -> {} B ({:.1}%) at level {}",
            compressed.len(),
            compressed.len() as f64 * 100.0 / size as f64,
            CompressionPolicy::default().level
        );
        group.throughput(Throughput::Bytes(size as u64));

        let mut out = Vec::with_capacity(size);
        group.bench_with_input(BenchmarkId::new("compress", size), &message, |b, m| {
            b.iter(|| {
                out.clear();
                compressors
                    .compress(&SHARED, black_box(m), &mut out)
                    .expect("deflate")
            })
        });

        // The default level against zlib's usual default, for the trade-off.
        let mut level6 = Compressors::new(CompressionPolicy {
            level: 6,
            ..CompressionPolicy::default()
        });
        group.bench_with_input(
            BenchmarkId::new("compress_level6", size),
            &message,
            |b, m| {
                b.iter(|| {
                    out.clear();
                    level6
                        .compress(&SHARED, black_box(m), &mut out)
                        .expect("deflate")
                })
            },
        );
        out.clear();
        level6
            .compress(&SHARED, &message, &mut out)
            .expect("deflate");
        eprintln!("deflate: {size} B -> {} B at level 6", out.len());

        let mut inflater = Inflater::new(false);
        let mut scratch = Vec::with_capacity(size + 1);
        group.bench_with_input(BenchmarkId::new("inflate", size), &compressed, |b, m| {
            b.iter(|| {
                scratch.clear();
                inflater
                    .inflate(black_box(m), &mut scratch, MESSAGE_LIMIT)
                    .expect("inflate");
            })
        });
    }
    group.finish();
}

/// Resident set size of this process, in bytes (Linux).
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Per-connection memory with context takeover: state kept alive across
/// messages, after one 64 KiB message has filled the window.
fn measure_context_takeover_memory() {
    const CONNECTIONS: usize = 500;
    let message = json_like(64 * 1024);
    let mut compressed = Vec::new();
    Deflater::new(CompressionPolicy::default(), 15, false)
        .compress(&message, &mut compressed)
        .expect("deflate");

    let Some(before) = resident_bytes() else {
        eprintln!("memory: /proc/self/statm unavailable, skipped");
        return;
    };
    let mut deflaters = Vec::with_capacity(CONNECTIONS);
    let mut out = Vec::with_capacity(message.len());
    for _ in 0..CONNECTIONS {
        let mut d = Deflater::new(CompressionPolicy::default(), 15, true);
        out.clear();
        d.compress(&message, &mut out).expect("deflate");
        deflaters.push(d);
    }
    let after_deflaters = resident_bytes().unwrap_or(before);
    let mut inflaters = Vec::with_capacity(CONNECTIONS);
    let mut scratch = Vec::with_capacity(message.len() + 1);
    for _ in 0..CONNECTIONS {
        let mut i = Inflater::new(true);
        scratch.clear();
        i.inflate(&compressed, &mut scratch, message.len())
            .expect("inflate");
        inflaters.push(i);
    }
    let after_inflaters = resident_bytes().unwrap_or(after_deflaters);
    eprintln!(
        "memory with context takeover (window 15, level {}), RSS growth over {CONNECTIONS} connections: \
         compressor {} KiB, decompressor {} KiB per connection",
        CompressionPolicy::default().level,
        (after_deflaters - before) / CONNECTIONS / 1024,
        (after_inflaters - after_deflaters) / CONNECTIONS / 1024,
    );
    black_box((deflaters, inflaters));
}

fn main() {
    measure_context_takeover_memory();
    let mut criterion = Criterion::default().configure_from_args();
    bench_deflate(&mut criterion);
    criterion.final_summary();
}
