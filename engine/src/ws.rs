//! The WebSocket data path of one connection: the upgrade request and then
//! frames, parsed in place in the receive buffer. Only the bytes of an
//! incomplete request head or frame are copied out (into the connection's
//! `leftover`), so a connection owns no buffer between messages.

use bytes::Bytes;
use ringhub_proto::{
    CloseCode, ClosePayload, Decoded, DeflateConfig, ErrorResponse, Message as WsMessage, Opcode,
    Parsed, ProtocolError, Request, RequestError, RequestLimits, Response, Role, StatusCode,
    WebSocketUpgrade, negotiate_deflate, parse_request, validate_utf8,
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
    // Once the final answer (an HTTP response, a refusal, our last close
    // frame) is queued, whatever else arrives is dropped.
    if c.phase == Phase::Gone || c.has(flag::LINGER) || c.has(flag::CLOSE_AFTER_FLUSH) {
        return;
    }
    if c.leftover.is_empty() {
        let (used, needed) = process(io, handler, index, data);
        keep_leftover(io, index, &data[used..], needed);
    } else {
        let mut buf = std::mem::take(&mut c.leftover);
        buf.extend_from_slice(data);
        let (used, needed) = process(io, handler, index, &mut buf);
        buf.drain(..used);
        if let Some(c) = io.conns.get_mut(index as usize)
            && c.phase != Phase::Gone
            && !buf.is_empty()
        {
            size_for(&mut buf, needed);
            c.leftover = buf;
        }
    }
}

/// Sizes a leftover buffer for the `needed` bytes its frame still lacks,
/// but never more than what has arrived (at least 64 KiB): a header alone
/// must not make us reserve its claimed length. Drops a large buffer once a
/// large frame is done.
fn size_for(buf: &mut Vec<u8>, needed: usize) {
    let needed = needed.min(buf.len().max(64 * 1024));
    let want = buf.len() + needed;
    if buf.capacity() < want {
        buf.reserve_exact(needed);
    } else if buf.capacity() > 2 * want + 4096 {
        buf.shrink_to(want);
    }
}

fn keep_leftover<H: Handler>(io: &mut Io<H>, index: u32, rest: &[u8], needed: usize) {
    if rest.is_empty() {
        return;
    }
    if let Some(c) = io.conns.get_mut(index as usize)
        && c.phase != Phase::Gone
    {
        c.leftover.extend_from_slice(rest);
        size_for(&mut c.leftover, needed);
    }
}

/// Consumes what it can of `buf`. Returns how many bytes were used, and how
/// many more the incomplete frame after them needs (0 if unknown).
fn process<H: Handler>(
    io: &mut Io<H>,
    handler: &mut H,
    index: u32,
    buf: &mut [u8],
) -> (usize, usize) {
    let mut used = 0;
    // Requests are answered in order, as many as have arrived (pipelined
    // plain requests on a kept-alive connection, maybe then an upgrade).
    while io
        .conns
        .get(index as usize)
        .is_some_and(|c| c.phase == Phase::Handshake && !c.has(flag::CLOSE_AFTER_FLUSH))
    {
        match handshake(io, handler, index, &mut buf[used..]) {
            Some(n) => used += n,
            None => return (used, 0),
        }
    }
    let (consumed, needed) = frames(io, handler, index, &mut buf[used..]);
    (used + consumed, needed)
}

/// What became of a request once it was answered.
enum Answered {
    /// 101 sent: the WebSocket is open after `head_len` bytes.
    Upgraded { head_len: usize },
    /// A plain request answered, the connection kept open for the next one
    /// after `used` bytes.
    KeptAlive { used: usize },
    /// An HTTP response or refusal is queued; the connection closes after it.
    Closing,
}

/// Parses the request at the start of `buf`. Returns how many bytes it
/// used once it is answered, None while more bytes are needed.
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
    let answered = match parse_request(buf, &limits) {
        Ok(Parsed::Incomplete) => return None,
        Err(e) => {
            e.write_response(&mut out);
            refuse(io, index)
        }
        Ok(Parsed::Complete { request, head_len }) => {
            if request.has_token("upgrade", "websocket") {
                upgrade(io, handler, index, &request, head_len, &mut out)
            } else {
                plain_http(io, handler, index, &request, head_len, buf, &mut out)?
            }
        }
    };
    io.enqueue_unbounded(index, Bytes::from(out));
    match answered {
        Answered::Upgraded { head_len } => {
            // The 101 is queued: what the handler sends now follows it.
            let id = io.id(index);
            handler.on_opened(&mut Ctx { io: &mut *io }, id);
            // The handler has seen the address; an open connection keeps none.
            io.http.remove(&index);
            Some(head_len)
        }
        Answered::KeptAlive { used } => Some(used),
        // Nothing after an answered plain request or a refusal is read.
        Answered::Closing => Some(buf.len()),
    }
}

/// Marks the connection to close once its answer is sent.
fn close_after_answer<H: Handler>(io: &mut Io<H>, index: u32) -> Answered {
    if let Some(c) = io.conns.get_mut(index as usize) {
        c.set(flag::CLOSE_AFTER_FLUSH);
    }
    Answered::Closing
}

fn refuse<H: Handler>(io: &mut Io<H>, index: u32) -> Answered {
    CoreStats::add(&io.stats.rejected, 1);
    close_after_answer(io, index)
}

/// Validates an upgrade request, asks the handler, and writes the 101 (with
/// the negotiated extension) or the refusal.
fn upgrade<H: Handler>(
    io: &mut Io<H>,
    handler: &mut H,
    index: u32,
    request: &Request<'_>,
    head_len: usize,
    out: &mut Vec<u8>,
) -> Answered {
    let upgrade = match WebSocketUpgrade::from_request(request) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            e.write_response(out);
            return refuse(io, index);
        }
    };
    let id = io.id(index);
    let protocol = match handler.on_open(&mut Ctx { io: &mut *io }, id, &upgrade) {
        Decision::Accept { protocol } => protocol,
        Decision::Reject { status, body } => {
            let status = StatusCode::new(status).unwrap_or(StatusCode::BAD_REQUEST);
            ErrorResponse::new(status, body.as_bytes()).write(out);
            return refuse(io, index);
        }
    };
    // No context takeover: one compressor and one decompressor per core
    // serve every connection, and an idle one holds no zlib state.
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
    upgrade.write_accept(out, protocol.as_deref(), deflate.as_ref());
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
    Answered::Upgraded { head_len }
}

/// A request that is not an upgrade: wait for its body, then let the
/// handler answer (or refuse it with 426). None: the body is incomplete.
fn plain_http<H: Handler>(
    io: &mut Io<H>,
    handler: &mut H,
    index: u32,
    request: &Request<'_>,
    head_len: usize,
    buf: &[u8],
    out: &mut Vec<u8>,
) -> Option<Answered> {
    let body_len = match request.content_length() {
        Ok(n) if n <= io.config.max_request_body as u64 => n as usize,
        Ok(_) => {
            let status = StatusCode::PAYLOAD_TOO_LARGE;
            ErrorResponse::new(status, b"request body too large").write(out);
            return Some(refuse(io, index));
        }
        Err(e) => {
            e.write_response(out);
            return Some(refuse(io, index));
        }
    };
    let body = buf.get(head_len..head_len + body_len)?;
    let id = io.id(index);
    match handler.on_request(&mut Ctx { io: &mut *io }, id, request, body) {
        Some(reply) => {
            let keep = keep_alive(io, index, request);
            let status = StatusCode::new(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Response::new(status, reply.content_type, &reply.body)
                .keep_alive(keep)
                .head_only(request.method() == "HEAD")
                .write(out);
            CoreStats::add(&io.stats.http_requests, 1);
            if keep {
                Some(Answered::KeptAlive {
                    used: head_len + body_len,
                })
            } else {
                Some(close_after_answer(io, index))
            }
        }
        None => {
            RequestError::NotWebSocket.write_response(out);
            Some(refuse(io, index))
        }
    }
}

/// Whether the connection stays open after the answer to `request`: the
/// client asked for it (HTTP/1.1 without `Connection: close`), it has
/// requests left, and its unsent answers are under the send queue limit (a
/// client that pipelines without reading gets what it asked, then a close).
/// A kept connection gets a fresh deadline for its next request.
fn keep_alive<H: Handler>(io: &mut Io<H>, index: u32, request: &Request<'_>) -> bool {
    if !request.is_http11() || !request.keep_alive() || io.shutting_down {
        return false;
    }
    let max = io.config.max_requests_per_connection;
    let served = io.http.get_mut(&index).map_or(u32::MAX, |h| {
        h.served = h.served.saturating_add(1);
        h.served
    });
    let now = io.now;
    let limit = io.config.send_queue_limit;
    let Some(c) = io.conns.get_mut(index as usize) else {
        return false;
    };
    let keep = served < max && c.sendq.queued() < limit;
    if keep {
        c.mark = now;
    }
    keep
}

/// Parses and handles every whole frame at the start of `buf`.
fn frames<H: Handler>(
    io: &mut Io<H>,
    handler: &mut H,
    index: u32,
    buf: &mut [u8],
) -> (usize, usize) {
    let limits = io.config.limits;
    let mut pos = 0;
    loop {
        let Some(c) = io.conns.get(index as usize) else {
            return (buf.len(), 0);
        };
        // After a close was received, or when failing, nothing more is read.
        if c.phase == Phase::Gone || c.has(flag::CLOSE_RECEIVED) || c.has(flag::CLOSE_AFTER_FLUSH) {
            return (buf.len(), 0);
        }
        // Paused by the handler: the rest waits, untouched, in the leftover
        // until it resumes (what the kernel already handed over included).
        if pos == buf.len() || c.has(flag::PAUSED) {
            return (pos, 0);
        }
        let deflate = c.has(flag::DEFLATE);
        let Some(c) = io.conns.get_mut(index as usize) else {
            return (buf.len(), 0);
        };
        // Parses, unmasks in place and checks text as it arrives, so bad
        // UTF-8 fails in the read that brings it, not when the frame ends.
        match c
            .assembler
            .decode(&mut buf[pos..], Role::Server, &limits, deflate)
        {
            Err(e) => {
                fail(io, index, Failure::from(e));
                return (buf.len(), 0);
            }
            // Kept as it is now (partly unmasked) for the next read.
            Ok(Decoded::Incomplete { needed }) => return (pos, needed),
            Ok(Decoded::Frame { message, consumed }) => {
                pos += consumed;
                if let Some(message) = message
                    && let Err(e) = on_message(io, handler, index, message)
                {
                    fail(io, index, e);
                    return (buf.len(), 0);
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

/// Acts on a whole message or control frame from the peer.
fn on_message<H: Handler>(
    io: &mut Io<H>,
    handler: &mut H,
    index: u32,
    message: WsMessage<'_>,
) -> Result<(), Failure> {
    let limits = io.config.limits;
    let Some(c) = io.conns.get(index as usize) else {
        return Ok(());
    };
    let closing = c.phase == Phase::Closing;
    match message {
        WsMessage::Ping(payload) => {
            if !closing {
                // Bounded like data: a peer that pings without reading is a
                // slow consumer too.
                let _ = io.enqueue(index, encode_control(Opcode::Pong, payload));
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

#[cfg(test)]
mod tests {
    use super::size_for;

    #[test]
    fn a_claimed_length_reserves_at_most_what_arrived() {
        let mut buf = vec![0u8; 10];
        size_for(&mut buf, 16 << 20);
        assert!(buf.capacity() <= 10 + 64 * 1024, "{}", buf.capacity());
        let mut big = vec![0u8; 1 << 20];
        size_for(&mut big, 16 << 20);
        assert!(big.capacity() >= 2 << 20 && big.capacity() < 3 << 20);
    }

    #[test]
    fn an_exact_need_is_reserved_once() {
        let mut buf = vec![0u8; 100];
        size_for(&mut buf, 900);
        assert_eq!(buf.capacity(), 1000);
    }

    #[test]
    fn a_large_buffer_is_released_for_a_small_remainder() {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&[1, 2, 3]);
        size_for(&mut buf, 10);
        assert!(buf.capacity() < 64 * 1024, "{}", buf.capacity());
    }
}
