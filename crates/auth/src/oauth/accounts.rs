//! Users (argon2id passwords, login with rate limits), API keys and OAuth
//! clients.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use serde::{Deserialize, Serialize};

use crate::grants::Grants;
use crate::oauth::error::{AuthError, LoginError};
use crate::oauth::events::{AuthEvent, Sensitive};
use crate::oauth::util::{ct_eq, random_b64, secs, sha256_hex};
use crate::oauth::{AuthState, Family};

/// Longest accepted password, in bytes.
const MAX_PASSWORD: usize = 1024;
/// Shortest accepted password for new accounts, in characters.
const MIN_PASSWORD: usize = 8;
/// Longest name of an API key or client.
const MAX_NAME: usize = 128;

/// A user account as listed (no password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// User id (`usr_…`), the `sub` of the user's tokens.
    pub id: String,
    /// Login name.
    pub username: String,
    /// What the user's tokens allow.
    pub grants: Grants,
    /// Unix seconds.
    pub created_at: i64,
    /// Disabled accounts cannot log in or refresh.
    pub disabled: bool,
}

/// An API key as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Key id (`sbk_…`).
    pub id: String,
    /// Label.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A freshly created API key: the only time its secret is visible.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    /// Key id (`sbk_…`).
    pub id: String,
    /// Label.
    pub name: String,
    /// The secret (32 random bytes, base64url); store it now, it cannot be
    /// shown again.
    pub secret: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl ApiKeyCreated {
    /// The `id.secret` form accepted by [`AuthState::check_api_key`].
    pub fn combined(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyCreated")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// An OAuth client as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Client id (`sbc_…`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Registered redirect URIs (compared exactly).
    pub redirect_uris: Vec<String>,
    /// Whether the client authenticates with a secret (else PKCE only).
    pub confidential: bool,
    /// Unix seconds.
    pub created_at: i64,
}

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
}

fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME
        && !name.chars().any(char::is_control)
}

/// An absolute `http(s)` URL with a host and without a fragment, user info,
/// whitespace or control characters.
pub(crate) fn valid_redirect_uri(uri: &str) -> bool {
    let rest = if let Some(r) = uri.strip_prefix("https://") {
        r
    } else if let Some(r) = uri.strip_prefix("http://") {
        r
    } else {
        return false;
    };
    if uri.len() > 2048
        || uri.contains('#')
        || uri.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return false;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => return false,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return false,
            None => authority,
        }
    };
    host.len() > 2 || (!host.is_empty() && !host.starts_with('['))
}

impl AuthState {
    fn argon2(&self) -> argon2::Argon2<'static> {
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            self.argon2_params.clone(),
        )
    }

    fn hash_password(&self, password: &str) -> Result<String, AuthError> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| AuthError::Internal("random"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|_| AuthError::Internal("salt"))?;
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| AuthError::Internal("password hashing failed"))
    }

    /// Runs one argon2 verification and counts it.
    fn verify_password(&mut self, password: &str, phc: &str) -> bool {
        self.password_verifications += 1;
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        self.argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    fn user_by_name(&self, name: &str) -> Option<&super::User> {
        self.usernames
            .get(&name.to_lowercase())
            .and_then(|id| self.users.get(id))
    }

    fn find_user(&self, id_or_name: &str) -> Option<&super::User> {
        self.users
            .get(id_or_name)
            .or_else(|| self.user_by_name(id_or_name))
    }

    // ----- users -----

    /// Creates a user with an argon2id-hashed password. Usernames are 1 to
    /// 64 characters of `[a-zA-Z0-9_.\-@]`, unique case-insensitively;
    /// passwords 8 characters to 1024 bytes.
    pub fn create_user(
        &self,
        username: &str,
        password: &str,
        grants: Grants,
        now: i64,
    ) -> Result<(UserRecord, Vec<AuthEvent>), AuthError> {
        if !valid_username(username) {
            return Err(AuthError::InvalidUsername);
        }
        if self.user_by_name(username).is_some() {
            return Err(AuthError::UsernameTaken);
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(AuthError::InvalidPassword("at least 8 characters"));
        }
        if password.len() > MAX_PASSWORD {
            return Err(AuthError::InvalidPassword("at most 1024 bytes"));
        }
        let hash = self.hash_password(password)?;
        let id = format!("usr_{}", random_b64(12));
        let record = UserRecord {
            id: id.clone(),
            username: username.to_owned(),
            grants: grants.clone(),
            created_at: now,
            disabled: false,
        };
        let events = vec![
            AuthEvent::UserCreated {
                id: id.clone(),
                username: username.to_owned(),
                password_hash: Sensitive(hash),
                grants,
                created_at: now,
            },
            AuthEvent::audit("user_created", Some(&id), None, "", now),
        ];
        Ok((record, events))
    }

    /// Disables a user (by id or name) and revokes all their sessions.
    /// Disabling a disabled user returns no events.
    pub fn disable_user(&self, username: &str, now: i64) -> Result<Vec<AuthEvent>, AuthError> {
        let user = self.find_user(username).ok_or(AuthError::UnknownUser)?;
        if user.disabled {
            return Ok(Vec::new());
        }
        let mut events = vec![AuthEvent::UserDisabled {
            id: user.id.clone(),
            at: now,
        }];
        events.extend(self.revoke_families(|f| f.user_id == user.id, "user disabled", now));
        events.push(AuthEvent::audit(
            "user_disabled",
            Some(&user.id),
            None,
            "",
            now,
        ));
        Ok(events)
    }

    /// `FamilyRevoked` for every live family matching `pred`, in a stable order.
    pub(crate) fn revoke_families(
        &self,
        pred: impl Fn(&Family) -> bool,
        reason: &str,
        now: i64,
    ) -> Vec<AuthEvent> {
        let mut ids: Vec<&String> = self
            .families
            .values()
            .filter(|f| !f.ended && pred(f))
            .map(|f| &f.id)
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| AuthEvent::FamilyRevoked {
                family: id.clone(),
                reason: reason.to_owned(),
                at: now,
            })
            .collect()
    }

    fn user_record(u: &super::User) -> UserRecord {
        UserRecord {
            id: u.id.clone(),
            username: u.username.clone(),
            grants: u.grants.clone(),
            created_at: u.created_at,
            disabled: u.disabled,
        }
    }

    /// Every user, by id.
    pub fn users(&self) -> Vec<UserRecord> {
        self.users.values().map(Self::user_record).collect()
    }

    /// A user by id or (case-insensitive) username.
    pub fn user(&self, id_or_name: &str) -> Option<UserRecord> {
        self.find_user(id_or_name).map(Self::user_record)
    }

    /// Whether `user_id` names a disabled user (unknown ids are not disabled).
    pub fn is_user_disabled(&self, user_id: &str) -> bool {
        self.users.get(user_id).is_some_and(|u| u.disabled)
    }

    /// Checks a username and password from the login form.
    ///
    /// Refused before any hashing when the account or the client IP (IPv6:
    /// its /64) exceeded its failed attempts in the window. An unknown user
    /// costs the same argon2 verification as a wrong password (against a
    /// dummy hash). Returns the user id and the audit events; a refusal also
    /// comes with audit events to persist.
    pub fn login(
        &mut self,
        username: &str,
        password: &str,
        ip: IpAddr,
        now: i64,
    ) -> Result<(String, Vec<AuthEvent>), (LoginError, Vec<AuthEvent>)> {
        let window = secs(self.config.login_window);
        let account_key: String = username.to_lowercase().chars().take(128).collect();
        let ip_key = normalize_ip(ip);
        let shown_name: String = username.chars().take(64).collect();
        let per_account = self.config.login_attempts_per_account;
        let per_ip = self.config.login_attempts_per_ip;

        let limited = [
            self.limiter
                .accounts
                .get_mut(&account_key)
                .and_then(|b| b.blocked(per_account, window, now)),
            self.limiter
                .ips
                .get_mut(&ip_key)
                .and_then(|b| b.blocked(per_ip, window, now)),
        ];
        if let Some(retry) = limited.iter().flatten().max().copied() {
            let mut events = Vec::new();
            // Audit the first refusal of a blocked period only, so a flood
            // of attempts does not flood the event log.
            let mut first = false;
            if let Some(b) = self.limiter.accounts.get_mut(&account_key) {
                first |= b.mark_refusal_audited();
            }
            if let Some(b) = self.limiter.ips.get_mut(&ip_key) {
                first |= b.mark_refusal_audited();
            }
            if first {
                events.push(AuthEvent::audit(
                    "login_failed",
                    Some(&shown_name),
                    None,
                    format!("rate_limited ip={ip}"),
                    now,
                ));
            }
            return Err((
                LoginError::RateLimited {
                    retry_after_secs: u64::try_from(retry).unwrap_or(1).max(1),
                },
                events,
            ));
        }

        if self.dummy_hash.is_none() {
            // Same parameters as real hashes, so both paths cost the same.
            self.dummy_hash = self.hash_password("dummy password for timing").ok();
        }
        let user = self.user_by_name(username).cloned();
        let password_ok = password.len() <= MAX_PASSWORD && {
            let phc = match &user {
                Some(u) => u.password_hash.0.clone(),
                None => self.dummy_hash.clone().unwrap_or_default(),
            };
            self.verify_password(password, &phc)
        };
        let Some(user) = user.filter(|_| password_ok) else {
            self.limiter.record_failure(&account_key, ip_key, now);
            if self.limiter.needs_sweep() {
                self.limiter.prune(now, window);
            }
            return Err((
                LoginError::InvalidCredentials,
                vec![AuthEvent::audit(
                    "login_failed",
                    Some(&shown_name),
                    None,
                    format!("invalid_credentials ip={ip}"),
                    now,
                )],
            ));
        };
        if user.disabled {
            return Err((
                LoginError::Disabled,
                vec![AuthEvent::audit(
                    "login_failed",
                    Some(&user.id),
                    None,
                    format!("disabled ip={ip}"),
                    now,
                )],
            ));
        }
        self.limiter.accounts.remove(&account_key);
        Ok((
            user.id.clone(),
            vec![AuthEvent::audit(
                "login",
                Some(&user.id),
                None,
                format!("ip={ip}"),
                now,
            )],
        ))
    }

    // ----- API keys -----

    /// Creates an API key for an app backend; several can be active at once.
    /// The secret is in the returned [`ApiKeyCreated`] only.
    pub fn create_api_key(&self, name: &str, now: i64) -> (ApiKeyCreated, Vec<AuthEvent>) {
        let name: String = name
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect();
        let id = format!("sbk_{}", random_b64(12));
        let secret = random_b64(32);
        let events = vec![
            AuthEvent::ApiKeyCreated {
                id: id.clone(),
                name: name.clone(),
                secret_hash: sha256_hex(secret.as_bytes()),
                created_at: now,
            },
            AuthEvent::audit("apikey_created", None, Some(&id), "", now),
        ];
        (
            ApiKeyCreated {
                id,
                name,
                secret,
                created_at: now,
            },
            events,
        )
    }

    /// Revokes an API key; its access tokens stop verifying at once.
    pub fn revoke_api_key(&self, id: &str, now: i64) -> Result<Vec<AuthEvent>, AuthError> {
        if !self.api_keys.contains_key(id) {
            return Err(AuthError::UnknownApiKey);
        }
        Ok(vec![
            AuthEvent::ApiKeyRevoked {
                id: id.to_owned(),
                at: now,
            },
            AuthEvent::audit("apikey_revoked", None, Some(id), "", now),
        ])
    }

    /// Active API keys (without secrets).
    pub fn api_keys(&self) -> Vec<ApiKeyRecord> {
        self.api_keys
            .values()
            .map(|k| ApiKeyRecord {
                id: k.id.clone(),
                name: k.name.clone(),
                created_at: k.created_at,
            })
            .collect()
    }

    /// Whether `presented` is an active key, as `id.secret` or the bare
    /// secret. Hashes are compared in constant time.
    pub fn check_api_key(&self, presented: &str) -> bool {
        self.api_key_id_for(presented).is_some()
    }

    /// The id of the active key `presented` (`id.secret` or bare secret).
    pub fn api_key_id_for(&self, presented: &str) -> Option<String> {
        if presented.is_empty() || presented.len() > 512 {
            return None;
        }
        if let Some((id, secret)) = presented.split_once('.') {
            return self.check_api_key_secret(id, secret).then(|| id.to_owned());
        }
        let hash = sha256_hex(presented.as_bytes());
        // Look at every key, without stopping early.
        let mut found = None;
        for k in self.api_keys.values() {
            if ct_eq(k.secret_hash.as_bytes(), hash.as_bytes()) {
                found = Some(k.id.clone());
            }
        }
        found
    }

    /// Whether `secret` is the secret of the active key `id`.
    pub(crate) fn check_api_key_secret(&self, id: &str, secret: &str) -> bool {
        let hash = sha256_hex(secret.as_bytes());
        self.api_keys
            .get(id)
            .is_some_and(|k| ct_eq(k.secret_hash.as_bytes(), hash.as_bytes()))
    }

    // ----- OAuth clients -----

    /// Registers an OAuth client. Public clients (`confidential = false`)
    /// use PKCE only; confidential ones also get a secret, returned once.
    /// Redirect URIs must be absolute `http(s)` URLs without fragment or
    /// user info; at least one, at most 16.
    pub fn create_client(
        &self,
        name: &str,
        redirect_uris: Vec<String>,
        confidential: bool,
        now: i64,
    ) -> Result<(ClientRecord, Option<String>, Vec<AuthEvent>), AuthError> {
        if !valid_name(name) {
            return Err(AuthError::InvalidClient(
                "name must be 1 to 128 printable characters",
            ));
        }
        if redirect_uris.is_empty() || redirect_uris.len() > 16 {
            return Err(AuthError::InvalidClient("give 1 to 16 redirect URIs"));
        }
        if !redirect_uris.iter().all(|u| valid_redirect_uri(u)) {
            return Err(AuthError::InvalidClient(
                "redirect URIs must be absolute http(s) URLs without fragment",
            ));
        }
        let mut uris = redirect_uris;
        uris.dedup();
        let id = format!("sbc_{}", random_b64(12));
        let secret = confidential.then(|| random_b64(32));
        let record = ClientRecord {
            id: id.clone(),
            name: name.to_owned(),
            redirect_uris: uris.clone(),
            confidential,
            created_at: now,
        };
        let events = vec![
            AuthEvent::ClientCreated {
                id: id.clone(),
                name: name.to_owned(),
                redirect_uris: uris,
                secret_hash: secret.as_deref().map(|s| sha256_hex(s.as_bytes())),
                created_at: now,
            },
            AuthEvent::audit("client_created", None, Some(&id), "", now),
        ];
        Ok((record, secret, events))
    }

    /// Deletes a client and revokes its sessions.
    pub fn delete_client(&self, client_id: &str, now: i64) -> Result<Vec<AuthEvent>, AuthError> {
        if !self.clients.contains_key(client_id) {
            return Err(AuthError::UnknownClient);
        }
        let mut events = vec![AuthEvent::ClientDeleted {
            id: client_id.to_owned(),
            at: now,
        }];
        events.extend(self.revoke_families(|f| f.client_id == client_id, "client deleted", now));
        events.push(AuthEvent::audit(
            "client_deleted",
            None,
            Some(client_id),
            "",
            now,
        ));
        Ok(events)
    }

    /// Registered clients (without secrets).
    pub fn clients(&self) -> Vec<ClientRecord> {
        self.clients
            .values()
            .map(|c| ClientRecord {
                id: c.id.clone(),
                name: c.name.clone(),
                redirect_uris: c.redirect_uris.clone(),
                confidential: c.secret_hash.is_some(),
                created_at: c.created_at,
            })
            .collect()
    }

    /// One registered client.
    pub fn client(&self, client_id: &str) -> Option<ClientRecord> {
        self.clients().into_iter().find(|c| c.id == client_id)
    }
}

/// IPv4 (and IPv4-mapped IPv6) addresses as they are; other IPv6 addresses
/// by their /64, since one host usually owns a whole /64.
fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// Failed-login counters per account and per IP (sliding window).
#[derive(Default)]
pub(crate) struct LoginLimiter {
    accounts: HashMap<String, Bucket>,
    ips: HashMap<IpAddr, Bucket>,
}

#[derive(Default)]
struct Bucket {
    failures: VecDeque<i64>,
    refusal_audited: bool,
}

impl Bucket {
    /// Seconds until an attempt is allowed, if `limit` failures happened in
    /// the window ending at `now`.
    fn blocked(&mut self, limit: u32, window: i64, now: i64) -> Option<i64> {
        while self.failures.front().is_some_and(|&t| t <= now - window) {
            self.failures.pop_front();
        }
        if limit == 0 || self.failures.len() < limit as usize {
            self.refusal_audited = false;
            return None;
        }
        // The attempt is allowed once the oldest counted failure leaves the window.
        let oldest = self.failures[self.failures.len() - limit as usize];
        Some((oldest + window - now).max(1))
    }

    /// Marks the refusal as audited; true if it was not yet.
    fn mark_refusal_audited(&mut self) -> bool {
        !std::mem::replace(&mut self.refusal_audited, true)
    }
}

impl LoginLimiter {
    /// Entries above which stale buckets are swept on the next failure.
    const SWEEP_AT: usize = 10_000;
    /// Failures kept per bucket (more do not change any decision).
    const KEEP: usize = 1_000;

    fn record_failure(&mut self, account: &str, ip: IpAddr, now: i64) {
        for b in [
            self.accounts.entry(account.to_owned()).or_default(),
            self.ips.entry(ip).or_default(),
        ] {
            b.failures.push_back(now);
            if b.failures.len() > Self::KEEP {
                b.failures.pop_front();
            }
        }
    }

    pub(crate) fn prune(&mut self, now: i64, window: i64) {
        let fresh = |b: &mut Bucket| b.failures.back().is_some_and(|&t| t > now - window);
        self.accounts.retain(|_, b| fresh(b));
        self.ips.retain(|_, b| fresh(b));
    }

    pub(crate) fn needs_sweep(&self) -> bool {
        self.accounts.len() + self.ips.len() > Self::SWEEP_AT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "http://127.0.0.1:8080/cb",
            "https://app.example.com/oauth/callback?x=1",
            "http://localhost/",
            "https://[::1]:3000/cb",
            "https://example.com",
        ] {
            assert!(valid_redirect_uri(ok), "{ok}");
        }
        for bad in [
            "",
            "/relative",
            "example.com/cb",
            "ftp://example.com/",
            "javascript:alert(1)",
            "https://example.com/cb#frag",
            "https:///nohost",
            "https://user@evil.example/",
            "https://exa mple.com/",
            "https://example.com/\n",
        ] {
            assert!(!valid_redirect_uri(bad), "{bad:?}");
        }
    }

    #[test]
    fn usernames() {
        assert!(valid_username("alice"));
        assert!(valid_username("a.b-c_d@example.com"));
        assert!(!valid_username(""));
        assert!(!valid_username(&"a".repeat(65)));
        assert!(!valid_username("bad name"));
        assert!(!valid_username("bäd"));
    }

    #[test]
    fn ipv6_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(normalize_ip(a), normalize_ip(b));
        assert_ne!(normalize_ip(a), normalize_ip(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(normalize_ip(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
