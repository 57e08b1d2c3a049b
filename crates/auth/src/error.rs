//! Error types: why a token was refused, why a key was refused, why minting failed.

/// Why a token was refused.
///
/// None of the variants ever carries the token itself; the `Invalid` reason is a
/// short, fixed phrase that is safe to log.
///
/// Suggested protocol mapping (Centrifugo client protocol): `Expired` → error
/// 109 "token expired" (disconnect "token expired" on connect); `Invalid` →
/// disconnect 3500 "invalid token" on connect, error 103 "permission denied"
/// on subscribe; `NotConfigured` → treat like `Invalid` towards the client and
/// log it as a server configuration problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token's `exp` is in the past (beyond the configured leeway).
    #[error("token expired")]
    Expired,
    /// The token is malformed, badly signed, uses a refused algorithm, lacks a
    /// required claim, or fails an audience/issuer/channel/`nbf` check.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// No key is configured for the token's algorithm (or no keys at all).
    #[error("token verification is not configured for this algorithm")]
    NotConfigured,
}

impl TokenError {
    pub(crate) fn invalid(reason: &str) -> Self {
        TokenError::Invalid(reason.to_owned())
    }
}

/// A configured key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {which}: {reason}")]
pub struct KeyError {
    /// Which key was refused, e.g. `"rsa_public_key"`.
    pub which: &'static str,
    /// Why it was refused (never includes the key material).
    pub reason: String,
}

impl KeyError {
    pub(crate) fn new(which: &'static str, reason: impl Into<String>) -> Self {
        KeyError {
            which,
            reason: reason.into(),
        }
    }
}

/// Minting a token failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The token specification is unusable (e.g. empty channel).
    #[error("invalid token spec: {0}")]
    Spec(&'static str),
    /// The claims could not be serialized or signed.
    #[error("signing failed: {0}")]
    Sign(String),
}
