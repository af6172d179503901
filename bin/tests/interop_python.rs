//! Interop with Python's `websockets` (an independent client
//! implementation), with permessage-deflate on and off on either side.

mod common;

use std::path::PathBuf;

use common::Ringhub;

fn python_with_websockets() -> PathBuf {
    ringhub_testkit::python_with("websockets")
}

/// Two Python clients chat through the server: a welcome each, a large
/// compressible send, a publish to a subscriber, an error with its id.
const SCRIPT: &str = r#"
import asyncio, json, sys, websockets

async def main(base, compression, expect_deflate):
    comp = "deflate" if compression == "on" else None
    async def connect(user):
        ws = await websockets.connect(f"{base}?user={user}", compression=comp, max_size=None)
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in ext) == (expect_deflate == "yes"), ext
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["user"] == user, welcome
        return ws
    alice, bob = await connect("alice"), await connect("bob")
    big = {"text": "abc" * 15000}
    await bob.send(json.dumps({"type": "send", "to": "alice", "data": big, "id": "b1"}))
    assert json.loads(await bob.recv()) == {"type": "ack", "id": "b1"}
    msg = json.loads(await alice.recv())
    assert msg["from"] == "bob" and msg["data"] == big, msg["from"]
    await alice.send('{"type":"subscribe","topic":"py"}')
    await alice.send('{"type":"ping"}')
    assert json.loads(await alice.recv()) == {"type": "pong"}
    await bob.send('{"type":"publish","topic":"py","data":[1,2,3]}')
    msg = json.loads(await alice.recv())
    assert msg["topic"] == "py" and msg["data"] == [1, 2, 3], msg
    await bob.send('{"type":"send","data":1,"id":7}')
    err = json.loads(await bob.recv())
    assert err["code"] == "missing_field" and err["id"] == 7, err
    await alice.close()
    await bob.close()
    print("ok")

asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), 20))
"#;

fn run(server_flags: &[&str], client_compression: &str, expect_deflate: &str) {
    let python = python_with_websockets();
    let server = Ringhub::start(server_flags);
    let url = format!("ws://{}/ws", server.addr);
    let out = std::process::Command::new(python)
        .args(["-c", SCRIPT, &url, client_compression, expect_deflate])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("ok"),
        "python client failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
}

#[test]
fn python_websockets_with_compression() {
    run(&[], "on", "yes");
}

#[test]
fn python_websockets_without_compression() {
    run(&[], "off", "no");
}

#[test]
fn python_websockets_offering_compression_to_a_server_without_it() {
    run(&["--compression", "false"], "on", "no");
}
