//! The JSON client envelope: every client frame, every error code, server
//! frames that parse back with `serde_json`, and `data` carried byte for byte.

use std::borrow::Cow;

use proptest::prelude::*;
use ringhub_proto::{
    ClientMessage, EnvelopeErrorKind, OutgoingMessage, Recipient, write_ack, write_error,
    write_message, write_pong, write_welcome,
};
use serde_json::Value;
use serde_json::value::RawValue;

fn parse(text: &str) -> ClientMessage<'_> {
    ClientMessage::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn error_code(text: &str) -> (&'static str, String, Option<String>) {
    let err = ClientMessage::parse(text).expect_err(text);
    (
        err.code(),
        err.to_string(),
        err.id.map(|id| id.get().to_owned()),
    )
}

fn raw(json: &str) -> &RawValue {
    serde_json::from_str(json).expect("valid JSON")
}

#[test]
fn send_keeps_data_as_written() {
    let text = r#"{"type":"send","to":"bob","data":{ "b" : [1, 2.50, "\u00e9"] },"id":"m-1"}"#;
    match parse(text) {
        ClientMessage::Send { to, data, id } => {
            assert_eq!(to, "bob");
            assert!(matches!(to, Cow::Borrowed(_)));
            assert_eq!(data.get(), r#"{ "b" : [1, 2.50, "\u00e9"] }"#);
            assert_eq!(id.map(RawValue::get), Some(r#""m-1""#));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_client_frame() {
    assert!(matches!(
        parse(r#"{"type":"subscribe","topic":"news"}"#),
        ClientMessage::Subscribe { topic, id: None } if topic == "news"
    ));
    assert!(matches!(
        parse(r#"{"type":"subscribe","topic":"news","id":"s1"}"#),
        ClientMessage::Subscribe { topic, id: Some(id) } if topic == "news" && id.get() == r#""s1""#
    ));
    assert!(matches!(
        parse(r#"{"topic":"news","type":"unsubscribe","id":3}"#),
        ClientMessage::Unsubscribe { topic, id: Some(id) } if topic == "news" && id.get() == "3"
    ));
    match parse(r#"{"type":"publish","topic":"t\/1","data":42,"id":7}"#) {
        ClientMessage::Publish { topic, data, id } => {
            assert_eq!(topic, "t/1");
            assert_eq!(data.get(), "42");
            assert_eq!(id.map(RawValue::get), Some("7"));
        }
        other => panic!("{other:?}"),
    }
    match parse(r#"{"type":"broadcast","data":null}"#) {
        ClientMessage::Broadcast { data, id } => {
            assert_eq!(data.get(), "null");
            assert!(id.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse(r#"{"type":"ping"}"#), ClientMessage::Ping));
    assert!(matches!(
        parse(r#"{"type":"latency","ms":12.5}"#),
        ClientMessage::Latency { ms } if ms == 12.5
    ));
    assert!(matches!(
        parse(r#" {"type":"ping","extra":{"ignored":true}} "#),
        ClientMessage::Ping
    ));
}

#[test]
fn every_error_code() {
    let cases: &[(&str, &str)] = &[
        ("", "bad_json"),
        ("{", "bad_json"),
        ("[1,2]", "bad_json"),
        (r#""ping""#, "bad_json"),
        (r#"{"type":"ping"} trailing"#, "bad_json"),
        (r#"{"type":"ping","type":"ping"}"#, "bad_json"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"PING"}"#, "unknown_type"),
        (r#"{}"#, "missing_field"),
        (r#"{"type":"send","data":1}"#, "missing_field"),
        (r#"{"type":"send","to":"bob"}"#, "missing_field"),
        (r#"{"type":"subscribe"}"#, "missing_field"),
        (r#"{"type":"publish","topic":"t"}"#, "missing_field"),
        (r#"{"type":"broadcast"}"#, "missing_field"),
        (r#"{"type":"latency"}"#, "missing_field"),
        (r#"{"type":7}"#, "invalid_field"),
        (r#"{"type":"send","to":5,"data":1}"#, "invalid_field"),
        (r#"{"type":"send","to":"","data":1}"#, "invalid_field"),
        (r#"{"type":"subscribe","topic":null}"#, "invalid_field"),
        (r#"{"type":"latency","ms":-1}"#, "invalid_field"),
        (r#"{"type":"latency","ms":"5"}"#, "invalid_field"),
        (
            r#"{"type":"send","to":"b","data":1,"id":{"a":1}}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"send","to":"b","data":1,"id":[1]}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"send","to":"b","data":1,"id":true}"#,
            "invalid_field",
        ),
    ];
    for (text, code) in cases {
        let (got, message, _) = error_code(text);
        assert_eq!(got, *code, "{text}: {message}");
        assert!(!message.is_empty());
    }
    let long_topic = format!(r#"{{"type":"subscribe","topic":"{}"}}"#, "t".repeat(257));
    assert_eq!(error_code(&long_topic).0, "invalid_field");
    let long_id = format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(200));
    assert_eq!(error_code(&long_id).0, "invalid_field");
}

#[test]
fn errors_carry_a_usable_id_and_reply() {
    let (code, message, id) = error_code(r#"{"type":"send","data":1,"id":"x9"}"#);
    assert_eq!(code, "missing_field");
    assert_eq!(message, r#"missing field "to""#);
    assert_eq!(id.as_deref(), Some(r#""x9""#));

    let err = ClientMessage::parse(r#"{"type":"nope","id":3}"#).expect_err("unknown");
    assert!(matches!(err.kind, EnvelopeErrorKind::UnknownType));
    let mut out = Vec::new();
    err.write_reply(&mut out);
    let reply: Value = serde_json::from_slice(&out).expect("reply is JSON");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "unknown_type");
    assert_eq!(reply["id"], 3);
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown message type"))
    );
}

#[test]
fn server_frames_are_valid_json_with_escaped_strings() {
    let nasty = "quote\" backslash\\ newline\n nul\u{0} emoji🦀 </script>";
    let mut out = Vec::new();
    write_welcome(&mut out, nasty, 42, "srv-1");
    let welcome: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["user"], nasty);
    assert_eq!(welcome["conn"], 42);
    assert_eq!(welcome["server"], "srv-1");

    out.clear();
    write_ack(&mut out, raw(r#""m-1""#));
    assert_eq!(out, br#"{"type":"ack","id":"m-1"}"#);

    out.clear();
    write_pong(&mut out);
    assert_eq!(out, br#"{"type":"pong"}"#);

    out.clear();
    write_error(&mut out, "rate_limited", nasty, None);
    let error: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(error["message"], nasty);
    assert!(error.get("id").is_none());
}

#[test]
fn message_frames_for_each_recipient() {
    let data = raw(r#"{"n": 1.000, "s": "\u00e9"}"#);
    for (to, key, value) in [
        (Recipient::User("bob"), Some("to"), "bob"),
        (Recipient::Topic("news"), Some("topic"), "news"),
        (Recipient::Everyone, None, ""),
    ] {
        let mut out = Vec::new();
        write_message(
            &mut out,
            &OutgoingMessage {
                from: "alice",
                to,
                data,
                id: Some(raw("17")),
                ts: 1_700_000_000_123,
            },
        );
        let frame: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(frame["type"], "message");
        assert_eq!(frame["from"], "alice");
        assert_eq!(frame["id"], 17);
        assert_eq!(frame["ts"], 1_700_000_000_123_u64);
        match key {
            Some(key) => assert_eq!(frame[key], value),
            None => assert!(frame.get("to").is_none() && frame.get("topic").is_none()),
        }
        // `data` is the sender's text, byte for byte (not re-encoded: 1.000
        // and \u00e9 survive).
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            text.contains(r#""data":{"n": 1.000, "s": "\u00e9"}"#),
            "{text}"
        );
    }
}

/// JSON values, as text, with odd spacing and escapes kept.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        any::<String>().prop_map(|s| serde_json::to_string(&s).expect("string")),
        Just(r#""\u00e9\n\/""#.to_owned()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!("[ {} ]", v.join(" ,"))),
            proptest::collection::vec((any::<String>(), inner), 0..6).prop_map(|kv| {
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).expect("key")))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

proptest! {
    /// No input panics the parser.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = ClientMessage::parse(&text);
    }

    /// Arbitrary bytes that happen to be UTF-8, and near-valid frames.
    #[test]
    fn near_valid_frames_never_panic(
        kind in prop_oneof![Just("send"), Just("publish"), Just("latency"), Just("x")],
        field in prop_oneof![Just("to"), Just("topic"), Just("data"), Just("id"), Just("ms")],
        value in json_value(),
    ) {
        let text = format!(r#"{{"type":"{kind}","{field}":{value}}}"#);
        if let Err(err) = ClientMessage::parse(&text) {
            let mut out = Vec::new();
            err.write_reply(&mut out);
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }

    /// `data` goes from the client frame to the server frame unchanged.
    #[test]
    fn data_bytes_come_out_identical(data in json_value(), to in "[a-z]{1,12}") {
        let text = format!(r#"{{"type":"send","to":"{to}","data":{data},"id":1}}"#);
        let ClientMessage::Send { to: parsed_to, data: parsed, id } = ClientMessage::parse(&text).expect("valid") else {
            panic!("not a send");
        };
        prop_assert_eq!(parsed.get(), data.trim());
        let mut out = Vec::new();
        write_message(&mut out, &OutgoingMessage {
            from: "me", to: Recipient::User(&parsed_to), data: parsed, id, ts: 1,
        });
        let frame = String::from_utf8(out).expect("UTF-8");
        let needle = format!(r#""data":{}"#, data.trim());
        prop_assert!(frame.contains(&needle));
        prop_assert!(serde_json::from_str::<Value>(&frame).is_ok());
    }
}
