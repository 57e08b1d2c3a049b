//! The SQLite backend: one writer task with group commit, a pool of readers.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::Path,
    str::FromStr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{
    Row, SqliteConnection, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Appended, HistoryPage, HistoryQuery, NewPublication, Publication, PublisherInfo, Retention,
    Store, StoreError, StoredEvent, StreamPosition,
};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 512;
/// Capacity of the writer's request queue (callers wait when it is full).
const QUEUE_CAPACITY: usize = 16 * 1024;
/// Reader connections of a file database.
const READ_CONNECTIONS: u32 = 8;
/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Minimum time between two TTL trims of one channel by the writer.
const TTL_TRIM_INTERVAL_MS: i64 = 1_000;
/// Minimum time between two sweeps of expired idempotency keys.
const IDEMPOTENCY_SWEEP_INTERVAL_MS: i64 = 10_000;
/// Most publications inserted by one statement (10 parameters each).
const MAX_ROWS_PER_INSERT: usize = 64;
/// Attempts of a history read racing with `remove_history`.
const HISTORY_ATTEMPTS: usize = 3;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Columns read by [`decode_publication`], in order.
macro_rules! publication_columns {
    () => {
        "pub_offset, time_ms, data, has_info, info_user, info_client, info_conn, info_chan, tags"
    };
}

/// Filter of history reads: channel, lower bound (exclusive), top, TTL cutoff.
macro_rules! history_filter {
    () => {
        " FROM publications \
         WHERE channel = ?1 AND pub_offset > ?2 AND pub_offset <= ?3 AND time_ms > ?4"
    };
}

const HISTORY_ASC: &str = concat!(
    "SELECT ",
    publication_columns!(),
    history_filter!(),
    " ORDER BY pub_offset ASC LIMIT ?5"
);
const HISTORY_DESC: &str = concat!(
    "SELECT ",
    publication_columns!(),
    history_filter!(),
    " ORDER BY pub_offset DESC LIMIT ?5"
);
const OLDEST_OFFSET: &str = concat!(
    "SELECT pub_offset",
    history_filter!(),
    " ORDER BY pub_offset ASC LIMIT 1"
);
const PUBLICATION_AT: &str = concat!(
    "SELECT ",
    publication_columns!(),
    " FROM publications WHERE channel = ?1 AND pub_offset = ?2"
);

/// Committed positions of the channel streams, written only by the writer.
type Cache = Arc<RwLock<HashMap<String, StreamPosition>>>;

/// The [`Store`] on an SQLite database (WAL mode, `synchronous=NORMAL`).
///
/// Writes (appends, history removal, events, first load of a stream) are sent
/// to a single writer task, which drains up to 512 pending requests, commits
/// them in one transaction and then answers each. Reads use a separate pool.
/// Cloning is cheap and shares the store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    requests: mpsc::Sender<Op>,
    read: SqlitePool,
    cache: Cache,
    closed: AtomicBool,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates, with its directory) the database at `path` and
    /// runs the embedded schema migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let write = single_connection_pool(options.clone()).await?;
        MIGRATOR.run(&write).await.map_err(migrate_err)?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        Ok(Self::start(write, read))
    }

    /// Opens a private in-memory database (for tests): one connection shared
    /// by the writer and the readers.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db_err)?
            .busy_timeout(BUSY_TIMEOUT);
        let pool = single_connection_pool(options).await?;
        MIGRATOR.run(&pool).await.map_err(migrate_err)?;
        Ok(Self::start(pool.clone(), pool))
    }

    fn start(write: SqlitePool, read: SqlitePool) -> Self {
        let (requests, rx) = mpsc::channel(QUEUE_CAPACITY);
        let cache = Cache::default();
        let writer = Writer {
            pool: write,
            rx,
            cache: cache.clone(),
            event_tops: HashMap::new(),
            ttl_trimmed: HashMap::new(),
            last_sweep_ms: i64::MIN,
        };
        tokio::spawn(writer.run());
        Self {
            inner: Arc::new(Inner {
                requests,
                read,
                cache,
                closed: AtomicBool::new(false),
            }),
        }
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn cached(&self, channel: &str) -> Option<StreamPosition> {
        read_lock(&self.inner.cache).get(channel).cloned()
    }

    /// Sends a request to the writer and waits for its answer.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .requests
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Retained publications of a channel whose top is `position`.
    async fn read_history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        retention: &Retention,
        now_ms: i64,
        position: &StreamPosition,
    ) -> Result<Vec<Publication>, StoreError> {
        if query.limit == Some(0) || !retention.stores() {
            return Ok(Vec::new());
        }
        // Offsets in (lower, upper]. Forward with `since`: what came after
        // it; reverse with `since`: what came before it, newest first (the
        // way to page backwards through a long history).
        let floor = retention.size_floor(position.offset);
        let (lower, upper) = match &query.since {
            Some(since) if query.reverse => {
                (floor, since.offset.saturating_sub(1).min(position.offset))
            }
            Some(since) => (floor.max(since.offset), position.offset),
            None => (floor, position.offset),
        };
        if lower >= upper {
            return Ok(Vec::new());
        }
        let cutoff = retention.ttl_cutoff(now_ms).unwrap_or(i64::MIN);
        // SQLite: a negative LIMIT means no limit.
        let limit = query
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let sql = if query.reverse {
            HISTORY_DESC
        } else {
            HISTORY_ASC
        };
        let rows = sqlx::query(sql)
            .bind(channel)
            .bind(to_db(lower))
            .bind(to_db(upper))
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.inner.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(decode_publication).collect()
    }
}

async fn single_connection_pool(options: SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .map_err(db_err)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn append(
        &self,
        channel: &str,
        publication: NewPublication,
        retention: &Retention,
        idempotency_window: Duration,
        now_ms: i64,
    ) -> Result<Appended, StoreError> {
        let request = AppendRequest {
            channel: channel.to_owned(),
            publication,
            retention: retention.clone(),
            window_ms: i64::try_from(idempotency_window.as_millis()).unwrap_or(i64::MAX),
            now_ms,
        };
        self.request(|reply| Op::Append(request, reply)).await
    }

    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<HistoryPage, StoreError> {
        for _ in 0..HISTORY_ATTEMPTS {
            let position = self.position(channel).await?;
            let publications = self
                .read_history(channel, query, retention, now_ms, &position)
                .await?;
            // Offsets up to the cached top are committed; only a concurrent
            // `remove_history` (new epoch) can make the page inconsistent.
            if self
                .cached(channel)
                .is_none_or(|now| now.epoch == position.epoch)
            {
                return Ok(HistoryPage {
                    publications,
                    position,
                });
            }
        }
        Err(StoreError::Unavailable(format!(
            "history of {channel} kept being removed while reading it"
        )))
    }

    async fn position(&self, channel: &str) -> Result<StreamPosition, StoreError> {
        self.check_open()?;
        if let Some(position) = self.cached(channel) {
            return Ok(position);
        }
        self.request(|reply| Op::Load(channel.to_owned(), reply))
            .await
    }

    async fn oldest_offset(
        &self,
        channel: &str,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let position = self.position(channel).await?;
        if !retention.stores() {
            return Ok(None);
        }
        let lower = retention.size_floor(position.offset);
        if lower >= position.offset {
            return Ok(None);
        }
        let cutoff = retention.ttl_cutoff(now_ms).unwrap_or(i64::MIN);
        let row = sqlx::query(OLDEST_OFFSET)
            .bind(channel)
            .bind(to_db(lower))
            .bind(to_db(position.offset))
            .bind(cutoff)
            .fetch_optional(&self.inner.read)
            .await
            .map_err(db_err)?;
        row.map(|row| row.try_get::<i64, _>(0).map(from_db).map_err(db_err))
            .transpose()
    }

    async fn remove_history(&self, channel: &str) -> Result<(), StoreError> {
        self.request(|reply| Op::Remove(channel.to_owned(), reply))
            .await
    }

    async fn append_event(
        &self,
        stream: &str,
        kind: &str,
        payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let payload =
            serde_json::to_string(payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let request = EventRequest {
            stream: stream.to_owned(),
            kind: kind.to_owned(),
            payload,
            now_ms,
        };
        self.request(|reply| Op::Event(request, reply)).await
    }

    async fn read_events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.check_open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT event_offset, kind, payload, time_ms FROM events \
             WHERE stream = ?1 AND event_offset > ?2 ORDER BY event_offset ASC LIMIT ?3",
        )
        .bind(stream)
        .bind(to_db(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get(2).map_err(db_err)?;
                Ok(StoredEvent {
                    offset: from_db(row.try_get(0).map_err(db_err)?),
                    kind: row.try_get(1).map_err(db_err)?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
                    time_ms: row.try_get(3).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn close(&self) -> Result<(), StoreError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        if self.inner.requests.send(Op::Close(tx)).await.is_ok() {
            // An error means the writer is already gone: nothing to flush.
            let _ = rx.await;
        }
        self.inner.read.close().await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The writer task.

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

struct AppendRequest {
    channel: String,
    publication: NewPublication,
    retention: Retention,
    window_ms: i64,
    now_ms: i64,
}

struct EventRequest {
    stream: String,
    kind: String,
    payload: String,
    now_ms: i64,
}

/// A request to the writer, with where to send its answer.
enum Op {
    Append(AppendRequest, Reply<Appended>),
    /// Load (or create) a channel stream's position.
    Load(String, Reply<StreamPosition>),
    Remove(String, Reply<()>),
    Event(EventRequest, Reply<u64>),
    /// Flush everything queued, then stop.
    Close(oneshot::Sender<()>),
}

/// The result of an applied (not yet committed) request.
enum Out {
    Appended(Appended),
    Position(StreamPosition),
    Unit,
    Offset(u64),
}

impl Op {
    fn respond(self, result: Result<Out, StoreError>) {
        // A dropped receiver (caller gave up) is not an error.
        match self {
            Op::Append(_, reply) => {
                let _ = reply.send(result.and_then(|out| match out {
                    Out::Appended(a) => Ok(a),
                    _ => Err(mismatch()),
                }));
            }
            Op::Load(_, reply) => {
                let _ = reply.send(result.and_then(|out| match out {
                    Out::Position(p) => Ok(p),
                    _ => Err(mismatch()),
                }));
            }
            Op::Remove(_, reply) => {
                let _ = reply.send(result.map(|_| ()));
            }
            Op::Event(_, reply) => {
                let _ = reply.send(result.and_then(|out| match out {
                    Out::Offset(o) => Ok(o),
                    _ => Err(mismatch()),
                }));
            }
            Op::Close(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Unavailable("internal error: writer answered with the wrong kind".into())
}

/// A channel stream as seen by the batch being written.
struct Chan {
    position: StreamPosition,
    /// The stream row must be written.
    dirty: bool,
    /// Publications with offset `<=` this are beyond the size limit.
    trim_floor: u64,
    /// Publications with `time_ms <=` this are expired.
    ttl_cutoff: Option<i64>,
}

/// State of the transaction being built; published to the cache on commit.
#[derive(Default)]
struct Batch {
    chans: HashMap<String, Chan>,
    event_tops: HashMap<String, u64>,
    /// Publications to insert at the end of the batch.
    rows: Vec<(String, Publication)>,
    now_ms: i64,
}

struct Writer {
    pool: SqlitePool,
    rx: mpsc::Receiver<Op>,
    cache: Cache,
    /// Committed top offset of each event stream seen.
    event_tops: HashMap<String, u64>,
    /// When each channel was last trimmed by TTL.
    ttl_trimmed: HashMap<String, i64>,
    last_sweep_ms: i64,
}

impl Writer {
    async fn run(mut self) {
        let mut ops = Vec::with_capacity(MAX_BATCH);
        let mut closers = Vec::new();
        // `recv_many` returns 0 once every sender is gone (or after `close`)
        // and the queue is empty.
        while self.rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
            let mut batch = Vec::with_capacity(ops.len());
            for op in ops.drain(..) {
                match op {
                    Op::Close(reply) => {
                        // Accept nothing new; what is queued is still flushed.
                        self.rx.close();
                        closers.push(reply);
                    }
                    op => batch.push(op),
                }
            }
            if !batch.is_empty() {
                self.commit(batch).await;
            }
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "store: WAL checkpoint on close failed");
        }
        self.pool.close().await;
        for reply in closers {
            let _ = reply.send(());
        }
    }

    /// Applies `ops` in one transaction, then answers each.
    async fn commit(&mut self, ops: Vec<Op>) {
        let mut batch = Batch {
            now_ms: i64::MIN,
            ..Batch::default()
        };
        let mut done = Vec::with_capacity(ops.len());
        let mut pending = ops.into_iter();
        match self.apply_all(&mut batch, &mut pending, &mut done).await {
            Ok(()) => {
                {
                    let mut cache = write_lock(&self.cache);
                    for (channel, chan) in batch.chans {
                        cache.insert(channel, chan.position);
                    }
                }
                self.event_tops.extend(batch.event_tops);
                for (op, out) in done {
                    op.respond(Ok(out));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = done.len() + pending.len(), "store: batch failed");
                let err = db_err(e);
                for (op, _) in done {
                    op.respond(Err(err.clone()));
                }
                for op in pending {
                    op.respond(Err(err.clone()));
                }
            }
        }
    }

    async fn apply_all(
        &mut self,
        batch: &mut Batch,
        pending: &mut std::vec::IntoIter<Op>,
        done: &mut Vec<(Op, Out)>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for mut op in pending.by_ref() {
            match self.apply(&mut tx, batch, &mut op).await {
                Ok(out) => done.push((op, out)),
                Err(e) => {
                    // Answered with the error together with the others.
                    done.push((op, Out::Unit));
                    return Err(e);
                }
            }
        }
        self.finish(&mut tx, batch).await?;
        tx.commit().await
    }

    async fn apply(
        &mut self,
        conn: &mut SqliteConnection,
        batch: &mut Batch,
        op: &mut Op,
    ) -> Result<Out, sqlx::Error> {
        match op {
            Op::Append(request, _) => self.append(conn, batch, request).await.map(Out::Appended),
            Op::Load(channel, _) => {
                let chan = load_chan(conn, &mut batch.chans, &self.cache, channel).await?;
                Ok(Out::Position(chan.position.clone()))
            }
            Op::Remove(channel, _) => {
                let chan = load_chan(conn, &mut batch.chans, &self.cache, channel).await?;
                sqlx::query("DELETE FROM publications WHERE channel = ?1")
                    .bind(channel.as_str())
                    .execute(&mut *conn)
                    .await?;
                chan.position.epoch = new_epoch(Some(&chan.position.epoch));
                chan.dirty = true;
                Ok(Out::Unit)
            }
            Op::Event(request, _) => {
                let top = match batch
                    .event_tops
                    .get(&request.stream)
                    .or_else(|| self.event_tops.get(&request.stream))
                {
                    Some(top) => *top,
                    None => {
                        let top: i64 = sqlx::query(
                            "SELECT COALESCE(MAX(event_offset), 0) FROM events WHERE stream = ?1",
                        )
                        .bind(request.stream.as_str())
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get(0)?;
                        from_db(top)
                    }
                };
                let offset = top + 1;
                sqlx::query(
                    "INSERT INTO events (stream, event_offset, kind, payload, time_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .bind(request.stream.as_str())
                .bind(to_db(offset))
                .bind(request.kind.as_str())
                .bind(request.payload.as_str())
                .bind(request.now_ms)
                .execute(&mut *conn)
                .await?;
                batch.event_tops.insert(request.stream.clone(), offset);
                Ok(Out::Offset(offset))
            }
            Op::Close(_) => Ok(Out::Unit),
        }
    }

    async fn append(
        &mut self,
        conn: &mut SqliteConnection,
        batch: &mut Batch,
        request: &mut AppendRequest,
    ) -> Result<Appended, sqlx::Error> {
        let now_ms = request.now_ms;
        batch.now_ms = batch.now_ms.max(now_ms);
        let chan = load_chan(conn, &mut batch.chans, &self.cache, &request.channel).await?;
        let key = request
            .publication
            .idempotency_key
            .as_deref()
            .filter(|_| request.window_ms > 0);

        if let Some(key) = key {
            // Rows written earlier in this batch are visible: same transaction.
            let earlier = sqlx::query(
                "SELECT pub_offset, time_ms FROM idempotency \
                 WHERE channel = ?1 AND idem_key = ?2 AND time_ms > ?3",
            )
            .bind(request.channel.as_str())
            .bind(key)
            .bind(now_ms.saturating_sub(request.window_ms))
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = earlier {
                let offset = from_db(row.try_get(0)?);
                let time_ms: i64 = row.try_get(1)?;
                let stored = sqlx::query(PUBLICATION_AT)
                    .bind(request.channel.as_str())
                    .bind(to_db(offset))
                    .fetch_optional(&mut *conn)
                    .await?;
                let publication = match stored.as_ref().map(decode_publication) {
                    Some(Ok(publication)) => publication,
                    _ => Publication {
                        offset,
                        time_ms,
                        ..Publication::default()
                    },
                };
                return Ok(Appended {
                    publication,
                    position: StreamPosition {
                        offset,
                        epoch: chan.position.epoch.clone(),
                    },
                    duplicate: true,
                });
            }
        }

        let offset = chan.position.offset + 1;
        chan.position.offset = offset;
        chan.dirty = true;
        let retention = &request.retention;
        chan.trim_floor = chan.trim_floor.max(retention.size_floor(offset));
        if let Some(cutoff) = retention.ttl_cutoff(now_ms) {
            chan.ttl_cutoff = Some(chan.ttl_cutoff.map_or(cutoff, |c| c.max(cutoff)));
        }
        let position = chan.position.clone();

        if let Some(key) = key {
            sqlx::query(
                "INSERT OR REPLACE INTO idempotency \
                 (channel, idem_key, pub_offset, time_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(request.channel.as_str())
            .bind(key)
            .bind(to_db(offset))
            .bind(now_ms)
            .bind(now_ms.saturating_add(request.window_ms))
            .execute(&mut *conn)
            .await?;
        }

        let new = std::mem::take(&mut request.publication);
        let publication = Publication {
            offset,
            data: new.data,
            info: new.info,
            tags: new.tags,
            time_ms: now_ms,
        };
        if retention.stores() {
            batch
                .rows
                .push((request.channel.clone(), publication.clone()));
        }
        Ok(Appended {
            publication,
            position,
            duplicate: false,
        })
    }

    /// Per-channel work done once per batch: stream rows and trimming.
    async fn finish(
        &mut self,
        conn: &mut SqliteConnection,
        batch: &Batch,
    ) -> Result<(), sqlx::Error> {
        // Rows already beyond the size limit are not inserted at all.
        let rows: Vec<&(String, Publication)> = batch
            .rows
            .iter()
            .filter(|(channel, p)| {
                batch
                    .chans
                    .get(channel)
                    .is_none_or(|chan| p.offset > chan.trim_floor)
            })
            .collect();
        let mut rest = rows.as_slice();
        while !rest.is_empty() {
            // Power-of-two chunks keep the number of distinct (cached)
            // statements small.
            let n = rest.len().min(MAX_ROWS_PER_INSERT);
            let n = 1 << n.ilog2();
            let (chunk, tail) = rest.split_at(n);
            insert_publications(conn, chunk).await?;
            rest = tail;
        }
        for (channel, chan) in &batch.chans {
            if chan.dirty {
                sqlx::query(
                    "INSERT INTO streams (channel, top_offset, epoch) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (channel) DO UPDATE \
                     SET top_offset = excluded.top_offset, epoch = excluded.epoch",
                )
                .bind(channel.as_str())
                .bind(to_db(chan.position.offset))
                .bind(chan.position.epoch.as_str())
                .execute(&mut *conn)
                .await?;
            }
            if chan.trim_floor > 0 {
                sqlx::query("DELETE FROM publications WHERE channel = ?1 AND pub_offset <= ?2")
                    .bind(channel.as_str())
                    .bind(to_db(chan.trim_floor))
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(cutoff) = chan.ttl_cutoff {
                let due = self
                    .ttl_trimmed
                    .get(channel)
                    .is_none_or(|last| batch.now_ms.saturating_sub(*last) >= TTL_TRIM_INTERVAL_MS);
                if due {
                    sqlx::query("DELETE FROM publications WHERE channel = ?1 AND time_ms <= ?2")
                        .bind(channel.as_str())
                        .bind(cutoff)
                        .execute(&mut *conn)
                        .await?;
                    self.ttl_trimmed.insert(channel.clone(), batch.now_ms);
                }
            }
        }
        if batch.now_ms != i64::MIN
            && batch.now_ms.saturating_sub(self.last_sweep_ms) >= IDEMPOTENCY_SWEEP_INTERVAL_MS
        {
            sqlx::query("DELETE FROM idempotency WHERE expires_ms <= ?1")
                .bind(batch.now_ms)
                .execute(&mut *conn)
                .await?;
            self.last_sweep_ms = batch.now_ms;
        }
        Ok(())
    }
}

/// Inserts publications with one multi-row statement.
async fn insert_publications(
    conn: &mut SqliteConnection,
    rows: &[&(String, Publication)],
) -> Result<(), sqlx::Error> {
    let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO publications (channel, pub_offset, time_ms, data, has_info, \
         info_user, info_client, info_conn, info_chan, tags) ",
    );
    insert.push_values(rows, |mut values, (channel, publication)| {
        let info = publication.info.as_ref();
        let tags = if publication.tags.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&publication.tags).unwrap_or_default())
        };
        values
            .push_bind(channel.as_str())
            .push_bind(to_db(publication.offset))
            .push_bind(publication.time_ms)
            .push_bind(publication.data.as_ref())
            .push_bind(i64::from(info.is_some()))
            .push_bind(info.map(|i| i.user.as_str()))
            .push_bind(info.map(|i| i.client.as_str()))
            .push_bind(info.map(|i| i.conn_info.as_ref()))
            .push_bind(info.map(|i| i.chan_info.as_ref()))
            .push_bind(tags);
    });
    insert.build().execute(conn).await?;
    Ok(())
}

/// The batch's view of a channel stream: from the batch, else the committed
/// cache, else the database; a stream never seen gets a fresh epoch.
async fn load_chan<'b>(
    conn: &mut SqliteConnection,
    chans: &'b mut HashMap<String, Chan>,
    cache: &Cache,
    channel: &str,
) -> Result<&'b mut Chan, sqlx::Error> {
    if !chans.contains_key(channel) {
        let cached = read_lock(cache).get(channel).cloned();
        let (position, dirty) = match cached {
            Some(position) => (position, false),
            None => {
                let row = sqlx::query("SELECT top_offset, epoch FROM streams WHERE channel = ?1")
                    .bind(channel)
                    .fetch_optional(&mut *conn)
                    .await?;
                match row {
                    Some(row) => (
                        StreamPosition {
                            offset: from_db(row.try_get(0)?),
                            epoch: row.try_get(1)?,
                        },
                        false,
                    ),
                    None => (
                        StreamPosition {
                            offset: 0,
                            epoch: new_epoch(None),
                        },
                        true,
                    ),
                }
            }
        };
        chans.insert(
            channel.to_owned(),
            Chan {
                position,
                dirty,
                trim_floor: 0,
                ttl_cutoff: None,
            },
        );
    }
    Ok(chans.get_mut(channel).expect("channel inserted just above"))
}

// ---------------------------------------------------------------------------
// Helpers.

/// A random 8-hex-digit epoch, different from `previous`.
fn new_epoch(previous: Option<&str>) -> String {
    loop {
        let epoch = format!("{:08x}", rand::random::<u32>());
        if previous != Some(epoch.as_str()) {
            return epoch;
        }
    }
}

fn decode_publication(row: &SqliteRow) -> Result<Publication, StoreError> {
    let get_err = |e: sqlx::Error| StoreError::Corrupt(format!("publication row: {e}"));
    let has_info: i64 = row.try_get(3).map_err(get_err)?;
    let info = if has_info != 0 {
        Some(PublisherInfo {
            user: row
                .try_get::<Option<String>, _>(4)
                .map_err(get_err)?
                .unwrap_or_default(),
            client: row
                .try_get::<Option<String>, _>(5)
                .map_err(get_err)?
                .unwrap_or_default(),
            conn_info: row
                .try_get::<Option<Vec<u8>>, _>(6)
                .map_err(get_err)?
                .unwrap_or_default()
                .into(),
            chan_info: row
                .try_get::<Option<Vec<u8>>, _>(7)
                .map_err(get_err)?
                .unwrap_or_default()
                .into(),
        })
    } else {
        None
    };
    let tags = match row.try_get::<Option<String>, _>(8).map_err(get_err)? {
        Some(json) => serde_json::from_str::<BTreeMap<String, String>>(&json)
            .map_err(|e| StoreError::Corrupt(format!("publication tags: {e}")))?,
        None => BTreeMap::new(),
    };
    Ok(Publication {
        offset: from_db(row.try_get(0).map_err(get_err)?),
        time_ms: row.try_get(1).map_err(get_err)?,
        data: row.try_get::<Vec<u8>, _>(2).map_err(get_err)?.into(),
        info,
        tags,
    })
}

/// Offsets are stored as SQLite INTEGER (i64); they never get near 2^63.
fn to_db(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

fn from_db(offset: i64) -> u64 {
    u64::try_from(offset).unwrap_or(0)
}

fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed => StoreError::Closed,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

fn migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Unavailable(format!("schema migration: {e}"))
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
