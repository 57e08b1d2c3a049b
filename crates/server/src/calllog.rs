//! The call log: room and call events ([`CallEvent`]) recorded in the event
//! log, folded into per-call summaries, and delivered to webhooks.
//!
//! Signaling calls [`CallLog::record`], which never blocks; a background task
//! appends to the store's [`switchboard_core::callevent::STREAM`] stream.

use std::sync::Arc;
use switchboard_core::callevent::{CallEvent, STREAM};
use switchboard_store::DynStore;
use tokio::sync::mpsc;

/// Handle for recording room and call events.
pub struct CallLog {
    tx: mpsc::UnboundedSender<CallEvent>,
}

impl CallLog {
    /// Starts the writer task appending events to `store`.
    pub fn start(store: DynStore) -> Arc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<CallEvent>();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let data = match serde_json::to_value(&ev) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if let Err(e) = store
                    .append_event(STREAM, ev.kind(), &data, crate::node::now_ms())
                    .await
                {
                    tracing::warn!(error = %e, kind = ev.kind(), "recording call event");
                }
            }
        });
        Arc::new(Self { tx })
    }

    /// Records an event (asynchronously; never blocks the caller).
    pub fn record(&self, ev: CallEvent) {
        let _ = self.tx.send(ev);
    }
}
