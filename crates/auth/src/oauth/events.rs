//! The durable auth events ([`AuthEvent`]) and the [`Sensitive`] wrapper
//! that keeps key material out of logs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::grants::Grants;

/// A string that is stored and serialized as-is but never shown by `Debug`
/// (private keys, password hashes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sensitive(pub String);

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One durable change of the auth state. The server appends each event to
/// the `auth` stream, then hands it to [`AuthState::apply`]; replaying the
/// stream into a fresh state rebuilds it.
///
/// Secrets appear only as SHA-256 hex (API key secrets, client secrets,
/// refresh tokens: all high-entropy) or argon2id PHC strings (passwords).
/// The one exception is the signing key's PKCS#8 document: the event log
/// is where the key lives, so protect the store accordingly.
///
/// [`AuthState::apply`]: crate::oauth::AuthState::apply
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AuthEvent {
    /// A user account was created.
    UserCreated {
        /// User id (`usr_…`), the `sub` of their tokens.
        id: String,
        /// Login name, unique case-insensitively.
        username: String,
        /// argon2id PHC string.
        password_hash: Sensitive,
        /// What the user's tokens allow.
        grants: Grants,
        /// Unix seconds.
        created_at: i64,
    },
    /// A user account was disabled: no login, no refresh, tokens refused.
    UserDisabled {
        /// User id.
        id: String,
        /// Unix seconds.
        at: i64,
    },
    /// An API key for an app backend was created.
    ApiKeyCreated {
        /// Key id (`sbk_…`).
        id: String,
        /// Free-form label.
        name: String,
        /// SHA-256 hex of the secret.
        secret_hash: String,
        /// Unix seconds.
        created_at: i64,
    },
    /// An API key was revoked.
    ApiKeyRevoked {
        /// Key id.
        id: String,
        /// Unix seconds.
        at: i64,
    },
    /// An OAuth client was registered.
    ClientCreated {
        /// Client id (`sbc_…`).
        id: String,
        /// Display name (shown on the login page).
        name: String,
        /// Registered redirect URIs, compared exactly.
        redirect_uris: Vec<String>,
        /// SHA-256 hex of the secret for confidential clients; `None` for
        /// public (PKCE-only) clients.
        secret_hash: Option<String>,
        /// Unix seconds.
        created_at: i64,
    },
    /// An OAuth client was deleted; its sessions are revoked by separate events.
    ClientDeleted {
        /// Client id.
        id: String,
        /// Unix seconds.
        at: i64,
    },
    /// A signing key was generated; the newest unretired key signs.
    SigningKeyCreated {
        /// Key id (JWT header `kid`, JWKS `kid`).
        kid: String,
        /// JWS algorithm, `EdDSA`.
        alg: String,
        /// The private key: PKCS#8 DER, standard base64.
        pkcs8_b64: Sensitive,
        /// Unix seconds.
        created_at: i64,
    },
    /// A signing key was withdrawn from the JWKS; its tokens stop verifying.
    SigningKeyRetired {
        /// Key id.
        kid: String,
        /// Unix seconds.
        at: i64,
    },
    /// The first refresh token of a family (session) was issued.
    RefreshIssued {
        /// Family id, equal to the session id.
        family: String,
        /// SHA-256 hex of the refresh token.
        token_hash: String,
        /// When this refresh token expires (unix seconds).
        expires_at: i64,
        /// Unix seconds.
        at: i64,
    },
    /// A refresh token was used and replaced by a new one of the same family.
    RefreshRotated {
        /// Family id.
        family: String,
        /// SHA-256 hex of the token that was used (now spent).
        old_hash: String,
        /// SHA-256 hex of the new token.
        new_hash: String,
        /// When the new token expires (unix seconds).
        expires_at: i64,
        /// Unix seconds; the session's last activity.
        at: i64,
    },
    /// Every token of a family was revoked (reuse detected, revocation,
    /// disabled user, deleted client, session limits); its session ends.
    FamilyRevoked {
        /// Family id (= session id).
        family: String,
        /// Why, a fixed phrase.
        reason: String,
        /// Unix seconds.
        at: i64,
    },
    /// One access token was revoked until it expires.
    AccessRevoked {
        /// Its `jti`.
        jti: String,
        /// Its `exp`: after this the entry can be forgotten.
        exp: i64,
    },
    /// A user logged in through a client and got a refresh token family.
    SessionStarted {
        /// Session id (= refresh family id), claim `sid` of its access tokens.
        session_id: String,
        /// User id.
        user_id: String,
        /// OAuth client id.
        client_id: String,
        /// Granted scope.
        scope: String,
        /// Unix seconds.
        at: i64,
    },
    /// A session was ended (logout, `session_end`); its family is revoked.
    SessionEnded {
        /// Session id.
        session_id: String,
        /// Why, a fixed phrase.
        reason: String,
        /// Unix seconds.
        at: i64,
    },
    /// An audit record; changes nothing.
    Audit {
        /// `login`, `login_failed`, `logout`, `token_issued`,
        /// `token_refused`, `token_revoked`, `user_created`,
        /// `user_disabled`, `apikey_created`, `apikey_revoked`,
        /// `client_created`, `client_deleted`, `signing_key_created`,
        /// `signing_key_retired`, `session_ended`.
        action: String,
        /// User id (or the attempted username for failed logins).
        user: Option<String>,
        /// OAuth client or API key id.
        client: Option<String>,
        /// Details, never a secret.
        detail: String,
        /// Unix seconds.
        at: i64,
    },
}

/// What live connections an applied event invalidates, for the server to
/// disconnect them (on every node once events are shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Connections authenticated by the access token with this `jti`.
    Token {
        /// The token's `jti`.
        jti: String,
    },
    /// Connections whose token carries this `sid`.
    Session {
        /// The session id.
        sid: String,
    },
    /// Every connection of this user.
    User {
        /// The user id (`sub`).
        user_id: String,
    },
}

impl AuthEvent {
    /// The live connections this event invalidates, if any.
    pub fn revocation(&self) -> Option<Revocation> {
        match self {
            AuthEvent::AccessRevoked { jti, .. } => Some(Revocation::Token { jti: jti.clone() }),
            AuthEvent::FamilyRevoked { family, .. } => Some(Revocation::Session {
                sid: family.clone(),
            }),
            AuthEvent::SessionEnded { session_id, .. } => Some(Revocation::Session {
                sid: session_id.clone(),
            }),
            AuthEvent::UserDisabled { id, .. } => Some(Revocation::User {
                user_id: id.clone(),
            }),
            AuthEvent::ApiKeyRevoked { id, .. } => Some(Revocation::User {
                user_id: format!("apikey:{id}"),
            }),
            _ => None,
        }
    }

    /// The event's type name as serialized in `type` (also a good store `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            AuthEvent::UserCreated { .. } => "UserCreated",
            AuthEvent::UserDisabled { .. } => "UserDisabled",
            AuthEvent::ApiKeyCreated { .. } => "ApiKeyCreated",
            AuthEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            AuthEvent::ClientCreated { .. } => "ClientCreated",
            AuthEvent::ClientDeleted { .. } => "ClientDeleted",
            AuthEvent::SigningKeyCreated { .. } => "SigningKeyCreated",
            AuthEvent::SigningKeyRetired { .. } => "SigningKeyRetired",
            AuthEvent::RefreshIssued { .. } => "RefreshIssued",
            AuthEvent::RefreshRotated { .. } => "RefreshRotated",
            AuthEvent::FamilyRevoked { .. } => "FamilyRevoked",
            AuthEvent::AccessRevoked { .. } => "AccessRevoked",
            AuthEvent::SessionStarted { .. } => "SessionStarted",
            AuthEvent::SessionEnded { .. } => "SessionEnded",
            AuthEvent::Audit { .. } => "Audit",
        }
    }

    pub(crate) fn audit(
        action: &str,
        user: Option<&str>,
        client: Option<&str>,
        detail: impl Into<String>,
        at: i64,
    ) -> AuthEvent {
        AuthEvent::Audit {
            action: action.to_owned(),
            user: user.map(str::to_owned),
            client: client.map(str::to_owned),
            detail: detail.into(),
            at,
        }
    }
}
