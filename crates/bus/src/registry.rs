//! The node registry and placement records on JetStream KV.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, UpdateErrorKind},
    stream::{self, DiscardPolicy, StorageType},
};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    BusError, NatsBus,
    subject::{KEY_ESCAPE, escape, unescape},
};

/// Settings of a [`NodeRegistry`].
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// KV bucket of live nodes (`[A-Za-z0-9_-]`).
    pub nodes_bucket: String,
    /// KV bucket of placement records.
    pub placement_bucket: String,
    /// A node that has not heartbeated for this long disappears from
    /// [`NodeRegistry::list`] (the bucket's `max_age`).
    pub ttl: Duration,
    /// Time between heartbeats; `None` = `ttl / 3`.
    pub heartbeat: Option<Duration>,
    /// JetStream replicas of both buckets (1 on a single NATS server, 3 on
    /// a NATS cluster).
    pub replicas: usize,
}

impl RegistryConfig {
    /// Buckets named after the bus's subject prefix (`sb_nodes`,
    /// `sb_placement`), a 15 s TTL, one replica.
    pub fn for_bus(bus: &NatsBus) -> Self {
        let prefix = bus.subject_prefix();
        Self {
            nodes_bucket: format!("{prefix}_nodes"),
            placement_bucket: format!("{prefix}_placement"),
            ttl: Duration::from_secs(15),
            heartbeat: None,
            replicas: 1,
        }
    }

    fn heartbeat(&self) -> Duration {
        self.heartbeat
            .unwrap_or(self.ttl / 3)
            .max(Duration::from_millis(50))
    }
}

/// What a node tells the cluster about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique node id (the bus's `node_id`).
    pub id: String,
    /// Roles it runs: `gateway`, `media`, `api`, `auth`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Where other nodes and clients reach it (e.g. `http://10.0.0.5:8000`).
    #[serde(default)]
    pub address: String,
    /// Current load (connections, peers, or a weighted score); placement
    /// prefers less loaded nodes.
    #[serde(default)]
    pub load: f64,
    /// Free-form extras (media UDP address, version, zone…).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Wall-clock time of the heartbeat that wrote this entry (ms since the
    /// Unix epoch); set by the registry.
    #[serde(default)]
    pub updated_ms: i64,
}

impl NodeInfo {
    /// Whether the node runs `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// What [`NodeRegistry::place`] expects the current record to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No record (never placed, or removed).
    Absent,
    /// The record at this revision (e.g. one pointing at a dead node).
    Revision(u64),
}

/// A placement record and the outcome of a [`NodeRegistry::place`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The value now recorded (a node id, usually).
    pub value: Bytes,
    /// Its revision: pass it to [`Expect::Revision`] to replace it.
    pub revision: u64,
    /// True when this call wrote the value; false when another writer got
    /// there first and `value` is theirs.
    pub won: bool,
}

/// The cluster's node registry and placement records, on JetStream KV.
///
/// * Each node [`register`](Self::register)s its [`NodeInfo`] under its id
///   and the returned [`Registration`] re-puts it every `ttl / 3`. The
///   bucket has `max_age = ttl`, so the entry of a node that stops
///   heartbeating (crash, partition) expires by itself; a graceful shutdown
///   calls [`Registration::deregister`].
/// * [`place`](Self::place) is compare-and-set on a key (KV create, or
///   update at a revision): of several concurrent callers exactly one wins
///   and all of them get the winner's value back, so every gateway agrees on
///   where a room lives.
///
/// Keys (node ids, placement keys) may be any string; they are escaped into
/// valid KV keys.
#[derive(Clone)]
pub struct NodeRegistry {
    nodes: kv::Store,
    placement: kv::Store,
    config: RegistryConfig,
}

impl fmt::Debug for NodeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRegistry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NodeRegistry {
    /// Opens (creating or updating) both buckets over the bus's connection.
    pub async fn open(bus: &NatsBus, config: RegistryConfig) -> Result<Self, BusError> {
        let js = jetstream::new(bus.client().clone());
        let nodes = ensure_bucket(
            &js,
            &config.nodes_bucket,
            "Switchboard live nodes (TTL heartbeats)",
            config.ttl,
            config.replicas,
        )
        .await?;
        let placement = ensure_bucket(
            &js,
            &config.placement_bucket,
            "Switchboard placement records (compare-and-set)",
            Duration::ZERO,
            config.replicas,
        )
        .await?;
        Ok(Self {
            nodes,
            placement,
            config,
        })
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Writes `info` now and keeps heartbeating it until the returned
    /// [`Registration`] is dropped or deregistered.
    pub async fn register(&self, info: NodeInfo) -> Result<Registration, BusError> {
        if info.id.is_empty() {
            return Err(BusError::Rejected("registry: node id must be set".into()));
        }
        let key = escape(&info.id, KEY_ESCAPE);
        put_info(&self.nodes, &key, &info).await?;
        let (tx, rx) = watch::channel(info);
        let task = tokio::spawn(heartbeat(
            self.nodes.clone(),
            key.clone(),
            rx,
            self.config.heartbeat(),
        ));
        Ok(Registration {
            info: tx,
            task,
            nodes: self.nodes.clone(),
            key,
        })
    }

    /// The live nodes (those that heartbeated within the TTL), by id.
    pub async fn list(&self) -> Result<Vec<NodeInfo>, BusError> {
        let keys = bucket_keys(&self.nodes).await?;
        let mut nodes = Vec::with_capacity(keys.len());
        for key in keys {
            // Expired or deleted since the listing: skip.
            if let Some(value) = self.nodes.get(key.as_str()).await.map_err(unavailable)? {
                match serde_json::from_slice::<NodeInfo>(&value) {
                    Ok(info) => nodes.push(info),
                    Err(e) => tracing::warn!(key, error = %e, "registry: bad node entry"),
                }
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// One node's entry, if it is live.
    pub async fn get(&self, id: &str) -> Result<Option<NodeInfo>, BusError> {
        let value = self
            .nodes
            .get(escape(id, KEY_ESCAPE))
            .await
            .map_err(unavailable)?;
        value
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| BusError::Remote(format!("registry: bad node entry: {e}")))
            })
            .transpose()
    }

    /// The current placement record of `key`.
    pub async fn placement(&self, key: &str) -> Result<Option<Placement>, BusError> {
        current(&self.placement, &escape(key, KEY_ESCAPE)).await
    }

    /// Compare-and-set: writes `value` under `key` if the record is as
    /// `expect`ed, and returns the record now in force (`won` tells whether
    /// it is this call's). Typical use: `place(room, node, Expect::Absent)`
    /// on first use; `place(room, other, Expect::Revision(r))` to move a
    /// room off the dead node recorded at revision `r`.
    pub async fn place(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
    ) -> Result<Placement, BusError> {
        let kv_key = escape(key, KEY_ESCAPE);
        let written = match expect {
            Expect::Absent => match self.placement.create(&kv_key, value.clone()).await {
                Ok(rev) => Some(rev),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => None,
                Err(e) => return Err(unavailable(e)),
            },
            Expect::Revision(rev) => {
                match self.placement.update(&kv_key, value.clone(), rev).await {
                    Ok(rev) => Some(rev),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                    Err(e) => return Err(unavailable(e)),
                }
            }
        };
        if let Some(revision) = written {
            return Ok(Placement {
                value,
                revision,
                won: true,
            });
        }
        // Lost: report the winner. It can have been removed in between, in
        // which case the caller sees no winner and may retry with Absent.
        match current(&self.placement, &kv_key).await? {
            Some(placement) => Ok(placement),
            None => Err(BusError::Conflict(format!(
                "placement of {key} changed concurrently"
            ))),
        }
    }

    /// Removes the record of `key` if it is still at `revision` (e.g. when a
    /// room ends). Returns false if it had changed.
    pub async fn unplace(&self, key: &str, revision: u64) -> Result<bool, BusError> {
        let kv_key = escape(key, KEY_ESCAPE);
        match self
            .placement
            .delete_expect_revision(kv_key.as_str(), Some(revision))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => match current(&self.placement, &kv_key).await? {
                // The record moved on: the server refused the stale revision.
                Some(now) if now.revision != revision => Ok(false),
                None => Ok(false),
                Some(_) => Err(unavailable(e)),
            },
        }
    }

    /// Every placement record, by (unescaped) key.
    pub async fn placements(&self) -> Result<BTreeMap<String, Placement>, BusError> {
        let keys = bucket_keys(&self.placement).await?;
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(placement) = current(&self.placement, &key).await? {
                out.insert(unescape(&key, KEY_ESCAPE).unwrap_or(key), placement);
            }
        }
        Ok(out)
    }
}

/// A node's live registration; heartbeats until dropped.
///
/// Dropping it stops heartbeating and lets the entry expire within the TTL
/// (what a crash looks like to the others); [`deregister`](Self::deregister)
/// removes it at once.
pub struct Registration {
    info: watch::Sender<NodeInfo>,
    task: JoinHandle<()>,
    nodes: kv::Store,
    key: String,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("info", &*self.info.borrow())
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The info as last set.
    pub fn info(&self) -> NodeInfo {
        self.info.borrow().clone()
    }

    /// Changes the advertised info; written at once (not at the next
    /// heartbeat).
    pub fn update(&self, change: impl FnOnce(&mut NodeInfo)) {
        self.info.send_modify(change);
    }

    /// Sets the advertised load.
    pub fn set_load(&self, load: f64) {
        self.update(|info| info.load = load);
    }

    /// Stops heartbeating and deletes the entry (graceful shutdown).
    pub async fn deregister(self) -> Result<(), BusError> {
        self.task.abort();
        self.nodes
            .delete(self.key.as_str())
            .await
            .map_err(unavailable)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn heartbeat(
    nodes: kv::Store,
    key: String,
    mut info: watch::Receiver<NodeInfo>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; register() just wrote
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = info.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let current = info.borrow_and_update().clone();
        if let Err(e) = put_info(&nodes, &key, &current).await {
            tracing::warn!(node = %current.id, error = %e, "registry: heartbeat failed");
        }
    }
}

async fn put_info(nodes: &kv::Store, key: &str, info: &NodeInfo) -> Result<u64, BusError> {
    let mut info = info.clone();
    info.updated_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let value = serde_json::to_vec(&info).map_err(|e| BusError::Rejected(e.to_string()))?;
    nodes.put(key, value.into()).await.map_err(unavailable)
}

async fn current(store: &kv::Store, key: &str) -> Result<Option<Placement>, BusError> {
    let entry = store.entry(key).await.map_err(unavailable)?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| Placement {
            value: e.value,
            revision: e.revision,
            won: false,
        }))
}

/// The JetStream stream behind a KV bucket, as the KV client expects it
/// (`KV_<bucket>` on `$KV.<bucket>.>`, last `history` values per key,
/// rollups allowed, direct get).
///
/// Built here instead of with `create_key_value`, which first queries the
/// account info in a shape NATS servers before 2.10 do not send.
fn bucket_stream(
    bucket: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        // The duplicate window may not exceed max_age.
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age.min(Duration::from_secs(120))
        },
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..Default::default()
    }
}

async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    let err =
        |e: &dyn fmt::Display| BusError::Unavailable(format!("registry bucket {bucket}: {e}"));
    js.create_or_update_stream(bucket_stream(bucket, description, max_age, replicas))
        .await
        .map_err(|e| err(&e))?;
    js.get_key_value(bucket).await.map_err(|e| err(&e))
}

/// The keys of a bucket (escaped), including deleted ones whose marker is
/// still kept. The subjects of the bucket's stream are its keys: one
/// request, no consumer (KV `keys()` creates a consumer per call that, with
/// entries expiring or heartbeats landing under it, could wait for a message
/// that never comes). Bounded all the same; callers retry.
async fn bucket_keys(store: &kv::Store) -> Result<Vec<String>, BusError> {
    let prefix = store.prefix.as_str();
    let subjects = async {
        store
            .stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(unavailable)?
            .map_ok(|(subject, _)| subject)
            .try_collect::<Vec<String>>()
            .await
            .map_err(unavailable)
    };
    Ok(tokio::time::timeout(LIST_TIMEOUT, subjects)
        .await
        .map_err(|_| unavailable("listing the keys timed out"))??
        .into_iter()
        .filter_map(|subject| subject.strip_prefix(prefix).map(str::to_string))
        .collect())
}

/// Bound of one key listing.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

fn unavailable(e: impl fmt::Display) -> BusError {
    BusError::Unavailable(format!("registry: {e}"))
}
