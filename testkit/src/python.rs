//! A Python interpreter for tests that drive real Python peers (`websockets`,
//! `moto`): `$PYTHON`, the workspace venv that `scripts/test` makes, or
//! `python3`, whichever first has the module.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The first interpreter that can `import module`; otherwise the test fails
/// saying how to get one.
pub fn python_with(module: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let candidates = [
        std::env::var_os("PYTHON").map(PathBuf::from),
        Some(venv),
        Some(PathBuf::from("python3")),
    ];
    for python in candidates.into_iter().flatten() {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python;
        }
    }
    panic!(
        "this test needs Python's `{module}`: run `bash scripts/test` (it makes .venv at the \
         workspace root), or `python3 -m venv .venv && .venv/bin/pip install -r \
         scripts/requirements-test.txt`, or set PYTHON to an interpreter that has it"
    );
}
