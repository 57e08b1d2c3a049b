//! Request/reply routing, pushes, pings, close codes and backpressure against
//! a tiny in-test server speaking the client protocol (JSON and protobuf).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_client::proto::{
    Command, ConnectResult, Error as ProtoError, Publication, PublishResult, Push, Reply,
    ReplyResult, Request, RpcResult, SubscribeResult,
};
use switchboard_client::{
    Client, ClientError, ClientOptions, Encoding, Event, RawConnection, RawFrame, RawOptions,
    SubscribeOptions,
};
use switchboard_proto::codec;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request as HsRequest, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// What the test server observed.
#[derive(Default)]
struct Seen {
    pongs: AtomicUsize,
    close_codes: std::sync::Mutex<Vec<u16>>,
}

struct TestServer {
    url: String,
    seen: Arc<Seen>,
}

/// Starts the server; every accepted connection is served by `serve_conn`.
async fn start(ping: u32) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/connection/websocket",
        listener.local_addr().unwrap()
    );
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_conn(stream, ping, seen2.clone()));
        }
    });
    TestServer { url, seen }
}

fn msg(enc: Encoding, bytes: Bytes) -> Message {
    match enc {
        Encoding::Json => Message::Text(Utf8Bytes::try_from(bytes).unwrap()),
        Encoding::Protobuf => Message::Binary(bytes),
    }
}

fn frame_of(enc: Encoding, replies: &[Reply]) -> Message {
    let parts: Vec<Bytes> = replies
        .iter()
        .map(|r| codec::encode_reply(enc, r))
        .collect();
    msg(enc, Bytes::from(codec::join_frame(enc, &parts)))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

fn publication(channel: &str, data: Bytes, offset: u64) -> Reply {
    Reply::push(Push::publication(
        channel,
        Publication {
            data,
            offset,
            ..Default::default()
        },
    ))
}

async fn serve_conn(stream: tokio::net::TcpStream, ping: u32, seen: Arc<Seen>) {
    let mut enc = Encoding::Json;
    #[allow(clippy::result_large_err)] // the signature is tungstenite's
    let callback = |req: &HsRequest, mut resp: Response| {
        let wants_pb = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("centrifuge-protobuf"));
        if wants_pb {
            enc = Encoding::Protobuf;
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("centrifuge-protobuf"),
            );
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let is_close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || is_close {
                break;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        let data: Bytes = match m {
            Message::Text(t) => t.into(),
            Message::Binary(b) => b,
            Message::Close(f) => {
                let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                seen.close_codes.lock().unwrap().push(code);
                return;
            }
            _ => continue,
        };
        let Ok(commands) = codec::decode_commands(enc, &data, 100) else {
            let _ = out.send(close(3501, "bad request"));
            return;
        };
        for cmd in commands {
            handle(cmd, enc, ping, &out, &seen);
        }
    }
}

fn handle(
    cmd: Command,
    enc: Encoding,
    ping: u32,
    out: &mpsc::UnboundedSender<Message>,
    seen: &Seen,
) {
    let id = cmd.id;
    let send = |replies: &[Reply]| {
        let _ = out.send(frame_of(enc, replies));
    };
    match cmd.into_request() {
        Request::Empty if id == 0 => {
            seen.pongs.fetch_add(1, Ordering::SeqCst);
        }
        Request::Connect(c) => match c.token.as_str() {
            "bad" => send(&[Reply::for_error(id, ProtoError::new(101, "unauthorized"))]),
            "close" => {
                let _ = out.send(close(3500, "invalid token"));
            }
            _ => {
                let result = ConnectResult {
                    client: "client-1".into(),
                    version: "test".into(),
                    ping,
                    pong: true,
                    ..Default::default()
                };
                // A push in the same frame right after the connect reply.
                send(&[
                    Reply::with_result(id, ReplyResult::Connect(result)),
                    publication("early", Bytes::from_static(b"{\"early\":true}"), 1),
                ]);
                if ping > 0 {
                    // An immediate ping, to check the pong.
                    send(&[Reply::ping()]);
                }
            }
        },
        Request::Subscribe(s) => send(&[Reply::with_result(
            id,
            ReplyResult::Subscribe(SubscribeResult {
                recoverable: s.recoverable,
                epoch: "e1".into(),
                offset: 7,
                ..Default::default()
            }),
        )]),
        Request::Publish(p) => {
            if p.channel == "flood" {
                // 200 publications in separate frames, then the reply.
                for i in 0..200u64 {
                    send(&[publication(
                        &p.channel,
                        Bytes::from(format!("{{\"i\":{i}}}")),
                        i + 1,
                    )]);
                }
                send(&[Reply::with_result(
                    id,
                    ReplyResult::Publish(PublishResult {}),
                )]);
            } else {
                // Reply, then echo the publication back, in one frame.
                send(&[
                    Reply::with_result(id, ReplyResult::Publish(PublishResult {})),
                    publication(&p.channel, p.data, 8),
                ]);
            }
        }
        Request::Send(s) => send(&[Reply::push(Push::message(s.data))]),
        Request::Rpc(r) => match r.method.as_str() {
            "echo" => send(&[Reply::with_result(
                id,
                ReplyResult::Rpc(RpcResult { data: r.data }),
            )]),
            "denied" => send(&[Reply::for_error(
                id,
                ProtoError::new(103, "permission denied"),
            )]),
            "delay" => {
                // data: a number of milliseconds; replies out of order.
                let ms: u64 = String::from_utf8_lossy(&r.data).parse().unwrap_or(0);
                let out = out.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let reply =
                        Reply::with_result(id, ReplyResult::Rpc(RpcResult { data: r.data }));
                    let _ = out.send(frame_of(enc, &[reply]));
                });
            }
            "close" => {
                let _ = out.send(close(3501, "bad request"));
            }
            _ => {} // "ignore": never answered
        },
        _ => send(&[Reply::for_error(
            id,
            ProtoError::new(104, "method not found"),
        )]),
    }
}

fn opts(enc: Encoding) -> ClientOptions {
    ClientOptions {
        token: "ok".into(),
        encoding: enc,
        ..ClientOptions::default()
    }
}

async fn next_event(events: &mut switchboard_client::Events) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("event in time")
        .expect("event")
}

const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::Protobuf];

#[tokio::test]
async fn connect_subscribe_publish_round_trip() {
    let server = start(25).await;
    for enc in ENCODINGS {
        let (client, mut events) = Client::connect(&server.url, opts(enc)).await.unwrap();
        assert_eq!(client.client_id(), "client-1");
        assert_eq!(client.encoding(), enc);
        assert_eq!(client.connect_result().ping, 25);

        // The push that followed the connect reply in its frame.
        match next_event(&mut events).await {
            Event::Publication {
                channel,
                publication,
            } => {
                assert_eq!(channel, "early");
                assert_eq!(&publication.data[..], b"{\"early\":true}");
            }
            other => panic!("unexpected {other:?}"),
        }

        let sub = client
            .subscribe(
                "chat",
                SubscribeOptions {
                    recoverable: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(sub.recoverable);
        assert_eq!((sub.epoch.as_str(), sub.offset), ("e1", 7));

        client.publish("chat", r#"{"text":"hi"}"#).await.unwrap();
        match next_event(&mut events).await {
            Event::Publication {
                channel,
                publication,
            } => {
                assert_eq!(channel, "chat");
                assert_eq!(&publication.data[..], br#"{"text":"hi"}"#);
                assert_eq!(publication.offset, 8);
            }
            other => panic!("unexpected {other:?}"),
        }

        client.send(r#"{"async":1}"#).await.unwrap();
        match next_event(&mut events).await {
            Event::Message { data } => assert_eq!(&data[..], br#"{"async":1}"#),
            other => panic!("unexpected {other:?}"),
        }

        let rpc = client.rpc("echo", r#"[1,2,3]"#).await.unwrap();
        assert_eq!(&rpc.data[..], b"[1,2,3]");

        let err = client.rpc("denied", "{}").await.unwrap_err();
        assert_eq!(err.protocol_code(), Some(103), "{err}");
        let err = client.presence("chat").await.unwrap_err();
        assert_eq!(err.protocol_code(), Some(104), "{err}");

        client.close().await;
        assert!(client.is_closed());
        match next_event(&mut events).await {
            Event::Disconnected { code, .. } => assert_eq!(code, 1000),
            other => panic!("unexpected {other:?}"),
        }
        assert!(events.recv().await.is_none());
        let err = client.publish("chat", "{}").await.unwrap_err();
        assert_eq!(err.close_code(), Some(1000), "{err}");
    }
}

#[tokio::test]
async fn concurrent_calls_are_routed_by_id() {
    let server = start(0).await;
    for enc in ENCODINGS {
        let (client, _events) = Client::connect(&server.url, opts(enc)).await.unwrap();
        // Later calls get earlier replies: routing must go by id, not order.
        let calls = (0..20u64).map(|i| {
            let client = client.clone();
            async move {
                let delay = (20 - i) * 5;
                let r = client.rpc("delay", delay.to_string()).await.unwrap();
                assert_eq!(r.data, Bytes::from(delay.to_string()));
            }
        });
        futures_util::future::join_all(calls).await;
    }
}

#[tokio::test]
async fn pings_are_answered_with_pongs() {
    let server = start(25).await;
    for enc in ENCODINGS {
        let before = server.seen.pongs.load(Ordering::SeqCst);
        let (client, _events) = Client::connect(&server.url, opts(enc)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while server.seen.pongs.load(Ordering::SeqCst) < before + 1 {
            assert!(tokio::time::Instant::now() < deadline, "no pong");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client.close().await;
    }
}

#[tokio::test]
async fn server_close_is_observable() {
    let server = start(0).await;
    for enc in ENCODINGS {
        let (client, mut events) = Client::connect(&server.url, opts(enc)).await.unwrap();
        let pending = {
            let client = client.clone();
            tokio::spawn(async move { client.rpc("ignore", "{}").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = client.rpc("close", "{}").await.unwrap_err();
        assert_eq!(
            err,
            ClientError::Disconnected {
                code: 3501,
                reason: "bad request".into()
            }
        );
        assert_eq!(pending.await.unwrap().unwrap_err().close_code(), Some(3501));
        assert_eq!(client.closed().await.close_code(), Some(3501));
        let mut last = None;
        while let Some(e) = events.recv().await {
            last = Some(e);
        }
        assert_eq!(
            last,
            Some(Event::Disconnected {
                code: 3501,
                reason: "bad request".into()
            })
        );
        let err = client.ping().await.unwrap_err();
        assert_eq!(err.close_code(), Some(3501));
    }
}

#[tokio::test]
async fn connect_errors() {
    let server = start(0).await;
    for enc in ENCODINGS {
        let mut o = opts(enc);
        o.token = "bad".into();
        let err = Client::connect(&server.url, o).await.unwrap_err();
        assert_eq!(err.protocol_code(), Some(101), "{err}");

        let mut o = opts(enc);
        o.token = "close".into();
        let err = Client::connect(&server.url, o).await.unwrap_err();
        assert_eq!(
            err,
            ClientError::Disconnected {
                code: 3500,
                reason: "invalid token".into()
            }
        );
    }
    // Nothing listens there.
    let err = Client::connect(
        "ws://127.0.0.1:1/connection/websocket",
        opts(Encoding::Json),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
    let err = Client::connect("wss://127.0.0.1:1/x", opts(Encoding::Json))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
}

#[tokio::test]
async fn calls_time_out_and_the_connection_survives() {
    let server = start(0).await;
    let (mut client, _events) = Client::connect(&server.url, opts(Encoding::Json))
        .await
        .unwrap();
    client.set_timeout(Duration::from_millis(100));
    assert_eq!(client.rpc("ignore", "{}").await, Err(ClientError::Timeout));
    client.set_timeout(Duration::from_secs(5));
    assert_eq!(&client.rpc("echo", "1").await.unwrap().data[..], b"1");
}

#[tokio::test]
async fn full_event_queue_applies_backpressure_without_loss() {
    let server = start(0).await;
    for enc in ENCODINGS {
        let mut o = opts(enc);
        o.events_capacity = 4;
        let (client, mut events) = Client::connect(&server.url, o).await.unwrap();
        // The reply comes after 200 pushes: it is only read once they are drained.
        let publish = {
            let client = client.clone();
            tokio::spawn(async move { client.publish("flood", "{}").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!publish.is_finished(), "reply read past a full queue");
        assert!(events.len() <= 4);
        let mut offsets = Vec::new();
        while offsets.len() < 200 {
            if let Event::Publication {
                channel,
                publication,
            } = next_event(&mut events).await
                && channel == "flood"
            {
                offsets.push(publication.offset);
            }
        }
        assert_eq!(offsets, (1..=200).collect::<Vec<u64>>());
        publish.await.unwrap().unwrap();
        client.close().await;
    }
}

#[tokio::test]
async fn dropping_the_client_closes_normally() {
    let server = start(0).await;
    let (client, mut events) = Client::connect(&server.url, opts(Encoding::Json))
        .await
        .unwrap();
    drop(client);
    loop {
        if let Event::Disconnected { code, .. } = next_event(&mut events).await {
            assert_eq!(code, 1000);
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !server.seen.close_codes.lock().unwrap().contains(&1000) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server saw no close"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn raw_connection_observes_close_codes() {
    let server = start(0).await;
    for enc in ENCODINGS {
        let mut raw = RawConnection::connect(
            &server.url,
            RawOptions {
                encoding: enc,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(raw.encoding(), enc);
        raw.send_command(&Command::new(
            1,
            Request::Connect(switchboard_client::proto::ConnectRequest {
                token: "ok".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
        let replies = raw.recv_replies().await.unwrap();
        assert_eq!(replies[0].id, 1);
        assert_eq!(replies[0].connect.as_ref().unwrap().client, "client-1");
        // Garbage: the server closes with 3501.
        match enc {
            Encoding::Json => raw.send_text("{not json").await.unwrap(),
            Encoding::Protobuf => raw.send_binary(vec![0xff; 8]).await.unwrap(),
        }
        let (code, reason) = raw.expect_close(Duration::from_secs(5)).await.unwrap();
        assert_eq!((code, reason.as_str()), (3501, "bad request"));
    }
    // Invalid UTF-8 in a text frame never reaches the app: the WebSocket layer
    // of the peer rejects it.
    let mut raw = RawConnection::connect(&server.url, RawOptions::default())
        .await
        .unwrap();
    raw.send_text_bytes(vec![0xc3, 0x28]).await.unwrap();
    let frame = raw.recv().await;
    assert!(
        matches!(
            frame,
            Ok(RawFrame::Ended) | Ok(RawFrame::Close { .. }) | Err(_)
        ),
        "{frame:?}"
    );
}

#[tokio::test]
async fn event_handler_receives_pushes_and_the_end() {
    let server = start(0).await;
    for enc in ENCODINGS {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut o = opts(enc);
        o.event_handler = Some(switchboard_client::EventHandler::new(move |e| {
            let _ = tx.send(e);
        }));
        let (client, mut events) = Client::connect(&server.url, o).await.unwrap();
        client.publish("flood", "{}").await.unwrap();
        let mut offsets = Vec::new();
        while offsets.len() < 200 {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Event::Publication {
                    channel,
                    publication,
                })) if channel == "flood" => offsets.push(publication.offset),
                Ok(Some(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(offsets, (1..=200).collect::<Vec<u64>>());
        assert!(events.is_empty());
        client.close().await;
        let last = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(
            matches!(last, Ok(Some(Event::Disconnected { code: 1000, .. }))),
            "{last:?}"
        );
        // The queue only yields the end.
        assert!(matches!(
            next_event(&mut events).await,
            Event::Disconnected { code: 1000, .. }
        ));
    }
}
