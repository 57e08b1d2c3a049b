//! The WebSocket transports: bidirectional (`/connection/websocket`) and
//! unidirectional (`/connection/uni_websocket`), both thin [`Transport`]s
//! over an axum WebSocket driven by [`transport::drive`].

use crate::Shared;
use crate::session::Session;
use crate::transport::{self, Inbound, Transport};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use switchboard_proto::codec::{self, Encoding};
use switchboard_proto::codes::Disconnect;

const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";
const JSON_SUBPROTOCOL: &str = "centrifuge-json";

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/connection/websocket", get(upgrade))
        .route("/connection/uni_websocket", get(upgrade_uni))
        .with_state(shared)
}

/// Whether a new connection from `peer` is refused, and with which code.
pub(crate) fn refusal(shared: &Shared, peer: &SocketAddr) -> Option<Disconnect> {
    if shared.draining.load(Ordering::SeqCst) {
        return Some(Disconnect::SHUTDOWN);
    }
    if shared.ip_limiter.check_key(&peer.ip()).is_err() {
        metrics::counter!("switchboard_connections_refused_total", "reason" => "rate_limited")
            .increment(1);
        return Some(Disconnect::TOO_MANY_REQUESTS);
    }
    None
}

fn limits(shared: &Shared, ws: WebSocketUpgrade) -> WebSocketUpgrade {
    let max = shared.config.max_frame_bytes.saturating_mul(2).max(1024);
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let mut encoding = match query
        .get("cf_protocol")
        .or(query.get("format"))
        .map(String::as_str)
    {
        Some("protobuf") => Encoding::Protobuf,
        _ => Encoding::Json,
    };
    let ws = ws.protocols([PROTOBUF_SUBPROTOCOL, JSON_SUBPROTOCOL]);
    if let Some(p) = ws.selected_protocol() {
        encoding = if p == PROTOBUF_SUBPROTOCOL {
            Encoding::Protobuf
        } else {
            Encoding::Json
        };
    }
    let refused = refusal(&shared, &peer);
    limits(&shared, ws).on_upgrade(move |socket| async move {
        let t = WsTransport {
            socket,
            encoding,
            unidirectional: false,
        };
        if let Some(d) = refused {
            transport::count_disconnect(Some(&d));
            t.close(Some(d)).await;
            return;
        }
        let conn = crate::new_conn(&shared, encoding, false);
        let session = Session::new(shared.clone(), conn, Instant::now());
        transport::drive(session, t, None).await
    })
}

/// Unidirectional WebSocket: the connect request comes as the first message
/// (or in the `cf_connect` query parameter); pushes go out as JSON text
/// messages; later client messages are ignored.
async fn upgrade_uni(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let refused = refusal(&shared, &peer);
    let initial = query.get("cf_connect").map(|c| Bytes::from(c.clone()));
    limits(&shared, ws).on_upgrade(move |socket| async move {
        let t = WsTransport {
            socket,
            encoding: Encoding::Json,
            unidirectional: true,
        };
        if let Some(d) = refused {
            transport::count_disconnect(Some(&d));
            t.close(Some(d)).await;
            return;
        }
        let conn = crate::new_conn(&shared, Encoding::Json, true);
        let mut session = Session::new(shared.clone(), conn, Instant::now());
        session.set_session_id(uuid::Uuid::new_v4().to_string());
        transport::drive(session, t, initial).await
    })
}

struct WsTransport {
    socket: WebSocket,
    encoding: Encoding,
    unidirectional: bool,
}

impl WsTransport {
    fn message(&self, frame: Bytes) -> Option<Message> {
        match self.encoding {
            Encoding::Protobuf => Some(Message::Binary(frame)),
            Encoding::Json => Utf8Bytes::try_from(frame).ok().map(Message::Text),
        }
    }

    async fn send(&mut self, frame: Bytes) -> Result<(), ()> {
        let Some(msg) = self.message(frame) else {
            tracing::error!("non UTF-8 JSON frame dropped");
            return Ok(());
        };
        self.socket.send(msg).await.map_err(|_| ())
    }
}

impl Transport for WsTransport {
    async fn recv(&mut self) -> Inbound {
        loop {
            let inbound = match self.socket.recv().await {
                Some(Ok(Message::Text(t))) => Inbound::Frame(Bytes::from(t)),
                Some(Ok(Message::Binary(b))) => Inbound::Frame(b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Inbound::Closed,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") {
                        Inbound::Fail(Disconnect::new(
                            Disconnect::BAD_REQUEST.code,
                            "frame too large",
                        ))
                    } else {
                        Inbound::Closed
                    }
                }
            };
            return inbound;
        }
    }

    async fn write(&mut self, frames: Vec<Bytes>) -> Result<(), ()> {
        if self.unidirectional {
            // One push per message: plain WebSocket consumers parse each
            // message as one JSON object.
            for f in frames {
                self.send(f).await?;
            }
            return Ok(());
        }
        let frame: Bytes = if frames.len() == 1 {
            frames.into_iter().next().expect("one frame")
        } else {
            Bytes::from(codec::join_frame(self.encoding, &frames))
        };
        self.send(frame).await
    }

    async fn close(mut self, disconnect: Option<Disconnect>) {
        let Some(d) = disconnect else { return };
        let frame = CloseFrame {
            code: d.close_code(),
            reason: Utf8Bytes::from(d.close_reason().to_string()),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
    }
}
