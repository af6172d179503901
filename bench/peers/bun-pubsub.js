// Reference peer for ringhub-bench: the same protocol as the engine's pub/sub
// example, written with Bun's built-in WebSocket pub/sub (uWebSockets inside).
//
//   bun bench/peers/bun-pubsub.js --port 9001 [--host 127.0.0.1]
//
// Text {"type":"subscribe","topic":T} subscribes the connection to T;
// {"type":"publish","topic":T,...} sends the frame, unchanged, to every
// subscriber of T; anything else (text or binary) is echoed back.

function arg(name, fallback) {
  const i = Bun.argv.indexOf(name);
  return i >= 0 && i + 1 < Bun.argv.length ? Bun.argv[i + 1] : fallback;
}

const port = Number(arg("--port", "9001"));
const hostname = arg("--host", "127.0.0.1");

// Only frames that look like a command are parsed: echo traffic stays a
// plain send, as it would in a server written for speed.
function command(message) {
  if (typeof message !== "string" || !message.startsWith('{"type":"')) return null;
  if (!message.startsWith('{"type":"subscribe"') && !message.startsWith('{"type":"publish"')) {
    return null;
  }
  try {
    const value = JSON.parse(message);
    return typeof value.topic === "string" ? value : null;
  } catch {
    return null;
  }
}

const server = Bun.serve({
  port,
  hostname,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    // Deliveries are many small frames; no compression, no idle timeout,
    // and enough backpressure room that a burst is not dropped.
    perMessageDeflate: false,
    idleTimeout: 0,
    maxPayloadLength: 16 * 1024 * 1024,
    backpressureLimit: 16 * 1024 * 1024,
    closeOnBackpressureLimit: false,
    message(ws, message) {
      const cmd = command(message);
      if (cmd === null) {
        ws.send(message);
      } else if (cmd.type === "subscribe") {
        ws.subscribe(cmd.topic);
      } else {
        server.publish(cmd.topic, message);
      }
    },
  },
});

console.log(`bun-pubsub listening on ws://${hostname}:${server.port}/ (pid ${process.pid})`);
