//! The PostgreSQL backend: per-node group commit, cross-node offset
//! assignment under stream row locks, snapshot-consistent reads.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
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
/// Minimum time between two TTL trims of one channel by this node.
const TTL_TRIM_INTERVAL_MS: i64 = 1_000;
/// Minimum time between two sweeps of expired idempotency keys by this node.
const IDEMPOTENCY_SWEEP_INTERVAL_MS: i64 = 10_000;
/// Attempts of a batch that failed with a serialization failure or deadlock.
const BATCH_ATTEMPTS: usize = 3;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connection settings of a [`PgStore`].
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:5432/database?sslmode=…`.
    pub url: String,
    /// Connections in this node's pool (one is used by the writer at a time,
    /// the rest by reads).
    pub pool_size: u32,
    /// Schema holding the tables (created if missing); `None` = the
    /// server's default `search_path` (usually `public`). Must match
    /// `[a-z0-9_]+`.
    pub schema: Option<String>,
    /// How long getting a connection (including connecting) may take before
    /// the call fails with [`StoreError::Unavailable`]. Keep it short so the
    /// node's circuit breaker sees an outage quickly.
    pub acquire_timeout: Duration,
    /// Server-side limit of one statement (lock waits included); `None` =
    /// the server's setting.
    pub statement_timeout: Option<Duration>,
}

impl PgConfig {
    /// Settings for `url` with the defaults: 10 connections, default schema,
    /// 3 s acquire timeout, 10 s statement timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 10,
            schema: None,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        let url = match self.url.split_once('@') {
            Some((_, host)) => format!("postgres://***@{host}"),
            None => self.url.clone(),
        };
        f.debug_struct("PgConfig")
            .field("url", &url)
            .field("pool_size", &self.pool_size)
            .field("schema", &self.schema)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// The [`Store`] on PostgreSQL, for cluster mode: several nodes (each with
/// its own `PgStore`) share one database.
///
/// * **Offsets across nodes.** Each node has one writer task that commits up
///   to 512 queued requests per transaction (group commit). The transaction
///   first locks the `streams` rows of every channel in the batch (sorted by
///   name, so batches of different nodes cannot deadlock), reads the tops,
///   assigns consecutive offsets, inserts and commits. A concurrent batch of
///   another node waits on the row lock and continues from the committed
///   top, so offsets are strictly increasing with no gaps or duplicates
///   cluster-wide; a failed batch rolls back and leaves no gap either.
///   Idempotency keys are checked under the same lock.
/// * **Reads** (history, oldest offset, position) are single statements on
///   the pool, so a page and its stream position come from one snapshot.
///   Positions are not cached (another node may have appended).
/// * **Outages**: acquiring a connection is bounded by `acquire_timeout`,
///   after which calls fail with [`StoreError::Unavailable`]; nothing of a
///   failed call was committed.
///
/// Cloning is cheap and shares the store.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    requests: mpsc::Sender<Op>,
    pool: PgPool,
    closed: AtomicBool,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, creates the schema if needed, runs the migrations and starts
    /// the writer. Fails with [`StoreError::Unavailable`] if PostgreSQL
    /// cannot be reached within `acquire_timeout`.
    pub async fn open(config: &PgConfig) -> Result<Self, StoreError> {
        let pool = connect(config).await?;
        MIGRATOR.run(&pool).await.map_err(migrate_err)?;
        Ok(Self::start(pool))
    }

    /// Runs the schema migrations on the database at `url` (default schema)
    /// and returns: the `switchboard migrate` command.
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        Self::migrate_with(&PgConfig::new(url)).await
    }

    /// [`PgStore::migrate`] with full settings (e.g. a schema).
    pub async fn migrate_with(config: &PgConfig) -> Result<(), StoreError> {
        let pool = connect(config).await?;
        let result = MIGRATOR.run(&pool).await.map_err(migrate_err);
        pool.close().await;
        result
    }

    fn start(pool: PgPool) -> Self {
        let (requests, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            pool: pool.clone(),
            rx,
            ttl_trimmed: HashMap::new(),
            last_sweep_ms: i64::MIN,
        };
        tokio::spawn(writer.run());
        Self {
            inner: Arc::new(Inner {
                requests,
                pool,
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

    /// Runs one history statement; `None` when the stream does not exist.
    async fn read_page(
        &self,
        channel: &str,
        query: &HistoryQuery,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<Option<HistoryPage>, StoreError> {
        // Offsets in (lower, upper], computed in SQL from the top read in
        // the same snapshot. Forward with `since`: what came after it;
        // reverse with `since`: what came before it, newest first.
        let (lower, upper) = match &query.since {
            Some(since) if query.reverse => (0, since.offset.saturating_sub(1)),
            Some(since) => (since.offset, u64::MAX),
            None => (0, u64::MAX),
        };
        let sql = if query.reverse {
            HISTORY_DESC
        } else {
            HISTORY_ASC
        };
        let rows = sqlx::query(sql)
            .bind(channel)
            .bind(size_param(retention))
            .bind(to_db(lower))
            .bind(to_db(upper))
            .bind(retention.ttl_cutoff(now_ms).unwrap_or(i64::MIN))
            .bind(query.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db_err)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let position = StreamPosition {
            offset: from_db(first.try_get(0).map_err(db_err)?),
            epoch: first.try_get(1).map_err(db_err)?,
        };
        let mut publications = Vec::with_capacity(rows.len());
        for row in &rows {
            // The LEFT JOIN yields one row of NULLs when nothing matched.
            if row.try_get::<Option<i64>, _>(2).map_err(db_err)?.is_some() {
                publications.push(decode_publication(row, 2)?);
            }
        }
        Ok(Some(HistoryPage {
            publications,
            position,
        }))
    }
}

async fn connect(config: &PgConfig) -> Result<PgPool, StoreError> {
    let mut options = PgConnectOptions::from_str(&config.url)
        .map_err(|e| StoreError::Unavailable(format!("postgres url: {e}")))?
        .application_name("switchboard");
    if let Some(schema) = &config.schema {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Invalid(format!(
                "postgres schema {schema:?} must match [a-z0-9_]+"
            )));
        }
        // Create it with a plain connection first: the pool's connections
        // put it on their search_path.
        let bootstrap = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        // Audited: `schema` was checked to be [a-z0-9_]+ just above.
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&bootstrap)
        .await;
        bootstrap.close().await;
        match created {
            Ok(_) => {}
            // Two nodes creating it at once: the loser sees a duplicate.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P06" | "23505")) => {}
            Err(e) => return Err(db_err(e)),
        }
        options = options.options([("search_path", schema.as_str())]);
    }
    if let Some(timeout) = config.statement_timeout {
        options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
    }
    PgPoolOptions::new()
        .max_connections(config.pool_size.max(2))
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(db_err)
}

/// Columns of a publication row, in the order [`decode_publication`] reads.
macro_rules! publication_columns {
    ($p:literal) => {
        concat!(
            $p,
            ".pub_offset, ",
            $p,
            ".time_ms, ",
            $p,
            ".data, ",
            $p,
            ".has_info, ",
            $p,
            ".info_user, ",
            $p,
            ".info_client, ",
            $p,
            ".info_conn, ",
            $p,
            ".info_chan, ",
            $p,
            ".tags"
        )
    };
}

/// History of one channel in one statement: $1 channel, $2 size limit
/// (NULL = forever), $3 lower bound (exclusive), $4 upper cap, $5 TTL cutoff
/// (exclusive), $6 limit (NULL = all).
macro_rules! history_sql {
    ($order:literal) => {
        concat!(
            "SELECT s.top_offset, s.epoch, ",
            publication_columns!("p"),
            " FROM streams s LEFT JOIN LATERAL (SELECT * FROM publications q \
             WHERE q.channel = s.channel \
             AND q.pub_offset > GREATEST(CASE WHEN $2::int8 IS NULL THEN 0 \
                 ELSE s.top_offset - $2::int8 END, $3::int8) \
             AND q.pub_offset <= LEAST(s.top_offset, $4::int8) \
             AND q.time_ms > $5::int8 \
             ORDER BY q.pub_offset ",
            $order,
            " LIMIT $6::int8) p ON TRUE WHERE s.channel = $1 ORDER BY p.pub_offset ",
            $order
        )
    };
}

const HISTORY_ASC: &str = history_sql!("ASC");
const HISTORY_DESC: &str = history_sql!("DESC");

const OLDEST_OFFSET: &str = "SELECT (SELECT MIN(q.pub_offset) FROM publications q \
     WHERE q.channel = s.channel \
     AND q.pub_offset > CASE WHEN $2::int8 IS NULL THEN 0 \
         ELSE GREATEST(s.top_offset - $2::int8, 0) END \
     AND q.pub_offset <= s.top_offset AND q.time_ms > $3::int8) \
     FROM streams s WHERE s.channel = $1";

fn size_param(retention: &Retention) -> Option<i64> {
    (!retention.forever).then(|| i64::try_from(retention.size).unwrap_or(i64::MAX))
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn append(
        &self,
        channel: &str,
        publication: NewPublication,
        retention: &Retention,
        idempotency_window: Duration,
        now_ms: i64,
    ) -> Result<Appended, StoreError> {
        check_text("channel", channel)?;
        if let Some(key) = &publication.idempotency_key {
            check_text("idempotency key", key)?;
        }
        if let Some(info) = &publication.info {
            check_text("publisher user", &info.user)?;
            check_text("publisher client", &info.client)?;
        }
        let request = AppendRequest {
            channel: channel.to_owned(),
            publication,
            retention: retention.clone(),
            window_ms: i64::try_from(idempotency_window.as_millis()).unwrap_or(i64::MAX),
            now_ms,
        };
        self.request(|reply| Op::Append(Box::new(request), reply))
            .await
    }

    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<HistoryPage, StoreError> {
        self.check_open()?;
        check_text("channel", channel)?;
        if query.limit == Some(0) || !retention.stores() {
            return Ok(HistoryPage {
                publications: Vec::new(),
                position: self.position(channel).await?,
            });
        }
        if let Some(page) = self.read_page(channel, query, retention, now_ms).await? {
            return Ok(page);
        }
        // A stream never seen: create it (fresh epoch), then read again.
        let position = self.position(channel).await?;
        Ok(self
            .read_page(channel, query, retention, now_ms)
            .await?
            .unwrap_or(HistoryPage {
                publications: Vec::new(),
                position,
            }))
    }

    async fn position(&self, channel: &str) -> Result<StreamPosition, StoreError> {
        self.check_open()?;
        check_text("channel", channel)?;
        let pool = &self.inner.pool;
        for _ in 0..3 {
            let row = sqlx::query("SELECT top_offset, epoch FROM streams WHERE channel = $1")
                .bind(channel)
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            if let Some(row) = row {
                return decode_position(&row);
            }
            let inserted = sqlx::query(
                "INSERT INTO streams (channel, top_offset, epoch) VALUES ($1, 0, $2) \
                 ON CONFLICT (channel) DO NOTHING RETURNING top_offset, epoch",
            )
            .bind(channel)
            .bind(new_epoch(None))
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
            if let Some(row) = inserted {
                return decode_position(&row);
            }
            // Created concurrently by someone else: read it.
        }
        Err(StoreError::Unavailable(format!(
            "stream {channel} kept changing while reading its position"
        )))
    }

    async fn oldest_offset(
        &self,
        channel: &str,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.check_open()?;
        check_text("channel", channel)?;
        if !retention.stores() {
            self.position(channel).await?;
            return Ok(None);
        }
        let row = sqlx::query(OLDEST_OFFSET)
            .bind(channel)
            .bind(size_param(retention))
            .bind(retention.ttl_cutoff(now_ms).unwrap_or(i64::MIN))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(row) => Ok(row
                .try_get::<Option<i64>, _>(0)
                .map_err(db_err)?
                .map(from_db)),
            None => {
                // Never seen: create it like the other backends do.
                self.position(channel).await?;
                Ok(None)
            }
        }
    }

    async fn remove_history(&self, channel: &str) -> Result<(), StoreError> {
        self.check_open()?;
        check_text("channel", channel)?;
        let mut tx = self.inner.pool.begin().await.map_err(db_err)?;
        // Two candidate epochs that differ, so the new one always differs
        // from the current one.
        let a = new_epoch(None);
        let b = new_epoch(Some(&a));
        sqlx::query(
            "INSERT INTO streams (channel, top_offset, epoch) VALUES ($1, 0, $2) \
             ON CONFLICT (channel) DO UPDATE \
             SET epoch = CASE WHEN streams.epoch = $2 THEN $3 ELSE $2 END",
        )
        .bind(channel)
        .bind(&a)
        .bind(&b)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM publications WHERE channel = $1")
            .bind(channel)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn append_event(
        &self,
        stream: &str,
        kind: &str,
        payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        check_text("event stream", stream)?;
        check_text("event kind", kind)?;
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
        check_text("event stream", stream)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT event_offset, kind, payload, time_ms FROM events \
             WHERE stream = $1 AND event_offset > $2 ORDER BY event_offset ASC LIMIT $3",
        )
        .bind(stream)
        .bind(to_db(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
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
            let _ = rx.await;
        }
        self.inner.pool.close().await;
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

enum Op {
    Append(Box<AppendRequest>, Reply<Appended>),
    Event(EventRequest, Reply<u64>),
    /// Flush everything queued, then stop.
    Close(oneshot::Sender<()>),
}

/// The answer computed for one request of a batch.
enum Out {
    Appended(Box<Appended>),
    Offset(u64),
}

struct Writer {
    pool: PgPool,
    rx: mpsc::Receiver<Op>,
    /// When this node last trimmed each channel by TTL.
    ttl_trimmed: HashMap<String, i64>,
    last_sweep_ms: i64,
}

/// A channel stream as seen by the batch being written.
struct Chan {
    position: StreamPosition,
    /// Top when the batch locked it.
    locked_top: u64,
    /// Publications with offset `<=` this are beyond the size limit.
    trim_floor: u64,
    /// Publications with `time_ms <=` this are expired.
    ttl_cutoff: Option<i64>,
}

impl Writer {
    async fn run(mut self) {
        let mut ops = Vec::with_capacity(MAX_BATCH);
        let mut closers = Vec::new();
        while self.rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
            let mut batch = Vec::with_capacity(ops.len());
            for op in ops.drain(..) {
                match op {
                    Op::Close(reply) => {
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
        for reply in closers {
            let _ = reply.send(());
        }
    }

    /// Applies `ops` in one transaction (retried on serialization failures
    /// and deadlocks), then answers each.
    async fn commit(&mut self, ops: Vec<Op>) {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.apply(&ops).await {
                Err(sqlx::Error::Database(e))
                    if attempt < BATCH_ATTEMPTS
                        && matches!(e.code().as_deref(), Some("40001" | "40P01")) =>
                {
                    tracing::debug!(error = %e, attempt, "store: batch conflict, retrying");
                }
                other => break other,
            }
        };
        match result {
            Ok(outs) => {
                for (op, out) in ops.into_iter().zip(outs) {
                    match (op, out) {
                        (Op::Append(_, reply), Out::Appended(a)) => {
                            let _ = reply.send(Ok(*a));
                        }
                        (Op::Event(_, reply), Out::Offset(o)) => {
                            let _ = reply.send(Ok(o));
                        }
                        (op, _) => respond_err(op, mismatch()),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = ops.len(), "store: batch failed");
                let err = db_err(e);
                for op in ops {
                    respond_err(op, err.clone());
                }
            }
        }
    }

    async fn apply(&mut self, ops: &[Op]) -> Result<Vec<Out>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut outs: Vec<Option<Out>> = ops.iter().map(|_| None).collect();
        let now_ms = ops
            .iter()
            .map(|op| match op {
                Op::Append(r, _) => r.now_ms,
                Op::Event(r, _) => r.now_ms,
                Op::Close(_) => i64::MIN,
            })
            .max()
            .unwrap_or(i64::MIN);

        let appends: Vec<(usize, &AppendRequest)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::Append(r, _) => Some((i, &**r)),
                _ => None,
            })
            .collect();
        if !appends.is_empty() {
            self.append_all(&mut tx, &appends, &mut outs, now_ms)
                .await?;
        }

        let events: Vec<(usize, &EventRequest)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::Event(r, _) => Some((i, r)),
                _ => None,
            })
            .collect();
        if !events.is_empty() {
            append_events(&mut tx, &events, &mut outs).await?;
        }

        if now_ms != i64::MIN
            && now_ms.saturating_sub(self.last_sweep_ms) >= IDEMPOTENCY_SWEEP_INTERVAL_MS
        {
            sqlx::query("DELETE FROM idempotency WHERE expires_ms <= $1")
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if now_ms != i64::MIN
            && now_ms.saturating_sub(self.last_sweep_ms) >= IDEMPOTENCY_SWEEP_INTERVAL_MS
        {
            self.last_sweep_ms = now_ms;
        }
        outs.into_iter()
            .map(|o| o.ok_or_else(|| sqlx::Error::Protocol("request left unanswered".into())))
            .collect()
    }

    async fn append_all(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        appends: &[(usize, &AppendRequest)],
        outs: &mut [Option<Out>],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        // 1. Lock every channel's stream row, in name order (creating it with
        //    a fresh epoch if new) and read its top.
        let names: BTreeSet<&str> = appends.iter().map(|(_, r)| r.channel.as_str()).collect();
        let names: Vec<&str> = names.into_iter().collect();
        let epochs: Vec<String> = names.iter().map(|_| new_epoch(None)).collect();
        let rows = sqlx::query(
            "INSERT INTO streams (channel, top_offset, epoch) \
             SELECT c, 0, e FROM UNNEST($1::text[], $2::text[]) AS t(c, e) ORDER BY c \
             ON CONFLICT (channel) DO UPDATE SET top_offset = streams.top_offset \
             RETURNING channel, top_offset, epoch",
        )
        .bind(&names)
        .bind(&epochs)
        .fetch_all(&mut **tx)
        .await?;
        let mut chans: HashMap<String, Chan> = HashMap::with_capacity(rows.len());
        for row in rows {
            let top = from_db(row.try_get(1)?);
            chans.insert(
                row.try_get(0)?,
                Chan {
                    position: StreamPosition {
                        offset: top,
                        epoch: row.try_get(2)?,
                    },
                    locked_top: top,
                    trim_floor: 0,
                    ttl_cutoff: None,
                },
            );
        }

        // 2. Idempotency keys already recorded (under the locks, so no other
        //    node can record one concurrently).
        let keyed: BTreeSet<(&str, &str)> = appends
            .iter()
            .filter(|(_, r)| r.window_ms > 0)
            .filter_map(|(_, r)| {
                r.publication
                    .idempotency_key
                    .as_deref()
                    .map(|k| (r.channel.as_str(), k))
            })
            .collect();
        let mut seen: HashMap<(String, String), (u64, i64)> = HashMap::new();
        if !keyed.is_empty() {
            let (kc, kk): (Vec<&str>, Vec<&str>) = keyed.iter().copied().unzip();
            let rows = sqlx::query(
                "SELECT i.channel, i.idem_key, i.pub_offset, i.time_ms FROM idempotency i \
                 JOIN UNNEST($1::text[], $2::text[]) AS k(c, key) \
                 ON i.channel = k.c AND i.idem_key = k.key",
            )
            .bind(&kc)
            .bind(&kk)
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                seen.insert(
                    (row.try_get(0)?, row.try_get(1)?),
                    (from_db(row.try_get(2)?), row.try_get(3)?),
                );
            }
        }

        // 3. Offsets, in request order.
        let mut rows: Vec<(&str, Publication)> = Vec::new();
        let mut idem_rows: BTreeMap<(&str, &str), (u64, i64, i64)> = BTreeMap::new();
        let mut duplicates: Vec<(usize, &str, u64, i64)> = Vec::new();
        for (i, r) in appends {
            let chan = chans
                .get_mut(r.channel.as_str())
                .ok_or_else(|| sqlx::Error::Protocol("stream row not locked".into()))?;
            let key = r
                .publication
                .idempotency_key
                .as_deref()
                .filter(|_| r.window_ms > 0);
            if let Some(key) = key
                && let Some(&(offset, time_ms)) = seen.get(&(r.channel.clone(), key.to_owned()))
                && time_ms > r.now_ms.saturating_sub(r.window_ms)
            {
                duplicates.push((*i, r.channel.as_str(), offset, time_ms));
                continue;
            }
            let offset = chan.position.offset + 1;
            chan.position.offset = offset;
            chan.trim_floor = chan.trim_floor.max(r.retention.size_floor(offset));
            if let Some(cutoff) = r.retention.ttl_cutoff(r.now_ms) {
                chan.ttl_cutoff = Some(chan.ttl_cutoff.map_or(cutoff, |c| c.max(cutoff)));
            }
            if let Some(key) = key {
                seen.insert((r.channel.clone(), key.to_owned()), (offset, r.now_ms));
                idem_rows.insert(
                    (r.channel.as_str(), key),
                    (offset, r.now_ms, r.now_ms.saturating_add(r.window_ms)),
                );
            }
            let new = &r.publication;
            let publication = Publication {
                offset,
                data: new.data.clone(),
                info: new.info.clone(),
                tags: new.tags.clone(),
                time_ms: r.now_ms,
            };
            if r.retention.stores() {
                rows.push((r.channel.as_str(), publication.clone()));
            }
            outs[*i] = Some(Out::Appended(Box::new(Appended {
                publication,
                position: chan.position.clone(),
                duplicate: false,
            })));
        }

        // 4. New tops.
        let (tc, tt): (Vec<&str>, Vec<i64>) = chans
            .iter()
            .filter(|(_, c)| c.position.offset != c.locked_top)
            .map(|(name, c)| (name.as_str(), to_db(c.position.offset)))
            .unzip();
        if !tc.is_empty() {
            sqlx::query(
                "UPDATE streams SET top_offset = t.top \
                 FROM UNNEST($1::text[], $2::int8[]) AS t(c, top) WHERE streams.channel = t.c",
            )
            .bind(&tc)
            .bind(&tt)
            .execute(&mut **tx)
            .await?;
        }

        // 5. Publications (those already beyond the size limit are skipped).
        rows.retain(|(channel, p)| chans.get(*channel).is_none_or(|c| p.offset > c.trim_floor));
        if !rows.is_empty() {
            insert_publications(tx, &rows).await?;
        }

        // 6. Idempotency records.
        if !idem_rows.is_empty() {
            let mut c = Vec::with_capacity(idem_rows.len());
            let mut k = Vec::with_capacity(idem_rows.len());
            let mut o = Vec::with_capacity(idem_rows.len());
            let mut t = Vec::with_capacity(idem_rows.len());
            let mut x = Vec::with_capacity(idem_rows.len());
            for ((channel, key), (offset, time_ms, expires_ms)) in &idem_rows {
                c.push(*channel);
                k.push(*key);
                o.push(to_db(*offset));
                t.push(*time_ms);
                x.push(*expires_ms);
            }
            sqlx::query(
                "INSERT INTO idempotency (channel, idem_key, pub_offset, time_ms, expires_ms) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
                 ON CONFLICT (channel, idem_key) DO UPDATE SET pub_offset = excluded.pub_offset, \
                 time_ms = excluded.time_ms, expires_ms = excluded.expires_ms",
            )
            .bind(&c)
            .bind(&k)
            .bind(&o)
            .bind(&t)
            .bind(&x)
            .execute(&mut **tx)
            .await?;
        }

        // 7. Trimming: size every batch, TTL at most once a second per
        //    channel on this node.
        let (fc, ff): (Vec<&str>, Vec<i64>) = chans
            .iter()
            .filter(|(_, c)| c.trim_floor > 0)
            .map(|(name, c)| (name.as_str(), to_db(c.trim_floor)))
            .unzip();
        if !fc.is_empty() {
            sqlx::query(
                "DELETE FROM publications p USING UNNEST($1::text[], $2::int8[]) AS t(c, f) \
                 WHERE p.channel = t.c AND p.pub_offset <= t.f",
            )
            .bind(&fc)
            .bind(&ff)
            .execute(&mut **tx)
            .await?;
        }
        let due: Vec<(&str, i64)> = chans
            .iter()
            .filter_map(|(name, c)| c.ttl_cutoff.map(|cut| (name.as_str(), cut)))
            .filter(|(name, _)| {
                self.ttl_trimmed
                    .get(*name)
                    .is_none_or(|last| now_ms.saturating_sub(*last) >= TTL_TRIM_INTERVAL_MS)
            })
            .collect();
        if !due.is_empty() {
            let (dc, dt): (Vec<&str>, Vec<i64>) = due.iter().copied().unzip();
            sqlx::query(
                "DELETE FROM publications p USING UNNEST($1::text[], $2::int8[]) AS t(c, cut) \
                 WHERE p.channel = t.c AND p.time_ms <= t.cut",
            )
            .bind(&dc)
            .bind(&dt)
            .execute(&mut **tx)
            .await?;
            for (name, _) in due {
                self.ttl_trimmed.insert(name.to_owned(), now_ms);
            }
        }

        // 8. Duplicates report the earlier publication, if still stored
        //    (it may have been written by this very batch).
        if !duplicates.is_empty() {
            let (dc, doff): (Vec<&str>, Vec<i64>) = duplicates
                .iter()
                .map(|(_, c, o, _)| (*c, to_db(*o)))
                .unzip();
            let found = sqlx::query(concat!(
                "SELECT p.channel, ",
                publication_columns!("p"),
                " FROM publications p JOIN UNNEST($1::text[], $2::int8[]) AS t(c, o) \
                 ON p.channel = t.c AND p.pub_offset = t.o"
            ))
            .bind(&dc)
            .bind(&doff)
            .fetch_all(&mut **tx)
            .await?;
            let mut stored: HashMap<(String, u64), Publication> = HashMap::new();
            for row in &found {
                let publication = decode_publication(row, 1).map_err(|e| {
                    sqlx::Error::Decode(Box::new(std::io::Error::other(e.to_string())))
                })?;
                stored.insert((row.try_get(0)?, publication.offset), publication);
            }
            for (i, channel, offset, time_ms) in duplicates {
                let publication = stored
                    .get(&(channel.to_owned(), offset))
                    .cloned()
                    .unwrap_or(Publication {
                        offset,
                        time_ms,
                        ..Publication::default()
                    });
                let epoch = chans
                    .get(channel)
                    .map(|c| c.position.epoch.clone())
                    .unwrap_or_default();
                outs[i] = Some(Out::Appended(Box::new(Appended {
                    publication,
                    position: StreamPosition { offset, epoch },
                    duplicate: true,
                })));
            }
        }
        Ok(())
    }
}

async fn insert_publications(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[(&str, Publication)],
) -> Result<(), sqlx::Error> {
    let n = rows.len();
    let mut channel = Vec::with_capacity(n);
    let mut offset = Vec::with_capacity(n);
    let mut time = Vec::with_capacity(n);
    let mut data: Vec<&[u8]> = Vec::with_capacity(n);
    let mut has_info = Vec::with_capacity(n);
    let mut user: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut client: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut conn: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    let mut chan: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    let mut tags: Vec<Option<String>> = Vec::with_capacity(n);
    for (c, p) in rows {
        let info = p.info.as_ref();
        channel.push(*c);
        offset.push(to_db(p.offset));
        time.push(p.time_ms);
        data.push(p.data.as_ref());
        has_info.push(info.is_some());
        user.push(info.map(|i| i.user.as_str()));
        client.push(info.map(|i| i.client.as_str()));
        conn.push(info.map(|i| i.conn_info.as_ref()));
        chan.push(info.map(|i| i.chan_info.as_ref()));
        tags.push(if p.tags.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&p.tags).unwrap_or_default())
        });
    }
    sqlx::query(
        "INSERT INTO publications (channel, pub_offset, time_ms, data, has_info, \
         info_user, info_client, info_conn, info_chan, tags) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::bytea[], $5::bool[], \
         $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::text[])",
    )
    .bind(&channel)
    .bind(&offset)
    .bind(&time)
    .bind(&data)
    .bind(&has_info)
    .bind(&user)
    .bind(&client)
    .bind(&conn)
    .bind(&chan)
    .bind(&tags)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends events: locks (and advances) every stream's row in name order,
/// then inserts the events with consecutive offsets.
async fn append_events(
    tx: &mut Transaction<'static, Postgres>,
    events: &[(usize, &EventRequest)],
    outs: &mut [Option<Out>],
) -> Result<(), sqlx::Error> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, e) in events {
        *counts.entry(e.stream.as_str()).or_default() += 1;
    }
    let (names, ns): (Vec<&str>, Vec<i64>) = counts.iter().map(|(s, n)| (*s, *n)).unzip();
    let rows = sqlx::query(
        "INSERT INTO event_streams (stream, top_offset) \
         SELECT s, n FROM UNNEST($1::text[], $2::int8[]) AS t(s, n) ORDER BY s \
         ON CONFLICT (stream) DO UPDATE \
         SET top_offset = event_streams.top_offset + excluded.top_offset \
         RETURNING stream, top_offset",
    )
    .bind(&names)
    .bind(&ns)
    .fetch_all(&mut **tx)
    .await?;
    // Next offset to hand out per stream.
    let mut next: HashMap<String, u64> = HashMap::with_capacity(rows.len());
    for row in rows {
        let stream: String = row.try_get(0)?;
        let top = from_db(row.try_get(1)?);
        let n = counts
            .get(stream.as_str())
            .copied()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        next.insert(stream, top + 1 - n);
    }
    let n = events.len();
    let mut stream = Vec::with_capacity(n);
    let mut offset = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    let mut time = Vec::with_capacity(n);
    for (i, e) in events {
        let slot = next
            .get_mut(e.stream.as_str())
            .ok_or_else(|| sqlx::Error::Protocol("event stream row not locked".into()))?;
        let o = *slot;
        *slot += 1;
        stream.push(e.stream.as_str());
        offset.push(to_db(o));
        kind.push(e.kind.as_str());
        payload.push(e.payload.as_str());
        time.push(e.now_ms);
        outs[*i] = Some(Out::Offset(o));
    }
    sqlx::query(
        "INSERT INTO events (stream, event_offset, kind, payload, time_ms) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[])",
    )
    .bind(&stream)
    .bind(&offset)
    .bind(&kind)
    .bind(&payload)
    .bind(&time)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn respond_err(op: Op, err: StoreError) {
    match op {
        Op::Append(_, reply) => {
            let _ = reply.send(Err(err));
        }
        Op::Event(_, reply) => {
            let _ = reply.send(Err(err));
        }
        Op::Close(reply) => {
            let _ = reply.send(());
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Unavailable("internal error: writer answered with the wrong kind".into())
}

// ---------------------------------------------------------------------------
// Helpers.

/// PostgreSQL text cannot hold NUL; refuse such a name up front rather than
/// failing the whole batch it would land in.
fn check_text(what: &str, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        Err(StoreError::Invalid(format!(
            "{what} contains a NUL character"
        )))
    } else {
        Ok(())
    }
}

/// A random 8-hex-digit epoch, different from `previous`.
fn new_epoch(previous: Option<&str>) -> String {
    loop {
        let epoch = format!("{:08x}", rand::random::<u32>());
        if previous != Some(epoch.as_str()) {
            return epoch;
        }
    }
}

fn decode_position(row: &PgRow) -> Result<StreamPosition, StoreError> {
    Ok(StreamPosition {
        offset: from_db(row.try_get(0).map_err(db_err)?),
        epoch: row.try_get(1).map_err(db_err)?,
    })
}

/// Decodes the publication columns starting at column `at`.
fn decode_publication(row: &PgRow, at: usize) -> Result<Publication, StoreError> {
    let get_err = |e: sqlx::Error| StoreError::Corrupt(format!("publication row: {e}"));
    let has_info: bool = row.try_get(at + 3).map_err(get_err)?;
    let info = if has_info {
        Some(PublisherInfo {
            user: row
                .try_get::<Option<String>, _>(at + 4)
                .map_err(get_err)?
                .unwrap_or_default(),
            client: row
                .try_get::<Option<String>, _>(at + 5)
                .map_err(get_err)?
                .unwrap_or_default(),
            conn_info: row
                .try_get::<Option<Vec<u8>>, _>(at + 6)
                .map_err(get_err)?
                .unwrap_or_default()
                .into(),
            chan_info: row
                .try_get::<Option<Vec<u8>>, _>(at + 7)
                .map_err(get_err)?
                .unwrap_or_default()
                .into(),
        })
    } else {
        None
    };
    let tags = match row.try_get::<Option<String>, _>(at + 8).map_err(get_err)? {
        Some(json) => serde_json::from_str::<BTreeMap<String, String>>(&json)
            .map_err(|e| StoreError::Corrupt(format!("publication tags: {e}")))?,
        None => BTreeMap::new(),
    };
    Ok(Publication {
        offset: from_db(row.try_get(at).map_err(get_err)?),
        time_ms: row.try_get(at + 1).map_err(get_err)?,
        data: row.try_get::<Vec<u8>, _>(at + 2).map_err(get_err)?.into(),
        info,
        tags,
    })
}

/// Offsets are stored as BIGINT; they never get near 2^63.
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
