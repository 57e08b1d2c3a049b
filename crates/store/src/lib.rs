//! Durable state for Switchboard: channel history streams and domain event
//! streams.
//!
//! A channel's history is an append-only stream of [`Publication`]s with a
//! strictly increasing offset and an epoch that changes whenever history is
//! lost (see [`Store::remove_history`]). Reconnecting clients recover by
//! `(epoch, offset)`: the server compares the client's position with
//! [`Store::position`] / [`Store::oldest_offset`] and replays
//! [`Store::history`] since the client's offset.
//!
//! [`SqliteStore`] is the embedded backend. All writes go through one writer
//! task that commits many concurrent requests in one transaction (group
//! commit) and assigns offsets, so offsets have no gaps and no duplicates.
//! Reads run on a separate connection pool.
//!
//! [`PgStore`] is the cluster backend: every node opens its own `PgStore` on
//! the same PostgreSQL database (`PgConfig { url, pool_size, schema, .. }`).
//! Each node keeps group commit (one writer task per node), and offsets stay
//! strictly increasing and gapless across nodes because a batch locks the
//! rows of its streams before assigning offsets (see [`PgStore`]). Schema
//! migrations run at [`PgStore::open`] and on their own with
//! [`PgStore::migrate`] (`switchboard migrate`). Differences from SQLite
//! that callers may notice: [`Store::position`] is read from the database
//! each time (other nodes append), and names containing NUL are refused
//! with [`StoreError::Invalid`].
//!
//! ```no_run
//! use std::{path::Path, sync::Arc, time::Duration};
//! use switchboard_store::{DynStore, HistoryQuery, NewPublication, Retention, SqliteStore};
//!
//! # async fn demo() -> Result<(), switchboard_store::StoreError> {
//! let store: DynStore = Arc::new(SqliteStore::open(Path::new("data/switchboard.db")).await?);
//! let retention = Retention { size: 100, ttl: Some(Duration::from_secs(300)), forever: false };
//! let now_ms = 1_700_000_000_000;
//!
//! // Publish: the store assigns the offset; the caller then broadcasts
//! // `appended.publication` (unless `appended.duplicate`).
//! let publication = NewPublication {
//!     data: r#"{"text":"hi"}"#.into(),
//!     idempotency_key: Some("client-msg-1".into()),
//!     ..Default::default()
//! };
//! let appended = store
//!     .append("chat:lobby", publication, &retention, Duration::from_secs(60), now_ms)
//!     .await?;
//!
//! // Recover a client that last saw `client_pos`.
//! let client_pos = appended.position.clone();
//! let page = store
//!     .history(
//!         "chat:lobby",
//!         &HistoryQuery { since: Some(client_pos.clone()), limit: None, reverse: false },
//!         &retention,
//!         now_ms,
//!     )
//!     .await?;
//! let oldest = store.oldest_offset("chat:lobby", &retention, now_ms).await?;
//! let recovered = page.position.epoch == client_pos.epoch
//!     && oldest.is_none_or(|o| o <= client_pos.offset + 1);
//! # let _ = recovered;
//!
//! // Domain events.
//! let offset = store
//!     .append_event("audit", "user.banned", &serde_json::json!({"user": "42"}), now_ms)
//!     .await?;
//! let events = store.read_events("audit", offset - 1, 100).await?;
//! # let _ = events;
//! store.close().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod postgres;
mod sqlite;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
pub use switchboard_core::{HistoryPage, HistoryQuery, Publication, PublisherInfo, StreamPosition};

pub use postgres::{PgConfig, PgStore};
pub use sqlite::SqliteStore;

/// Retention of one channel's history, from its namespace options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many publications (0 = keep none: nothing is stored,
    /// but offsets still advance). Ignored when `forever`.
    pub size: usize,
    /// Drop publications older than this (`None` = no age limit). A
    /// publication made at `t` is visible while `now < t + ttl` (so
    /// `Some(Duration::ZERO)` hides everything).
    pub ttl: Option<Duration>,
    /// Keep the whole history regardless of `size` (`ttl` still applies).
    pub forever: bool,
}

impl Retention {
    /// Whether publications are stored at all under this retention.
    pub fn stores(&self) -> bool {
        self.forever || self.size > 0
    }

    /// Offsets `<=` this value are beyond the size limit when the top of the
    /// stream is `top` (0 when nothing is beyond it).
    pub(crate) fn size_floor(&self, top: u64) -> u64 {
        if self.forever {
            0
        } else {
            top.saturating_sub(self.size as u64)
        }
    }

    /// Publications with `time_ms <=` this value are expired at `now_ms`.
    pub(crate) fn ttl_cutoff(&self, now_ms: i64) -> Option<i64> {
        self.ttl
            .map(|ttl| now_ms.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// A publication to append; the store assigns its offset and time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewPublication {
    /// The payload.
    pub data: Bytes,
    /// The publisher, if it is to be exposed.
    pub info: Option<PublisherInfo>,
    /// Free-form string tags.
    pub tags: BTreeMap<String, String>,
    /// Publishes carrying a key already seen on the channel within the
    /// idempotency window are not stored again.
    pub idempotency_key: Option<String>,
}

/// The result of [`Store::append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stored publication, with `offset` and `time_ms` set. For a
    /// duplicate, the earlier publication; if that one has already been
    /// trimmed from history (or was never stored because the retention size
    /// is 0), only its `offset` and `time_ms` are set.
    pub publication: Publication,
    /// The stream position of this publication: its offset and the current
    /// epoch of the stream.
    pub position: StreamPosition,
    /// True when the idempotency key matched an earlier publish and nothing
    /// was stored: the caller must not broadcast it again.
    pub duplicate: bool,
}

/// An event of a domain event stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in its stream (starting at 1, strictly increasing, no gaps).
    pub offset: u64,
    /// Event type, e.g. `room.joined`.
    pub kind: String,
    /// Event body.
    pub payload: serde_json::Value,
    /// Time of append in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// Errors of a [`Store`].
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The backend is down or an IO error happened; the operation may be
    /// retried (nothing of it was committed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The store has been closed.
    #[error("store closed")]
    Closed,
    /// The request cannot be stored as given (e.g. a NUL character in a
    /// name, which PostgreSQL text cannot hold); retrying will not help.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

/// Durable channel history and domain event streams.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends a publication to a channel's stream and assigns the next
    /// offset. With an idempotency key seen on this channel within
    /// `idempotency_window` (a zero window disables the check), returns the
    /// earlier publication with `duplicate = true` and stores nothing.
    async fn append(
        &self,
        channel: &str,
        publication: NewPublication,
        retention: &Retention,
        idempotency_window: Duration,
        now_ms: i64,
    ) -> Result<Appended, StoreError>;

    /// Publications of a channel still retained at `now_ms`. With `since`,
    /// those with `offset > since.offset`; oldest first, or newest first when
    /// `reverse`; at most `limit`. The epoch of `since` is not checked: the
    /// caller compares it with the returned position.
    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<HistoryPage, StoreError>;

    /// Top of a channel's stream. For a channel never seen: offset 0 and a
    /// fresh epoch, which is persisted so it is stable. Cached in memory after
    /// the first call.
    async fn position(&self, channel: &str) -> Result<StreamPosition, StoreError>;

    /// Oldest offset still available in history at `now_ms` (`None` if the
    /// history is empty): recovery from offset `o` is complete when
    /// `oldest <= o + 1` (or history is empty and `o` is the top).
    async fn oldest_offset(
        &self,
        channel: &str,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError>;

    /// Deletes a channel's history. The epoch changes (so no client wrongly
    /// believes it recovered) and offsets keep increasing from the old top.
    /// Idempotency keys are kept, so a retried publish is still recognized.
    async fn remove_history(&self, channel: &str) -> Result<(), StoreError>;

    /// Appends a domain event (audit, room, call events) to a named stream
    /// and returns its offset (1 for the first event of a stream).
    async fn append_event(
        &self,
        stream: &str,
        kind: &str,
        payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Events of a stream with `offset > after`, oldest first, at most
    /// `limit`.
    async fn read_events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Flushes pending writes and closes the store (graceful shutdown).
    /// Later calls fail with [`StoreError::Closed`]; closing twice is fine.
    async fn close(&self) -> Result<(), StoreError>;
}

/// A shared, type-erased store.
pub type DynStore = Arc<dyn Store>;
