//! Server HTTP API types, compatible with Centrifugo's server API (v5/v6).
//!
//! Requests are `POST /api/<method>` with a JSON body; replies are
//! `{"result": {...}}` on success or `{"error": {"code": N, "message": "..."}}`
//! (see [`ApiResponse`]). Unknown request fields are ignored, missing ones take
//! their default value (checking required fields is the handler's job); output
//! omits fields equal to their default. Payload fields (`data`, `info`,
//! `conn_info`, `chan_info`) are embedded raw JSON (see [`crate::raw_json`]);
//! `b64data` / `b64info` carry binary payloads as base64 instead.
//!
//! [`ApiRequest::decode`] turns a method name and a body into a typed request;
//! [`ApiResponse::encode`] produces the reply body.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::client::{ClientInfo, StreamPosition};

/// Declares an API message: serde derives, container `#[serde(default)]` and
/// "omit when default" on every field.
macro_rules! api_message {
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
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

/// An API error: `{"code": N, "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Error code.
    #[serde(default)]
    pub code: u32,
    /// Error message.
    #[serde(default)]
    pub message: Cow<'static, str>,
}

impl ApiError {
    const fn of(code: u32, message: &'static str) -> ApiError {
        ApiError {
            code,
            message: Cow::Borrowed(message),
        }
    }

    /// 100: internal server error.
    pub const INTERNAL: ApiError = ApiError::of(100, "internal server error");
    /// 101: unauthorized (Switchboard extension; Centrifugo answers HTTP 401 without a body).
    pub const UNAUTHORIZED: ApiError = ApiError::of(101, "unauthorized");
    /// 102: unknown channel (namespace not configured).
    pub const UNKNOWN_CHANNEL: ApiError = ApiError::of(102, "unknown channel");
    /// 103: permission denied (Switchboard extension).
    pub const PERMISSION_DENIED: ApiError = ApiError::of(103, "permission denied");
    /// 104: method not found.
    pub const METHOD_NOT_FOUND: ApiError = ApiError::of(104, "not found");
    /// 106: limit exceeded (Switchboard extension).
    pub const LIMIT_EXCEEDED: ApiError = ApiError::of(106, "limit exceeded");
    /// 107: bad request (malformed or incomplete request).
    pub const BAD_REQUEST: ApiError = ApiError::of(107, "bad request");
    /// 108: not available (feature not enabled, e.g. history on a channel without history).
    pub const NOT_AVAILABLE: ApiError = ApiError::of(108, "not available");
    /// 112: unrecoverable position (history cannot satisfy `since`).
    pub const UNRECOVERABLE_POSITION: ApiError = ApiError::of(112, "unrecoverable position");
    /// 113: conflict.
    pub const CONFLICT: ApiError = ApiError::of(113, "conflict");

    /// An error with a custom code and message.
    pub fn new(code: u32, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// The same code with a more specific message (e.g. `BAD_REQUEST.with_message("channel required")`).
    pub fn with_message(&self, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(self.code, message)
    }

    /// HTTP status for servers that map API errors to status codes (as
    /// Centrifugo does for errors of top-level methods): 500, 401, 404, 403,
    /// 400, 429, 416 or 409.
    pub fn http_status(&self) -> u16 {
        match self.code {
            101 => 401,
            102 | 104 => 404,
            103 => 403,
            106 => 429,
            107 | 108 => 400,
            112 => 416,
            113 => 409,
            _ => 500,
        }
    }
}

/// The reply envelope of every API method: `{"result": ...}` or `{"error": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiResponse<T> {
    /// Set on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// Set on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
}

impl<T> ApiResponse<T> {
    /// A success envelope.
    pub fn ok(result: T) -> ApiResponse<T> {
        ApiResponse {
            error: None,
            result: Some(result),
        }
    }

    /// An error envelope.
    pub fn err(error: ApiError) -> ApiResponse<T> {
        ApiResponse {
            error: Some(error),
            result: None,
        }
    }

    /// Converts into a `Result` (an envelope with neither field is an internal error).
    pub fn into_result(self) -> Result<T, ApiError> {
        match (self.error, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(r)) => Ok(r),
            (None, None) => Err(ApiError::INTERNAL.with_message("empty response")),
        }
    }
}

impl<T> From<Result<T, ApiError>> for ApiResponse<T> {
    fn from(r: Result<T, ApiError>) -> ApiResponse<T> {
        match r {
            Ok(v) => ApiResponse::ok(v),
            Err(e) => ApiResponse::err(e),
        }
    }
}

impl<T: Serialize> ApiResponse<T> {
    /// The JSON reply body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"error":{"code":100,"message":"internal server error"}}"#.to_vec()
        })
    }
}

/// Picks a payload from its raw JSON form or its base64 form (`data`/`b64data`,
/// `info`/`b64info`). Returns empty bytes when both are empty.
pub fn payload(raw: &Bytes, b64: &str, field: &'static str) -> Result<Bytes, ApiError> {
    if !raw.is_empty() {
        return Ok(raw.clone());
    }
    if b64.is_empty() {
        return Ok(Bytes::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(Bytes::from)
        .map_err(|_| ApiError::BAD_REQUEST.with_message(format!("invalid base64 in b64{field}")))
}

fn required_payload(raw: &Bytes, b64: &str) -> Result<Bytes, ApiError> {
    let p = payload(raw, b64, "data")?;
    if p.is_empty() {
        return Err(ApiError::BAD_REQUEST.with_message("data required"));
    }
    Ok(p)
}

api_message! {
    /// `publish`: publish data into a channel.
    pub struct PublishRequest {
        /// Channel.
        pub channel: String,
        /// Payload (raw JSON).
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Payload as base64 (binary payloads), used when `data` is absent.
        pub b64data: String,
        /// Do not save the publication to history.
        pub skip_history: bool,
        /// Publication tags.
        pub tags: HashMap<String, String>,
        /// Key to deduplicate retried publishes.
        pub idempotency_key: String,
        /// Allow delta compression for this publication.
        pub delta: bool,
        /// Publication version, to drop stale publications.
        pub version: u64,
        /// Epoch of `version`.
        pub version_epoch: String,
    }
}

impl PublishRequest {
    /// The payload from `data` or `b64data`; a bad request error when neither is set.
    pub fn payload(&self) -> Result<Bytes, ApiError> {
        required_payload(&self.data, &self.b64data)
    }
}

api_message! {
    /// `publish` result.
    pub struct PublishResult {
        /// Offset of the publication in the channel stream (0 without history).
        pub offset: u64,
        /// Stream epoch.
        pub epoch: String,
    }
}

api_message! {
    /// `broadcast`: publish the same data into many channels.
    pub struct BroadcastRequest {
        /// Channels.
        pub channels: Vec<String>,
        /// Payload (raw JSON).
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Payload as base64, used when `data` is absent.
        pub b64data: String,
        /// Do not save the publications to history.
        pub skip_history: bool,
        /// Publication tags.
        pub tags: HashMap<String, String>,
        /// Key to deduplicate retried broadcasts.
        pub idempotency_key: String,
        /// Allow delta compression.
        pub delta: bool,
        /// Publication version.
        pub version: u64,
        /// Epoch of `version`.
        pub version_epoch: String,
    }
}

impl BroadcastRequest {
    /// The payload from `data` or `b64data`; a bad request error when neither is set.
    pub fn payload(&self) -> Result<Bytes, ApiError> {
        required_payload(&self.data, &self.b64data)
    }
}

api_message! {
    /// `broadcast` result: one response per channel, in request order.
    pub struct BroadcastResult {
        /// Per-channel publish responses.
        pub responses: Vec<ApiResponse<PublishResult>>,
    }
}

api_message! {
    /// Wrapper for an optional boolean override.
    pub struct BoolValue {
        /// The value.
        pub value: bool,
    }
}

api_message! {
    /// Overrides of channel options for one server-side subscription.
    pub struct SubscribeOptionOverride {
        /// Override presence.
        pub presence: Option<BoolValue>,
        /// Override join/leave pushes.
        pub join_leave: Option<BoolValue>,
        /// Override recovery.
        pub force_recovery: Option<BoolValue>,
        /// Override positioning.
        pub force_positioning: Option<BoolValue>,
        /// Override sending join/leave pushes.
        pub force_push_join_leave: Option<BoolValue>,
    }
}

api_message! {
    /// `subscribe`: subscribe a user's connections to a channel (server-side subscription).
    pub struct SubscribeRequest {
        /// Channel.
        pub channel: String,
        /// User whose connections subscribe.
        pub user: String,
        /// Subscription expiration, Unix seconds (0: never).
        pub expire_at: i64,
        /// Channel info attached to the subscription (raw JSON).
        #[serde(with = "crate::raw_json")]
        pub info: Bytes,
        /// Channel info as base64.
        pub b64info: String,
        /// Only this connection of the user.
        pub client: String,
        /// Data sent in the subscribe push (raw JSON).
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Data as base64.
        pub b64data: String,
        /// Recover publications since this position.
        pub recover_since: Option<StreamPosition>,
        /// Channel option overrides (JSON name `override`).
        #[serde(rename = "override")]
        pub override_options: Option<SubscribeOptionOverride>,
        /// Only connections of this session.
        pub session: String,
    }
}

impl SubscribeRequest {
    /// Channel info from `info` or `b64info` (empty when neither is set).
    pub fn info_payload(&self) -> Result<Bytes, ApiError> {
        payload(&self.info, &self.b64info, "info")
    }

    /// Subscribe data from `data` or `b64data` (empty when neither is set).
    pub fn data_payload(&self) -> Result<Bytes, ApiError> {
        payload(&self.data, &self.b64data, "data")
    }
}

api_message! {
    /// `subscribe` result (empty).
    pub struct SubscribeResult {}
}

api_message! {
    /// `unsubscribe`: unsubscribe a user's connections from a channel.
    pub struct UnsubscribeRequest {
        /// Channel.
        pub channel: String,
        /// User.
        pub user: String,
        /// Only this connection.
        pub client: String,
        /// Only connections of this session.
        pub session: String,
    }
}

api_message! {
    /// `unsubscribe` result (empty).
    pub struct UnsubscribeResult {}
}

api_message! {
    /// Custom disconnect code and reason for the `disconnect` method.
    pub struct Disconnect {
        /// Close code.
        pub code: u32,
        /// Close reason.
        pub reason: String,
    }
}

api_message! {
    /// `disconnect`: disconnect a user's connections.
    pub struct DisconnectRequest {
        /// User.
        pub user: String,
        /// Custom disconnect (default: force disconnect, 3503).
        pub disconnect: Option<Disconnect>,
        /// Only this connection.
        pub client: String,
        /// Client ids to keep connected.
        pub whitelist: Vec<String>,
        /// Only connections of this session.
        pub session: String,
    }
}

api_message! {
    /// `disconnect` result (empty).
    pub struct DisconnectResult {}
}

api_message! {
    /// `refresh`: refresh (or expire) a user's connections.
    pub struct RefreshRequest {
        /// User.
        pub user: String,
        /// Only this connection.
        pub client: String,
        /// Mark connections expired (they get disconnected).
        pub expired: bool,
        /// New expiration, Unix seconds.
        pub expire_at: i64,
        /// New connection info (raw JSON).
        #[serde(with = "crate::raw_json")]
        pub info: Bytes,
        /// Only connections of this session.
        pub session: String,
    }
}

api_message! {
    /// `refresh` result (empty).
    pub struct RefreshResult {}
}

api_message! {
    /// `presence`: who is in a channel.
    pub struct PresenceRequest {
        /// Channel.
        pub channel: String,
    }
}

api_message! {
    /// `presence` result.
    pub struct PresenceResult {
        /// Channel members, by client id.
        pub presence: HashMap<String, ClientInfo>,
    }
}

api_message! {
    /// `presence_stats`: member counts of a channel.
    pub struct PresenceStatsRequest {
        /// Channel.
        pub channel: String,
    }
}

api_message! {
    /// `presence_stats` result.
    pub struct PresenceStatsResult {
        /// Number of connections.
        pub num_clients: u32,
        /// Number of distinct users.
        pub num_users: u32,
    }
}

api_message! {
    /// `history`: publications of a channel.
    pub struct HistoryRequest {
        /// Channel.
        pub channel: String,
        /// Maximum publications to return (0: only the stream position, -1: all).
        pub limit: i32,
        /// Return publications after this position.
        pub since: Option<StreamPosition>,
        /// Newest first.
        pub reverse: bool,
    }
}

api_message! {
    /// A publication in a `history` result.
    pub struct Publication {
        /// Payload (raw JSON).
        #[serde(with = "crate::raw_json")]
        pub data: Bytes,
        /// Publisher, when published by a client.
        pub info: Option<ClientInfo>,
        /// Offset in the stream.
        pub offset: u64,
        /// Tags.
        pub tags: HashMap<String, String>,
    }
}

api_message! {
    /// `history` result.
    pub struct HistoryResult {
        /// Publications.
        pub publications: Vec<Publication>,
        /// Stream epoch.
        pub epoch: String,
        /// Current stream offset.
        pub offset: u64,
    }
}

api_message! {
    /// `history_remove`: drop a channel's history.
    pub struct HistoryRemoveRequest {
        /// Channel.
        pub channel: String,
    }
}

api_message! {
    /// `history_remove` result (empty).
    pub struct HistoryRemoveResult {}
}

api_message! {
    /// `channels`: active channels.
    pub struct ChannelsRequest {
        /// Glob-like pattern to filter channel names (empty: all).
        pub pattern: String,
    }
}

api_message! {
    /// Statistics of one active channel.
    pub struct ChannelInfo {
        /// Number of subscribed connections.
        pub num_clients: u32,
    }
}

api_message! {
    /// `channels` result.
    pub struct ChannelsResult {
        /// Active channels, by name.
        pub channels: HashMap<String, ChannelInfo>,
    }
}

api_message! {
    /// `info`: cluster information (empty request).
    pub struct InfoRequest {}
}

api_message! {
    /// Statistics of one node.
    pub struct NodeResult {
        /// Node unique id.
        pub uid: String,
        /// Node name.
        pub name: String,
        /// Server version.
        pub version: String,
        /// Number of connections.
        pub num_clients: u32,
        /// Number of distinct users.
        pub num_users: u32,
        /// Number of active channels.
        pub num_channels: u32,
        /// Uptime, seconds.
        pub uptime: u32,
        /// Number of subscriptions.
        pub num_subs: u32,
    }
}

api_message! {
    /// `info` result.
    pub struct InfoResult {
        /// Nodes of the cluster.
        pub nodes: Vec<NodeResult>,
    }
}

api_message! {
    /// `batch`: several commands in one request.
    pub struct BatchRequest {
        /// Commands, each an object with one method field (`{"publish": {...}}`).
        pub commands: Vec<ApiCommand>,
        /// Commands may run in parallel (replies keep the command order).
        pub parallel: bool,
    }
}

api_message! {
    /// `batch` result.
    pub struct BatchResult {
        /// One reply per command, in command order.
        pub replies: Vec<ApiReply>,
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    if !crate::codec::starts_with_object(body) {
        return Err(ApiError::BAD_REQUEST.with_message("bad request: expected a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BAD_REQUEST.with_message(format!("bad request: {e}")))
}

macro_rules! api_methods {
    ($( $variant:ident, $field:ident, $req:ty, $res:ty; )*) => {
        /// One command of a batch: an object with (at most) one method field.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct ApiCommand {
            $(
                #[doc = concat!("`", stringify!($field), "` request.")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$req>,
            )*
        }

        /// One reply of a batch: `{"error": ...}` or an object with one method field.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct ApiReply {
            /// Set on failure.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub error: Option<ApiError>,
            $(
                #[doc = concat!("`", stringify!($field), "` result.")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$res>,
            )*
        }

        /// A typed API request (see [`ApiRequest::decode`]).
        #[derive(Clone, Debug, PartialEq)]
        pub enum ApiRequest {
            $(
                #[doc = concat!("`", stringify!($field), "`.")]
                $variant($req),
            )*
            /// `batch`.
            Batch(BatchRequest),
        }

        /// A typed API result; serializes as the bare result object (wrap it in
        /// an [`ApiResponse`] for the reply body).
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum ApiResult {
            $(
                #[doc = concat!("`", stringify!($field), "`.")]
                $variant($res),
            )*
            /// `batch`.
            Batch(BatchResult),
        }

        /// Names of all API methods (the `<method>` of `POST /api/<method>`).
        pub const METHODS: &[&str] = &[$( stringify!($field), )* "batch"];

        impl ApiRequest {
            /// Decodes the JSON body of `POST /api/<method>`. An empty body is
            /// read as `{}`. Errors: [`ApiError::METHOD_NOT_FOUND`] for an
            /// unknown method, [`ApiError::BAD_REQUEST`] for a malformed body.
            pub fn decode(method: &str, body: &[u8]) -> Result<ApiRequest, ApiError> {
                match method {
                    $( stringify!($field) => parse_body(body).map(ApiRequest::$variant), )*
                    "batch" => parse_body(body).map(ApiRequest::Batch),
                    _ => Err(ApiError::METHOD_NOT_FOUND),
                }
            }

            /// The method name (`publish`, `presence_stats`, …, `batch`).
            pub fn method_name(&self) -> &'static str {
                match self {
                    $( ApiRequest::$variant(_) => stringify!($field), )*
                    ApiRequest::Batch(_) => "batch",
                }
            }
        }

        impl ApiCommand {
            /// Moves the request out (first method field set wins); `None`
            /// when no method field is set.
            pub fn into_request(self) -> Option<ApiRequest> {
                $( if let Some(r) = self.$field { return Some(ApiRequest::$variant(r)); } )*
                None
            }

            /// Wraps a request into a batch command; `None` for a nested batch
            /// (not allowed).
            pub fn from_request(request: ApiRequest) -> Option<ApiCommand> {
                let mut c = ApiCommand::default();
                match request {
                    $( ApiRequest::$variant(r) => c.$field = Some(r), )*
                    ApiRequest::Batch(_) => return None,
                }
                Some(c)
            }
        }

        impl ApiReply {
            /// Builds a batch reply from a method outcome (a nested batch result
            /// becomes an internal error).
            pub fn from_outcome(outcome: Result<ApiResult, ApiError>) -> ApiReply {
                let mut r = ApiReply::default();
                match outcome {
                    Err(e) => r.error = Some(e),
                    $( Ok(ApiResult::$variant(v)) => r.$field = Some(v), )*
                    Ok(ApiResult::Batch(_)) => {
                        r.error = Some(ApiError::INTERNAL.with_message("nested batch"))
                    }
                }
                r
            }

            /// Moves the outcome out: the error, the result, or `Ok(None)` when empty.
            pub fn into_outcome(self) -> Result<Option<ApiResult>, ApiError> {
                if let Some(e) = self.error {
                    return Err(e);
                }
                $( if let Some(v) = self.$field { return Ok(Some(ApiResult::$variant(v))); } )*
                Ok(None)
            }
        }
    };
}

api_methods! {
    Publish, publish, PublishRequest, PublishResult;
    Broadcast, broadcast, BroadcastRequest, BroadcastResult;
    Subscribe, subscribe, SubscribeRequest, SubscribeResult;
    Unsubscribe, unsubscribe, UnsubscribeRequest, UnsubscribeResult;
    Disconnect, disconnect, DisconnectRequest, DisconnectResult;
    Presence, presence, PresenceRequest, PresenceResult;
    PresenceStats, presence_stats, PresenceStatsRequest, PresenceStatsResult;
    History, history, HistoryRequest, HistoryResult;
    HistoryRemove, history_remove, HistoryRemoveRequest, HistoryRemoveResult;
    Info, info, InfoRequest, InfoResult;
    Refresh, refresh, RefreshRequest, RefreshResult;
    Channels, channels, ChannelsRequest, ChannelsResult;
}

impl From<Result<ApiResult, ApiError>> for ApiReply {
    fn from(outcome: Result<ApiResult, ApiError>) -> ApiReply {
        ApiReply::from_outcome(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn publish_request_and_reply() {
        let body = br#"{"channel":"chat","data":{"text":"hi"},"tags":{"a":"b"},"idempotency_key":"k","unknown_field":1}"#;
        let req = ApiRequest::decode("publish", body).unwrap();
        let ApiRequest::Publish(p) = req else {
            panic!("not publish")
        };
        assert_eq!(p.channel, "chat");
        assert_eq!(
            p.payload().unwrap(),
            Bytes::from_static(br#"{"text":"hi"}"#)
        );
        assert_eq!(p.idempotency_key, "k");

        let out = ApiResponse::ok(PublishResult {
            offset: 5,
            epoch: "xy".into(),
        })
        .encode();
        assert_eq!(out, br#"{"result":{"offset":5,"epoch":"xy"}}"#);
        let out = ApiResponse::<PublishResult>::err(ApiError::UNKNOWN_CHANNEL).encode();
        assert_eq!(
            out,
            br#"{"error":{"code":102,"message":"unknown channel"}}"#
        );
        assert_eq!(
            ApiResponse::ok(ApiResult::Subscribe(SubscribeResult {})).encode(),
            br#"{"result":{}}"#
        );
    }

    #[test]
    fn b64data_and_missing_data() {
        let req: PublishRequest =
            serde_json::from_str(r#"{"channel":"c","b64data":"/wAB"}"#).unwrap();
        assert_eq!(&req.payload().unwrap()[..], &[0xff, 0, 1]);
        let req: PublishRequest = serde_json::from_str(r#"{"channel":"c"}"#).unwrap();
        assert_eq!(req.payload().unwrap_err().code, 107);
        let req: PublishRequest =
            serde_json::from_str(r#"{"channel":"c","b64data":"!!"}"#).unwrap();
        assert_eq!(req.payload().unwrap_err().code, 107);
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            ApiRequest::decode("nope", b"{}").unwrap_err(),
            ApiError::METHOD_NOT_FOUND
        );
        assert_eq!(ApiRequest::decode("publish", b"{").unwrap_err().code, 107);
        assert_eq!(ApiRequest::decode("publish", b"[]").unwrap_err().code, 107);
        assert_eq!(
            ApiRequest::decode("info", b"").unwrap(),
            ApiRequest::Info(InfoRequest {})
        );
        for m in METHODS {
            assert_eq!(ApiRequest::decode(m, b"{}").unwrap().method_name(), *m);
        }
    }

    #[test]
    fn batch() {
        let body = br#"{"commands":[{"publish":{"channel":"a","data":{}}},{"presence":{"channel":"b"}}],"parallel":true}"#;
        let ApiRequest::Batch(b) = ApiRequest::decode("batch", body).unwrap() else {
            panic!("not batch")
        };
        assert!(b.parallel);
        let reqs: Vec<_> = b
            .commands
            .into_iter()
            .map(|c| c.into_request().unwrap())
            .collect();
        assert_eq!(reqs[0].method_name(), "publish");
        assert_eq!(reqs[1].method_name(), "presence");

        let result = BatchResult {
            replies: vec![
                ApiReply::from_outcome(Ok(ApiResult::Publish(PublishResult::default()))),
                ApiReply::from_outcome(Err(ApiError::NOT_AVAILABLE)),
            ],
        };
        let v: Value = serde_json::from_slice(&ApiResponse::ok(result).encode()).unwrap();
        assert_eq!(
            v,
            json!({"result":{"replies":[{"publish":{}},{"error":{"code":108,"message":"not available"}}]}})
        );
    }

    #[test]
    fn results_shapes() {
        let mut presence = HashMap::new();
        presence.insert(
            "c1".to_string(),
            ClientInfo {
                user: "u".into(),
                client: "c1".into(),
                conn_info: Bytes::from_static(br#"{"name":"x"}"#),
                ..Default::default()
            },
        );
        let v = serde_json::to_value(ApiResponse::ok(PresenceResult { presence })).unwrap();
        assert_eq!(
            v,
            json!({"result":{"presence":{"c1":{"user":"u","client":"c1","conn_info":{"name":"x"}}}}})
        );
        let h = HistoryResult {
            publications: vec![Publication {
                data: Bytes::from_static(b"[1]"),
                offset: 1,
                ..Default::default()
            }],
            epoch: "e".into(),
            offset: 1,
        };
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            json!({"publications":[{"data":[1],"offset":1}],"epoch":"e","offset":1})
        );
        let b = BroadcastResult {
            responses: vec![ApiResponse::ok(PublishResult::default())],
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"responses":[{"result":{}}]})
        );
        let s: SubscribeRequest = serde_json::from_str(
            r#"{"channel":"c","user":"u","override":{"presence":{"value":true}},"recover_since":{"offset":3,"epoch":"e"}}"#,
        )
        .unwrap();
        assert!(s.override_options.unwrap().presence.unwrap().value);
        assert_eq!(s.recover_since.unwrap().offset, 3);
        let d: DisconnectRequest = serde_json::from_str(
            r#"{"user":"u","disconnect":{"code":4000,"reason":"bye"},"whitelist":["c"]}"#,
        )
        .unwrap();
        assert_eq!(d.disconnect.unwrap().code, 4000);
        let r: ApiResponse<PublishResult> =
            serde_json::from_str(r#"{"error":{"code":100,"message":"x"}}"#).unwrap();
        assert_eq!(r.into_result().unwrap_err().code, 100);
    }
}
