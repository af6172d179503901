//! Real Redis for tests: a standalone `redis-server` or a 3-master +
//! 3-replica Redis Cluster on free local ports, in temporary directories,
//! stopped by PID when dropped (a panicking test unwinds through `Drop` too).
//! Also a CloudWatch-compatible endpoint ([`MotoCloudWatch`]: moto's server
//! mode behind an rpc-v2-cbor translator).
//!
//! Every wait is bounded; a node that does not come up fails the test with
//! its log.
//!
//! ```no_run
//! use ringhub_testkit::{RedisCluster, RedisServer};
//!
//! let server = RedisServer::start(); // or start_with(&["--requirepass", "pw"])
//! println!("{}", server.url()); // redis://127.0.0.1:<port>
//!
//! let mut cluster = RedisCluster::start(); // 3 masters + 3 replicas, healthy
//! let victim = cluster.master_ports()[0];
//! cluster.kill(victim); // a replica takes over within a few seconds
//! cluster.restart(victim); // back as a replica; waits until healthy
//! cluster.migrate_slot(866, cluster.master_ports()[1]);
//! ```
#![forbid(unsafe_code)]

mod cluster;
mod moto;
mod ports;
mod python;
mod ringhub;
mod server;

pub use cluster::RedisCluster;
pub use moto::{CREDENTIALS as MOTO_CREDENTIALS, MotoCloudWatch};
pub use python::python_with;
pub use ringhub::RinghubProcess;
pub use server::{RedisServer, cli, raw_command};

/// Panics with an install hint unless `redis-server` and `redis-cli` run.
pub fn require_redis() {
    for (program, package) in [
        ("redis-server", "redis-server"),
        ("redis-cli", "redis-tools"),
    ] {
        let ok = std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "`{program}` is missing: install it with `apt-get install redis-server redis-tools` \
             (package {package}; Redis 7.0+ for sharded pub/sub)"
        );
    }
}
