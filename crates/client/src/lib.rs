//! Switchboard Rust client SDK: an async (tokio) client for the Centrifugo
//! client protocol v2 over WebSocket, with JSON or protobuf framing.
//!
//! * [`Client::connect`] opens the socket, sends `connect` and returns a
//!   [`Client`] (cheap to clone; every protocol call with a timeout) plus an
//!   [`Events`] receiver of server pushes (publications, join/leave,
//!   unsubscribe, messages, …) ending with [`Event::Disconnected`] that carries
//!   the close code and reason.
//! * One background task per connection reads frames, answers server pings
//!   with pongs, routes replies to waiting calls by command id and queues
//!   pushes. The events queue is bounded: when the application does not drain
//!   it, the task stops reading the socket (backpressure; nothing is dropped).
//!   See [`Events`].
//! * `media` (cargo feature `media`): a str0m WebRTC client that publishes
//!   synthetic audio/video to the SFU and receives forwarded media, for tests
//!   and the load generator; signaling goes over the `rtc.*` RPCs.
//! * [`RawConnection`] is a bare WebSocket for sending malformed input and
//!   observing close codes in tests.
//!
//! Only plain `ws://` URLs are supported (no TLS). Buffers are small by
//! default ([`lean_ws_config`]) so that a process can hold tens of thousands of
//! connections.
//!
//! ```no_run
//! use switchboard_client::{Client, ClientOptions, Event, SubscribeOptions};
//!
//! # async fn example() -> Result<(), switchboard_client::ClientError> {
//! let (client, mut events) = Client::connect(
//!     "ws://127.0.0.1:8000/connection/websocket",
//!     ClientOptions::with_token("eyJhbGciOi..."),
//! )
//! .await?;
//! println!("connected as {}", client.client_id());
//! client.subscribe("chat", SubscribeOptions::default()).await?;
//! client.publish("chat", r#"{"text":"hello"}"#).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Publication { channel, publication } => {
//!             println!("{channel}: {}", String::from_utf8_lossy(&publication.data));
//!             break;
//!         }
//!         Event::Disconnected { code, reason } => {
//!             println!("disconnected: {code} {reason}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod conn;
mod error;
mod event;
#[cfg(feature = "media")]
pub mod media;
mod raw;
mod transport;

pub use client::{Client, ClientOptions, SubscribeOptions};
pub use error::ClientError;
pub use event::{Event, EventHandler, Events};
pub use raw::{RawConnection, RawFrame, RawOptions};
pub use transport::{PROTOBUF_SUBPROTOCOL, WsStream, lean_ws_config};

pub use switchboard_proto::Encoding;
pub use switchboard_proto::client as proto;
pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
