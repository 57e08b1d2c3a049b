//! The store suite on PostgreSQL (the machine's server on 127.0.0.1:5432,
//! database `test`), each test in a fresh schema, plus cluster tests: two
//! `PgStore`s (two nodes) on one database, and outages.

mod suite;
mod support;

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use suite::{Backend, NO_WINDOW, T0, keep, keyed, publication};
use switchboard_store::{DynStore, HistoryQuery, PgConfig, PgStore, Store, StoreError};
use tokio::{net::TcpListener, task::JoinHandle};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Upper bound of every wait: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// A fresh schema in the `test` database, dropped when the test passed.
struct PgSchema {
    config: PgConfig,
}

fn unique(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("sbtest_{name}_{:012x}", h.finish() & 0xffff_ffff_ffff)
}

async fn pg(name: &str) -> PgSchema {
    support::services::ensure_postgres();
    let mut config = PgConfig::new(URL);
    config.schema = Some(unique(name));
    config.pool_size = 8;
    PgSchema { config }
}

impl PgSchema {
    async fn store(&self) -> PgStore {
        PgStore::open(&self.config).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL must run on 127.0.0.1:5432 with database `test` for these tests: {e}"
            )
        })
    }

    /// Drops the schema.
    async fn finish(&self) {
        let Some(schema) = &self.config.schema else {
            return;
        };
        let pool = sqlx::PgPool::connect(URL)
            .await
            .expect("connect for cleanup");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&pool)
        .await
        .expect("drop schema");
        pool.close().await;
    }
}

#[async_trait::async_trait]
impl Backend for PgSchema {
    async fn open(&self) -> DynStore {
        Arc::new(self.store().await)
    }
}

store_suite!(pg);

/// Two nodes append to the same channels at once: every channel's offsets
/// are exactly 1..=N (strictly increasing, no gap, no duplicate) and history
/// holds exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_append_concurrently_without_gaps() {
    let db = pg("two_nodes").await;
    let node_a = db.store().await;
    let node_b = db.store().await;
    const PER_NODE: usize = 400;
    const CHANNELS: usize = 3;
    let retention = keep(10_000);
    let mut tasks = Vec::new();
    for (n, store) in [(0, node_a.clone()), (1, node_b.clone())] {
        for t in 0..20 {
            let store = store.clone();
            let retention = retention.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..PER_NODE / 20 {
                    let channel = format!("room:{}", (t + i) % CHANNELS);
                    let data = format!("n{n}t{t}i{i}");
                    let appended = store
                        .append(&channel, publication(&data), &retention, NO_WINDOW, T0)
                        .await
                        .expect("append");
                    assert!(!appended.duplicate);
                    acked.push((channel, appended.position.offset, data));
                }
                acked
            }));
        }
    }
    // Events from both nodes to one stream, concurrently with the appends.
    let mut event_tasks = Vec::new();
    for store in [node_a.clone(), node_b.clone()] {
        for _ in 0..5 {
            let store = store.clone();
            event_tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..20 {
                    got.push(
                        store
                            .append_event("audit", "k", &serde_json::json!({ "i": i }), T0)
                            .await
                            .expect("event"),
                    );
                }
                got
            }));
        }
    }
    let mut by_channel: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for task in tasks {
        for (channel, offset, data) in task.await.expect("task") {
            by_channel.entry(channel).or_default().push((offset, data));
        }
    }
    let mut event_offsets = Vec::new();
    for task in event_tasks {
        event_offsets.extend(task.await.expect("task"));
    }
    event_offsets.sort_unstable();
    assert_eq!(event_offsets, (1..=200).collect::<Vec<u64>>());

    let mut total = 0;
    for (channel, mut acked) in by_channel {
        acked.sort();
        let offsets: Vec<u64> = acked.iter().map(|(o, _)| *o).collect();
        let n = offsets.len() as u64;
        total += n;
        assert_eq!(offsets, (1..=n).collect::<Vec<_>>(), "{channel}: gapless");
        for store in [&node_a, &node_b] {
            let page = store
                .history(&channel, &HistoryQuery::default(), &retention, T0)
                .await
                .expect("history");
            assert_eq!(page.position.offset, n);
            let stored: Vec<(u64, String)> = page
                .publications
                .iter()
                .map(|p| (p.offset, String::from_utf8(p.data.to_vec()).expect("utf8")))
                .collect();
            assert_eq!(stored, acked, "{channel}: history is what was acknowledged");
        }
    }
    assert_eq!(total, 2 * PER_NODE as u64);
    // Both nodes see one epoch per channel.
    let a = node_a.position("room:0").await.expect("position");
    let b = node_b.position("room:0").await.expect("position");
    assert_eq!(a, b);
    node_a.close().await.expect("close");
    node_b.close().await.expect("close");
    db.finish().await;
}

/// The same idempotency key published through two nodes at once is stored
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_holds_across_nodes() {
    let db = pg("idem_nodes").await;
    let nodes = [db.store().await, db.store().await];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(
                    "ch",
                    keyed(&format!("try{i}"), "same"),
                    &keep(10),
                    Duration::from_secs(60),
                    T0,
                )
                .await
                .expect("append")
        }));
    }
    let mut fresh = 0;
    let mut data = HashSet::new();
    for task in tasks {
        let appended = task.await.expect("task");
        assert_eq!(appended.position.offset, 1);
        fresh += usize::from(!appended.duplicate);
        data.insert(appended.publication.data.clone());
    }
    assert_eq!(fresh, 1);
    assert_eq!(
        data.len(),
        1,
        "every duplicate reports the stored publication"
    );
    assert_eq!(nodes[1].position("ch").await.expect("position").offset, 1);
    db.finish().await;
}

#[tokio::test]
async fn migrate_is_idempotent_and_open_uses_it() {
    let db = pg("migrate").await;
    PgStore::migrate_with(&db.config).await.expect("migrate");
    PgStore::migrate_with(&db.config)
        .await
        .expect("migrate again");
    let store = db.store().await;
    store
        .append("ch", publication("x"), &keep(1), NO_WINDOW, T0)
        .await
        .expect("append");
    store.close().await.expect("close");
    // The default schema of the `test` database can be migrated too (this
    // is what `switchboard migrate --store-url …` does).
    PgStore::migrate(URL).await.expect("migrate public");
    db.finish().await;
}

#[tokio::test]
async fn bad_input_is_refused_without_hurting_the_batch() {
    let db = pg("invalid").await;
    let store = db.store().await;
    let bad = store
        .append("ch\0", publication("x"), &keep(1), NO_WINDOW, T0)
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    let bad = store
        .append_event("audit", "k\0", &serde_json::json!(null), T0)
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    // NUL inside payloads is fine (bytea data, escaped JSON).
    let ok = store
        .append("ch", publication("a\0b"), &keep(1), NO_WINDOW, T0)
        .await
        .expect("append");
    assert_eq!(ok.publication.data.as_ref(), b"a\0b");
    store
        .append_event("audit", "k", &serde_json::json!("a\u{0}b"), T0)
        .await
        .expect("event");
    assert_eq!(
        store.read_events("audit", 0, 10).await.expect("read")[0].payload,
        serde_json::json!("a\u{0}b")
    );
    let mut config = db.config.clone();
    config.schema = Some("Bad-Schema".into());
    assert!(matches!(
        PgStore::open(&config).await,
        Err(StoreError::Invalid(_))
    ));
    store.close().await.expect("close");
    db.finish().await;
}

#[tokio::test]
async fn unreachable_postgres_fails_fast_with_unavailable() {
    // Nothing listens on port 1.
    let mut config = PgConfig::new("postgres://postgres@127.0.0.1:1/test");
    config.acquire_timeout = Duration::from_secs(1);
    let res = tokio::time::timeout(PATIENCE, PgStore::open(&config))
        .await
        .expect("open gives up within its acquire timeout");
    assert!(matches!(res, Err(StoreError::Unavailable(_))), "{res:?}");
}

/// A TCP proxy to PostgreSQL that the test can cut and restore, to play an
/// outage without touching the shared server.
struct Proxy {
    port: u16,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let inner = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                inner.lock().expect("lock").push(conn);
            }
        });
        tasks.lock().expect("lock").push(accept);
        Self { port, tasks }
    }

    /// Closes the listener and every proxied connection.
    fn cut(&self) {
        for task in self.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_gives_unavailable_then_recovers() {
    let db = pg("outage").await;
    // Create the schema directly, then use the store through the proxy.
    db.store().await.close().await.expect("close");
    let proxy = Proxy::start(0).await;
    let mut config = db.config.clone();
    config.url = format!("postgres://postgres@127.0.0.1:{}/test", proxy.port);
    config.acquire_timeout = Duration::from_secs(1);
    config.pool_size = 2;
    let store = PgStore::open(&config).await.expect("open through proxy");
    let r = keep(10);
    store
        .append("ch", publication("before"), &r, NO_WINDOW, T0)
        .await
        .expect("append");

    proxy.cut();
    // Let the aborted tasks drop their sockets.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        let res = tokio::time::timeout(
            PATIENCE,
            store.append("ch", publication("during"), &r, NO_WINDOW, T0),
        )
        .await
        .expect("append gives up within the acquire timeout");
        assert!(matches!(res, Err(StoreError::Unavailable(_))), "{res:?}");
        let res = tokio::time::timeout(PATIENCE, store.position("ch"))
            .await
            .expect("read gives up within the acquire timeout");
        assert!(matches!(res, Err(StoreError::Unavailable(_))), "{res:?}");
    }

    // PostgreSQL is back: the same store works again, and nothing of the
    // failed appends was committed.
    let _proxy = Proxy::start(proxy.port).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let appended = loop {
        match store
            .append("ch", publication("after"), &r, NO_WINDOW, T0)
            .await
        {
            Ok(a) => break a,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(appended.position.offset, 2);
    let page = store
        .history("ch", &HistoryQuery::default(), &r, T0)
        .await
        .expect("history");
    let data: Vec<&[u8]> = page.publications.iter().map(|p| p.data.as_ref()).collect();
    assert_eq!(data, vec![b"before".as_ref(), b"after".as_ref()]);
    store.close().await.expect("close");
    db.finish().await;
}
