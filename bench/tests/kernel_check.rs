//! `kernel-tuning/check` against fake /proc/sys trees: the same script a host
//! runs, with values chosen to pass and to fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TUNED: &[(&str, &str)] = &[
    ("fs/file-max", "4194304"),
    ("fs/nr_open", "2097152"),
    ("net/core/somaxconn", "65535"),
    ("net/ipv4/tcp_max_syn_backlog", "65535"),
    ("net/core/netdev_max_backlog", "65536"),
    ("net/ipv4/tcp_mem", "1048576\t1572864\t2097152"),
    ("net/ipv4/tcp_rmem", "4096\t16384\t4194304"),
    ("net/ipv4/tcp_wmem", "4096\t16384\t4194304"),
    ("net/ipv4/ip_local_port_range", "1024\t65535"),
    ("net/ipv4/tcp_tw_reuse", "1"),
    ("net/ipv4/tcp_fin_timeout", "15"),
    ("net/ipv4/tcp_slow_start_after_idle", "0"),
    ("kernel/io_uring_disabled", "0"),
];

fn fake_host(name: &str, overrides: &[(&str, &str)]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("ringhub-check-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    for (key, value) in TUNED.iter().chain(overrides) {
        let path = root.join("sys").join(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{value}\n")).unwrap();
    }
    fs::write(
        root.join("meminfo"),
        "MemTotal: 33554432 kB\nMemAvailable: 16777216 kB\n",
    )
    .unwrap();
    root
}

fn check(root: &Path, args: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-tuning/check");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env("PROC_SYS", root.join("sys"))
        .env("PROC_MEMINFO", root.join("meminfo"))
        .output()
        .expect("run bash kernel-tuning/check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_tuned_host_passes_with_no_suggestions() {
    let root = fake_host("tuned", &[]);
    let (code, out) = check(&root, &["--connections", "1000000"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("FAIL") && !out.contains("SET "), "{out}");
    assert!(out.contains("0 suggestion(s)"), "{out}");
}

#[test]
fn suggestions_do_not_fail_but_hard_limits_do() {
    let root = fake_host(
        "defaults",
        &[
            ("net/core/somaxconn", "4096"),
            ("net/ipv4/tcp_tw_reuse", "2"),
        ],
    );
    let (code, out) = check(&root, &["--connections", "1000000"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SET   net.core.somaxconn                   4096 -> 65535"),
        "{out}"
    );

    let root = fake_host(
        "small",
        &[("fs/nr_open", "1048576"), ("kernel/io_uring_disabled", "2")],
    );
    let (code, out) = check(&root, &["--connections", "1500000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  fs.nr_open"), "{out}");
    assert!(out.contains("FAIL  kernel.io_uring_disabled"), "{out}");
    assert!(out.contains("cannot hold 1500000 connections"), "{out}");
}

#[test]
fn memory_bounds_the_connection_count() {
    let root = fake_host("memory", &[]);
    // 2,095,000 connections fit in 16 GiB at 8 KiB each, but not, with
    // 4096 spare descriptors, under fs.nr_open = 2097152.
    let (code, out) = check(&root, &["-n", "2095000"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  fs.nr_open") && out.contains("OK    memory"),
        "{out}"
    );
    let (code, out) = check(&root, &["-n", "1000000", "--bytes-per-connection", "20000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  memory"), "{out}");
    assert_eq!(
        check(&root, &["-n", "1000000", "--bytes-per-connection", "16000"]).0,
        0
    );
}

#[test]
fn usage_errors_exit_2() {
    let root = fake_host("usage", &[]);
    assert_eq!(check(&root, &["--connections", "many"]).0, 2);
    assert_eq!(check(&root, &["--frobnicate"]).0, 2);
}
