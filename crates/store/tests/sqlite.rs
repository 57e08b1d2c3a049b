//! The store suite on SQLite (real database files), plus SQLite-only tests.

mod suite;

use std::{path::PathBuf, sync::Arc};

use suite::{Backend, NO_WINDOW, T0, keep, publication};
use switchboard_store::{DynStore, HistoryQuery, SqliteStore};

/// A database file in the temp directory, removed (with its WAL) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self(std::env::temp_dir().join(format!(
            "switchboard-store-{name}-{}-{nanos}/store.db",
            std::process::id()
        )))
    }

    async fn finish(&self) {}
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[async_trait::async_trait]
impl Backend for TempDb {
    async fn open(&self) -> DynStore {
        Arc::new(SqliteStore::open(&self.0).await.expect("open store"))
    }
}

async fn sqlite(name: &str) -> TempDb {
    TempDb::new(name)
}

store_suite!(sqlite);

#[tokio::test]
async fn in_memory_store_works_through_dyn_store() {
    let store: DynStore = Arc::new(SqliteStore::open_in_memory().await.expect("open"));
    let r = keep(3);
    for i in 1..=5 {
        let a = store
            .append("ch", publication("m"), &r, NO_WINDOW, T0)
            .await
            .expect("append");
        assert_eq!(a.position.offset, i);
    }
    let page = store
        .history("ch", &HistoryQuery::default(), &r, T0)
        .await
        .expect("history");
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(
        store
            .append_event("s", "k", &serde_json::json!(1), T0)
            .await
            .expect("event"),
        1
    );
    store.close().await.expect("close");
}
