//! Signing keys (Ed25519, generated here), the JWKS, RFC 8414 metadata,
//! and signing/verifying our own access tokens.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::claims::Audience;
use crate::error::TokenError;
use crate::oauth::access::AccessClaims;
use crate::oauth::error::AuthError;
use crate::oauth::events::{AuthEvent, Sensitive};
use crate::oauth::util::{B64URL, random_b64};
use crate::oauth::{AuthConfig, AuthState};
use crate::verify::ensure_crypto_provider;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The only algorithm our keys use.
const ALG: &str = "EdDSA";

/// A loaded signing key.
#[derive(Clone)]
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Public key, base64url (JWK `x`).
    x: String,
    created_at: i64,
    pub(crate) retired: bool,
}

impl SigningKey {
    /// Parses the key of a `SigningKeyCreated` event; `None` if unusable.
    pub(crate) fn load(kid: &str, alg: &str, pkcs8_b64: &str, created_at: i64) -> Option<Self> {
        if alg != ALG {
            return None;
        }
        let der = B64.decode(pkcs8_b64).ok()?;
        let pair = Ed25519KeyPair::from_pkcs8(&der).ok()?;
        let public = pair.public_key().as_ref().to_vec();
        ensure_crypto_provider();
        Some(SigningKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(&der),
            decoding: DecodingKey::from_ed_der(&public),
            x: B64URL.encode(&public),
            created_at,
            retired: false,
        })
    }
}

/// A signing key as listed for operators (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// Key id.
    pub kid: String,
    /// Algorithm (`EdDSA`).
    pub alg: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether this key signs new tokens.
    pub active: bool,
}

impl AuthState {
    fn active_key(&self) -> Option<&SigningKey> {
        self.signing_keys.iter().rev().find(|k| !k.retired)
    }

    fn new_key_event(now: i64) -> Vec<AuthEvent> {
        let Ok(doc) = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()) else {
            return Vec::new();
        };
        let kid = random_b64(12);
        vec![
            AuthEvent::SigningKeyCreated {
                kid: kid.clone(),
                alg: ALG.into(),
                pkcs8_b64: Sensitive(B64.encode(doc.as_ref())),
                created_at: now,
            },
            AuthEvent::audit("signing_key_created", None, None, format!("kid={kid}"), now),
        ]
    }

    /// A new Ed25519 key (`SigningKeyCreated`) if no key is active, else nothing.
    pub fn ensure_signing_key(&self, now: i64) -> Vec<AuthEvent> {
        if self.active_key().is_some() {
            Vec::new()
        } else {
            Self::new_key_event(now)
        }
    }

    /// A new active key. Older keys stay in the JWKS and keep verifying
    /// until retired with [`AuthState::retire_signing_key`].
    pub fn rotate_signing_key(&self, now: i64) -> Vec<AuthEvent> {
        Self::new_key_event(now)
    }

    /// Withdraws a non-active key: it leaves the JWKS and its tokens stop
    /// verifying. Retire a key once its last tokens expired (`access_ttl`
    /// after the rotation).
    pub fn retire_signing_key(&self, kid: &str, now: i64) -> Result<Vec<AuthEvent>, AuthError> {
        let key = self
            .published_key(kid)
            .ok_or(AuthError::SigningKey("unknown key"))?;
        if self.active_key().is_some_and(|a| a.kid == key.kid) {
            return Err(AuthError::SigningKey(
                "cannot retire the active key; rotate first",
            ));
        }
        Ok(vec![
            AuthEvent::SigningKeyRetired {
                kid: kid.to_owned(),
                at: now,
            },
            AuthEvent::audit("signing_key_retired", None, None, format!("kid={kid}"), now),
        ])
    }

    /// Whether `kid` names one of our published (unretired) signing keys.
    /// Allocation-free: the gateway asks it on every connect.
    pub fn has_signing_key(&self, kid: &str) -> bool {
        self.published_key(kid).is_some()
    }

    /// The published (unretired) signing key named `kid`.
    fn published_key(&self, kid: &str) -> Option<&SigningKey> {
        self.signing_keys
            .iter()
            .find(|k| k.kid == kid && !k.retired)
    }

    /// Published (unretired) keys, oldest first.
    pub fn signing_keys(&self) -> Vec<SigningKeyRecord> {
        let active = self.active_key().map(|k| k.kid.clone());
        self.signing_keys
            .iter()
            .filter(|k| !k.retired)
            .map(|k| SigningKeyRecord {
                kid: k.kid.clone(),
                alg: ALG.into(),
                created_at: k.created_at,
                active: active.as_deref() == Some(k.kid.as_str()),
            })
            .collect()
    }

    /// The JWKS document (`GET /.well-known/jwks.json`): every published key,
    /// newest first.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .signing_keys
            .iter()
            .rev()
            .filter(|k| !k.retired)
            .map(|k| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": k.x,
                    "kid": k.kid,
                    "alg": ALG,
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// RFC 8414 authorization server metadata
    /// (`GET /.well-known/oauth-authorization-server`).
    pub fn metadata(&self, cfg: &AuthConfig) -> serde_json::Value {
        let base = cfg.issuer.trim_end_matches('/');
        json!({
            "issuer": cfg.issuer,
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "introspection_endpoint": format!("{base}/oauth/introspect"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": [SCOPE_CONNECT, SCOPE_API],
            "token_endpoint_auth_signing_alg_values_supported": [ALG],
        })
    }

    /// Signs an access token with the active key; `None` without a key.
    pub(crate) fn sign_access(&self, claims: &AccessClaims) -> Option<String> {
        let key = self.active_key()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &key.encoding).ok()
    }

    /// The configured audience as a claim.
    pub(crate) fn audience_claim(&self) -> Option<Audience> {
        self.config.audience.clone().map(Audience::One)
    }

    /// Checks an access token's signature against our published keys and
    /// returns its claims, without the time and revocation checks.
    pub(crate) fn decode_own(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::invalid("token too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::invalid("malformed token header"))?;
        // Only EdDSA: this refuses `none`, and HS256 "signed" with our
        // public key (algorithm confusion) before any key is touched.
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::invalid("unexpected alg"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| TokenError::invalid("missing kid"))?;
        let key = self
            .published_key(kid)
            .ok_or_else(|| TokenError::invalid("unknown kid"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    TokenError::invalid("bad signature")
                }
                jsonwebtoken::errors::ErrorKind::Json(_) => TokenError::invalid("malformed claims"),
                _ => TokenError::invalid("malformed token"),
            })?;
        let claims = data.claims;
        if claims.iss != self.config.issuer {
            return Err(TokenError::invalid("issuer mismatch"));
        }
        Ok(claims)
    }

    /// Verifies one of our own access tokens at `now`: signature by a
    /// published key (by `kid`, `EdDSA` only), issuer, audience (if
    /// configured), expiry, revocation (token, session, user, API key).
    pub fn verify_access(&self, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        let claims = self.decode_own(token)?;
        if let Some(expected) = &self.config.audience
            && !claims.aud.as_ref().is_some_and(|a| a.contains(expected))
        {
            return Err(TokenError::invalid("audience mismatch"));
        }
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if self.is_access_revoked(&claims.jti, claims.sid.as_deref()) {
            return Err(TokenError::invalid("token revoked"));
        }
        match claims.api_key_id() {
            Some(id) if !self.api_keys.contains_key(id) => {
                return Err(TokenError::invalid("token revoked"));
            }
            Some(_) => {}
            None if self.is_user_disabled(&claims.sub) => {
                return Err(TokenError::invalid("user disabled"));
            }
            None => {}
        }
        Ok(claims)
    }

    /// [`AuthState::verify_access`], as the gateway's connection claims.
    pub fn verify_connection(
        &self,
        token: &str,
        now: i64,
    ) -> Result<crate::ConnectionClaims, TokenError> {
        self.verify_access(token, now).map(Into::into)
    }

    /// Whether the access token `jti` was revoked, or its session `sid`
    /// ended (family revoked, logout, disabled user).
    pub fn is_access_revoked(&self, jti: &str, sid: Option<&str>) -> bool {
        if self.revoked_access.contains_key(jti) {
            return true;
        }
        sid.is_some_and(|sid| self.families.get(sid).is_some_and(|f| f.ended))
    }
}

/// The scope of user access tokens.
pub(crate) const SCOPE_CONNECT: &str = "connect";
/// The scope of API-key access tokens.
pub(crate) const SCOPE_API: &str = "api";
/// Tokens larger than this are refused unread.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;
