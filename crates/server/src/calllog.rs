//! The call log: room and call events ([`CallEvent`]) recorded in the event
//! log, folded into per-call summaries, and delivered to webhooks.
//!
//! Signaling calls [`CallLog::record`], which never blocks; a background task
//! appends to the store's [`switchboard_core::callevent::STREAM`] stream and
//! hands the event to the [`Webhooks`]. The projection
//! ([`CallLogProjection`]) is only ever fed from the stream, in offset order,
//! so it is the same after a restart (it is rebuilt by replay in
//! [`CallLog::open`]) and includes events other nodes appended. The server
//! API methods `call_list` and `call_get` read it ([`CallLog::api`]).

use crate::webhooks::Webhooks;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::callevent::{CallEvent, STREAM};
use switchboard_core::calllog::{CallLogProjection, ListFilter};
use switchboard_proto::api::ApiError;
use switchboard_store::DynStore;
use tokio::sync::{mpsc, oneshot};

/// Server API methods answered by [`CallLog::api`].
pub const API_METHODS: &[&str] = &["call_list", "call_get"];

/// Calls kept in memory by the projection (older ended calls are dropped
/// from it; the event log keeps them).
pub const MAX_CALLS: usize = 100_000;

/// Default and largest `limit` of `call_list`.
pub const LIST_LIMIT: (usize, usize) = (100, 1000);

const READ_PAGE: usize = 1000;

enum Msg {
    Event(CallEvent),
    Flush(oneshot::Sender<()>),
}

struct Folded {
    projection: CallLogProjection,
    /// The last stream offset folded in.
    applied: u64,
}

/// Handle for recording room and call events and reading call summaries.
pub struct CallLog {
    tx: mpsc::UnboundedSender<Msg>,
    store: DynStore,
    folded: Mutex<Folded>,
    /// One reader of the stream at a time (the fold must see each offset once).
    reading: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListReq {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetReq {
    call: String,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BAD_REQUEST.with_message(format!("malformed request: {e}")))
}

impl CallLog {
    /// Replays the stored call events into the projection, then starts the
    /// writer task appending new events and dispatching them to `webhooks`.
    pub async fn open(store: DynStore, webhooks: Arc<Webhooks>) -> anyhow::Result<Arc<Self>> {
        let (tx, rx) = mpsc::unbounded_channel::<Msg>();
        let log = Arc::new(Self {
            tx,
            store,
            folded: Mutex::new(Folded {
                projection: CallLogProjection::new(MAX_CALLS),
                applied: 0,
            }),
            reading: tokio::sync::Mutex::new(()),
        });
        log.catch_up()
            .await
            .map_err(|e| anyhow::anyhow!("replaying the call log: {e}"))?;
        tokio::spawn(writer(
            Arc::downgrade(&log),
            log.store.clone(),
            webhooks,
            rx,
        ));
        Ok(log)
    }

    /// Records an event (asynchronously; never blocks the caller).
    pub fn record(&self, ev: CallEvent) {
        let _ = self.tx.send(Msg::Event(ev));
    }

    /// Waits until every event recorded before this call is in the store
    /// and folded into the projection.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Err(e) = self.catch_up().await {
            tracing::warn!(error = %e, "reading the call log");
        }
    }

    /// Folds events appended to the stream since the last read (by this
    /// node or others).
    pub async fn catch_up(&self) -> Result<(), switchboard_store::StoreError> {
        let _one = self.reading.lock().await;
        loop {
            let after = self.folded.lock().applied;
            let events = self.store.read_events(STREAM, after, READ_PAGE).await?;
            let n = events.len();
            let mut f = self.folded.lock();
            for stored in events {
                match serde_json::from_value::<CallEvent>(stored.payload) {
                    Ok(ev) => f.projection.apply(&ev),
                    Err(e) => {
                        tracing::warn!(offset = stored.offset, error = %e, "skipping undecodable call event")
                    }
                }
                f.applied = stored.offset;
            }
            if n < READ_PAGE {
                return Ok(());
            }
        }
    }

    /// Runs `call_list` / `call_get`; `None` for other methods.
    pub async fn api(&self, method: &str, body: &[u8]) -> Option<Result<Value, ApiError>> {
        if !API_METHODS.contains(&method) {
            return None;
        }
        Some(self.run_api(method, body).await)
    }

    async fn run_api(&self, method: &str, body: &[u8]) -> Result<Value, ApiError> {
        let now = crate::node::now_ms();
        match method {
            "call_list" => {
                let req: ListReq = parse(body)?;
                let limit = req.limit.unwrap_or(LIST_LIMIT.0);
                if limit == 0 || limit > LIST_LIMIT.1 {
                    return Err(ApiError::BAD_REQUEST
                        .with_message(format!("limit must be 1..={}", LIST_LIMIT.1)));
                }
                let filter = ListFilter {
                    user: req.user.filter(|u| !u.is_empty()),
                    room: req.room.filter(|r| !r.is_empty()),
                    limit: Some(limit),
                };
                self.flush().await;
                let calls = self.folded.lock().projection.list(&filter, now);
                Ok(json!({ "calls": calls }))
            }
            "call_get" => {
                let req: GetReq = parse(body)?;
                if req.call.is_empty() {
                    return Err(ApiError::BAD_REQUEST.with_message("call required"));
                }
                self.flush().await;
                match self.folded.lock().projection.get(&req.call, now) {
                    Some(call) => Ok(json!({ "call": call })),
                    None => Err(ApiError::new(ApiError::METHOD_NOT_FOUND.code, "not found")
                        .with_message("call not found")),
                }
            }
            _ => Err(ApiError::METHOD_NOT_FOUND),
        }
    }
}

/// Appends events in order (retrying a store outage briefly), dispatches
/// each to the webhooks, and folds the stream once per batch of queued
/// events. Ends when the log is dropped.
async fn writer(
    log: std::sync::Weak<CallLog>,
    store: DynStore,
    webhooks: Arc<Webhooks>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut flushes = Vec::new();
        let mut appended = false;
        for msg in batch.drain(..) {
            match msg {
                Msg::Event(ev) => appended |= append(&store, &webhooks, ev).await,
                Msg::Flush(done) => flushes.push(done),
            }
        }
        let Some(log) = log.upgrade() else { return };
        if appended && let Err(e) = log.catch_up().await {
            tracing::warn!(error = %e, "reading the call log");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Appends one event and hands it to the webhooks; false if the store
/// refused it three times (the event is then lost, and counted).
async fn append(store: &DynStore, webhooks: &Webhooks, ev: CallEvent) -> bool {
    let Ok(data) = serde_json::to_value(&ev) else {
        return false;
    };
    let mut appended = false;
    for attempt in 0..3u32 {
        match store
            .append_event(STREAM, ev.kind(), &data, crate::node::now_ms())
            .await
        {
            Ok(_) => {
                appended = true;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = ev.kind(), attempt, "recording call event");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    if !appended {
        metrics::counter!("switchboard_call_events_lost_total").increment(1);
    }
    if !webhooks.is_empty() {
        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        webhooks.dispatch(&id, &ev);
    }
    appended
}
