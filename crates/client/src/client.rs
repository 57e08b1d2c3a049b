//! [`Client`]: a connected client, its options and the protocol calls.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_proto::Encoding;
use switchboard_proto::client::{
    Command, ConnectRequest, ConnectResult, FilterNode, HistoryRequest, HistoryResult, PingRequest,
    PresenceRequest, PresenceResult, PresenceStatsRequest, PresenceStatsResult, PublishRequest,
    RefreshRequest, RefreshResult, Reply, Request, RpcRequest, RpcResult, SendRequest,
    StreamPosition, SubRefreshRequest, SubRefreshResult, SubscribeRequest, SubscribeResult,
    UnsubscribeRequest,
};
use switchboard_proto::codec;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::ClientError;
use crate::conn::{self, Outgoing, Shared, TaskParams};
use crate::event::{EventHandler, Events};
use crate::transport::{
    Dial, close_frame, close_parts, data_message, dial, lean_ws_config, protocols_for,
};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connection JWT (empty for anonymous connections, when the server allows them).
    pub token: String,
    /// Wire encoding: JSON text frames, or protobuf binary frames (requested
    /// with the `centrifuge-protobuf` WebSocket subprotocol).
    pub encoding: Encoding,
    /// Client SDK name sent in the connect request.
    pub name: String,
    /// Client SDK version sent in the connect request.
    pub version: String,
    /// Custom connect data (must be a JSON document with JSON encoding).
    pub data: Option<Bytes>,
    /// Subscriptions to recover on connect (server-side subscriptions), by channel.
    pub subs: HashMap<String, SubscribeRequest>,
    /// Extra HTTP headers for the WebSocket handshake (e.g. `Origin`).
    pub http_headers: Vec<(String, String)>,
    /// Timeout of every call, and of [`Client::connect`] as a whole. Default 10 s.
    pub timeout: Duration,
    /// Capacity of the [`Events`] queue (see there for what happens when it is
    /// full). Default 256.
    pub events_capacity: usize,
    /// Capacity of the queue of commands waiting to be written. Default 64.
    pub command_capacity: usize,
    /// Local address to bind the TCP socket to (to spread many connections
    /// over several source addresses). Default: chosen by the OS.
    pub local_addr: Option<IpAddr>,
    /// WebSocket buffer and size limits. Default: [`lean_ws_config`].
    pub ws_config: WebSocketConfig,
    /// When the server announces a ping interval, the connection is closed if
    /// nothing arrives for that interval plus this delay. `None` disables the
    /// check. Default 10 s.
    pub max_server_ping_delay: Option<Duration>,
    /// Deliver pushes by calling this on the connection task instead of
    /// queueing them for [`Events`] (which then only yields the final
    /// [`crate::Event::Disconnected`]). Saves a queue hop and a task wake-up
    /// per push; used by the load generator. Default `None`.
    pub event_handler: Option<EventHandler>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            token: String::new(),
            encoding: Encoding::Json,
            name: "switchboard-rust".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            data: None,
            subs: HashMap::new(),
            http_headers: Vec::new(),
            timeout: Duration::from_secs(10),
            events_capacity: 256,
            command_capacity: 64,
            local_addr: None,
            ws_config: lean_ws_config(),
            max_server_ping_delay: Some(Duration::from_secs(10)),
            event_handler: None,
        }
    }
}

impl ClientOptions {
    /// Default options with `token`.
    pub fn with_token(token: impl Into<String>) -> ClientOptions {
        ClientOptions {
            token: token.into(),
            ..ClientOptions::default()
        }
    }
}

/// Options of [`Client::subscribe`].
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Subscription JWT (for channels that require one).
    pub token: String,
    /// Recover from this `(offset, epoch)` position.
    pub recover: Option<(u64, String)>,
    /// Ask for join/leave pushes.
    pub join_leave: bool,
    /// Ask for a recoverable subscription.
    pub recoverable: bool,
    /// Ask for a positioned subscription.
    pub positioned: bool,
    /// Custom subscribe data (a JSON document with JSON encoding).
    pub data: Option<Bytes>,
    /// Delta compression type (e.g. `fossil`); empty for none.
    pub delta: String,
    /// Publication tags filter.
    pub filter: Option<FilterNode>,
}

impl SubscribeOptions {
    /// The subscribe request for `channel`.
    pub fn to_request(&self, channel: &str) -> SubscribeRequest {
        let (recover, offset, epoch) = match &self.recover {
            Some((offset, epoch)) => (true, *offset, epoch.clone()),
            None => (false, 0, String::new()),
        };
        SubscribeRequest {
            channel: channel.to_owned(),
            token: self.token.clone(),
            recover,
            epoch,
            offset,
            data: self.data.clone().unwrap_or_default(),
            positioned: self.positioned,
            recoverable: self.recoverable,
            join_leave: self.join_leave,
            delta: self.delta.clone(),
            tf: self.filter.clone(),
            flag: 0,
        }
    }
}

/// A connected client. Cheap to clone; all clones share one connection, which
/// is closed by [`Client::close`] or when the last clone is dropped.
///
/// Calls may run concurrently from several tasks; each has its own timeout
/// ([`ClientOptions::timeout`], changed per handle with [`Client::set_timeout`]).
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id())
            .field("encoding", &self.shared.encoding)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Client {
    /// Opens a WebSocket to `url` (`ws://host:port/connection/websocket`),
    /// sends `connect` and waits for the result.
    ///
    /// Fails with [`ClientError::Protocol`] when the server answers with an
    /// error reply, [`ClientError::Disconnected`] when it closes the socket
    /// instead (e.g. 3500 invalid token), [`ClientError::Timeout`] after
    /// [`ClientOptions::timeout`].
    pub async fn connect(
        url: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events), ClientError> {
        let timeout = options.timeout;
        tokio::time::timeout(timeout, Self::connect_inner(url, options))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn connect_inner(
        url: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events), ClientError> {
        let enc = options.encoding;
        let mut ws = dial(Dial {
            url,
            protocols: &protocols_for(enc),
            headers: &options.http_headers,
            local_addr: options.local_addr,
            ws_config: options.ws_config,
        })
        .await?;

        const CONNECT_ID: u32 = 1;
        let request = ConnectRequest {
            token: options.token,
            data: options.data.unwrap_or_default(),
            subs: options.subs,
            name: options.name,
            version: options.version,
            ..ConnectRequest::default()
        };
        let command = Command::new(CONNECT_ID, Request::Connect(request));
        ws.send(data_message(enc, codec::encode_command(enc, &command)))
            .await
            .map_err(ClientError::transport)?;

        let mut backlog = Vec::new();
        let result = loop {
            let frame: Bytes = match ws.next().await {
                Some(Ok(Message::Text(text))) => text.into(),
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = close_parts(frame);
                    let _ = ws.close(None).await;
                    return Err(ClientError::Disconnected { code, reason });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::transport(e)),
                None => {
                    return Err(ClientError::Transport(
                        "connection closed before the connect reply".into(),
                    ));
                }
            };
            let replies = codec::decode_replies(enc, &frame)
                .map_err(|e| ClientError::Decode(format!("connect reply: {e}")))?;
            let mut replies = replies.into_iter();
            let mut found = None;
            for reply in replies.by_ref() {
                if reply.id == CONNECT_ID {
                    found = Some(reply);
                    break;
                }
                backlog.push(reply);
            }
            if let Some(reply) = found {
                backlog.extend(replies);
                break reply;
            }
        };
        let result = match result.into_result() {
            Err(e) => {
                let _ = ws.close(Some(close_frame(1000, ""))).await;
                return Err(ClientError::Protocol(e));
            }
            Ok(Some(switchboard_proto::client::ReplyResult::Connect(result))) => result,
            Ok(_) => {
                return Err(ClientError::Decode(
                    "connect reply without a connect result".into(),
                ));
            }
        };

        let params = TaskParams {
            pong: result.pong,
            read_timeout: match (result.ping, options.max_server_ping_delay) {
                (0, _) | (_, None) => None,
                (ping, Some(delay)) => Some(Duration::from_secs(u64::from(ping)) + delay),
            },
            handler: options.event_handler,
        };
        let (tx, commands) = mpsc::channel(options.command_capacity.max(1));
        let (events_tx, events_rx) = mpsc::channel(options.events_capacity.max(1));
        let shared = Arc::new(Shared::new(result, enc, CONNECT_ID + 1));
        tokio::spawn(conn::run(
            ws,
            shared.clone(),
            commands,
            events_tx,
            backlog,
            params,
        ));
        let events = Events::new(events_rx, shared.clone());
        Ok((
            Client {
                tx,
                shared,
                timeout: options.timeout,
            },
            events,
        ))
    }

    /// The connect result (client id, ping interval, server-side subscriptions, …).
    pub fn connect_result(&self) -> &ConnectResult {
        &self.shared.connect
    }

    /// The client (connection) id assigned by the server.
    pub fn client_id(&self) -> &str {
        &self.shared.connect.client
    }

    /// The wire encoding of this connection.
    pub fn encoding(&self) -> Encoding {
        self.shared.encoding
    }

    /// The timeout of this handle's calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the timeout of this handle's calls.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the connection ends and returns why
    /// ([`ClientError::Disconnected`] with the close code for a close frame).
    pub async fn closed(&self) -> ClientError {
        self.tx.closed().await;
        self.shared.termination()
    }

    /// Sends any request and waits for its reply. An error reply becomes
    /// [`ClientError::Protocol`]; otherwise the whole reply is returned.
    pub async fn call(&self, request: Request) -> Result<Reply, ClientError> {
        let enc = self.shared.encoding;
        let id = self.shared.next_id();
        let frame = data_message(enc, codec::encode_command(enc, &Command::new(id, request)));
        let (slot, reply) = oneshot::channel();
        let exchange = async {
            self.tx
                .send(Outgoing::Call {
                    id,
                    frame,
                    reply: slot,
                })
                .await
                .map_err(|_| self.shared.termination())?;
            reply
                .await
                .unwrap_or_else(|_| Err(self.shared.termination()))
        };
        let mut reply = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout)??;
        match reply.error.take() {
            Some(e) => Err(ClientError::Protocol(e)),
            None => Ok(reply),
        }
    }

    /// Subscribes to `channel`.
    pub async fn subscribe(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<SubscribeResult, ClientError> {
        let reply = self
            .call(Request::Subscribe(options.to_request(channel)))
            .await?;
        expect(reply.subscribe, "subscribe")
    }

    /// Unsubscribes from `channel`.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        self.call(Request::Unsubscribe(UnsubscribeRequest {
            channel: channel.to_owned(),
        }))
        .await
        .map(drop)
    }

    /// Publishes `data` to `channel` (a JSON document with JSON encoding).
    pub async fn publish(&self, channel: &str, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.call(Request::Publish(PublishRequest {
            channel: channel.to_owned(),
            data: data.into(),
        }))
        .await
        .map(drop)
    }

    /// The presence (connected clients) of `channel`.
    pub async fn presence(&self, channel: &str) -> Result<PresenceResult, ClientError> {
        let reply = self
            .call(Request::Presence(PresenceRequest {
                channel: channel.to_owned(),
            }))
            .await?;
        expect(reply.presence, "presence")
    }

    /// Presence counters of `channel`.
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStatsResult, ClientError> {
        let reply = self
            .call(Request::PresenceStats(PresenceStatsRequest {
                channel: channel.to_owned(),
            }))
            .await?;
        expect(reply.presence_stats, "presence_stats")
    }

    /// History of `channel`: up to `limit` publications (0: only the stream
    /// position, -1: all) after `since`, newest first when `reverse`.
    pub async fn history(
        &self,
        channel: &str,
        limit: i32,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> Result<HistoryResult, ClientError> {
        let reply = self
            .call(Request::History(HistoryRequest {
                channel: channel.to_owned(),
                limit,
                since,
                reverse,
            }))
            .await?;
        expect(reply.history, "history")
    }

    /// Calls the RPC `method` with `data` and returns its result.
    pub async fn rpc(
        &self,
        method: &str,
        data: impl Into<Bytes>,
    ) -> Result<RpcResult, ClientError> {
        let reply = self
            .call(Request::Rpc(RpcRequest {
                data: data.into(),
                method: method.to_owned(),
            }))
            .await?;
        expect(reply.rpc, "rpc")
    }

    /// Sends an asynchronous message (no reply). Returns once it is queued for
    /// writing.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        let enc = self.shared.encoding;
        let command = Command::new(0, Request::Send(SendRequest { data: data.into() }));
        self.enqueue(Outgoing::Send(data_message(
            enc,
            codec::encode_command(enc, &command),
        )))
        .await
    }

    /// Sends a client `ping` command and waits for its reply.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call(Request::Ping(PingRequest {})).await.map(drop)
    }

    /// Refreshes the connection token.
    pub async fn refresh(&self, token: &str) -> Result<RefreshResult, ClientError> {
        let reply = self
            .call(Request::Refresh(RefreshRequest {
                token: token.to_owned(),
            }))
            .await?;
        expect(reply.refresh, "refresh")
    }

    /// Refreshes the subscription token of `channel`.
    pub async fn sub_refresh(
        &self,
        channel: &str,
        token: &str,
    ) -> Result<SubRefreshResult, ClientError> {
        let reply = self
            .call(Request::SubRefresh(SubRefreshRequest {
                channel: channel.to_owned(),
                token: token.to_owned(),
            }))
            .await?;
        expect(reply.sub_refresh, "sub_refresh")
    }

    /// Sends an arbitrary WebSocket message on this connection (tests of
    /// server robustness; no reply routing).
    pub async fn send_raw(&self, message: Message) -> Result<(), ClientError> {
        self.enqueue(Outgoing::Send(message)).await
    }

    /// Closes the connection normally (code 1000) and waits (at most a couple
    /// of seconds) for the server's close frame. Pending and later calls fail
    /// with [`ClientError::Disconnected`].
    pub async fn close(&self) {
        self.close_with(1000, "").await;
    }

    /// Closes the connection with `code` and `reason` (see [`Client::close`]).
    pub async fn close_with(&self, code: u16, reason: &str) {
        let (done, closed) = oneshot::channel();
        let request = Outgoing::Close {
            frame: close_frame(code, reason),
            done,
        };
        if self.tx.send(request).await.is_ok() {
            let _ = closed.await;
        }
    }

    async fn enqueue(&self, out: Outgoing) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.tx.send(out))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| self.shared.termination())
    }
}

fn expect<T>(result: Option<T>, method: &str) -> Result<T, ClientError> {
    result.ok_or_else(|| ClientError::Decode(format!("{method} reply without a {method} result")))
}
