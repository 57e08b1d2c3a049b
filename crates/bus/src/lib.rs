//! Node-to-node fan-out for Switchboard.
//!
//! Every publication, join and leave goes through a [`Bus`] after the store
//! has accepted it, and the bus hands it to every node's [`BusHandler`]
//! (its gateway hub). Embedded mode uses [`InProcessBus`], which calls the
//! local handler directly; cluster mode uses [`NatsBus`] behind the same
//! trait.
//!
//! # The contract a node drives
//!
//! 1. Build the bus, then [`Bus::set_handler`] once with the hub.
//! 2. When a channel gets its **first local subscriber**, await
//!    [`Bus::subscribe_channel`] *before* reading its history; when it
//!    loses its **last** one, call [`Bus::unsubscribe_channel`]. Calls are
//!    reference counted, so they only need to be balanced (calling them per
//!    connection subscription is also correct, just more calls). In-process
//!    they are no-ops.
//! 3. [`Bus::publish`] delivers to every node with subscribers of the
//!    channel, **this node included**, in publish order per publishing node
//!    and channel. Publications of one channel published by *different*
//!    nodes may interleave in any order, so a durable channel's subscribers
//!    must order by offset (hold a publication whose offset is ahead of the
//!    next expected one until the gap fills, or fetch the gap from the
//!    store).
//! 4. [`Bus::publish`] fails fast with [`BusError::Unavailable`] while the
//!    bus is down ([`Bus::is_healthy`] is false); the node then delivers to
//!    its local subscribers itself. Nothing published by others meanwhile
//!    is replayed: on reconnect ([`NatsBus::health`]) the node resynchronises
//!    durable channels from the store.
//!
//! Cluster extras on [`NatsBus`]: node-directed [`NatsBus::request`] with a
//! [`RequestHandler`], [`NatsBus::broadcast`] to every node, and the
//! [`NodeRegistry`] (TTL heartbeats and compare-and-set placement on
//! JetStream KV).
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchboard_bus::{Bus, BusHandler, BusMessage, InProcessBus};
//! struct Printer;
//! impl BusHandler for Printer {
//!     fn handle(&self, msg: BusMessage) { println!("{}", msg.channel()); }
//! }
//! let bus = InProcessBus::default();
//! bus.set_handler(Arc::new(Printer));
//! ```
//!
//! Cluster mode:
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use switchboard_bus::*;
//! # struct Hub;
//! # impl BusHandler for Hub { fn handle(&self, _: BusMessage) {} }
//! # async fn demo() -> Result<(), BusError> {
//! let bus = NatsBus::connect(NatsConfig {
//!     urls: vec!["nats://10.0.0.2:4222".into(), "nats://10.0.0.3:4222".into()],
//!     auth: NatsAuth::UserPassword { user: "sb".into(), password: "secret".into() },
//!     node_id: "gw-1".into(),
//!     retry_initial_connect: true,
//!     ..NatsConfig::default()
//! })
//! .await?;
//! bus.set_handler(Arc::new(Hub));
//! bus.subscribe_channel("chat:lobby").await?; // first local subscriber
//!
//! let registry = NodeRegistry::open(&bus, RegistryConfig::for_bus(&bus)).await?;
//! let me = registry
//!     .register(NodeInfo {
//!         id: bus.node_id().into(),
//!         roles: vec!["gateway".into(), "media".into()],
//!         address: "http://10.0.0.5:8000".into(),
//!         ..NodeInfo::default()
//!     })
//!     .await?;
//! me.set_load(0.25);
//! let live = registry.list().await?;
//! let room = registry.place("room:42", "gw-1".into(), Expect::Absent).await?;
//! println!("{} nodes; room:42 on {:?} (won: {})", live.len(), room.value, room.won);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod nats;
mod registry;
mod subject;

use std::sync::{Arc, OnceLock};
use switchboard_core::{Publication, PublisherInfo};

pub use nats::{NatsAuth, NatsBus, NatsConfig, RequestHandler};
pub use registry::{Expect, NodeInfo, NodeRegistry, Placement, Registration, RegistryConfig};

/// Something that travels between nodes.
#[derive(Clone, Debug)]
pub enum BusMessage {
    /// A publication for subscribers of a channel.
    Publication {
        /// The channel.
        channel: Arc<str>,
        /// The publication, with its offset when the channel is durable.
        publication: Arc<Publication>,
    },
    /// Someone subscribed.
    Join {
        /// The channel.
        channel: Arc<str>,
        /// Who joined.
        info: PublisherInfo,
    },
    /// Someone unsubscribed or disconnected.
    Leave {
        /// The channel.
        channel: Arc<str>,
        /// Who left.
        info: PublisherInfo,
    },
}

impl BusMessage {
    /// The channel the message is about.
    pub fn channel(&self) -> &str {
        match self {
            Self::Publication { channel, .. }
            | Self::Join { channel, .. }
            | Self::Leave { channel, .. } => channel,
        }
    }
}

/// Receives every message the bus delivers to this node.
pub trait BusHandler: Send + Sync + 'static {
    /// Handles one message; must not block (queue work instead).
    fn handle(&self, msg: BusMessage);
}

/// Why the bus refused a message or a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus is not connected (or the engine failed); local delivery may
    /// still work and the call may be retried later.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A request got no answer in time.
    #[error("bus request timed out")]
    Timeout,
    /// No node with this id is connected to the bus.
    #[error("no responders for node {0}")]
    NoResponders(String),
    /// The remote node's handler answered with an error.
    #[error("remote error: {0}")]
    Remote(String),
    /// Never going to work as given: bad configuration, payload over the
    /// server's `max_payload`, invalid name.
    #[error("bus rejected: {0}")]
    Rejected(String),
    /// A compare-and-set lost and the winner could not be read back.
    #[error("conflict: {0}")]
    Conflict(String),
}

/// Fan-out between nodes.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends a message to every node's handler, including this node's.
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError>;
    /// Installs this node's handler; messages before that are dropped.
    fn set_handler(&self, handler: Arc<dyn BusHandler>);

    /// Declares local interest in `channel`: from the moment this returns,
    /// messages published on it by any node reach this node's handler.
    /// Reference counted; balance with [`Bus::unsubscribe_channel`]. While
    /// the bus is disconnected the interest is recorded and takes effect on
    /// reconnect (no error). The default (in-process) does nothing.
    async fn subscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        let _ = channel;
        Ok(())
    }

    /// Undoes one [`Bus::subscribe_channel`]; the last one stops delivery of
    /// `channel` to this node. The default does nothing.
    async fn unsubscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        let _ = channel;
        Ok(())
    }

    /// Whether remote delivery currently works (always true in-process).
    fn is_healthy(&self) -> bool {
        true
    }
}

/// The bus of a single-node server: delivers straight to the local handler.
#[derive(Default)]
pub struct InProcessBus {
    handler: OnceLock<Arc<dyn BusHandler>>,
}

#[async_trait::async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
        if let Some(h) = self.handler.get() {
            h.handle(msg);
        }
        Ok(())
    }

    fn set_handler(&self, handler: Arc<dyn BusHandler>) {
        // A second handler is a programming error in the composition root;
        // keep the first so delivery stays consistent.
        let _ = self.handler.set(handler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);
    impl BusHandler for Collect {
        fn handle(&self, msg: BusMessage) {
            self.0.lock().unwrap().push(msg.channel().to_string());
        }
    }

    #[tokio::test]
    async fn in_process_bus_delivers_in_order() {
        let bus = InProcessBus::default();
        let sink = Arc::new(Collect::default());
        bus.set_handler(sink.clone());
        for ch in ["a", "b", "c"] {
            bus.publish(BusMessage::Join {
                channel: ch.into(),
                info: PublisherInfo::default(),
            })
            .await
            .unwrap();
        }
        assert_eq!(*sink.0.lock().unwrap(), vec!["a", "b", "c"]);
    }
}
