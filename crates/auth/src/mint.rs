//! Token minting: [`Minter`], [`ConnectionTokenSpec`], [`SubscriptionTokenSpec`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::claims::{Audience, ConnectionClaims, SubscribeOptions, SubscriptionClaims, b64_encode};
use crate::error::{KeyError, MintError};
use crate::grants::Grants;
use crate::verify::ensure_crypto_provider;

/// What to put into a connection token.
#[derive(Debug, Clone, Default)]
pub struct ConnectionTokenSpec {
    /// User id (`sub`); empty for an anonymous user.
    pub user: String,
    /// Lifetime; `None` omits `exp` (the token never expires).
    pub ttl: Option<Duration>,
    /// Server-side subscriptions (`channels`).
    pub channels: Vec<String>,
    /// Server-side subscriptions with options (`subs`).
    pub subs: BTreeMap<String, SubscribeOptions>,
    /// Connection info (`info`), any JSON.
    pub info: Option<serde_json::Value>,
    /// Binary connection info, written as `b64info`.
    pub b64info: Option<Vec<u8>>,
    /// Private metadata (`meta`), any JSON.
    pub meta: Option<serde_json::Value>,
    /// Connection expiry override (`expire_at`, unix seconds; `0` = never).
    pub expire_at: Option<i64>,
    /// Token id (`jti`).
    pub jti: Option<String>,
    /// Switchboard channel and room permissions (`grants`).
    pub grants: Option<Grants>,
}

/// What to put into a subscription token (fuller form of
/// [`Minter::mint_subscription`]).
#[derive(Debug, Clone, Default)]
pub struct SubscriptionTokenSpec {
    /// User id (`sub`); must match the connection's user.
    pub user: String,
    /// Channel (`channel`); required.
    pub channel: String,
    /// Lifetime; `None` omits `exp`.
    pub ttl: Option<Duration>,
    /// Channel info (`info`), any JSON.
    pub info: Option<serde_json::Value>,
    /// Binary channel info, written as `b64info`.
    pub b64info: Option<Vec<u8>>,
    /// Subscription expiry override (`expire_at`, unix seconds; `0` = never).
    pub expire_at: Option<i64>,
    /// Token id (`jti`).
    pub jti: Option<String>,
}

/// Signs connection and subscription tokens (CLI `token create`, tests).
#[derive(Clone)]
pub struct Minter {
    alg: Algorithm,
    key: EncodingKey,
    audience: Option<String>,
    issuer: Option<String>,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("alg", &self.alg)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// An HS256 minter with a shared secret (must be non-empty).
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::hmac(Algorithm::HS256, secret)
    }

    /// An HMAC minter (`HS256`, `HS384` or `HS512`) with a shared secret.
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        if alg.family() != AlgorithmFamily::Hmac {
            return Err(KeyError::new("hmac_secret", "algorithm is not HMAC"));
        }
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(KeyError::new("hmac_secret", "empty secret"));
        }
        Ok(Self::with_key(alg, EncodingKey::from_secret(secret)))
    }

    /// A minter with a PKCS#8 private key PEM for an RSA (`RS*`/`PS*`),
    /// ECDSA (`ES256`/`ES384`) or Ed25519 (`EdDSA`) algorithm.
    pub fn from_private_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let key = match alg.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => {
                return Err(KeyError::new(
                    "private_key",
                    "HMAC algorithms take a secret, not a PEM",
                ));
            }
        }
        .map_err(|e| KeyError::new("private_key", e.to_string()))?;
        Ok(Self::with_key(alg, key))
    }

    fn with_key(alg: Algorithm, key: EncodingKey) -> Self {
        ensure_crypto_provider();
        Minter {
            alg,
            key,
            audience: None,
            issuer: None,
        }
    }

    /// Sets the `aud` claim written into every minted token.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the `iss` claim written into every minted token.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Mints a connection token issued at `now_unix_secs`.
    pub fn mint_connection(
        &self,
        spec: &ConnectionTokenSpec,
        now_unix_secs: i64,
    ) -> Result<String, MintError> {
        let claims = ConnectionClaims {
            sub: spec.user.clone(),
            exp: expiry(now_unix_secs, spec.ttl),
            iat: Some(now_unix_secs),
            nbf: None,
            jti: spec.jti.clone(),
            aud: self.audience.clone().map(Audience::One),
            iss: self.issuer.clone(),
            info: raw(spec.info.as_ref())?,
            b64info: spec.b64info.as_deref().map(b64_encode),
            channels: spec.channels.clone(),
            subs: spec.subs.clone(),
            meta: raw(spec.meta.as_ref())?,
            expire_at: spec.expire_at,
            grants: spec.grants.clone(),
        };
        self.sign(&claims)
    }

    /// Mints a subscription token for `user` on `channel`, issued at `now_unix_secs`.
    pub fn mint_subscription(
        &self,
        user: &str,
        channel: &str,
        ttl: Option<Duration>,
        info: Option<&serde_json::Value>,
        now_unix_secs: i64,
    ) -> Result<String, MintError> {
        self.mint_subscription_spec(
            &SubscriptionTokenSpec {
                user: user.to_owned(),
                channel: channel.to_owned(),
                ttl,
                info: info.cloned(),
                ..SubscriptionTokenSpec::default()
            },
            now_unix_secs,
        )
    }

    /// Mints a subscription token from a full spec, issued at `now_unix_secs`.
    pub fn mint_subscription_spec(
        &self,
        spec: &SubscriptionTokenSpec,
        now_unix_secs: i64,
    ) -> Result<String, MintError> {
        if spec.channel.is_empty() {
            return Err(MintError::Spec("empty channel"));
        }
        let claims = SubscriptionClaims {
            sub: spec.user.clone(),
            channel: spec.channel.clone(),
            exp: expiry(now_unix_secs, spec.ttl),
            iat: Some(now_unix_secs),
            nbf: None,
            jti: spec.jti.clone(),
            aud: self.audience.clone().map(Audience::One),
            iss: self.issuer.clone(),
            info: raw(spec.info.as_ref())?,
            b64info: spec.b64info.as_deref().map(b64_encode),
            expire_at: spec.expire_at,
            override_: None,
        };
        self.sign(&claims)
    }

    /// Signs an arbitrary claim set as-is (no `aud`/`iss`/`iat` added).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, MintError> {
        let mut header = Header::new(self.alg);
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| MintError::Sign(e.to_string()))
    }
}

fn expiry(now: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| {
        // Round sub-second lifetimes up so a positive TTL never yields exp == now.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))
    })
}

fn raw(value: Option<&serde_json::Value>) -> Result<Option<Box<RawValue>>, MintError> {
    value
        .map(serde_json::value::to_raw_value)
        .transpose()
        .map_err(|e| MintError::Sign(e.to_string()))
}
