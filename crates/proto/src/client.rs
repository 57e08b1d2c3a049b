//! Centrifugo client protocol v2 messages.
//!
//! Every type derives both [`prost::Message`] (protobuf framing, field numbers
//! from the official `client.proto`) and serde `Serialize`/`Deserialize` (JSON
//! framing, snake_case field names as in the proto). In JSON, fields equal to
//! their default are omitted on output and missing fields are accepted on
//! input; payload fields (`data`, `conn_info`, `chan_info`) are embedded raw
//! JSON (see [`crate::raw_json`]).
//!
//! A [`Command`] travels client → server, a [`Reply`] server → client. A reply
//! with `id == 0` carries an asynchronous [`Push`]; an empty reply (`{}`) is the
//! server's ping and an empty command (`{}`) the client's pong.

use std::collections::HashMap;

use bytes::Bytes;

/// Declares a protocol message: adds the prost + serde derives, the container
/// `#[serde(default)]` and "omit when default" on every field.
macro_rules! message {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, ::prost::Message, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(skip_serializing_if = "crate::is_default")]
                pub $field: $ty,
            )*
        }
    };
}

message! {
    /// An error returned in a reply to a command.
    pub struct Error {
        /// Error code (see [`crate::codes::ClientError`]).
        #[prost(uint32, tag = "1")]
        pub code: u32,
        /// Human readable message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// True when the client may retry the command later.
        #[prost(bool, tag = "3")]
        pub temporary: bool,
    }
}

message! {
    /// A client → server command: an id plus (at most) one request.
    ///
    /// A command with no request set and `id == 0` is a pong.
    pub struct Command {
        /// Command id echoed in the reply; 0 for commands that expect no reply (`send`, pong).
        #[prost(uint32, tag = "1")]
        pub id: u32,
        /// Connect request.
        #[prost(message, optional, tag = "4")]
        pub connect: Option<ConnectRequest>,
        /// Subscribe request.
        #[prost(message, optional, tag = "5")]
        pub subscribe: Option<SubscribeRequest>,
        /// Unsubscribe request.
        #[prost(message, optional, tag = "6")]
        pub unsubscribe: Option<UnsubscribeRequest>,
        /// Publish request.
        #[prost(message, optional, tag = "7")]
        pub publish: Option<PublishRequest>,
        /// Presence request.
        #[prost(message, optional, tag = "8")]
        pub presence: Option<PresenceRequest>,
        /// Presence stats request.
        #[prost(message, optional, tag = "9")]
        pub presence_stats: Option<PresenceStatsRequest>,
        /// History request.
        #[prost(message, optional, tag = "10")]
        pub history: Option<HistoryRequest>,
        /// Ping request (client-initiated ping, rarely used).
        #[prost(message, optional, tag = "11")]
        pub ping: Option<PingRequest>,
        /// Asynchronous message to the server (no reply).
        #[prost(message, optional, tag = "12")]
        pub send: Option<SendRequest>,
        /// RPC request.
        #[prost(message, optional, tag = "13")]
        pub rpc: Option<RpcRequest>,
        /// Connection token refresh request.
        #[prost(message, optional, tag = "14")]
        pub refresh: Option<RefreshRequest>,
        /// Subscription token refresh request.
        #[prost(message, optional, tag = "15")]
        pub sub_refresh: Option<SubRefreshRequest>,
    }
}

message! {
    /// A server → client reply: the answer to a command (`id > 0`) or a push (`id == 0`).
    ///
    /// An empty reply is the server's ping.
    pub struct Reply {
        /// Id of the command this replies to; 0 for pushes and pings.
        #[prost(uint32, tag = "1")]
        pub id: u32,
        /// Set when the command failed.
        #[prost(message, optional, tag = "2")]
        pub error: Option<Error>,
        /// Asynchronous push (with `id == 0`).
        #[prost(message, optional, tag = "4")]
        pub push: Option<Push>,
        /// Connect result.
        #[prost(message, optional, tag = "5")]
        pub connect: Option<ConnectResult>,
        /// Subscribe result.
        #[prost(message, optional, tag = "6")]
        pub subscribe: Option<SubscribeResult>,
        /// Unsubscribe result.
        #[prost(message, optional, tag = "7")]
        pub unsubscribe: Option<UnsubscribeResult>,
        /// Publish result.
        #[prost(message, optional, tag = "8")]
        pub publish: Option<PublishResult>,
        /// Presence result.
        #[prost(message, optional, tag = "9")]
        pub presence: Option<PresenceResult>,
        /// Presence stats result.
        #[prost(message, optional, tag = "10")]
        pub presence_stats: Option<PresenceStatsResult>,
        /// History result.
        #[prost(message, optional, tag = "11")]
        pub history: Option<HistoryResult>,
        /// Ping result.
        #[prost(message, optional, tag = "12")]
        pub ping: Option<PingResult>,
        /// RPC result.
        #[prost(message, optional, tag = "13")]
        pub rpc: Option<RpcResult>,
        /// Connection refresh result.
        #[prost(message, optional, tag = "14")]
        pub refresh: Option<RefreshResult>,
        /// Subscription refresh result.
        #[prost(message, optional, tag = "15")]
        pub sub_refresh: Option<SubRefreshResult>,
    }
}

message! {
    /// An asynchronous server → client message, carried in a [`Reply`] with `id == 0`.
    pub struct Push {
        /// Deprecated numeric push type; always 0 in protocol v2.
        #[prost(int64, tag = "1")]
        pub id: i64,
        /// Channel the push relates to (empty for connection-level pushes).
        #[prost(string, tag = "2")]
        pub channel: String,
        /// A publication in `channel` (JSON name `pub`).
        #[prost(message, optional, tag = "4")]
        #[serde(rename = "pub")]
        pub publication: Option<Publication>,
        /// A client joined `channel`.
        #[prost(message, optional, tag = "5")]
        pub join: Option<Join>,
        /// A client left `channel`.
        #[prost(message, optional, tag = "6")]
        pub leave: Option<Leave>,
        /// The server unsubscribed the client from `channel`.
        #[prost(message, optional, tag = "7")]
        pub unsubscribe: Option<Unsubscribe>,
        /// An asynchronous message to the connection.
        #[prost(message, optional, tag = "8")]
        pub message: Option<AsyncMessage>,
        /// The server subscribed the client to `channel` (server-side subscription).
        #[prost(message, optional, tag = "9")]
        pub subscribe: Option<Subscribe>,
        /// Connect push (unidirectional transports).
        #[prost(message, optional, tag = "10")]
        pub connect: Option<Connect>,
        /// The server disconnects the client.
        #[prost(message, optional, tag = "11")]
        pub disconnect: Option<Disconnect>,
        /// Connection refreshed by the server (unidirectional transports).
        #[prost(message, optional, tag = "12")]
        pub refresh: Option<Refresh>,
    }
}

message! {
    /// Information about a client connection (publisher, presence member, joiner).
    pub struct ClientInfo {
        /// User id.
        #[prost(string, tag = "1")]
        pub user: String,
        /// Client (connection) id.
        #[prost(string, tag = "2")]
        pub client: String,
        /// Connection info from the connection token (raw JSON).
        #[prost(bytes = "bytes", tag = "3")]
        #[serde(with = "crate::raw_json")]
        pub conn_info: Bytes,
        /// Channel info from the subscription token (raw JSON).
        #[prost(bytes = "bytes", tag = "4")]
        #[serde(with = "crate::raw_json")]
        pub chan_info: Bytes,
    }
}

message! {
    /// A message published to a channel.
    pub struct Publication {
        /// Payload (raw JSON in JSON framing).
        #[prost(bytes = "bytes", tag = "4")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Publisher, when published by a client.
        #[prost(message, optional, tag = "5")]
        pub info: Option<ClientInfo>,
        /// Offset in the channel stream (0 when the channel has no history).
        #[prost(uint64, tag = "6")]
        pub offset: u64,
        /// Publication tags.
        #[prost(map = "string, string", tag = "7")]
        pub tags: HashMap<String, String>,
        /// True when `data` is a delta against the previous publication.
        #[prost(bool, tag = "8")]
        pub delta: bool,
        /// Publication time, Unix milliseconds.
        #[prost(int64, tag = "9")]
        pub time: i64,
        /// Channel, used when the channel is not known from context (wildcard subscriptions).
        #[prost(string, tag = "10")]
        pub channel: String,
    }
}

message! {
    /// Join push body.
    pub struct Join {
        /// The client that joined.
        #[prost(message, optional, tag = "1")]
        pub info: Option<ClientInfo>,
    }
}

message! {
    /// Leave push body.
    pub struct Leave {
        /// The client that left.
        #[prost(message, optional, tag = "1")]
        pub info: Option<ClientInfo>,
    }
}

message! {
    /// Unsubscribe push body (see [`crate::codes::Unsubscribe`] for codes).
    pub struct Unsubscribe {
        /// Unsubscribe code.
        #[prost(uint32, tag = "2")]
        pub code: u32,
        /// Unsubscribe reason.
        #[prost(string, tag = "3")]
        pub reason: String,
    }
}

message! {
    /// Subscribe push body (server-side subscription).
    pub struct Subscribe {
        /// Whether the subscription supports recovery.
        #[prost(bool, tag = "1")]
        pub recoverable: bool,
        /// Stream epoch.
        #[prost(string, tag = "4")]
        pub epoch: String,
        /// Current stream offset.
        #[prost(uint64, tag = "5")]
        pub offset: u64,
        /// Whether the subscription is positioned.
        #[prost(bool, tag = "6")]
        pub positioned: bool,
        /// Custom subscribe data (raw JSON).
        #[prost(bytes = "bytes", tag = "7")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
    }
}

message! {
    /// Asynchronous message push body (`message` in the proto).
    pub struct AsyncMessage {
        /// Payload (raw JSON).
        #[prost(bytes = "bytes", tag = "1")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
    }
}

message! {
    /// Connect push body (unidirectional transports).
    pub struct Connect {
        /// Client id.
        #[prost(string, tag = "1")]
        pub client: String,
        /// Server version.
        #[prost(string, tag = "2")]
        pub version: String,
        /// Custom connect data (raw JSON).
        #[prost(bytes = "bytes", tag = "3")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Server-side subscriptions, by channel.
        #[prost(map = "string, message", tag = "4")]
        pub subs: HashMap<String, SubscribeResult>,
        /// Whether the connection expires.
        #[prost(bool, tag = "5")]
        pub expires: bool,
        /// Seconds until expiration.
        #[prost(uint32, tag = "6")]
        pub ttl: u32,
        /// Server ping interval, seconds.
        #[prost(uint32, tag = "7")]
        pub ping: u32,
        /// Whether the client must answer pings with pongs.
        #[prost(bool, tag = "8")]
        pub pong: bool,
        /// Session id.
        #[prost(string, tag = "9")]
        pub session: String,
        /// Node name.
        #[prost(string, tag = "10")]
        pub node: String,
        /// Server time, Unix milliseconds.
        #[prost(int64, tag = "11")]
        pub time: i64,
    }
}

message! {
    /// Disconnect push body.
    pub struct Disconnect {
        /// Disconnect code (see [`crate::codes::Disconnect`]).
        #[prost(uint32, tag = "1")]
        pub code: u32,
        /// Disconnect reason.
        #[prost(string, tag = "2")]
        pub reason: String,
        /// Deprecated: whether the client should reconnect (derived from the code in v2).
        #[prost(bool, tag = "3")]
        pub reconnect: bool,
    }
}

message! {
    /// Refresh push body (unidirectional transports).
    pub struct Refresh {
        /// Whether the connection expires.
        #[prost(bool, tag = "1")]
        pub expires: bool,
        /// Seconds until expiration.
        #[prost(uint32, tag = "2")]
        pub ttl: u32,
    }
}

message! {
    /// Connect request: the first command of a connection.
    pub struct ConnectRequest {
        /// Connection JWT.
        #[prost(string, tag = "1")]
        pub token: String,
        /// Custom connect data (raw JSON).
        #[prost(bytes = "bytes", tag = "2")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Subscriptions to recover on connect, by channel.
        #[prost(map = "string, message", tag = "3")]
        pub subs: HashMap<String, SubscribeRequest>,
        /// Client SDK name.
        #[prost(string, tag = "4")]
        pub name: String,
        /// Client SDK version.
        #[prost(string, tag = "5")]
        pub version: String,
        /// Emulated headers.
        #[prost(map = "string, string", tag = "6")]
        pub headers: HashMap<String, String>,
        /// Client feature flags.
        #[prost(int64, tag = "7")]
        pub flag: i64,
    }
}

message! {
    /// Connect result.
    pub struct ConnectResult {
        /// Client id.
        #[prost(string, tag = "1")]
        pub client: String,
        /// Server version.
        #[prost(string, tag = "2")]
        pub version: String,
        /// Whether the connection expires.
        #[prost(bool, tag = "3")]
        pub expires: bool,
        /// Seconds until expiration.
        #[prost(uint32, tag = "4")]
        pub ttl: u32,
        /// Custom connect data (raw JSON).
        #[prost(bytes = "bytes", tag = "5")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Server-side subscriptions, by channel.
        #[prost(map = "string, message", tag = "6")]
        pub subs: HashMap<String, SubscribeResult>,
        /// Server ping interval, seconds.
        #[prost(uint32, tag = "7")]
        pub ping: u32,
        /// Whether the client must answer pings with pongs.
        #[prost(bool, tag = "8")]
        pub pong: bool,
        /// Session id.
        #[prost(string, tag = "9")]
        pub session: String,
        /// Node name.
        #[prost(string, tag = "10")]
        pub node: String,
        /// Server time, Unix milliseconds.
        #[prost(int64, tag = "11")]
        pub time: i64,
    }
}

message! {
    /// Connection token refresh request.
    pub struct RefreshRequest {
        /// New connection JWT.
        #[prost(string, tag = "1")]
        pub token: String,
    }
}

message! {
    /// Connection token refresh result.
    pub struct RefreshResult {
        /// Client id.
        #[prost(string, tag = "1")]
        pub client: String,
        /// Server version.
        #[prost(string, tag = "2")]
        pub version: String,
        /// Whether the connection expires.
        #[prost(bool, tag = "3")]
        pub expires: bool,
        /// Seconds until expiration.
        #[prost(uint32, tag = "4")]
        pub ttl: u32,
    }
}

message! {
    /// Subscribe request.
    pub struct SubscribeRequest {
        /// Channel to subscribe to.
        #[prost(string, tag = "1")]
        pub channel: String,
        /// Subscription JWT.
        #[prost(string, tag = "2")]
        pub token: String,
        /// Whether to recover missed publications since `epoch`/`offset`.
        #[prost(bool, tag = "3")]
        pub recover: bool,
        /// Known stream epoch (for recovery).
        #[prost(string, tag = "6")]
        pub epoch: String,
        /// Last seen offset (for recovery).
        #[prost(uint64, tag = "7")]
        pub offset: u64,
        /// Custom subscribe data (raw JSON).
        #[prost(bytes = "bytes", tag = "8")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Client asks for a positioned subscription.
        #[prost(bool, tag = "9")]
        pub positioned: bool,
        /// Client asks for a recoverable subscription.
        #[prost(bool, tag = "10")]
        pub recoverable: bool,
        /// Client asks for join/leave pushes.
        #[prost(bool, tag = "11")]
        pub join_leave: bool,
        /// Requested delta compression type (e.g. `fossil`).
        #[prost(string, tag = "12")]
        pub delta: String,
        /// Publication tags filter.
        #[prost(message, optional, tag = "13")]
        pub tf: Option<FilterNode>,
        /// Client feature flags.
        #[prost(int64, tag = "14")]
        pub flag: i64,
    }
}

message! {
    /// Subscribe result.
    pub struct SubscribeResult {
        /// Whether the subscription expires.
        #[prost(bool, tag = "1")]
        pub expires: bool,
        /// Seconds until expiration.
        #[prost(uint32, tag = "2")]
        pub ttl: u32,
        /// Whether the subscription supports recovery.
        #[prost(bool, tag = "3")]
        pub recoverable: bool,
        /// Stream epoch.
        #[prost(string, tag = "6")]
        pub epoch: String,
        /// Recovered (or initial) publications.
        #[prost(message, repeated, tag = "7")]
        pub publications: Vec<Publication>,
        /// Whether all missed publications were recovered.
        #[prost(bool, tag = "8")]
        pub recovered: bool,
        /// Current stream offset.
        #[prost(uint64, tag = "9")]
        pub offset: u64,
        /// Whether the subscription is positioned.
        #[prost(bool, tag = "10")]
        pub positioned: bool,
        /// Custom subscribe data (raw JSON).
        #[prost(bytes = "bytes", tag = "11")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Whether the client asked for recovery.
        #[prost(bool, tag = "12")]
        pub was_recovering: bool,
        /// Whether delta compression is negotiated.
        #[prost(bool, tag = "13")]
        pub delta: bool,
        /// Channel id for channel compaction.
        #[prost(int64, tag = "14")]
        pub id: i64,
    }
}

message! {
    /// Subscription token refresh request.
    pub struct SubRefreshRequest {
        /// Channel.
        #[prost(string, tag = "1")]
        pub channel: String,
        /// New subscription JWT.
        #[prost(string, tag = "2")]
        pub token: String,
    }
}

message! {
    /// Subscription token refresh result.
    pub struct SubRefreshResult {
        /// Whether the subscription expires.
        #[prost(bool, tag = "1")]
        pub expires: bool,
        /// Seconds until expiration.
        #[prost(uint32, tag = "2")]
        pub ttl: u32,
    }
}

message! {
    /// Unsubscribe request.
    pub struct UnsubscribeRequest {
        /// Channel.
        #[prost(string, tag = "1")]
        pub channel: String,
    }
}

message! {
    /// Unsubscribe result (empty).
    pub struct UnsubscribeResult {}
}

message! {
    /// Publish request.
    pub struct PublishRequest {
        /// Channel.
        #[prost(string, tag = "1")]
        pub channel: String,
        /// Payload (raw JSON).
        #[prost(bytes = "bytes", tag = "2")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
    }
}

message! {
    /// Publish result (empty).
    pub struct PublishResult {}
}

message! {
    /// Presence request.
    pub struct PresenceRequest {
        /// Channel.
        #[prost(string, tag = "1")]
        pub channel: String,
    }
}

message! {
    /// Presence result.
    pub struct PresenceResult {
        /// Channel members, by client id.
        #[prost(map = "string, message", tag = "1")]
        pub presence: HashMap<String, ClientInfo>,
    }
}

message! {
    /// Presence stats request.
    pub struct PresenceStatsRequest {
        /// Channel.
        #[prost(string, tag = "1")]
        pub channel: String,
    }
}

message! {
    /// Presence stats result.
    pub struct PresenceStatsResult {
        /// Number of connections in the channel.
        #[prost(uint32, tag = "1")]
        pub num_clients: u32,
        /// Number of distinct users in the channel.
        #[prost(uint32, tag = "2")]
        pub num_users: u32,
    }
}

message! {
    /// A position in a channel stream.
    pub struct StreamPosition {
        /// Offset.
        #[prost(uint64, tag = "1")]
        pub offset: u64,
        /// Epoch.
        #[prost(string, tag = "2")]
        pub epoch: String,
    }
}

message! {
    /// History request.
    pub struct HistoryRequest {
        /// Channel.
        #[prost(string, tag = "1")]
        pub channel: String,
        /// Maximum publications to return (0: only the stream position, -1: all).
        #[prost(int32, tag = "7")]
        pub limit: i32,
        /// Return publications after this position.
        #[prost(message, optional, tag = "8")]
        pub since: Option<StreamPosition>,
        /// Iterate from newest to oldest.
        #[prost(bool, tag = "9")]
        pub reverse: bool,
    }
}

message! {
    /// History result.
    pub struct HistoryResult {
        /// Publications.
        #[prost(message, repeated, tag = "1")]
        pub publications: Vec<Publication>,
        /// Stream epoch.
        #[prost(string, tag = "2")]
        pub epoch: String,
        /// Current stream offset.
        #[prost(uint64, tag = "3")]
        pub offset: u64,
    }
}

message! {
    /// Client ping request (empty).
    pub struct PingRequest {}
}

message! {
    /// Client ping result (empty).
    pub struct PingResult {}
}

message! {
    /// RPC request (`RPCRequest` in the proto).
    pub struct RpcRequest {
        /// Parameters (raw JSON).
        #[prost(bytes = "bytes", tag = "1")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// RPC method name.
        #[prost(string, tag = "2")]
        pub method: String,
    }
}

message! {
    /// RPC result (`RPCResult` in the proto).
    pub struct RpcResult {
        /// Result (raw JSON).
        #[prost(bytes = "bytes", tag = "1")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
    }
}

message! {
    /// Asynchronous client → server message (no reply).
    pub struct SendRequest {
        /// Payload (raw JSON).
        #[prost(bytes = "bytes", tag = "1")]
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
    }
}

message! {
    /// A node of a publication tags filter expression tree.
    pub struct FilterNode {
        /// Logical operation (`and`, `or`, `not`) or empty for a leaf comparison.
        #[prost(string, tag = "1")]
        pub op: String,
        /// Tag key (leaf).
        #[prost(string, tag = "2")]
        pub key: String,
        /// Comparison operator (leaf).
        #[prost(string, tag = "3")]
        pub cmp: String,
        /// Comparison value (leaf).
        #[prost(string, tag = "4")]
        pub val: String,
        /// Comparison values for set operators (leaf).
        #[prost(string, repeated, tag = "5")]
        pub vals: Vec<String>,
        /// Child nodes (logical operations).
        #[prost(message, repeated, tag = "6")]
        pub nodes: Vec<FilterNode>,
    }
}

/// The request carried by a [`Command`], as an owned enum (see [`Command::into_request`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Connect.
    Connect(ConnectRequest),
    /// Subscribe.
    Subscribe(SubscribeRequest),
    /// Unsubscribe.
    Unsubscribe(UnsubscribeRequest),
    /// Publish.
    Publish(PublishRequest),
    /// Presence.
    Presence(PresenceRequest),
    /// Presence stats.
    PresenceStats(PresenceStatsRequest),
    /// History.
    History(HistoryRequest),
    /// Ping.
    Ping(PingRequest),
    /// Send (asynchronous message, no reply).
    Send(SendRequest),
    /// RPC.
    Rpc(RpcRequest),
    /// Connection refresh.
    Refresh(RefreshRequest),
    /// Subscription refresh.
    SubRefresh(SubRefreshRequest),
    /// No request set: a pong when the command id is 0.
    Empty,
}

impl Request {
    /// Protocol method name: `connect`, `subscribe`, …, `sub_refresh`, or `empty`.
    pub fn method_name(&self) -> &'static str {
        match self {
            Request::Connect(_) => "connect",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe(_) => "unsubscribe",
            Request::Publish(_) => "publish",
            Request::Presence(_) => "presence",
            Request::PresenceStats(_) => "presence_stats",
            Request::History(_) => "history",
            Request::Ping(_) => "ping",
            Request::Send(_) => "send",
            Request::Rpc(_) => "rpc",
            Request::Refresh(_) => "refresh",
            Request::SubRefresh(_) => "sub_refresh",
            Request::Empty => "empty",
        }
    }
}

impl Command {
    /// Builds a command with the given id carrying `request`.
    pub fn new(id: u32, request: Request) -> Command {
        let mut c = Command {
            id,
            ..Command::default()
        };
        match request {
            Request::Connect(r) => c.connect = Some(r),
            Request::Subscribe(r) => c.subscribe = Some(r),
            Request::Unsubscribe(r) => c.unsubscribe = Some(r),
            Request::Publish(r) => c.publish = Some(r),
            Request::Presence(r) => c.presence = Some(r),
            Request::PresenceStats(r) => c.presence_stats = Some(r),
            Request::History(r) => c.history = Some(r),
            Request::Ping(r) => c.ping = Some(r),
            Request::Send(r) => c.send = Some(r),
            Request::Rpc(r) => c.rpc = Some(r),
            Request::Refresh(r) => c.refresh = Some(r),
            Request::SubRefresh(r) => c.sub_refresh = Some(r),
            Request::Empty => {}
        }
        c
    }

    /// The client's pong: an empty command.
    pub fn pong() -> Command {
        Command::default()
    }

    /// True for a pong: no id and no request.
    pub fn is_pong(&self) -> bool {
        *self == Command::default()
    }

    /// Method name of the request: `connect`, `subscribe`, `unsubscribe`,
    /// `publish`, `presence`, `presence_stats`, `history`, `ping`, `send`,
    /// `rpc`, `refresh`, `sub_refresh`; `pong` when nothing is set and `id == 0`;
    /// `empty` when nothing is set but `id != 0` (a malformed command).
    ///
    /// When several requests are set (malformed), the first in field order wins,
    /// consistently with [`Command::into_request`].
    pub fn method_name(&self) -> &'static str {
        let name = self.request_ref_name();
        if name == "empty" && self.id == 0 {
            "pong"
        } else {
            name
        }
    }

    fn request_ref_name(&self) -> &'static str {
        if self.connect.is_some() {
            "connect"
        } else if self.subscribe.is_some() {
            "subscribe"
        } else if self.unsubscribe.is_some() {
            "unsubscribe"
        } else if self.publish.is_some() {
            "publish"
        } else if self.presence.is_some() {
            "presence"
        } else if self.presence_stats.is_some() {
            "presence_stats"
        } else if self.history.is_some() {
            "history"
        } else if self.ping.is_some() {
            "ping"
        } else if self.send.is_some() {
            "send"
        } else if self.rpc.is_some() {
            "rpc"
        } else if self.refresh.is_some() {
            "refresh"
        } else if self.sub_refresh.is_some() {
            "sub_refresh"
        } else {
            "empty"
        }
    }

    /// Number of request fields set; a well-formed command has at most one.
    pub fn request_count(&self) -> usize {
        [
            self.connect.is_some(),
            self.subscribe.is_some(),
            self.unsubscribe.is_some(),
            self.publish.is_some(),
            self.presence.is_some(),
            self.presence_stats.is_some(),
            self.history.is_some(),
            self.ping.is_some(),
            self.send.is_some(),
            self.rpc.is_some(),
            self.refresh.is_some(),
            self.sub_refresh.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    /// Moves the request out as an enum (read `id` first). When several are set
    /// the first in field order wins; [`Request::Empty`] when none is set.
    pub fn into_request(self) -> Request {
        let Command {
            id: _,
            connect,
            subscribe,
            unsubscribe,
            publish,
            presence,
            presence_stats,
            history,
            ping,
            send,
            rpc,
            refresh,
            sub_refresh,
        } = self;
        connect
            .map(Request::Connect)
            .or_else(|| subscribe.map(Request::Subscribe))
            .or_else(|| unsubscribe.map(Request::Unsubscribe))
            .or_else(|| publish.map(Request::Publish))
            .or_else(|| presence.map(Request::Presence))
            .or_else(|| presence_stats.map(Request::PresenceStats))
            .or_else(|| history.map(Request::History))
            .or_else(|| ping.map(Request::Ping))
            .or_else(|| send.map(Request::Send))
            .or_else(|| rpc.map(Request::Rpc))
            .or_else(|| refresh.map(Request::Refresh))
            .or_else(|| sub_refresh.map(Request::SubRefresh))
            .unwrap_or(Request::Empty)
    }
}

/// A successful command result, as an owned enum (see [`Reply::with_result`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyResult {
    /// Connect.
    Connect(ConnectResult),
    /// Subscribe.
    Subscribe(SubscribeResult),
    /// Unsubscribe.
    Unsubscribe(UnsubscribeResult),
    /// Publish.
    Publish(PublishResult),
    /// Presence.
    Presence(PresenceResult),
    /// Presence stats.
    PresenceStats(PresenceStatsResult),
    /// History.
    History(HistoryResult),
    /// Ping.
    Ping(PingResult),
    /// RPC.
    Rpc(RpcResult),
    /// Connection refresh.
    Refresh(RefreshResult),
    /// Subscription refresh.
    SubRefresh(SubRefreshResult),
}

impl Reply {
    /// The server's ping: an empty reply (`{}` in JSON).
    pub fn ping() -> Reply {
        Reply::default()
    }

    /// True for the server's ping (an empty reply).
    pub fn is_ping(&self) -> bool {
        *self == Reply::default()
    }

    /// An error reply to command `id`.
    pub fn for_error(id: u32, error: Error) -> Reply {
        Reply {
            id,
            error: Some(error),
            ..Reply::default()
        }
    }

    /// A push reply (`id == 0`).
    pub fn push(push: Push) -> Reply {
        Reply {
            push: Some(push),
            ..Reply::default()
        }
    }

    /// A successful reply to command `id`.
    pub fn with_result(id: u32, result: ReplyResult) -> Reply {
        let mut r = Reply {
            id,
            ..Reply::default()
        };
        match result {
            ReplyResult::Connect(v) => r.connect = Some(v),
            ReplyResult::Subscribe(v) => r.subscribe = Some(v),
            ReplyResult::Unsubscribe(v) => r.unsubscribe = Some(v),
            ReplyResult::Publish(v) => r.publish = Some(v),
            ReplyResult::Presence(v) => r.presence = Some(v),
            ReplyResult::PresenceStats(v) => r.presence_stats = Some(v),
            ReplyResult::History(v) => r.history = Some(v),
            ReplyResult::Ping(v) => r.ping = Some(v),
            ReplyResult::Rpc(v) => r.rpc = Some(v),
            ReplyResult::Refresh(v) => r.refresh = Some(v),
            ReplyResult::SubRefresh(v) => r.sub_refresh = Some(v),
        }
        r
    }

    /// Moves the result out: `Ok(Some(result))`, `Err(error)` when the error is
    /// set, `Ok(None)` when neither is (pushes, pings).
    pub fn into_result(self) -> Result<Option<ReplyResult>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(self
            .connect
            .map(ReplyResult::Connect)
            .or(self.subscribe.map(ReplyResult::Subscribe))
            .or(self.unsubscribe.map(ReplyResult::Unsubscribe))
            .or(self.publish.map(ReplyResult::Publish))
            .or(self.presence.map(ReplyResult::Presence))
            .or(self.presence_stats.map(ReplyResult::PresenceStats))
            .or(self.history.map(ReplyResult::History))
            .or(self.ping.map(ReplyResult::Ping))
            .or(self.rpc.map(ReplyResult::Rpc))
            .or(self.refresh.map(ReplyResult::Refresh))
            .or(self.sub_refresh.map(ReplyResult::SubRefresh)))
    }
}

impl Push {
    fn on(channel: impl Into<String>) -> Push {
        Push {
            channel: channel.into(),
            ..Push::default()
        }
    }

    /// A publication push for `channel`.
    pub fn publication(channel: impl Into<String>, publication: Publication) -> Push {
        Push {
            publication: Some(publication),
            ..Push::on(channel)
        }
    }

    /// A join push for `channel`.
    pub fn join(channel: impl Into<String>, info: ClientInfo) -> Push {
        Push {
            join: Some(Join { info: Some(info) }),
            ..Push::on(channel)
        }
    }

    /// A leave push for `channel`.
    pub fn leave(channel: impl Into<String>, info: ClientInfo) -> Push {
        Push {
            leave: Some(Leave { info: Some(info) }),
            ..Push::on(channel)
        }
    }

    /// An unsubscribe push for `channel`.
    pub fn unsubscribe(channel: impl Into<String>, unsubscribe: Unsubscribe) -> Push {
        Push {
            unsubscribe: Some(unsubscribe),
            ..Push::on(channel)
        }
    }

    /// A server-side subscribe push for `channel`.
    pub fn subscribe(channel: impl Into<String>, subscribe: Subscribe) -> Push {
        Push {
            subscribe: Some(subscribe),
            ..Push::on(channel)
        }
    }

    /// An asynchronous message push carrying `data`.
    pub fn message(data: Bytes) -> Push {
        Push {
            message: Some(AsyncMessage { data }),
            ..Push::default()
        }
    }

    /// A disconnect push.
    pub fn disconnect(disconnect: Disconnect) -> Push {
        Push {
            disconnect: Some(disconnect),
            ..Push::default()
        }
    }

    /// A connect push (unidirectional transports).
    pub fn connect(connect: Connect) -> Push {
        Push {
            connect: Some(connect),
            ..Push::default()
        }
    }

    /// A refresh push (unidirectional transports).
    pub fn refresh(refresh: Refresh) -> Push {
        Push {
            refresh: Some(refresh),
            ..Push::default()
        }
    }

    /// Kind of push: `pub`, `join`, `leave`, `unsubscribe`, `message`,
    /// `subscribe`, `connect`, `disconnect`, `refresh`, or `empty`.
    pub fn kind(&self) -> &'static str {
        if self.publication.is_some() {
            "pub"
        } else if self.join.is_some() {
            "join"
        } else if self.leave.is_some() {
            "leave"
        } else if self.unsubscribe.is_some() {
            "unsubscribe"
        } else if self.message.is_some() {
            "message"
        } else if self.subscribe.is_some() {
            "subscribe"
        } else if self.connect.is_some() {
            "connect"
        } else if self.disconnect.is_some() {
            "disconnect"
        } else if self.refresh.is_some() {
            "refresh"
        } else {
            "empty"
        }
    }
}

impl Error {
    /// An error with the given code and message (not temporary).
    pub fn new(code: u32, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            temporary: false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Encoding, decode_commands, decode_replies, encode_command, encode_reply};
    use prost::Message as _;
    use serde_json::{Value, json};

    fn parse_cmd(s: &str) -> Command {
        let cmds = decode_commands(Encoding::Json, s.as_bytes(), 10).unwrap();
        assert_eq!(cmds.len(), 1);
        cmds.into_iter().next().unwrap()
    }

    /// Asserts `s` decodes and re-encodes to the same JSON value.
    fn cmd_round_trip(s: &str) -> Command {
        let cmd = parse_cmd(s);
        let out = encode_command(Encoding::Json, &cmd);
        let a: Value = serde_json::from_slice(&out).unwrap();
        let b: Value = serde_json::from_str(s).unwrap();
        assert_eq!(a, b, "re-encoded {}", String::from_utf8_lossy(&out));
        cmd
    }

    fn reply_round_trip(s: &str) -> Reply {
        let replies = decode_replies(Encoding::Json, s.as_bytes()).unwrap();
        assert_eq!(replies.len(), 1);
        let out = encode_reply(Encoding::Json, &replies[0]);
        let a: Value = serde_json::from_slice(&out).unwrap();
        let b: Value = serde_json::from_str(s).unwrap();
        assert_eq!(a, b, "re-encoded {}", String::from_utf8_lossy(&out));
        // And through protobuf.
        let pb = replies[0].encode_to_vec();
        assert_eq!(Reply::decode(&pb[..]).unwrap(), replies[0]);
        replies.into_iter().next().unwrap()
    }

    #[test]
    fn sdk_commands_json() {
        let c = cmd_round_trip(r#"{"id":1,"connect":{"token":"t","name":"js"}}"#);
        assert_eq!(c.method_name(), "connect");
        assert_eq!(c.connect.as_ref().unwrap().token, "t");

        let c = cmd_round_trip(
            r#"{"id":2,"subscribe":{"channel":"chat","recover":true,"epoch":"ab","offset":5}}"#,
        );
        let s = c.subscribe.as_ref().unwrap();
        assert!(s.recover);
        assert_eq!((s.epoch.as_str(), s.offset), ("ab", 5));

        let c = cmd_round_trip(r#"{"id":3,"publish":{"channel":"chat","data":{"text":"hi"}}}"#);
        assert_eq!(&c.publish.as_ref().unwrap().data[..], br#"{"text":"hi"}"#);

        let c = cmd_round_trip(r#"{"id":4,"rpc":{"method":"rtc.join","data":[1,"x",null]}}"#);
        assert_eq!(c.method_name(), "rpc");
        let c = cmd_round_trip(r#"{"send":{"data":"plain string"}}"#);
        assert_eq!(c.method_name(), "send");
        assert_eq!(&c.send.unwrap().data[..], br#""plain string""#);
        cmd_round_trip(
            r#"{"id":5,"history":{"channel":"c","limit":-1,"since":{"offset":7,"epoch":"e"},"reverse":true}}"#,
        );
        cmd_round_trip(r#"{"id":6,"ping":{}}"#);
        cmd_round_trip(r#"{"id":7,"sub_refresh":{"channel":"c","token":"x"}}"#);
        cmd_round_trip(
            r#"{"id":8,"connect":{"subs":{"a":{"recover":true,"offset":1}},"headers":{"k":"v"}}}"#,
        );
        cmd_round_trip(
            r#"{"id":9,"subscribe":{"channel":"c","tf":{"op":"and","nodes":[{"key":"k","cmp":"eq","val":"v"}]}}}"#,
        );
        assert_eq!(cmd_round_trip("{}").method_name(), "pong");
        assert_eq!(cmd_round_trip(r#"{"id":10}"#).method_name(), "empty");
    }

    #[test]
    fn unknown_and_missing_fields_accepted() {
        let c = parse_cmd(r#"{"id":1,"method":0,"params":{},"connect":{"unknown":1}}"#);
        assert_eq!(c.connect, Some(ConnectRequest::default()));
        // Large uint64 offsets are plain JSON numbers.
        let c = parse_cmd(r#"{"id":1,"subscribe":{"offset":18446744073709551615}}"#);
        assert_eq!(c.subscribe.unwrap().offset, u64::MAX);
    }

    #[test]
    fn replies_json() {
        let r =
            reply_round_trip(r#"{"push":{"channel":"chat","pub":{"data":{"a":1},"offset":3}}}"#);
        let push = r.push.unwrap();
        assert_eq!(push.kind(), "pub");
        assert_eq!(push.publication.unwrap().offset, 3);

        reply_round_trip("{}");
        reply_round_trip(r#"{"id":3,"publish":{}}"#);
        reply_round_trip(r#"{"id":4,"error":{"code":103,"message":"permission denied"}}"#);
        reply_round_trip(
            r#"{"id":1,"connect":{"client":"c1","version":"0.1.0","ping":25,"pong":true,"subs":{"news":{"recoverable":true,"epoch":"x","offset":2}}}}"#,
        );
        reply_round_trip(
            r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"ab","offset":9,"recovered":true,"was_recovering":true,"publications":[{"data":{"x":1},"offset":8,"info":{"user":"u","client":"c","conn_info":{"n":1}},"tags":{"t":"v"}}]}}"#,
        );
        reply_round_trip(
            r#"{"id":5,"presence":{"presence":{"c1":{"user":"u","client":"c1","chan_info":"s"}}}}"#,
        );
        reply_round_trip(r#"{"id":6,"presence_stats":{"num_clients":2,"num_users":1}}"#);
        reply_round_trip(
            r#"{"push":{"channel":"chat","join":{"info":{"user":"u","client":"c"}}}}"#,
        );
        reply_round_trip(
            r#"{"push":{"channel":"chat","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#,
        );
        reply_round_trip(
            r#"{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}"#,
        );
        reply_round_trip(r#"{"push":{"message":{"data":{"rtc":"offer"}}}}"#);
        reply_round_trip(r#"{"id":7,"rpc":{"data":{"ok":true}}}"#);
    }

    #[test]
    fn constructors_serialize_as_expected() {
        let push = Push::publication(
            "chat",
            Publication {
                data: Bytes::from_static(br#"{"a":1}"#),
                offset: 3,
                ..Default::default()
            },
        );
        let out = encode_reply(Encoding::Json, &Reply::push(push));
        assert_eq!(
            &out[..],
            br#"{"push":{"channel":"chat","pub":{"data":{"a":1},"offset":3}}}"#
        );
        let out = encode_reply(
            Encoding::Json,
            &Reply::for_error(4, crate::codes::ClientError::BAD_REQUEST.to_error()),
        );
        assert_eq!(
            &out[..],
            br#"{"id":4,"error":{"code":107,"message":"bad request"}}"#
        );
        let out = encode_reply(
            Encoding::Json,
            &Reply::with_result(3, ReplyResult::Publish(PublishResult {})),
        );
        assert_eq!(&out[..], br#"{"id":3,"publish":{}}"#);
        assert_eq!(&encode_reply(Encoding::Json, &Reply::default())[..], b"{}");
    }

    #[test]
    fn non_json_data_is_base64_string() {
        let p = Publication {
            data: Bytes::from_static(&[0xff, 0x00, 0x01]),
            ..Default::default()
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v, json!({"data": "/wAB"}));
        // Valid UTF-8 but not JSON.
        let p = Publication {
            data: Bytes::from_static(b"hello {"),
            ..Default::default()
        };
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(s, r#"{"data":"aGVsbG8gew=="}"#);
        // Two JSON values is not one JSON document.
        let p = Publication {
            data: Bytes::from_static(b"1 2"),
            ..Default::default()
        };
        assert!(serde_json::from_str::<Value>(&serde_json::to_string(&p).unwrap()).is_ok());
    }

    #[test]
    fn protobuf_round_trip_and_field_numbers() {
        let cmd = Command::new(
            7,
            Request::Subscribe(SubscribeRequest {
                channel: "c".into(),
                offset: 5,
                ..Default::default()
            }),
        );
        let bytes = cmd.encode_to_vec();
        // id=7 (field 1 varint), subscribe (field 5, len 5): channel (1) "c", offset (7) 5.
        assert_eq!(bytes, vec![0x08, 7, 0x2a, 5, 0x0a, 1, b'c', 0x38, 5]);
        assert_eq!(Command::decode(&bytes[..]).unwrap(), cmd);

        let reply = Reply::push(Push::publication(
            "chat",
            Publication {
                data: Bytes::from_static(b"\x00binary"),
                offset: 1,
                tags: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            },
        ));
        let bytes = reply.encode_to_vec();
        assert_eq!(Reply::decode(&bytes[..]).unwrap(), reply);
        // Empty result messages survive protobuf (presence of the field matters).
        let r = Reply::with_result(3, ReplyResult::Publish(PublishResult {}));
        let back = Reply::decode(&r.encode_to_vec()[..]).unwrap();
        assert_eq!(back.publish, Some(PublishResult {}));
        assert_eq!(
            back.into_result().unwrap(),
            Some(ReplyResult::Publish(PublishResult {}))
        );
    }

    #[test]
    fn request_enum_round_trip() {
        let c = Command::new(9, Request::Rpc(RpcRequest::default()));
        assert_eq!(c.request_count(), 1);
        assert_eq!(c.method_name(), "rpc");
        assert_eq!(
            c.clone().into_request(),
            Request::Rpc(RpcRequest::default())
        );
        assert_eq!(Command::pong().into_request(), Request::Empty);
        assert_eq!(Request::Empty.method_name(), "empty");
    }
}
