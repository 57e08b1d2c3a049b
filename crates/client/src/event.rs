//! [`Event`]s (server pushes and the end of the connection) and the
//! [`Events`] receiver.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_proto::client::{ClientInfo, Publication, Push, Subscribe};
use tokio::sync::mpsc;

use crate::ClientError;
use crate::conn::Shared;

/// Something the server pushed, or the end of the connection.
///
/// Large bodies are boxed to keep the event queue small.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A publication in `channel`.
    Publication {
        /// Channel.
        channel: String,
        /// The publication.
        publication: Box<Publication>,
    },
    /// A client joined `channel` (subscriptions with `join_leave`).
    Join {
        /// Channel.
        channel: String,
        /// Who joined.
        info: Box<ClientInfo>,
    },
    /// A client left `channel`.
    Leave {
        /// Channel.
        channel: String,
        /// Who left.
        info: Box<ClientInfo>,
    },
    /// The server unsubscribed this client from `channel`.
    Unsubscribed {
        /// Channel.
        channel: String,
        /// Unsubscribe code (see `switchboard_proto::codes::Unsubscribe`).
        code: u32,
        /// Reason.
        reason: String,
    },
    /// The server subscribed this client to `channel` (server-side subscription).
    Subscribed {
        /// Channel.
        channel: String,
        /// Subscription details.
        subscribe: Box<Subscribe>,
    },
    /// An asynchronous message to this connection (server API `send`, RPC
    /// signaling pushes, …).
    Message {
        /// Payload.
        data: Bytes,
    },
    /// A `disconnect` push (the server normally closes the WebSocket right
    /// after, which yields [`Event::Disconnected`]).
    ServerDisconnect {
        /// Disconnect code.
        code: u32,
        /// Reason.
        reason: String,
    },
    /// Any other push (`connect`, `refresh`, or an empty push).
    Other(Box<Push>),
    /// The connection ended; always the last event. `code`/`reason` come from
    /// the server's close frame; 1006 (abnormal closure) with the error text
    /// as reason when the connection ended without one.
    Disconnected {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

impl Event {
    /// Converts a push into an event.
    pub fn from_push(push: Push) -> Event {
        let Push {
            id,
            channel,
            publication,
            join,
            leave,
            unsubscribe,
            message,
            subscribe,
            connect,
            disconnect,
            refresh,
        } = push;
        if let Some(publication) = publication {
            return Event::Publication {
                channel,
                publication: Box::new(publication),
            };
        }
        if let Some(join) = join {
            return Event::Join {
                channel,
                info: Box::new(join.info.unwrap_or_default()),
            };
        }
        if let Some(leave) = leave {
            return Event::Leave {
                channel,
                info: Box::new(leave.info.unwrap_or_default()),
            };
        }
        if let Some(u) = unsubscribe {
            return Event::Unsubscribed {
                channel,
                code: u.code,
                reason: u.reason,
            };
        }
        if let Some(m) = message {
            return Event::Message { data: m.data };
        }
        if let Some(subscribe) = subscribe {
            return Event::Subscribed {
                channel,
                subscribe: Box::new(subscribe),
            };
        }
        if let Some(d) = disconnect {
            return Event::ServerDisconnect {
                code: d.code,
                reason: d.reason,
            };
        }
        Event::Other(Box::new(Push {
            id,
            channel,
            connect,
            refresh,
            ..Push::default()
        }))
    }

    /// The final event for a connection that ended with `error`.
    pub(crate) fn from_termination(error: &ClientError) -> Event {
        match error {
            ClientError::Disconnected { code, reason } => Event::Disconnected {
                code: *code,
                reason: reason.clone(),
            },
            other => Event::Disconnected {
                code: 1006,
                reason: other.to_string(),
            },
        }
    }
}

/// A callback that receives a connection's events synchronously on its
/// connection task, instead of through [`Events`] (see
/// [`crate::ClientOptions::event_handler`]). It must return quickly and never
/// block: the connection reads nothing while it runs. It is also called with
/// the final [`Event::Disconnected`].
#[derive(Clone)]
pub struct EventHandler(Arc<dyn Fn(Event) + Send + Sync>);

impl EventHandler {
    /// Wraps a callback.
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> EventHandler {
        EventHandler(Arc::new(f))
    }

    /// Calls the callback.
    pub fn call(&self, event: Event) {
        (self.0)(event)
    }
}

impl std::fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventHandler")
    }
}

/// Receiver of a connection's [`Event`]s, in the order the server sent them.
///
/// The queue is bounded ([`crate::ClientOptions::events_capacity`]). When it
/// is full the connection task **stops reading from the socket** until the
/// application receives again: nothing is dropped, TCP backpressure reaches
/// the server (which may eventually disconnect a slow client, e.g. code 3008),
/// and replies to calls that arrive behind the undelivered pushes wait too
/// (so such calls can time out). Server pings are not read meanwhile either,
/// so a receiver left undrained for longer than the server's ping interval
/// plus pong timeout gets the connection closed by the server. Commands are
/// still written while the queue is full. Dropping the `Events` discards
/// pushes from then on (calls keep working).
///
/// After the connection ends, [`Events::recv`] yields the queued events, then
/// exactly one [`Event::Disconnected`], then `None`.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    finished: bool,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<Event>, shared: Arc<Shared>) -> Events {
        Events {
            rx,
            shared,
            finished: false,
        }
    }

    /// Waits for the next event; `None` after [`Event::Disconnected`] was
    /// returned.
    pub async fn recv(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        match self.rx.recv().await {
            Some(event) => Some(event),
            None => Some(self.finish()),
        }
    }

    /// Returns an event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(self.finish()),
        }
    }

    /// Number of events waiting in the queue.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when no event is waiting in the queue.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn finish(&mut self) -> Event {
        self.finished = true;
        Event::from_termination(&self.shared.termination())
    }
}
