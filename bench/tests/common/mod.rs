//! What the bench's integration tests share: running the bench binary.

use std::process::Command;

use serde_json::Value;

/// Runs the bench with `--json --quiet`; returns its exit code and the one
/// result.
pub fn bench(args: &[&str]) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_ringhub-bench"))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run ringhub-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "bench output is not JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), results[0].clone())
}

/// The number at a dotted `path` of a result, e.g. `messages.lost`.
pub fn n(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, key| &v[key])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}
