//! Integration tests of the OAuth 2.0 authorization server core: real
//! crypto, a fake clock, and every event round-tripped through JSON before
//! it is applied (as the server persists and replays them).

#![allow(missing_docs, clippy::new_without_default)]

mod external;
mod flows;
mod login;
mod replay;
mod tokens;

use std::net::IpAddr;

use base64::Engine as _;
use switchboard_auth::grants::{ChannelGrant, Grants, RoomGrant};
use switchboard_auth::oauth::{
    AuthConfig, AuthEvent, AuthState, AuthorizeRequest, ClientRecord, OAuthError, PasswordHashing,
    TokenRequest, TokenResponse,
};

pub const T0: i64 = 1_700_000_000;
pub const REDIRECT: &str = "http://127.0.0.1:9000/callback";
pub const PASSWORD: &str = "correct horse battery";
/// A PKCE verifier (43..128 unreserved characters).
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-0123456789";

pub fn config() -> AuthConfig {
    AuthConfig {
        issuer: "http://auth.test".into(),
        password_hashing: PasswordHashing::insecure_fast(),
        ..AuthConfig::default()
    }
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn challenge(verifier: &str) -> String {
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

pub fn user_grants() -> Grants {
    Grants {
        channels: vec![ChannelGrant::all("chat:*")],
        rooms: vec![RoomGrant::participant("room-*")],
    }
}

/// The state plus the event log, like the server keeps it.
pub struct World {
    pub state: AuthState,
    /// Every persisted event, as JSON.
    pub log: Vec<String>,
    pub now: i64,
}

impl World {
    pub fn new() -> Self {
        Self::with_config(config())
    }

    pub fn with_config(cfg: AuthConfig) -> Self {
        let mut w = World {
            state: AuthState::new(cfg),
            log: Vec::new(),
            now: T0,
        };
        let ev = w.state.ensure_signing_key(w.now);
        assert_eq!(ev.len(), 2);
        w.commit(ev);
        assert!(w.state.ensure_signing_key(w.now).is_empty());
        w
    }

    /// Persists (as JSON) and applies events, the way the server does.
    pub fn commit(&mut self, events: Vec<AuthEvent>) {
        for e in events {
            let json = serde_json::to_string(&e).unwrap();
            let back: AuthEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e);
            self.state.apply(&back);
            self.log.push(json);
        }
    }

    pub fn advance(&mut self, secs: i64) {
        self.now += secs;
    }

    /// The events of this kind in the log, parsed.
    pub fn logged(&self, kind: &str) -> Vec<serde_json::Value> {
        self.log
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == kind)
            .collect()
    }

    pub fn audits(&self, action: &str) -> Vec<serde_json::Value> {
        self.logged("Audit")
            .into_iter()
            .filter(|v| v["action"] == action)
            .collect()
    }

    pub fn user(&mut self, name: &str) -> String {
        let (rec, ev) = self
            .state
            .create_user(name, PASSWORD, user_grants(), self.now)
            .unwrap();
        self.commit(ev);
        rec.id
    }

    pub fn client(&mut self, confidential: bool) -> (ClientRecord, Option<String>) {
        let (rec, secret, ev) = self
            .state
            .create_client(
                "Demo app",
                vec![REDIRECT.into(), "https://app.example/cb".into()],
                confidential,
                self.now,
            )
            .unwrap();
        self.commit(ev);
        (rec, secret)
    }

    pub fn authorize_request(&self, client_id: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            response_type: Some("code".into()),
            client_id: Some(client_id.into()),
            redirect_uri: Some(REDIRECT.into()),
            code_challenge: Some(challenge(VERIFIER)),
            code_challenge_method: Some("S256".into()),
            scope: None,
            state: Some("xyz".into()),
        }
    }

    /// Authorize + login + code for `user`.
    pub fn code_for(&mut self, client_id: &str, username: &str) -> String {
        let ctx = self
            .state
            .validate_authorize(&self.authorize_request(client_id))
            .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (uid, ev) = self.state.login(username, PASSWORD, ip, self.now).unwrap();
        self.commit(ev);
        self.state.issue_code(&ctx, &uid, self.now)
    }

    pub fn code_request(&self, client_id: &str, code: &str) -> TokenRequest {
        TokenRequest {
            grant_type: Some("authorization_code".into()),
            code: Some(code.into()),
            redirect_uri: Some(REDIRECT.into()),
            client_id: Some(client_id.into()),
            code_verifier: Some(VERIFIER.into()),
            ..Default::default()
        }
    }

    pub fn refresh_request(&self, client_id: &str, refresh: &str) -> TokenRequest {
        TokenRequest {
            grant_type: Some("refresh_token".into()),
            refresh_token: Some(refresh.into()),
            client_id: Some(client_id.into()),
            ..Default::default()
        }
    }

    /// Runs the token endpoint and commits whatever it returns.
    pub fn token(
        &mut self,
        req: &TokenRequest,
        basic: Option<(&str, &str)>,
    ) -> Result<TokenResponse, OAuthError> {
        let basic = basic.map(|(a, b)| (a.to_owned(), b.to_owned()));
        match self.state.token(req, basic, self.now) {
            Ok((resp, ev)) => {
                self.commit(ev);
                Ok(resp)
            }
            Err((err, ev)) => {
                self.commit(ev);
                Err(err)
            }
        }
    }

    /// A full login through a public client: (client id, user id, tokens).
    pub fn logged_in(&mut self, username: &str) -> (String, String, TokenResponse) {
        let uid = self.user(username);
        let (client, _) = self.client(false);
        let code = self.code_for(&client.id, username);
        let resp = self
            .token(&self.code_request(&client.id, &code), None)
            .unwrap();
        (client.id, uid, resp)
    }
}
