//! Call signaling (`rtc.*` over the messaging connection) with real media:
//! str0m test clients publish and receive through the SFU.

use crate::common::*;
use crate::rtc::*;
use serde_json::json;
use switchboard_auth::{ConnectionTokenSpec, Grants};
use switchboard_client::{Client, ClientOptions, Events};
use switchboard_proto::codec::Encoding;

const MEDIA: &str = "[media]\nudp_addr = \"127.0.0.1:0\"\nconnect_timeout = \"5s\"\nidle_timeout = \"5s\"\ndefault_mode = \"sfu\"\n";

/// Connects `user` and joins `room` (SFU), publishing audio and video when asked.
async fn participant(s: &TestServer, user: &str, room: &str, publish: bool) -> Member {
    let (client, events) = s.connect(user, Encoding::Json).await;
    joined(client, events, room, publish).await
}

/// Joins `room` over an existing connection.
async fn joined(client: Client, events: Events, room: &str, publish: bool) -> Member {
    let m = Member::with(client, events, room).await;
    let reply = m.join(room, publish).await;
    assert_eq!(reply["mode"], "sfu", "{reply}");
    m
}

#[tokio::test]
async fn participants_receive_each_others_media_and_are_told_of_changes() {
    let s = TestServer::dev(MEDIA).await;
    let alice = participant(&s, "alice", "standup", true).await;
    let bob = participant(&s, "bob", "standup", true).await;
    wait("bob decodes alice's audio and video", || {
        let st = bob.media.stats();
        st.frames("video") > 10 && st.frames("audio") > 10
    })
    .await;
    wait("alice decodes bob's audio and video", || {
        let st = alice.media.stats();
        st.frames("video") > 10 && st.frames("audio") > 10
    })
    .await;
    assert!(
        !alice.saw("rtc.participant_joined").is_empty(),
        "alice was told bob joined"
    );
    assert!(!alice.saw("rtc.track_published").is_empty());
    // A third joins, receive-only; one leaves, the others are told.
    let carol = participant(&s, "carol", "standup", false).await;
    wait("carol receives both", || {
        carol.media.stats().frames("video") > 10
    })
    .await;
    rpc(&alice.client, "rtc.leave", json!({"room": "standup"}))
        .await
        .unwrap();
    wait("bob told alice left", || {
        !bob.saw("rtc.participant_left").is_empty()
    })
    .await;
    wait("carol told alice's tracks are gone", || {
        !carol.saw("rtc.track_unpublished").is_empty()
    })
    .await;
    // Bob vanishes without leaving: his connection closes, carol is told.
    bob.client.close().await;
    wait("carol told bob left", || {
        carol.saw("rtc.participant_left").len() >= 2
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn grants_bad_sdp_and_limits_are_enforced() {
    let s = TestServer::with_config(&format!(
        "{MEDIA}max_participants = 2\n[channel.defaults]\nallow_subscribe_for_client = true\n"
    ))
    .await;
    // No room grants at all.
    let (plain, _e) = s.connect("mallory", Encoding::Json).await;
    let err = rpc(&plain, "rtc.join", json!({"room": "r"}))
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    // May join and listen, but not send video.
    let mut grants: Grants = serde_json::from_value(json!({"rooms": [
        {"pattern": "r*", "join": true, "publish_audio": true, "subscribe_media": true}
    ]}))
    .unwrap();
    let tok = token_spec(ConnectionTokenSpec {
        user: "viewer".into(),
        grants: Some(grants.clone()),
        ..Default::default()
    });
    let (viewer, events) = s.connect_with(ClientOptions::with_token(tok)).await;
    let p = joined(viewer, events, "r1", false).await;
    let err = rpc(
        &p.client,
        "rtc.publish",
        json!({"room": "r1", "sdp": p.media.publish_offer().unwrap()}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103), "{err}");
    // Garbage SDP is a bad request with the reason.
    let err = rpc(
        &p.client,
        "rtc.publish",
        json!({"room": "r1", "sdp": "v=0\r\ngarbage"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.protocol_code(), Some(107));
    assert!(err.to_string().contains("SDP"), "{err}");
    // Malformed request and unknown rtc method.
    assert_eq!(
        rpc(&p.client, "rtc.join", json!({"nope": 1}))
            .await
            .unwrap_err()
            .protocol_code(),
        Some(107)
    );
    assert_eq!(
        rpc(&p.client, "rtc.frobnicate", json!({}))
            .await
            .unwrap_err()
            .protocol_code(),
        Some(104)
    );
    // The room holds two: a third is refused.
    grants.rooms[0].publish_video = true;
    let full_tok = |u: &str| {
        token_spec(ConnectionTokenSpec {
            user: u.into(),
            grants: Some(grants.clone()),
            ..Default::default()
        })
    };
    let (second, ev2) = s
        .connect_with(ClientOptions::with_token(full_tok("second")))
        .await;
    let _p2 = joined(second, ev2, "r1", true).await;
    let (third, _e3) = s
        .connect_with(ClientOptions::with_token(full_tok("third")))
        .await;
    assert_eq!(
        rpc(&third, "rtc.join", json!({"room": "r1"}))
            .await
            .unwrap_err()
            .protocol_code(),
        Some(106)
    );
    s.stop().await;
}

#[tokio::test]
async fn join_hands_out_turn_credentials() {
    let s = TestServer::dev(&format!(
        "{MEDIA}[[media.ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n[media.turn]\nurls = [\"turn:127.0.0.1:3478\"]\nsecret = \"s3cret\"\nttl = \"1h\"\n"
    ))
    .await;
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    let joined = rpc(&c, "rtc.join", json!({"room": "t"})).await.unwrap();
    let servers = joined["ice_servers"].as_array().unwrap();
    assert_eq!(servers[0]["urls"][0], "stun:stun.example.org:3478");
    let turn = &servers[1];
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(expiry.parse::<i64>().unwrap() > now() + 3500);
    let (_, expected) =
        switchboard_server::calls::turn_credentials("s3cret", "alice", expiry.parse().unwrap());
    assert_eq!(turn["credential"], expected.as_str());
    s.stop().await;
}
