//! Plain HTTP on the WebSocket port: health, readiness, `/metrics`, the
//! status page at `/` and the publish API.
//!
//! `POST /api/publish` takes the client protocol's JSON (`send`, `publish`
//! or `broadcast`, plus an optional `"from"`, default `"api"`) with
//! `Authorization: Bearer KEY`. It answers 202 once the message is handed
//! to every core (and, with Redis, queued for the other servers): the
//! engine answers a request within its callback, so it cannot wait for
//! remote confirmations the way a client's `ack` does.

use std::borrow::Cow;

use ringhub_engine::{Ctx, HttpResponse, Request};
use ringhub_proto::{ClientMessage, Recipient};
use serde::Deserialize;

use crate::handler::{CoreHandler, WS_PATH};
use crate::snapshot::Snapshot;

/// The live status page: one file, no build step, no CDN.
const STATUS_PAGE: &str = include_str!("../static/status.html");

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Answers a request that is not a WebSocket upgrade. `None` lets the
/// engine answer 426 Upgrade Required (a plain GET of `/ws`).
pub(crate) fn respond(
    handler: &mut CoreHandler,
    ctx: &mut Ctx<'_, CoreHandler>,
    request: &Request<'_>,
    body: &[u8],
) -> Option<HttpResponse> {
    let node = handler.node();
    Some(match (request.method(), request.path()) {
        (_, WS_PATH) => return None,
        ("GET" | "HEAD", "/healthz") => HttpResponse::new(200, TEXT, "ok\n"),
        ("GET" | "HEAD", "/readyz") => {
            let broker = node.broker.kind();
            if node.broker.is_ready() {
                HttpResponse::new(200, TEXT, format!("ready ({broker})\n"))
            } else {
                HttpResponse::new(503, TEXT, format!("not ready: {broker} unreachable\n"))
            }
        }
        ("POST", "/api/publish") => publish(handler, ctx, request, body),
        (_, "/api/publish") => HttpResponse::new(405, TEXT, "use POST\n"),
        ("GET" | "HEAD", "/metrics") if !node.settings.metrics_on_main_port => {
            HttpResponse::new(404, TEXT, "metrics are served on RINGHUB_METRICS_LISTEN\n")
        }
        ("GET" | "HEAD", "/metrics") => {
            let mut text = String::with_capacity(8 * 1024);
            crate::prometheus::render(&mut text, &Snapshot::read(node));
            HttpResponse::new(200, crate::prometheus::CONTENT_TYPE, text)
        }
        ("GET" | "HEAD", "/" | "/index.html") => {
            HttpResponse::new(200, "text/html; charset=utf-8", STATUS_PAGE)
        }
        _ => HttpResponse::new(404, TEXT, "not found\n"),
    })
}

/// The optional sender name of an API message.
#[derive(Deserialize)]
struct From<'a> {
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
}

fn publish(
    handler: &mut CoreHandler,
    ctx: &mut Ctx<'_, CoreHandler>,
    request: &Request<'_>,
    body: &[u8],
) -> HttpResponse {
    let Some(key) = handler.node().settings.api_key.as_deref() else {
        return HttpResponse::new(403, TEXT, "the publish API is off: set RINGHUB_API_KEY\n");
    };
    let authorized = request
        .bearer_token()
        .is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()));
    if !authorized {
        return HttpResponse::new(
            401,
            TEXT,
            "missing or wrong API key (Authorization: Bearer KEY)\n",
        );
    }
    let error = |code: &str, message: &str| {
        let mut out = Vec::new();
        ringhub_proto::write_error(&mut out, code, message, None);
        HttpResponse::new(400, JSON, out)
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return error("bad_json", "body is not UTF-8");
    };
    let message = match ClientMessage::parse(text) {
        Ok(m) => m,
        Err(e) => return error(e.code(), &e.to_string()),
    };
    let from = match serde_json::from_str::<From<'_>>(text) {
        Ok(From { from: Some(f) }) if !f.is_empty() && f.len() <= 128 => f,
        Ok(From { from: None }) => Cow::Borrowed("api"),
        _ => {
            return error(
                "invalid_field",
                "\"from\" must be a string of 1 to 128 bytes",
            );
        }
    };
    let routed = match &message {
        ClientMessage::Send { to, data, .. } => {
            handler.route_api(ctx, &from, Recipient::User(to), data)
        }
        ClientMessage::Publish { topic, data, .. } => {
            handler.route_api(ctx, &from, Recipient::Topic(topic), data)
        }
        ClientMessage::Broadcast { data, .. } => {
            handler.route_api(ctx, &from, Recipient::Everyone, data)
        }
        _ => {
            return error(
                "unknown_type",
                "the publish API takes send, publish or broadcast",
            );
        }
    };
    if routed {
        HttpResponse::new(202, JSON, "{\"accepted\":true}")
    } else {
        HttpResponse::new(503, JSON, "{\"accepted\":false,\"reason\":\"overloaded\"}")
    }
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of the key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
