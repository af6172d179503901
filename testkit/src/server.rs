//! One `redis-server` process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{PortLease, free_port};

/// A `redis-server` on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// Keeps other test processes off this port while the server lives.
    _lease: PortLease,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server with persistence off.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A standalone server with extra `redis-server` arguments
    /// (for example `["--requirepass", "pw"]`).
    pub fn start_with(args: &[&str]) -> Self {
        crate::require_redis();
        let server = Self::spawn(
            free_port(false),
            args.iter().map(|s| (*s).to_owned()).collect(),
        );
        server.wait_ready(Duration::from_secs(10));
        server
    }

    /// Spawns without waiting (the cluster starts six at once).
    pub(crate) fn spawn(lease: PortLease, args: Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ringhub-redis-")
            .tempdir()
            .expect("create a temp dir for redis");
        let mut server = Self {
            port: lease.port(),
            _lease: lease,
            dir,
            args,
            child: None,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let log = self.log_path();
        // With util-linux's setpriv the kernel kills the server when the test
        // thread that started it dies, even by SIGKILL, so that no server
        // outlives an aborted test run; `Drop` handles every other exit.
        let mut command = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--", "redis-server"]);
            c
        } else {
            Command::new("redis-server")
        };
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): install it with `apt-get install redis-server redis-tools`")
        });
        self.child = Some(child);
    }

    /// Waits until the server answers PING (or NOAUTH); panics with its log otherwise.
    pub(crate) fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(reply) = raw_command(self.port, &["PING"])
                && (reply.starts_with('+')
                    || (reply.starts_with('-') && !reply.starts_with("-LOADING")))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not start within {within:?}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its working directory (cluster config, dumps).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILLs the process (no shutdown, no save) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready(Duration::from_secs(10));
    }

    /// Runs `redis-cli -p <port> <args>` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -p <port> <args>` (bounded by redis-cli's own timeouts)
/// and returns its stdout; panics if redis-cli cannot run.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}): install it with `apt-get install redis-tools`")
        });
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Sends one command over a fresh TCP connection and returns the raw reply
/// text (first read only, at most 64 KiB, within one second).
pub fn raw_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request += &format!("${}\r\n{a}\r\n", a.len());
    }
    stream.write_all(request.as_bytes())?;
    let mut buf = vec![0; 65536];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
