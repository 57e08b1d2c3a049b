//! Bad input, limits and backpressure: each gets its protocol code, never a
//! crash, and never affects other connections.

use crate::common::*;
use serde_json::json;
use std::time::Duration;
use switchboard_auth::ConnectionTokenSpec;
use switchboard_client::{
    Client, ClientOptions, Event, RawConnection, RawFrame, RawOptions, SubscribeOptions,
};
use switchboard_proto::codec::Encoding;

async fn raw(s: &TestServer, encoding: Encoding) -> RawConnection {
    RawConnection::connect(
        &s.ws_url(),
        RawOptions {
            encoding,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn raw_connected(s: &TestServer, user: &str) -> RawConnection {
    let mut r = raw(s, Encoding::Json).await;
    r.send_text(format!(
        r#"{{"id":1,"connect":{{"token":"{}"}}}}"#,
        token(user)
    ))
    .await
    .unwrap();
    match r.recv().await.unwrap() {
        RawFrame::Text(t) => assert!(t.contains("\"connect\""), "{t}"),
        other => panic!("unexpected {other:?}"),
    }
    r
}

/// Reads until the server closes; returns the close code.
async fn close_code(r: &mut RawConnection) -> u16 {
    loop {
        match r.recv_timeout(Duration::from_secs(10)).await.unwrap() {
            RawFrame::Close { code, .. } => return code,
            RawFrame::Ended => panic!("connection ended without a close frame"),
            _ => {}
        }
    }
}

/// Reads text frames until one contains `needle`.
async fn reply_with(r: &mut RawConnection, needle: &str) -> String {
    loop {
        match r.recv().await.unwrap() {
            RawFrame::Text(t) if t.contains(needle) => return t,
            RawFrame::Close { code, reason } => panic!("closed {code} {reason}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn malformed_frames_close_with_bad_request() {
    let s = TestServer::dev("").await;
    let (bystander, mut be) = s.connect("bob", Encoding::Json).await;
    bystander
        .subscribe("chat", SubscribeOptions::default())
        .await
        .unwrap();

    let mut r = raw_connected(&s, "alice").await;
    r.send_text("{not json").await.unwrap();
    assert_eq!(close_code(&mut r).await, 3501);

    let mut r = raw(&s, Encoding::Protobuf).await;
    r.send_binary(vec![0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2])
        .await
        .unwrap();
    assert_eq!(close_code(&mut r).await, 3501);

    // A command before connect.
    let mut r = raw(&s, Encoding::Json).await;
    r.send_text(r#"{"id":1,"subscribe":{"channel":"chat"}}"#)
        .await
        .unwrap();
    assert_eq!(close_code(&mut r).await, 3501);

    // Oversize frame.
    let mut r = raw_connected(&s, "alice").await;
    let big = format!(
        r#"{{"id":2,"publish":{{"channel":"chat","data":"{}"}}}}"#,
        "x".repeat(70 * 1024)
    );
    r.send_text(big).await.unwrap();
    assert_eq!(close_code(&mut r).await, 3501);

    // An unknown command gets "method not found" and the connection stays.
    let mut r = raw_connected(&s, "alice").await;
    r.send_text(r#"{"id":7,"frobnicate":{}}"#).await.unwrap();
    let t = reply_with(&mut r, "\"id\":7").await;
    assert!(t.contains("104"), "{t}");

    // The bystander never noticed.
    s.api_ok(
        "publish",
        json!({"channel": "chat", "data": {"still": "fine"}}),
    )
    .await;
    assert_eq!(next_pub(&mut be, "chat").await.1, json!({"still": "fine"}));
    s.stop().await;
}

#[tokio::test]
async fn tokens_missing_forged_or_expired() {
    let s = TestServer::with_config("").await;
    let url = s.ws_url();
    // Missing token (anonymous not allowed outside --dev).
    let err = Client::connect(&url, ClientOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(101));
    // Forged: signed with another secret.
    let forged = switchboard_auth::Minter::hs256("not-the-secret")
        .unwrap()
        .mint_connection(
            &ConnectionTokenSpec {
                user: "alice".into(),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let err = Client::connect(&url, ClientOptions::with_token(forged))
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    // Garbage.
    let err = Client::connect(&url, ClientOptions::with_token("a.b.c"))
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    // Expired.
    let expired = switchboard_auth::Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(
            &ConnectionTokenSpec {
                user: "alice".into(),
                ttl: Some(Duration::from_secs(1)),
                ..Default::default()
            },
            now() - 100,
        )
        .unwrap();
    let err = Client::connect(&url, ClientOptions::with_token(expired))
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(109));
    s.stop().await;
}

#[tokio::test]
async fn channel_and_data_limits() {
    let s = TestServer::dev("[client]\nmax_channels_per_connection = 3\nmax_channel_length = 32\nmax_publication_bytes = 1024\n").await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    for ch in ["a", "b", "c"] {
        c.subscribe(ch, SubscribeOptions::default()).await.unwrap();
    }
    assert_eq!(
        c.subscribe("d", SubscribeOptions::default())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(106)
    );
    assert_eq!(
        c.subscribe("a", SubscribeOptions::default())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(105)
    );
    let long = "x".repeat(33);
    assert_eq!(
        c.publish(&long, b"{}".to_vec())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(106)
    );
    assert_eq!(
        c.publish("bad name", b"{}".to_vec())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(107)
    );
    let data = format!(r#"{{"x":"{}"}}"#, "y".repeat(2000));
    assert_eq!(
        c.publish("a", data.into_bytes())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(106)
    );
    c.publish("a", b"{}".to_vec()).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn command_rate_limit_refuses_with_too_many_requests() {
    let s = TestServer::dev("[client]\ncommands_per_second = 5\ncommands_burst = 5\n").await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let mut refused = 0;
    for _ in 0..20 {
        match c.rpc("echo", b"1".to_vec()).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.protocol_code(), Some(111));
                refused += 1;
            }
        }
    }
    assert!(refused >= 10, "only {refused} refused");
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.rpc("echo", b"1".to_vec()).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn connection_attempts_per_ip_are_limited() {
    let s = TestServer::dev(
        "[client]\nconnections_per_second_per_ip = 1\nconnections_burst_per_ip = 3\n",
    )
    .await;
    let mut codes = vec![];
    for _ in 0..6 {
        match Client::connect(&s.ws_url(), ClientOptions::with_token(token("alice"))).await {
            Ok((c, _)) => {
                codes.push(0);
                c.close().await;
            }
            Err(e) => codes.push(e.close_code().expect("a close code")),
        }
    }
    assert_eq!(&codes[..3], &[0, 0, 0]);
    assert!(codes[3..].iter().all(|&c| c == 3013), "{codes:?}");
    s.stop().await;
}

#[tokio::test]
async fn slow_reader_is_disconnected_and_others_keep_flowing() {
    let s = TestServer::dev(
        "[client]\nsend_queue_max_bytes = 262144\nsend_queue_max_messages = 1000\n",
    )
    .await;
    // A reader that subscribes and then stops reading.
    let mut slow = raw_connected(&s, "slow").await;
    slow.send_text(r#"{"id":2,"subscribe":{"channel":"firehose"}}"#)
        .await
        .unwrap();
    reply_with(&mut slow, "\"id\":2").await;
    let (fast, mut fe) = s.connect("fast", Encoding::Protobuf).await;
    fast.subscribe("firehose", SubscribeOptions::default())
        .await
        .unwrap();
    let payload = "z".repeat(16 * 1024);
    let n = 1500u64; // ~24 MB: far more than socket buffers plus the queue bound.
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < n {
            last = next_pub(&mut fe, "firehose").await.0;
        }
        last
    });
    for i in 0..n {
        s.api_ok(
            "publish",
            json!({"channel": "firehose", "data": {"i": i, "pad": payload}}),
        )
        .await;
    }
    assert_eq!(reader.await.unwrap(), n, "the fast reader got everything");
    // The slow reader finds, after what fitted, a "slow" close.
    assert_eq!(close_code(&mut slow).await, 3008);
    // It can reconnect and recover the rest from history.
    let (c, _e) = s.connect("slow", Encoding::Json).await;
    let h = c.history("firehose", 0, None, false).await.unwrap();
    assert_eq!(h.offset, n);
    drop(fast);
    s.stop().await;
}

#[tokio::test]
async fn ephemeral_conflation_keeps_latest_per_key_for_laggards() {
    let s = TestServer::dev(
        "[client]\nsend_queue_max_bytes = 262144\n[channel.namespaces.pos]\nallow_subscribe_for_client = true\nconflate_key = \"vehicle\"\n",
    )
    .await;
    let mut slow = raw_connected(&s, "slow").await;
    slow.send_text(r#"{"id":2,"subscribe":{"channel":"pos:city"}}"#)
        .await
        .unwrap();
    reply_with(&mut slow, "\"id\":2").await;
    let pad = "p".repeat(16 * 1024);
    let per_key = 600;
    for i in 0..per_key {
        for v in ["bus-1", "bus-2"] {
            s.api_ok(
                "publish",
                json!({"channel": "pos:city", "data": {"vehicle": v, "seq": i, "pad": pad}}),
            )
            .await;
        }
    }
    // Now read everything that is queued: never disconnected, fewer frames
    // than published, and the last position of each vehicle is the latest.
    let mut last = std::collections::HashMap::new();
    let mut received = 0;
    loop {
        match slow.recv_timeout(Duration::from_millis(1500)).await {
            Ok(RawFrame::Text(t)) => {
                for line in t.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if let Some(d) = v["push"]["pub"]["data"].as_object() {
                        received += 1;
                        last.insert(
                            d["vehicle"].as_str().unwrap().to_string(),
                            d["seq"].as_i64().unwrap(),
                        );
                    }
                }
            }
            Ok(RawFrame::Close { code, .. }) => panic!("disconnected with {code}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(
        received < 2 * per_key,
        "received {received}: nothing was conflated"
    );
    assert_eq!(last.get("bus-1"), Some(&(per_key as i64 - 1)));
    assert_eq!(last.get("bus-2"), Some(&(per_key as i64 - 1)));
    s.stop().await;
}

#[tokio::test]
async fn idempotent_publish_is_not_repeated() {
    let s = TestServer::dev("").await;
    let (c, mut e) = s.connect("alice", Encoding::Json).await;
    c.subscribe("orders", SubscribeOptions::default())
        .await
        .unwrap();
    let body = json!({"channel": "orders", "data": {"id": 1}, "idempotency_key": "order-1"});
    let r1 = s.api_ok("publish", body.clone()).await;
    let r2 = s.api_ok("publish", body).await;
    assert_eq!(r1["offset"], r2["offset"]);
    s.api_ok("publish", json!({"channel": "orders", "data": {"id": 2}}))
        .await;
    assert_eq!(next_pub(&mut e, "orders").await.1, json!({"id": 1}));
    assert_eq!(next_pub(&mut e, "orders").await.1, json!({"id": 2}));
    let h = s
        .api_ok("history", json!({"channel": "orders", "limit": -1}))
        .await;
    assert_eq!(h["publications"].as_array().unwrap().len(), 2);
    no_event(&mut e, Duration::from_millis(200), |ev| {
        matches!(ev, Event::Publication { .. })
    })
    .await;
    s.stop().await;
}
