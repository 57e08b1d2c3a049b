//! Call signaling (`rtc.*` over the messaging connection) with real media:
//! str0m test clients publish and receive through the SFU.

use crate::common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::{ConnectionTokenSpec, Grants};
use switchboard_client::media::{MediaClient, MediaOptions};
use switchboard_client::{Client, ClientOptions, Event, Events};
use switchboard_proto::codec::Encoding;

const MEDIA: &str = "[media]\nudp_addr = \"127.0.0.1:0\"\nconnect_timeout = \"5s\"\nidle_timeout = \"5s\"\ndefault_mode = \"sfu\"\n";

async fn rpc(
    c: &Client,
    method: &str,
    body: Value,
) -> Result<Value, switchboard_client::ClientError> {
    let r = c.rpc(method, body.to_string().into_bytes()).await?;
    Ok(serde_json::from_slice(&r.data).unwrap())
}

/// A participant: a messaging connection plus a media test client; a task
/// answers the SFU's offers pushed over the connection and records pushes.
struct Participant {
    client: Client,
    media: Arc<MediaClient>,
    pushes: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Participant {
    async fn join(s: &TestServer, user: &str, room: &str, publish: bool) -> Participant {
        let (client, events) = s.connect(user, Encoding::Json).await;
        Self::join_with(client, events, room, publish).await
    }

    async fn join_with(
        client: Client,
        mut events: Events,
        room: &str,
        publish: bool,
    ) -> Participant {
        let media = Arc::new(MediaClient::new(MediaOptions::default()).await.unwrap());
        let joined = rpc(&client, "rtc.join", json!({"room": room}))
            .await
            .expect("join");
        assert!(
            joined["participant"]
                .as_str()
                .is_some_and(|p| !p.is_empty())
        );
        let answer = media
            .accept_subscriber_offer(joined["offer"].as_str().unwrap())
            .unwrap();
        rpc(&client, "rtc.answer", json!({"room": room, "sdp": answer}))
            .await
            .unwrap();
        let pushes = Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let (client, media, pushes, room) = (
                client.clone(),
                media.clone(),
                pushes.clone(),
                room.to_string(),
            );
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    let Event::Message { data } = ev else {
                        continue;
                    };
                    let msg: Value = serde_json::from_slice(&data).unwrap();
                    if msg["type"] == "rtc.offer" {
                        let answer = media
                            .accept_subscriber_offer(msg["sdp"].as_str().unwrap())
                            .unwrap();
                        let _ =
                            rpc(&client, "rtc.answer", json!({"room": room, "sdp": answer})).await;
                    }
                    pushes.lock().unwrap().push(msg);
                }
            });
        }
        if publish {
            let offer = media.publish_offer().unwrap();
            let answer = rpc(&client, "rtc.publish", json!({"room": room, "sdp": offer}))
                .await
                .expect("publish");
            media
                .accept_publish_answer(answer["sdp"].as_str().unwrap())
                .unwrap();
        }
        Participant {
            client,
            media,
            pushes,
        }
    }

    fn saw(&self, kind: &str) -> Vec<Value> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == kind)
            .cloned()
            .collect()
    }
}

async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn participants_receive_each_others_media_and_are_told_of_changes() {
    let s = TestServer::dev(MEDIA).await;
    let alice = Participant::join(&s, "alice", "standup", true).await;
    let bob = Participant::join(&s, "bob", "standup", true).await;
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
    let carol = Participant::join(&s, "carol", "standup", false).await;
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
    let p = Participant::join_with(viewer, events, "r1", false).await;
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
    let _p2 = Participant::join_with(second, ev2, "r1", true).await;
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
