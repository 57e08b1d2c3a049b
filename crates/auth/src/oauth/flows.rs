//! The OAuth 2.0 flows: authorization request validation, codes with PKCE,
//! the token endpoint (authorization_code, refresh_token,
//! client_credentials), revocation, introspection and sessions.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::oauth::access::AccessClaims;
use crate::oauth::error::{AuthError, AuthorizeError, OAuthError, OAuthErrorCode, append_query};
use crate::oauth::events::AuthEvent;
use crate::oauth::keys::{MAX_TOKEN_LEN, SCOPE_API, SCOPE_CONNECT};
use crate::oauth::util::{ct_eq, is_pkce_value, random_b64, secs, sha256_b64url, sha256_hex};
use crate::oauth::{AuthState, CodeEntry};

/// Longest accepted value of any request parameter, in bytes.
const MAX_PARAM: usize = 4096;

/// The query parameters of `GET /oauth/authorize` (all optional on the wire;
/// [`AuthState::validate_authorize`] says what is missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizeRequest {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// A registered client.
    pub client_id: Option<String>,
    /// One of the client's registered URIs; may be omitted when it has
    /// exactly one.
    pub redirect_uri: Option<String>,
    /// PKCE challenge: base64url SHA-256 of the verifier (43 characters).
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
    /// Space-separated scopes; only `connect` (the default) for users.
    pub scope: Option<String>,
    /// Opaque client state, echoed back.
    pub state: Option<String>,
}

/// A validated authorization request, to carry through the login page and
/// hand to [`AuthState::issue_code`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeContext {
    /// The client.
    pub client_id: String,
    /// The client's display name (for the login page).
    pub client_name: String,
    /// The redirect URI the code goes to.
    pub redirect_uri: String,
    /// Whether `redirect_uri` was in the request (then the token request
    /// must repeat it).
    pub redirect_uri_given: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The granted scope.
    pub scope: String,
    /// The client's `state`.
    pub state: Option<String>,
}

impl AuthorizeContext {
    /// The URL to redirect the browser to with `code` (and `state`, `iss`).
    pub fn redirect_with_code(&self, code: &str, issuer: &str) -> String {
        let mut params = vec![("code", code)];
        if let Some(s) = &self.state {
            params.push(("state", s));
        }
        params.push(("iss", issuer));
        append_query(&self.redirect_uri, &params)
    }

    /// The URL to redirect the browser to when the user refuses (`access_denied`).
    pub fn redirect_with_error(&self, error: OAuthError) -> String {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            error,
            state: self.state.clone(),
        }
        .redirect_url()
        .unwrap_or_default()
    }
}

/// The form fields of `POST /oauth/token` (RFC 6749 §4.1.3, §6, §4.4).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenRequest {
    /// `authorization_code`, `refresh_token` or `client_credentials`.
    pub grant_type: Option<String>,
    /// The authorization code.
    pub code: Option<String>,
    /// The redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// Client id (OAuth client, or API key id for client_credentials).
    pub client_id: Option<String>,
    /// Client secret (`client_secret_post`).
    pub client_secret: Option<String>,
    /// The PKCE verifier.
    pub code_verifier: Option<String>,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// Requested scope.
    pub scope: Option<String>,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("code", &redact(&self.code))
            .field("redirect_uri", &self.redirect_uri)
            .field("client_id", &self.client_id)
            .field("client_secret", &redact(&self.client_secret))
            .field("code_verifier", &redact(&self.code_verifier))
            .field("refresh_token", &redact(&self.refresh_token))
            .field("scope", &self.scope)
            .finish()
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token (a JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The new refresh token (not for client_credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The granted scope.
    pub scope: String,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

/// A live session: one login of a user through a client (one refresh family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id, the `sid` claim of its access tokens.
    pub id: String,
    /// User id.
    pub user_id: String,
    /// OAuth client id.
    pub client_id: String,
    /// Granted scope.
    pub scope: String,
    /// Login time (unix seconds).
    pub started_at: i64,
    /// Last refresh (unix seconds).
    pub last_used_at: i64,
    /// When the current refresh token expires (unix seconds).
    pub expires_at: i64,
}

type TokenResult = Result<(TokenResponse, Vec<AuthEvent>), (OAuthError, Vec<AuthEvent>)>;

/// An authenticated (or identified public) client at the token endpoint.
struct ClientIdentity {
    id: String,
}

fn too_long(req: &TokenRequest) -> bool {
    [
        &req.grant_type,
        &req.code,
        &req.redirect_uri,
        &req.client_id,
        &req.client_secret,
        &req.code_verifier,
        &req.refresh_token,
        &req.scope,
    ]
    .iter()
    .any(|f| f.as_ref().is_some_and(|v| v.len() > MAX_PARAM))
}

/// Whether `scope` is a valid RFC 6749 scope string.
fn scope_tokens(scope: &str) -> Option<Vec<&str>> {
    let tokens: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    tokens
        .iter()
        .all(|t| {
            t.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        })
        .then_some(tokens)
}

/// The user scope granted for a requested one: `connect` only.
fn user_scope(requested: Option<&str>) -> Result<String, OAuthError> {
    let tokens = scope_tokens(requested.unwrap_or(""))
        .ok_or_else(|| OAuthError::invalid_scope("malformed scope"))?;
    if tokens.iter().all(|t| *t == SCOPE_CONNECT) {
        Ok(SCOPE_CONNECT.to_owned())
    } else {
        Err(OAuthError::invalid_scope(
            "only the `connect` scope can be requested",
        ))
    }
}

impl AuthState {
    // ----- authorization endpoint -----

    /// Validates `GET /oauth/authorize`. Client and redirect URI problems
    /// are [`AuthorizeError::NoRedirect`]; everything else redirects with
    /// the error. Only `response_type=code` with PKCE `S256` is accepted.
    pub fn validate_authorize(
        &self,
        req: &AuthorizeRequest,
    ) -> Result<AuthorizeContext, AuthorizeError> {
        let no_redirect = |d: &str| AuthorizeError::NoRedirect(OAuthError::invalid_request(d));
        let fields = [
            &req.response_type,
            &req.client_id,
            &req.redirect_uri,
            &req.code_challenge,
            &req.code_challenge_method,
            &req.scope,
            &req.state,
        ];
        if fields
            .iter()
            .any(|f| f.as_ref().is_some_and(|v| v.len() > MAX_PARAM))
        {
            return Err(no_redirect("request parameter too long"));
        }
        let client_id = req
            .client_id
            .as_deref()
            .ok_or_else(|| no_redirect("missing client_id"))?;
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| no_redirect("unknown client"))?;
        let (redirect_uri, given) = match req.redirect_uri.as_deref() {
            Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => (uri.to_owned(), true),
            Some(_) => {
                return Err(no_redirect(
                    "redirect_uri is not registered for this client",
                ));
            }
            None if client.redirect_uris.len() == 1 => (client.redirect_uris[0].clone(), false),
            None => return Err(no_redirect("missing redirect_uri")),
        };
        let redirect = |code: OAuthErrorCode, d: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error: OAuthError::new(code, d),
            state: req.state.clone(),
        };
        match req.response_type.as_deref() {
            Some("code") => {}
            None => {
                return Err(redirect(
                    OAuthErrorCode::InvalidRequest,
                    "missing response_type",
                ));
            }
            Some(_) => {
                return Err(redirect(
                    OAuthErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                ));
            }
        }
        let challenge = req.code_challenge.as_deref().ok_or_else(|| {
            redirect(
                OAuthErrorCode::InvalidRequest,
                "code_challenge (PKCE) is required",
            )
        })?;
        if req.code_challenge_method.as_deref() != Some("S256") {
            return Err(redirect(
                OAuthErrorCode::InvalidRequest,
                "code_challenge_method must be S256",
            ));
        }
        if challenge.len() != 43 || !is_pkce_value(challenge) {
            return Err(redirect(
                OAuthErrorCode::InvalidRequest,
                "code_challenge must be the base64url SHA-256 of the verifier",
            ));
        }
        let scope = user_scope(req.scope.as_deref())
            .map_err(|e| redirect(e.error, &e.error_description))?;
        Ok(AuthorizeContext {
            client_id: client.id.clone(),
            client_name: client.name.clone(),
            redirect_uri,
            redirect_uri_given: given,
            code_challenge: challenge.to_owned(),
            scope,
            state: req.state.clone(),
        })
    }

    /// Issues a single-use authorization code for a logged-in user, valid
    /// for `code_ttl`. Kept in memory only.
    pub fn issue_code(&mut self, ctx: &AuthorizeContext, user_id: &str, now: i64) -> String {
        self.codes
            .retain(|_, c| c.expires_at + super::CODE_GRACE_SECS > now);
        let code = random_b64(32);
        self.codes.insert(
            sha256_hex(code.as_bytes()),
            CodeEntry {
                client_id: ctx.client_id.clone(),
                redirect_uri: ctx.redirect_uri.clone(),
                redirect_uri_given: ctx.redirect_uri_given,
                challenge: ctx.code_challenge.clone(),
                scope: ctx.scope.clone(),
                user_id: user_id.to_owned(),
                expires_at: now + secs(self.config.code_ttl),
                exchanged: None,
                consumed: false,
            },
        );
        code
    }

    // ----- token endpoint -----

    /// `POST /oauth/token`. `client_auth` is the HTTP Basic pair, if sent
    /// (already URL-decoded). Errors come with audit events (and, for a
    /// replayed code or refresh token, the revocations) to persist.
    pub fn token(
        &mut self,
        req: &TokenRequest,
        client_auth: Option<(String, String)>,
        now: i64,
    ) -> TokenResult {
        if too_long(req) {
            return Err((
                OAuthError::invalid_request("request parameter too long"),
                Vec::new(),
            ));
        }
        let result = match req.grant_type.as_deref() {
            None => Err((
                OAuthError::invalid_request("missing grant_type"),
                Vec::new(),
            )),
            Some("authorization_code") => self.grant_code(req, client_auth, now),
            Some("refresh_token") => self.grant_refresh(req, client_auth, now),
            Some("client_credentials") => self.grant_client_credentials(req, client_auth, now),
            Some(_) => Err((
                OAuthError::new(
                    OAuthErrorCode::UnsupportedGrantType,
                    "supported: authorization_code, refresh_token, client_credentials",
                ),
                Vec::new(),
            )),
        };
        result.map_err(|(err, mut events)| {
            let client = req
                .client_id
                .as_deref()
                .filter(|c| c.len() <= 64)
                .map(str::to_owned);
            events.push(AuthEvent::Audit {
                action: "token_refused".into(),
                user: None,
                client,
                detail: format!(
                    "grant={} error={} reason={}",
                    req.grant_type
                        .as_deref()
                        .unwrap_or("-")
                        .chars()
                        .take(32)
                        .collect::<String>(),
                    err.error,
                    err.error_description
                ),
                at: now,
            });
            (err, events)
        })
    }

    /// Identifies the OAuth client of a code or refresh request:
    /// confidential clients must authenticate (Basic or post, not both),
    /// public clients name themselves with `client_id` and send no secret.
    fn authenticate_client(
        &self,
        req: &TokenRequest,
        client_auth: Option<(String, String)>,
    ) -> Result<ClientIdentity, OAuthError> {
        let (id, secret) = match client_auth {
            Some((id, secret)) => {
                if req.client_secret.is_some() {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method",
                    ));
                }
                if req.client_id.as_deref().is_some_and(|c| c != id) {
                    return Err(OAuthError::invalid_request("client_id does not match"));
                }
                (id, Some(secret).filter(|s| !s.is_empty()))
            }
            None => {
                let id = req
                    .client_id
                    .clone()
                    .ok_or_else(|| OAuthError::invalid_client("client authentication required"))?;
                (id, req.client_secret.clone())
            }
        };
        let client = self
            .clients
            .get(&id)
            .ok_or_else(|| OAuthError::invalid_client("client authentication failed"))?;
        match (&client.secret_hash, secret) {
            (None, None) => {}
            (Some(expected), Some(given)) => {
                let hash = sha256_hex(given.as_bytes());
                if !ct_eq(expected.as_bytes(), hash.as_bytes()) {
                    return Err(OAuthError::invalid_client("client authentication failed"));
                }
            }
            _ => return Err(OAuthError::invalid_client("client authentication failed")),
        }
        Ok(ClientIdentity { id })
    }

    /// Builds and signs a user access token for a family.
    fn user_access_token(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &str,
        sid: &str,
        now: i64,
    ) -> Result<(String, AccessClaims), OAuthError> {
        let user = self.users.get(user_id);
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            exp: now + secs(self.config.access_ttl),
            iat: now,
            jti: random_b64(16),
            iss: self.config.issuer.clone(),
            aud: self.audience_claim(),
            client_id: Some(client_id.to_owned()),
            scope: scope.to_owned(),
            sid: Some(sid.to_owned()),
            info: user.map(|u| json!({ "username": u.username })),
            channels: Vec::new(),
            grants: Some(user.map(|u| u.grants.clone()).unwrap_or_default()),
        };
        let token = self
            .sign_access(&claims)
            .ok_or_else(|| OAuthError::new(OAuthErrorCode::ServerError, "no signing key"))?;
        Ok((token, claims))
    }

    fn refresh_expiry(&self, started_at: i64, now: i64) -> i64 {
        let by_ttl = now + secs(self.config.refresh_ttl);
        match self.config.session_max_lifetime {
            Some(max) => by_ttl.min(started_at + secs(max)),
            None => by_ttl,
        }
    }

    fn grant_code(
        &mut self,
        req: &TokenRequest,
        client_auth: Option<(String, String)>,
        now: i64,
    ) -> TokenResult {
        let client = self
            .authenticate_client(req, client_auth)
            .map_err(|e| (e, Vec::new()))?;
        let code = req
            .code
            .as_deref()
            .ok_or_else(|| (OAuthError::invalid_request("missing code"), Vec::new()))?;
        let code_hash = sha256_hex(code.as_bytes());
        let bad = |d: &str| (OAuthError::invalid_grant(d), Vec::new());
        let entry = match self.codes.get_mut(&code_hash) {
            Some(e) if e.consumed => {
                // A replayed code: revoke whatever the first exchange produced.
                let mut events = Vec::new();
                if let Some((family, jti, exp)) = e.exchanged.clone() {
                    events.push(AuthEvent::AccessRevoked { jti, exp });
                    if self.families.get(&family).is_none_or(|f| !f.ended) {
                        events.push(AuthEvent::FamilyRevoked {
                            family,
                            reason: "authorization code reused".into(),
                            at: now,
                        });
                    }
                }
                return Err((
                    OAuthError::invalid_grant("authorization code already used"),
                    events,
                ));
            }
            Some(e) if e.expires_at <= now => return Err(bad("authorization code expired")),
            Some(e) => {
                // Any exchange attempt spends the code.
                e.consumed = true;
                e.clone()
            }
            None => return Err(bad("unknown authorization code")),
        };
        if entry.client_id != client.id {
            return Err(bad("authorization code was issued to another client"));
        }
        match req.redirect_uri.as_deref() {
            Some(uri) if uri == entry.redirect_uri => {}
            None if !entry.redirect_uri_given => {}
            None => {
                return Err((
                    OAuthError::invalid_request("missing redirect_uri"),
                    Vec::new(),
                ));
            }
            Some(_) => return Err(bad("redirect_uri does not match the authorization request")),
        }
        let verifier = req.code_verifier.as_deref().ok_or_else(|| {
            (
                OAuthError::invalid_request("missing code_verifier"),
                Vec::new(),
            )
        })?;
        if !is_pkce_value(verifier) {
            return Err(bad("code_verifier must be 43 to 128 unreserved characters"));
        }
        if !ct_eq(
            sha256_b64url(verifier.as_bytes()).as_bytes(),
            entry.challenge.as_bytes(),
        ) {
            return Err(bad("code_verifier does not match the code_challenge"));
        }
        if self.is_user_disabled(&entry.user_id) || !self.users.contains_key(&entry.user_id) {
            return Err(bad("user is disabled"));
        }
        if !self.clients.contains_key(&entry.client_id) {
            return Err(bad("client was deleted"));
        }
        let family = format!("ses_{}", random_b64(16));
        let (access_token, claims) = self
            .user_access_token(&entry.user_id, &client.id, &entry.scope, &family, now)
            .map_err(|e| (e, Vec::new()))?;
        let refresh = random_b64(32);
        if let Some(e) = self.codes.get_mut(&code_hash) {
            e.exchanged = Some((family.clone(), claims.jti.clone(), claims.exp));
        }
        let events = vec![
            AuthEvent::SessionStarted {
                session_id: family.clone(),
                user_id: entry.user_id.clone(),
                client_id: client.id.clone(),
                scope: entry.scope.clone(),
                at: now,
            },
            AuthEvent::RefreshIssued {
                family: family.clone(),
                token_hash: sha256_hex(refresh.as_bytes()),
                expires_at: self.refresh_expiry(now, now),
                at: now,
            },
            AuthEvent::audit(
                "token_issued",
                Some(&entry.user_id),
                Some(&client.id),
                format!("grant=authorization_code sid={family} jti={}", claims.jti),
                now,
            ),
        ];
        Ok((
            TokenResponse {
                access_token,
                token_type: "Bearer".into(),
                expires_in: self.config.access_ttl.as_secs(),
                refresh_token: Some(refresh),
                scope: entry.scope,
            },
            events,
        ))
    }

    fn grant_refresh(
        &mut self,
        req: &TokenRequest,
        client_auth: Option<(String, String)>,
        now: i64,
    ) -> TokenResult {
        let client = self
            .authenticate_client(req, client_auth)
            .map_err(|e| (e, Vec::new()))?;
        let token = req.refresh_token.as_deref().ok_or_else(|| {
            (
                OAuthError::invalid_request("missing refresh_token"),
                Vec::new(),
            )
        })?;
        let hash = sha256_hex(token.as_bytes());
        let bad = |d: &str| (OAuthError::invalid_grant(d), Vec::new());
        let entry = self
            .refresh_tokens
            .get(&hash)
            .ok_or_else(|| bad("unknown refresh token"))?;
        let family = self
            .families
            .get(&entry.family)
            .ok_or_else(|| bad("unknown refresh token"))?;
        if family.client_id != client.id {
            return Err(bad("refresh token was issued to another client"));
        }
        if family.ended {
            return Err(bad("refresh token revoked"));
        }
        let revoke = |reason: &str| AuthEvent::FamilyRevoked {
            family: family.id.clone(),
            reason: reason.to_owned(),
            at: now,
        };
        if entry.used {
            // Reuse of a rotated token: someone holds a copy. Kill the family.
            return Err((
                OAuthError::invalid_grant("refresh token already used; session revoked"),
                vec![revoke("refresh token reuse")],
            ));
        }
        if entry.expires_at <= now {
            return Err(bad("refresh token expired"));
        }
        if self.is_user_disabled(&family.user_id) || !self.users.contains_key(&family.user_id) {
            return Err((
                OAuthError::invalid_grant("user is disabled"),
                vec![revoke("user disabled")],
            ));
        }
        if let Some(idle) = self.config.session_idle_timeout
            && now - family.last_used_at > secs(idle)
        {
            return Err((
                OAuthError::invalid_grant("session idle timeout"),
                vec![revoke("session idle timeout")],
            ));
        }
        if let Some(max) = self.config.session_max_lifetime
            && now - family.started_at >= secs(max)
        {
            return Err((
                OAuthError::invalid_grant("session lifetime exceeded"),
                vec![revoke("session lifetime exceeded")],
            ));
        }
        let scope = match req.scope.as_deref() {
            None => family.scope.clone(),
            Some(s) => {
                let tokens = scope_tokens(s)
                    .ok_or_else(|| (OAuthError::invalid_scope("malformed scope"), Vec::new()))?;
                let granted: Vec<&str> = family.scope.split(' ').collect();
                if !tokens.iter().all(|t| granted.contains(t)) {
                    return Err((
                        OAuthError::invalid_scope("scope exceeds the granted scope"),
                        Vec::new(),
                    ));
                }
                if tokens.is_empty() {
                    family.scope.clone()
                } else {
                    tokens.join(" ")
                }
            }
        };
        let (family_id, user_id, started_at) =
            (family.id.clone(), family.user_id.clone(), family.started_at);
        let (access_token, claims) = self
            .user_access_token(&user_id, &client.id, &scope, &family_id, now)
            .map_err(|e| (e, Vec::new()))?;
        let refresh = random_b64(32);
        let events = vec![
            AuthEvent::RefreshRotated {
                family: family_id.clone(),
                old_hash: hash,
                new_hash: sha256_hex(refresh.as_bytes()),
                expires_at: self.refresh_expiry(started_at, now),
                at: now,
            },
            AuthEvent::audit(
                "token_issued",
                Some(&user_id),
                Some(&client.id),
                format!("grant=refresh_token sid={family_id} jti={}", claims.jti),
                now,
            ),
        ];
        Ok((
            TokenResponse {
                access_token,
                token_type: "Bearer".into(),
                expires_in: self.config.access_ttl.as_secs(),
                refresh_token: Some(refresh),
                scope,
            },
            events,
        ))
    }

    fn grant_client_credentials(
        &self,
        req: &TokenRequest,
        client_auth: Option<(String, String)>,
        now: i64,
    ) -> TokenResult {
        let fail = || {
            (
                OAuthError::invalid_client("client authentication failed"),
                Vec::new(),
            )
        };
        let (id, secret) = match client_auth {
            Some(pair) => {
                if req.client_secret.is_some() {
                    return Err((
                        OAuthError::invalid_request("use one client authentication method"),
                        Vec::new(),
                    ));
                }
                pair
            }
            None => match (&req.client_id, &req.client_secret) {
                (Some(id), Some(secret)) => (id.clone(), secret.clone()),
                _ => return Err(fail()),
            },
        };
        if !self.check_api_key_secret(&id, &secret) {
            return Err(fail());
        }
        let tokens = scope_tokens(req.scope.as_deref().unwrap_or(""))
            .ok_or_else(|| (OAuthError::invalid_scope("malformed scope"), Vec::new()))?;
        if !tokens.iter().all(|t| *t == SCOPE_API) {
            return Err((
                OAuthError::invalid_scope("only the `api` scope can be requested"),
                Vec::new(),
            ));
        }
        let claims = AccessClaims {
            sub: format!("apikey:{id}"),
            exp: now + secs(self.config.api_token_ttl),
            iat: now,
            jti: random_b64(16),
            iss: self.config.issuer.clone(),
            aud: self.audience_claim(),
            client_id: Some(id.clone()),
            scope: SCOPE_API.into(),
            sid: None,
            info: None,
            channels: Vec::new(),
            grants: None,
        };
        let access_token = self.sign_access(&claims).ok_or_else(|| {
            (
                OAuthError::new(OAuthErrorCode::ServerError, "no signing key"),
                Vec::new(),
            )
        })?;
        Ok((
            TokenResponse {
                access_token,
                token_type: "Bearer".into(),
                expires_in: self.config.api_token_ttl.as_secs(),
                refresh_token: None,
                scope: SCOPE_API.into(),
            },
            vec![AuthEvent::audit(
                "token_issued",
                None,
                Some(&id),
                format!("grant=client_credentials jti={}", claims.jti),
                now,
            )],
        ))
    }

    // ----- revocation and introspection -----

    /// RFC 7009 revocation. A refresh token revokes its whole family
    /// (session); one of our access tokens with a valid signature is put on
    /// the revocation list until its `exp`. Anything else yields no events
    /// (answer 200 anyway). Client authentication is the caller's job.
    pub fn revoke(&self, token: &str, hint: Option<&str>, now: i64) -> Vec<AuthEvent> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Vec::new();
        }
        let try_refresh = || -> Option<Vec<AuthEvent>> {
            let entry = self.refresh_tokens.get(&sha256_hex(token.as_bytes()))?;
            let family = self.families.get(&entry.family)?;
            if family.ended {
                return Some(Vec::new());
            }
            Some(vec![
                AuthEvent::FamilyRevoked {
                    family: family.id.clone(),
                    reason: "refresh token revoked".into(),
                    at: now,
                },
                AuthEvent::audit(
                    "token_revoked",
                    Some(&family.user_id),
                    Some(&family.client_id),
                    format!("refresh_token sid={}", family.id),
                    now,
                ),
            ])
        };
        let try_access = || -> Option<Vec<AuthEvent>> {
            let claims = self.decode_own(token).ok()?;
            if claims.exp <= now || self.revoked_access.contains_key(&claims.jti) {
                return Some(Vec::new());
            }
            Some(vec![
                AuthEvent::AccessRevoked {
                    jti: claims.jti.clone(),
                    exp: claims.exp,
                },
                AuthEvent::audit(
                    "token_revoked",
                    Some(&claims.sub),
                    claims.client_id.as_deref(),
                    format!("access_token jti={}", claims.jti),
                    now,
                ),
            ])
        };
        let found = if hint == Some("access_token") {
            try_access().or_else(try_refresh)
        } else {
            try_refresh().or_else(try_access)
        };
        found.unwrap_or_default()
    }

    /// RFC 7662 introspection: `{"active": false}` or the token's details.
    /// Client authentication is the caller's job.
    pub fn introspect(&self, token: &str, now: i64) -> serde_json::Value {
        let inactive = json!({ "active": false });
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return inactive;
        }
        if let Ok(c) = self.verify_access(token, now) {
            let mut v = json!({
                "active": true,
                "sub": c.sub,
                "client_id": c.client_id,
                "scope": c.scope,
                "exp": c.exp,
                "iat": c.iat,
                "jti": c.jti,
                "token_type": "Bearer",
                "iss": c.iss,
            });
            if let Some(sid) = &c.sid {
                v["sid"] = json!(sid);
            }
            if let Some(aud) = &c.aud {
                v["aud"] = json!(aud);
            }
            if let Some(u) = self.users.get(&c.sub) {
                v["username"] = json!(u.username);
            }
            return v;
        }
        let Some(entry) = self.refresh_tokens.get(&sha256_hex(token.as_bytes())) else {
            return inactive;
        };
        let Some(family) = self.families.get(&entry.family) else {
            return inactive;
        };
        if entry.used
            || family.ended
            || entry.expires_at <= now
            || self.is_user_disabled(&family.user_id)
        {
            return inactive;
        }
        json!({
            "active": true,
            "sub": family.user_id,
            "client_id": family.client_id,
            "scope": family.scope,
            "exp": entry.expires_at,
            "iat": family.last_used_at,
            "token_type": "refresh_token",
            "iss": self.config.issuer,
            "sid": family.id,
        })
    }

    // ----- sessions -----

    /// The user's live sessions (not ended), oldest first. A session whose
    /// `expires_at` has passed is dead too; filter with the current time.
    pub fn sessions(&self, user_id: &str) -> Vec<SessionRecord> {
        let mut list: Vec<SessionRecord> = self
            .families
            .values()
            .filter(|f| f.user_id == user_id && !f.ended)
            .map(|f| SessionRecord {
                id: f.id.clone(),
                user_id: f.user_id.clone(),
                client_id: f.client_id.clone(),
                scope: f.scope.clone(),
                started_at: f.started_at,
                last_used_at: f.last_used_at,
                expires_at: f.expires_at,
            })
            .collect();
        list.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        list
    }

    /// Ends a session (logout, `session_end`): its refresh tokens stop
    /// working and its access tokens are revoked (by `sid`). Ending an
    /// ended session returns no events.
    pub fn end_session(&self, session_id: &str, now: i64) -> Result<Vec<AuthEvent>, AuthError> {
        let family = self
            .families
            .get(session_id)
            .ok_or(AuthError::UnknownSession)?;
        if family.ended {
            return Ok(Vec::new());
        }
        Ok(vec![
            AuthEvent::SessionEnded {
                session_id: session_id.to_owned(),
                reason: "ended".into(),
                at: now,
            },
            AuthEvent::audit(
                "logout",
                Some(&family.user_id),
                Some(&family.client_id),
                format!("sid={session_id}"),
                now,
            ),
        ])
    }
}
