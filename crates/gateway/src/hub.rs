//! The local fan-out hub: which connection is subscribed to which channel.
//!
//! Deliveries arrive from the bus; the hub encodes each publication once per
//! protocol encoding (lazily, on the first subscriber that needs it) and
//! pushes the same bytes into every subscriber's bounded send queue. A queue
//! that overflows with durable data marks its connection for a "slow"
//! disconnect; the connection task does the rest.

use crate::convert;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use switchboard_core::namespace::Namespaces;
use switchboard_core::queue::{Class, Overflow, Pushed, SendQueue};
use switchboard_core::{Publication, PublisherInfo};
use switchboard_proto::client;
use switchboard_proto::codec::{self, Encoding};
use switchboard_proto::codes::{Disconnect, Unsubscribe};
use tokio::sync::Notify;

const SHARDS: usize = 64;

/// A server-side action for a connection, run by its own task.
#[derive(Clone, Debug)]
pub enum Control {
    /// Subscribe the connection to a channel (server-side subscription).
    Subscribe {
        /// The channel.
        channel: String,
        /// Data sent with the subscribe push.
        data: Bytes,
    },
    /// Unsubscribe the connection from a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
        /// Code and reason sent to the client.
        reason: Unsubscribe,
    },
    /// Re-check the connection's expiry (`expired` forces it).
    Refresh {
        /// Treat the connection as expired now.
        expired: bool,
        /// New absolute expiry (Unix seconds), if any.
        expire_at: Option<i64>,
    },
}

/// A publication prepared for fan-out: encoded at most once per encoding.
pub struct Prepared {
    channel: Arc<str>,
    reply: client::Reply,
    offset: u64,
    class: Class,
    json: OnceLock<Bytes>,
    protobuf: OnceLock<Bytes>,
    uni_json: OnceLock<Bytes>,
    uni_protobuf: OnceLock<Bytes>,
}

impl Prepared {
    fn new(channel: Arc<str>, push: client::Push, offset: u64, class: Class) -> Self {
        Self {
            channel,
            reply: client::Reply {
                push: Some(push),
                ..Default::default()
            },
            offset,
            class,
            json: OnceLock::new(),
            protobuf: OnceLock::new(),
            uni_json: OnceLock::new(),
            uni_protobuf: OnceLock::new(),
        }
    }

    /// The encoded reply for one encoding (bidirectional framing).
    pub fn bytes(&self, enc: Encoding) -> &Bytes {
        self.bytes_for(enc, false)
    }

    /// The encoded frame for one encoding and framing: a reply carrying the
    /// push, or (unidirectional) the bare push.
    pub fn bytes_for(&self, enc: Encoding, unidirectional: bool) -> &Bytes {
        let cell = match (enc, unidirectional) {
            (Encoding::Json, false) => &self.json,
            (Encoding::Protobuf, false) => &self.protobuf,
            (Encoding::Json, true) => &self.uni_json,
            (Encoding::Protobuf, true) => &self.uni_protobuf,
        };
        cell.get_or_init(|| {
            if unidirectional {
                let push = self
                    .reply
                    .push
                    .as_ref()
                    .expect("prepared replies carry a push");
                encode_push(enc, push)
            } else {
                codec::encode_reply(enc, &self.reply)
            }
        })
    }
}

/// Encodes a bare [`client::Push`] as one frame (unidirectional transports):
/// JSON text, or a varint-length-prefixed protobuf message.
pub fn encode_push(enc: Encoding, push: &client::Push) -> Bytes {
    match enc {
        Encoding::Json => match serde_json::to_vec(push) {
            Ok(v) => Bytes::from(v),
            Err(_) => Bytes::from_static(b"{}"),
        },
        Encoding::Protobuf => {
            use prost::Message;
            Bytes::from(push.encode_length_delimited_to_vec())
        }
    }
}

struct ConnState {
    queue: SendQueue,
    /// Channels being subscribed: deliveries wait here until the subscribe
    /// reply (with recovered publications) is queued.
    pending: HashMap<Arc<str>, Vec<Arc<Prepared>>>,
    closing: Option<Disconnect>,
    controls: Vec<Control>,
    /// Channels just subscribed whose deliveries may still bring offsets the
    /// subscribe reply already covered (in a cluster the bus can lag behind
    /// the store): offsets up to this one are dropped until a newer one
    /// arrives. Deliveries of a channel come in offset order, so the first
    /// newer one ends the window.
    skip_through: HashMap<Arc<str>, u64>,
}

/// The shared half of one client connection: its identity and send queue.
pub struct Conn {
    id: u64,
    encoding: Encoding,
    unidirectional: bool,
    client: OnceLock<String>,
    user: OnceLock<String>,
    state: Mutex<ConnState>,
    notify: Notify,
    closed: AtomicBool,
    identity: Mutex<crate::auth::TokenIdentity>,
}

impl Conn {
    /// A new connection with the given queue bounds.
    pub fn new(id: u64, encoding: Encoding, max_bytes: usize, max_frames: usize) -> Self {
        Self {
            id,
            encoding,
            unidirectional: false,
            client: OnceLock::new(),
            user: OnceLock::new(),
            state: Mutex::new(ConnState {
                queue: SendQueue::new(max_bytes, max_frames),
                pending: HashMap::new(),
                closing: None,
                controls: Vec::new(),
                skip_through: HashMap::new(),
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            identity: Mutex::new(Default::default()),
        }
    }

    /// Makes this a unidirectional connection: frames are bare pushes
    /// instead of replies, and the client sends no commands after connect.
    pub fn unidirectional(mut self) -> Self {
        self.unidirectional = true;
        self
    }

    /// Whether the connection is unidirectional (uni_* transports).
    pub fn is_unidirectional(&self) -> bool {
        self.unidirectional
    }

    /// Encodes a reply in this connection's encoding and framing. On a
    /// unidirectional connection only pushes go out (as bare pushes); other
    /// replies give `None`.
    pub fn encode(&self, reply: &client::Reply) -> Option<Bytes> {
        if self.unidirectional {
            reply.push.as_ref().map(|p| encode_push(self.encoding, p))
        } else {
            Some(codec::encode_reply(self.encoding, reply))
        }
    }

    /// The token identity (user, jti, session) of the connection.
    pub fn token_identity(&self) -> crate::auth::TokenIdentity {
        self.identity.lock().clone()
    }

    /// Records the identity of the token in use (on connect and refresh).
    pub fn set_token_identity(&self, identity: crate::auth::TokenIdentity) {
        *self.identity.lock() = identity;
    }

    /// Internal numeric id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The protocol encoding of the connection.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The client id, once connected.
    pub fn client(&self) -> &str {
        self.client.get().map_or("", String::as_str)
    }

    /// The user id, once connected.
    pub fn user(&self) -> &str {
        self.user.get().map_or("", String::as_str)
    }

    /// Waits until there is something to do.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Queues a reply the session produced (never dropped).
    pub fn send(&self, bytes: Bytes) {
        let mut st = self.state.lock();
        self.push_locked(&mut st, bytes, Class::Durable);
    }

    fn push_locked(&self, st: &mut ConnState, bytes: Bytes, class: Class) {
        if st.closing.is_some() {
            return;
        }
        match st.queue.push(bytes, class) {
            Ok(Pushed::Dropped) => {
                metrics::counter!("switchboard_send_queue_dropped_total").increment(1)
            }
            Ok(_) => {}
            Err(Overflow) => {
                metrics::counter!("switchboard_send_queue_overflows_total").increment(1);
                st.closing = Some(Disconnect::SLOW);
            }
        }
        self.notify.notify_one();
    }

    fn deliver(&self, p: &Arc<Prepared>) {
        let mut st = self.state.lock();
        if !st.pending.is_empty()
            && let Some(buf) = st.pending.get_mut(&p.channel)
        {
            buf.push(p.clone());
            return;
        }
        if p.offset > 0
            && !st.skip_through.is_empty()
            && let Some(&through) = st.skip_through.get(&p.channel)
        {
            if p.offset <= through {
                return; // already sent with the subscribe reply
            }
            st.skip_through.remove(&p.channel);
        }
        let bytes = p.bytes_for(self.encoding, self.unidirectional).clone();
        self.push_locked(&mut st, bytes, p.class);
    }

    /// Starts buffering deliveries for a channel being subscribed.
    pub fn begin_subscribe(&self, channel: &Arc<str>) {
        let mut st = self.state.lock();
        st.skip_through.remove(channel);
        st.pending.insert(channel.clone(), Vec::new());
    }

    /// Queues a reply (if any), then for each `(channel, after_offset)` the
    /// deliveries buffered since [`Conn::begin_subscribe`] that are newer than
    /// `after_offset` (all of them for channels without offsets); deliveries
    /// at or below `after_offset` that arrive later are dropped too. Without
    /// a reply (the subscription failed) the buffered deliveries are dropped.
    pub fn finish_subscribe(&self, reply: Option<Bytes>, channels: &[(&str, u64)]) {
        let mut st = self.state.lock();
        let ok = reply.is_some();
        if let Some(reply) = reply {
            self.push_locked(&mut st, reply, Class::Durable);
        }
        for (channel, after_offset) in channels {
            let buffered = st.pending.remove(*channel).unwrap_or_default();
            if !ok {
                continue;
            }
            let mut passed = false;
            for p in buffered {
                if p.offset == 0 || p.offset > *after_offset {
                    passed |= p.offset > *after_offset;
                    let bytes = p.bytes_for(self.encoding, self.unidirectional).clone();
                    self.push_locked(&mut st, bytes, p.class);
                }
            }
            // Later deliveries at or below `after_offset` are late copies of
            // what the reply carried.
            if !passed && *after_offset > 0 {
                st.skip_through.insert(Arc::from(*channel), *after_offset);
            }
        }
    }

    /// Asks the connection task to run a server-side action.
    pub fn control(&self, c: Control) {
        self.state.lock().controls.push(c);
        self.notify.notify_one();
    }

    /// Asks the connection task to close with a code (first one wins).
    pub fn disconnect(&self, d: Disconnect) {
        let mut st = self.state.lock();
        if st.closing.is_none() {
            st.closing = Some(d);
        }
        self.notify.notify_one();
    }

    /// Takes the server-side actions waiting for the connection task.
    pub fn take_controls(&self) -> Vec<Control> {
        std::mem::take(&mut self.state.lock().controls)
    }

    /// Takes up to about `max_batch_bytes` of frames, and the disconnect
    /// to perform once they are written, if any.
    pub fn take_frames(&self, max_batch_bytes: usize) -> (Vec<Bytes>, Option<Disconnect>) {
        let mut st = self.state.lock();
        (st.queue.pop_batch(max_batch_bytes), st.closing.clone())
    }

    /// Whether frames are still waiting.
    pub fn has_pending_frames(&self) -> bool {
        !self.state.lock().queue.is_empty()
    }

    /// Marks the connection closed; later deliveries are ignored.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct ChannelSubs {
    subs: HashMap<u64, (Arc<Conn>, bool)>,
}

/// Subscriptions of this node's connections, sharded by channel.
pub struct Hub {
    shards: Vec<RwLock<HashMap<Arc<str>, ChannelSubs>>>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    users: Mutex<HashMap<String, HashMap<u64, Arc<Conn>>>>,
    clients: Mutex<HashMap<String, Arc<Conn>>>,
    namespaces: Arc<Namespaces>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    num_subs: AtomicU64,
}

impl Hub {
    /// An empty hub using `namespaces` to classify deliveries.
    pub fn new(namespaces: Arc<Namespaces>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            conns: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            namespaces,
            hasher: Default::default(),
            next_id: AtomicU64::new(1),
            num_subs: AtomicU64::new(0),
        }
    }

    fn shard(&self, channel: &str) -> &RwLock<HashMap<Arc<str>, ChannelSubs>> {
        &self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an authenticated connection.
    pub fn add_conn(&self, conn: &Arc<Conn>, client: String, user: String) {
        let _ = conn.client.set(client);
        let _ = conn.user.set(user.clone());
        self.conns.lock().insert(conn.id, conn.clone());
        self.clients
            .lock()
            .insert(conn.client().to_string(), conn.clone());
        self.users
            .lock()
            .entry(user)
            .or_default()
            .insert(conn.id, conn.clone());
        metrics::gauge!("switchboard_connections").increment(1.0);
    }

    /// Forgets a connection (its subscriptions must be removed first).
    pub fn remove_conn(&self, conn: &Conn) {
        conn.mark_closed();
        self.clients.lock().remove(conn.client());
        if self.conns.lock().remove(&conn.id).is_some() {
            metrics::gauge!("switchboard_connections").decrement(1.0);
        }
        let mut users = self.users.lock();
        if let Some(m) = users.get_mut(conn.user()) {
            m.remove(&conn.id);
            if m.is_empty() {
                users.remove(conn.user());
            }
        }
    }

    /// Subscribes a connection; returns false if it already was.
    pub fn subscribe(&self, channel: &Arc<str>, conn: &Arc<Conn>, join_leave: bool) -> bool {
        let mut shard = self.shard(channel).write();
        let subs = shard.entry(channel.clone()).or_default();
        let new = subs
            .subs
            .insert(conn.id, (conn.clone(), join_leave))
            .is_none();
        if new {
            self.num_subs.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!("switchboard_subscriptions").increment(1.0);
        }
        new
    }

    /// Unsubscribes a connection; returns false if it was not subscribed.
    pub fn unsubscribe(&self, channel: &str, conn_id: u64) -> bool {
        let mut shard = self.shard(channel).write();
        let Some(subs) = shard.get_mut(channel) else {
            return false;
        };
        let removed = subs.subs.remove(&conn_id).is_some();
        if subs.subs.is_empty() {
            shard.remove(channel);
        }
        if removed {
            self.num_subs.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("switchboard_subscriptions").decrement(1.0);
        }
        removed
    }

    fn class_for(&self, channel: &str, publication: &Publication) -> Class {
        let Ok(opts) = self.namespaces.resolve(channel) else {
            return Class::Durable;
        };
        if opts.is_durable() {
            return Class::Durable;
        }
        let Some(key) = &opts.conflate_key else {
            return Class::Ephemeral;
        };
        match serde_json::from_slice::<serde_json::Value>(&publication.data) {
            Ok(serde_json::Value::Object(map)) => match map.get(key) {
                Some(v) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    channel.hash(&mut h);
                    v.to_string().hash(&mut h);
                    Class::Conflate(h.finish())
                }
                None => Class::Ephemeral,
            },
            _ => Class::Ephemeral,
        }
    }

    /// Delivers a publication to every local subscriber of its channel.
    pub fn deliver_publication(&self, channel: Arc<str>, publication: &Publication) -> usize {
        let shard = self.shard(&channel).read();
        let Some(subs) = shard.get(&channel) else {
            return 0;
        };
        let push = client::Push {
            channel: channel.to_string(),
            publication: Some(convert::publication(publication)),
            ..Default::default()
        };
        let class = self.class_for(&channel, publication);
        let prepared = Arc::new(Prepared::new(
            channel.clone(),
            push,
            publication.offset,
            class,
        ));
        for (conn, _) in subs.subs.values() {
            conn.deliver(&prepared);
        }
        let n = subs.subs.len();
        metrics::counter!("switchboard_messages_sent_total", "type" => "publication")
            .increment(n as u64);
        n
    }

    /// Delivers a join or leave to subscribers that asked for them.
    pub fn deliver_join_leave(&self, channel: Arc<str>, info: &PublisherInfo, join: bool) {
        let shard = self.shard(&channel).read();
        let Some(subs) = shard.get(&channel) else {
            return;
        };
        let ci = Some(convert::client_info(info));
        let push = client::Push {
            channel: channel.to_string(),
            join: if join {
                Some(client::Join { info: ci.clone() })
            } else {
                None
            },
            leave: if join {
                None
            } else {
                Some(client::Leave { info: ci })
            },
            ..Default::default()
        };
        let prepared = Arc::new(Prepared::new(channel.clone(), push, 0, Class::Durable));
        for (conn, join_leave) in subs.subs.values() {
            if *join_leave && conn.client() != info.client {
                conn.deliver(&prepared);
            }
        }
    }

    /// Connections of a user (all of them when `client` is empty).
    pub fn user_conns(&self, user: &str, client: &str) -> Vec<Arc<Conn>> {
        self.users
            .lock()
            .get(user)
            .map(|m| {
                m.values()
                    .filter(|c| client.is_empty() || c.client() == client)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends an asynchronous `message` push to one connection by client id;
    /// false if no such connection is on this node.
    pub fn send_message(&self, client: &str, data: Bytes) -> bool {
        let Some(conn) = self.clients.lock().get(client).cloned() else {
            return false;
        };
        let push = client::Push {
            message: Some(client::AsyncMessage { data }),
            ..Default::default()
        };
        let reply = client::Reply {
            push: Some(push),
            ..Default::default()
        };
        conn.send(codec::encode_reply(conn.encoding(), &reply));
        true
    }

    /// Every connection (for shutdown).
    pub fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.conns.lock().values().cloned().collect()
    }

    /// Channels with local subscribers and their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (name, subs) in shard.read().iter() {
                out.push((name.to_string(), subs.subs.len()));
            }
        }
        out
    }

    /// Number of connections.
    pub fn num_conns(&self) -> usize {
        self.conns.lock().len()
    }

    /// Number of distinct users connected.
    pub fn num_users(&self) -> usize {
        self.users.lock().len()
    }

    /// Number of subscriptions.
    pub fn num_subs(&self) -> u64 {
        self.num_subs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(channel: &Arc<str>, offset: u64) -> Arc<Prepared> {
        let push = client::Push {
            channel: channel.to_string(),
            publication: Some(client::Publication {
                offset,
                ..Default::default()
            }),
            ..Default::default()
        };
        Arc::new(Prepared::new(channel.clone(), push, offset, Class::Durable))
    }

    fn frames(conn: &Conn) -> usize {
        conn.take_frames(usize::MAX).0.len()
    }

    /// A delivery that lags behind the subscriber's own read (the bus behind
    /// the store, in a cluster) is not sent twice.
    #[test]
    fn late_copies_of_recovered_offsets_are_dropped() {
        let ch: Arc<str> = "chat:a".into();
        let conn = Conn::new(1, Encoding::Json, 1 << 20, 1000);
        conn.begin_subscribe(&ch);
        conn.deliver(&publication(&ch, 3)); // buffered, covered by the reply
        conn.finish_subscribe(Some(Bytes::from_static(b"reply")), &[(&ch, 5)]);
        assert_eq!(frames(&conn), 1, "the reply only");
        conn.deliver(&publication(&ch, 4));
        conn.deliver(&publication(&ch, 5));
        assert_eq!(frames(&conn), 0, "late copies dropped");
        conn.deliver(&publication(&ch, 6));
        conn.deliver(&publication(&ch, 7));
        assert_eq!(frames(&conn), 2, "newer ones pass");
        // The window is closed: nothing else is filtered.
        conn.deliver(&publication(&ch, 2));
        assert_eq!(frames(&conn), 1);
    }
}
