//! A small WebSocket load generator for the pubsub example, bounded in time
//! and aimed only at loopback addresses.
//!
//! ```text
//! loadgen echo   [--addr A] [--conns 100] [--inflight 16] [--size 64] [--secs 10] [--threads 1]
//! loadgen fanout [--addr A] [--subs 1000] [--window 64] [--size 64] [--secs 10] [--threads 1]
//! loadgen idle   [--addr A] [--conns 10000] [--secs 30] [--src 127.0.0.2] [--srcs 4]
//! ```
//! `--server-pid P` adds the server's CPU time per message (from /proc).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    mode: String,
    addr: SocketAddr,
    conns: usize,
    inflight: usize,
    size: usize,
    secs: u64,
    threads: usize,
    window: usize,
    src: Ipv4Addr,
    srcs: u8,
    server_pid: Option<u32>,
}

fn parse_args() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        mode: it.next()?,
        addr: "127.0.0.1:9000".parse().ok()?,
        conns: 0,
        inflight: 16,
        size: 64,
        secs: 10,
        threads: 1,
        window: 64,
        src: Ipv4Addr::new(127, 0, 0, 2),
        srcs: 4,
        server_pid: None,
    };
    while let Some(flag) = it.next() {
        let v = it.next()?;
        match flag.as_str() {
            "--addr" => a.addr = v.parse().ok()?,
            "--conns" | "--subs" => a.conns = v.parse().ok()?,
            "--inflight" => a.inflight = v.parse().ok()?,
            "--size" => a.size = v.parse().ok()?,
            "--secs" => a.secs = v.parse().ok()?,
            "--threads" => a.threads = v.parse().ok()?,
            "--window" => a.window = v.parse().ok()?,
            "--src" => a.src = v.parse().ok()?,
            "--srcs" => a.srcs = v.parse().ok()?,
            "--server-pid" => a.server_pid = Some(v.parse().ok()?),
            _ => return None,
        }
    }
    if !a.addr.ip().is_loopback() {
        eprintln!("loadgen only targets loopback addresses");
        return None;
    }
    Some(a)
}

/// The server's user+system CPU time, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The server's resident set, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A TCP connection from `src` (so many source addresses give many ports).
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket/bind/connect calls on a descriptor we own; the
    // sockaddr_in values are fully initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            4,
        );
        let local = sin(src, 0);
        if libc::bind(fd, (&raw const local).cast(), 16) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let SocketAddr::V4(dst) = dst else {
            return Err(std::io::Error::other("IPv4 only"));
        };
        let remote = sin(*dst.ip(), dst.port());
        if libc::connect(fd, (&raw const remote).cast(), 16) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// Connects and upgrades; returns the stream positioned after the 101.
fn upgrade(mut s: TcpStream) -> std::io::Result<TcpStream> {
    s.set_nodelay(true)?;
    s.write_all(UPGRADE)?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::other("closed during handshake"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other("upgrade refused"));
    }
    Ok(s)
}

/// A masked client text frame (fixed key; fine for a load test).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut f = vec![0x81];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Counts whole server frames in a byte stream, keeping partial ones.
#[derive(Default)]
struct FrameCounter {
    buf: Vec<u8>,
}

impl FrameCounter {
    fn feed(&mut self, data: &[u8]) -> usize {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let mut frames = 0;
        loop {
            let rest = &self.buf[pos..];
            if rest.len() < 2 {
                break;
            }
            let (len, hdr) = match rest[1] & 0x7F {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if rest.len() < hdr + len {
                break;
            }
            // Count data frames only (not pings).
            if rest[0] & 0x0F != 0x9 {
                frames += 1;
            }
            pos += hdr + len;
        }
        self.buf.drain(..pos);
        frames
    }
}

struct Peer {
    s: TcpStream,
    counter: FrameCounter,
    inflight: usize,
}

/// Echo: each connection keeps `inflight` messages outstanding.
fn echo(a: &Args) -> u64 {
    let payload = vec![b'e'; a.size];
    let frame = text_frame(&payload);
    let deadline = Instant::now() + Duration::from_secs(a.secs);
    let per_thread = a.conns.div_ceil(a.threads);
    let threads: Vec<_> = (0..a.threads)
        .map(|_| {
            let frame = frame.clone();
            let (addr, inflight) = (a.addr, a.inflight);
            std::thread::spawn(move || {
                let mut peers: Vec<Peer> = (0..per_thread)
                    .map(|_| Peer {
                        s: upgrade(TcpStream::connect(addr).expect("connect")).expect("upgrade"),
                        counter: FrameCounter::default(),
                        inflight: 0,
                    })
                    .collect();
                for p in &mut peers {
                    p.s.set_nonblocking(true).unwrap();
                }
                let burst: Vec<u8> = frame.repeat(inflight);
                let mut done = 0u64;
                let mut buf = vec![0u8; 64 * 1024];
                while Instant::now() < deadline {
                    for p in &mut peers {
                        if p.inflight == 0 {
                            p.s.set_nonblocking(false).unwrap();
                            p.s.write_all(&burst).unwrap();
                            p.s.set_nonblocking(true).unwrap();
                            p.inflight = inflight;
                        }
                    }
                    poll_read(&mut peers, &mut buf, |p, n| {
                        p.inflight = p.inflight.saturating_sub(n);
                        done += n as u64;
                    });
                }
                done
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
}

/// Waits up to 50 ms for readable peers and counts the frames they got.
fn poll_read(peers: &mut [Peer], buf: &mut [u8], mut on_frames: impl FnMut(&mut Peer, usize)) {
    let mut fds: Vec<libc::pollfd> = peers
        .iter()
        .map(|p| libc::pollfd {
            fd: p.s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a live array of initialised pollfd of that length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
    if n <= 0 {
        return;
    }
    for (p, fd) in peers.iter_mut().zip(&fds) {
        if fd.revents == 0 {
            continue;
        }
        loop {
            match p.s.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    let frames = p.counter.feed(&buf[..n]);
                    on_frames(p, frames);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

/// Fan-out: `subs` subscribers, one publisher keeping `window` publishes
/// ahead of its own copy.
fn fanout(a: &Args) -> u64 {
    let topic = "bench";
    let sub = format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#);
    let pad = a.size.saturating_sub(40);
    let publish = format!(
        r#"{{"type":"publish","topic":"{topic}","d":"{}"}}"#,
        "p".repeat(pad)
    );
    let publish_frame = text_frame(publish.as_bytes());
    let sub_frame = text_frame(sub.as_bytes());
    let sync_frame = text_frame(b"sync");
    let mut subs_left = a.conns;
    let per_thread = a.conns.div_ceil(a.threads);
    let mut readers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(a.secs) + Duration::from_millis(500);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for _ in 0..a.threads {
        let n = per_thread.min(subs_left);
        subs_left -= n;
        let (addr, sub_frame, sync_frame) = (a.addr, sub_frame.clone(), sync_frame.clone());
        let ready = ready_tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut peers: Vec<Peer> = (0..n)
                .map(|_| {
                    let mut s =
                        upgrade(TcpStream::connect(addr).expect("connect")).expect("upgrade");
                    s.write_all(&sub_frame).unwrap();
                    s.write_all(&sync_frame).unwrap();
                    Peer {
                        s,
                        counter: FrameCounter::default(),
                        inflight: 1,
                    }
                })
                .collect();
            for p in &mut peers {
                p.s.set_nonblocking(true).unwrap();
            }
            let mut buf = vec![0u8; 64 * 1024];
            // Wait for every "sync" echo: the subscription is in place.
            let mut synced = 0;
            while synced < peers.len() && Instant::now() < deadline {
                poll_read(&mut peers, &mut buf, |p, n| {
                    if p.inflight > 0 && n > 0 {
                        p.inflight = 0;
                        synced += 1;
                    }
                });
            }
            let _ = ready.send(());
            let mut got = 0u64;
            while Instant::now() < deadline {
                poll_read(&mut peers, &mut buf, |_, n| got += n as u64);
            }
            got
        }));
    }
    for _ in 0..a.threads {
        let _ = ready_rx.recv();
    }
    let mut publisher = upgrade(TcpStream::connect(a.addr).expect("connect")).expect("upgrade");
    publisher.write_all(&sub_frame).unwrap();
    let mut counter = FrameCounter::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut outstanding = 0usize;
    let end = Instant::now() + Duration::from_secs(a.secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        while outstanding < a.window {
            publisher.write_all(&publish_frame).unwrap();
            outstanding += 1;
            sent += 1;
        }
        let n = publisher.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        outstanding = outstanding.saturating_sub(counter.feed(&buf[..n]));
    }
    eprintln!("published {sent}");
    readers.into_iter().map(|t| t.join().unwrap_or(0)).sum()
}

/// Idle density: open `conns` upgraded connections and hold them.
fn idle(a: &Args) -> u64 {
    let before = a.server_pid.and_then(rss_kib);
    let mut held = Vec::with_capacity(a.conns);
    let start = Instant::now();
    for i in 0..a.conns {
        let src = Ipv4Addr::from(u32::from(a.src) + (i % usize::from(a.srcs.max(1))) as u32);
        match connect_from(src, a.addr).and_then(upgrade) {
            Ok(s) => held.push(s),
            Err(e) => {
                eprintln!("connection {i}: {e}");
                break;
            }
        }
    }
    let opened = start.elapsed();
    eprintln!("opened {} connections in {:.2?}", held.len(), opened);
    if let (Some(pid), Some(before)) = (a.server_pid, before) {
        std::thread::sleep(Duration::from_secs(2));
        if let Some(after) = rss_kib(pid) {
            let per = (after.saturating_sub(before) * 1024) as f64 / held.len().max(1) as f64;
            println!(
                "server RSS {before} KiB -> {after} KiB: {per:.0} bytes per idle connection ({} held)",
                held.len()
            );
        }
    }
    let hold_until = start + Duration::from_secs(a.secs);
    while Instant::now() < hold_until {
        std::thread::sleep(Duration::from_millis(200));
    }
    held.len() as u64
}

fn main() -> ExitCode {
    let Some(mut a) = parse_args() else {
        eprintln!(
            "usage: loadgen echo|fanout|idle [--addr 127.0.0.1:9000] [--conns N] ... (see the file's doc)"
        );
        return ExitCode::from(2);
    };
    let cpu_before = a.server_pid.and_then(cpu_seconds);
    let start = Instant::now();
    let default_conns = match a.mode.as_str() {
        "echo" => 100,
        "fanout" => 1000,
        _ => 10_000,
    };
    if a.conns == 0 {
        a.conns = default_conns;
    }
    let count = match a.mode.as_str() {
        "echo" => echo(&a),
        "fanout" => fanout(&a),
        "idle" => {
            idle(&a);
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("unknown mode {}", a.mode);
            return ExitCode::from(2);
        }
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}: {count} messages in {secs:.1} s = {:.0} msgs/s",
        a.mode,
        count as f64 / secs
    );
    if let (Some(pid), Some(before)) = (a.server_pid, cpu_before)
        && let Some(after) = cpu_seconds(pid)
    {
        let ns = (after - before) * 1e9 / count.max(1) as f64;
        println!(
            "server CPU: {:.2} s, {ns:.0} ns per message",
            after - before
        );
    }
    ExitCode::SUCCESS
}
