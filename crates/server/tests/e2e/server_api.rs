//! The HTTP server API against live connections.

use crate::common::*;
use serde_json::json;
use switchboard_client::{Event, SubscribeOptions};
use switchboard_proto::codec::Encoding;

#[tokio::test]
async fn api_keys_are_required() {
    let s = TestServer::dev("").await;
    let http = reqwest::Client::new();
    let r = http
        .post(s.http("/api/info"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(s.http("/api/info"))
        .header("X-API-Key", "wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(s.http("/api/info"))
        .header("Authorization", format!("apikey {API_KEY}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(s.http("/api/nope"))
        .header("X-API-Key", API_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(s.http("/api/publish"))
        .header("X-API-Key", API_KEY)
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 107);
    // Missing channel.
    let reply = s.api("publish", json!({"data": {}})).await;
    assert_eq!(reply["error"]["code"], 107);
    s.stop().await;
}

#[tokio::test]
async fn publish_broadcast_presence_history_channels_info_batch() {
    let s = TestServer::dev("").await;
    let (c, mut e) = s.connect("alice", Encoding::Json).await;
    c.subscribe("a", SubscribeOptions::default()).await.unwrap();
    c.subscribe("b", SubscribeOptions::default()).await.unwrap();
    let r = s
        .api_ok(
            "broadcast",
            json!({"channels": ["a", "b"], "data": {"x": 1}}),
        )
        .await;
    assert_eq!(r["responses"].as_array().unwrap().len(), 2);
    assert_eq!(next_pub(&mut e, "a").await.1, json!({"x": 1}));
    assert_eq!(next_pub(&mut e, "b").await.1, json!({"x": 1}));
    let p = s.api_ok("presence", json!({"channel": "a"})).await;
    let entry = p["presence"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(entry["user"], "alice");
    let ps = s.api_ok("presence_stats", json!({"channel": "a"})).await;
    assert_eq!(ps["num_clients"], 1);
    let h = s
        .api_ok("history", json!({"channel": "a", "limit": 10}))
        .await;
    assert_eq!(h["publications"][0]["data"], json!({"x": 1}));
    let ch = s.api_ok("channels", json!({"pattern": "a*"})).await;
    assert_eq!(ch["channels"]["a"]["num_clients"], 1);
    assert!(ch["channels"].get("b").is_none());
    let info = s.api_ok("info", json!({})).await;
    assert_eq!(info["nodes"][0]["num_clients"], 1);
    assert_eq!(info["nodes"][0]["num_subs"], 2);
    let b = s
        .api_ok(
            "batch",
            json!({"commands": [
                {"publish": {"channel": "a", "data": {"y": 2}}},
                {"presence_stats": {"channel": "a"}},
                {"publish": {"channel": "", "data": {}}}
            ]}),
        )
        .await;
    let replies = b["replies"].as_array().unwrap();
    assert_eq!(replies[0]["publish"]["offset"], 2);
    assert_eq!(replies[1]["presence_stats"]["num_clients"], 1);
    assert_eq!(replies[2]["error"]["code"], 107);
    s.api_ok("history_remove", json!({"channel": "a"})).await;
    let h = s
        .api_ok("history", json!({"channel": "a", "limit": 10}))
        .await;
    assert!(h.get("publications").is_none() || h["publications"].as_array().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn subscribe_unsubscribe_disconnect_refresh_reach_connections() {
    let s = TestServer::dev("").await;
    let (c, mut e) = s.connect("alice", Encoding::Protobuf).await;
    s.api_ok(
        "subscribe",
        json!({"user": "alice", "channel": "pushed", "data": {"why": "api"}}),
    )
    .await;
    match next_event(&mut e, |ev| matches!(ev, Event::Subscribed { .. })).await {
        Event::Subscribed { channel, subscribe } => {
            assert_eq!(channel, "pushed");
            assert_eq!(&subscribe.data[..], br#"{"why":"api"}"#);
        }
        _ => unreachable!(),
    }
    s.api_ok("publish", json!({"channel": "pushed", "data": {"n": 1}}))
        .await;
    assert_eq!(next_pub(&mut e, "pushed").await.1, json!({"n": 1}));
    s.api_ok("unsubscribe", json!({"user": "alice", "channel": "pushed"}))
        .await;
    match next_event(&mut e, |ev| matches!(ev, Event::Unsubscribed { .. })).await {
        Event::Unsubscribed { channel, code, .. } => {
            assert_eq!(channel, "pushed");
            assert_eq!(code, 2000);
        }
        _ => unreachable!(),
    }
    s.api_ok(
        "refresh",
        json!({"user": "alice", "expire_at": now() + 600}),
    )
    .await;
    let _ = next_event(
        &mut e,
        |ev| matches!(ev, Event::Other(p) if p.refresh.is_some()),
    )
    .await;
    s.api_ok(
        "disconnect",
        json!({"user": "alice", "disconnect": {"code": 4000, "reason": "bye"}}),
    )
    .await;
    match next_event(&mut e, |ev| matches!(ev, Event::Disconnected { .. })).await {
        Event::Disconnected { code, reason } => {
            assert_eq!(code, 4000);
            assert_eq!(reason, "bye");
        }
        _ => unreachable!(),
    }
    assert!(c.rpc("echo", b"1".to_vec()).await.is_err());
    s.stop().await;
}
