//! What the gateway needs from the rest of the node.
//!
//! The gateway owns connections; everything durable or shared (the store, the
//! bus, presence, RPC handlers) sits behind [`Engine`], which the server crate
//! implements. Deliveries come back through [`crate::Hub`].

use bytes::Bytes;
use std::collections::BTreeMap;
use switchboard_core::presence::PresenceStats;
use switchboard_core::{HistoryPage, HistoryQuery, Publication, PublisherInfo, StreamPosition};
use switchboard_proto::codes::ClientError;

/// A publication to append and fan out.
#[derive(Clone, Debug, Default)]
pub struct PublishRequest {
    /// Payload.
    pub data: Bytes,
    /// Publisher info attached to the publication.
    pub info: Option<PublisherInfo>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Retries with the same key within the window are not stored twice.
    pub idempotency_key: Option<String>,
    /// Deliver without storing in history.
    pub skip_history: bool,
}

/// Where a publication landed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Offset and epoch (offset 0 for channels without history).
    pub position: StreamPosition,
    /// The publish was a retry of an earlier one and was not repeated.
    pub duplicate: bool,
}

/// The result of recovering a subscriber.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Publications the subscriber missed, oldest first.
    pub publications: Vec<Publication>,
    /// The top of the stream.
    pub position: StreamPosition,
    /// Whether nothing was lost.
    pub recovered: bool,
}

/// Who sends an RPC or message.
#[derive(Clone, Debug)]
pub struct CallerContext {
    /// Client id.
    pub client: String,
    /// User id.
    pub user: String,
    /// Grants from the connection's token, if it carried any.
    pub grants: Option<switchboard_auth::Grants>,
}

/// An operation failure with the protocol error to report.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}: {detail}", error.message)]
pub struct EngineError {
    /// The protocol error.
    pub error: ClientError,
    /// Detail for logs (never secrets).
    pub detail: String,
}

impl EngineError {
    /// An error with a protocol code and a detail message.
    pub fn new(error: ClientError, detail: impl Into<String>) -> Self {
        Self {
            error,
            detail: detail.into(),
        }
    }
}

/// The node behind the gateway.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Appends (for durable channels) and fans out a publication.
    async fn publish(
        &self,
        channel: &str,
        req: PublishRequest,
    ) -> Result<PublishOutcome, EngineError>;
    /// One connection subscribes to `channel`: called after the hub
    /// registered it and before its position or history is read, so that
    /// publications appended after that read reach the hub (in cluster mode
    /// the node subscribes the bus to the channel). Balanced by
    /// [`Engine::unsubscribe_channel`]. The default does nothing.
    async fn subscribe_channel(&self, channel: &str) -> Result<(), EngineError> {
        let _ = channel;
        Ok(())
    }
    /// Undoes one [`Engine::subscribe_channel`]. The default does nothing.
    async fn unsubscribe_channel(&self, channel: &str) {
        let _ = channel;
    }
    /// The top of a channel's stream.
    async fn position(&self, channel: &str) -> Result<StreamPosition, EngineError>;
    /// What a subscriber that saw up to `since` missed.
    async fn recover(&self, channel: &str, since: &StreamPosition)
    -> Result<Recovery, EngineError>;
    /// A page of history.
    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, EngineError>;
    /// Records presence of a new subscriber and, if `push`, tells others.
    async fn join(
        &self,
        channel: &str,
        info: &PublisherInfo,
        presence: bool,
        push: bool,
    ) -> Result<(), EngineError>;
    /// Removes presence of a subscriber and, if `push`, tells others.
    async fn leave(
        &self,
        channel: &str,
        info: &PublisherInfo,
        presence: bool,
        push: bool,
    ) -> Result<(), EngineError>;
    /// Keeps a connection's presence alive in the given channels.
    async fn touch_presence(&self, channels: &[String], client: &str) -> Result<(), EngineError>;
    /// Everyone subscribed to a channel.
    async fn presence(&self, channel: &str) -> Result<Vec<PublisherInfo>, EngineError>;
    /// Presence counts of a channel.
    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, EngineError>;
    /// Runs an RPC method; unknown methods give `METHOD_NOT_FOUND`.
    async fn rpc(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError>;
    /// Handles an asynchronous `send` message from a client.
    async fn message(&self, caller: &CallerContext, data: Bytes) -> Result<(), EngineError>;
    /// A connected client went away (after its subscriptions were left).
    async fn disconnected(&self, _caller: &CallerContext) {}
}
