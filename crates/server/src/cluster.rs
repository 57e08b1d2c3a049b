//! Cluster mode: this node's part in a NATS + PostgreSQL deployment.
//!
//! * [`ChannelOrder`] is the bus handler in cluster mode. It keeps this
//!   node's interest in channels (the NATS subscription of a channel exists
//!   while the channel has local subscribers) and restores each durable
//!   channel's offset order with a [`Reorder`] buffer: publications appended
//!   by different nodes may cross on the bus, so one ahead of its turn is
//!   held back, and a gap that does not fill within [`GAP_TIMEOUT`] is read
//!   from the store. When the bus reconnects after an outage, every durable
//!   channel with local subscribers is read from the store from the last
//!   offset delivered ([`ChannelOrder::catch_up`]), so what other nodes
//!   published meanwhile is delivered, in order and once. Store reads go
//!   through the node's [`StoreGuard`] (circuit breaker).
//! * [`Cluster`] owns the [`NatsBus`], the node registry entry (roles,
//!   address, load) and the node-to-node requests: presence of local
//!   clients, local channels and node info (gathered from every live node),
//!   and broadcast server API actions (disconnect, subscribe, unsubscribe,
//!   refresh) applied by whichever node holds the connections.
//!
//! See docs/CLUSTER.md for the behaviour and its limits.

use crate::guard::StoreGuard;
use crate::node::{Node, now_ms, retention};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_bus::{
    Bus, BusError, BusHandler, BusMessage, NatsBus, NodeInfo, NodeRegistry, Registration,
    RequestHandler,
};
use switchboard_core::namespace::Namespaces;
use switchboard_core::reorder::Reorder;
use switchboard_core::{HistoryQuery, Publication, PublisherInfo, StreamPosition};
use switchboard_gateway::Hub;
use switchboard_gateway::engine::EngineError;
use switchboard_gateway::hub::Control;
use switchboard_proto::api;
use switchboard_proto::codes::{ClientError, Disconnect, Unsubscribe};
use switchboard_store::DynStore;
use tokio::sync::{Notify, watch};

/// How long a gap in a channel's offsets may wait for the bus before it is
/// read from the store.
pub const GAP_TIMEOUT: Duration = Duration::from_millis(500);

/// Publications read per store call when catching up after a bus outage.
const CATCH_UP_PAGE: usize = 1000;

struct ChannelState {
    /// Local subscriptions (balanced subscribe/unsubscribe calls).
    refs: usize,
    /// True once the bus subscription is confirmed and the baseline read.
    ready: watch::Sender<Option<bool>>,
    reorder: Reorder<Arc<Publication>>,
    epoch: String,
}

/// The cluster-mode bus handler: channel interest and per-channel order.
pub struct ChannelOrder {
    hub: Arc<Hub>,
    store: DynStore,
    guard: Arc<StoreGuard>,
    namespaces: Arc<Namespaces>,
    bus: Arc<dyn Bus>,
    channels: Mutex<HashMap<Arc<str>, ChannelState>>,
    /// Channels holding publications back (checked by the gap task).
    gappy: Mutex<HashSet<Arc<str>>>,
    wake: Notify,
}

impl ChannelOrder {
    /// A handler delivering to `hub`, reading gaps from `store` through
    /// `guard`.
    pub fn new(
        hub: Arc<Hub>,
        store: DynStore,
        guard: Arc<StoreGuard>,
        namespaces: Arc<Namespaces>,
        bus: Arc<dyn Bus>,
    ) -> Arc<Self> {
        let me = Arc::new(Self {
            hub,
            store,
            guard,
            namespaces,
            bus,
            channels: Mutex::new(HashMap::new()),
            gappy: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        });
        tokio::spawn(Self::gap_task(Arc::downgrade(&me)));
        me
    }

    fn is_durable(&self, channel: &str) -> bool {
        self.namespaces
            .resolve(channel)
            .is_ok_and(|o| o.is_durable())
    }

    /// Declares one local subscription to `channel`: the first one
    /// subscribes the bus and reads the channel's top offset (the baseline
    /// of its order); later ones wait until that is done. When this returns,
    /// every publication appended after a position read by the caller
    /// reaches the hub.
    pub async fn subscribe(&self, channel: &str) -> Result<(), EngineError> {
        let (first, mut ready) = {
            let mut chans = self.channels.lock();
            let state = chans.entry(channel.into()).or_insert_with(|| ChannelState {
                refs: 0,
                ready: watch::channel(None).0,
                reorder: Reorder::new(GAP_TIMEOUT),
                epoch: String::new(),
            });
            state.refs += 1;
            (state.refs == 1, state.ready.subscribe())
        };
        if !first {
            let ok = ready
                .wait_for(|r| r.is_some())
                .await
                .map(|r| *r == Some(true))
                .unwrap_or(false);
            return if ok {
                Ok(())
            } else {
                self.unsubscribe(channel).await;
                Err(EngineError::new(
                    ClientError::INTERNAL,
                    "bus subscription failed",
                ))
            };
        }
        let result = self.establish(channel).await;
        let ok = result.is_ok();
        if let Some(state) = self.channels.lock().get(channel) {
            state.ready.send_replace(Some(ok));
        }
        if let Err(e) = result {
            self.unsubscribe(channel).await;
            return Err(e);
        }
        Ok(())
    }

    async fn establish(&self, channel: &str) -> Result<(), EngineError> {
        self.bus
            .subscribe_channel(channel)
            .await
            .map_err(|e| EngineError::new(ClientError::INTERNAL, format!("bus: {e}")))?;
        if self.is_durable(channel) {
            self.rebaseline(channel).await?;
        }
        Ok(())
    }

    /// Reads the store's top of `channel` and releases what it unblocks.
    async fn rebaseline(&self, channel: &str) -> Result<(), EngineError> {
        let pos = self.guard.call(self.store.position(channel)).await?;
        let mut chans = self.channels.lock();
        if let Some(state) = chans.get_mut(channel) {
            state.epoch = pos.epoch;
            let out = state.reorder.handle_baseline(pos.offset, Instant::now());
            self.deliver(channel, out);
            self.note_gap(channel, state);
        }
        Ok(())
    }

    /// Undoes one [`ChannelOrder::subscribe`]; the last one drops the bus
    /// subscription and the channel's order state.
    pub async fn unsubscribe(&self, channel: &str) {
        let last = {
            let mut chans = self.channels.lock();
            match chans.get_mut(channel) {
                Some(state) => {
                    state.refs = state.refs.saturating_sub(1);
                    if state.refs == 0 {
                        chans.remove(channel);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if last && let Err(e) = self.bus.unsubscribe_channel(channel).await {
            tracing::warn!(channel, error = %e, "bus unsubscribe failed");
        }
    }

    /// The channel's history was removed (new epoch): start over from the
    /// store's new top.
    pub async fn reset(&self, channel: &str) {
        let known = match self.channels.lock().get_mut(channel) {
            Some(state) => {
                state.reorder.reset();
                true
            }
            None => false,
        };
        if known && let Err(e) = self.rebaseline(channel).await {
            tracing::warn!(channel, error = %e, "re-reading a channel's position");
        }
    }

    fn deliver(&self, channel: &str, pubs: Vec<Arc<Publication>>) {
        if pubs.is_empty() {
            return;
        }
        let ch: Arc<str> = channel.into();
        for p in pubs {
            self.hub.deliver_publication(ch.clone(), &p);
        }
    }

    fn note_gap(&self, channel: &str, state: &ChannelState) {
        if state.reorder.poll_timeout().is_some() {
            self.gappy.lock().insert(channel.into());
            self.wake.notify_one();
        }
    }

    async fn gap_task(me: std::sync::Weak<Self>) {
        loop {
            let Some(this) = me.upgrade() else { return };
            let wake = this.wake.notified();
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut due = Vec::new();
            {
                // Lock order everywhere: channels, then gappy.
                let mut chans = this.channels.lock();
                let mut gappy = this.gappy.lock();
                gappy.retain(|ch| {
                    let Some(state) = chans.get_mut(ch) else {
                        return false;
                    };
                    if let Some(gap) = state.reorder.handle_timeout(now) {
                        due.push((ch.clone(), gap, state.epoch.clone()));
                        return true;
                    }
                    match state.reorder.poll_timeout() {
                        Some(t) => {
                            next = Some(next.map_or(t, |n| n.min(t)));
                            true
                        }
                        None => state.reorder.is_fetching(),
                    }
                });
            }
            for (ch, gap, epoch) in due {
                let this = this.clone();
                tokio::spawn(async move { this.fill(ch, gap, epoch).await });
            }
            let sleep = next.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
            // Holding `this` for at most a second: the task ends soon after
            // the node drops the handler.
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
            }
        }
    }

    async fn fill(&self, ch: Arc<str>, gap: switchboard_core::reorder::Gap, epoch: String) {
        metrics::counter!("switchboard_cluster_gap_fetches_total").increment(1);
        let Ok(opts) = self.namespaces.resolve(&ch) else {
            return;
        };
        let query = HistoryQuery {
            since: Some(StreamPosition {
                offset: gap.from - 1,
                epoch: epoch.clone(),
            }),
            limit: Some((gap.to - gap.from + 1) as usize),
            reverse: false,
        };
        let page = self
            .guard
            .call(self.store.history(&ch, &query, &retention(opts), now_ms()))
            .await;
        let now = Instant::now();
        let epoch_changed = {
            let mut chans = self.channels.lock();
            let Some(state) = chans.get_mut(&ch) else {
                return;
            };
            match page {
                Ok(page) if page.position.epoch == state.epoch => {
                    let items = page
                        .publications
                        .into_iter()
                        .filter(|p| p.offset <= gap.to)
                        .map(|p| (p.offset, Arc::new(p)))
                        .collect();
                    let before = state.reorder.skipped();
                    let out = state.reorder.handle_fetched(items, now);
                    let skipped = state.reorder.skipped() - before;
                    if skipped > 0 {
                        tracing::warn!(channel = %ch, skipped, "offsets missing from the store too");
                    }
                    self.deliver(&ch, out);
                    self.note_gap(&ch, state);
                    false
                }
                Ok(_) => {
                    state.reorder.reset();
                    true
                }
                Err(e) => {
                    tracing::warn!(channel = %ch, error = %e, "reading a gap from the store");
                    state.reorder.handle_fetch_failed(now);
                    self.note_gap(&ch, state);
                    false
                }
            }
        };
        // The epoch changed under us: start over from the new top.
        if epoch_changed && let Err(e) = self.rebaseline(&ch).await {
            tracing::warn!(channel = %ch, error = %e, "re-reading position");
        }
    }
}

impl ChannelOrder {
    /// Catches up after every reconnect of `nats` (see
    /// [`ChannelOrder::catch_up`]); the task ends with the handler.
    pub fn follow_reconnects(self: &Arc<Self>, nats: NatsBus) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut health = nats.health();
            let mut was_up = *health.borrow_and_update();
            while health.changed().await.is_ok() {
                let up = *health.borrow_and_update();
                if up && !was_up {
                    // The client re-sends its subscriptions on reconnect;
                    // once the server has them, nothing published from now
                    // on is missed, so the store read below covers the rest.
                    nats.sync_with_server().await;
                    let Some(this) = me.upgrade() else { return };
                    let started = Instant::now();
                    let (channels, delivered) = this.catch_up().await;
                    tracing::info!(
                        channels,
                        delivered,
                        took_ms = started.elapsed().as_millis() as u64,
                        "bus reconnected: caught up from the store"
                    );
                }
                was_up = up;
            }
        });
    }

    /// Reads every durable channel with local subscribers from the store,
    /// from the last offset delivered, and delivers what is missing (in
    /// order; anything already delivered is dropped as a duplicate by the
    /// reorder buffer). A channel whose read fails is retried a few times,
    /// then left to the gap timeout of its next publication. Returns the
    /// number of channels read and of publications delivered.
    pub async fn catch_up(&self) -> (usize, usize) {
        let channels: Vec<Arc<str>> = self
            .channels
            .lock()
            .iter()
            .filter(|(ch, state)| state.reorder.next_offset().is_some() && self.is_durable(ch))
            .map(|(ch, _)| ch.clone())
            .collect();
        let mut delivered = 0;
        for ch in &channels {
            let mut attempt = 0;
            loop {
                match self.catch_up_channel(ch).await {
                    Ok(n) => {
                        delivered += n;
                        break;
                    }
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(channel = %ch, error = %e, attempt, "catching up a channel");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::warn!(channel = %ch, error = %e, "gave up catching up a channel");
                        break;
                    }
                }
            }
        }
        metrics::counter!("switchboard_cluster_catch_up_total").increment(channels.len() as u64);
        (channels.len(), delivered)
    }

    async fn catch_up_channel(&self, ch: &Arc<str>) -> Result<usize, EngineError> {
        let opts = self
            .namespaces
            .resolve(ch)
            .map_err(|e| EngineError::new(ClientError::UNKNOWN_CHANNEL, e.to_string()))?;
        let mut delivered = 0;
        loop {
            let (next, epoch) = {
                let chans = self.channels.lock();
                match chans.get(ch).map(|s| (s.reorder.next_offset(), &s.epoch)) {
                    Some((Some(next), epoch)) => (next, epoch.clone()),
                    // Gone, or being (re)established: nothing to catch up.
                    _ => return Ok(delivered),
                }
            };
            let query = HistoryQuery {
                since: Some(StreamPosition {
                    offset: next - 1,
                    epoch,
                }),
                limit: Some(CATCH_UP_PAGE),
                reverse: false,
            };
            let page = self
                .guard
                .call(self.store.history(ch, &query, &retention(opts), now_ms()))
                .await?;
            let now = Instant::now();
            let reset = {
                let mut chans = self.channels.lock();
                let Some(state) = chans.get_mut(ch) else {
                    return Ok(delivered);
                };
                if page.position.epoch != state.epoch {
                    state.reorder.reset();
                    true
                } else {
                    let n = page.publications.len();
                    let top = page.position.offset;
                    let mut last = next - 1;
                    for p in page.publications {
                        last = last.max(p.offset);
                        let out = state.reorder.handle_publication(p.offset, Arc::new(p), now);
                        delivered += out.len();
                        self.deliver(ch, out);
                    }
                    self.note_gap(ch, state);
                    if n < CATCH_UP_PAGE || last >= top {
                        return Ok(delivered);
                    }
                    false
                }
            };
            if reset {
                // The history was removed meanwhile: start over from the top.
                self.rebaseline(ch).await?;
                return Ok(delivered);
            }
        }
    }
}

impl BusHandler for ChannelOrder {
    fn handle(&self, msg: BusMessage) {
        match msg {
            BusMessage::Publication {
                channel,
                publication,
            } if publication.offset > 0 => {
                let mut chans = self.channels.lock();
                // No local interest any more: nothing to deliver.
                let Some(state) = chans.get_mut(&channel) else {
                    return;
                };
                let out = state.reorder.handle_publication(
                    publication.offset,
                    publication,
                    Instant::now(),
                );
                self.deliver(&channel, out);
                self.note_gap(&channel, state);
            }
            BusMessage::Publication {
                channel,
                publication,
            } => {
                self.hub.deliver_publication(channel, &publication);
            }
            BusMessage::Join { channel, info } => self.hub.deliver_join_leave(channel, &info, true),
            BusMessage::Leave { channel, info } => {
                self.hub.deliver_join_leave(channel, &info, false)
            }
        }
    }
}

/// Publisher info as it travels in node-to-node replies.
#[derive(Serialize, Deserialize)]
struct WireInfo {
    user: String,
    client: String,
    #[serde(with = "b64")]
    conn_info: Bytes,
    #[serde(with = "b64")]
    chan_info: Bytes,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

impl From<&PublisherInfo> for WireInfo {
    fn from(i: &PublisherInfo) -> Self {
        Self {
            user: i.user.clone(),
            client: i.client.clone(),
            conn_info: i.conn_info.clone(),
            chan_info: i.chan_info.clone(),
        }
    }
}

impl From<WireInfo> for PublisherInfo {
    fn from(w: WireInfo) -> Self {
        Self {
            user: w.user,
            client: w.client,
            conn_info: w.conn_info,
            chan_info: w.chan_info,
        }
    }
}

/// A server API action broadcast to every node.
#[derive(Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Subscribe a user's connections to a channel.
    Subscribe {
        /// The user.
        user: String,
        /// Only this client (empty: all of the user's).
        client: String,
        /// The channel.
        channel: String,
        /// Data for the subscribe push.
        data: Bytes,
    },
    /// Unsubscribe a user's connections from a channel.
    Unsubscribe {
        /// The user.
        user: String,
        /// Only this client (empty: all of the user's).
        client: String,
        /// The channel.
        channel: String,
    },
    /// Disconnect a user's connections.
    Disconnect {
        /// The user.
        user: String,
        /// Only this client (empty: all of the user's).
        client: String,
        /// Clients spared.
        whitelist: Vec<String>,
        /// Disconnect code.
        code: u32,
        /// Disconnect reason.
        reason: String,
    },
    /// Re-check a user's connections' expiry.
    Refresh {
        /// The user.
        user: String,
        /// Only this client (empty: all of the user's).
        client: String,
        /// Treat as expired now.
        expired: bool,
        /// New expiry (Unix seconds).
        expire_at: Option<i64>,
    },
    /// A channel's history was removed: its offsets restart.
    HistoryRemoved {
        /// The channel.
        channel: String,
    },
}

impl Action {
    /// Applies the action to this node's connections.
    pub fn apply_local(&self, hub: &Hub) {
        match self {
            Action::Subscribe {
                user,
                client,
                channel,
                data,
            } => {
                for conn in hub.user_conns(user, client) {
                    conn.control(Control::Subscribe {
                        channel: channel.clone(),
                        data: data.clone(),
                    });
                }
            }
            Action::Unsubscribe {
                user,
                client,
                channel,
            } => {
                for conn in hub.user_conns(user, client) {
                    conn.control(Control::Unsubscribe {
                        channel: channel.clone(),
                        reason: Unsubscribe::SERVER,
                    });
                }
            }
            Action::Disconnect {
                user,
                client,
                whitelist,
                code,
                reason,
            } => {
                let d = Disconnect::new(*code, reason.clone());
                for conn in hub.user_conns(user, client) {
                    if !whitelist.iter().any(|c| c == conn.client()) {
                        conn.disconnect(d.clone());
                    }
                }
            }
            Action::Refresh {
                user,
                client,
                expired,
                expire_at,
            } => {
                for conn in hub.user_conns(user, client) {
                    conn.control(Control::Refresh {
                        expired: *expired,
                        expire_at: *expire_at,
                    });
                }
            }
            Action::HistoryRemoved { .. } => {}
        }
    }
}

/// This node in the cluster: bus, registry entry, node-to-node requests.
pub struct Cluster {
    bus: NatsBus,
    registry: NodeRegistry,
    registration: Mutex<Option<Registration>>,
    order: Arc<ChannelOrder>,
    live: RwLock<Vec<NodeInfo>>,
    request_timeout: Duration,
}

impl Cluster {
    /// Joins the cluster: opens the registry, registers `info` (heartbeats
    /// start) and keeps a cached list of live nodes.
    pub async fn start(
        bus: NatsBus,
        registry: NodeRegistry,
        order: Arc<ChannelOrder>,
        info: NodeInfo,
        request_timeout: Duration,
    ) -> Result<Arc<Self>, BusError> {
        let registration = registry.register(info).await?;
        let live = registry.list().await.unwrap_or_default();
        let me = Arc::new(Self {
            bus,
            registry,
            registration: Mutex::new(Some(registration)),
            order,
            live: RwLock::new(live),
            request_timeout,
        });
        Ok(me)
    }

    /// Serves node-to-node requests with `node`'s and `hub`'s local state,
    /// and keeps the registry entry's load and the live-node cache fresh.
    pub fn serve(self: &Arc<Self>, node: Arc<Node>, hub: Arc<Hub>, info: NodeResultSource) {
        self.bus.set_request_handler(Arc::new(Requests {
            node: node.clone(),
            hub: hub.clone(),
            order: self.order.clone(),
            info,
        }));
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                // Media load (SFU peers) weighs room placement.
                let peers = match node.calls() {
                    Some(calls) => {
                        tokio::time::timeout(Duration::from_secs(1), calls.sfu().counts())
                            .await
                            .ok()
                            .and_then(|c| c.ok())
                            .map(|c| c.peers)
                    }
                    None => None,
                };
                if let Some(r) = me.registration.lock().as_ref() {
                    let load = hub.num_conns() as f64;
                    if r.info().load != load {
                        r.set_load(load);
                    }
                    if let Some(peers) = peers {
                        let v = peers.to_string();
                        if r.info().meta.get(crate::rtcroute::META_MEDIA_LOAD) != Some(&v) {
                            r.update(|info| {
                                info.meta.insert(crate::rtcroute::META_MEDIA_LOAD.into(), v);
                            });
                        }
                    }
                }
                match me.registry.list().await {
                    Ok(live) => *me.live.write() = live,
                    Err(e) => tracing::warn!(error = %e, "registry: listing live nodes failed"),
                }
            }
        });
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.bus.node_id()
    }

    /// The node registry.
    pub fn registry(&self) -> &NodeRegistry {
        &self.registry
    }

    /// Marks this node as draining in the registry (it gets no new rooms).
    pub fn set_draining(&self) {
        if let Some(r) = self.registration.lock().as_ref() {
            r.update(|info| {
                info.meta
                    .insert(crate::rtcroute::META_DRAINING.into(), "1".into());
            });
        }
    }

    /// The bus.
    pub fn bus(&self) -> &NatsBus {
        &self.bus
    }

    /// The channel order handler.
    pub fn order(&self) -> &Arc<ChannelOrder> {
        &self.order
    }

    /// Live nodes, read from the registry now.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BusError> {
        let live = self.registry.list().await?;
        *self.live.write() = live.clone();
        Ok(live)
    }

    fn other_nodes(&self) -> Vec<String> {
        self.live
            .read()
            .iter()
            .filter(|n| n.id != self.node_id())
            .map(|n| n.id.clone())
            .collect()
    }

    /// Asks every other live node (from the cached list) and collects the
    /// answers of those that reply in time.
    async fn gather(&self, nodes: Vec<String>, method: &str, payload: Bytes) -> Vec<Bytes> {
        let calls = nodes.into_iter().map(|id| {
            let payload = payload.clone();
            async move {
                let r = self
                    .bus
                    .request_with_timeout(&id, method, payload, self.request_timeout)
                    .await;
                if let Err(e) = &r
                    && !matches!(e, BusError::NoResponders(_))
                {
                    tracing::warn!(node = %id, method, error = %e, "cluster request failed");
                }
                r.ok()
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Presence of `channel` on the other nodes.
    pub async fn remote_presence(&self, channel: &str) -> Vec<PublisherInfo> {
        let replies = self
            .gather(
                self.other_nodes(),
                "presence",
                Bytes::copy_from_slice(channel.as_bytes()),
            )
            .await;
        replies
            .iter()
            .filter_map(|b| serde_json::from_slice::<Vec<WireInfo>>(b).ok())
            .flatten()
            .map(PublisherInfo::from)
            .collect()
    }

    /// Channels with subscribers on the other nodes.
    pub async fn remote_channels(&self) -> Vec<(String, usize)> {
        self.gather(self.other_nodes(), "channels", Bytes::new())
            .await
            .iter()
            .filter_map(|b| serde_json::from_slice::<Vec<(String, usize)>>(b).ok())
            .flatten()
            .collect()
    }

    /// `info` of every live node (read from the registry now); a node that
    /// does not answer is described from its registry entry.
    pub async fn info(&self) -> Result<Vec<api::NodeResult>, BusError> {
        let live = self.nodes().await?;
        let mut out = Vec::with_capacity(live.len());
        let ids: Vec<String> = live.iter().map(|n| n.id.clone()).collect();
        let replies = futures_util::future::join_all(ids.iter().map(|id| {
            self.bus
                .request_with_timeout(id, "info", Bytes::new(), self.request_timeout)
        }))
        .await;
        for (n, reply) in live.iter().zip(replies) {
            let parsed = reply
                .ok()
                .and_then(|b: Bytes| serde_json::from_slice::<api::NodeResult>(&b).ok());
            out.push(parsed.unwrap_or_else(|| api::NodeResult {
                uid: n.id.clone(),
                name: n.meta.get("name").cloned().unwrap_or_else(|| n.id.clone()),
                version: n.meta.get("version").cloned().unwrap_or_default(),
                num_clients: n.load as u32,
                ..Default::default()
            }));
        }
        Ok(out)
    }

    /// Sends a server API action to every node (this one included).
    pub async fn broadcast(&self, action: &Action) -> Result<(), BusError> {
        let payload = serde_json::to_vec(action).map_err(|e| BusError::Rejected(e.to_string()))?;
        self.bus.broadcast("action", payload.into()).await
    }

    /// Leaves the registry and closes the bus (graceful shutdown).
    pub async fn leave(&self) {
        let registration = self.registration.lock().take();
        if let Some(r) = registration
            && let Err(e) = r.deregister().await
        {
            tracing::warn!(error = %e, "leaving the node registry");
        }
        self.bus.close().await;
    }
}

/// Builds this node's `info` entry.
pub type NodeResultSource = Arc<dyn Fn() -> api::NodeResult + Send + Sync>;

struct Requests {
    node: Arc<Node>,
    hub: Arc<Hub>,
    order: Arc<ChannelOrder>,
    info: NodeResultSource,
}

#[async_trait::async_trait]
impl RequestHandler for Requests {
    async fn handle(&self, method: &str, payload: Bytes) -> Result<Bytes, String> {
        let json = |v: &dyn erased::Json| v.to_vec().map(Bytes::from);
        match method {
            "presence" => {
                let channel = std::str::from_utf8(&payload).map_err(|e| e.to_string())?;
                let list: Vec<WireInfo> = self
                    .node
                    .local_presence(channel)
                    .iter()
                    .map(WireInfo::from)
                    .collect();
                json(&list)
            }
            "channels" => json(&self.hub.channels()),
            "info" => json(&(self.info)()),
            "action" => {
                let action: Action = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                if let Action::HistoryRemoved { channel } = &action {
                    self.order.reset(channel).await;
                } else {
                    action.apply_local(&self.hub);
                }
                Ok(Bytes::new())
            }
            m if m.starts_with("rtc") => match self.node.router() {
                Some(router) => router.handle(m, payload).await,
                None => Err("call signaling is not routed on this node".into()),
            },
            other => Err(format!("unknown cluster method {other:?}")),
        }
    }
}

mod erased {
    /// Serializes to JSON behind a trait object.
    pub trait Json {
        fn to_vec(&self) -> Result<Vec<u8>, String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Result<Vec<u8>, String> {
            serde_json::to_vec(self).map_err(|e| e.to_string())
        }
    }
}
