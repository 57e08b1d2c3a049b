//! Switchboard wire types and codecs.
//!
//! * [`client`]: the Centrifugo client protocol v2 messages (commands, replies,
//!   pushes), usable with both protobuf (`prost`) and JSON (`serde`) framing.
//! * [`codec`]: frame-level encoding and decoding of commands and replies for
//!   both encodings.
//! * [`codes`]: protocol error, disconnect and unsubscribe codes.
//! * [`api`]: request and reply types of the Centrifugo-compatible HTTP server API.
//! * [`raw_json`]: the serde helper that embeds `bytes` payloads as raw JSON.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod client;
pub mod codec;
pub mod codes;
pub mod raw_json;

pub use codec::{DecodeError, Encoding};

/// `skip_serializing_if` predicate: true when the value equals its type's default
/// (0, false, "", empty collection, `None`), so JSON output omits it.
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
