//! Opening WebSocket connections: TCP connect (optionally from a chosen local
//! address) + WebSocket handshake, and frame helpers shared by [`crate::Client`]
//! and [`crate::RawConnection`].

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use switchboard_proto::Encoding;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{
    HeaderName, HeaderValue, SEC_WEBSOCKET_PROTOCOL,
};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::ClientError;

/// The WebSocket stream type used by this crate (plain TCP; `wss://` is not
/// supported).
pub type WsStream = WebSocketStream<TcpStream>;

/// WebSocket subprotocol that selects protobuf framing.
pub const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";

/// A WebSocket configuration with small buffers (4 KiB read buffer, 4 KiB
/// write batching target), suited to holding many connections in one process.
/// Frames larger than the buffers still work: buffers grow as needed.
pub fn lean_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
}

/// What [`dial`] needs.
pub(crate) struct Dial<'a> {
    pub url: &'a str,
    pub protocols: &'a [String],
    pub headers: &'a [(String, String)],
    pub local_addr: Option<IpAddr>,
    pub ws_config: WebSocketConfig,
}

/// Connects TCP (bound to `local_addr` when given) and performs the WebSocket
/// handshake.
pub(crate) async fn dial(d: Dial<'_>) -> Result<WsStream, ClientError> {
    let mut request = d
        .url
        .into_client_request()
        .map_err(|e| ClientError::Transport(format!("invalid URL {:?}: {e}", d.url)))?;
    let uri = request.uri().clone();
    match uri.scheme_str() {
        Some("ws") | Some("http") => {}
        Some("wss") | Some("https") => {
            return Err(ClientError::Transport(
                "TLS (wss://) is not supported by switchboard-client".into(),
            ));
        }
        other => {
            return Err(ClientError::Transport(format!(
                "unsupported URL scheme {other:?} in {:?}",
                d.url
            )));
        }
    }
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Transport(format!("URL without host: {:?}", d.url)))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);

    let headers = request.headers_mut();
    if !d.protocols.is_empty() {
        let value = HeaderValue::from_str(&d.protocols.join(", "))
            .map_err(|e| ClientError::Transport(format!("invalid subprotocol: {e}")))?;
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    for (name, value) in d.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ClientError::Transport(format!("invalid header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| ClientError::Transport(format!("invalid header value {value:?}: {e}")))?;
        headers.append(name, value);
    }

    let stream = tcp_connect(&host, port, d.local_addr).await?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(d.ws_config))
            .await
            .map_err(handshake_error)?;
    Ok(ws)
}

async fn tcp_connect(
    host: &str,
    port: u16,
    local_addr: Option<IpAddr>,
) -> Result<TcpStream, ClientError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ClientError::Transport(format!("resolving {host}:{port}: {e}")))?;
    let mut last_err = None;
    for addr in addrs {
        if let Some(local) = local_addr
            && local.is_ipv4() != addr.is_ipv4()
        {
            continue;
        }
        match connect_one(addr, local_addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_err = Some(e),
        }
    }
    Err(ClientError::Transport(match last_err {
        Some(e) => format!("connecting to {host}:{port}: {e}"),
        None => format!("no usable address for {host}:{port}"),
    }))
}

async fn connect_one(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn handshake_error(e: WsError) -> ClientError {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            ClientError::Transport(format!("handshake rejected: HTTP {status} {body}"))
        }
        e => ClientError::Transport(format!("handshake failed: {e}")),
    }
}

/// The subprotocols to request for an encoding.
pub(crate) fn protocols_for(encoding: Encoding) -> Vec<String> {
    match encoding {
        Encoding::Json => Vec::new(),
        Encoding::Protobuf => vec![PROTOBUF_SUBPROTOCOL.to_owned()],
    }
}

/// Wraps encoded protocol bytes in the frame type of the encoding.
pub(crate) fn data_message(encoding: Encoding, bytes: Bytes) -> Message {
    match encoding {
        Encoding::Protobuf => Message::Binary(bytes),
        // serde_json always produces UTF-8; the binary fallback is never taken.
        Encoding::Json => match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(bytes),
        },
    }
}

/// Code and reason of a received close frame (1005 when it has no status).
pub(crate) fn close_parts(frame: Option<CloseFrame>) -> (u16, String) {
    match frame {
        Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
        None => (1005, String::new()),
    }
}

/// A close frame with `code` and `reason` (truncated to the 123 bytes a
/// control frame allows).
pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: code.into(),
        reason: Utf8Bytes::from(&reason[..end]),
    }
}
