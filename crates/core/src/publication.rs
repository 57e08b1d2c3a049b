//! The publication and publisher info every layer shares.

use bytes::Bytes;
use std::collections::BTreeMap;

/// Who published a message, or who joined or left a channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherInfo {
    /// The user id (`sub` of the token); empty for anonymous.
    pub user: String,
    /// The connection's client id.
    pub client: String,
    /// Connection info from the token's `info` claim (raw JSON or bytes).
    pub conn_info: Bytes,
    /// Channel info from the subscription token's `info` claim.
    pub chan_info: Bytes,
}

/// A position in a channel's stream: the offset of the last publication and
/// the epoch of the stream. A new epoch means earlier offsets are meaningless.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// Offset of the newest publication (0 when the stream is empty).
    pub offset: u64,
    /// Identifier of the stream's current incarnation.
    pub epoch: String,
}

/// One message in a channel, as stored and delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publication {
    /// Strictly increasing position within the channel (0 for channels
    /// without history).
    pub offset: u64,
    /// The payload: JSON text for JSON clients, any bytes for protobuf ones.
    pub data: Bytes,
    /// The publisher, when the namespace exposes it.
    pub info: Option<PublisherInfo>,
    /// Free-form string tags.
    pub tags: BTreeMap<String, String>,
    /// Server time of publication in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// A request for a page of a channel's history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Start after this position (before it when `reverse`); its epoch must
    /// match the stream's.
    pub since: Option<StreamPosition>,
    /// At most this many publications; `Some(0)` asks only for the position,
    /// `None` for everything kept.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// A page of history and the current top of the stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The publications, in the order asked for.
    pub publications: Vec<Publication>,
    /// The top of the stream when the page was read.
    pub position: StreamPosition,
}
