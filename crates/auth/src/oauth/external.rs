//! Tokens of external identity providers: their JWKS (handed in by the
//! server, which fetches it) and the claim mapping to [`AccessClaims`].

use std::str::FromStr as _;

use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use crate::claims::Audience;
use crate::error::TokenError;
use crate::grants::Grants;
use crate::oauth::AuthState;
use crate::oauth::access::AccessClaims;
use crate::oauth::config::{AuthConfig, ExternalIssuer};
use crate::oauth::error::AuthError;
use crate::oauth::keys::MAX_TOKEN_LEN;
use crate::oauth::util::B64URL;
use crate::verify::ensure_crypto_provider;

/// Most keys kept per issuer.
const MAX_KEYS: usize = 32;

/// One usable public key of an external issuer.
#[derive(Clone)]
pub(crate) struct ExternalKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

fn parse_key(v: &Value) -> Option<ExternalKey> {
    if v.get("use")
        .and_then(Value::as_str)
        .is_some_and(|u| u != "sig")
    {
        return None;
    }
    let family = match (
        v.get("kty").and_then(Value::as_str),
        v.get("crv").and_then(Value::as_str),
    ) {
        (Some("RSA"), _) => AlgorithmFamily::Rsa,
        (Some("EC"), Some("P-256" | "P-384")) => AlgorithmFamily::Ec,
        (Some("OKP"), Some("Ed25519")) => AlgorithmFamily::Ed,
        // Symmetric ("oct") keys are never trusted from a JWKS.
        _ => return None,
    };
    let alg = match v.get("alg").and_then(Value::as_str) {
        Some(a) => {
            let alg = Algorithm::from_str(a).ok()?;
            if alg.family() != family {
                return None;
            }
            Some(alg)
        }
        None => None,
    };
    let jwk: Jwk = serde_json::from_value(v.clone()).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(ExternalKey {
        kid: v.get("kid").and_then(Value::as_str).map(str::to_owned),
        alg,
        family,
        key,
    })
}

/// The value at a dotted path (`realm_access.roles`); a key containing the
/// whole path wins (for claims with dots in their names, such as URLs).
fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

fn roles_of(claims: &Value, path: &str) -> Vec<String> {
    match claim_at(claims, path) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn audience_of(claims: &Value) -> Option<Audience> {
    serde_json::from_value(claims.get("aud")?.clone()).ok()
}

/// The grants of a user with `roles` at `issuer`: defaults plus each role's.
pub(crate) fn grants_for(issuer: &ExternalIssuer, roles: &[String]) -> Grants {
    let mut grants = issuer.default_grants.clone();
    for role in roles {
        if let Some(g) = issuer.role_grants.get(role) {
            grants.merge(g);
        }
    }
    grants
}

impl AuthState {
    /// Installs the JWKS of a configured external issuer (the server
    /// fetches it from `jwks_url` or reads `jwks_file`, at start and
    /// periodically). Replaces the previous set. Only signature keys of
    /// type RSA, EC (P-256, P-384) and OKP (Ed25519) are kept; symmetric
    /// keys are ignored.
    pub fn set_external_jwks(&mut self, issuer: &str, jwks: &Value) -> Result<(), AuthError> {
        if self.config.external_issuer(issuer).is_none() {
            return Err(AuthError::UnknownIssuer);
        }
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(AuthError::InvalidJwks("no `keys` array"))?;
        let usable: Vec<ExternalKey> = keys.iter().filter_map(parse_key).take(MAX_KEYS).collect();
        if usable.is_empty() {
            return Err(AuthError::InvalidJwks("no usable signature keys"));
        }
        ensure_crypto_provider();
        self.external_keys.insert(issuer.to_owned(), usable);
        Ok(())
    }

    /// Verifies a token of a configured external issuer (chosen by its
    /// `iss`) with that issuer's JWKS and maps it: `user_claim` → `sub`,
    /// roles → grants. Requires an asymmetric `alg` matching the key, an
    /// `exp` in the future, `nbf` (if any) in the past, and the configured
    /// audience.
    pub fn verify_external(
        &self,
        token: &str,
        cfg: &AuthConfig,
        now: i64,
    ) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::invalid("token too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::invalid("malformed token header"))?;
        if header.alg.family() == AlgorithmFamily::Hmac {
            return Err(TokenError::invalid("unexpected alg"));
        }
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|p| B64URL.decode(p).ok())
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .ok_or_else(|| TokenError::invalid("malformed token"))?;
        let iss = payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::invalid("missing iss"))?;
        let issuer = cfg
            .external_issuer(iss)
            .ok_or_else(|| TokenError::invalid("unknown issuer"))?;
        let keys = self
            .external_keys
            .get(iss)
            .ok_or(TokenError::NotConfigured)?;
        let fits = |k: &&ExternalKey| {
            k.family == header.alg.family() && k.alg.is_none_or(|a| a == header.alg)
        };
        let candidates: Vec<&ExternalKey> = match &header.kid {
            Some(kid) => keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .filter(fits)
                .collect(),
            None => keys.iter().filter(fits).collect(),
        };
        if candidates.is_empty() {
            return Err(TokenError::invalid("unknown kid"));
        }
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let claims = candidates
            .iter()
            .find_map(|k| jsonwebtoken::decode::<Value>(token, &k.key, &validation).ok())
            .map(|d| d.claims)
            .ok_or_else(|| TokenError::invalid("bad signature"))?;

        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| TokenError::invalid("missing exp"))?;
        if now >= exp {
            return Err(TokenError::Expired);
        }
        if claims
            .get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|nbf| nbf > now)
        {
            return Err(TokenError::invalid("token not yet valid"));
        }
        let aud = audience_of(&claims);
        if let Some(expected) = &issuer.audience
            && !aud.as_ref().is_some_and(|a| a.contains(expected))
        {
            return Err(TokenError::invalid("audience mismatch"));
        }
        let sub = match claim_at(&claims, &issuer.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(TokenError::invalid("missing user claim")),
        };
        let roles = issuer
            .roles_claim
            .as_deref()
            .map(|path| roles_of(&claims, path))
            .unwrap_or_default();
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let scope = text("scope").unwrap_or_else(|| {
            claims
                .get("scp")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        });
        Ok(AccessClaims {
            sub,
            exp,
            iat: claims.get("iat").and_then(Value::as_i64).unwrap_or(0),
            jti: text("jti").unwrap_or_default(),
            iss: iss.to_owned(),
            aud,
            client_id: text("client_id").or_else(|| text("azp")),
            scope,
            sid: None,
            info: None,
            channels: Vec::new(),
            grants: Some(grants_for(issuer, &roles)),
        })
    }
}
