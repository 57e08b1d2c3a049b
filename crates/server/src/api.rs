//! The server HTTP API for app backends: `POST /api/<method>`.
//!
//! Authenticated with `X-API-Key: KEY` or `Authorization: apikey KEY`. Method
//! names, request and reply shapes follow Centrifugo's HTTP server API where
//! they overlap. An API-level failure is HTTP 200 with `{"error": ...}` (as
//! Centrifugo does); a bad key is 401, an unknown method 404, a malformed
//! body 400.

use crate::auth::AuthService;
use crate::cluster::Action;
use crate::node::Node;
use axum::body::Bytes as Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use switchboard_core::channel::{self, ChannelNameError};
use switchboard_core::{HistoryQuery, StreamPosition};
use switchboard_gateway::engine::{Engine, EngineError, PublishRequest};
use switchboard_gateway::{Gateway, convert};
use switchboard_proto::api::{self, ApiError, ApiRequest, ApiResponse, ApiResult};
use switchboard_proto::codes::Disconnect;

/// What the API handlers need.
pub struct ApiState {
    /// The node engine.
    pub node: Arc<Node>,
    /// The local gateway (connections of this node).
    pub gateway: Gateway,
    /// API keys from the configuration.
    pub keys: ConfigKeys,
    /// The authorization server (API keys it issued, access tokens).
    pub auth: Arc<AuthService>,
    /// Longest channel name.
    pub max_channel_length: usize,
    /// Largest publication payload.
    pub max_publication_bytes: usize,
    /// Node name for `info`.
    pub node_name: String,
    /// Unique id of this node for `info`.
    pub node_uid: String,
    /// When the node started.
    pub started: Instant,
    /// Call logs (`call_list`, `call_get`).
    pub call_log: Arc<crate::calllog::CallLog>,
}

/// API keys from the configuration (bootstrap keys; more are issued with
/// `apikey_create`).
#[derive(Clone, Debug, Default)]
pub struct ConfigKeys(pub Vec<String>);

impl ConfigKeys {
    /// Whether `presented` is one of the keys.
    pub fn accepts(&self, presented: &str) -> bool {
        self.0
            .iter()
            .any(|key| constant_time_eq(key.as_bytes(), presented.as_bytes()))
    }
}

/// The credential of a server API request: `X-API-Key`, `Authorization:
/// apikey KEY`, or `Authorization: Bearer TOKEN` (client-credentials token).
pub fn presented_credential(headers: &HeaderMap) -> Option<String> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.to_string());
    }
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("apikey") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| key.trim().to_string())
}

fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    presented_credential(headers)
        .is_some_and(|k| state.keys.accepts(&k) || state.auth.check_api_credential(&k))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /api/{method}`.
pub async fn handle(
    State(state): State<Arc<ApiState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(&state, &headers) {
        metrics::counter!("switchboard_api_requests_total", "method" => "unauthorized", "result" => "101")
            .increment(1);
        let body = ApiResponse::<()>::err(ApiError::UNAUTHORIZED).encode();
        return json(StatusCode::UNAUTHORIZED, body);
    }
    let outcome = match crate::api_auth::handle(&state, &method, &body).await {
        Some(o) => Some(o),
        None if crate::calllog::API_METHODS.contains(&method.as_str()) => {
            state.call_log.api(&method, &body).await
        }
        None if crate::calls::API_METHODS.contains(&method.as_str()) => {
            Some(match (state.node.router(), state.node.calls()) {
                (Some(router), _) => router.api(&method, &body).await,
                (None, Some(calls)) => calls
                    .api(&method, &body)
                    .await
                    .unwrap_or(Err(ApiError::METHOD_NOT_FOUND)),
                (None, None) => {
                    Err(ApiError::NOT_AVAILABLE.with_message("media is disabled on this node"))
                }
            })
        }
        None => None,
    };
    if let Some(outcome) = outcome {
        let result = match &outcome {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code.to_string(),
        };
        metrics::counter!("switchboard_api_requests_total", "method" => method.clone(), "result" => result).increment(1);
        let (status, body) = match outcome {
            Ok(v) => (StatusCode::OK, serde_json::json!({ "result": v })),
            Err(e)
                if e.code == ApiError::BAD_REQUEST.code && e.message.starts_with("malformed") =>
            {
                (StatusCode::BAD_REQUEST, serde_json::json!({ "error": e }))
            }
            Err(e) => (StatusCode::OK, serde_json::json!({ "error": e })),
        };
        return json(status, serde_json::to_vec(&body).unwrap_or_default());
    }
    let request = match ApiRequest::decode(&method, &body) {
        Ok(r) => r,
        Err(e) => {
            let status = if e.code == ApiError::METHOD_NOT_FOUND.code {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            return json(status, ApiResponse::<()>::err(e).encode());
        }
    };
    let name = request.method_name();
    let started = Instant::now();
    let outcome = execute(&state, request).await;
    let result = match &outcome {
        Ok(_) => "ok".to_string(),
        Err(e) => e.code.to_string(),
    };
    metrics::counter!("switchboard_api_requests_total", "method" => name, "result" => result)
        .increment(1);
    metrics::histogram!("switchboard_api_duration_seconds", "method" => name)
        .record(started.elapsed().as_secs_f64());
    json(StatusCode::OK, ApiResponse::from(outcome).encode())
}

/// This node's entry of the `info` result.
pub fn local_node_result(state: &ApiState) -> api::NodeResult {
    let hub = state.gateway.hub();
    api::NodeResult {
        uid: state.node_uid.clone(),
        name: state.node_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        num_clients: hub.num_conns() as u32,
        num_users: hub.num_users() as u32,
        num_channels: hub.channels().len() as u32,
        uptime: state.started.elapsed().as_secs() as u32,
        num_subs: hub.num_subs() as u32,
    }
}

/// Runs an action on a user's connections: here, or in cluster mode on
/// every node (whichever holds them) through a bus broadcast.
async fn act(state: &ApiState, action: Action) -> Result<(), ApiError> {
    match state.node.cluster() {
        Some(cluster) => cluster
            .broadcast(&action)
            .await
            .map_err(|e| ApiError::INTERNAL.with_message(format!("bus: {e}"))),
        None => {
            action.apply_local(state.gateway.hub());
            Ok(())
        }
    }
}

fn engine_error(e: EngineError) -> ApiError {
    ApiError::new(e.error.code, e.error.message)
}

fn check_channel(state: &ApiState, name: &str) -> Result<(), ApiError> {
    match channel::validate(name, state.max_channel_length) {
        Ok(()) => Ok(()),
        Err(ChannelNameError::Empty) => Err(ApiError::BAD_REQUEST.with_message("channel required")),
        Err(e) => Err(ApiError::BAD_REQUEST.with_message(e.to_string())),
    }
}

fn check_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() {
        Err(ApiError::BAD_REQUEST.with_message("user required"))
    } else {
        Ok(())
    }
}

async fn publish_one(
    state: &ApiState,
    channel: &str,
    data: Bytes,
    skip_history: bool,
    tags: &std::collections::HashMap<String, String>,
    idempotency_key: &str,
) -> Result<api::PublishResult, ApiError> {
    check_channel(state, channel)?;
    if data.len() > state.max_publication_bytes {
        return Err(ApiError::LIMIT_EXCEEDED.with_message("data too large"));
    }
    let req = PublishRequest {
        data,
        info: None,
        tags: tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_string()),
        skip_history,
    };
    let out = state
        .node
        .publish(channel, req)
        .await
        .map_err(engine_error)?;
    Ok(api::PublishResult {
        offset: out.position.offset,
        epoch: out.position.epoch,
    })
}

/// Runs one API request.
pub fn execute<'a>(
    state: &'a ApiState,
    request: ApiRequest,
) -> std::pin::Pin<Box<dyn Future<Output = Result<ApiResult, ApiError>> + Send + 'a>> {
    Box::pin(async move {
        match request {
            ApiRequest::Publish(r) => {
                let data = r.payload()?;
                publish_one(
                    state,
                    &r.channel,
                    data,
                    r.skip_history,
                    &r.tags,
                    &r.idempotency_key,
                )
                .await
                .map(ApiResult::Publish)
            }
            ApiRequest::Broadcast(r) => {
                let data = r.payload()?;
                if r.channels.is_empty() {
                    return Err(ApiError::BAD_REQUEST.with_message("channels required"));
                }
                let mut responses = Vec::with_capacity(r.channels.len());
                for ch in &r.channels {
                    let key = if r.idempotency_key.is_empty() {
                        String::new()
                    } else {
                        r.idempotency_key.clone()
                    };
                    let res =
                        publish_one(state, ch, data.clone(), r.skip_history, &r.tags, &key).await;
                    responses.push(ApiResponse::from(res));
                }
                Ok(ApiResult::Broadcast(api::BroadcastResult { responses }))
            }
            ApiRequest::Subscribe(r) => {
                check_user(&r.user)?;
                check_channel(state, &r.channel)?;
                let data = r.data_payload()?;
                act(
                    state,
                    Action::Subscribe {
                        user: r.user,
                        client: r.client,
                        channel: r.channel,
                        data,
                    },
                )
                .await?;
                Ok(ApiResult::Subscribe(Default::default()))
            }
            ApiRequest::Unsubscribe(r) => {
                check_user(&r.user)?;
                check_channel(state, &r.channel)?;
                act(
                    state,
                    Action::Unsubscribe {
                        user: r.user,
                        client: r.client,
                        channel: r.channel,
                    },
                )
                .await?;
                Ok(ApiResult::Unsubscribe(Default::default()))
            }
            ApiRequest::Disconnect(r) => {
                check_user(&r.user)?;
                let d = match &r.disconnect {
                    Some(d) if (3000..5000).contains(&d.code) => {
                        Disconnect::new(d.code, d.reason.clone())
                    }
                    Some(_) => {
                        return Err(ApiError::BAD_REQUEST
                            .with_message("disconnect code must be in 3000..4999"));
                    }
                    None => Disconnect::FORCE_NO_RECONNECT,
                };
                act(
                    state,
                    Action::Disconnect {
                        user: r.user,
                        client: r.client,
                        whitelist: r.whitelist,
                        code: d.code,
                        reason: d.reason.to_string(),
                    },
                )
                .await?;
                Ok(ApiResult::Disconnect(Default::default()))
            }
            ApiRequest::Refresh(r) => {
                check_user(&r.user)?;
                let expire_at = (r.expire_at > 0).then_some(r.expire_at);
                act(
                    state,
                    Action::Refresh {
                        user: r.user,
                        client: r.client,
                        expired: r.expired,
                        expire_at,
                    },
                )
                .await?;
                Ok(ApiResult::Refresh(Default::default()))
            }
            ApiRequest::Presence(r) => {
                check_channel(state, &r.channel)?;
                let list = state
                    .node
                    .presence(&r.channel)
                    .await
                    .map_err(engine_error)?;
                let presence = list
                    .iter()
                    .map(|i| (i.client.clone(), convert::client_info(i)))
                    .collect();
                Ok(ApiResult::Presence(api::PresenceResult { presence }))
            }
            ApiRequest::PresenceStats(r) => {
                check_channel(state, &r.channel)?;
                let s = state
                    .node
                    .presence_stats(&r.channel)
                    .await
                    .map_err(engine_error)?;
                Ok(ApiResult::PresenceStats(api::PresenceStatsResult {
                    num_clients: s.num_clients,
                    num_users: s.num_users,
                }))
            }
            ApiRequest::History(r) => {
                check_channel(state, &r.channel)?;
                let limit = if r.limit < 0 {
                    None
                } else {
                    Some(r.limit as usize)
                };
                let query = HistoryQuery {
                    since: r.since.as_ref().map(|s| StreamPosition {
                        offset: s.offset,
                        epoch: s.epoch.clone(),
                    }),
                    limit,
                    reverse: r.reverse,
                };
                let page = state
                    .node
                    .history(&r.channel, &query)
                    .await
                    .map_err(engine_error)?;
                Ok(ApiResult::History(api::HistoryResult {
                    publications: page
                        .publications
                        .iter()
                        .map(|p| api::Publication {
                            data: p.data.clone(),
                            info: p.info.as_ref().map(convert::client_info),
                            offset: p.offset,
                            tags: p.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        })
                        .collect(),
                    epoch: page.position.epoch,
                    offset: page.position.offset,
                }))
            }
            ApiRequest::HistoryRemove(r) => {
                check_channel(state, &r.channel)?;
                state
                    .node
                    .remove_history(&r.channel)
                    .await
                    .map_err(engine_error)?;
                Ok(ApiResult::HistoryRemove(Default::default()))
            }
            ApiRequest::Channels(r) => {
                let mut all: BTreeMap<String, usize> = BTreeMap::new();
                let mut add = |list: Vec<(String, usize)>| {
                    for (name, n) in list {
                        *all.entry(name).or_default() += n;
                    }
                };
                add(state.gateway.hub().channels());
                if let Some(cluster) = state.node.cluster() {
                    add(cluster.remote_channels().await);
                }
                let channels = all
                    .into_iter()
                    .filter(|(name, _)| r.pattern.is_empty() || glob_match(&r.pattern, name))
                    .map(|(name, n)| {
                        (
                            name,
                            api::ChannelInfo {
                                num_clients: n as u32,
                            },
                        )
                    })
                    .collect();
                Ok(ApiResult::Channels(api::ChannelsResult { channels }))
            }
            ApiRequest::Info(_) => {
                let nodes = match state.node.cluster() {
                    Some(cluster) => cluster.info().await.map_err(|e| {
                        ApiError::INTERNAL.with_message(format!("node registry: {e}"))
                    })?,
                    None => vec![local_node_result(state)],
                };
                Ok(ApiResult::Info(api::InfoResult { nodes }))
            }
            ApiRequest::Batch(b) => {
                let mut replies = Vec::with_capacity(b.commands.len());
                for cmd in b.commands {
                    let outcome = match cmd.into_request() {
                        Some(ApiRequest::Batch(_)) => {
                            Err(ApiError::BAD_REQUEST.with_message("nested batch"))
                        }
                        Some(req) => execute(state, req).await,
                        None => Err(ApiError::BAD_REQUEST.with_message("empty command")),
                    };
                    replies.push(api::ApiReply::from_outcome(outcome));
                }
                Ok(ApiResult::Batch(api::BatchResult { replies }))
            }
        }
    })
}

/// Matches `*` wildcards (any run of characters) in channel patterns.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else {
                return false;
            };
            rest = &rest[pos + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("chat:*", "chat:1"));
        assert!(!glob_match("chat:*", "news:1"));
        assert!(glob_match("*:1", "chat:1"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abcd"));
    }
}
