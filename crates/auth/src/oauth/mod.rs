//! The built-in OAuth 2.0 authorization server, sans IO.
//!
//! [`AuthState`] holds users, API keys, OAuth clients, signing keys, refresh
//! token families (sessions) and the access-token revocation list. It never
//! reads the clock (`now` is unix seconds, passed in), opens a socket or
//! touches storage.
//!
//! # Driving contract
//!
//! Durable state is a projection of an append-only stream of [`AuthEvent`]s:
//!
//! 1. A mutating call (`create_user`, `token`, `revoke`, …) *decides* and
//!    returns the events to persist; it does not change durable state.
//! 2. The caller appends each event to the store (stream `auth`), in order.
//! 3. Only then the caller feeds each event to [`AuthState::apply`].
//! 4. At start, replay the stream through [`AuthState::apply`], then call
//!    [`AuthState::ensure_signing_key`] (and persist + apply what it returns).
//!
//! Hold one lock over the state from step 1 to step 3, so two requests
//! cannot both spend the same refresh token. Events that revoke something
//! name the live connections to drop ([`AuthEvent::revocation`]).
//!
//! In a cluster every node that verifies tokens tails the `auth` stream and
//! applies each new event, so the revocation state (revoked `jti`s until
//! their `exp`, ended sessions, disabled users, revoked API keys) converges
//! on every node; [`AuthState::prune`] drops entries that expired.
//!
//! Short-lived things live only in memory and are not events: authorization
//! codes ([`AuthState::issue_code`]) and login rate-limit buckets. A restart
//! forgets them (codes live 60 s; users simply log in again).
//!
//! ```no_run
//! use switchboard_auth::oauth::{AuthConfig, AuthEvent, AuthState, TokenRequest};
//!
//! # fn append_event(_stream: &str, _kind: &str, _payload: &str) {}
//! # fn replay() -> Vec<AuthEvent> { Vec::new() }
//! let mut state = AuthState::new(AuthConfig::default());
//! for event in replay() {
//!     state.apply(&event);
//! }
//! let now = 1_700_000_000;
//! for event in state.ensure_signing_key(now) {
//!     append_event("auth", event.kind(), &serde_json::to_string(&event).unwrap());
//!     state.apply(&event);
//! }
//!
//! // POST /oauth/token
//! let req = TokenRequest {
//!     grant_type: Some("refresh_token".into()),
//!     refresh_token: Some("…".into()),
//!     client_id: Some("sbc_…".into()),
//!     ..Default::default()
//! };
//! let (body, status, events) = match state.token(&req, None, now) {
//!     Ok((response, events)) => (serde_json::to_value(&response).unwrap(), 200, events),
//!     Err((error, events)) => (serde_json::to_value(&error).unwrap(), error.http_status(), events),
//! };
//! for event in &events {
//!     append_event("auth", event.kind(), &serde_json::to_string(event).unwrap());
//!     state.apply(event);
//! }
//! # let _ = (body, status);
//! ```
//!
//! # Secrets
//!
//! Passwords are stored as argon2id PHC strings; API key secrets, client
//! secrets and refresh tokens as SHA-256 hex (they are 256-bit random).
//! Authorization codes are kept in memory by their hash. `Debug` output of
//! every type here redacts secrets, and no error message carries one.

mod access;
mod accounts;
mod config;
mod error;
mod events;
mod external;
mod flows;
mod keys;
mod util;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub use access::AccessClaims;
pub use accounts::{ApiKeyCreated, ApiKeyRecord, ClientRecord, UserRecord};
pub use config::{AuthConfig, ExternalIssuer, PasswordHashing};
pub use error::{AuthError, AuthorizeError, LoginError, OAuthError, OAuthErrorCode};
pub use events::{AuthEvent, Revocation, Sensitive};
pub use flows::{AuthorizeContext, AuthorizeRequest, SessionRecord, TokenRequest, TokenResponse};
pub use keys::SigningKeyRecord;

use crate::grants::Grants;
use accounts::LoginLimiter;
use external::ExternalKey;
use keys::SigningKey;

/// The authorization server's state: the projection of the auth event
/// stream plus in-memory codes and rate limits. See the [module docs](self)
/// for how to drive it.
pub struct AuthState {
    config: AuthConfig,
    argon2_params: argon2::Params,
    users: BTreeMap<String, User>,
    /// Lower-cased username → user id.
    usernames: HashMap<String, String>,
    api_keys: BTreeMap<String, ApiKey>,
    clients: BTreeMap<String, Client>,
    /// In creation order; the last unretired one signs.
    signing_keys: Vec<SigningKey>,
    /// Refresh families by id (= session id).
    families: HashMap<String, Family>,
    /// Refresh tokens by SHA-256 hex.
    refresh_tokens: HashMap<String, RefreshEntry>,
    /// Revoked access tokens: jti → exp.
    revoked_access: HashMap<String, i64>,
    /// Authorization codes by SHA-256 hex (memory only).
    codes: HashMap<String, CodeEntry>,
    limiter: LoginLimiter,
    external_keys: HashMap<String, Vec<ExternalKey>>,
    dummy_hash: Option<String>,
    password_verifications: u64,
}

#[derive(Clone)]
struct User {
    id: String,
    username: String,
    password_hash: Sensitive,
    grants: Grants,
    created_at: i64,
    disabled: bool,
}

#[derive(Clone)]
struct ApiKey {
    id: String,
    name: String,
    secret_hash: String,
    created_at: i64,
}

#[derive(Clone)]
struct Client {
    id: String,
    name: String,
    redirect_uris: Vec<String>,
    secret_hash: Option<String>,
    created_at: i64,
}

#[derive(Clone)]
pub(crate) struct Family {
    id: String,
    user_id: String,
    client_id: String,
    scope: String,
    started_at: i64,
    last_used_at: i64,
    /// Expiry of the family's current refresh token.
    expires_at: i64,
    ended: bool,
}

#[derive(Clone)]
struct RefreshEntry {
    family: String,
    expires_at: i64,
    used: bool,
}

#[derive(Clone)]
struct CodeEntry {
    client_id: String,
    redirect_uri: String,
    redirect_uri_given: bool,
    challenge: String,
    scope: String,
    user_id: String,
    expires_at: i64,
    /// Set once exchanged: the family and access token it produced.
    exchanged: Option<(String, String, i64)>,
    /// Set once any exchange was attempted.
    consumed: bool,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState::new(AuthConfig::default())
    }
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthState")
            .field("issuer", &self.config.issuer)
            .field("users", &self.users.len())
            .field("api_keys", &self.api_keys.len())
            .field("clients", &self.clients.len())
            .field("signing_keys", &self.signing_keys.len())
            .field("families", &self.families.len())
            .field("revoked_access", &self.revoked_access.len())
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// An empty state with `config`. Invalid argon2 parameters fall back to
    /// the defaults: validate the config with [`AuthConfig::validate`] when
    /// loading it.
    pub fn new(config: AuthConfig) -> Self {
        let argon2_params = config
            .password_hashing
            .params()
            .or_else(|_| PasswordHashing::default().params())
            .unwrap_or_default();
        AuthState {
            config,
            argon2_params,
            users: BTreeMap::new(),
            usernames: HashMap::new(),
            api_keys: BTreeMap::new(),
            clients: BTreeMap::new(),
            signing_keys: Vec::new(),
            families: HashMap::new(),
            refresh_tokens: HashMap::new(),
            revoked_access: HashMap::new(),
            codes: HashMap::new(),
            limiter: LoginLimiter::default(),
            external_keys: HashMap::new(),
            dummy_hash: None,
            password_verifications: 0,
        }
    }

    /// The configuration this state was built with.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// How many argon2 password verifications ran so far (logins of known
    /// and unknown users alike run exactly one each); for metrics and tests.
    pub fn password_verifications(&self) -> u64 {
        self.password_verifications
    }

    /// Applies one event (from a mutating call, or replayed from the
    /// stream). Unknown ids are ignored, so replaying is always safe.
    pub fn apply(&mut self, e: &AuthEvent) {
        match e {
            AuthEvent::UserCreated {
                id,
                username,
                password_hash,
                grants,
                created_at,
            } => {
                self.usernames.insert(username.to_lowercase(), id.clone());
                self.users.insert(
                    id.clone(),
                    User {
                        id: id.clone(),
                        username: username.clone(),
                        password_hash: password_hash.clone(),
                        grants: grants.clone(),
                        created_at: *created_at,
                        disabled: false,
                    },
                );
            }
            AuthEvent::UserDisabled { id, .. } => {
                if let Some(u) = self.users.get_mut(id) {
                    u.disabled = true;
                }
            }
            AuthEvent::ApiKeyCreated {
                id,
                name,
                secret_hash,
                created_at,
            } => {
                self.api_keys.insert(
                    id.clone(),
                    ApiKey {
                        id: id.clone(),
                        name: name.clone(),
                        secret_hash: secret_hash.clone(),
                        created_at: *created_at,
                    },
                );
            }
            AuthEvent::ApiKeyRevoked { id, .. } => {
                self.api_keys.remove(id);
            }
            AuthEvent::ClientCreated {
                id,
                name,
                redirect_uris,
                secret_hash,
                created_at,
            } => {
                self.clients.insert(
                    id.clone(),
                    Client {
                        id: id.clone(),
                        name: name.clone(),
                        redirect_uris: redirect_uris.clone(),
                        secret_hash: secret_hash.clone(),
                        created_at: *created_at,
                    },
                );
            }
            AuthEvent::ClientDeleted { id, .. } => {
                self.clients.remove(id);
            }
            AuthEvent::SigningKeyCreated {
                kid,
                alg,
                pkcs8_b64,
                created_at,
            } => {
                if let Some(key) = SigningKey::load(kid, alg, &pkcs8_b64.0, *created_at) {
                    self.signing_keys.retain(|k| k.kid != *kid);
                    self.signing_keys.push(key);
                }
            }
            AuthEvent::SigningKeyRetired { kid, .. } => {
                for k in &mut self.signing_keys {
                    if k.kid == *kid {
                        k.retired = true;
                    }
                }
            }
            AuthEvent::SessionStarted {
                session_id,
                user_id,
                client_id,
                scope,
                at,
            } => {
                self.families.insert(
                    session_id.clone(),
                    Family {
                        id: session_id.clone(),
                        user_id: user_id.clone(),
                        client_id: client_id.clone(),
                        scope: scope.clone(),
                        started_at: *at,
                        last_used_at: *at,
                        expires_at: *at,
                        ended: false,
                    },
                );
            }
            AuthEvent::RefreshIssued {
                family,
                token_hash,
                expires_at,
                ..
            } => {
                if let Some(f) = self.families.get_mut(family) {
                    f.expires_at = *expires_at;
                }
                self.refresh_tokens.insert(
                    token_hash.clone(),
                    RefreshEntry {
                        family: family.clone(),
                        expires_at: *expires_at,
                        used: false,
                    },
                );
            }
            AuthEvent::RefreshRotated {
                family,
                old_hash,
                new_hash,
                expires_at,
                at,
            } => {
                if let Some(old) = self.refresh_tokens.get_mut(old_hash) {
                    old.used = true;
                }
                if let Some(f) = self.families.get_mut(family) {
                    f.expires_at = *expires_at;
                    f.last_used_at = *at;
                }
                self.refresh_tokens.insert(
                    new_hash.clone(),
                    RefreshEntry {
                        family: family.clone(),
                        expires_at: *expires_at,
                        used: false,
                    },
                );
            }
            AuthEvent::FamilyRevoked { family, .. } => {
                if let Some(f) = self.families.get_mut(family) {
                    f.ended = true;
                }
            }
            AuthEvent::SessionEnded { session_id, .. } => {
                if let Some(f) = self.families.get_mut(session_id) {
                    f.ended = true;
                }
            }
            AuthEvent::AccessRevoked { jti, exp } => {
                self.revoked_access.insert(jti.clone(), *exp);
            }
            AuthEvent::Audit { .. } => {}
        }
    }

    /// Forgets what can no longer matter at `now`: revoked access tokens
    /// past their `exp`, expired refresh tokens and codes, idle rate-limit
    /// buckets. Call it now and then (e.g. every minute, and after replay).
    pub fn prune(&mut self, now: i64) {
        self.revoked_access.retain(|_, exp| *exp > now);
        self.refresh_tokens.retain(|_, r| r.expires_at > now);
        self.codes
            .retain(|_, c| c.expires_at + CODE_GRACE_SECS > now);
        let window = util::secs(self.config.login_window);
        self.limiter.prune(now, window);
    }
}

/// How long an exchanged code is remembered past its expiry, so a replay
/// of it still revokes the tokens it produced.
const CODE_GRACE_SECS: i64 = 600;

#[cfg(test)]
mod tests {
    #[test]
    fn state_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::AuthState>();
    }
}
