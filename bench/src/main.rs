//! ringhub-bench: load generator and benchmark reports (connection density,
//! echo, fan-out, cross-server delivery latency).
//!
//! Not built yet: this crate is filled by issue #5.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("ringhub-bench is not built yet (issue #5); see the README.");
    std::process::exit(2);
}
