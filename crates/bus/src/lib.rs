//! Node-to-node fan-out for Switchboard.
//!
//! Every publication, join and leave goes through a [`Bus`] after the store
//! has accepted it, and the bus hands it to every node's [`BusHandler`]
//! (its gateway hub). Embedded mode uses [`InProcessBus`], which calls the
//! local handler directly; cluster mode puts NATS behind the same trait.
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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::{Arc, OnceLock};
use switchboard_core::{Publication, PublisherInfo};

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

/// Why the bus refused a message.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus is not connected; local delivery may still work.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Fan-out between nodes.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends a message to every node's handler, including this node's.
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError>;
    /// Installs this node's handler; messages before that are dropped.
    fn set_handler(&self, handler: Arc<dyn BusHandler>);
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
