//! The WebSocket transport: one task per connection pumping frames between
//! the socket and its [`Session`].

use crate::Shared;
use crate::hub::Conn;
use crate::session::Session;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use switchboard_proto::codec::{self, Encoding};
use switchboard_proto::codes::Disconnect;

const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";
const JSON_SUBPROTOCOL: &str = "centrifuge-json";

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/connection/websocket", get(upgrade))
        .with_state(shared)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
    let refused =
        shared.ip_limiter.check_key(&peer.ip()).is_err() || shared.draining.load(Ordering::SeqCst);
    let max = shared.config.max_frame_bytes.saturating_mul(2).max(1024);
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            if refused {
                metrics::counter!("switchboard_connections_refused_total", "reason" => "rate_limited").increment(1);
                let d = if shared.draining.load(Ordering::SeqCst) { Disconnect::SHUTDOWN } else { Disconnect::TOO_MANY_REQUESTS };
                close(socket, &d).await;
                return;
            }
            run(shared, socket, encoding).await
        })
}

async fn close(mut socket: WebSocket, d: &Disconnect) {
    metrics::counter!("switchboard_disconnects_total", "code" => d.code.to_string()).increment(1);
    let frame = CloseFrame {
        code: d.close_code(),
        reason: Utf8Bytes::from(d.close_reason().to_string()),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

fn to_message(encoding: Encoding, frame: Bytes) -> Option<Message> {
    match encoding {
        Encoding::Protobuf => Some(Message::Binary(frame)),
        Encoding::Json => Utf8Bytes::try_from(frame).ok().map(Message::Text),
    }
}

/// Writes everything queued, batching frames into one message per write.
/// Returns the disconnect to perform, or `Err` when the socket failed.
async fn write_pending(
    socket: &mut WebSocket,
    conn: &Conn,
    batch: usize,
) -> Result<Option<Disconnect>, ()> {
    loop {
        let (frames, disconnect) = conn.take_frames(batch);
        if frames.is_empty() {
            return Ok(disconnect);
        }
        let frame: Bytes = if frames.len() == 1 {
            frames.into_iter().next().expect("one frame")
        } else {
            Bytes::from(codec::join_frame(conn.encoding(), &frames))
        };
        metrics::counter!("switchboard_transport_bytes_out_total").increment(frame.len() as u64);
        let Some(msg) = to_message(conn.encoding(), frame) else {
            tracing::error!("non UTF-8 JSON frame dropped");
            continue;
        };
        if socket.send(msg).await.is_err() {
            return Err(());
        }
    }
}

async fn run(shared: Arc<Shared>, mut socket: WebSocket, encoding: Encoding) {
    let cfg = &shared.config;
    let conn = Arc::new(Conn::new(
        shared.hub.next_conn_id(),
        encoding,
        cfg.send_queue_max_bytes,
        cfg.send_queue_max_messages,
    ));
    let batch = cfg.write_batch_bytes;
    let mut session = Session::new(shared.clone(), conn.clone(), Instant::now());
    let outcome: Option<Disconnect> = loop {
        let deadline = tokio::time::Instant::from_std(session.next_deadline());
        let step = tokio::select! {
            biased;
            _ = conn.notified() => Ok(()),
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => session.handle_frame(t.as_bytes(), Instant::now(), unix_now()).await,
                Some(Ok(Message::Binary(b))) => session.handle_frame(&b, Instant::now(), unix_now()).await,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                        Err(Disconnect::new(Disconnect::BAD_REQUEST.code, "frame too large"))
                    } else {
                        break None;
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline) => session.handle_timeout(Instant::now(), unix_now()).await,
        };
        if let Err(d) = step {
            conn.disconnect(d);
        }
        // Run server-side actions, then write everything queued.
        for c in conn.take_controls() {
            if let Err(d) = session.handle_control(c, unix_now()).await {
                conn.disconnect(d);
            }
        }
        match write_pending(&mut socket, &conn, batch).await {
            Ok(Some(d)) => break Some(d),
            Ok(None) => {}
            Err(()) => break None,
        }
    };
    if let Some(d) = &outcome {
        tracing::debug!(code = d.code, reason = %d.reason, "closing connection");
        close(socket, d).await;
    } else {
        metrics::counter!("switchboard_disconnects_total", "code" => "3000").increment(1);
    }
    session.close().await;
}
