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
    wake: Notify,
}

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
            wake: Notify::new(),
        });
        tokio::spawn(timer(Arc::downgrade(&ringing)));
        ringing
    }

    /// Room signaling, so accepted calls can open their rooms.
    pub fn attach_calls(&self, calls: Arc<Calls>) {
        let _ = self.calls.set(calls);
    }

    fn carry_out(&self, out: Vec<RingOutput>) {
        for o in out {
            match o {
                RingOutput::Push { client, message } => {
                    self.hub
                        .send_message(&client, Bytes::from(message.to_string()));
                }
                RingOutput::Record(ev) => self.log.record(ev),
                RingOutput::AllowRoom { room, users } => match self.calls.get() {
                    Some(calls) => calls.allow_call_room(&room, users),
                    None => tracing::warn!(room, "call accepted but media is disabled"),
                },
            }
        }
    }

    /// Runs one of [`METHODS`].
    pub async fn rpc(
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
                let conns: Vec<String> = if caller.user.is_empty() {
                    Vec::new()
                } else {
                    let mut c: Vec<String> = self
                        .hub
                        .user_conns(&req.user, "")
                        .iter()
                        .map(|c| c.client().to_string())
                        .collect();
                    c.sort();
                    c
                };
                let id = format!("call-{}", uuid::Uuid::new_v4().simple());
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
        self.carry_out(out);
        Ok(Bytes::from(reply.to_string()))
    }

    /// A connection went away: its calls are cancelled, it stops ringing.
    pub fn disconnected(&self, client: &str) {
        let out = self
            .ringer
            .lock()
            .handle_disconnect(crate::node::now_ms(), client);
        self.carry_out(out);
    }
}

/// Fires ring timeouts; sleeps until the next deadline or a change.
async fn timer(ringing: Weak<Ringing>) {
    loop {
        let (deadline, notified) = {
            let Some(r) = ringing.upgrade() else { return };
            let out = r.ringer.lock().handle_timeout(crate::node::now_ms());
            r.carry_out(out);
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
