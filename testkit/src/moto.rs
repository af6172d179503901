//! A CloudWatch-compatible endpoint for tests: moto's server mode behind a
//! small rpc-v2-cbor → query translator (`cloudwatch_cbor_proxy.py`, see
//! there why), both on free local ports, stopped by PID when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{PortLease, free_port};

const INSTALL: &str =
    "install it with `pip install 'moto[server]'` (scripts/test puts it in .venv)";

/// Dummy credentials moto accepts; give them to the client under test.
pub const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// moto and the translator in front of it.
#[derive(Debug)]
pub struct MotoCloudWatch {
    moto: Child,
    proxy: Child,
    moto_port: u16,
    proxy_port: u16,
    /// Keeps other test processes off moto's port while it lives.
    _moto_lease: PortLease,
}

impl MotoCloudWatch {
    /// Starts both and waits until they answer (at most 30 s: moto imports
    /// a lot on a busy machine).
    pub fn start() -> MotoCloudWatch {
        let moto_server = find_moto_server();
        let python = moto_server.with_file_name("python3");
        let python = if python.exists() {
            python
        } else {
            PathBuf::from("python3")
        };
        let moto_lease = free_port(false);
        let moto_port = moto_lease.port();
        let moto = Command::new(&moto_server)
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .envs(CREDENTIALS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", moto_server.display()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cloudwatch_cbor_proxy.py");
        let mut proxy = Command::new(&python)
            .arg(&script)
            .args(["--port", "0", "--upstream"])
            .arg(format!("http://127.0.0.1:{moto_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let stdout = proxy.stdout.take().expect("proxy stdout");
        let mut this = MotoCloudWatch {
            moto,
            proxy,
            moto_port,
            proxy_port: 0,
            _moto_lease: moto_lease,
        };
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        this.proxy_port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("the CBOR proxy did not start (it needs botocore): {line:?}")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", moto_port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        this
    }

    /// The endpoint to give the AWS SDK (the translator).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// Sends a query-protocol request (`Action=...&...`) straight to moto
    /// and returns its XML answer: how tests read values back.
    pub fn query(&self, form: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.moto_port)).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/monitoring/\
                    aws4_request, SignedHeaders=host, Signature=0";
        let request = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {auth}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            self.moto_port,
            form.len()
        );
        s.write_all(request.as_bytes()).expect("write to moto");
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "moto answered: {response}"
        );
        response
    }
}

impl Drop for MotoCloudWatch {
    fn drop(&mut self) {
        for child in [&mut self.proxy, &mut self.moto] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `moto_server` on PATH or in the workspace's `.venv`.
fn find_moto_server() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| panic!("`moto_server` is missing: {INSTALL}"))
}
