//! Token verification: [`VerifierConfig`] and [`Verifier`].

use std::fmt;
use std::str::FromStr as _;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::claims::{ConnectionClaims, RegisteredClaims, SubscriptionClaims};
use crate::error::{KeyError, TokenError};

/// Token verification settings; embeddable in the server's TOML config.
///
/// Several keys may be set at once: the token header's `alg` picks the key.
/// Empty strings count as unset. PEM fields hold the PEM text itself.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifierConfig {
    /// Shared secret for HS256/HS384/HS512.
    #[serde(alias = "hmac_secret_key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// RSA public key (PEM, SPKI or PKCS#1) for RS256/384/512 and PS256/384/512.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_public_key: Option<String>,
    /// ECDSA public key (PEM, SPKI) for ES256 (P-256) or ES384 (P-384).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecdsa_public_key: Option<String>,
    /// Ed25519 public key (PEM, SPKI) for EdDSA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ed25519_public_key: Option<String>,
    /// If set, the token's `aud` must contain this value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// If set, the token's `iss` must equal this value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Allowed clock skew in seconds for `exp` and `nbf` checks.
    pub leeway_secs: u64,
}

impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_deref().map(|_| "<redacted>");
        f.debug_struct("VerifierConfig")
            .field("hmac_secret", &redact(&self.hmac_secret))
            .field("rsa_public_key", &self.rsa_public_key.is_some())
            .field("ecdsa_public_key", &self.ecdsa_public_key.is_some())
            .field("ed25519_public_key", &self.ed25519_public_key.is_some())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Verifies connection and subscription tokens; build once, share freely.
///
/// Time is always an argument (`now_unix_secs`): the verifier never reads the
/// clock, so callers and tests control it.
#[derive(Clone)]
pub struct Verifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    ed: Option<DecodingKey>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: i64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("rsa", &self.rsa.is_some())
            .field("ec", &self.ec.is_some())
            .field("ed", &self.ed.is_some())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

fn load_pem(
    which: &'static str,
    pem: Option<&str>,
    parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
) -> Result<Option<DecodingKey>, KeyError> {
    pem.map(|p| parse(p.as_bytes()).map_err(|e| KeyError::new(which, e.to_string())))
        .transpose()
}

/// Makes sure jsonwebtoken has a crypto provider even if feature unification
/// in the final binary enables more than one backend.
pub(crate) fn ensure_crypto_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

impl Verifier {
    /// Builds a verifier, parsing every configured key; a bad PEM is an error.
    ///
    /// A config with no keys at all is accepted: every token then fails with
    /// [`TokenError::NotConfigured`].
    pub fn new(config: &VerifierConfig) -> Result<Self, KeyError> {
        ensure_crypto_provider();
        let hmac = non_empty(&config.hmac_secret).map(|s| DecodingKey::from_secret(s.as_bytes()));
        let rsa = load_pem(
            "rsa_public_key",
            non_empty(&config.rsa_public_key),
            DecodingKey::from_rsa_pem,
        )?;
        let ec = load_pem(
            "ecdsa_public_key",
            non_empty(&config.ecdsa_public_key),
            DecodingKey::from_ec_pem,
        )?;
        let ed = load_pem(
            "ed25519_public_key",
            non_empty(&config.ed25519_public_key),
            DecodingKey::from_ed_pem,
        )?;
        Ok(Verifier {
            hmac,
            rsa,
            ec,
            ed,
            audience: non_empty(&config.audience).map(str::to_owned),
            issuer: non_empty(&config.issuer).map(str::to_owned),
            leeway: i64::try_from(config.leeway_secs).unwrap_or(i64::MAX),
        })
    }

    /// Whether at least one key is configured.
    pub fn is_configured(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ec.is_some() || self.ed.is_some()
    }

    /// Verifies a connection token at time `now_unix_secs`.
    pub fn verify_connection(
        &self,
        token: &str,
        now_unix_secs: i64,
    ) -> Result<ConnectionClaims, TokenError> {
        let claims: ConnectionClaims = self.verify_claims(token, now_unix_secs)?;
        claims.validate()?;
        Ok(claims)
    }

    /// Verifies a subscription token for `channel` at time `now_unix_secs`.
    ///
    /// The token's `channel` claim must equal `channel`. The caller must also
    /// check that the returned `sub` equals the connection's user id.
    pub fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
        now_unix_secs: i64,
    ) -> Result<SubscriptionClaims, TokenError> {
        let claims: SubscriptionClaims = self.verify_claims(token, now_unix_secs)?;
        claims.validate()?;
        if claims.channel != channel {
            return Err(TokenError::invalid("channel mismatch"));
        }
        Ok(claims)
    }

    /// Verifies signature, `exp`, `nbf`, `aud` and `iss` of any token and
    /// deserializes its payload into `T` (hook for other token kinds, such as
    /// OAuth access tokens).
    pub fn verify_claims<T: DeserializeOwned>(
        &self,
        token: &str,
        now_unix_secs: i64,
    ) -> Result<T, TokenError> {
        let payload = self.verify_signature(token)?;
        if !payload.get().trim_start().starts_with('{') {
            return Err(TokenError::invalid("claims are not a JSON object"));
        }
        let registered: RegisteredClaims = serde_json::from_str(payload.get())
            .map_err(|_| TokenError::invalid("malformed registered claims"))?;
        self.check_registered(&registered, now_unix_secs)?;
        serde_json::from_str(payload.get()).map_err(|_| TokenError::invalid("malformed claims"))
    }

    fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        match alg.family() {
            AlgorithmFamily::Hmac => self.hmac.as_ref(),
            AlgorithmFamily::Rsa => self.rsa.as_ref(),
            AlgorithmFamily::Ec => self.ec.as_ref(),
            AlgorithmFamily::Ed => self.ed.as_ref(),
        }
    }

    /// Checks the header and signature; returns the raw JSON payload.
    fn verify_signature(&self, token: &str) -> Result<Box<RawValue>, TokenError> {
        if !self.is_configured() {
            return Err(TokenError::NotConfigured);
        }
        let alg = header_alg(token)?;
        let key = self.key_for(alg).ok_or(TokenError::NotConfigured)?;

        let mut validation = Validation::new(alg);
        // Time, audience and issuer are checked by us against the given clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;

        jsonwebtoken::decode::<Box<RawValue>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::invalid(decode_error_reason(e.kind())))
    }

    fn check_registered(&self, claims: &RegisteredClaims, now: i64) -> Result<(), TokenError> {
        if let Some(expected) = &self.audience
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(expected))
        {
            return Err(TokenError::invalid("audience mismatch"));
        }
        if let Some(expected) = &self.issuer
            && claims.iss.as_deref() != Some(expected.as_str())
        {
            return Err(TokenError::invalid("issuer mismatch"));
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(TokenError::invalid("token not yet valid"));
        }
        if let Some(exp) = claims.exp
            && now.saturating_sub(self.leeway) >= exp
        {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
}

/// Reads the `alg` of the JOSE header, refusing `none` and unknown algorithms.
fn header_alg(token: &str) -> Result<Algorithm, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::invalid("malformed token"));
    };
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::invalid("malformed token header"))?;
    let header: RawHeader = serde_json::from_slice(&header)
        .map_err(|_| TokenError::invalid("malformed token header"))?;
    let alg = header
        .alg
        .ok_or_else(|| TokenError::invalid("missing alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::invalid("alg none is not allowed"));
    }
    Algorithm::from_str(&alg).map_err(|_| TokenError::invalid("unsupported alg"))
}

fn decode_error_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm does not match key",
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            "key does not fit algorithm"
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token",
        _ => "verification failed",
    }
}
