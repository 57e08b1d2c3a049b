//! [`AccessClaims`]: the claim set of access tokens issued by the
//! authorization server (and the normalized claims of external tokens).

use serde::{Deserialize, Serialize};

use crate::claims::{Audience, ConnectionClaims};
use crate::grants::Grants;

/// Claims of an access token: RFC 9068-style registered claims, the
/// Centrifugo connection claims (`sub`, `exp`, `info`, `channels`) and the
/// Switchboard `grants`.
///
/// Tokens of API keys have `sub = "apikey:<id>"`, scope `api` and no `sid`;
/// user tokens have the user id as `sub`, scope `connect` and the session
/// id as `sid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Subject: user id, or `apikey:<id>`.
    pub sub: String,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Token id, the handle for revocation.
    #[serde(default)]
    pub jti: String,
    /// Issuer.
    pub iss: String,
    /// Audience, only when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// The OAuth client (or API key) the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Space-separated scopes (`connect`, `api`).
    #[serde(default)]
    pub scope: String,
    /// Session id (= refresh token family); ending the session revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Centrifugo connection info shown to other clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// Centrifugo server-side subscriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Switchboard channel and room permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
}

impl AccessClaims {
    /// Whether the space-separated `scope` contains `name`.
    pub fn has_scope(&self, name: &str) -> bool {
        self.scope.split(' ').any(|s| s == name)
    }

    /// The API key id for client_credentials tokens (`sub = apikey:<id>`).
    pub fn api_key_id(&self) -> Option<&str> {
        self.sub.strip_prefix("apikey:")
    }
}

impl From<AccessClaims> for ConnectionClaims {
    /// The connection claims the gateway works with: `sub`, `exp`, `iat`,
    /// `jti`, `aud`, `iss`, `info`, `channels` and `grants`.
    fn from(c: AccessClaims) -> ConnectionClaims {
        ConnectionClaims {
            sub: c.sub,
            exp: Some(c.exp),
            iat: Some(c.iat),
            jti: (!c.jti.is_empty()).then_some(c.jti),
            aud: c.aud,
            iss: Some(c.iss),
            info: c
                .info
                .as_ref()
                .and_then(|v| serde_json::value::to_raw_value(v).ok()),
            channels: c.channels,
            grants: c.grants,
            ..ConnectionClaims::default()
        }
    }
}
