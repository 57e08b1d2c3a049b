//! Call signaling across a cluster: which media node holds a room, and how
//! `rtc.*` requests, their pushes and the room API travel between the node
//! holding a client's connection (its gateway) and the node holding the
//! room (see docs/CLUSTER.md, "Rooms on media nodes").
//!
//! * Placement: the first join (or `room_create`) of a room picks a healthy,
//!   not draining, media node by weighted rendezvous hashing
//!   ([`switchboard_core::placement`]) and records it with compare-and-set
//!   in the node registry, so every gateway routes the room to the same
//!   node. A record pointing at a node that is gone or draining is replaced
//!   the same way.
//! * Requests: a gateway forwards its clients' `rtc.*` calls to the room's
//!   node over the bus (method `rtc`); that node runs them as if the client
//!   were local and sends the pushes for the client back to its gateway
//!   (method `rtc_push`), batched and in order, from one queue per gateway.
//! * Loss: every second a gateway checks the nodes holding its clients'
//!   rooms; when one has left the registry (crash: within the registry TTL),
//!   those clients get `rtc.reconnect` (reason `node_lost`) and join again,
//!   which places the room on a live node. A draining node sends
//!   `rtc.reconnect` (reason `moved`) itself ([`crate::calls::Calls::evacuate`]).

use crate::calls::{Calls, DRAINING, RemotePush, not_found};
use crate::cluster::Cluster;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchboard_auth::Grants;
use switchboard_bus::{BusError, Expect, NatsBus, NodeInfo, NodeRegistry};
use switchboard_core::placement::{Candidate, choose};
use switchboard_gateway::Hub;
use switchboard_gateway::engine::{CallerContext, EngineError};
use switchboard_proto::api::ApiError;
use switchboard_proto::codes::ClientError;
use tokio::sync::mpsc;

/// Registry meta key a draining media node sets (it gets no new rooms).
pub const META_DRAINING: &str = "draining";
/// Registry meta key with a media node's load (SFU peers).
pub const META_MEDIA_LOAD: &str = "media_load";

/// Placement-bucket key holding the `room_create` request of a room, so a
/// room that moves keeps its options.
fn options_key(room: &str) -> String {
    format!("options/{room}")
}

/// Largest number of pushes sent to a gateway in one bus request.
const PUSH_BATCH: usize = 256;

/// A forwarded `rtc.*` call.
#[derive(Serialize, Deserialize)]
struct Forward {
    origin: String,
    client: String,
    user: String,
    grants: Option<Grants>,
    method: String,
    data: String,
}

/// The outcome of a forwarded call.
#[derive(Serialize, Deserialize)]
struct Outcome {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    code: u32,
    #[serde(default)]
    detail: String,
}

/// A forwarded room API call.
#[derive(Serialize, Deserialize)]
struct ApiCall {
    method: String,
    body: String,
}

#[derive(Deserialize)]
struct RoomOf {
    room: String,
}

/// The type and room of a push a media node sends to a client.
#[derive(Deserialize)]
struct RoomPush {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    room: String,
}

#[derive(Serialize, Deserialize)]
struct Allow {
    room: String,
    users: Vec<String>,
}

fn unreachable_node(node: &str, e: &BusError) -> EngineError {
    EngineError::new(
        ClientError::NOT_AVAILABLE,
        format!("media node {node} unreachable: {e}"),
    )
}

fn client_error(code: u32) -> ClientError {
    ClientError::ALL
        .into_iter()
        .find(|e| e.code == code)
        .unwrap_or(ClientError::INTERNAL)
}

fn room_of(data: &[u8]) -> Result<String, EngineError> {
    serde_json::from_slice::<RoomOf>(data)
        .map(|r| r.room)
        .map_err(|e| EngineError::new(ClientError::BAD_REQUEST, format!("rtc request: {e}")))
}

fn media_load(n: &NodeInfo) -> f64 {
    n.meta
        .get(META_MEDIA_LOAD)
        .and_then(|v| v.parse().ok())
        .unwrap_or(n.load)
}

/// Pushes for clients on other nodes: one ordered queue per gateway node.
struct Links {
    me: String,
    bus: NatsBus,
    registry: NodeRegistry,
    outbox: Mutex<HashMap<String, mpsc::UnboundedSender<(String, Bytes)>>>,
    /// Pushes queued and not yet handed to the bus.
    pending: Arc<AtomicUsize>,
}

impl Links {
    async fn pump(
        bus: NatsBus,
        node: String,
        pending: Arc<AtomicUsize>,
        mut rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < PUSH_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            let wire: Vec<(String, String)> = batch
                .into_iter()
                .map(|(c, d)| (c, String::from_utf8_lossy(&d).into_owned()))
                .collect();
            match serde_json::to_vec(&wire) {
                Ok(payload) => {
                    if let Err(e) = bus.request(&node, "rtc_push", payload.into()).await {
                        tracing::warn!(node = %node, error = %e, pushes = n, "rtc pushes to a gateway lost");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "encoding rtc pushes"),
            }
            pending.fetch_sub(n, Ordering::SeqCst);
        }
    }
}

impl RemotePush for Links {
    fn push(&self, node: &str, client: &str, data: Bytes) {
        let mut outbox = self.outbox.lock();
        let tx = outbox.entry(node.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Self::pump(
                self.bus.clone(),
                node.to_string(),
                self.pending.clone(),
                rx,
            ));
            tx
        });
        self.pending.fetch_add(1, Ordering::SeqCst);
        if tx.send((client.to_string(), data)).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn room_finished(&self, room: &str) {
        let registry = self.registry.clone();
        let (room, me) = (room.to_string(), self.me.clone());
        tokio::spawn(async move {
            if let Ok(Some(p)) = registry.placement(&room).await
                && p.value == me.as_bytes()
            {
                if let Err(e) = registry.unplace(&room, p.revision).await {
                    tracing::debug!(room, error = %e, "removing a room's placement");
                }
                if let Ok(Some(o)) = registry.placement(&options_key(&room)).await {
                    let _ = registry.unplace(&options_key(&room), o.revision).await;
                }
            }
        });
    }
}

/// Routes call signaling and the room API to the media node holding each
/// room (cluster mode).
pub struct MediaRouter {
    links: Arc<Links>,
    hub: Arc<Hub>,
    local: Option<Arc<Calls>>,
    /// This node's clients: client → room → media node.
    joined: Mutex<HashMap<String, HashMap<String, String>>>,
    /// 1:1 ringing of this node (calls rung here are answered here).
    ringing: std::sync::OnceLock<std::sync::Weak<crate::ringing::Ringing>>,
}

impl MediaRouter {
    /// Routing for `cluster`, with `local` this node's rooms if it runs the
    /// media role. Starts the task that notices lost media nodes.
    pub fn start(cluster: &Cluster, hub: Arc<Hub>, local: Option<Arc<Calls>>) -> Arc<Self> {
        let links = Arc::new(Links {
            me: cluster.node_id().to_string(),
            bus: cluster.bus().clone(),
            registry: cluster.registry().clone(),
            outbox: Mutex::new(HashMap::new()),
            pending: Arc::new(AtomicUsize::new(0)),
        });
        if let Some(calls) = &local {
            calls.set_remote(links.clone());
        }
        let router = Arc::new(Self {
            links,
            hub,
            local,
            joined: Mutex::new(HashMap::new()),
            ringing: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&router);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(router) = weak.upgrade() else { return };
                router.check_nodes().await;
            }
        });
        router
    }

    fn me(&self) -> &str {
        &self.links.me
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.links.me
    }

    /// Lets other nodes' clients answer calls rung by `ringing`.
    pub fn set_ringing(&self, ringing: std::sync::Weak<crate::ringing::Ringing>) {
        let _ = self.ringing.set(ringing);
    }

    /// Queues a push for `client` on gateway node `node`, in order with the
    /// other pushes to that node.
    pub fn push_to(&self, node: &str, client: &str, data: Bytes) {
        self.links.push(node, client, data);
    }

    /// `user`'s connections on the other live nodes, as (node, client).
    pub async fn user_clients(&self, user: &str) -> Vec<(String, String)> {
        let Ok(nodes) = self.links.registry.list().await else {
            return Vec::new();
        };
        let asks = nodes
            .iter()
            .filter(|n| n.id != self.me() && n.has_role("gateway"))
            .map(|n| async move {
                let reply = self
                    .links
                    .bus
                    .request(&n.id, "rtc_user", Bytes::from(user.to_string()))
                    .await
                    .ok()?;
                let clients: Vec<String> = serde_json::from_slice(&reply).ok()?;
                Some(
                    clients
                        .into_iter()
                        .map(|c| (n.id.clone(), c))
                        .collect::<Vec<_>>(),
                )
            });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect()
    }

    /// Sends a ringing method (`rtc.accept`, …) about a call rung by `node`
    /// there.
    pub async fn forward_ring(
        &self,
        node: &str,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        self.forward(node, "rtc_ring", caller, method, data).await
    }

    /// The media node of `room`: the recorded one if it is healthy, else a
    /// new choice (not one of `exclude`) recorded with compare-and-set.
    async fn place(&self, room: &str, exclude: &[String]) -> Result<String, EngineError> {
        let unavailable =
            |e: BusError| EngineError::new(ClientError::NOT_AVAILABLE, format!("placement: {e}"));
        for _ in 0..3 {
            let nodes = self.links.registry.list().await.map_err(unavailable)?;
            let healthy: Vec<&NodeInfo> = nodes
                .iter()
                .filter(|n| {
                    n.has_role("media")
                        && !n.meta.contains_key(META_DRAINING)
                        && !exclude.contains(&n.id)
                })
                .collect();
            let current = self
                .links
                .registry
                .placement(room)
                .await
                .map_err(unavailable)?;
            if let Some(p) = &current
                && healthy.iter().any(|n| n.id.as_bytes() == p.value)
            {
                return Ok(String::from_utf8_lossy(&p.value).into_owned());
            }
            let candidates: Vec<Candidate<'_>> = healthy
                .iter()
                .map(|n| Candidate {
                    id: &n.id,
                    load: media_load(n),
                })
                .collect();
            let Some(choice) = choose(room, &candidates) else {
                return Err(EngineError::new(
                    ClientError::NOT_AVAILABLE,
                    "no media node available",
                ));
            };
            let expect = current
                .as_ref()
                .map_or(Expect::Absent, |p| Expect::Revision(p.revision));
            match self
                .links
                .registry
                .place(room, Bytes::from(choice.to_string()), expect)
                .await
            {
                Ok(p) => {
                    if p.won {
                        tracing::info!(room, node = choice, "room placed");
                        if current.is_some() {
                            self.recreate(room, choice).await;
                        }
                    }
                    return Ok(String::from_utf8_lossy(&p.value).into_owned());
                }
                Err(BusError::Conflict(_)) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(EngineError::new(
            ClientError::NOT_AVAILABLE,
            "placement kept changing",
        ))
    }

    /// A room created through the API moved to `node`: create it there with
    /// its options before anyone joins.
    async fn recreate(&self, room: &str, node: &str) {
        if let Ok(Some(o)) = self.links.registry.placement(&options_key(room)).await
            && let Err(e) = self.call_api(node, "room_create", &o.value).await
        {
            tracing::debug!(room, node, error = %e, "re-creating a moved room");
        }
    }

    /// Remembers a created room's options (see [`options_key`]).
    async fn keep_options(&self, room: &str, body: &[u8]) {
        let key = options_key(room);
        let registry = &self.links.registry;
        let value = Bytes::copy_from_slice(body);
        let expect = match registry.placement(&key).await {
            Ok(Some(p)) => Expect::Revision(p.revision),
            _ => Expect::Absent,
        };
        if let Err(e) = registry.place(&key, value, expect).await {
            tracing::warn!(room, error = %e, "recording a room's options");
        }
    }

    /// Where `client`'s calls about `room` go: the node it joined on, else
    /// the room's placement record, else this node.
    async fn lookup(&self, client: &str, room: &str) -> String {
        if let Some(node) = self.joined.lock().get(client).and_then(|r| r.get(room)) {
            return node.clone();
        }
        match self.links.registry.placement(room).await {
            Ok(Some(p)) => String::from_utf8_lossy(&p.value).into_owned(),
            _ => self.me().to_string(),
        }
    }

    async fn call(
        &self,
        node: &str,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        if node == self.me() {
            return match &self.local {
                Some(calls) => calls.rpc(caller, method, data).await,
                None => Err(EngineError::new(
                    ClientError::NOT_AVAILABLE,
                    "media is disabled on this node",
                )),
            };
        }
        self.forward(node, "rtc", caller, method, data).await
    }

    async fn forward(
        &self,
        node: &str,
        bus_method: &str,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        let forward = Forward {
            origin: self.me().to_string(),
            client: caller.client.clone(),
            user: caller.user.clone(),
            grants: caller.grants.clone(),
            method: method.to_string(),
            data: String::from_utf8(data.to_vec()).map_err(|_| {
                EngineError::new(ClientError::BAD_REQUEST, "rtc request: not UTF-8 JSON")
            })?,
        };
        let payload = serde_json::to_vec(&forward)
            .map_err(|e| EngineError::new(ClientError::INTERNAL, e.to_string()))?;
        let reply = self
            .links
            .bus
            .request(node, bus_method, payload.into())
            .await
            .map_err(|e| unreachable_node(node, &e))?;
        let outcome: Outcome = serde_json::from_slice(&reply)
            .map_err(|e| EngineError::new(ClientError::INTERNAL, format!("rtc reply: {e}")))?;
        match outcome.ok {
            Some(ok) => Ok(Bytes::from(ok)),
            None => Err(EngineError::new(client_error(outcome.code), outcome.detail)),
        }
    }

    /// Runs an `rtc.*` method of a client connected here, on the node
    /// holding the room.
    pub async fn rpc(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        let room = room_of(&data)?;
        if method != "rtc.join" {
            let node = self.lookup(&caller.client, &room).await;
            let out = self.call(&node, caller, method, data).await;
            if method == "rtc.leave" && out.is_ok() {
                self.forget(&caller.client, &room);
            }
            return out;
        }
        let mut node = self.place(&room, &[]).await?;
        let mut out = self.call(&node, caller, method, data.clone()).await;
        if let Err(e) = &out
            && e.error.code == ClientError::NOT_AVAILABLE.code
            && (e.detail == DRAINING || e.detail.contains("unreachable"))
        {
            // The node is going away but the registry does not say so yet.
            node = self.place(&room, std::slice::from_ref(&node)).await?;
            out = self.call(&node, caller, method, data).await;
        }
        if out.is_ok() {
            self.joined
                .lock()
                .entry(caller.client.clone())
                .or_default()
                .insert(room, node);
        }
        out
    }

    fn forget(&self, client: &str, room: &str) {
        let mut joined = self.joined.lock();
        if let Some(rooms) = joined.get_mut(client) {
            rooms.remove(room);
            if rooms.is_empty() {
                joined.remove(client);
            }
        }
    }

    /// A client connected here went away: the media nodes holding its
    /// rooms remove it (this node's own rooms are handled by its calls).
    pub async fn disconnected(&self, client: &str) {
        let rooms = self.joined.lock().remove(client).unwrap_or_default();
        let nodes: HashSet<String> = rooms.into_values().filter(|n| n != self.me()).collect();
        for node in nodes {
            if let Err(e) = self
                .links
                .bus
                .request(&node, "rtc_gone", Bytes::from(client.to_string()))
                .await
            {
                tracing::debug!(node = %node, client, error = %e, "telling a media node a client left");
            }
        }
    }

    /// Tells clients whose room's node left the registry to join again.
    async fn check_nodes(&self) {
        let remote: HashSet<String> = self
            .joined
            .lock()
            .values()
            .flat_map(|r| r.values())
            .filter(|n| *n != self.me())
            .cloned()
            .collect();
        if remote.is_empty() {
            return;
        }
        let Ok(live) = self.links.registry.list().await else {
            return; // Bus or registry trouble is not node loss.
        };
        let lost: HashSet<String> = remote
            .into_iter()
            .filter(|n| !live.iter().any(|l| &l.id == n))
            .collect();
        if lost.is_empty() {
            return;
        }
        let mut told = Vec::new();
        {
            let mut joined = self.joined.lock();
            for (client, rooms) in joined.iter_mut() {
                rooms.retain(|room, node| {
                    if lost.contains(node) {
                        told.push((client.clone(), room.clone(), node.clone()));
                        false
                    } else {
                        true
                    }
                });
            }
            joined.retain(|_, rooms| !rooms.is_empty());
        }
        for (client, room, node) in told {
            tracing::warn!(client, room, node, "media node lost: client told to rejoin");
            let msg = json!({"type": "rtc.reconnect", "room": room, "reason": "node_lost"});
            self.hub.send_message(&client, Bytes::from(msg.to_string()));
        }
    }

    async fn call_api(&self, node: &str, method: &str, body: &[u8]) -> Result<Value, ApiError> {
        if node == self.me() {
            return match &self.local {
                Some(calls) => calls
                    .api(method, body)
                    .await
                    .unwrap_or(Err(ApiError::METHOD_NOT_FOUND)),
                None => Err(ApiError::NOT_AVAILABLE.with_message("media is disabled on this node")),
            };
        }
        let call = ApiCall {
            method: method.to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let payload = serde_json::to_vec(&call).unwrap_or_default();
        let reply = self
            .links
            .bus
            .request(node, "rtc_api", payload.into())
            .await
            .map_err(|e| {
                ApiError::NOT_AVAILABLE.with_message(format!("media node {node} unreachable: {e}"))
            })?;
        let v: Value = serde_json::from_slice(&reply)
            .map_err(|e| ApiError::INTERNAL.with_message(format!("room api reply: {e}")))?;
        match v.get("error") {
            Some(e) => Err(serde_json::from_value(e.clone()).unwrap_or(ApiError::INTERNAL)),
            None => Ok(v["result"].clone()),
        }
    }

    /// Runs a room method of the server API on the node holding the room
    /// (`room_list`: on every media node).
    pub async fn api(&self, method: &str, body: &[u8]) -> Result<Value, ApiError> {
        if method == "room_list" {
            return self.room_list(body).await;
        }
        let room = serde_json::from_slice::<RoomOf>(body)
            .map(|r| r.room)
            .map_err(|e| ApiError::BAD_REQUEST.with_message(format!("malformed request: {e}")))?;
        let node = if method == "room_create" {
            self.place(&room, &[])
                .await
                .map_err(|e| ApiError::NOT_AVAILABLE.with_message(e.detail))?
        } else {
            match self.links.registry.placement(&room).await {
                Ok(Some(p)) => String::from_utf8_lossy(&p.value).into_owned(),
                Ok(None) => return Err(not_found("room")),
                Err(e) => {
                    return Err(ApiError::NOT_AVAILABLE.with_message(format!("placement: {e}")));
                }
            }
        };
        let mut out = self.call_api(&node, method, body).await;
        if method == "room_create" && out.is_ok() {
            self.keep_options(&room, body).await;
        }
        if let Ok(v) = &mut out
            && let Some(r) = v.get_mut("room").and_then(Value::as_object_mut)
        {
            r.insert("node".into(), json!(node));
        }
        out
    }

    async fn room_list(&self, body: &[u8]) -> Result<Value, ApiError> {
        let nodes = self
            .links
            .registry
            .list()
            .await
            .map_err(|e| ApiError::NOT_AVAILABLE.with_message(format!("registry: {e}")))?;
        let media: Vec<String> = nodes
            .into_iter()
            .filter(|n| n.has_role("media"))
            .map(|n| n.id)
            .collect();
        if media.is_empty() {
            return Err(ApiError::NOT_AVAILABLE.with_message("no media node in the cluster"));
        }
        let replies = futures_util::future::join_all(
            media.iter().map(|n| self.call_api(n, "room_list", body)),
        )
        .await;
        let mut rooms = Vec::new();
        let (mut r, mut p, mut peers) = (0u64, 0u64, 0u64);
        for (node, reply) in media.iter().zip(replies) {
            let Ok(v) = reply else { continue };
            for mut room in v["rooms"].as_array().cloned().unwrap_or_default() {
                if let Some(o) = room.as_object_mut() {
                    o.insert("node".into(), json!(node));
                }
                rooms.push(room);
            }
            r += v["sfu"]["rooms"].as_u64().unwrap_or(0);
            p += v["sfu"]["participants"].as_u64().unwrap_or(0);
            peers += v["sfu"]["peers"].as_u64().unwrap_or(0);
        }
        Ok(json!({"rooms": rooms, "sfu": {"rooms": r, "participants": p, "peers": peers}}))
    }

    /// Opens `room` to `users` (an accepted 1:1 call) on the node the room
    /// is placed on.
    pub async fn allow_call_room(&self, room: &str, users: Vec<String>) {
        let node = match self.place(room, &[]).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(room, error = %e, "placing an accepted call's room");
                return;
            }
        };
        if node == self.me() {
            if let Some(calls) = &self.local {
                calls.allow_call_room(room, users);
            }
            return;
        }
        let payload = serde_json::to_vec(&Allow {
            room: room.to_string(),
            users,
        })
        .unwrap_or_default();
        if let Err(e) = self
            .links
            .bus
            .request(&node, "rtc_allow", payload.into())
            .await
        {
            tracing::warn!(room, node = %node, error = %e, "opening an accepted call's room");
        }
    }

    /// Graceful drain of a media node: closes its rooms (participants on
    /// other nodes are told to rejoin elsewhere) and waits until those
    /// pushes are on the bus, at most `timeout`.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let Some(calls) = &self.local else { return 0 };
        let closed = calls.evacuate().await;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.links.pending.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The placement records stay: the next join re-places each room
        // (this node is draining) and re-creates it with its options.
        closed.len()
    }

    /// Serves the node-to-node requests of call signaling (methods starting
    /// with `rtc`).
    pub async fn handle(&self, method: &str, payload: Bytes) -> Result<Bytes, String> {
        match method {
            "rtc" | "rtc_ring" => {
                let f: Forward = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                let caller = CallerContext {
                    client: f.client,
                    user: f.user,
                    grants: f.grants,
                };
                let data = Bytes::from(f.data);
                let result = if method == "rtc" {
                    let calls = self
                        .local
                        .as_ref()
                        .ok_or("media is disabled on this node")?;
                    calls
                        .rpc_from(Some(&f.origin), &caller, &f.method, data)
                        .await
                } else {
                    let ringing = self
                        .ringing
                        .get()
                        .and_then(std::sync::Weak::upgrade)
                        .ok_or("no ringing on this node")?;
                    ringing.rpc_from(&f.origin, &caller, &f.method, data).await
                };
                let outcome = match result {
                    Ok(b) => Outcome {
                        ok: Some(String::from_utf8_lossy(&b).into_owned()),
                        code: 0,
                        detail: String::new(),
                    },
                    Err(e) => Outcome {
                        ok: None,
                        code: e.error.code,
                        detail: e.detail,
                    },
                };
                serde_json::to_vec(&outcome)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            }
            "rtc_user" => {
                let user = String::from_utf8_lossy(&payload);
                let clients: Vec<String> = self
                    .hub
                    .user_conns(&user, "")
                    .iter()
                    .map(|c| c.client().to_string())
                    .collect();
                serde_json::to_vec(&clients)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            }
            "rtc_push" => {
                let batch: Vec<(String, String)> =
                    serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                for (client, data) in batch {
                    // The client is out of the room on that node (it moved,
                    // ended, or the client was removed): forget the route,
                    // so the next join places the room again.
                    if let Ok(RoomPush { kind, room }) = serde_json::from_str(&data)
                        && matches!(
                            kind.as_str(),
                            "rtc.reconnect" | "rtc.room_ended" | "rtc.removed"
                        )
                    {
                        self.forget(&client, &room);
                    }
                    self.hub.send_message(&client, Bytes::from(data));
                }
                Ok(Bytes::new())
            }
            "rtc_gone" => {
                let client = String::from_utf8_lossy(&payload).into_owned();
                if let Some(calls) = &self.local {
                    calls.disconnected(&client).await;
                }
                Ok(Bytes::new())
            }
            "rtc_api" => {
                let call: ApiCall = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                let calls = self
                    .local
                    .as_ref()
                    .ok_or("media is disabled on this node")?;
                let out = calls
                    .api(&call.method, call.body.as_bytes())
                    .await
                    .unwrap_or(Err(ApiError::METHOD_NOT_FOUND));
                let v = match out {
                    Ok(v) => json!({"result": v}),
                    Err(e) => json!({"error": e}),
                };
                serde_json::to_vec(&v)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            }
            "rtc_allow" => {
                let a: Allow = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                let calls = self
                    .local
                    .as_ref()
                    .ok_or("media is disabled on this node")?;
                calls.allow_call_room(&a.room, a.users);
                Ok(Bytes::new())
            }
            other => Err(format!("unknown cluster method {other:?}")),
        }
    }
}
