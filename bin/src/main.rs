//! ringhub: the WebSocket messaging server.
//!
//! Not built yet: the server is filled by issue #7, on the proto, engine and
//! redis-lite crates.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("the ringhub server is not built yet (issue #7); see the README.");
    std::process::exit(2);
}
