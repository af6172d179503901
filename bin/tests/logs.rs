//! Logs: a line per connection only at debug level, JSON lines on request.

mod common;

use common::{Client, Ringhub, WAIT};
use serde_json::Value;

fn connect_and_leave(server: &Ringhub) {
    let mut c: Client = server.connect("user=logged", &[]);
    assert_eq!(c.recv()["type"], "welcome");
    c.ws.close(None).expect("close");
    let _ = c.recv_close();
}

/// Waits (bounded) until the log contains `needle`.
fn wait_for_log(server: &Ringhub, needle: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = server.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn connections_are_logged_only_at_debug_level() {
    let quiet = Ringhub::start(&[]);
    connect_and_leave(&quiet);
    // The server's own SIGTERM line comes after anything the close logged.
    quiet.terminate();
    let log = wait_for_log(&quiet, "stopped");
    assert!(!log.contains("connection opened"), "{log}");
    assert!(!log.contains("connection closed"), "{log}");

    let verbose = Ringhub::start_with_env(&[], &[("RINGHUB_LOG", "info,ringhub=debug")]);
    connect_and_leave(&verbose);
    wait_for_log(&verbose, "connection opened");
    wait_for_log(&verbose, "connection closed");
}

#[test]
fn json_log_lines_carry_the_connection_fields() {
    let server = Ringhub::start_with_env(
        &["--log-format", "json"],
        &[("RINGHUB_LOG", "info,ringhub=debug")],
    );
    connect_and_leave(&server);
    let log = wait_for_log(&server, "connection closed");
    let opened: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "connection opened")
        .unwrap_or_else(|| panic!("no JSON line for the open:\n{log}"));
    assert_eq!(opened["level"], "DEBUG");
    assert_eq!(opened["fields"]["user"], "logged");
    assert!(opened["fields"]["conn"].is_u64(), "{opened}");
}
