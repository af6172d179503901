//! A real `ringhub` process for the server's and the bench's integration
//! tests: started in a fresh working directory (no developer's `.env.local`
//! is read) with no inherited `RINGHUB_*` variable, on a free loopback port,
//! its log collected, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running `ringhub` process, killed when dropped.
#[derive(Debug)]
pub struct RinghubProcess {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl RinghubProcess {
    /// Starts `binary` with `--listen 127.0.0.1:0`, then `args`, then the
    /// variables `env`, and waits (at most `wait`) until it says where it
    /// listens. Panics with its log if it does not.
    pub fn start(
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        wait: Duration,
    ) -> RinghubProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(binary);
        command
            .current_dir(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("RINGHUB_") {
                command.env_remove(key);
            }
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn ringhub");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(wait) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().unwrap_or_else(|e| e.into_inner());
                panic!("ringhub did not start:\n{log}");
            }
        };
        RinghubProcess {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RinghubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
