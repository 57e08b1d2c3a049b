//! Configuration of the authorization server: [`AuthConfig`],
//! [`ExternalIssuer`], [`PasswordHashing`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_core::duration::{serde_opt, serde_str};

use crate::grants::Grants;
use crate::oauth::error::AuthError;

/// Settings of the built-in OAuth 2.0 authorization server (TOML section
/// `[auth]` in the server config). Every field has a default; durations are
/// strings such as `"15m"` or `"30d"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The issuer URL (`iss` of our tokens, base of the metadata endpoints),
    /// without a trailing slash. Default `http://127.0.0.1:8000`.
    pub issuer: String,
    /// If set, access tokens carry this `aud` and [`AuthState::verify_access`]
    /// requires it. Default unset.
    ///
    /// [`AuthState::verify_access`]: crate::oauth::AuthState::verify_access
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Lifetime of user access tokens. Default 15 minutes.
    #[serde(with = "serde_str")]
    pub access_ttl: Duration,
    /// Lifetime of each refresh token (rotation issues a fresh one). Default 30 days.
    #[serde(with = "serde_str")]
    pub refresh_ttl: Duration,
    /// Lifetime of an authorization code. Default 60 seconds.
    #[serde(with = "serde_str")]
    pub code_ttl: Duration,
    /// Lifetime of access tokens from the client_credentials grant (API
    /// keys). Default 5 minutes.
    #[serde(with = "serde_str")]
    pub api_token_ttl: Duration,
    /// A session whose refresh token is unused for this long ends. Default unset.
    #[serde(with = "serde_opt", skip_serializing_if = "Option::is_none")]
    pub session_idle_timeout: Option<Duration>,
    /// A session ends this long after the login, whatever happens. Default unset.
    #[serde(with = "serde_opt", skip_serializing_if = "Option::is_none")]
    pub session_max_lifetime: Option<Duration>,
    /// Failed logins allowed per account within `login_window`; `0` disables
    /// the limit. Default 5.
    pub login_attempts_per_account: u32,
    /// Failed logins allowed per client IP (IPv6: per /64) within
    /// `login_window`; `0` disables the limit. Default 20.
    pub login_attempts_per_ip: u32,
    /// The sliding window of the login limits. Default 5 minutes.
    #[serde(with = "serde_str")]
    pub login_window: Duration,
    /// argon2id cost of newly hashed passwords.
    pub password_hashing: PasswordHashing,
    /// Identity providers whose tokens are accepted ([`ExternalIssuer`]).
    pub external_issuers: Vec<ExternalIssuer>,
    /// Usernames of built-in users whose own access tokens (from the
    /// authorization code flow) the server API also accepts as
    /// `Authorization: Bearer`, so an operator can use the dashboard from a
    /// browser. Default empty: only API keys and their client-credentials
    /// tokens call the API.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_users: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "http://127.0.0.1:8000".into(),
            audience: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            api_token_ttl: Duration::from_secs(5 * 60),
            session_idle_timeout: None,
            session_max_lifetime: None,
            login_attempts_per_account: 5,
            login_attempts_per_ip: 20,
            login_window: Duration::from_secs(5 * 60),
            password_hashing: PasswordHashing::default(),
            external_issuers: Vec::new(),
            admin_users: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Checks what serde cannot: a usable issuer URL, non-zero lifetimes,
    /// valid argon2 parameters, unique external issuers with a JWKS source.
    pub fn validate(&self) -> Result<(), AuthError> {
        if !(self.issuer.starts_with("http://") || self.issuer.starts_with("https://"))
            || self.issuer.ends_with('/')
        {
            return Err(AuthError::InvalidConfig(
                "issuer must be an http(s) URL without a trailing slash",
            ));
        }
        for (d, what) in [
            (self.access_ttl, "access_ttl must be at least 1s"),
            (self.refresh_ttl, "refresh_ttl must be at least 1s"),
            (self.code_ttl, "code_ttl must be at least 1s"),
            (self.api_token_ttl, "api_token_ttl must be at least 1s"),
            (self.login_window, "login_window must be at least 1s"),
        ] {
            if d.as_secs() == 0 {
                return Err(AuthError::InvalidConfig(what));
            }
        }
        self.password_hashing.params()?;
        let mut seen = std::collections::BTreeSet::new();
        for ext in &self.external_issuers {
            if ext.issuer.is_empty() {
                return Err(AuthError::InvalidConfig("external issuer without `issuer`"));
            }
            if !seen.insert(ext.issuer.as_str()) {
                return Err(AuthError::InvalidConfig("external issuer listed twice"));
            }
            if ext.issuer == self.issuer {
                return Err(AuthError::InvalidConfig(
                    "an external issuer must differ from our own issuer",
                ));
            }
            if ext.jwks_url.is_none() && ext.jwks_file.is_none() {
                return Err(AuthError::InvalidConfig(
                    "external issuer needs jwks_url or jwks_file",
                ));
            }
            if ext.user_claim.is_empty() {
                return Err(AuthError::InvalidConfig(
                    "external issuer with empty user_claim",
                ));
            }
        }
        Ok(())
    }

    /// The external issuer configured for `iss`, if any.
    pub fn external_issuer(&self, iss: &str) -> Option<&ExternalIssuer> {
        self.external_issuers.iter().find(|e| e.issuer == iss)
    }
}

/// argon2id cost parameters for newly hashed passwords. Existing hashes keep
/// the parameters they were made with (they are part of the PHC string).
///
/// The default follows the OWASP recommendation (19 MiB, 2 passes, 1 lane).
/// Tests may use [`PasswordHashing::insecure_fast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashing {
    /// Memory cost in KiB (at least 8 × `parallelism`).
    pub memory_kib: u32,
    /// Number of passes (at least 1).
    pub iterations: u32,
    /// Degree of parallelism (lanes, at least 1).
    pub parallelism: u32,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        PasswordHashing {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordHashing {
    /// The cheapest parameters argon2 accepts: for tests only, never for
    /// real passwords.
    pub fn insecure_fast() -> Self {
        PasswordHashing {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    pub(crate) fn params(&self) -> Result<argon2::Params, AuthError> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|_| AuthError::InvalidConfig("invalid password_hashing parameters"))
    }
}

/// A trusted external identity provider whose JWTs are accepted
/// ([`AuthState::verify_external`]).
///
/// [`AuthState::verify_external`]: crate::oauth::AuthState::verify_external
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalIssuer {
    /// The provider's `iss` value, compared exactly.
    pub issuer: String,
    /// If set, the token's `aud` must contain it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Where the server fetches the provider's JWKS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// A local JWKS file, instead of `jwks_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// The claim (dotted path) holding the user id. Default `sub`.
    pub user_claim: String,
    /// The claim (dotted path, e.g. `realm_access.roles`) holding the user's
    /// roles: an array of strings or one string (space-separated roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles_claim: Option<String>,
    /// Grants per role; a user gets the union over their roles.
    pub role_grants: BTreeMap<String, Grants>,
    /// Grants every user of this issuer gets.
    pub default_grants: Grants,
}

impl Default for ExternalIssuer {
    fn default() -> Self {
        ExternalIssuer {
            issuer: String::new(),
            audience: None,
            jwks_url: None,
            jwks_file: None,
            user_claim: "sub".into(),
            roles_claim: None,
            role_grants: BTreeMap::new(),
            default_grants: Grants::default(),
        }
    }
}

impl ExternalIssuer {
    /// An issuer with defaults (`user_claim = "sub"`, no roles, no grants).
    pub fn new(issuer: impl Into<String>) -> Self {
        ExternalIssuer {
            issuer: issuer.into(),
            ..Default::default()
        }
    }
}
