//! Call logs (`call_list`, `call_get`) from real room sessions, across a
//! restart, and webhooks delivered to a real local HTTP receiver (signatures
//! verified, retries observed).

use crate::common::*;
use crate::rtc::rpc;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_proto::codec::Encoding;

/// Polls `call_list` for `room` until its newest call has ended.
async fn ended_call(s: &TestServer, room: &str) -> Value {
    for _ in 0..100 {
        let list = s.api_ok("call_list", json!({"room": room})).await;
        if list["calls"][0]["ended"] == true {
            return list["calls"][0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no ended call in room {room}");
}

/// Alice and bob join `room` (peer-to-peer: no media needed), bob leaves
/// after a moment, then alice.
async fn session(s: &TestServer, room: &str) {
    let (alice, _a) = s.connect("alice", Encoding::Json).await;
    let (bob, _b) = s.connect("bob", Encoding::Json).await;
    rpc(&alice, "rtc.join", json!({"room": room}))
        .await
        .unwrap();
    rpc(&bob, "rtc.join", json!({"room": room})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rpc(&bob, "rtc.leave", json!({"room": room})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    rpc(&alice, "rtc.leave", json!({"room": room}))
        .await
        .unwrap();
}

#[tokio::test]
async fn call_get_lists_participants_and_survives_restart() {
    let mut s = TestServer::dev("").await;
    session(&s, "standup").await;
    let (carol, _c) = s.connect("carol", Encoding::Json).await;
    rpc(&carol, "rtc.join", json!({"room": "solo"}))
        .await
        .unwrap();
    rpc(&carol, "rtc.leave", json!({"room": "solo"}))
        .await
        .unwrap();

    let summary = ended_call(&s, "standup").await;
    let call = summary["call"].as_str().unwrap().to_string();
    let got = s.api_ok("call_get", json!({"call": call})).await["call"].clone();
    assert_eq!(got, summary);
    let people = got["participants"].as_array().unwrap();
    let users: Vec<&str> = people.iter().map(|p| p["user"].as_str().unwrap()).collect();
    assert_eq!(users, vec!["alice", "bob"], "{got}");
    for p in people {
        let (joined, left) = (
            p["joined_at_ms"].as_i64().unwrap(),
            p["left_at_ms"].as_i64().unwrap(),
        );
        assert!(left >= joined, "{p}");
        assert_eq!(p["duration_ms"].as_i64().unwrap(), left - joined);
        assert_eq!(p["left_reason"], "left");
    }
    // Bob stayed ~300 ms, alice ~500 ms; the call lasted as long as alice.
    assert!(people[1]["duration_ms"].as_i64().unwrap() >= 250, "{got}");
    assert!(
        people[0]["duration_ms"].as_i64().unwrap() > people[1]["duration_ms"].as_i64().unwrap()
    );
    let duration = got["duration_ms"].as_i64().unwrap();
    assert!(
        duration >= people[0]["duration_ms"].as_i64().unwrap(),
        "{got}"
    );
    assert_eq!(
        got["ended_at_ms"].as_i64().unwrap() - duration,
        got["started_at_ms"].as_i64().unwrap()
    );
    assert!(got["ringing"].is_null());

    // Filter by user.
    let carols = s.api_ok("call_list", json!({"user": "carol"})).await;
    let rooms: Vec<&str> = carols["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["room"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, vec!["solo"]);
    let bobs = s.api_ok("call_list", json!({"user": "bob"})).await;
    assert_eq!(bobs["calls"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["calls"][0]["call"], call);
    let all = s.api_ok("call_list", json!({"limit": 1})).await;
    assert_eq!(all["calls"].as_array().unwrap().len(), 1);

    // Rebuilt from the event log after a restart.
    s.restart().await;
    let again = s.api_ok("call_get", json!({"call": call})).await["call"].clone();
    assert_eq!(again, got);
    let carols_again = s.api_ok("call_list", json!({"user": "carol"})).await;
    assert_eq!(carols_again, carols);
    s.stop().await;
}

/// What the receiver saw: (headers, body) per request.
type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A local webhook receiver answering 500 to the first `fail_first` attempts
/// of every event id, then 200.
async fn receiver(fail_first: usize) -> (String, Seen) {
    let seen: Seen = Default::default();
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (seen, attempts) = (s2.clone(), attempts.clone());
            async move {
                let id = headers
                    .get("switchboard-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push((headers, body.to_vec()));
                let mut a = attempts.lock().unwrap();
                let n = a.entry(id).or_default();
                *n += 1;
                if *n <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// Checks `Switchboard-Signature: t=…,v1=hex(HMAC-SHA256(secret, "t.body"))`.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let sig = headers
        .get("switchboard-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signature header");
    let (t, v1) = sig
        .split_once(",v1=")
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v)))
        .expect("t=…,v1=…");
    let t: i64 = t.parse().unwrap();
    assert!((now() - t).abs() < 60, "timestamp {t}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let expected: String = aws_lc_rs::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "signature");
    // A wrong secret does not match.
    let other = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"other");
    assert_ne!(aws_lc_rs::hmac::sign(&other, &msg).as_ref(), hex(v1));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn bodies(seen: &Seen) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect()
}

async fn wait_for(seen: &Seen, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..200 {
        let b = bodies(seen);
        if pred(&b) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("receiver saw {:?}", bodies(seen));
}

#[tokio::test]
async fn webhooks_are_signed_and_carry_room_events() {
    let (url, seen) = receiver(0).await;
    let s = TestServer::dev(&format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret = \"hook-secret\"\n"
    ))
    .await;
    session(&s, "weekly").await;
    let kinds = |b: &[Value]| -> Vec<String> {
        b.iter()
            .map(|v| v["type"].as_str().unwrap().to_string())
            .collect()
    };
    let got = wait_for(&seen, |b| kinds(b).iter().any(|k| k == "room_finished")).await;
    let k = kinds(&got);
    for want in [
        "room_started",
        "participant_joined",
        "participant_left",
        "room_finished",
    ] {
        assert!(k.iter().any(|x| x == want), "missing {want} in {k:?}");
    }
    assert_eq!(k.iter().filter(|x| *x == "participant_joined").count(), 2);
    for (headers, body) in seen.lock().unwrap().iter() {
        verify("hook-secret", headers, body);
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(headers["switchboard-event-id"].to_str().unwrap(), v["id"]);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(v["event"]["type"], v["type"]);
        assert_eq!(v["event"]["room"], "weekly");
        assert!(v["at_ms"].as_i64().unwrap() > 0);
    }
    let joined = got
        .iter()
        .find(|v| v["type"] == "participant_joined")
        .unwrap();
    assert!(["alice", "bob"].contains(&joined["event"]["user"].as_str().unwrap()));
    // Ids are unique per event.
    let mut ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len());
    s.stop().await;
}

#[tokio::test]
async fn failed_webhook_attempts_are_retried() {
    // Fails twice per event, succeeds on the third attempt.
    let (url, seen) = receiver(2).await;
    // Never succeeds within two attempts: given up, counted.
    let (dead_url, dead_seen) = receiver(usize::MAX).await;
    let s = TestServer::dev(&format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret = \"s1\"\nevents = [\"participant_joined\"]\nbackoff = \"100ms\"\nmax_attempts = 4\n\
         [[webhooks]]\nurl = \"{dead_url}\"\nsecret = \"s2\"\nevents = [\"participant_joined\"]\nbackoff = \"50ms\"\nmax_attempts = 2\n"
    ))
    .await;
    let (alice, _a) = s.connect("alice", Encoding::Json).await;
    rpc(&alice, "rtc.join", json!({"room": "retry"}))
        .await
        .unwrap();

    let got = wait_for(&seen, |b| b.len() >= 3).await;
    assert!(got.iter().all(|v| v["type"] == "participant_joined"));
    assert!(
        got.iter().all(|v| v["id"] == got[0]["id"]),
        "one event, three attempts"
    );
    for (headers, body) in seen.lock().unwrap().iter() {
        verify("s1", headers, body);
    }
    // Delivered on the third attempt: no fourth.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(bodies(&seen).len(), 3);

    wait_for(&dead_seen, |b| b.len() >= 2).await;
    let mut failed = false;
    for _ in 0..50 {
        let metrics = reqwest::get(s.http("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics
            .lines()
            .any(|l| l.starts_with("switchboard_webhook_deliveries_total{result=\"failed\"}"))
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "a given-up delivery is counted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies(&dead_seen).len(), 2, "max_attempts respected");
    s.stop().await;
}

#[tokio::test]
async fn bad_webhook_config_is_refused() {
    let dir = temp_dir("hooks");
    for (text, needle) in [
        (
            "[[webhooks]]\nurl = \"ftp://x\"\nsecret = \"s\"\n",
            "webhooks[0].url",
        ),
        (
            "[[webhooks]]\nurl = \"http://x\"\nsecret = \"\"\n",
            "webhooks[0].secret",
        ),
        (
            "[[webhooks]]\nurl = \"http://x\"\nsecret = \"s\"\nevents = [\"nope\"]\n",
            "nope",
        ),
        ("[[webhooks]]\nurl = \"http://x\"\n", "secret"),
    ] {
        let e = switchboard_server::config::Config::load(&switchboard_server::config::Sources {
            dev: true,
            file: Some(("t.toml".into(), text.into())),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains(needle), "{needle}: {e}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A one-shot HTTPS webhook receiver with a certificate for `localhost`
/// issued by a fresh CA; returns its URL, the CA's PEM and the bodies seen.
async fn tls_receiver() -> (String, String, Arc<Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Value>>> = Default::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), s2.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Minimal HTTP/1.1: headers, then Content-Length bytes of body.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_start = loop {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                if let Ok(v) = serde_json::from_slice(&buf[body_start..body_start + len]) {
                    seen.lock().unwrap().push(v);
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}/hook"), ca.pem(), seen)
}

#[tokio::test]
async fn webhooks_over_https_trust_the_configured_ca() {
    let (url, ca_pem, seen) = tls_receiver().await;
    let dir = temp_dir("hook-ca");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    // Without the CA the endpoint is not trusted: nothing is delivered.
    let (untrusted_url, _, untrusted_seen) = tls_receiver().await;
    let s = TestServer::dev(&format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret = \"s\"\nevents = [\"participant_joined\"]\nca_file = \"{}\"\n\
         [[webhooks]]\nurl = \"{untrusted_url}\"\nsecret = \"s\"\nevents = [\"participant_joined\"]\nmax_attempts = 1\n",
        ca_file.display()
    ))
    .await;
    let (alice, _a) = s.connect("alice", Encoding::Json).await;
    rpc(&alice, "rtc.join", json!({"room": "tls"}))
        .await
        .unwrap();
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "participant_joined");
    assert_eq!(got[0]["event"]["room"], "tls");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(untrusted_seen.lock().unwrap().is_empty());
    s.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A participant with real media: a messaging connection and a str0m media
/// client that answers the SFU's offers and publishes audio and video.
async fn media_member(
    s: &TestServer,
    user: &str,
    room: &str,
) -> (
    switchboard_client::Client,
    Arc<switchboard_client::media::MediaClient>,
) {
    let m = crate::rtc::Member::connect(s, user, room).await;
    let joined = m.join(room, true).await;
    assert_eq!(joined["mode"], "sfu");
    (m.client, m.media)
}

#[tokio::test]
async fn sfu_call_log_has_tracks_and_quality_percentiles() {
    let s = TestServer::dev(
        "[media]\nudp_addr = \"127.0.0.1:0\"\nconnect_timeout = \"5s\"\nidle_timeout = \"5s\"\n",
    )
    .await;
    let room = s
        .api_ok("room_create", json!({"room": "media-q", "mode": "sfu"}))
        .await;
    let call = room["room"]["call"].as_str().unwrap().to_string();
    let (_alice, _am) = media_member(&s, "alice", "media-q").await;
    let (_bob, _bm) = media_member(&s, "bob", "media-q").await;

    // SFU stats arrive every stats_interval (2 s): wait for two samples of
    // each participant.
    let mut got = Value::Null;
    for _ in 0..200 {
        got = s.api_ok("call_get", json!({"call": call})).await["call"].clone();
        let sampled = got["participants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["quality"]["samples"].as_u64().unwrap_or(0) >= 2)
            .count();
        if sampled == 2 && got["tracks"].as_array().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tracks = got["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 4, "two audio and two video tracks: {got}");
    for kind in ["audio", "video"] {
        assert_eq!(
            tracks.iter().filter(|t| t["kind"] == kind).count(),
            2,
            "{got}"
        );
    }
    for p in got["participants"].as_array().unwrap() {
        let q = &p["quality"];
        assert!(q["samples"].as_u64().unwrap() >= 2, "{got}");
        let loss = &q["loss"];
        for k in ["p50", "p90", "p99", "max"] {
            let v = loss[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "loss {k} {v}");
        }
        assert!(loss["p50"].as_f64() <= loss["p99"].as_f64());
    }
    assert!(got["quality"]["samples"].as_u64().unwrap() >= 4, "{got}");
    // RTT (from RTCP) and jitter are measured over loopback.
    assert!(got["quality"]["rtt_ms"]["p50"].as_f64().is_some(), "{got}");
    assert!(
        got["quality"]["jitter_ms"]["p90"].as_f64().is_some(),
        "{got}"
    );
    assert_eq!(got["mode"], "sfu");
    assert_eq!(got["ended"], false);

    // Ending the room ends the call: stays and tracks close at that time.
    s.api_ok("room_delete", json!({"room": "media-q"})).await;
    let mut done = Value::Null;
    for _ in 0..100 {
        done = s.api_ok("call_get", json!({"call": call})).await["call"].clone();
        if done["ended"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["ended"], true, "{done}");
    let end = done["ended_at_ms"].as_i64().unwrap();
    for t in done["tracks"].as_array().unwrap() {
        assert!(
            t["unpublished_at_ms"].as_i64().is_some_and(|u| u <= end),
            "{t}"
        );
    }
    for p in done["participants"].as_array().unwrap() {
        assert!(p["left_at_ms"].as_i64().is_some_and(|l| l <= end), "{p}");
    }
    s.stop().await;
}
