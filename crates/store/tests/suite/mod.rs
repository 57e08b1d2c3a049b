//! The behavioural suite of the `Store` trait, run against every backend
//! (`tests/sqlite.rs`, `tests/postgres.rs`). Each test gets a [`Backend`]
//! whose `open` returns a store on the test's own database; opening again
//! (after `close`) sees the same data.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use switchboard_store::{
    DynStore, HistoryQuery, NewPublication, PublisherInfo, Retention, StoreError, StreamPosition,
};

pub const T0: i64 = 1_700_000_000_000;
pub const NO_WINDOW: Duration = Duration::ZERO;

/// A backend under test: one database per test.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Opens a store on this test's database.
    async fn open(&self) -> DynStore;
}

/// Declares one `#[tokio::test]` per suite test, each calling
/// `$make(test_name).await` for its backend and `backend.finish().await`
/// after the test passed.
#[macro_export]
macro_rules! store_suite {
    ($make:path) => {
        $crate::store_suite!(@each $make;
            concurrent_appends_get_strictly_increasing_offsets,
            history_since_limit_reverse,
            size_trimming_keeps_the_newest,
            ttl_trimming_with_a_fake_clock,
            idempotency_within_and_after_window,
            concurrent_retries_store_once,
            remove_history_changes_epoch_and_keeps_offsets,
            reopen_preserves_history_epoch_and_events,
            events_append_and_read,
            size_zero_stores_nothing_but_advances_offsets,
            append_throughput,
        );
    };
    (@each $make:path; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let backend = $make(stringify!($name)).await;
                suite::$name(&backend).await;
                backend.finish().await;
            }
        )*
    };
}

pub fn keep(size: usize) -> Retention {
    Retention {
        size,
        ttl: None,
        forever: false,
    }
}

pub fn publication(data: &str) -> NewPublication {
    NewPublication {
        data: data.to_owned().into(),
        ..NewPublication::default()
    }
}

pub fn keyed(data: &str, key: &str) -> NewPublication {
    NewPublication {
        idempotency_key: Some(key.to_owned()),
        ..publication(data)
    }
}

pub async fn append_n(
    store: &DynStore,
    channel: &str,
    n: usize,
    retention: &Retention,
    now_ms: i64,
) {
    for i in 0..n {
        store
            .append(
                channel,
                publication(&format!("m{i}")),
                retention,
                NO_WINDOW,
                now_ms,
            )
            .await
            .expect("append");
    }
}

pub async fn offsets(
    store: &DynStore,
    channel: &str,
    query: &HistoryQuery,
    retention: &Retention,
    now_ms: i64,
) -> Vec<u64> {
    store
        .history(channel, query, retention, now_ms)
        .await
        .expect("history")
        .publications
        .iter()
        .map(|p| p.offset)
        .collect()
}

pub fn since(offset: u64, limit: Option<usize>, reverse: bool) -> HistoryQuery {
    HistoryQuery {
        since: Some(StreamPosition {
            offset,
            epoch: String::new(),
        }),
        limit,
        reverse,
    }
}

pub async fn concurrent_appends_get_strictly_increasing_offsets(b: &dyn Backend) {
    let store = b.open().await;
    let retention = keep(1000);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        let retention = retention.clone();
        tasks.push(tokio::spawn(async move {
            let channel = format!("chat:{}", i % 4);
            let appended = store
                .append(
                    &channel,
                    publication(&format!("p{i}")),
                    &retention,
                    NO_WINDOW,
                    T0,
                )
                .await
                .expect("append");
            (channel, i, appended)
        }));
    }
    let mut by_channel: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for task in tasks {
        let (channel, i, appended) = task.await.expect("task");
        assert!(!appended.duplicate);
        assert_eq!(appended.publication.offset, appended.position.offset);
        assert_eq!(appended.publication.time_ms, T0);
        by_channel
            .entry(channel)
            .or_default()
            .push((appended.position.offset, format!("p{i}")));
    }
    assert_eq!(by_channel.len(), 4);
    for (channel, mut got) in by_channel {
        got.sort();
        let offs: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offs, (1..=50).collect::<Vec<_>>(), "{channel}");
        let page = store
            .history(&channel, &HistoryQuery::default(), &retention, T0)
            .await
            .expect("history");
        assert_eq!(page.position.offset, 50);
        let stored: Vec<(u64, String)> = page
            .publications
            .iter()
            .map(|p| (p.offset, String::from_utf8(p.data.to_vec()).expect("utf8")))
            .collect();
        assert_eq!(stored, got, "{channel}: stored data matches the answers");
    }
    store.close().await.expect("close");
}

pub async fn history_since_limit_reverse(b: &dyn Backend) {
    let store = b.open().await;
    let r = keep(100);
    let info = PublisherInfo {
        user: "u1".into(),
        client: "c1".into(),
        conn_info: r#"{"name":"ann"}"#.into(),
        chan_info: bytes::Bytes::new(),
    };
    let tags = BTreeMap::from([("kind".to_owned(), "greeting".to_owned())]);
    let first = store
        .append(
            "ch",
            NewPublication {
                data: "hello".into(),
                info: Some(info.clone()),
                tags: tags.clone(),
                idempotency_key: None,
            },
            &r,
            NO_WINDOW,
            T0,
        )
        .await
        .expect("append");
    append_n(&store, "ch", 9, &r, T0 + 1).await;

    let page = store
        .history("ch", &HistoryQuery::default(), &r, T0 + 2)
        .await
        .expect("history");
    assert_eq!(page.position.offset, 10);
    assert_eq!(page.position.epoch, first.position.epoch);
    assert_eq!(page.publications.len(), 10);
    assert_eq!(page.publications[0], first.publication);
    assert_eq!(page.publications[0].info, Some(info));
    assert_eq!(page.publications[0].tags, tags);
    assert_eq!(page.publications[1].info, None);
    assert_eq!(page.publications[1].time_ms, T0 + 1);

    let all = HistoryQuery::default();
    assert_eq!(
        offsets(&store, "ch", &all, &r, T0).await,
        (1..=10).collect::<Vec<_>>()
    );
    let newest3 = HistoryQuery {
        limit: Some(3),
        reverse: true,
        since: None,
    };
    assert_eq!(
        offsets(&store, "ch", &newest3, &r, T0).await,
        vec![10, 9, 8]
    );
    let oldest3 = HistoryQuery {
        limit: Some(3),
        ..HistoryQuery::default()
    };
    assert_eq!(offsets(&store, "ch", &oldest3, &r, T0).await, vec![1, 2, 3]);
    assert_eq!(
        offsets(&store, "ch", &since(4, None, false), &r, T0).await,
        (5..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&store, "ch", &since(4, Some(3), false), &r, T0).await,
        vec![5, 6, 7]
    );
    assert_eq!(
        offsets(&store, "ch", &since(4, Some(2), true), &r, T0).await,
        vec![3, 2]
    );
    assert_eq!(
        offsets(&store, "ch", &since(4, None, true), &r, T0).await,
        vec![3, 2, 1]
    );
    assert!(
        offsets(&store, "ch", &since(10, None, false), &r, T0)
            .await
            .is_empty()
    );
    assert!(
        offsets(&store, "ch", &since(99, None, false), &r, T0)
            .await
            .is_empty()
    );

    let only_position = store
        .history("ch", &since(0, Some(0), false), &r, T0)
        .await
        .expect("history");
    assert!(only_position.publications.is_empty());
    assert_eq!(only_position.position, page.position);

    // A channel never seen: empty, offset 0, stable epoch.
    let fresh = store
        .history("other", &HistoryQuery::default(), &r, T0)
        .await
        .expect("history");
    assert!(fresh.publications.is_empty());
    assert_eq!(fresh.position.offset, 0);
    assert_eq!(fresh.position.epoch.len(), 8);
    assert_eq!(
        store.position("other").await.expect("position"),
        fresh.position
    );
}

pub async fn size_trimming_keeps_the_newest(b: &dyn Backend) {
    let store = b.open().await;
    append_n(&store, "ch", 12, &keep(5), T0).await;
    // Read with a larger retention: the rows are really gone.
    assert_eq!(
        offsets(&store, "ch", &HistoryQuery::default(), &keep(100), T0).await,
        vec![8, 9, 10, 11, 12]
    );
    assert_eq!(
        store
            .oldest_offset("ch", &keep(5), T0)
            .await
            .expect("oldest"),
        Some(8)
    );
    // A smaller retention at read time applies immediately.
    assert_eq!(
        offsets(&store, "ch", &HistoryQuery::default(), &keep(2), T0).await,
        vec![11, 12]
    );
    assert_eq!(
        store
            .oldest_offset("ch", &keep(2), T0)
            .await
            .expect("oldest"),
        Some(11)
    );
    // forever keeps everything.
    let forever = Retention {
        size: 1,
        ttl: None,
        forever: true,
    };
    append_n(&store, "all", 30, &forever, T0).await;
    assert_eq!(
        offsets(&store, "all", &HistoryQuery::default(), &forever, T0).await,
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .oldest_offset("all", &forever, T0)
            .await
            .expect("oldest"),
        Some(1)
    );
}

pub async fn ttl_trimming_with_a_fake_clock(b: &dyn Backend) {
    let store = b.open().await;
    let r = Retention {
        size: 100,
        ttl: Some(Duration::from_secs(10)),
        forever: false,
    };
    // Offsets 1..=3 at T0, 4..=6 at T0+5s.
    append_n(&store, "ch", 3, &r, T0).await;
    append_n(&store, "ch", 3, &r, T0 + 5_000).await;
    let all = HistoryQuery::default();
    assert_eq!(
        offsets(&store, "ch", &all, &r, T0 + 9_999).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        store
            .oldest_offset("ch", &r, T0 + 9_999)
            .await
            .expect("oldest"),
        Some(1)
    );
    // At T0+10s the first three have expired (visible while now < t + ttl).
    assert_eq!(
        offsets(&store, "ch", &all, &r, T0 + 10_000).await,
        vec![4, 5, 6]
    );
    assert_eq!(
        store
            .oldest_offset("ch", &r, T0 + 10_000)
            .await
            .expect("oldest"),
        Some(4)
    );
    // All expired: empty history, the position is unchanged.
    let page = store
        .history("ch", &all, &r, T0 + 20_000)
        .await
        .expect("history");
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 6);
    assert_eq!(
        store
            .oldest_offset("ch", &r, T0 + 20_000)
            .await
            .expect("oldest"),
        None
    );

    // The writer also trims physically: an append at T0+16s deletes 1..=6.
    append_n(&store, "ch", 1, &r, T0 + 16_000).await;
    let no_ttl = keep(100);
    assert_eq!(
        offsets(&store, "ch", &all, &no_ttl, T0 + 16_000).await,
        vec![7]
    );
}

pub async fn idempotency_within_and_after_window(b: &dyn Backend) {
    let store = b.open().await;
    let r = keep(10);
    let window = Duration::from_secs(5);
    let a = store
        .append("ch", keyed("one", "k1"), &r, window, T0)
        .await
        .expect("append");
    assert!(!a.duplicate);
    assert_eq!(a.position.offset, 1);

    let dup = store
        .append("ch", keyed("one again", "k1"), &r, window, T0 + 4_999)
        .await
        .expect("append");
    assert!(dup.duplicate);
    assert_eq!(dup.publication, a.publication);
    assert_eq!(dup.position, a.position);

    // Same key on another channel is independent.
    let other = store
        .append("other", keyed("x", "k1"), &r, window, T0 + 1)
        .await
        .expect("append");
    assert!(!other.duplicate);

    let b = store
        .append("ch", keyed("two", "k2"), &r, window, T0 + 1)
        .await
        .expect("append");
    assert!(!b.duplicate);
    assert_eq!(b.position.offset, 2);

    // After the window the key is accepted again.
    let c = store
        .append("ch", keyed("one later", "k1"), &r, window, T0 + 5_000)
        .await
        .expect("append");
    assert!(!c.duplicate);
    assert_eq!(c.position.offset, 3);

    // A zero window disables the check.
    let d = store
        .append("ch", keyed("no window", "k2"), &r, NO_WINDOW, T0 + 5_001)
        .await
        .expect("append");
    assert!(!d.duplicate);
    assert_eq!(d.position.offset, 4);
    assert_eq!(
        offsets(&store, "ch", &HistoryQuery::default(), &r, T0 + 5_001).await,
        vec![1, 2, 3, 4]
    );

    // A duplicate of a publication no longer in history still reports it.
    let none = keep(0);
    let e = store
        .append("empty", keyed("e", "k"), &none, window, T0)
        .await
        .expect("append");
    let e2 = store
        .append("empty", keyed("e", "k"), &none, window, T0 + 1)
        .await
        .expect("append");
    assert!(e2.duplicate);
    assert_eq!(e2.publication.offset, e.publication.offset);
    assert_eq!(e2.publication.time_ms, T0);
}

pub async fn concurrent_retries_store_once(b: &dyn Backend) {
    let store = b.open().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(
                    "ch",
                    keyed("m", "same"),
                    &keep(10),
                    Duration::from_secs(60),
                    T0,
                )
                .await
                .expect("append")
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        let appended = task.await.expect("task");
        assert_eq!(appended.position.offset, 1);
        fresh += usize::from(!appended.duplicate);
    }
    assert_eq!(fresh, 1);
    assert_eq!(store.position("ch").await.expect("position").offset, 1);
}

pub async fn remove_history_changes_epoch_and_keeps_offsets(b: &dyn Backend) {
    let store = b.open().await;
    let r = keep(10);
    append_n(&store, "ch", 3, &r, T0).await;
    let before = store.position("ch").await.expect("position");
    assert_eq!(before.offset, 3);

    store.remove_history("ch").await.expect("remove");
    let after = store.position("ch").await.expect("position");
    assert_eq!(after.offset, 3);
    assert_ne!(after.epoch, before.epoch);
    let page = store
        .history("ch", &since(0, None, false), &r, T0)
        .await
        .expect("history");
    assert!(page.publications.is_empty());
    assert_eq!(page.position, after);
    assert_eq!(
        store.oldest_offset("ch", &r, T0).await.expect("oldest"),
        None
    );

    let next = store
        .append("ch", publication("x"), &r, NO_WINDOW, T0)
        .await
        .expect("append");
    assert_eq!(next.position.offset, 4);
    assert_eq!(next.position.epoch, after.epoch);
    assert_eq!(
        offsets(&store, "ch", &HistoryQuery::default(), &r, T0).await,
        vec![4]
    );

    // The new epoch is durable.
    store.close().await.expect("close");
    let store = b.open().await;
    assert_eq!(
        store.position("ch").await.expect("position").epoch,
        after.epoch
    );
}

pub async fn reopen_preserves_history_epoch_and_events(b: &dyn Backend) {
    let r = keep(10);
    let (position, history, empty_position) = {
        let store = b.open().await;
        append_n(&store, "ch", 5, &r, T0).await;
        store
            .append_event("audit", "a", &serde_json::json!({"n": 1}), T0)
            .await
            .expect("event");
        let empty_position = store.position("never-published").await.expect("position");
        let page = store
            .history("ch", &HistoryQuery::default(), &r, T0)
            .await
            .expect("history");
        store.close().await.expect("close");
        assert!(matches!(
            store
                .append("ch", publication("late"), &r, NO_WINDOW, T0)
                .await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            store.position("ch").await,
            Err(StoreError::Closed)
        ));
        store.close().await.expect("closing twice is fine");
        (page.position, page.publications, empty_position)
    };

    let store = b.open().await;
    assert_eq!(store.position("ch").await.expect("position"), position);
    assert_eq!(
        store.position("never-published").await.expect("position"),
        empty_position
    );
    let page = store
        .history("ch", &HistoryQuery::default(), &r, T0)
        .await
        .expect("history");
    assert_eq!(page.publications, history);
    let next = store
        .append("ch", publication("after reopen"), &r, NO_WINDOW, T0)
        .await
        .expect("append");
    assert_eq!(next.position.offset, 6);
    assert_eq!(next.position.epoch, position.epoch);
    let offset = store
        .append_event("audit", "b", &serde_json::json!({"n": 2}), T0)
        .await
        .expect("event");
    assert_eq!(offset, 2);
    store.close().await.expect("close");
}

pub async fn events_append_and_read(b: &dyn Backend) {
    let store = b.open().await;
    for i in 1..=3 {
        let offset = store
            .append_event(
                "audit",
                &format!("kind{i}"),
                &serde_json::json!({"i": i}),
                T0 + i,
            )
            .await
            .expect("event");
        assert_eq!(offset, u64::try_from(i).expect("small"));
    }
    assert_eq!(
        store
            .append_event("room:1", "joined", &serde_json::json!(null), T0)
            .await
            .expect("event"),
        1
    );
    let all = store.read_events("audit", 0, 100).await.expect("read");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].kind, "kind1");
    assert_eq!(all[0].payload, serde_json::json!({"i": 1}));
    assert_eq!(all[0].time_ms, T0 + 1);
    let page = store.read_events("audit", 1, 1).await.expect("read");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].offset, 2);
    assert!(
        store
            .read_events("audit", 3, 10)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        store
            .read_events("audit", 0, 0)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        store
            .read_events("nothing", 0, 10)
            .await
            .expect("read")
            .is_empty()
    );
    let room = store.read_events("room:1", 0, 10).await.expect("read");
    assert_eq!(room[0].payload, serde_json::Value::Null);
}

pub async fn size_zero_stores_nothing_but_advances_offsets(b: &dyn Backend) {
    let store = b.open().await;
    let none = keep(0);
    for expected in 1..=3 {
        let appended = store
            .append("ch", publication("x"), &none, NO_WINDOW, T0)
            .await
            .expect("append");
        assert_eq!(appended.position.offset, expected);
        assert_eq!(appended.publication.offset, expected);
    }
    let page = store
        .history("ch", &HistoryQuery::default(), &none, T0)
        .await
        .expect("history");
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 3);
    assert_eq!(
        store.oldest_offset("ch", &none, T0).await.expect("oldest"),
        None
    );
    // Nothing was written even for a reader with a larger retention.
    assert!(
        offsets(&store, "ch", &HistoryQuery::default(), &keep(10), T0)
            .await
            .is_empty()
    );
}

/// Rough throughput of concurrent appends (printed; run with --nocapture).
pub async fn append_throughput(b: &dyn Backend) {
    const TOTAL: usize = 10_000;
    const TASKS: usize = 100;
    let store = b.open().await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let r = keep(100);
            for i in 0..TOTAL / TASKS {
                store
                    .append(
                        &format!("chan:{}", t % 20),
                        publication(&format!("{{\"task\":{t},\"i\":{i}}}")),
                        &r,
                        NO_WINDOW,
                        T0,
                    )
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    println!(
        "{TOTAL} appends from {TASKS} tasks on 20 channels in {elapsed:?}: {:.0} appends/s",
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    let mut total = 0;
    for c in 0..20 {
        total += store
            .position(&format!("chan:{c}"))
            .await
            .expect("position")
            .offset;
    }
    assert_eq!(total, TOTAL as u64);
    store.close().await.expect("close");
}
