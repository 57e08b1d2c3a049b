//! Sans-IO domain logic for Switchboard.
//!
//! Nothing here opens a socket, spawns a task or reads a clock: callers pass
//! time in (`now_ms`, milliseconds since the Unix epoch, or an `Instant`) and
//! act on what the functions return. The gateway and the server are loops that
//! feed these types; tests drive them directly with a fake clock.
//!
//! * [`breaker`]: a circuit breaker for a dependency that can go away (the store).
//! * [`channel`]: channel names, namespaces and user-limited channels.
//! * [`namespace`]: per-namespace options and the resolved rules of a channel.
//! * [`publication`]: the publication and publisher info every layer shares.
//! * [`recovery`]: whether a reconnecting subscriber can be recovered.
//! * [`presence`]: who is in a channel, with expiry by heartbeat.
//! * [`queue`]: the bounded per-connection send queue with drop and conflation.
//! * [`reorder`]: restores a channel's offset order across nodes, finds gaps.
//! * [`hlc`]: hybrid logical clock timestamps.
//! * [`callevent`]: room and call events (event log, call logs, webhooks).
//! * [`calllog`]: the call-log projection (per-call summaries from events).
//! * [`ring`]: 1:1 calls ringing a user until answered, declined or timed out.
//! * [`room`]: the room registry: membership, capacity, modes, empty timeout.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod breaker;
pub mod callevent;
pub mod calllog;
pub mod channel;
pub mod duration;
pub mod hlc;
pub mod namespace;
pub mod placement;
pub mod presence;
pub mod publication;
pub mod queue;
pub mod recovery;
pub mod reorder;
pub mod ring;
pub mod room;

pub use publication::{HistoryPage, HistoryQuery, Publication, PublisherInfo, StreamPosition};
