//! Switchboard authentication: Centrifugo-compatible JWT connection and
//! subscription tokens.
//!
//! * [`Verifier`] checks tokens signed with HMAC (`HS*`), RSA (`RS*`, `PS*`),
//!   ECDSA (`ES256`, `ES384`) or Ed25519 (`EdDSA`) keys from a
//!   [`VerifierConfig`]; the header's `alg` picks the key and `alg: none` is
//!   always refused. Time is an argument, never read from the clock.
//! * [`Minter`] signs tokens (CLI `switchboard token create`, tests).
//! * [`ConnectionClaims`] / [`SubscriptionClaims`] are the claim sets; free-form
//!   JSON (`info`, `meta`, `data`) stays raw so the protocol layer forwards it
//!   untouched.
//!
//! * [`grants`]: the Switchboard `grants` claim (channel and room
//!   permissions) and its glob matching.
//! * [`oauth`]: the built-in OAuth 2.0 authorization server as a sans-IO,
//!   event-sourced state machine ([`oauth::AuthState`]).
//!
//! Errors never contain a token.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard_auth::{ConnectionTokenSpec, Minter, TokenError, Verifier, VerifierConfig};
//!
//! let now = 1_700_000_000;
//! let minter = Minter::hs256("secret").unwrap();
//! let token = minter
//!     .mint_connection(
//!         &ConnectionTokenSpec {
//!             user: "42".into(),
//!             ttl: Some(Duration::from_secs(3600)),
//!             info: Some(serde_json::json!({"name": "Alice"})),
//!             ..Default::default()
//!         },
//!         now,
//!     )
//!     .unwrap();
//!
//! let verifier = Verifier::new(&VerifierConfig {
//!     hmac_secret: Some("secret".into()),
//!     ..Default::default()
//! })
//! .unwrap();
//! let claims = verifier.verify_connection(&token, now + 10).unwrap();
//! assert_eq!(claims.sub, "42");
//! assert_eq!(
//!     verifier.verify_connection(&token, now + 7200).unwrap_err(),
//!     TokenError::Expired
//! );
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod claims;
mod error;
pub mod grants;
mod mint;
pub mod oauth;
mod verify;

#[cfg(test)]
mod tests;

pub use claims::{
    Audience, BoolValue, ConnectionClaims, SubscribeOptions, SubscribeOverride, SubscriptionClaims,
};
pub use error::{KeyError, MintError, TokenError};
pub use grants::Grants;
pub use jsonwebtoken::Algorithm;
pub use mint::{ConnectionTokenSpec, Minter, SubscriptionTokenSpec};
pub use verify::{Verifier, VerifierConfig};
