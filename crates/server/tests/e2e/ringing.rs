//! 1:1 calls (`rtc.call`, `rtc.accept`, `rtc.decline`, `rtc.cancel`) between
//! real clients, and the outcomes in `call_list`.

use crate::common::*;
use crate::rtc::rpc;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_client::{Client, ClientError, ClientOptions, Event, Events};
use switchboard_proto::codec::Encoding;

/// A server whose rooms require grants (so only the call opens a call room).
async fn server(ring_timeout: &str) -> TestServer {
    TestServer::with_config(&format!(
        "[media]\nrequire_grants = true\nring_timeout = \"{ring_timeout}\"\n"
    ))
    .await
}

/// The protocol error code of a failed call.
pub fn code(r: Result<Value, ClientError>) -> u32 {
    match r {
        Err(ClientError::Protocol(e)) => e.code,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// The next `message` push whose `type` is `kind`.
pub async fn next_msg(events: &mut Events, kind: &str) -> Value {
    match next_event(events, |e| match e {
        Event::Message { data } => {
            serde_json::from_slice::<Value>(data).is_ok_and(|v| v["type"] == kind)
        }
        _ => false,
    })
    .await
    {
        Event::Message { data } => serde_json::from_slice(&data).unwrap(),
        _ => unreachable!(),
    }
}

/// Asserts that no ringing push arrives for a short while.
async fn quiet(events: &mut Events) {
    no_event(events, Duration::from_millis(300), |e| {
        matches!(e, Event::Message { data } if serde_json::from_slice::<Value>(data)
            .is_ok_and(|v| v["type"].as_str().is_some_and(|t| t.starts_with("rtc.ring") || t.starts_with("rtc.call") || t == "rtc.accepted" || t == "rtc.declined")))
    })
    .await;
}

/// Alice calls bob, who has two connections; returns the call id.
async fn ring(
    alice: &Client,
    bob1: &mut Events,
    bob2: &mut Events,
    data: Option<Value>,
) -> (String, String) {
    let mut req = json!({"user": "bob"});
    if let Some(d) = data {
        req["data"] = d;
    }
    let r = rpc(alice, "rtc.call", req).await.expect("call");
    let call = r["call"].as_str().unwrap().to_string();
    let room = r["room"].as_str().unwrap().to_string();
    for events in [bob1, bob2] {
        let ring = next_msg(events, "rtc.ring").await;
        assert_eq!(ring["call"], call);
        assert_eq!(ring["room"], room);
        assert_eq!(ring["from"]["user"], "alice");
    }
    (call, room)
}

async fn outcome(s: &TestServer, call: &str) -> Value {
    s.api_ok("call_get", json!({"call": call})).await["call"]["ringing"]["outcome"].clone()
}

#[tokio::test]
async fn accept_on_one_connection_stops_the_others_and_opens_the_room() {
    let s = server("30s").await;
    let (alice, mut alice_ev) = s.connect("alice", Encoding::Json).await;
    let (bob1, mut bob1_ev) = s.connect("bob", Encoding::Json).await;
    let (bob2, mut bob2_ev) = s.connect("bob", Encoding::Protobuf).await;
    let (carol, _carol_ev) = s.connect("carol", Encoding::Json).await;

    let (call, room) = ring(
        &alice,
        &mut bob1_ev,
        &mut bob2_ev,
        Some(json!({"video": true})),
    )
    .await;
    // Before the call is accepted, its room is closed to everyone.
    assert_eq!(
        code(rpc(&bob1, "rtc.join", json!({"room": room})).await),
        103
    );
    // Only the callee answers.
    assert_eq!(
        code(rpc(&carol, "rtc.accept", json!({"call": call})).await),
        103
    );
    assert_eq!(
        code(rpc(&alice, "rtc.accept", json!({"call": call})).await),
        103
    );

    let accepted = rpc(&bob2, "rtc.accept", json!({"call": call}))
        .await
        .unwrap();
    assert_eq!(accepted, json!({"call": call, "room": room}));
    let msg = next_msg(&mut alice_ev, "rtc.accepted").await;
    assert_eq!(
        msg,
        json!({"type": "rtc.accepted", "call": call, "room": room})
    );
    let ended = next_msg(&mut bob1_ev, "rtc.ring_ended").await;
    assert_eq!(ended["reason"], "answered_elsewhere");
    quiet(&mut bob2_ev).await;
    // A second answer is refused.
    assert_eq!(
        code(rpc(&bob1, "rtc.decline", json!({"call": call})).await),
        107
    );

    // Both users may now join the call's room (peer-to-peer), nobody else.
    let a = rpc(&alice, "rtc.join", json!({"room": room}))
        .await
        .unwrap();
    assert_eq!(a["mode"], "p2p");
    let b = rpc(&bob2, "rtc.join", json!({"room": room})).await.unwrap();
    assert_eq!(b["mode"], "p2p");
    assert_eq!(
        code(rpc(&carol, "rtc.join", json!({"room": room})).await),
        103
    );

    assert_eq!(outcome(&s, &call).await, "accepted");
    s.stop().await;
}

#[tokio::test]
async fn decline_and_cancel() {
    let s = server("30s").await;
    let (alice, mut alice_ev) = s.connect("alice", Encoding::Json).await;
    let (bob1, mut bob1_ev) = s.connect("bob", Encoding::Json).await;
    let (bob2, mut bob2_ev) = s.connect("bob", Encoding::Json).await;

    // Declined on one connection.
    let (call, _) = ring(&alice, &mut bob1_ev, &mut bob2_ev, None).await;
    assert_eq!(
        rpc(&bob1, "rtc.decline", json!({"call": call}))
            .await
            .unwrap(),
        json!({})
    );
    assert_eq!(
        next_msg(&mut alice_ev, "rtc.declined").await,
        json!({"type": "rtc.declined", "call": call})
    );
    assert_eq!(
        next_msg(&mut bob2_ev, "rtc.ring_ended").await["reason"],
        "declined_elsewhere"
    );
    assert_eq!(outcome(&s, &call).await, "declined");

    // Cancelled by the caller (the callee cannot cancel).
    let (call, _) = ring(&alice, &mut bob1_ev, &mut bob2_ev, None).await;
    assert_eq!(
        code(rpc(&bob1, "rtc.cancel", json!({"call": call})).await),
        103
    );
    rpc(&alice, "rtc.cancel", json!({"call": call}))
        .await
        .unwrap();
    for ev in [&mut bob1_ev, &mut bob2_ev] {
        let ended = next_msg(ev, "rtc.ring_ended").await;
        assert_eq!(
            ended,
            json!({"type": "rtc.ring_ended", "call": call, "reason": "cancelled"})
        );
    }
    // Too late to accept.
    let late = rpc(&bob2, "rtc.accept", json!({"call": call})).await;
    assert_eq!(code(late), 107);
    assert_eq!(outcome(&s, &call).await, "cancelled");
    quiet(&mut alice_ev).await;
    s.stop().await;
}

#[tokio::test]
async fn unanswered_call_times_out_and_is_missed() {
    let s = server("1s").await;
    let (alice, mut alice_ev) = s.connect("alice", Encoding::Json).await;
    let (_bob1, mut bob1_ev) = s.connect("bob", Encoding::Json).await;
    let (_bob2, mut bob2_ev) = s.connect("bob", Encoding::Json).await;
    let (call, _) = ring(&alice, &mut bob1_ev, &mut bob2_ev, None).await;
    let ended = next_msg(&mut alice_ev, "rtc.call_ended").await;
    assert_eq!(
        ended,
        json!({"type": "rtc.call_ended", "call": call, "reason": "timeout"})
    );
    for ev in [&mut bob1_ev, &mut bob2_ev] {
        assert_eq!(next_msg(ev, "rtc.ring_ended").await["reason"], "timeout");
    }
    // The missed call is in bob's call list.
    let list = s.api_ok("call_list", json!({"user": "bob"})).await;
    let calls = list["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{list}");
    assert_eq!(calls[0]["call"], call);
    assert_eq!(calls[0]["ringing"]["outcome"], "missed");
    assert_eq!(calls[0]["ringing"]["caller"], "alice");
    assert_eq!(calls[0]["ringing"]["callee"], "bob");
    assert_eq!(calls[0]["ended"], true);
    s.stop().await;
}

#[tokio::test]
async fn offline_callee_and_bad_requests() {
    let s = TestServer::dev("[media]\nring_timeout = \"30s\"\n").await;
    let (alice, mut alice_ev) = s.connect("alice", Encoding::Json).await;

    // Nobody to ring: the caller is told at once, the call is missed.
    let r = rpc(&alice, "rtc.call", json!({"user": "dave"}))
        .await
        .unwrap();
    let call = r["call"].as_str().unwrap();
    let ended = next_msg(&mut alice_ev, "rtc.call_ended").await;
    assert_eq!(
        ended,
        json!({"type": "rtc.call_ended", "call": call, "reason": "offline"})
    );
    let list = s.api_ok("call_list", json!({"user": "dave"})).await;
    assert_eq!(list["calls"][0]["ringing"]["outcome"], "missed");

    // Anonymous connections cannot call.
    let (anon, _anon_ev) = s
        .connect_with(ClientOptions {
            encoding: Encoding::Json,
            ..ClientOptions::with_token(String::new())
        })
        .await;
    assert_eq!(
        code(rpc(&anon, "rtc.call", json!({"user": "alice"})).await),
        103
    );

    // Malformed requests and unknown calls.
    for (method, body) in [
        ("rtc.call", json!({})),
        ("rtc.call", json!({"user": ""})),
        ("rtc.call", json!({"user": "alice"})),
        ("rtc.call", json!({"user": "bob", "data": "not an object"})),
        ("rtc.accept", json!({"call": "call-unknown"})),
        ("rtc.decline", json!({})),
        ("rtc.cancel", json!({"call": 5})),
    ] {
        assert_eq!(
            code(rpc(&alice, method, body.clone()).await),
            107,
            "{method} {body}"
        );
    }
    let not_json = alice.rpc("rtc.accept", b"nope".to_vec()).await;
    assert!(matches!(not_json, Err(ClientError::Protocol(e)) if e.code == 107));

    // call_get of an unknown call is an error, not a crash.
    let reply = s.api("call_get", json!({"call": "call-unknown"})).await;
    assert_eq!(reply["error"]["code"], 104, "{reply}");
    let reply = s.api("call_list", json!({"limit": 0})).await;
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    s.stop().await;
}

#[tokio::test]
async fn caller_disconnecting_cancels_the_call() {
    let s = server("30s").await;
    let (alice, _alice_ev) = s.connect("alice", Encoding::Json).await;
    let (_bob1, mut bob1_ev) = s.connect("bob", Encoding::Json).await;
    let (_bob2, mut bob2_ev) = s.connect("bob", Encoding::Json).await;
    let (call, _) = ring(&alice, &mut bob1_ev, &mut bob2_ev, None).await;
    alice.close().await;
    let ended = next_msg(&mut bob1_ev, "rtc.ring_ended").await;
    assert_eq!(ended["call"], call);
    assert_eq!(ended["reason"], "cancelled");
    assert_eq!(outcome(&s, &call).await, "cancelled");
    s.stop().await;
}
