//! The node: the [`Engine`] behind the gateway and the server API.
//!
//! A publish runs core's rules, appends to the store (durable channels), and
//! hands the publication to the bus, which delivers it to every node's hub.
//! Publishes to one channel are serialised from the append to the bus
//! publish, so every subscriber sees a channel's publications in offset
//! order.
//!
//! Every store call goes through a circuit breaker ([`StoreGuard`], shared
//! with the auth state and the cluster's store reads): while the store is
//! unreachable, calls that need it (durable publishes, history, recovery)
//! fail fast with [`STORE_UNAVAILABLE`] instead of each waiting for a
//! timeout; traffic that does not need the store (channels without history)
//! is unaffected.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_bus::{Bus, BusHandler, BusMessage};
use switchboard_core::namespace::{HistoryRetention, NamespaceOptions, Namespaces};
use switchboard_core::presence::{PresenceStats, PresenceTable};
use switchboard_core::recovery::{self, Plan};
use switchboard_core::{HistoryPage, HistoryQuery, Publication, PublisherInfo, StreamPosition};
use switchboard_gateway::Hub;
use switchboard_gateway::engine::{
    CallerContext, Engine, EngineError, PublishOutcome, PublishRequest, Recovery,
};
use switchboard_proto::codes::ClientError;
use switchboard_store::{DynStore, NewPublication, Retention, StoreError};

pub use crate::guard::{STORE_UNAVAILABLE, StoreGuard};

const ORDER_STRIPES: usize = 1024;

/// An RPC method handler: takes the caller and request data, returns data.
pub type RpcHandler =
    Arc<dyn Fn(&CallerContext, Bytes) -> Result<Bytes, EngineError> + Send + Sync>;

/// Wall-clock milliseconds since the Unix epoch (the edge where time enters).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The engine of one node.
pub struct Node {
    store: DynStore,
    bus: Arc<dyn Bus>,
    namespaces: Arc<Namespaces>,
    presence: Mutex<PresenceTable>,
    order: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
    idempotency_window: Duration,
    presence_ttl: Duration,
    history_max_page: usize,
    rpc: HashMap<String, RpcHandler>,
    calls: std::sync::OnceLock<Arc<crate::calls::Calls>>,
    ringing: std::sync::OnceLock<Arc<crate::ringing::Ringing>>,
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    router: std::sync::OnceLock<Arc<crate::rtcroute::MediaRouter>>,
    store_guard: Arc<StoreGuard>,
}

/// Delivers bus messages to the local hub.
pub struct HubDelivery(pub Arc<Hub>);

impl BusHandler for HubDelivery {
    fn handle(&self, msg: BusMessage) {
        match msg {
            BusMessage::Publication {
                channel,
                publication,
            } => {
                self.0.deliver_publication(channel, &publication);
            }
            BusMessage::Join { channel, info } => self.0.deliver_join_leave(channel, &info, true),
            BusMessage::Leave { channel, info } => self.0.deliver_join_leave(channel, &info, false),
        }
    }
}

/// The history retention of a namespace.
pub fn retention(opts: &NamespaceOptions) -> Retention {
    Retention {
        size: opts.history_size,
        ttl: opts.history_ttl,
        forever: opts.history_retention == HistoryRetention::Forever,
    }
}

impl Node {
    /// A node over a store and a bus.
    pub fn new(
        store: DynStore,
        bus: Arc<dyn Bus>,
        namespaces: Arc<Namespaces>,
        idempotency_window: Duration,
        presence_ttl: Duration,
        history_max_page: usize,
    ) -> Self {
        let mut rpc: HashMap<String, RpcHandler> = HashMap::new();
        rpc.insert(
            "echo".into(),
            Arc::new(|_: &CallerContext, data: Bytes| Ok(data)),
        );
        Self {
            store,
            bus,
            namespaces,
            presence: Mutex::new(PresenceTable::default()),
            order: (0..ORDER_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: Default::default(),
            idempotency_window,
            presence_ttl,
            history_max_page,
            rpc,
            calls: std::sync::OnceLock::new(),
            ringing: std::sync::OnceLock::new(),
            router: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            store_guard: Arc::new(StoreGuard::default()),
        }
    }

    /// Shares `guard` (the store circuit breaker) with the node's other
    /// store users; replaces the default one.
    pub fn set_store_guard(&mut self, guard: Arc<StoreGuard>) {
        self.store_guard = guard;
    }

    /// The store circuit breaker.
    pub fn store_guard(&self) -> &Arc<StoreGuard> {
        &self.store_guard
    }

    /// Whether the store circuit breaker is open (store calls fail fast).
    pub fn store_circuit_open(&self) -> bool {
        self.store_guard.is_open()
    }

    /// Runs one store call through the circuit breaker.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, EngineError> {
        self.store_guard.call(call).await
    }

    /// Cluster mode: channel interest and order, presence and server API
    /// actions go through `cluster`.
    pub fn attach_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// This node's part in the cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Cluster mode: `rtc.*` calls and the room API go to the media node
    /// holding each room through `router`.
    pub fn attach_router(&self, router: Arc<crate::rtcroute::MediaRouter>) {
        let _ = self.router.set(router);
    }

    /// The media router, in cluster mode.
    pub fn router(&self) -> Option<&Arc<crate::rtcroute::MediaRouter>> {
        self.router.get()
    }

    /// Presence of this node's own connections in `channel`.
    pub fn local_presence(&self, channel: &str) -> Vec<PublisherInfo> {
        self.presence.lock().get(channel)
    }

    /// Routes the 1:1 ringing RPCs (`rtc.call`, `rtc.accept`, …) to `ringing`.
    pub fn attach_ringing(&self, ringing: Arc<crate::ringing::Ringing>) {
        let _ = self.ringing.set(ringing);
    }

    /// Routes `rtc.*` RPCs to call signaling.
    pub fn attach_calls(&self, calls: Arc<crate::calls::Calls>) {
        let _ = self.calls.set(calls);
    }

    /// Call signaling, when this node runs media.
    pub fn calls(&self) -> Option<&Arc<crate::calls::Calls>> {
        self.calls.get()
    }

    /// Registers an RPC method (replacing one of the same name).
    pub fn register_rpc(&mut self, method: &str, handler: RpcHandler) {
        self.rpc.insert(method.to_string(), handler);
    }

    /// The store.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    fn options(&self, channel: &str) -> Result<&NamespaceOptions, EngineError> {
        self.namespaces
            .resolve(channel)
            .map_err(|e| EngineError::new(ClientError::UNKNOWN_CHANNEL, e.to_string()))
    }

    fn stripe(&self, channel: &str) -> &tokio::sync::Mutex<()> {
        &self.order[self.hasher.hash_one(channel) as usize % ORDER_STRIPES]
    }

    /// Removes presence entries whose heartbeat stopped; returns how many.
    pub async fn expire_presence(&self) -> usize {
        let gone = self.presence.lock().expire(now_ms());
        let n = gone.len();
        for (channel, info) in gone {
            let push = self
                .options(&channel)
                .map(|o| o.join_leave)
                .unwrap_or(false);
            if push {
                let _ = self
                    .bus
                    .publish(BusMessage::Leave {
                        channel: channel.into(),
                        info,
                    })
                    .await;
            }
        }
        n
    }

    /// Deletes a channel's history (its epoch changes).
    pub async fn remove_history(&self, channel: &str) -> Result<(), EngineError> {
        self.options(channel)?;
        self.guarded(self.store.remove_history(channel)).await?;
        if let Some(cluster) = self.cluster.get() {
            let action = crate::cluster::Action::HistoryRemoved {
                channel: channel.to_string(),
            };
            if let Err(e) = cluster.broadcast(&action).await {
                tracing::warn!(channel, error = %e, "telling nodes about removed history");
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Engine for Node {
    async fn publish(
        &self,
        channel: &str,
        req: PublishRequest,
    ) -> Result<PublishOutcome, EngineError> {
        let opts = self.options(channel)?;
        let started = std::time::Instant::now();
        let ch: Arc<str> = channel.into();
        let outcome = if opts.is_durable() && !req.skip_history {
            let _order = self.stripe(channel).lock().await;
            let appended = self
                .guarded(self.store.append(
                    channel,
                    NewPublication {
                        data: req.data,
                        info: req.info,
                        tags: req.tags,
                        idempotency_key: req.idempotency_key,
                    },
                    &retention(opts),
                    self.idempotency_window,
                    now_ms(),
                ))
                .await?;
            if !appended.duplicate {
                let msg = BusMessage::Publication {
                    channel: ch,
                    publication: Arc::new(appended.publication),
                };
                self.bus
                    .publish(msg)
                    .await
                    .map_err(|e| EngineError::new(ClientError::INTERNAL, e.to_string()))?;
            }
            PublishOutcome {
                position: appended.position,
                duplicate: appended.duplicate,
            }
        } else {
            let publication = Publication {
                data: req.data,
                info: req.info,
                tags: req.tags,
                time_ms: now_ms(),
                offset: 0,
            };
            let msg = BusMessage::Publication {
                channel: ch,
                publication: Arc::new(publication),
            };
            self.bus
                .publish(msg)
                .await
                .map_err(|e| EngineError::new(ClientError::INTERNAL, e.to_string()))?;
            PublishOutcome::default()
        };
        metrics::counter!("switchboard_publications_total").increment(1);
        metrics::histogram!("switchboard_publish_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    async fn subscribe_channel(&self, channel: &str) -> Result<(), EngineError> {
        match self.cluster.get() {
            Some(c) => c.order().subscribe(channel).await,
            None => Ok(()),
        }
    }

    async fn unsubscribe_channel(&self, channel: &str) {
        if let Some(c) = self.cluster.get() {
            c.order().unsubscribe(channel).await;
        }
    }

    async fn position(&self, channel: &str) -> Result<StreamPosition, EngineError> {
        self.guarded(self.store.position(channel)).await
    }

    async fn recover(
        &self,
        channel: &str,
        since: &StreamPosition,
    ) -> Result<Recovery, EngineError> {
        let opts = self.options(channel)?;
        let top = self.guarded(self.store.position(channel)).await?;
        if recovery::plan(since, &top, Some(0)) == Plan::Reset {
            return Ok(Recovery {
                publications: vec![],
                position: top,
                recovered: false,
            });
        }
        let query = HistoryQuery {
            since: Some(since.clone()),
            limit: Some(self.history_max_page),
            reverse: false,
        };
        let page = self
            .guarded(
                self.store
                    .history(channel, &query, &retention(opts), now_ms()),
            )
            .await?;
        let oldest = page.publications.first().map(|p| p.offset);
        let plan = recovery::plan(since, &page.position, oldest);
        // A page cut by the limit is not a complete recovery either.
        let cut = page
            .publications
            .last()
            .is_some_and(|p| p.offset < page.position.offset);
        let recovered = plan.recovered() && !cut;
        Ok(Recovery {
            publications: page.publications,
            position: page.position,
            recovered,
        })
    }

    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let opts = self.options(channel)?;
        if let Some(since) = &query.since {
            let top = self.guarded(self.store.position(channel)).await?;
            if since.epoch != top.epoch {
                return Err(EngineError::new(
                    ClientError::UNRECOVERABLE_POSITION,
                    "epoch changed",
                ));
            }
        }
        // Pages are bounded whatever the caller asks for.
        let max = self.history_max_page;
        let query = HistoryQuery {
            limit: Some(query.limit.map_or(max, |l| l.min(max))),
            ..query.clone()
        };
        self.guarded(
            self.store
                .history(channel, &query, &retention(opts), now_ms()),
        )
        .await
    }

    async fn join(
        &self,
        channel: &str,
        info: &PublisherInfo,
        presence: bool,
        push: bool,
    ) -> Result<(), EngineError> {
        if presence {
            let expires = now_ms() + self.presence_ttl.as_millis() as i64;
            self.presence.lock().add(channel, info.clone(), expires);
        }
        if push {
            let msg = BusMessage::Join {
                channel: channel.into(),
                info: info.clone(),
            };
            self.bus
                .publish(msg)
                .await
                .map_err(|e| EngineError::new(ClientError::INTERNAL, e.to_string()))?;
        }
        Ok(())
    }

    async fn leave(
        &self,
        channel: &str,
        info: &PublisherInfo,
        presence: bool,
        push: bool,
    ) -> Result<(), EngineError> {
        if presence {
            self.presence.lock().remove(channel, &info.client);
        }
        if push {
            let msg = BusMessage::Leave {
                channel: channel.into(),
                info: info.clone(),
            };
            self.bus
                .publish(msg)
                .await
                .map_err(|e| EngineError::new(ClientError::INTERNAL, e.to_string()))?;
        }
        Ok(())
    }

    async fn touch_presence(&self, channels: &[String], client: &str) -> Result<(), EngineError> {
        let expires = now_ms() + self.presence_ttl.as_millis() as i64;
        self.presence
            .lock()
            .touch(channels.iter().map(String::as_str), client, expires);
        Ok(())
    }

    async fn presence(&self, channel: &str) -> Result<Vec<PublisherInfo>, EngineError> {
        let mut list = self.local_presence(channel);
        if let Some(cluster) = self.cluster.get() {
            let mut seen: std::collections::HashSet<String> =
                list.iter().map(|i| i.client.clone()).collect();
            for info in cluster.remote_presence(channel).await {
                if seen.insert(info.client.clone()) {
                    list.push(info);
                }
            }
        }
        Ok(list)
    }

    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, EngineError> {
        if self.cluster.get().is_none() {
            return Ok(self.presence.lock().stats(channel));
        }
        let list = self.presence(channel).await?;
        let users: std::collections::HashSet<&str> = list.iter().map(|i| i.user.as_str()).collect();
        Ok(PresenceStats {
            num_clients: list.len() as u32,
            num_users: users.len() as u32,
        })
    }

    async fn rpc(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        if crate::ringing::METHODS.contains(&method)
            && let Some(ringing) = self.ringing.get()
        {
            return ringing.rpc(caller, method, data).await;
        }
        if method.starts_with("rtc.")
            && let Some(router) = self.router.get()
        {
            return router.rpc(caller, method, data).await;
        }
        if method.starts_with("rtc.")
            && let Some(calls) = self.calls.get()
        {
            return calls.rpc(caller, method, data).await;
        }
        match self.rpc.get(method) {
            Some(h) => h(caller, data),
            None => Err(EngineError::new(
                ClientError::METHOD_NOT_FOUND,
                format!("rpc method {method:?} not found"),
            )),
        }
    }

    async fn disconnected(&self, caller: &CallerContext) {
        if let Some(ringing) = self.ringing.get() {
            ringing.disconnected(&caller.client);
        }
        if let Some(calls) = self.calls.get() {
            calls.disconnected(&caller.client).await;
        }
        if let Some(router) = self.router.get() {
            router.disconnected(&caller.client).await;
        }
    }

    async fn message(&self, _caller: &CallerContext, _data: Bytes) -> Result<(), EngineError> {
        metrics::counter!("switchboard_client_messages_total").increment(1);
        Ok(())
    }
}
