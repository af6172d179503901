//! The benchmark peer protocol as a ringhub-engine handler:
//! `{"type":"subscribe","topic":T}` subscribes, `{"type":"publish","topic":T,…}`
//! sends the frame to every subscriber of T on every core, and anything else
//! is echoed back unchanged. Over plain HTTP, `GET /healthz` answers 200 and
//! `POST /publish?topic=T` publishes its body as a text message.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ringhub_engine::{
    ConnId, Ctx, Decision, Handler, HttpResponse, Message, Request, SharedFrame, WebSocketUpgrade,
};

/// The fields of the peer protocol this handler looks at.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    topic: Option<&'a str>,
}

/// Only a frame that starts like a command is parsed, as the Bun peer does
/// (`bench/peers/bun-pubsub.js`): echo traffic stays a plain send.
fn is_command(text: &str) -> bool {
    text.strip_prefix(r#"{"type":""#)
        .is_some_and(|rest| rest.starts_with(r#"subscribe""#) || rest.starts_with(r#"publish""#))
}

/// A publish on one core, delivered by every other core to its subscribers.
#[derive(Debug)]
pub struct Publish {
    topic: Arc<str>,
    frame: SharedFrame,
}

/// One core's topic table.
#[derive(Debug, Default)]
pub struct PubSub {
    topics: HashMap<Arc<str>, Vec<ConnId>>,
}

impl PubSub {
    fn deliver(&mut self, ctx: &mut Ctx<'_, Self>, topic: &str, frame: &mut SharedFrame) {
        if let Some(subs) = self.topics.get(topic) {
            ctx.broadcast(subs.iter().copied(), frame);
        }
    }

    /// Delivers `frame` to subscribers of `topic` here and on every other core.
    fn publish(&mut self, ctx: &mut Ctx<'_, Self>, topic: &str, mut frame: SharedFrame) {
        self.deliver(ctx, topic, &mut frame);
        let topic: Arc<str> = Arc::from(topic);
        let here = ctx.core();
        for core in (0..ctx.cores()).filter(|c| *c != here) {
            let post = Publish {
                topic: topic.clone(),
                frame: frame.clone(),
            };
            // A full mailbox drops this delivery for that core: the
            // benchmark protocol has no acknowledgements.
            let _ = ctx.post(core, post);
        }
    }

    fn subscribe(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, topic: &str) {
        let topic: Arc<str> = match self.topics.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => Arc::from(topic),
        };
        let Some(state) = ctx.state(conn) else {
            return;
        };
        if state.iter().any(|t| **t == *topic) {
            return;
        }
        state.push(topic.clone());
        self.topics.entry(topic).or_default().push(conn);
    }
}

impl Handler for PubSub {
    /// The topics a connection subscribed to (empty, not allocated, for most).
    type State = Vec<Arc<str>>;
    type Post = Publish;

    fn on_request(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        _: ConnId,
        request: &Request<'_>,
        body: &[u8],
    ) -> Option<HttpResponse> {
        match (request.method(), request.path()) {
            ("GET", "/healthz") => Some(HttpResponse::new(200, "text/plain", "ok\n")),
            ("POST", "/publish") => {
                let Some(topic) = request.query_param("topic") else {
                    return Some(HttpResponse::new(400, "text/plain", "missing ?topic=\n"));
                };
                let Ok(text) = std::str::from_utf8(body) else {
                    return Some(HttpResponse::new(400, "text/plain", "body is not UTF-8\n"));
                };
                let frame = SharedFrame::text(Bytes::copy_from_slice(text.as_bytes()));
                self.publish(ctx, topic, frame);
                Some(HttpResponse::new(202, "text/plain", "published\n"))
            }
            _ => None,
        }
    }

    fn on_open(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: &WebSocketUpgrade<'_, '_>,
    ) -> Decision {
        Decision::accept()
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, message: Message<'_>) {
        let text = match message {
            Message::Binary(data) => {
                let _ = ctx.send_binary(conn, data);
                return;
            }
            Message::Text(text) => text,
        };
        let envelope = is_command(text)
            .then(|| serde_json::from_str::<Envelope<'_>>(text).ok())
            .flatten();
        match envelope {
            Some(Envelope {
                kind: "subscribe",
                topic: Some(topic),
            }) => self.subscribe(ctx, conn, topic),
            Some(Envelope {
                kind: "publish",
                topic: Some(topic),
            }) => {
                let frame = SharedFrame::text(Bytes::copy_from_slice(text.as_bytes()));
                self.publish(ctx, topic, frame);
            }
            _ => {
                let _ = ctx.send_text(conn, text);
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _: ringhub_engine::CloseReason) {
        let Some(state) = ctx.state(conn) else {
            return;
        };
        for topic in std::mem::take(state) {
            if let Some(subs) = self.topics.get_mut(&topic) {
                subs.retain(|c| *c != conn);
                if subs.is_empty() {
                    self.topics.remove(&topic);
                }
            }
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, Self>, mut post: Publish) {
        let topic = post.topic.clone();
        self.deliver(ctx, &topic, &mut post.frame);
    }
}
