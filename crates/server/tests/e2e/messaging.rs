//! Channels, publications, history, recovery, presence, RPC, refresh.

use crate::common::*;
use serde_json::json;
use std::time::Duration;
use switchboard_auth::ConnectionTokenSpec;
use switchboard_client::{ClientOptions, Event, SubscribeOptions};
use switchboard_proto::client::StreamPosition;
use switchboard_proto::codec::Encoding;

#[tokio::test]
async fn publications_reach_json_and_protobuf_subscribers_intact() {
    let s = TestServer::dev("").await;
    let (a, mut ea) = s.connect("alice", Encoding::Json).await;
    let (b, mut eb) = s.connect("bob", Encoding::Protobuf).await;
    assert!(!a.client_id().is_empty());
    a.subscribe("chat", SubscribeOptions::default())
        .await
        .unwrap();
    b.subscribe("chat", SubscribeOptions::default())
        .await
        .unwrap();
    a.publish("chat", br#"{"text":"hi from json"}"#.to_vec())
        .await
        .unwrap();
    b.publish("chat", br#"{"text":"hi from protobuf"}"#.to_vec())
        .await
        .unwrap();
    for events in [&mut ea, &mut eb] {
        let (o1, d1) = next_pub(events, "chat").await;
        let (o2, d2) = next_pub(events, "chat").await;
        assert_eq!((o1, o2), (1, 2));
        assert_eq!(d1, json!({"text": "hi from json"}));
        assert_eq!(d2, json!({"text": "hi from protobuf"}));
    }
    // The publisher is attached as info.
    let h = a.history("chat", 10, None, false).await.unwrap();
    assert_eq!(h.publications[0].info.as_ref().unwrap().user, "alice");
    assert_eq!(h.publications[1].info.as_ref().unwrap().user, "bob");
    s.stop().await;
}

#[tokio::test]
async fn history_limit_since_and_reverse() {
    let s = TestServer::dev("").await;
    for i in 1..=10 {
        s.api_ok("publish", json!({"channel": "news", "data": {"n": i}}))
            .await;
    }
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let all = c.history("news", -1, None, false).await.unwrap();
    assert_eq!(all.publications.len(), 10);
    assert_eq!(all.offset, 10);
    let epoch = all.epoch.clone();
    let offsets = |h: &switchboard_proto::client::HistoryResult| -> Vec<u64> {
        h.publications.iter().map(|p| p.offset).collect()
    };
    assert_eq!(
        offsets(&c.history("news", 3, None, false).await.unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        offsets(&c.history("news", 3, None, true).await.unwrap()),
        vec![10, 9, 8]
    );
    let since = StreamPosition {
        offset: 6,
        epoch: epoch.clone(),
    };
    assert_eq!(
        offsets(
            &c.history("news", 2, Some(since.clone()), false)
                .await
                .unwrap()
        ),
        vec![7, 8]
    );
    assert_eq!(
        offsets(&c.history("news", 2, Some(since), true).await.unwrap()),
        vec![5, 4]
    );
    let only_pos = c.history("news", 0, None, false).await.unwrap();
    assert!(only_pos.publications.is_empty());
    assert_eq!(only_pos.offset, 10);
    let bad = StreamPosition {
        offset: 1,
        epoch: "other".into(),
    };
    let err = c.history("news", 5, Some(bad), false).await.unwrap_err();
    assert_eq!(err.protocol_code(), Some(112));
    s.stop().await;
}

#[tokio::test]
async fn reconnecting_client_recovers_exactly_what_it_missed() {
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let s = TestServer::dev("").await;
        let (c, _e) = s.connect("alice", encoding).await;
        s.api_ok("publish", json!({"channel": "feed", "data": {"n": 0}}))
            .await;
        let sub = c
            .subscribe("feed", SubscribeOptions::default())
            .await
            .unwrap();
        assert!(sub.recoverable && sub.positioned);
        assert_eq!(sub.offset, 1);
        c.close().await;
        for i in 1..=5 {
            s.api_ok("publish", json!({"channel": "feed", "data": {"n": i}}))
                .await;
        }
        let (c, mut e) = s.connect("alice", encoding).await;
        let opts = SubscribeOptions {
            recover: Some((sub.offset, sub.epoch.clone())),
            ..Default::default()
        };
        let res = c.subscribe("feed", opts).await.unwrap();
        assert!(res.was_recovering);
        assert!(res.recovered);
        let got: Vec<u64> = res.publications.iter().map(|p| p.offset).collect();
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        // Live publications continue after the recovered ones, no duplicates.
        s.api_ok("publish", json!({"channel": "feed", "data": {"n": 6}}))
            .await;
        assert_eq!(next_pub(&mut e, "feed").await.0, 7);
        s.stop().await;
    }
}

#[tokio::test]
async fn recovery_reports_trimmed_history_honestly() {
    let s = TestServer::dev("[channel.namespaces.short]\nhistory_size = 3\nforce_recovery = true\nallow_subscribe_for_client = true\n").await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let sub = c
        .subscribe("short:x", SubscribeOptions::default())
        .await
        .unwrap();
    c.close().await;
    for i in 1..=5 {
        s.api_ok("publish", json!({"channel": "short:x", "data": {"n": i}}))
            .await;
    }
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let res = c
        .subscribe(
            "short:x",
            SubscribeOptions {
                recover: Some((sub.offset, sub.epoch)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(res.was_recovering);
    assert!(!res.recovered, "two publications were trimmed");
    let got: Vec<u64> = res.publications.iter().map(|p| p.offset).collect();
    assert_eq!(got, vec![3, 4, 5]);
    // After history_remove the epoch changes: recovery says not recovered.
    s.api_ok("history_remove", json!({"channel": "short:x"}))
        .await;
    c.unsubscribe("short:x").await.unwrap();
    let res2 = c
        .subscribe(
            "short:x",
            SubscribeOptions {
                recover: Some((res.offset, res.epoch.clone())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!res2.recovered);
    assert_ne!(res2.epoch, res.epoch);
    s.stop().await;
}

#[tokio::test]
async fn history_and_recovery_survive_a_restart() {
    let mut s = TestServer::dev("").await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let sub = c
        .subscribe("durable", SubscribeOptions::default())
        .await
        .unwrap();
    c.close().await;
    for i in 1..=3 {
        s.api_ok("publish", json!({"channel": "durable", "data": {"n": i}}))
            .await;
    }
    s.restart().await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let res = c
        .subscribe(
            "durable",
            SubscribeOptions {
                recover: Some((sub.offset, sub.epoch.clone())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(res.recovered);
    assert_eq!(res.epoch, sub.epoch);
    assert_eq!(res.publications.len(), 3);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&res.publications[2].data).unwrap(),
        json!({"n": 3})
    );
    s.stop().await;
}

#[tokio::test]
async fn presence_join_and_leave() {
    let s = TestServer::dev("").await;
    let (a, mut ea) = s.connect("alice", Encoding::Json).await;
    a.subscribe(
        "room",
        SubscribeOptions {
            join_leave: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (b, _eb) = s.connect("bob", Encoding::Protobuf).await;
    b.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    match next_event(&mut ea, |e| matches!(e, Event::Join { .. })).await {
        Event::Join { channel, info } => {
            assert_eq!(channel, "room");
            assert_eq!(info.user, "bob");
        }
        _ => unreachable!(),
    }
    let p = a.presence("room").await.unwrap();
    let mut users: Vec<&str> = p.presence.values().map(|i| i.user.as_str()).collect();
    users.sort();
    assert_eq!(users, vec!["alice", "bob"]);
    let stats = b.presence_stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));
    b.unsubscribe("room").await.unwrap();
    match next_event(&mut ea, |e| matches!(e, Event::Leave { .. })).await {
        Event::Leave { info, .. } => assert_eq!(info.user, "bob"),
        _ => unreachable!(),
    }
    assert_eq!(a.presence_stats("room").await.unwrap().num_clients, 1);
    s.stop().await;
}

#[tokio::test]
async fn presence_is_cleaned_when_a_client_stops_answering() {
    // The silent client never answers pings: after ping + pong timeout the
    // server drops it and the others see it leave.
    let s = TestServer::dev("[client]\nping_interval = \"1s\"\npong_timeout = \"500ms\"\n").await;
    let (a, mut ea) = s.connect("alice", Encoding::Json).await;
    a.subscribe(
        "room",
        SubscribeOptions {
            join_leave: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut raw = switchboard_client::RawConnection::connect(&s.ws_url(), Default::default())
        .await
        .unwrap();
    raw.send_text(format!(
        r#"{{"id":1,"connect":{{"token":"{}"}}}}"#,
        token("mallory")
    ))
    .await
    .unwrap();
    raw.send_text(r#"{"id":2,"subscribe":{"channel":"room"}}"#)
        .await
        .unwrap();
    next_event(
        &mut ea,
        |e| matches!(e, Event::Join { info, .. } if info.user == "mallory"),
    )
    .await;
    assert_eq!(a.presence_stats("room").await.unwrap().num_clients, 2);
    // Read frames (including pings) without answering until the server closes.
    let code = loop {
        match raw.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            switchboard_client::RawFrame::Close { code, .. } => break code,
            switchboard_client::RawFrame::Ended => panic!("ended without close frame"),
            _ => {}
        }
    };
    assert_eq!(code, 3012, "no pong");
    next_event(
        &mut ea,
        |e| matches!(e, Event::Leave { info, .. } if info.user == "mallory"),
    )
    .await;
    assert_eq!(a.presence_stats("room").await.unwrap().num_clients, 1);
    s.stop().await;
}

#[tokio::test]
async fn abrupt_disconnect_removes_presence() {
    let s = TestServer::dev("").await;
    let (a, mut ea) = s.connect("alice", Encoding::Json).await;
    a.subscribe(
        "room",
        SubscribeOptions {
            join_leave: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    {
        let mut raw = switchboard_client::RawConnection::connect(&s.ws_url(), Default::default())
            .await
            .unwrap();
        raw.send_text(format!(
            r#"{{"id":1,"connect":{{"token":"{}"}}}}"#,
            token("bob")
        ))
        .await
        .unwrap();
        raw.send_text(r#"{"id":2,"subscribe":{"channel":"room"}}"#)
            .await
            .unwrap();
        next_event(&mut ea, |e| matches!(e, Event::Join { .. })).await;
        // Dropped without a close frame: the TCP connection just goes away.
    }
    next_event(
        &mut ea,
        |e| matches!(e, Event::Leave { info, .. } if info.user == "bob"),
    )
    .await;
    assert_eq!(a.presence_stats("room").await.unwrap().num_clients, 1);
    s.stop().await;
}

#[tokio::test]
async fn rpc_dispatches_and_unknown_methods_are_refused() {
    let s = TestServer::dev("").await;
    let (c, _e) = s.connect("alice", Encoding::Protobuf).await;
    let r = c.rpc("echo", br#"{"x":1}"#.to_vec()).await.unwrap();
    assert_eq!(&r.data[..], br#"{"x":1}"#);
    assert_eq!(
        c.rpc("nope", b"{}".to_vec())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(104)
    );
    c.send(br#"{"async":true}"#.to_vec()).await.unwrap();
    // The connection is still fine after an async message.
    c.rpc("echo", b"1".to_vec()).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn server_side_subscriptions_from_token() {
    let s = TestServer::dev("").await;
    let tok = token_spec(ConnectionTokenSpec {
        user: "alice".into(),
        channels: vec!["personal#alice".into(), "broadcast".into()],
        ..Default::default()
    });
    let (c, mut e) = s.connect_with(ClientOptions::with_token(tok)).await;
    let subs = &c.connect_result().subs;
    assert!(subs.contains_key("broadcast") && subs.contains_key("personal#alice"));
    s.api_ok(
        "publish",
        json!({"channel": "broadcast", "data": {"hello": 1}}),
    )
    .await;
    assert_eq!(next_pub(&mut e, "broadcast").await.1, json!({"hello": 1}));
    s.stop().await;
}

#[tokio::test]
async fn connection_refresh_extends_and_expiry_disconnects() {
    let s = TestServer::dev("[client]\nexpired_close_delay = \"0s\"\n").await;
    let short = |ttl| {
        token_spec(ConnectionTokenSpec {
            user: "alice".into(),
            ttl: Some(Duration::from_secs(ttl)),
            ..Default::default()
        })
    };
    let (c, _e) = s.connect_with(ClientOptions::with_token(short(2))).await;
    assert!(c.connect_result().expires);
    let r = c.refresh(&short(3600)).await.unwrap();
    assert!(r.expires && r.ttl > 3000);
    // A client that does not refresh is disconnected with "connection expired".
    let (d, mut ed) = s.connect_with(ClientOptions::with_token(short(1))).await;
    match next_event(&mut ed, |e| matches!(e, Event::Disconnected { .. })).await {
        Event::Disconnected { code, .. } => assert_eq!(code, 3005),
        _ => unreachable!(),
    }
    drop(d);
    // The refreshed one is still alive well past its first token's expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.rpc("echo", b"1".to_vec()).await.unwrap();
    // A token of another user cannot be used to refresh.
    let err = c.refresh(&token("mallory")).await.unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    s.stop().await;
}

#[tokio::test]
async fn private_channels_need_a_subscription_token_and_refresh_it() {
    let s = TestServer::with_config(
        "[channel.defaults]\nallow_subscribe_for_client = true\n[channel.namespaces.secret]\nhistory_size = 10\nforce_recovery = true\n",
    )
    .await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let err = c
        .subscribe("secret:plans", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    let wrong_user = sub_token("bob", "secret:plans", Duration::from_secs(60));
    let err = c
        .subscribe(
            "secret:plans",
            SubscribeOptions {
                token: wrong_user,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    let other_channel = sub_token("alice", "secret:other", Duration::from_secs(60));
    let err = c
        .subscribe(
            "secret:plans",
            SubscribeOptions {
                token: other_channel,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    let ok = sub_token("alice", "secret:plans", Duration::from_secs(60));
    let res = c
        .subscribe(
            "secret:plans",
            SubscribeOptions {
                token: ok,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(res.expires);
    let refreshed = c
        .sub_refresh(
            "secret:plans",
            &sub_token("alice", "secret:plans", Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert!(refreshed.ttl > 500);
    // `$` channels always need a token.
    let err = c
        .subscribe("$private", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    s.stop().await;
}

#[tokio::test]
async fn namespace_rules_are_enforced() {
    let s = TestServer::with_config(
        r#"
[channel.defaults]
allow_subscribe_for_client = true
allow_publish_for_client = true
[channel.namespaces.dialog]
allow_user_limited_channels = true
allow_subscribe_for_client = true
[channel.namespaces.readonly]
allow_subscribe_for_client = true
[channel.namespaces.subonly]
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
presence = true
allow_presence_for_subscriber = true
"#,
    )
    .await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    c.subscribe("dialog:x#alice,bob", SubscribeOptions::default())
        .await
        .unwrap();
    let err = c
        .subscribe("dialog:y#bob,carol", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    let err = c.publish("readonly:x", b"{}".to_vec()).await.unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    let err = c
        .subscribe("unknown:x", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(102));
    // History is off here: not available.
    assert_eq!(
        c.history("readonly:x", 1, None, false)
            .await
            .unwrap_err()
            .protocol_code(),
        Some(108)
    );
    // Publishing and presence only once subscribed.
    assert_eq!(
        c.publish("subonly:x", b"{}".to_vec())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(103)
    );
    assert_eq!(
        c.presence("subonly:x").await.unwrap_err().protocol_code(),
        Some(103)
    );
    c.subscribe("subonly:x", SubscribeOptions::default())
        .await
        .unwrap();
    c.publish("subonly:x", b"{}".to_vec()).await.unwrap();
    c.presence("subonly:x").await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn long_history_is_kept_forever_and_paged() {
    let s = TestServer::dev("[channel.namespaces.archive]\nhistory_size = 5\nhistory_retention = \"forever\"\nallow_history_for_client = true\nallow_subscribe_for_client = true\n").await;
    for i in 1..=30 {
        s.api_ok(
            "publish",
            json!({"channel": "archive:log", "data": {"n": i}}),
        )
        .await;
    }
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    // Everything is still there, beyond history_size.
    let all = c.history("archive:log", -1, None, false).await.unwrap();
    assert_eq!(all.publications.len(), 30);
    // Page backwards 10 at a time from the top.
    let mut seen = vec![];
    let mut since: Option<StreamPosition> = None;
    loop {
        let page = c
            .history("archive:log", 10, since.clone(), true)
            .await
            .unwrap();
        if page.publications.is_empty() {
            break;
        }
        seen.extend(page.publications.iter().map(|p| p.offset));
        let oldest = page.publications.last().unwrap().offset;
        since = Some(StreamPosition {
            offset: oldest,
            epoch: page.epoch.clone(),
        });
    }
    assert_eq!(seen, (1..=30).rev().collect::<Vec<u64>>());
    s.stop().await;
}
