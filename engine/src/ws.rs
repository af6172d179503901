//! The WebSocket data path of one connection: the upgrade request and then
//! frames, parsed in place in the receive buffer. Only the bytes of an
//! incomplete request head or frame are copied out (into the connection's
//! `leftover`), so a connection owns no buffer between messages.

use bytes::Bytes;
use ringhub_proto::{
    CloseCode, ClosePayload, DeflateConfig, ErrorResponse, Frame, Message as WsMessage, Opcode,
    Parsed, ParsedFrame, ProtocolError, RequestLimits, Role, StatusCode, WebSocketUpgrade,
    negotiate_deflate, parse_frame, parse_request, validate_utf8,
};

use crate::conn::{Phase, flag};
use crate::handler::{CloseReason, Ctx, Decision, Handler, Message};
use crate::io::{Io, encode_control};
use crate::stats::CoreStats;

/// Bytes arrived for connection `index`; `data` is the receive buffer,
/// which is handed back to the kernel when this returns.
pub(crate) fn on_bytes<H: Handler>(io: &mut Io<H>, handler: &mut H, index: u32, data: &mut [u8]) {
    let Some(c) = io.conns.get_mut(index as usize) else {
        return;
    };
    if c.phase == Phase::Gone || c.has(flag::LINGER) {
        return;
    }
    if c.leftover.is_empty() {
        let used = process(io, handler, index, data);
        keep_leftover(io, index, &data[used..]);
    } else {
        let mut buf = std::mem::take(&mut c.leftover);
        buf.extend_from_slice(data);
        let used = process(io, handler, index, &mut buf);
        buf.drain(..used);
        if let Some(c) = io.conns.get_mut(index as usize)
            && c.phase != Phase::Gone
            && !buf.is_empty()
        {
            c.leftover = buf;
        }
    }
}

fn keep_leftover<H: Handler>(io: &mut Io<H>, index: u32, rest: &[u8]) {
    if rest.is_empty() {
        return;
    }
    if let Some(c) = io.conns.get_mut(index as usize)
        && c.phase != Phase::Gone
    {
        c.leftover.extend_from_slice(rest);
    }
}

/// Consumes what it can of `buf`; returns how many bytes were used.
fn process<H: Handler>(io: &mut Io<H>, handler: &mut H, index: u32, buf: &mut [u8]) -> usize {
    let mut used = 0;
    if io.conns.get(index as usize).map(|c| c.phase) == Some(Phase::Handshake) {
        match handshake(io, handler, index, buf) {
            Some(n) => used = n,
            None => return 0,
        }
    }
    used + frames(io, handler, index, &mut buf[used..])
}

/// Parses the upgrade request. Returns the head length once it is complete
/// (and answered), None if more bytes are needed.
fn handshake<H: Handler>(
    io: &mut Io<H>,
    handler: &mut H,
    index: u32,
    buf: &mut [u8],
) -> Option<usize> {
    let limits = RequestLimits {
        max_head_bytes: io.config.max_request_head,
    };
    let mut out = Vec::with_capacity(256);
    let (head_len, accepted) = match parse_request(buf, &limits) {
        Ok(Parsed::Incomplete) => return None,
        Err(e) => {
            e.write_response(&mut out);
            (buf.len(), false)
        }
        Ok(Parsed::Complete { request, head_len }) => {
            match WebSocketUpgrade::from_request(&request) {
                Err(e) => {
                    e.write_response(&mut out);
                    (head_len, false)
                }
                Ok(upgrade) => {
                    let id = io.id(index);
                    let decision = handler.on_open(&mut Ctx { io: &mut *io }, id, &upgrade);
                    match decision {
                        Decision::Accept { protocol } => {
                            let deflate = if io.config.deflate {
                                let cfg = DeflateConfig {
                                    enabled: true,
                                    context_takeover: false,
                                };
                                negotiate_deflate(upgrade.extension_headers(), &cfg)
                                    .filter(|p| p.shares_compressor() && p.shares_decompressor())
                            } else {
                                None
                            };
                            upgrade.write_accept(&mut out, protocol.as_deref(), deflate.as_ref());
                            let now = io.now;
                            let ping = io.config.ticks(io.config.ping_interval);
                            if let Some(c) = io.conns.get_mut(index as usize) {
                                c.phase = Phase::Open;
                                c.mark = now;
                                if let Some(p) = deflate {
                                    c.set(flag::DEFLATE);
                                    c.window_bits = p.server_max_window_bits;
                                }
                            }
                            io.arm_timer(index, now + ping);
                            CoreStats::add(&io.stats.upgraded, 1);
                            (head_len, true)
                        }
                        Decision::Reject { status, body } => {
                            let status = StatusCode::new(status).unwrap_or(StatusCode::BAD_REQUEST);
                            ErrorResponse::new(status, body.as_bytes()).write(&mut out);
                            (head_len, false)
                        }
                    }
                }
            }
        }
    };
    io.enqueue_unbounded(index, Bytes::from(out));
    if !accepted {
        CoreStats::add(&io.stats.rejected, 1);
        if let Some(c) = io.conns.get_mut(index as usize) {
            c.set(flag::CLOSE_AFTER_FLUSH);
        }
        // Nothing after a refused request is read.
        return Some(buf.len());
    }
    Some(head_len)
}

/// Parses and handles every whole frame at the start of `buf`.
fn frames<H: Handler>(io: &mut Io<H>, handler: &mut H, index: u32, buf: &mut [u8]) -> usize {
    let limits = io.config.limits;
    let mut pos = 0;
    loop {
        let Some(c) = io.conns.get(index as usize) else {
            return buf.len();
        };
        // After a close was received, or when failing, nothing more is read.
        if c.phase == Phase::Gone || c.has(flag::CLOSE_RECEIVED) || c.has(flag::CLOSE_AFTER_FLUSH) {
            return buf.len();
        }
        if pos == buf.len() {
            return pos;
        }
        let deflate = c.has(flag::DEFLATE);
        match parse_frame(&mut buf[pos..], Role::Server, &limits, deflate) {
            Err(e) => {
                fail(io, index, Failure::from(e));
                return buf.len();
            }
            Ok(ParsedFrame::Incomplete { .. }) => return pos,
            Ok(ParsedFrame::Complete { frame, consumed }) => {
                pos += consumed;
                if let Err(e) = on_frame(io, handler, index, frame) {
                    fail(io, index, e);
                    return buf.len();
                }
            }
        }
    }
}

/// A frame-level failure: what went wrong and which code the peer gets.
enum Failure {
    Protocol(ProtocolError),
    Code(CloseCode, &'static str),
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Failure::Protocol(e)
    }
}

impl Failure {
    fn code_and_reason(&self) -> (CloseCode, String) {
        match self {
            Failure::Protocol(e) => (e.close_code(), e.to_string()),
            Failure::Code(code, reason) => (*code, (*reason).to_string()),
        }
    }
}

/// Fails the connection (RFC 6455 §7.1.7): send the close code, then close
/// TCP once it is out, without waiting for the peer's reply.
fn fail<H: Handler>(io: &mut Io<H>, index: u32, failure: Failure) {
    let (code, reason) = failure.code_and_reason();
    CoreStats::add(&io.stats.protocol_errors, 1);
    let id = io.id(index);
    io.close_with(id, code, &reason, CloseReason::Protocol(code));
    if let Some(c) = io.conns.get_mut(index as usize) {
        c.set(flag::CLOSE_AFTER_FLUSH);
    }
}

fn on_frame<H: Handler>(
    io: &mut Io<H>,
    handler: &mut H,
    index: u32,
    frame: Frame<'_>,
) -> Result<(), Failure> {
    let limits = io.config.limits;
    let Some(c) = io.conns.get_mut(index as usize) else {
        return Ok(());
    };
    let closing = c.phase == Phase::Closing;
    let Some(message) = c.assembler.push(frame, &limits)? else {
        return Ok(());
    };
    match message {
        WsMessage::Ping(payload) => {
            if !closing {
                io.enqueue_unbounded(index, encode_control(Opcode::Pong, payload));
            }
            Ok(())
        }
        WsMessage::Pong(_) => Ok(()),
        WsMessage::Close(close) => {
            on_close_frame(io, index, close.map(|(code, _)| code));
            Ok(())
        }
        // After our close frame, data is read but dropped (RFC 6455 §1.4).
        _ if closing => Ok(()),
        WsMessage::Text(text) => {
            deliver(io, handler, index, Message::Text(&text));
            Ok(())
        }
        WsMessage::Binary(data) => {
            deliver(io, handler, index, Message::Binary(&data));
            Ok(())
        }
        WsMessage::Compressed { text, payload } => {
            let mut out = std::mem::take(&mut io.inflated);
            out.clear();
            let result = io
                .inflater
                .inflate(&payload, &mut out, limits.max_message)
                .map_err(|e| Failure::Code(e.close_code(), "bad compressed message"));
            let result = result.and_then(|()| {
                if text {
                    let text = validate_utf8(&out)?;
                    deliver(io, handler, index, Message::Text(text));
                } else {
                    deliver(io, handler, index, Message::Binary(&out));
                }
                Ok(())
            });
            // Keep a modest inflate buffer for the core; drop a huge one.
            if out.capacity() <= 256 * 1024 {
                io.inflated = out;
            }
            result
        }
    }
}

/// Hands a whole message to the handler.
fn deliver<H: Handler>(io: &mut Io<H>, handler: &mut H, index: u32, message: Message<'_>) {
    let id = io.id(index);
    CoreStats::add(&io.stats.messages_in, 1);
    handler.on_message(&mut Ctx { io: &mut *io }, id, message);
}

/// The peer sent a close frame (already validated).
fn on_close_frame<H: Handler>(io: &mut Io<H>, index: u32, code: Option<CloseCode>) {
    let id = io.id(index);
    let now = io.now;
    let close_timeout = io.config.ticks(io.config.close_timeout);
    let Some(c) = io.conns.get_mut(index as usize) else {
        return;
    };
    c.set(flag::CLOSE_RECEIVED | flag::CLOSE_AFTER_FLUSH);
    if !c.has(flag::CLOSE_SENT) {
        // Echo the code, then close TCP once it is out (RFC 6455 §5.5.1).
        c.set(flag::CLOSE_SENT);
        c.phase = Phase::Closing;
        c.mark = now;
        let echo = match code {
            Some(code) => encode_control(Opcode::Close, ClosePayload::new(code, "").as_bytes()),
            None => encode_control(Opcode::Close, b""),
        };
        io.closed
            .push((id, CloseReason::Peer(code.map(CloseCode::as_u16))));
        io.enqueue_unbounded(index, echo);
        io.arm_timer(index, now + close_timeout);
    } else {
        io.mark_dirty(index);
    }
}
