//! The node's side of the built-in authorization server: the event-sourced
//! [`AuthState`] kept in memory, its events persisted in the store's `auth`
//! stream, and the [`Authenticator`] the gateway uses.
//!
//! Every change goes through [`AuthService::commit`]: append each event to
//! the store, then apply it, then disconnect live connections that a
//! revocation event names. At start the stream is replayed; [`AuthService::poll`]
//! applies events that other processes appended.
//!
//! Store calls go through the node's [`StoreGuard`]: while the store is
//! unreachable they fail fast with "store unavailable".

use parking_lot::{Mutex, RwLock};
use std::sync::{Arc, OnceLock};
use switchboard_auth::oauth::{AuthConfig, AuthEvent, AuthState, Revocation};
use switchboard_auth::{SubscriptionClaims, TokenError, Verifier};
use switchboard_gateway::Gateway;
use switchboard_gateway::auth::{Authenticator, TokenIdentity, VerifiedToken};
use switchboard_store::DynStore;

use crate::guard::StoreGuard;

/// The name of the event stream holding auth events.
pub const AUTH_STREAM: &str = "auth";

/// Built-in authorization server state plus app-backend token keys.
pub struct AuthService {
    state: RwLock<AuthState>,
    store: DynStore,
    guard: Arc<StoreGuard>,
    /// Offset of the last event applied; the lock also orders commits.
    applied: tokio::sync::Mutex<u64>,
    verifier: Verifier,
    gateway: OnceLock<Gateway>,
    external_jwks_loaded: Mutex<bool>,
}

fn now_secs() -> i64 {
    crate::node::now_ms() / 1000
}

impl AuthService {
    /// Replays the auth stream and makes sure a signing key exists; store
    /// calls go through `guard`.
    pub async fn open(
        store: DynStore,
        guard: Arc<StoreGuard>,
        config: AuthConfig,
        verifier: Verifier,
    ) -> anyhow::Result<Arc<Self>> {
        let svc = Arc::new(Self {
            state: RwLock::new(AuthState::new(config)),
            store,
            guard,
            applied: tokio::sync::Mutex::new(0),
            verifier,
            gateway: OnceLock::new(),
            external_jwks_loaded: Mutex::new(false),
        });
        svc.poll().await?;
        let events = svc.state.read().ensure_signing_key(now_secs());
        svc.commit(events).await?;
        Ok(svc)
    }

    /// Lets revocations disconnect live connections of this gateway.
    pub fn attach_gateway(&self, gateway: Gateway) {
        let _ = self.gateway.set(gateway);
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&AuthState) -> R) -> R {
        f(&self.state.read())
    }

    /// Runs an operation that needs the in-memory part of the state
    /// (authorization codes, login attempt counters).
    pub fn write<R>(&self, f: impl FnOnce(&mut AuthState) -> R) -> R {
        f(&mut self.state.write())
    }

    /// Persists events, applies them, and acts on revocations.
    pub async fn commit(&self, events: Vec<AuthEvent>) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut applied = self.applied.lock().await;
        let mut revocations = Vec::new();
        for e in &events {
            let payload = serde_json::to_value(e)?;
            let offset = self
                .guard
                .call(self.store.append_event(
                    AUTH_STREAM,
                    e.kind(),
                    &payload,
                    crate::node::now_ms(),
                ))
                .await
                .map_err(|e| anyhow::anyhow!("auth state: {e}"))?;
            self.state.write().apply(e);
            *applied = offset;
            if let Some(r) = e.revocation() {
                revocations.push(r);
            }
            if let AuthEvent::Audit { action, .. } = e {
                metrics::counter!("switchboard_auth_audit_total", "action" => action.clone())
                    .increment(1);
            }
        }
        drop(applied);
        self.enforce(&revocations);
        Ok(())
    }

    /// Applies events appended by other processes since the last one seen.
    pub async fn poll(&self) -> anyhow::Result<()> {
        let mut applied = self.applied.lock().await;
        let mut revocations = Vec::new();
        loop {
            let batch = self
                .guard
                .call(self.store.read_events(AUTH_STREAM, *applied, 1000))
                .await
                .map_err(|e| anyhow::anyhow!("auth state: {e}"))?;
            if batch.is_empty() {
                break;
            }
            for stored in batch {
                let event: AuthEvent = serde_json::from_value(stored.payload)?;
                self.state.write().apply(&event);
                *applied = stored.offset;
                if let Some(r) = event.revocation() {
                    revocations.push(r);
                }
            }
        }
        drop(applied);
        self.enforce(&revocations);
        Ok(())
    }

    fn enforce(&self, revocations: &[Revocation]) {
        if revocations.is_empty() {
            return;
        }
        let Some(gateway) = self.gateway.get() else {
            return;
        };
        let n = gateway.revalidate(|id: &TokenIdentity| {
            !revocations.iter().any(|r| match r {
                Revocation::Token { jti } => id.jti.as_deref() == Some(jti),
                Revocation::Session { sid } => id.session.as_deref() == Some(sid),
                Revocation::User { user_id } => &id.user == user_id,
            })
        });
        if n > 0 {
            tracing::info!(connections = n, "disconnected after revocation");
            metrics::counter!("switchboard_revocation_disconnects_total").increment(n as u64);
        }
    }

    /// Loads JWKS of external issuers configured with a file or URL.
    pub async fn load_external_jwks(&self) -> anyhow::Result<()> {
        let issuers = self.read(|s| s.config().external_issuers.clone());
        for iss in issuers {
            let jwks: serde_json::Value = if let Some(path) = &iss.jwks_file {
                serde_json::from_str(&tokio::fs::read_to_string(path).await?)?
            } else if let Some(url) = &iss.jwks_url {
                crate::http_client::get_json(url, std::time::Duration::from_secs(10)).await?
            } else {
                continue;
            };
            self.write(|s| s.set_external_jwks(&iss.issuer, &jwks))?;
        }
        *self.external_jwks_loaded.lock() = true;
        Ok(())
    }

    /// Whether a presented server API credential is valid: an API key
    /// (`id.secret` or the secret), a client-credentials access token, or
    /// the access token of a user listed in `auth.admin_users` (enabled
    /// account; revoked tokens and ended sessions are refused as anywhere).
    pub fn check_api_credential(&self, presented: &str) -> bool {
        let state = self.state.read();
        if state.check_api_key(presented) {
            return true;
        }
        let Ok(claims) = state.verify_access(presented, now_secs()) else {
            return false;
        };
        if claims.has_scope("api") {
            return true;
        }
        let admins = &state.config().admin_users;
        !admins.is_empty()
            && claims.has_scope("connect")
            && state.user(&claims.sub).is_some_and(|u| {
                u.id == claims.sub
                    && !u.disabled
                    && admins.iter().any(|a| a.eq_ignore_ascii_case(&u.username))
            })
    }
}

impl Authenticator for AuthService {
    fn verify_connection(&self, token: &str, now: i64) -> Result<VerifiedToken, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("malformed token".into()))?;
        let state = self.state.read();
        let ours = header
            .kid
            .as_deref()
            .is_some_and(|kid| state.has_signing_key(kid));
        if ours {
            let claims = state.verify_access(token, now)?;
            if !claims.has_scope("connect") {
                return Err(TokenError::Invalid(
                    "token not meant for connections".into(),
                ));
            }
            let session = claims.sid.clone();
            return Ok(VerifiedToken {
                claims: claims.into(),
                session,
            });
        }
        let mut first_err = None;
        if !state.config().external_issuers.is_empty() {
            match state.verify_external(token, state.config(), now) {
                Ok(claims) => {
                    return Ok(VerifiedToken {
                        claims: claims.into(),
                        session: None,
                    });
                }
                Err(e) => first_err = Some(e),
            }
        }
        drop(state);
        match self.verifier.verify_connection(token, now) {
            Ok(claims) => {
                if self.state.read().is_user_disabled(&claims.sub) {
                    return Err(TokenError::Invalid("user disabled".into()));
                }
                Ok(VerifiedToken {
                    claims,
                    session: None,
                })
            }
            Err(TokenError::NotConfigured) if first_err.is_some() => {
                Err(first_err.expect("checked"))
            }
            Err(e) => Err(e),
        }
    }

    fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
        now: i64,
    ) -> Result<SubscriptionClaims, TokenError> {
        self.verifier.verify_subscription(token, channel, now)
    }
}
