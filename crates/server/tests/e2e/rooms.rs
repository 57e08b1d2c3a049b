//! Rooms: the room server API, room modes, peer-to-peer signaling relay, the
//! switch of an `auto` room to the SFU (with real media through str0m test
//! clients), removal, deletion, mute, the empty timeout and the call events
//! recorded in the `calls` stream.

use crate::common::*;
use crate::rtc::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_client::ClientOptions;
use switchboard_store::Store;

const MEDIA: &str =
    "[media]\nudp_addr = \"127.0.0.1:0\"\nconnect_timeout = \"5s\"\nidle_timeout = \"5s\"\n";

fn code(reply: &Value) -> u64 {
    reply["error"]["code"].as_u64().unwrap_or(0)
}

/// Stops the server and returns the events of its `calls` stream.
async fn recorded_events(mut s: TestServer) -> Vec<Value> {
    // Let the call log's writer catch up with the last pushes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.handle.take().unwrap().shutdown().await.unwrap();
    let store = switchboard_store::SqliteStore::open(&s.dir.join("switchboard.db"))
        .await
        .unwrap();
    let events = store
        .read_events(switchboard_core::callevent::STREAM, 0, 10_000)
        .await
        .unwrap();
    store.close().await.unwrap();
    s.stop().await;
    events.into_iter().map(|e| e.payload).collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn room_create_get_list_and_bad_options() {
    let s = TestServer::dev(MEDIA).await;
    let created = s
        .api_ok(
            "room_create",
            json!({"room": "board", "mode": "sfu", "max_participants": 3, "empty_timeout": "10m"}),
        )
        .await;
    let room = &created["room"];
    assert_eq!(room["room"], "board");
    assert_eq!(room["mode"], "sfu");
    assert_eq!(room["transport"], "sfu");
    assert_eq!(room["max_participants"], 3);
    assert_eq!(room["empty_timeout"], "10m");
    assert!(room["call"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(room["created_at"].as_i64().unwrap() > 0);
    assert_eq!(room["participants"], json!([]));
    let got = s.api_ok("room_get", json!({"room": "board"})).await;
    assert_eq!(got["room"]["call"], room["call"]);
    s.api_ok("room_create", json!({"room": "lobby"})).await;
    let list = s.api_ok("room_list", json!({})).await;
    let names: Vec<&str> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["board", "lobby"]);
    // Defaults: auto mode, media.max_participants, media.empty_timeout.
    let lobby = &list["rooms"][1];
    assert_eq!(
        (&lobby["mode"], &lobby["transport"]),
        (&json!("auto"), &json!("p2p"))
    );
    assert_eq!(lobby["max_participants"], 100);
    assert_eq!(lobby["empty_timeout"], "5m");

    // Bad input: each a clear API error.
    let dup = s.api("room_create", json!({"room": "board"})).await;
    assert_eq!(code(&dup), 113, "{dup}");
    let bad_mode = s
        .api("room_create", json!({"room": "x", "mode": "mesh"}))
        .await;
    assert_eq!(code(&bad_mode), 107);
    assert!(
        bad_mode["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mesh"),
        "{bad_mode}"
    );
    for bad in [
        json!({"room": "x", "max_participants": 0}),
        json!({"room": "x", "max_participants": 101}),
        json!({"room": "x", "empty_timeout": "soon"}),
        json!({"room": ""}),
    ] {
        let r = s.api("room_create", bad.clone()).await;
        assert_eq!(code(&r), 107, "{bad} → {r}");
    }
    let missing = s.api("room_get", json!({"room": "nope"})).await;
    assert_eq!(code(&missing), 104, "{missing}");
    assert_eq!(
        code(&s.api("room_delete", json!({"room": "nope"})).await),
        104
    );
    assert_eq!(
        code(
            &s.api(
                "room_remove_participant",
                json!({"room": "board", "participant": "ghost"})
            )
            .await
        ),
        104
    );
    // A typo in an option is refused, not ignored.
    let resp = reqwest::Client::new()
        .post(s.http("/api/room_create"))
        .header("X-API-Key", API_KEY)
        .json(&json!({"room": "y", "max_participant": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn rooms_at_capacity_refuse_with_a_clear_error() {
    let s = TestServer::dev(MEDIA).await;
    // p2p rooms hold media.p2p_max_participants (2) whatever max_participants says.
    s.api_ok(
        "room_create",
        json!({"room": "pair", "mode": "p2p", "max_participants": 10}),
    )
    .await;
    let a = Member::connect(&s, "alice", "pair").await;
    let b = Member::connect(&s, "bob", "pair").await;
    let c = Member::connect(&s, "carol", "pair").await;
    assert_eq!(a.join("pair", false).await["mode"], "p2p");
    assert_eq!(b.join("pair", false).await["mode"], "p2p");
    let err = rpc(&c.client, "rtc.join", json!({"room": "pair"}))
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(106), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    // An SFU room of one.
    s.api_ok(
        "room_create",
        json!({"room": "solo", "mode": "sfu", "max_participants": 1}),
    )
    .await;
    assert_eq!(a.join("solo", false).await["mode"], "sfu");
    let err = rpc(&b.client, "rtc.join", json!({"room": "solo"}))
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(106), "{err}");
    // Joining twice.
    let err = rpc(&a.client, "rtc.join", json!({"room": "solo"}))
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(105), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn p2p_room_relays_signals_without_sfu_peers() {
    let s = TestServer::dev(&format!("{MEDIA}[client]\nmax_frame_bytes = 262144\n")).await;
    let alice = Member::connect(&s, "alice", "call").await;
    let bob = Member::connect(&s, "bob", "call").await;
    let ja = alice.join("call", false).await;
    assert_eq!(ja["mode"], "p2p");
    assert!(ja.get("offer").is_none(), "no SFU offer in p2p: {ja}");
    let jb = bob.join("call", false).await;
    assert_eq!(jb["mode"], "p2p");
    assert_eq!(jb["participants"], json!([alice.id]));
    assert_eq!(jb["users"], json!({alice.id.clone(): "alice"}));
    assert_eq!(ja["users"], json!({}));
    wait("alice told bob joined", || {
        alice
            .saw("rtc.participant_joined")
            .iter()
            .any(|m| m["participant"] == bob.id.as_str() && m["user"] == "bob")
    })
    .await;
    // The later joiner offers; the server relays it untouched.
    let offer = json!({"description": {"type": "offer", "sdp": "v=0\r\n..."}});
    rpc(
        &bob.client,
        "rtc.signal",
        json!({"room": "call", "to": alice.id, "data": offer}),
    )
    .await
    .unwrap();
    wait("alice gets bob's signal", || {
        alice
            .saw("rtc.signal")
            .iter()
            .any(|m| m["from"] == bob.id.as_str() && m["room"] == "call" && m["data"] == offer)
    })
    .await;
    let cand = json!({"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}});
    rpc(
        &alice.client,
        "rtc.signal",
        json!({"room": "call", "to": bob.id, "data": cand}),
    )
    .await
    .unwrap();
    wait("bob gets alice's candidate", || {
        bob.saw("rtc.signal").iter().any(|m| m["data"] == cand)
    })
    .await;
    // The server holds no media for the room.
    let room = s.api_ok("room_get", json!({"room": "call"})).await;
    assert_eq!(room["room"]["transport"], "p2p");
    let users: Vec<&str> = room["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
    let list = s.api_ok("room_list", json!({})).await;
    assert_eq!(
        list["sfu"],
        json!({"rooms": 0, "participants": 0, "peers": 0})
    );

    // Bad signals.
    let carol = Member::connect(&s, "carol", "other").await;
    carol.join("other", false).await;
    for (who, req, what) in [
        (
            &carol,
            json!({"room": "call", "to": alice.id, "data": {}}),
            "sender not in the room",
        ),
        (
            &bob,
            json!({"room": "call", "to": carol.id, "data": {}}),
            "target not in the room",
        ),
        (
            &bob,
            json!({"room": "call", "to": alice.id, "data": "text"}),
            "data not an object",
        ),
        (
            &bob,
            json!({"room": "call", "to": alice.id, "data": {"sdp": "x".repeat(70_000)}}),
            "data over 64 KiB",
        ),
        (&bob, json!({"room": "call"}), "malformed"),
    ] {
        let err = rpc(&who.client, "rtc.signal", req).await.unwrap_err();
        assert_eq!(err.protocol_code(), Some(107), "{what}: {err}");
    }
    // SFU methods make no sense here.
    let err = rpc(
        &bob.client,
        "rtc.publish",
        json!({"room": "call", "sdp": bob.media.publish_offer().unwrap()}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.protocol_code(), Some(107), "{err}");
    assert!(err.to_string().contains("p2p"), "{err}");

    // Disconnecting leaves p2p rooms too, and the other is told.
    bob.client.close().await;
    wait("alice told bob left", || {
        alice
            .saw("rtc.participant_left")
            .iter()
            .any(|m| m["participant"] == bob.id.as_str() && m["reason"] == "disconnected")
    })
    .await;
    let room = s.api_ok("room_get", json!({"room": "call"})).await;
    assert_eq!(room["room"]["num_participants"], 1);
    s.stop().await;
}

#[tokio::test]
async fn auto_room_moves_to_the_sfu_when_a_third_joins() {
    let s = TestServer::dev(MEDIA).await;
    let alice = Member::connect(&s, "alice", "huddle").await;
    let bob = Member::connect(&s, "bob", "huddle").await;
    let carol = Member::connect(&s, "carol", "huddle").await;
    assert_eq!(alice.join("huddle", true).await["mode"], "p2p");
    assert_eq!(bob.join("huddle", true).await["mode"], "p2p");
    let before = s.api_ok("room_get", json!({"room": "huddle"})).await;
    let call = before["room"]["call"].as_str().unwrap().to_string();
    // Carol joins: SFU for her, rtc.mode with an offer for the two already
    // there; they answer and publish (the Member task does).
    let jc = carol.join("huddle", false).await;
    assert_eq!(jc["mode"], "sfu");
    assert!(jc["offer"].as_str().is_some());
    let mut there: Vec<&str> = jc["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    there.sort();
    let mut expected = vec![alice.id.as_str(), bob.id.as_str()];
    expected.sort();
    assert_eq!(there, expected);
    for m in [&alice, &bob] {
        wait("rtc.mode pushed", || {
            m.saw("rtc.mode")
                .iter()
                .any(|p| p["mode"] == "sfu" && p["room"] == "huddle")
        })
        .await;
    }
    wait("carol decodes alice's and bob's media", || {
        let st = carol.media.stats();
        st.frames("video") > 20 && st.frames("audio") > 20 && st.active_tracks() >= 4
    })
    .await;
    wait("alice decodes bob's media through the SFU", || {
        alice.media.stats().frames("video") > 10
    })
    .await;
    let after = s.api_ok("room_get", json!({"room": "huddle"})).await;
    assert_eq!(after["room"]["transport"], "sfu");
    assert_eq!(after["room"]["call"], call.as_str(), "same call throughout");
    let tracks: usize = after["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tracks"].as_array().unwrap().len())
        .sum();
    assert_eq!(tracks, 4);
    let list = s.api_ok("room_list", json!({})).await;
    assert_eq!(list["sfu"]["participants"], 3);
    // Peer-to-peer signaling is over for this room.
    let err = rpc(
        &alice.client,
        "rtc.signal",
        json!({"room": "huddle", "to": bob.id, "data": {}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.protocol_code(), Some(107));
    // Stats arrive every 2 s; let one round be recorded.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = recorded_events(s).await;
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["call"] == call.as_str())
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "room_started", "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "participant_joined").count(),
        3
    );
    assert_eq!(kinds.iter().filter(|k| **k == "mode_changed").count(), 1);
    assert_eq!(
        kinds.iter().filter(|k| **k == "track_published").count(),
        4,
        "{kinds:?}"
    );
    let samples = of_type(&events, "quality_sample");
    assert!(!samples.is_empty(), "quality samples recorded");
    assert!(samples.iter().all(|q| q["call"] == call.as_str()));
}

#[tokio::test]
async fn removal_deletion_and_mute_reach_the_clients() {
    let s = TestServer::dev(MEDIA).await;
    // Peer-to-peer: removal and deletion without SFU peers.
    let alice = Member::connect(&s, "alice", "p").await;
    let bob = Member::connect(&s, "bob", "p").await;
    alice.join("p", false).await;
    bob.join("p", false).await;
    s.api_ok(
        "room_remove_participant",
        json!({"room": "p", "participant": bob.id}),
    )
    .await;
    wait("bob told he was removed", || {
        !bob.saw("rtc.removed").is_empty()
    })
    .await;
    wait("alice told bob was removed", || {
        alice
            .saw("rtc.participant_left")
            .iter()
            .any(|m| m["participant"] == bob.id.as_str() && m["reason"] == "removed")
    })
    .await;
    s.api_ok("room_delete", json!({"room": "p"})).await;
    wait("alice told the room ended", || {
        alice.saw("rtc.room_ended").iter().any(|m| m["room"] == "p")
    })
    .await;
    assert_eq!(code(&s.api("room_get", json!({"room": "p"})).await), 104);
    // Mute is an SFU thing.
    s.api_ok("room_create", json!({"room": "p2"})).await;
    alice.join("p2", false).await;
    let r = s
        .api(
            "room_mute_track",
            json!({"room": "p2", "track": "TR-1", "muted": true}),
        )
        .await;
    assert_eq!(code(&r), 107, "{r}");

    // SFU: mute, removal and deletion with media.
    s.api_ok("room_create", json!({"room": "s", "mode": "sfu"}))
        .await;
    let carol = Member::connect(&s, "carol", "s").await;
    let dave = Member::connect(&s, "dave", "s").await;
    carol.join("s", true).await;
    dave.join("s", false).await;
    wait("dave receives carol's video", || {
        dave.media.stats().frames("video") > 5
    })
    .await;
    let room = s.api_ok("room_get", json!({"room": "s"})).await;
    let carol_tracks = room["room"]["participants"][0]["tracks"].clone();
    assert_eq!(room["room"]["participants"][0]["user"], "carol");
    let video = carol_tracks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "video")
        .expect("carol's video track")["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.api_ok(
        "room_mute_track",
        json!({"room": "s", "track": video, "muted": true}),
    )
    .await;
    for m in [&carol, &dave] {
        wait("rtc.track_muted", || {
            m.saw("rtc.track_muted")
                .iter()
                .any(|p| p["track"] == video.as_str() && p["muted"] == true)
        })
        .await;
    }
    let room = s.api_ok("room_get", json!({"room": "s"})).await;
    assert!(
        room["room"]["participants"][0]["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == video.as_str() && t["muted"] == true)
    );
    let r = s
        .api(
            "room_mute_track",
            json!({"room": "s", "track": "TR-nope", "muted": true}),
        )
        .await;
    assert_eq!(code(&r), 104, "{r}");
    s.api_ok(
        "room_remove_participant",
        json!({"room": "s", "participant": dave.id}),
    )
    .await;
    wait("dave removed", || !dave.saw("rtc.removed").is_empty()).await;
    wait("carol told dave was removed", || {
        carol
            .saw("rtc.participant_left")
            .iter()
            .any(|m| m["reason"] == "removed")
    })
    .await;
    s.api_ok("room_delete", json!({"room": "s"})).await;
    wait("carol told the room ended", || {
        !carol.saw("rtc.room_ended").is_empty()
    })
    .await;
    // The SFU let go of both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list = s.api_ok("room_list", json!({})).await;
        if list["sfu"]["participants"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SFU peers left over: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Leaving a deleted room is a bad request, not a crash.
    let err = rpc(&carol.client, "rtc.leave", json!({"room": "s"}))
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(107));
    s.stop().await;
}

#[tokio::test]
async fn empty_rooms_end_and_call_events_are_recorded() {
    let s = TestServer::dev(MEDIA).await;
    s.api_ok(
        "room_create",
        json!({"room": "brief", "empty_timeout": "1s"}),
    )
    .await;
    let alice = Member::connect(&s, "alice", "brief").await;
    alice.join("brief", false).await;
    rpc(&alice.client, "rtc.leave", json!({"room": "brief"}))
        .await
        .unwrap();
    // Still there right after the leave, gone after the timeout.
    let brief = s.api_ok("room_get", json!({"room": "brief"})).await;
    let call = brief["room"]["call"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while code(&s.api("room_get", json!({"room": "brief"})).await) != 104 {
        assert!(tokio::time::Instant::now() < deadline, "room did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A room made by a join ends with its last leave; joining again starts
    // a new call.
    alice.join("adhoc", false).await;
    let first = s.api_ok("room_get", json!({"room": "adhoc"})).await["room"]["call"].clone();
    rpc(&alice.client, "rtc.leave", json!({"room": "adhoc"}))
        .await
        .unwrap();
    assert_eq!(
        code(&s.api("room_get", json!({"room": "adhoc"})).await),
        104
    );
    alice.join("adhoc", false).await;
    let second = s.api_ok("room_get", json!({"room": "adhoc"})).await["room"]["call"].clone();
    assert_ne!(first, second);

    let events = recorded_events(s).await;
    let kinds = |c: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["call"] == c)
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        kinds(&call),
        [
            "room_started",
            "participant_joined",
            "participant_left",
            "room_finished"
        ]
    );
    assert_eq!(
        kinds(first.as_str().unwrap()),
        [
            "room_started",
            "participant_joined",
            "participant_left",
            "room_finished"
        ]
    );
    let joined = events
        .iter()
        .find(|e| e["call"] == call.as_str() && e["type"] == "participant_joined")
        .unwrap();
    assert_eq!(joined["user"], "alice");
    assert_eq!(joined["room"], "brief");
    let left = events
        .iter()
        .find(|e| e["call"] == call.as_str() && e["type"] == "participant_left")
        .unwrap();
    assert_eq!(left["reason"], "left");
}

#[tokio::test]
async fn join_without_grants_is_refused_and_creates_no_room() {
    // With grants required, a token without room grants may not join,
    let s = TestServer::with_config(&format!(
        "{MEDIA}[channel.defaults]\nallow_subscribe_for_client = true\n"
    ))
    .await;
    let (c, e) = s
        .connect_with(ClientOptions::with_token(token("erin")))
        .await;
    let erin = Member::with(c, e, "r").await;
    let err = rpc(&erin.client, "rtc.join", json!({"room": "r"}))
        .await
        .unwrap_err();
    assert_eq!(err.protocol_code(), Some(103));
    // and the refused join leaves no room behind.
    let list = s.api_ok("room_list", json!({})).await;
    assert_eq!(list["rooms"], json!([]));
    s.stop().await;
}
