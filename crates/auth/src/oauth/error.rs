//! Errors of the authorization server, by cause: management calls
//! ([`AuthError`]), the login form ([`LoginError`]), the authorization
//! endpoint ([`AuthorizeError`]) and the OAuth 2.0 wire errors
//! ([`OAuthError`]). None carries a secret, a password or a token.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A management operation (users, keys, clients, sessions, config) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The username is empty, longer than 64 characters, or uses characters
    /// outside `[a-zA-Z0-9_.\-@]`.
    #[error("invalid username: 1 to 64 characters of a-z A-Z 0-9 _ . - @")]
    InvalidUsername,
    /// Another user has this name (names compare case-insensitively).
    #[error("username already taken")]
    UsernameTaken,
    /// The password does not meet the length rules (8 to 1024 bytes).
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// No such (active) API key.
    #[error("unknown API key")]
    UnknownApiKey,
    /// No such OAuth client.
    #[error("unknown client")]
    UnknownClient,
    /// A client name or redirect URI was refused.
    #[error("invalid client: {0}")]
    InvalidClient(&'static str),
    /// No such session.
    #[error("unknown session")]
    UnknownSession,
    /// No such (published) signing key, or it is the active one.
    #[error("signing key: {0}")]
    SigningKey(&'static str),
    /// The issuer is not among the configured external issuers.
    #[error("unknown external issuer")]
    UnknownIssuer,
    /// A JWKS document was refused.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(&'static str),
    /// The configuration is unusable.
    #[error("invalid auth configuration: {0}")]
    InvalidConfig(&'static str),
    /// Hashing failed (should not happen with valid parameters).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Why a login was refused.
///
/// Unknown user and wrong password are the same [`LoginError::InvalidCredentials`];
/// `Disabled` is only told to someone who knows the right password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Unknown user or wrong password.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed attempts for this account or from this address.
    #[error("too many failed login attempts; try again in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next attempt may succeed (at least 1).
        retry_after_secs: u64,
    },
    /// The account is disabled.
    #[error("account disabled")]
    Disabled,
}

/// The `error` code of an OAuth 2.0 error response (RFC 6749 §4.1.2.1, §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthErrorCode {
    /// A parameter is missing, repeated, malformed or unsupported.
    InvalidRequest,
    /// Client authentication failed (HTTP 401).
    InvalidClient,
    /// The code or refresh token is invalid, expired, revoked or was issued
    /// to another client, or the PKCE verifier does not match.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// The requested scope is invalid or exceeds what was granted.
    InvalidScope,
    /// The user or server denied the request (authorization endpoint).
    AccessDenied,
    /// The response type is not supported (authorization endpoint).
    UnsupportedResponseType,
    /// An unexpected server condition (e.g. no signing key yet).
    ServerError,
}

impl OAuthErrorCode {
    /// The wire spelling, e.g. `invalid_grant`.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthErrorCode::ServerError => "server_error",
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OAuth 2.0 error response body: `{"error": "...", "error_description": "..."}`.
///
/// The description is a fixed phrase, safe to show and log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}: {error_description}")]
pub struct OAuthError {
    /// The error code.
    pub error: OAuthErrorCode,
    /// A human-readable explanation.
    pub error_description: String,
}

impl OAuthError {
    /// An error with a code and description.
    pub fn new(error: OAuthErrorCode, description: impl Into<String>) -> Self {
        OAuthError {
            error,
            error_description: description.into(),
        }
    }

    /// The HTTP status of this error at the token, revocation or
    /// introspection endpoint: 401 for `invalid_client` (send
    /// `WWW-Authenticate: Basic` with it), 500 for `server_error`, else 400.
    pub fn http_status(&self) -> u16 {
        match self.error {
            OAuthErrorCode::InvalidClient => 401,
            OAuthErrorCode::ServerError => 500,
            _ => 400,
        }
    }

    pub(crate) fn invalid_request(d: &str) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, d)
    }
    pub(crate) fn invalid_client(d: &str) -> Self {
        Self::new(OAuthErrorCode::InvalidClient, d)
    }
    pub(crate) fn invalid_grant(d: &str) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, d)
    }
    pub(crate) fn invalid_scope(d: &str) -> Self {
        Self::new(OAuthErrorCode::InvalidScope, d)
    }
}

/// Why an authorization request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// The client is unknown or the redirect URI is missing or not
    /// registered: show the error to the user, never redirect (RFC 6749 §4.1.2.1).
    #[error("{0}")]
    NoRedirect(OAuthError),
    /// Anything else: send the user back to the (verified) `redirect_uri`
    /// with `error`, `error_description` and `state` ([`AuthorizeError::redirect_url`]).
    #[error("{error}")]
    Redirect {
        /// The verified, registered redirect URI.
        redirect_uri: String,
        /// The error to report.
        error: OAuthError,
        /// The client's `state`, echoed back.
        state: Option<String>,
    },
}

impl AuthorizeError {
    /// The OAuth error inside.
    pub fn error(&self) -> &OAuthError {
        match self {
            AuthorizeError::NoRedirect(e) => e,
            AuthorizeError::Redirect { error, .. } => error,
        }
    }

    /// For `Redirect`, the full URL to redirect to (query parameters
    /// `error`, `error_description`, `state` appended and percent-encoded).
    pub fn redirect_url(&self) -> Option<String> {
        match self {
            AuthorizeError::NoRedirect(_) => None,
            AuthorizeError::Redirect {
                redirect_uri,
                error,
                state,
            } => {
                let mut params = vec![
                    ("error", error.error.as_str()),
                    ("error_description", error.error_description.as_str()),
                ];
                if let Some(s) = state {
                    params.push(("state", s));
                }
                Some(append_query(redirect_uri, &params))
            }
        }
    }
}

/// Appends `params` to `uri`'s query string, percent-encoding them.
pub(crate) fn append_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') {
        if uri.ends_with('?') || uri.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    for (k, v) in params {
        out.push_str(sep);
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
        sep = "&";
    }
    out
}

/// Percent-encodes everything but the RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
