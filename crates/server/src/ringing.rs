//! 1:1 calls over the messaging connection: `rtc.call`, `rtc.accept`,
//! `rtc.decline`, `rtc.cancel` (docs/MEDIA.md, "1:1 calls (ringing)").
//!
//! The IO around [`Ringer`]: the callee's connections come from the hub,
//! pushes go out as asynchronous `message`s, events go to the call log, an
//! accepted call opens its room to both users ([`Calls::allow_call_room`]),
//! and a timer task fires ring timeouts.

use crate::calllog::CallLog;
use crate::calls::Calls;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use switchboard_core::ring::{Party, RingError, RingOutput, Ringer};
use switchboard_gateway::Hub;
use switchboard_gateway::engine::{CallerContext, EngineError};
use switchboard_proto::codes::ClientError;
use tokio::sync::Notify;

/// The RPC methods handled here.
pub const METHODS: &[&str] = &["rtc.call", "rtc.accept", "rtc.decline", "rtc.cancel"];

/// Largest `data` a caller may attach to a call.
pub const MAX_DATA_BYTES: usize = 16 * 1024;

/// Ringing state of this node.
pub struct Ringing {
    ringer: Mutex<Ringer>,
    hub: Arc<Hub>,
    log: Arc<CallLog>,
    calls: OnceLock<Arc<Calls>>,
    router: OnceLock<Arc<crate::rtcroute::MediaRouter>>,
    /// Cluster mode: connections on other nodes taking part in this node's
    /// calls (client → its node), for pushes.
    remote: Mutex<std::collections::HashMap<String, (String, i64)>>,
    wake: Notify,
}

/// Separates a call id from the node that rings it (cluster mode).
const NODE_SEP: char = '~';

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallReq {
    user: String,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallIdReq {
    call: String,
}

fn parse<T: for<'de> Deserialize<'de>>(data: &Bytes) -> Result<T, EngineError> {
    serde_json::from_slice(data)
        .map_err(|e| EngineError::new(ClientError::BAD_REQUEST, format!("rtc request: {e}")))
}

fn ring_error(e: RingError) -> EngineError {
    let code = match e {
        RingError::Anonymous | RingError::NotCallee | RingError::NotCaller => {
            ClientError::PERMISSION_DENIED
        }
        RingError::TooManyCalls => ClientError::LIMIT_EXCEEDED,
        RingError::BadRequest(_)
        | RingError::UnknownCall
        | RingError::Ended(_)
        | RingError::Duplicate => ClientError::BAD_REQUEST,
    };
    EngineError::new(code, e.to_string())
}

impl Ringing {
    /// Ringing for `ring_timeout`; starts the timer task (it ends when the
    /// returned handle is dropped).
    pub fn start(hub: Arc<Hub>, log: Arc<CallLog>, ring_timeout: Duration) -> Arc<Self> {
        let ringing = Arc::new(Self {
            ringer: Mutex::new(Ringer::new(ring_timeout.as_millis() as i64)),
            hub,
            log,
            calls: OnceLock::new(),
            router: OnceLock::new(),
            remote: Mutex::new(std::collections::HashMap::new()),
            wake: Notify::new(),
        });
        tokio::spawn(timer(Arc::downgrade(&ringing)));
        ringing
    }

    /// Room signaling, so accepted calls can open their rooms.
    pub fn attach_calls(&self, calls: Arc<Calls>) {
        let _ = self.calls.set(calls);
    }

    /// Cluster mode: accepted calls' rooms are opened on their media node.
    pub fn attach_router(self: &Arc<Self>, router: Arc<crate::rtcroute::MediaRouter>) {
        router.set_ringing(Arc::downgrade(self));
        let _ = self.router.set(router);
    }

    /// The node ringing `call` when it is another node (cluster mode).
    fn owner_elsewhere(&self, method: &str, data: &Bytes) -> Option<String> {
        let router = self.router.get()?;
        if method == "rtc.call" {
            return None;
        }
        let req: CallIdReq = serde_json::from_slice(data).ok()?;
        let (_, node) = req.call.rsplit_once(NODE_SEP)?;
        (node != router.node_id()).then(|| node.to_string())
    }

    /// Carries out the ringer's outputs; returns the rooms to open through
    /// the media router (cluster mode), which the caller awaits.
    fn carry_out(&self, out: Vec<RingOutput>) -> Vec<(String, Vec<String>)> {
        let mut open = Vec::new();
        for o in out {
            match o {
                RingOutput::Push { client, message } => {
                    let data = Bytes::from(message.to_string());
                    let node = self.remote.lock().get(&client).map(|(n, _)| n.clone());
                    match (node, self.router.get()) {
                        (Some(node), Some(router)) => router.push_to(&node, &client, data),
                        _ => {
                            self.hub.send_message(&client, data);
                        }
                    }
                }
                RingOutput::Record(ev) => self.log.record(ev),
                RingOutput::AllowRoom { room, users } => {
                    match (self.router.get(), self.calls.get()) {
                        (Some(_), _) => open.push((room, users)),
                        (None, Some(calls)) => calls.allow_call_room(&room, users),
                        (None, None) => {
                            tracing::warn!(room, "call accepted but media is disabled")
                        }
                    }
                }
            }
        }
        open
    }

    async fn open_rooms(&self, open: Vec<(String, Vec<String>)>) {
        if let Some(router) = self.router.get() {
            for (room, users) in open {
                router.allow_call_room(&room, users).await;
            }
        }
    }

    /// Runs one of [`METHODS`] for a client connected here; in cluster mode
    /// a call rung by another node is answered there.
    pub async fn rpc(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        if let Some(node) = self.owner_elsewhere(method, &data)
            && let Some(router) = self.router.get()
        {
            return router.forward_ring(&node, caller, method, data).await;
        }
        self.run(caller, method, data).await
    }

    /// Runs a method forwarded by gateway node `origin` for one of its
    /// clients (cluster mode).
    pub async fn rpc_from(
        &self,
        origin: &str,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        self.remote.lock().insert(
            caller.client.clone(),
            (origin.to_string(), crate::node::now_ms()),
        );
        self.run(caller, method, data).await
    }

    async fn run(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        let now = crate::node::now_ms();
        let me = Party::new(caller.user.clone(), caller.client.clone());
        let (reply, out) = match method {
            "rtc.call" => {
                let req: CallReq = parse(&data)?;
                if let Some(d) = &req.data {
                    if !d.is_object() {
                        return Err(EngineError::new(
                            ClientError::BAD_REQUEST,
                            "data must be a JSON object",
                        ));
                    }
                    if d.to_string().len() > MAX_DATA_BYTES {
                        return Err(EngineError::new(
                            ClientError::LIMIT_EXCEEDED,
                            "call data too large",
                        ));
                    }
                }
                let mut id = format!("call-{}", uuid::Uuid::new_v4().simple());
                let conns: Vec<String> = if caller.user.is_empty() {
                    Vec::new()
                } else {
                    let mut c: Vec<String> = self
                        .hub
                        .user_conns(&req.user, "")
                        .iter()
                        .map(|c| c.client().to_string())
                        .collect();
                    if let Some(router) = self.router.get() {
                        // The callee's connections on other nodes ring too;
                        // their answers come back here (the id names us).
                        id = format!("{id}{NODE_SEP}{}", router.node_id());
                        let elsewhere = router.user_clients(&req.user).await;
                        let mut remote = self.remote.lock();
                        // Connections on other nodes are not told to us when
                        // they go: forget them after an hour.
                        remote.retain(|_, (_, at)| now - *at < 3_600_000);
                        for (node, client) in elsewhere {
                            remote.insert(client.clone(), (node, now));
                            c.push(client);
                        }
                    }
                    c.sort();
                    c
                };
                let mut ringer = self.ringer.lock();
                let (call, out) = ringer
                    .handle_call(now, &id, me, &req.user, conns, req.data)
                    .map_err(ring_error)?;
                (json!({"call": call.id, "room": call.room()}), out)
            }
            "rtc.accept" => {
                let req: CallIdReq = parse(&data)?;
                let mut ringer = self.ringer.lock();
                let (call, out) = ringer
                    .handle_accept(now, &req.call, &me)
                    .map_err(ring_error)?;
                (json!({"call": call.id, "room": call.room()}), out)
            }
            "rtc.decline" => {
                let req: CallIdReq = parse(&data)?;
                let out = self
                    .ringer
                    .lock()
                    .handle_decline(now, &req.call, &me)
                    .map_err(ring_error)?;
                (json!({}), out)
            }
            "rtc.cancel" => {
                let req: CallIdReq = parse(&data)?;
                let out = self
                    .ringer
                    .lock()
                    .handle_cancel(now, &req.call, &me)
                    .map_err(ring_error)?;
                (json!({}), out)
            }
            _ => {
                return Err(EngineError::new(
                    ClientError::METHOD_NOT_FOUND,
                    format!("rpc method {method:?}"),
                ));
            }
        };
        self.wake.notify_one();
        let open = self.carry_out(out);
        self.open_rooms(open).await;
        Ok(Bytes::from(reply.to_string()))
    }

    /// A connection went away: its calls are cancelled, it stops ringing.
    pub fn disconnected(&self, client: &str) {
        self.remote.lock().remove(client);
        let out = self
            .ringer
            .lock()
            .handle_disconnect(crate::node::now_ms(), client);
        // Only an accept opens a room.
        let _ = self.carry_out(out);
    }
}

/// Fires ring timeouts; sleeps until the next deadline or a change.
async fn timer(ringing: Weak<Ringing>) {
    loop {
        let (deadline, notified) = {
            let Some(r) = ringing.upgrade() else { return };
            let out = r.ringer.lock().handle_timeout(crate::node::now_ms());
            let _ = r.carry_out(out);
            let next = r.ringer.lock().poll_timeout();
            // Waiting on the Notify without holding the Arc: a wake-up
            // registered after this point is not lost (`notify_one` stores
            // a permit).
            let wait = next.map(|t| (t - crate::node::now_ms()).max(0) as u64);
            (wait, Arc::downgrade(&r))
        };
        let sleep = tokio::time::sleep(Duration::from_millis(deadline.unwrap_or(1_000).min(1_000)));
        let Some(r) = notified.upgrade() else { return };
        let wake = async move { r.wake.notified().await };
        tokio::select! {
            _ = sleep => {}
            _ = wake => {}
        }
    }
}
