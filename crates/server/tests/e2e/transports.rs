//! HTTP-streaming and SSE (bidirectional emulation with `/emulation`) and
//! the unidirectional transports (uni_sse, uni_http_stream, uni_websocket),
//! spoken raw over HTTP and WebSocket.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_auth::ConnectionTokenSpec;
use switchboard_proto::client::{self, Command, Reply};
use switchboard_proto::codec::{self, Encoding};
use tokio_tungstenite::tungstenite::Message;

/// How a response body is framed.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// JSON messages separated by newlines.
    Lines,
    /// Server-Sent Events.
    Sse,
    /// Varint-delimited protobuf messages.
    Proto,
}

/// Reads messages from a streaming HTTP response.
struct BodyReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    framing: Framing,
    ended: bool,
}

impl BodyReader {
    fn new(resp: reqwest::Response, framing: Framing) -> Self {
        assert!(resp.status().is_success(), "status {}", resp.status());
        Self {
            resp,
            buf: Vec::new(),
            framing,
            ended: false,
        }
    }

    /// Reads one more chunk; false at the end of the body.
    async fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), self.resp.chunk())
            .await
            .expect("data within 5 s")
            .expect("body read");
        match chunk {
            Some(c) => {
                self.buf.extend_from_slice(&c);
                true
            }
            None => {
                self.ended = true;
                false
            }
        }
    }

    /// The next message's bytes (JSON text or one protobuf message with its
    /// length prefix); `None` at the end of the body.
    async fn next_raw(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(msg) = self.split() {
                return Some(msg);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "trailing bytes: {:?}", self.buf);
                return None;
            }
        }
    }

    fn split(&mut self) -> Option<Vec<u8>> {
        match self.framing {
            Framing::Lines => {
                let end = self.buf.iter().position(|b| *b == b'\n')?;
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                Some(line[..line.len() - 1].to_vec())
            }
            Framing::Sse => {
                let text = String::from_utf8(self.buf.clone()).expect("UTF-8 event stream");
                let end = text.find("\n\n")?;
                let event: String = text[..end].to_string();
                self.buf.drain(..end + 2);
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                assert!(!data.is_empty(), "event without data: {event:?}");
                Some(data.join("\n").into_bytes())
            }
            Framing::Proto => {
                let mut len: usize = 0;
                let mut shift = 0;
                let mut i = 0;
                loop {
                    let b = *self.buf.get(i)?;
                    len |= usize::from(b & 0x7f) << shift;
                    shift += 7;
                    i += 1;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                if self.buf.len() < i + len {
                    return None;
                }
                Some(self.buf.drain(..i + len).collect())
            }
        }
    }

    /// The next message as JSON (JSON framings).
    async fn next_json(&mut self) -> Value {
        let raw = self.next_raw().await.expect("a message before the end");
        serde_json::from_slice(&raw)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw)))
    }

    /// The next reply (bidirectional emulation, any framing).
    async fn next_reply(&mut self) -> Reply {
        let raw = self.next_raw().await.expect("a reply before the end");
        let enc = if self.framing == Framing::Proto {
            Encoding::Protobuf
        } else {
            Encoding::Json
        };
        let mut replies = codec::decode_replies(enc, &raw).expect("valid reply");
        assert_eq!(replies.len(), 1);
        replies.remove(0)
    }

    /// The next reply that is not a ping.
    async fn next_non_ping(&mut self) -> Reply {
        loop {
            let r = self.next_reply().await;
            if r != Reply::default() {
                return r;
            }
        }
    }

    /// The next JSON message that is not a ping (`{}`).
    async fn next_json_non_ping(&mut self) -> Value {
        loop {
            let v = self.next_json().await;
            if v != json!({}) {
                return v;
            }
        }
    }

    /// Asserts that the body ends (after skipping pings).
    async fn expect_end(&mut self) {
        while let Some(raw) = self.next_raw().await {
            assert!(
                raw == b"{}" || raw == [0],
                "expected the end, got {}",
                String::from_utf8_lossy(&raw)
            );
        }
    }
}

fn json_cmd(cmd: Value) -> String {
    serde_json::to_string(&cmd).unwrap()
}

/// Sends one frame of commands to an emulated session; returns the status.
async fn emulate_json(s: &TestServer, session: &str, node: &str, data: &str) -> u16 {
    reqwest::Client::new()
        .post(s.http("/emulation"))
        .header("Content-Type", "application/json")
        .body(json!({"session": session, "node": node, "data": data}).to_string())
        .send()
        .await
        .expect("emulation request")
        .status()
        .as_u16()
}

fn pb_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag << 3 | 2);
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// Protobuf `EmulationRequest {node = 1, session = 2, data = 3}`.
async fn emulate_proto(s: &TestServer, session: &str, node: &str, data: &[u8]) -> u16 {
    let mut body = Vec::new();
    pb_field(&mut body, 1, node.as_bytes());
    pb_field(&mut body, 2, session.as_bytes());
    pb_field(&mut body, 3, data);
    reqwest::Client::new()
        .post(s.http("/emulation"))
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("emulation request")
        .status()
        .as_u16()
}

fn pb_cmd(cmd: Command) -> Vec<u8> {
    codec::encode_command(Encoding::Protobuf, &cmd).to_vec()
}

async fn open_http_stream(s: &TestServer, user: &str, encoding: Encoding) -> BodyReader {
    let connect = Command {
        id: 1,
        connect: Some(client::ConnectRequest {
            token: token(user),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (ct, framing) = match encoding {
        Encoding::Json => ("application/json", Framing::Lines),
        Encoding::Protobuf => ("application/octet-stream", Framing::Proto),
    };
    let resp = reqwest::Client::new()
        .post(s.http("/connection/http_stream"))
        .header("Content-Type", ct)
        .body(codec::encode_command(encoding, &connect).to_vec())
        .send()
        .await
        .expect("http_stream request");
    BodyReader::new(resp, framing)
}

#[tokio::test]
async fn http_stream_json_session_subscribes_publishes_and_receives_via_emulation() {
    let s = TestServer::dev("").await;
    let mut stream = open_http_stream(&s, "alice", Encoding::Json).await;
    assert_eq!(
        stream.resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let reply = stream.next_reply().await;
    assert_eq!(reply.id, 1);
    let connect = reply.connect.expect("connect reply");
    assert!(!connect.client.is_empty());
    assert!(!connect.session.is_empty(), "session id for /emulation");
    assert!(!connect.node.is_empty(), "node id for /emulation");
    let (session, node) = (connect.session, connect.node);

    let sub = json_cmd(json!({"id": 2, "subscribe": {"channel": "chat"}}));
    assert_eq!(emulate_json(&s, &session, &node, &sub).await, 204);
    let reply = stream.next_non_ping().await;
    assert_eq!(reply.id, 2);
    assert!(reply.subscribe.is_some(), "{reply:?}");

    // A publication through the server API arrives on the stream.
    s.api_ok("publish", json!({"channel": "chat", "data": {"n": 1}}))
        .await;
    let push = stream.next_non_ping().await.push.expect("push");
    assert_eq!(push.channel, "chat");
    let p = push.publication.expect("publication");
    assert_eq!(
        serde_json::from_slice::<Value>(&p.data).unwrap(),
        json!({"n": 1})
    );

    // Several commands in one emulation request; replies in order.
    let frame = [
        json_cmd(json!({"id": 3, "publish": {"channel": "chat", "data": {"n": 2}}})),
        json_cmd(json!({"id": 4, "presence": {"channel": "chat"}})),
        json_cmd(json!({"id": 5, "history": {"channel": "chat", "limit": 10}})),
    ]
    .join("\n");
    assert_eq!(emulate_json(&s, &session, &node, &frame).await, 204);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let r = stream.next_non_ping().await;
        match r.id {
            3 => assert!(r.publish.is_some()),
            4 => {
                let presence = r.presence.expect("presence").presence;
                assert!(presence.values().any(|i| i.user == "alice"));
            }
            5 => assert_eq!(r.history.expect("history").publications.len(), 2),
            0 => assert_eq!(r.push.unwrap().publication.unwrap().offset, 2),
            other => panic!("unexpected reply {other}"),
        }
        seen.push(r.id);
    }

    // Unknown session or node: 404; malformed: 400.
    assert_eq!(emulate_json(&s, "no-such-session", &node, &sub).await, 404);
    assert_eq!(emulate_json(&s, &session, "other-node", &sub).await, 404);
    let status = reqwest::Client::new()
        .post(s.http("/emulation"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test]
async fn http_stream_protobuf_session_works_with_varint_framing() {
    let s = TestServer::dev("").await;
    let mut stream = open_http_stream(&s, "bob", Encoding::Protobuf).await;
    assert_eq!(
        stream.resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    let connect = stream.next_reply().await.connect.expect("connect reply");
    let (session, node) = (connect.session, connect.node);
    let sub = pb_cmd(Command {
        id: 2,
        subscribe: Some(client::SubscribeRequest {
            channel: "chat".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(emulate_proto(&s, &session, &node, &sub).await, 204);
    assert_eq!(stream.next_non_ping().await.id, 2);
    s.api_ok("publish", json!({"channel": "chat", "data": {"n": 7}}))
        .await;
    let p = stream
        .next_non_ping()
        .await
        .push
        .and_then(|p| p.publication)
        .expect("publication");
    assert_eq!(
        serde_json::from_slice::<Value>(&p.data).unwrap(),
        json!({"n": 7})
    );
    let rpc = pb_cmd(Command {
        id: 3,
        presence_stats: Some(client::PresenceStatsRequest {
            channel: "chat".into(),
        }),
        ..Default::default()
    });
    assert_eq!(emulate_proto(&s, &session, &node, &rpc).await, 204);
    let stats = stream.next_non_ping().await.presence_stats.expect("stats");
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
    assert_eq!(emulate_proto(&s, "nope", &node, &rpc).await, 404);
    s.stop().await;
}

#[tokio::test]
async fn sse_emulation_connects_via_query_and_ends_with_a_disconnect_push() {
    let s = TestServer::dev("").await;
    let connect = json_cmd(json!({"id": 1, "connect": {"token": token("carol")}}));
    let resp = reqwest::Client::new()
        .get(s.http("/connection/sse"))
        .query(&[("cf_connect", connect.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = BodyReader::new(resp, Framing::Sse);
    let connect = stream.next_reply().await.connect.expect("connect reply");
    let (session, node) = (connect.session, connect.node);
    let sub = json_cmd(json!({"id": 2, "subscribe": {"channel": "news"}}));
    assert_eq!(emulate_json(&s, &session, &node, &sub).await, 204);
    assert!(stream.next_non_ping().await.subscribe.is_some());
    // A payload with a newline inside still arrives intact.
    let resp = reqwest::Client::new()
        .post(s.http("/api/publish"))
        .header("X-API-Key", API_KEY)
        .body("{\"channel\":\"news\",\"data\":{\"a\":\n1}}")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let p = stream
        .next_non_ping()
        .await
        .push
        .and_then(|p| p.publication)
        .expect("publication");
    assert_eq!(
        serde_json::from_slice::<Value>(&p.data).unwrap(),
        json!({"a": 1})
    );

    // The server disconnects: a disconnect push, then the stream ends, and
    // the session is gone.
    s.api_ok(
        "disconnect",
        json!({"user": "carol", "disconnect": {"code": 4001, "reason": "bye"}}),
    )
    .await;
    let d = stream
        .next_non_ping()
        .await
        .push
        .and_then(|p| p.disconnect)
        .expect("disconnect push");
    assert_eq!((d.code, d.reason.as_str()), (4001, "bye"));
    stream.expect_end().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(emulate_json(&s, &session, &node, &sub).await, 404);

    // Without cf_connect: 400.
    let status = reqwest::get(s.http("/connection/sse"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test]
async fn emulated_pings_are_answered_through_emulation_or_the_session_ends() {
    let s = TestServer::dev("[client]\nping_interval = \"1s\"\npong_timeout = \"600ms\"\n").await;
    // Answering pings keeps the session.
    let mut stream = open_http_stream(&s, "dave", Encoding::Json).await;
    let connect = stream.next_reply().await.connect.expect("connect reply");
    assert!(connect.pong);
    for _ in 0..3 {
        assert_eq!(stream.next_reply().await, Reply::default(), "a ping");
        assert_eq!(
            emulate_json(&s, &connect.session, &connect.node, "{}").await,
            204
        );
    }
    // Not answering ends it with "no pong".
    let mut silent = open_http_stream(&s, "erin", Encoding::Json).await;
    silent.next_reply().await.connect.expect("connect reply");
    let d = silent
        .next_non_ping()
        .await
        .push
        .and_then(|p| p.disconnect)
        .expect("disconnect push");
    assert_eq!(d.code, 3012);
    silent.expect_end().await;
    s.stop().await;
}

#[tokio::test]
async fn emulation_session_is_forgotten_when_the_client_goes_away() {
    let s = TestServer::dev("[client]\nping_interval = \"1s\"\npong_timeout = \"600ms\"\n").await;
    let mut stream = open_http_stream(&s, "frank", Encoding::Json).await;
    let connect = stream.next_reply().await.connect.expect("connect reply");
    drop(stream);
    // Gone at the latest when the next ping cannot be written.
    let mut status = 0;
    for _ in 0..40 {
        status = emulate_json(&s, &connect.session, &connect.node, "{}").await;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 404);
    s.stop().await;
}

fn channels_token(user: &str, channels: &[&str]) -> String {
    token_spec(ConnectionTokenSpec {
        user: user.into(),
        ttl: Some(Duration::from_secs(3600)),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    })
}

#[tokio::test]
async fn uni_sse_follows_token_channels_with_bare_pushes_and_pings_without_pongs() {
    let s = TestServer::dev("[client]\nping_interval = \"1s\"\npong_timeout = \"600ms\"\n").await;
    let req = json!({"token": channels_token("gina", &["news"])}).to_string();
    let resp = reqwest::Client::new()
        .get(s.http("/connection/uni_sse"))
        .query(&[("cf_connect", req.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = BodyReader::new(resp, Framing::Sse);
    let first = stream.next_json().await;
    let connect = &first["connect"];
    assert!(connect["client"].is_string(), "{first}");
    assert!(connect["session"].is_string(), "{first}");
    assert_eq!(connect["ping"], 1);
    assert!(connect.get("pong").is_none(), "no pongs on uni: {first}");
    assert!(connect["subs"]["news"].is_object(), "{first}");

    s.api_ok("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    let push = stream.next_json_non_ping().await;
    assert_eq!(push["channel"], "news", "{push}");
    assert_eq!(push["pub"]["data"], json!({"n": 1}));
    assert_eq!(push["pub"]["offset"], 1);
    assert!(push.get("push").is_none() && push.get("id").is_none());
    // Pings keep coming; no pong is expected (well past the pong timeout).
    for _ in 0..3 {
        assert_eq!(stream.next_json().await, json!({}));
    }
    s.api_ok("publish", json!({"channel": "news", "data": {"n": 2}}))
        .await;
    let push = stream.next_json_non_ping().await;
    assert_eq!(push["pub"]["offset"], 2);

    // POST with the connect request as the body works too.
    let resp = reqwest::Client::new()
        .post(s.http("/connection/uni_sse"))
        .body(json!({"token": channels_token("gina", &["news"])}).to_string())
        .send()
        .await
        .unwrap();
    let mut post = BodyReader::new(resp, Framing::Sse);
    assert!(post.next_json().await["connect"].is_object());
    s.stop().await;
}

#[tokio::test]
async fn uni_http_stream_server_side_subscribe_recovery_and_disconnect_push() {
    let s = TestServer::dev("").await;
    let open = |body: Value| {
        let url = s.http("/connection/uni_http_stream");
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            BodyReader::new(resp, Framing::Lines)
        }
    };
    let mut stream = open(json!({"token": channels_token("hank", &["feed"])})).await;
    let connect = stream.next_json().await;
    let epoch = connect["connect"]["subs"]["feed"]["epoch"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // A server-side subscription made through the API arrives as a push.
    s.api_ok("subscribe", json!({"user": "hank", "channel": "extra"}))
        .await;
    let push = stream.next_json_non_ping().await;
    assert_eq!(push["channel"], "extra");
    assert!(push["subscribe"].is_object(), "{push}");
    s.api_ok("publish", json!({"channel": "feed", "data": {"n": 1}}))
        .await;
    let push = stream.next_json_non_ping().await;
    assert_eq!(push["pub"]["offset"], 1);
    let epoch = if epoch.is_empty() {
        // The epoch comes with the subscribe result of durable channels.
        s.api_ok("history", json!({"channel": "feed", "limit": 0}))
            .await["epoch"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        epoch
    };

    // The server disconnects: a disconnect push as the last line.
    s.api_ok("disconnect", json!({"user": "hank"})).await;
    let last = stream.next_json_non_ping().await;
    assert_eq!(last["disconnect"]["code"], 3503, "{last}");
    stream.expect_end().await;

    // Missed publications are recovered in the connect push.
    for n in 2..=3 {
        s.api_ok("publish", json!({"channel": "feed", "data": {"n": n}}))
            .await;
    }
    let mut again = open(json!({
        "token": channels_token("hank", &["feed"]),
        "subs": {"feed": {"recover": true, "offset": 1, "epoch": epoch}},
    }))
    .await;
    let connect = again.next_json().await;
    let feed = &connect["connect"]["subs"]["feed"];
    assert_eq!(feed["recovered"], true, "{connect}");
    let offsets: Vec<u64> = feed["publications"]
        .as_array()
        .expect("recovered publications")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![2, 3]);

    // A bad token: a disconnect push and the end.
    let mut bad = open(json!({"token": "not-a-jwt"})).await;
    assert_eq!(bad.next_json().await["disconnect"]["code"], 3500);
    bad.expect_end().await;
    // Malformed connect request.
    let resp = reqwest::Client::new()
        .post(s.http("/connection/uni_http_stream"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    let mut malformed = BodyReader::new(resp, Framing::Lines);
    assert_eq!(malformed.next_json().await["disconnect"]["code"], 3501);
    malformed.expect_end().await;
    s.stop().await;
}

#[tokio::test]
async fn uni_websocket_pushes_and_ignores_client_messages() {
    let s = TestServer::dev("").await;
    let url = format!("ws://{}/connection/uni_websocket", s.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let req = json!({"token": channels_token("ivy", &["room"])}).to_string();
    ws.send(Message::text(req)).await.unwrap();
    let connect = next(&mut ws).await;
    assert!(connect["connect"]["subs"]["room"].is_object(), "{connect}");
    // Commands are not accepted: ignored, the connection stays.
    ws.send(Message::text(
        json!({"id": 1, "subscribe": {"channel": "other"}}).to_string(),
    ))
    .await
    .unwrap();
    s.api_ok(
        "publish",
        json!({"channel": "room", "data": {"hello": true}}),
    )
    .await;
    let push = next(&mut ws).await;
    assert_eq!(push["channel"], "room");
    assert_eq!(push["pub"]["data"], json!({"hello": true}));
    // The connection is not subscribed to "other".
    s.api_ok("publish", json!({"channel": "other", "data": {}}))
        .await;
    s.api_ok("publish", json!({"channel": "room", "data": {"n": 2}}))
        .await;
    assert_eq!(next(&mut ws).await["channel"], "room");
    // A server disconnect is a close frame with the code.
    s.api_ok("disconnect", json!({"user": "ivy"})).await;
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    match close {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 3503),
        other => panic!("expected close, got {other:?}"),
    }

    // cf_connect in the URL instead of a first message.
    let req = json!({"token": channels_token("ivy", &["room"])}).to_string();
    let url = format!(
        "ws://{}/connection/uni_websocket?cf_connect={}",
        s.addr(),
        urlencode(&req)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(next(&mut ws).await["connect"].is_object());
    s.stop().await;
}

/// The next WebSocket text message as JSON.
async fn next<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("message within 5 s")
    {
        Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
