//! How the gateway checks tokens: an [`Authenticator`] the server provides.
//!
//! The plain [`Verifier`] (app-backend keys from the config) implements it;
//! the server wraps it together with the built-in authorization server's
//! keys and external issuers.

use switchboard_auth::{ConnectionClaims, SubscriptionClaims, TokenError, Verifier};

/// A verified connection token.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    /// The claims, in Centrifugo's connection-token shape (with grants).
    pub claims: ConnectionClaims,
    /// The authorization-server session the token belongs to, if any.
    pub session: Option<String>,
}

/// Checks connection and subscription tokens; time is passed in.
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies a connection token at `now` (Unix seconds).
    fn verify_connection(&self, token: &str, now: i64) -> Result<VerifiedToken, TokenError>;
    /// Verifies a subscription token for `channel` at `now`.
    fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
        now: i64,
    ) -> Result<SubscriptionClaims, TokenError>;
}

impl Authenticator for Verifier {
    fn verify_connection(&self, token: &str, now: i64) -> Result<VerifiedToken, TokenError> {
        Verifier::verify_connection(self, token, now).map(|claims| VerifiedToken {
            claims,
            session: None,
        })
    }

    fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
        now: i64,
    ) -> Result<SubscriptionClaims, TokenError> {
        Verifier::verify_subscription(self, token, channel, now)
    }
}

/// The token identity of a live connection, for revocation checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenIdentity {
    /// User id.
    pub user: String,
    /// Token id (`jti`), if the token had one.
    pub jti: Option<String>,
    /// Authorization-server session, if any.
    pub session: Option<String>,
}
