//! Centrifugo-compatible JWT claim sets for connection and subscription tokens.
//!
//! Free-form JSON claims (`info`, `meta`, `subs.*.data`) are kept as
//! [`RawValue`] so their exact text reaches the protocol layer untouched.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::TokenError;
use crate::grants::Grants;

/// The `aud` claim: a single audience or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "name"`.
    One(String),
    /// `"aud": ["a", "b"]`.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `name` is one of the audiences.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Audience::One(a) => a == name,
            Audience::Many(list) => list.iter().any(|a| a == name),
        }
    }
}

/// A boolean wrapped in an object, as Centrifugo's override options spell it:
/// `{"value": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoolValue {
    /// The wrapped value.
    pub value: bool,
}

/// Per-subscription overrides of namespace options (`override` claim).
///
/// Unknown keys are ignored; an absent option means "use the namespace setting".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeOverride {
    /// Override `presence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<BoolValue>,
    /// Override `join_leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<BoolValue>,
    /// Override `force_push_join_leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_push_join_leave: Option<BoolValue>,
    /// Override `force_recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_recovery: Option<BoolValue>,
    /// Override `force_positioning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_positioning: Option<BoolValue>,
}

/// Options of one server-side subscription listed in a connection token's `subs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscribeOptions {
    /// Channel-specific connection info (raw JSON), sent in join/presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
    /// Base64 (standard alphabet) alternative to `info` for binary data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64info: Option<String>,
    /// Custom data (raw JSON) sent to the client in the subscribe result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Base64 (standard alphabet) alternative to `data` for binary data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64data: Option<String>,
    /// Namespace option overrides for this subscription.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<SubscribeOverride>,
}

impl SubscribeOptions {
    /// The info as bytes: decoded `b64info` if set, else the raw JSON text of `info`.
    pub fn info_bytes(&self) -> Result<Option<Vec<u8>>, TokenError> {
        payload_bytes(self.info.as_deref(), self.b64info.as_deref())
    }

    /// The data as bytes: decoded `b64data` if set, else the raw JSON text of `data`.
    pub fn data_bytes(&self) -> Result<Option<Vec<u8>>, TokenError> {
        payload_bytes(self.data.as_deref(), self.b64data.as_deref())
    }
}

/// Claims of a connection token (sent by the client in the `connect` command).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectionClaims {
    /// User id; an empty string means an anonymous user.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sub: String,
    /// Expiration time (unix seconds); absent means the token never expires.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<i64>,
    /// Issued-at time (unix seconds).
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    /// Not-before time (unix seconds).
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Connection info (raw JSON) shown to other clients in presence and join/leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
    /// Base64 (standard alphabet) alternative to `info` for binary data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64info: Option<String>,
    /// Channels the server subscribes the connection to (server-side subscriptions).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub channels: Vec<String>,
    /// Server-side subscriptions with per-channel options.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub subs: BTreeMap<String, SubscribeOptions>,
    /// Private connection metadata (raw JSON); never sent to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<RawValue>>,
    /// When the connection expires (unix seconds), overriding `exp`; `0` means never.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub expire_at: Option<i64>,
    /// Switchboard extension: channel and room permissions. `None` means the
    /// token carries no grants (the namespace rules alone decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
}

impl ConnectionClaims {
    /// The connection info as bytes: decoded `b64info` if set, else the raw
    /// JSON text of `info`.
    pub fn info_bytes(&self) -> Result<Option<Vec<u8>>, TokenError> {
        payload_bytes(self.info.as_deref(), self.b64info.as_deref())
    }

    /// The raw JSON text of `meta`, if any.
    pub fn meta_bytes(&self) -> Option<&[u8]> {
        self.meta.as_deref().map(|m| m.get().as_bytes())
    }

    /// When the connection must be expired (unix seconds), or `None` for never:
    /// `expire_at` wins over `exp`, and `expire_at: 0` means never.
    pub fn connection_expires_at(&self) -> Option<i64> {
        resolve_expiry(self.expire_at, self.exp)
    }

    pub(crate) fn validate(&self) -> Result<(), TokenError> {
        self.info_bytes()?;
        for opts in self.subs.values() {
            opts.info_bytes()?;
            opts.data_bytes()?;
        }
        Ok(())
    }
}

/// Claims of a subscription token (sent by the client in the `subscribe` command).
///
/// The verifier checks that `channel` matches the requested channel; the
/// caller must also check that `sub` equals the connection's user id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriptionClaims {
    /// User id the token was issued for; must equal the connection's user.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sub: String,
    /// The channel this token grants (required, non-empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub channel: String,
    /// Expiration time (unix seconds); absent means the token never expires.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<i64>,
    /// Issued-at time (unix seconds).
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    /// Not-before time (unix seconds).
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Channel-specific connection info (raw JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
    /// Base64 (standard alphabet) alternative to `info` for binary data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64info: Option<String>,
    /// When the subscription expires (unix seconds), overriding `exp`; `0` means never.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub expire_at: Option<i64>,
    /// Namespace option overrides for this subscription.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<SubscribeOverride>,
}

impl SubscriptionClaims {
    /// The channel info as bytes: decoded `b64info` if set, else the raw JSON
    /// text of `info`.
    pub fn info_bytes(&self) -> Result<Option<Vec<u8>>, TokenError> {
        payload_bytes(self.info.as_deref(), self.b64info.as_deref())
    }

    /// When the subscription must be expired (unix seconds), or `None` for
    /// never: `expire_at` wins over `exp`, and `expire_at: 0` means never.
    pub fn subscription_expires_at(&self) -> Option<i64> {
        resolve_expiry(self.expire_at, self.exp)
    }

    pub(crate) fn validate(&self) -> Result<(), TokenError> {
        if self.channel.is_empty() {
            return Err(TokenError::invalid("missing channel claim"));
        }
        self.info_bytes()?;
        Ok(())
    }
}

/// Registered claims checked by the verifier for every kind of token.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RegisteredClaims {
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub iss: Option<String>,
}

fn resolve_expiry(expire_at: Option<i64>, exp: Option<i64>) -> Option<i64> {
    match expire_at {
        Some(0) => None,
        Some(at) => Some(at),
        None => exp,
    }
}

/// Standard-alphabet base64 that accepts input with or without padding.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Encodes bytes the way `b64info`/`b64data` claims expect them.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn payload_bytes(raw: Option<&RawValue>, b64: Option<&str>) -> Result<Option<Vec<u8>>, TokenError> {
    match b64 {
        Some(s) if !s.is_empty() => B64
            .decode(s)
            .map(Some)
            .map_err(|_| TokenError::invalid("malformed base64 claim")),
        _ => Ok(raw.map(|r| r.get().as_bytes().to_vec())),
    }
}

/// Treats JSON `null` like an absent field.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A JWT NumericDate: an integer, or a float that is truncated to whole seconds.
fn numeric_date<'de, D>(de: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    let Some(n) = Option::<serde_json::Number>::deserialize(de)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 9.0e15 => Ok(Some(f.trunc() as i64)),
        _ => Err(serde::de::Error::custom("numeric date out of range")),
    }
}
