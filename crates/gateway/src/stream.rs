//! HTTP transports: Centrifugo's bidirectional emulation (HTTP-streaming and
//! SSE, with `/emulation` carrying later client commands) and the
//! unidirectional HTTP-streaming and SSE transports.
//!
//! * `POST /connection/http_stream`: the body holds the first commands (the
//!   connect); the response streams replies: JSON lines, or varint-delimited
//!   protobuf when the request's `Content-Type` is `application/octet-stream`
//!   (or `?cf_protocol=protobuf`).
//! * `GET /connection/sse?cf_connect=<commands>` (or `POST` with them as the
//!   body): JSON only; every reply is one `data:` event.
//! * `POST /emulation`: `EmulationRequest {node, session, data}` (JSON, or
//!   protobuf with `Content-Type: application/octet-stream`). `data` is the
//!   client's frame of commands for the session named in its connect reply;
//!   it is handed to the connection task through the session [`Registry`].
//!   204 when delivered, 404 when the session (or node) is not here.
//! * `POST /connection/uni_http_stream` (ConnectRequest JSON body) and
//!   `GET /connection/uni_sse?cf_connect=<ConnectRequest JSON>` (or `POST`):
//!   bare pushes (JSON lines / one `data:` event each), connect push first,
//!   a disconnect push last when the server closes the connection.
//!
//! Each stream is a [`Transport`] over an mpsc channel feeding the response
//! body; [`transport::drive`] runs the connection exactly as for WebSocket.

use crate::Shared;
use crate::hub::{Conn, encode_push};
use crate::session::Session;
use crate::transport::{self, Inbound, Transport};
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use switchboard_proto::client;
use switchboard_proto::codec::{self, Encoding};
use switchboard_proto::codes::Disconnect;
use tokio::sync::mpsc;

/// Chunks buffered between a connection task and its response body.
const BODY_CHANNEL: usize = 8;
/// Client frames buffered between `/emulation` and the connection task.
const INBOUND_CHANNEL: usize = 32;

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    let limit = shared
        .config
        .max_frame_bytes
        .saturating_mul(2)
        .max(64 * 1024);
    axum::Router::new()
        .route("/connection/http_stream", post(http_stream))
        .route("/connection/sse", post(sse).get(sse))
        .route("/connection/uni_http_stream", post(uni_http_stream))
        .route("/connection/uni_sse", post(uni_sse).get(uni_sse))
        .route("/emulation", post(emulation))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// Emulated sessions of this node by session id: the sending half of each
/// connection task's inbound channel.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
}

impl Registry {
    fn get(&self, session: &str) -> Option<mpsc::Sender<Bytes>> {
        self.sessions.lock().get(session).cloned()
    }
}

/// Removes a session from the registry when its connection ends.
struct Registration {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.emulation.sessions.lock().remove(&self.id);
    }
}

/// How frames are laid out in the response body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// JSON messages, each followed by `'\n'`.
    Lines,
    /// Varint-length-prefixed protobuf messages, back to back.
    Binary,
    /// One Server-Sent Event per message (`data:` lines, blank line).
    Sse,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Lines => "application/json",
            Format::Binary => "application/octet-stream",
            Format::Sse => "text/event-stream",
        }
    }

    fn render(self, frames: &[Bytes]) -> Bytes {
        let len: usize = frames.iter().map(|f| f.len() + 8).sum();
        let mut out = BytesMut::with_capacity(len);
        for f in frames {
            match self {
                Format::Binary => out.put_slice(f),
                Format::Lines => {
                    out.put_slice(f);
                    out.put_u8(b'\n');
                }
                Format::Sse => {
                    // A newline inside a message (raw JSON payloads may carry
                    // some) continues the event on another `data:` line;
                    // EventSource joins them back with '\n'.
                    for line in f.split(|b| *b == b'\n') {
                        out.put_slice(b"data: ");
                        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
                        out.put_u8(b'\n');
                    }
                    out.put_u8(b'\n');
                }
            }
        }
        out.freeze()
    }
}

struct StreamTransport {
    out: mpsc::Sender<Result<Bytes, Infallible>>,
    inbound: Option<mpsc::Receiver<Bytes>>,
    format: Format,
    conn: Arc<Conn>,
    _registration: Option<Registration>,
}

impl Transport for StreamTransport {
    async fn recv(&mut self) -> Inbound {
        match &mut self.inbound {
            Some(rx) => tokio::select! {
                f = rx.recv() => f.map_or(Inbound::Closed, Inbound::Frame),
                _ = self.out.closed() => Inbound::Closed,
            },
            None => {
                self.out.closed().await;
                Inbound::Closed
            }
        }
    }

    async fn write(&mut self, frames: Vec<Bytes>) -> Result<(), ()> {
        let chunk = self.format.render(&frames);
        self.out.send(Ok(chunk)).await.map_err(|_| ())
    }

    async fn close(self, disconnect: Option<Disconnect>) {
        // No close codes over HTTP: the reason goes out as a last push.
        if let Some(d) = disconnect
            && let Some(frame) = transport::disconnect_frame(&self.conn, &d)
        {
            let _ = self.out.send(Ok(self.format.render(&[frame]))).await;
        }
    }
}

fn stream_response(format: Format, body: Body) -> Response {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
    );
    // Tell buffering proxies (nginx) to pass chunks through at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// A response that only tells the client why it was refused.
fn refused_response(format: Format, encoding: Encoding, uni: bool, d: &Disconnect) -> Response {
    transport::count_disconnect(Some(d));
    let push = client::Push {
        disconnect: Some(d.to_push()),
        ..Default::default()
    };
    let frame = if uni {
        encode_push(encoding, &push)
    } else {
        codec::encode_reply(
            encoding,
            &client::Reply {
                push: Some(push),
                ..Default::default()
            },
        )
    };
    stream_response(format, Body::from(format.render(&[frame])))
}

/// Starts a connection task for a new stream and returns its response.
fn open(
    shared: Arc<Shared>,
    peer: SocketAddr,
    format: Format,
    encoding: Encoding,
    uni: bool,
    initial: Bytes,
) -> Response {
    if initial.len() > shared.config.max_frame_bytes {
        return (StatusCode::PAYLOAD_TOO_LARGE, "connect request too large").into_response();
    }
    if let Some(d) = crate::ws::refusal(&shared, &peer) {
        return refused_response(format, encoding, uni, &d);
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Result<Bytes, Infallible>>(BODY_CHANNEL);
    let conn = crate::new_conn(&shared, encoding, uni);
    let mut session = Session::new(shared.clone(), conn.clone(), Instant::now());
    let id = uuid::Uuid::new_v4().to_string();
    session.set_session_id(id.clone());
    let (inbound, registration) = if uni {
        (None, None)
    } else {
        let (in_tx, in_rx) = mpsc::channel(INBOUND_CHANNEL);
        shared.emulation.sessions.lock().insert(id.clone(), in_tx);
        let reg = Registration {
            shared: shared.clone(),
            id,
        };
        (Some(in_rx), Some(reg))
    };
    let t = StreamTransport {
        out: out_tx,
        inbound,
        format,
        conn,
        _registration: registration,
    };
    tokio::spawn(transport::drive(session, t, Some(initial)));
    let body = futures_util::stream::poll_fn(move |cx| out_rx.poll_recv(cx));
    stream_response(format, Body::from_stream(body))
}

fn is_protobuf(headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ct.starts_with("application/octet-stream")
        || query.get("cf_protocol").map(String::as_str) == Some("protobuf")
}

/// The connect data of an SSE request: `cf_connect` in the query (GET, as
/// EventSource sends it) or the body (POST).
fn sse_initial(query: &HashMap<String, String>, body: Bytes) -> Option<Bytes> {
    match query.get("cf_connect") {
        Some(c) => Some(Bytes::from(c.clone())),
        None if !body.is_empty() => Some(body),
        None => None,
    }
}

async fn http_stream(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.is_empty() {
        return (StatusCode::BAD_REQUEST, "connect command expected in body").into_response();
    }
    let (format, encoding) = if is_protobuf(&headers, &query) {
        (Format::Binary, Encoding::Protobuf)
    } else {
        (Format::Lines, Encoding::Json)
    };
    open(shared, peer, format, encoding, false, body)
}

async fn sse(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(initial) = sse_initial(&query, body) else {
        return (StatusCode::BAD_REQUEST, "cf_connect expected").into_response();
    };
    open(shared, peer, Format::Sse, Encoding::Json, false, initial)
}

async fn uni_http_stream(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    open(shared, peer, Format::Lines, Encoding::Json, true, body)
}

async fn uni_sse(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let initial = sse_initial(&query, body).unwrap_or_default();
    open(shared, peer, Format::Sse, Encoding::Json, true, initial)
}

/// `EmulationRequest` of the client protocol (protobuf form).
#[derive(Clone, PartialEq, prost::Message)]
struct EmulationRequestProto {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(string, tag = "2")]
    session: String,
    #[prost(bytes = "bytes", tag = "3")]
    data: Bytes,
}

/// `EmulationRequest` in JSON: `data` is the client's frame as a string
/// (what centrifuge-js sends); embedded JSON is accepted too.
#[derive(serde::Deserialize)]
struct EmulationRequestJson {
    #[serde(default)]
    node: String,
    session: String,
    data: serde_json::Value,
}

fn decode_emulation(protobuf: bool, body: &Bytes) -> Result<EmulationRequestProto, String> {
    if protobuf {
        use prost::Message;
        return EmulationRequestProto::decode(body.clone()).map_err(|e| e.to_string());
    }
    let req: EmulationRequestJson = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let data = match req.data {
        serde_json::Value::String(s) => Bytes::from(s),
        v => Bytes::from(serde_json::to_vec(&v).map_err(|e| e.to_string())?),
    };
    Ok(EmulationRequestProto {
        node: req.node,
        session: req.session,
        data,
    })
}

async fn emulation(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match decode_emulation(is_protobuf(&headers, &query), &body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "malformed emulation request");
            return (StatusCode::BAD_REQUEST, "malformed emulation request").into_response();
        }
    };
    metrics::counter!("switchboard_emulation_requests_total").increment(1);
    // Sessions live on the node that holds their stream. Forwarding to
    // another node is not done yet: behind a load balancer, emulated
    // transports need sticky sessions.
    if !req.node.is_empty() && req.node != shared.config.node_name {
        return (StatusCode::NOT_FOUND, "session is on another node").into_response();
    }
    let Some(tx) = shared.emulation.get(&req.session) else {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    };
    if req.data.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    match tx.send(req.data).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "session closed").into_response(),
    }
}
