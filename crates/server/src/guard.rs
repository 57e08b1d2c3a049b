//! Circuit breakers around the engines a node depends on.
//!
//! * [`StoreGuard`]: every store call of the node (publishes, history,
//!   recovery, the auth state, the cluster's gap fills) goes through one
//!   breaker. While the store is unreachable, calls fail fast with
//!   [`STORE_UNAVAILABLE`] instead of each waiting for a timeout.
//! * [`GuardedBus`]: the cluster bus (NATS) with local delivery when it is
//!   unreachable. A publish that cannot reach NATS (disconnected, or the
//!   bus breaker is open after a stall) is delivered to this node's own
//!   handler, so local subscribers keep receiving; durable publications are
//!   in the store already and reach the other nodes when the bus returns
//!   (they re-read their channels from the store, and this node re-sends the
//!   last local-only publication of each channel so that a node which
//!   caught up earlier sees the gap). Ephemeral publications and join/leave
//!   messages of the outage are lost for the other nodes.
//!
//! See docs/CLUSTER.md (Faults).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;
use switchboard_bus::{Bus, BusError, BusHandler, BusMessage, NatsBus};
use switchboard_core::Publication;
use switchboard_core::breaker::{Breaker, BreakerConfig};
use switchboard_gateway::engine::EngineError;
use switchboard_proto::codes::ClientError;
use switchboard_store::StoreError;

use crate::node::now_ms;

/// The error of a call that needs the store while it is unavailable (the
/// circuit breaker is open, or the call failed to reach it): an internal
/// error (code 100, temporary: retry later) saying what is wrong. Nothing
/// was stored; the publication was not acknowledged.
pub const STORE_UNAVAILABLE: ClientError = ClientError {
    code: 100,
    message: "store unavailable",
    temporary: true,
};

fn store_error(e: StoreError) -> EngineError {
    metrics::counter!("switchboard_store_errors_total").increment(1);
    match e {
        StoreError::Unavailable(_) | StoreError::Closed => {
            EngineError::new(STORE_UNAVAILABLE, format!("store: {e}"))
        }
        e => EngineError::new(ClientError::INTERNAL, format!("store: {e}")),
    }
}

/// Whether a store error says the store is unreachable (counts against the
/// circuit breaker); other errors come from a store that answered.
fn is_outage(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_) | StoreError::Closed)
}

/// The circuit breaker shared by every store call of a node.
pub struct StoreGuard {
    breaker: Mutex<Breaker>,
}

impl Default for StoreGuard {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl StoreGuard {
    /// A closed breaker with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        metrics::gauge!("switchboard_store_circuit_open").set(0.0);
        Self {
            breaker: Mutex::new(Breaker::new(config)),
        }
    }

    /// Whether store calls fail fast right now.
    pub fn is_open(&self) -> bool {
        self.breaker.lock().is_open()
    }

    /// Runs one store call through the breaker: fails fast with
    /// [`STORE_UNAVAILABLE`] while it is open, and reports the outcome.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, EngineError> {
        let was_open = {
            let mut b = self.breaker.lock();
            let was_open = b.is_open();
            if let Err(r) = b.allow(now_ms()) {
                metrics::counter!("switchboard_store_rejected_total").increment(1);
                return Err(EngineError::new(
                    STORE_UNAVAILABLE,
                    format!("store circuit open; next probe in {} ms", r.retry_in_ms),
                ));
            }
            was_open
        };
        let started = Instant::now();
        let result = call.await;
        let open = {
            let mut b = self.breaker.lock();
            match &result {
                Err(e) if is_outage(e) => {
                    b.on_failure(now_ms(), started.elapsed().as_millis() as u64)
                }
                _ => b.on_success(now_ms()),
            }
            // Under the lock, so that concurrent calls leave the last state.
            let open = b.is_open();
            metrics::gauge!("switchboard_store_circuit_open").set(if open { 1.0 } else { 0.0 });
            open
        };
        if open != was_open {
            if open {
                tracing::warn!("store unavailable: circuit breaker open, store calls fail fast");
            } else {
                tracing::info!("store available again: circuit breaker closed");
            }
        }
        result.map_err(store_error)
    }
}

/// The cluster bus with a circuit breaker and local delivery while NATS is
/// unreachable (see the module docs). Publishing never fails for lack of
/// NATS: the message reaches this node's handler either way.
pub struct GuardedBus {
    nats: NatsBus,
    config: BreakerConfig,
    breaker: Mutex<Breaker>,
    handler: OnceLock<Arc<dyn BusHandler>>,
    /// Per channel, the last durable publication delivered only locally:
    /// re-sent when the bus is back, so that other nodes see the gap.
    pending: Mutex<HashMap<Arc<str>, Arc<Publication>>>,
}

impl GuardedBus {
    /// Wraps `nats`; the breaker opens after `config.failure_threshold`
    /// failed publishes (or one that stalled for `slow_failure_ms`) and
    /// closes when a probe succeeds or NATS reconnects.
    pub fn new(nats: NatsBus, config: BreakerConfig) -> Arc<Self> {
        let me = Arc::new(Self {
            nats: nats.clone(),
            config,
            breaker: Mutex::new(Breaker::new(config)),
            handler: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Self::follow_reconnects(Arc::downgrade(&me), nats.health()));
        me
    }

    /// Whether publishes skip NATS right now (breaker open).
    pub fn circuit_open(&self) -> bool {
        self.breaker.lock().is_open()
    }

    fn set_open_gauge(open: bool) {
        metrics::gauge!("switchboard_bus_circuit_open").set(if open { 1.0 } else { 0.0 });
    }

    /// On every reconnect: close the breaker (NATS is back) and re-send the
    /// pending local-only publications.
    async fn follow_reconnects(me: Weak<Self>, mut health: tokio::sync::watch::Receiver<bool>) {
        let mut was_up = *health.borrow_and_update();
        metrics::gauge!("switchboard_bus_connected").set(if was_up { 1.0 } else { 0.0 });
        while health.changed().await.is_ok() {
            let up = *health.borrow_and_update();
            metrics::gauge!("switchboard_bus_connected").set(if up { 1.0 } else { 0.0 });
            if !up && was_up {
                tracing::warn!(
                    "bus disconnected: publications are delivered locally only until it returns"
                );
            }
            if up && !was_up {
                let Some(this) = me.upgrade() else { return };
                let reopened = {
                    let mut b = this.breaker.lock();
                    let open = b.is_open();
                    *b = Breaker::new(this.config);
                    open
                };
                if reopened {
                    Self::set_open_gauge(false);
                }
                this.flush_pending().await;
            }
            was_up = up;
        }
    }

    /// Re-sends the last local-only durable publication of each channel.
    async fn flush_pending(&self) {
        let pending: Vec<_> = self.pending.lock().drain().collect();
        if pending.is_empty() {
            return;
        }
        let n = pending.len();
        for (channel, publication) in pending {
            let msg = BusMessage::Publication {
                channel: channel.clone(),
                publication: publication.clone(),
            };
            if let Err(e) = self.nats.publish(msg).await {
                tracing::debug!(channel = %channel, error = %e, "re-sending a local-only publication");
                self.remember(channel, publication);
            }
        }
        tracing::info!(
            channels = n,
            "bus back: re-sent the last local-only publication of each channel"
        );
    }

    fn remember(&self, channel: Arc<str>, publication: Arc<Publication>) {
        let mut pending = self.pending.lock();
        let slot = pending
            .entry(channel)
            .or_insert_with(|| publication.clone());
        if slot.offset < publication.offset {
            *slot = publication;
        }
    }

    /// Delivers `msg` to this node only (NATS unreachable).
    fn deliver_locally(&self, msg: BusMessage) {
        metrics::counter!("switchboard_bus_local_only_total").increment(1);
        if let BusMessage::Publication {
            channel,
            publication,
        } = &msg
            && publication.offset > 0
        {
            self.remember(channel.clone(), publication.clone());
        }
        if let Some(h) = self.handler.get() {
            h.handle(msg);
        }
    }
}

#[async_trait::async_trait]
impl Bus for GuardedBus {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
        let allowed = self.breaker.lock().allow(now_ms()).is_ok();
        if !allowed {
            self.deliver_locally(msg);
            return Ok(());
        }
        let started = Instant::now();
        // The message is cloned cheaply (shared publication) in case it has
        // to be delivered locally after all.
        let result = self.nats.publish(msg.clone()).await;
        let (was_open, open) = {
            let mut b = self.breaker.lock();
            let was_open = b.is_open();
            match &result {
                Err(BusError::Unavailable(_)) | Err(BusError::Timeout) => {
                    b.on_failure(now_ms(), started.elapsed().as_millis() as u64)
                }
                _ => b.on_success(now_ms()),
            }
            let open = b.is_open();
            Self::set_open_gauge(open);
            (was_open, open)
        };
        if was_open != open {
            if open {
                tracing::warn!(
                    "bus unavailable: circuit breaker open, publishes are delivered locally only"
                );
            } else {
                tracing::info!("bus available again: circuit breaker closed");
                self.flush_pending().await;
            }
        }
        match result {
            Ok(()) => Ok(()),
            Err(BusError::Unavailable(_)) | Err(BusError::Timeout) => {
                self.deliver_locally(msg);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn set_handler(&self, handler: Arc<dyn BusHandler>) {
        let _ = self.handler.set(handler.clone());
        self.nats.set_handler(handler);
    }

    async fn subscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        self.nats.subscribe_channel(channel).await
    }

    async fn unsubscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        self.nats.unsubscribe_channel(channel).await
    }

    fn is_healthy(&self) -> bool {
        self.nats.is_healthy()
    }
}
