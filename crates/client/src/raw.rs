//! [`RawConnection`]: a bare WebSocket for tests that send malformed or
//! hostile input and observe exactly what the server does (frames, close codes).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_proto::Encoding;
use switchboard_proto::client::{Command, Reply};
use switchboard_proto::codec;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::ClientError;
use crate::transport::{
    Dial, WsStream, close_frame, close_parts, data_message, dial, protocols_for,
};

/// How to open a [`RawConnection`].
#[derive(Debug, Clone)]
pub struct RawOptions {
    /// Encoding used by the helpers ([`RawConnection::send_command`],
    /// [`RawConnection::recv_replies`]); protobuf requests the
    /// `centrifuge-protobuf` subprotocol unless `protocols` is set.
    pub encoding: Encoding,
    /// WebSocket subprotocols to request, overriding the encoding's. Note that
    /// the handshake fails when the server does not select one of them.
    pub protocols: Option<Vec<String>>,
    /// Extra HTTP headers for the handshake.
    pub http_headers: Vec<(String, String)>,
    /// Local address to bind to.
    pub local_addr: Option<IpAddr>,
    /// WebSocket configuration (default: tungstenite's defaults).
    pub ws_config: WebSocketConfig,
    /// Timeout of [`RawConnection::connect`] and of [`RawConnection::recv`].
    /// Default 10 s.
    pub timeout: Duration,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions {
            encoding: Encoding::Json,
            protocols: None,
            http_headers: Vec::new(),
            local_addr: None,
            ws_config: WebSocketConfig::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// One frame received by a [`RawConnection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
    /// A WebSocket ping (already answered by the WebSocket layer).
    Ping(Bytes),
    /// A WebSocket pong.
    Pong(Bytes),
    /// A close frame (code 1005 when it carried no status).
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The connection ended without a close frame (or after it).
    Ended,
}

/// A bare WebSocket connection: nothing is sent automatically (no connect, no
/// pongs to protocol pings; WebSocket-level pings are still answered).
#[derive(Debug)]
pub struct RawConnection {
    ws: WsStream,
    encoding: Encoding,
    timeout: Duration,
}

impl RawConnection {
    /// Opens the WebSocket (TCP connect + handshake only).
    pub async fn connect(url: &str, options: RawOptions) -> Result<RawConnection, ClientError> {
        let protocols = options
            .protocols
            .clone()
            .unwrap_or_else(|| protocols_for(options.encoding));
        let ws = tokio::time::timeout(
            options.timeout,
            dial(Dial {
                url,
                protocols: &protocols,
                headers: &options.http_headers,
                local_addr: options.local_addr,
                ws_config: options.ws_config,
            }),
        )
        .await
        .map_err(|_| ClientError::Timeout)??;
        Ok(RawConnection {
            ws,
            encoding: options.encoding,
            timeout: options.timeout,
        })
    }

    /// The encoding used by the helpers.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.send(Message::text(text.into())).await
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.send(Message::Binary(data.into())).await
    }

    /// Sends a text frame whose payload may be invalid UTF-8.
    pub async fn send_text_bytes(&mut self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        let frame = Frame::message(data.into(), OpCode::Data(Data::Text), true);
        self.send(Message::Frame(frame)).await
    }

    /// Sends one command, encoded with the connection's encoding.
    pub async fn send_command(&mut self, command: &Command) -> Result<(), ClientError> {
        let bytes = codec::encode_command(self.encoding, command);
        self.send(data_message(self.encoding, bytes)).await
    }

    /// Sends several commands in one frame.
    pub async fn send_commands(&mut self, commands: &[Command]) -> Result<(), ClientError> {
        let parts: Vec<Bytes> = commands
            .iter()
            .map(|c| codec::encode_command(self.encoding, c))
            .collect();
        let frame = Bytes::from(codec::join_frame(self.encoding, &parts));
        self.send(data_message(self.encoding, frame)).await
    }

    /// Sends any WebSocket message.
    pub async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message).await.map_err(ClientError::transport)
    }

    /// Receives the next frame, waiting at most the configured timeout.
    pub async fn recv(&mut self) -> Result<RawFrame, ClientError> {
        self.recv_timeout(self.timeout).await
    }

    /// Receives the next frame, waiting at most `timeout`
    /// ([`ClientError::Timeout`] otherwise).
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<RawFrame, ClientError> {
        let msg = tokio::time::timeout(timeout, self.ws.next())
            .await
            .map_err(|_| ClientError::Timeout)?;
        Ok(match msg {
            Some(Ok(Message::Text(text))) => RawFrame::Text(text.as_str().to_owned()),
            Some(Ok(Message::Binary(bytes))) => RawFrame::Binary(bytes),
            Some(Ok(Message::Ping(bytes))) => RawFrame::Ping(bytes),
            Some(Ok(Message::Pong(bytes))) => RawFrame::Pong(bytes),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = close_parts(frame);
                RawFrame::Close { code, reason }
            }
            Some(Ok(Message::Frame(_))) | None => RawFrame::Ended,
            Some(Err(e)) => return Err(ClientError::transport(e)),
        })
    }

    /// Receives the next data frame and decodes its replies with the
    /// connection's encoding. A close frame yields
    /// [`ClientError::Disconnected`]; WebSocket pings/pongs are skipped.
    pub async fn recv_replies(&mut self) -> Result<Vec<Reply>, ClientError> {
        loop {
            let bytes: Bytes = match self.recv().await? {
                RawFrame::Text(text) => Bytes::from(text),
                RawFrame::Binary(bytes) => bytes,
                RawFrame::Ping(_) | RawFrame::Pong(_) => continue,
                RawFrame::Close { code, reason } => {
                    return Err(ClientError::Disconnected { code, reason });
                }
                RawFrame::Ended => {
                    return Err(ClientError::Transport("connection ended".into()));
                }
            };
            return codec::decode_replies(self.encoding, &bytes)
                .map_err(|e| ClientError::Decode(e.to_string()));
        }
    }

    /// Reads until the server closes the connection (skipping any data
    /// frames) and returns the close code and reason. Fails with
    /// [`ClientError::Timeout`] when no close frame arrives within `timeout`,
    /// and with [`ClientError::Transport`] when the connection ends without one.
    pub async fn expect_close(&mut self, timeout: Duration) -> Result<(u16, String), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_timeout(left).await? {
                RawFrame::Close { code, reason } => return Ok((code, reason)),
                RawFrame::Ended => {
                    return Err(ClientError::Transport(
                        "connection ended without a close frame".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// Sends a close frame (the server's answer can then be read with
    /// [`RawConnection::recv`]).
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        self.ws
            .close(Some(close_frame(code, reason)))
            .await
            .map_err(ClientError::transport)
    }

    /// The underlying WebSocket stream.
    pub fn stream_mut(&mut self) -> &mut WsStream {
        &mut self.ws
    }

    /// Consumes the connection, returning the WebSocket stream.
    pub fn into_stream(self) -> WsStream {
        self.ws
    }
}
