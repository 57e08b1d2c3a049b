//! Authorization code + PKCE, refresh rotation, client_credentials,
//! revocation, introspection, sessions.

use std::time::Duration;

use switchboard_auth::grants::{ChannelAction, RoomAction};
use switchboard_auth::oauth::{
    AuthConfig, AuthError, AuthorizeError, AuthorizeRequest, OAuthErrorCode, Revocation,
    TokenRequest,
};
use switchboard_auth::{ConnectionClaims, TokenError};

use crate::*;

#[test]
fn full_code_pkce_flow() {
    let mut w = World::new();
    let uid = w.user("alice");
    let (client, secret) = w.client(false);
    assert!(secret.is_none());
    assert!(!client.confidential);

    let ctx = w
        .state
        .validate_authorize(&w.authorize_request(&client.id))
        .unwrap();
    assert_eq!(ctx.client_name, "Demo app");
    assert_eq!(ctx.scope, "connect");
    assert_eq!(ctx.redirect_uri, REDIRECT);

    let ip = "192.0.2.7".parse().unwrap();
    let (logged, ev) = w.state.login("alice", PASSWORD, ip, w.now).unwrap();
    assert_eq!(logged, uid);
    w.commit(ev);
    assert_eq!(w.audits("login").len(), 1);

    let code = w.state.issue_code(&ctx, &uid, w.now);
    let url = ctx.redirect_with_code(&code, "http://auth.test");
    assert!(url.starts_with("http://127.0.0.1:9000/callback?code="));
    assert!(url.contains("&state=xyz&iss=http%3A%2F%2Fauth.test"));

    w.advance(5);
    let resp = w.token(&w.code_request(&client.id, &code), None).unwrap();
    assert_eq!(resp.token_type, "Bearer");
    assert_eq!(resp.expires_in, 900);
    assert_eq!(resp.scope, "connect");
    let refresh = resp.refresh_token.clone().unwrap();

    // The access token: our kid, EdDSA, the user's grants and session.
    let header = jsonwebtoken::decode_header(&resp.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = w.state.signing_keys()[0].kid.clone();
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    let claims = w.state.verify_access(&resp.access_token, w.now).unwrap();
    assert_eq!(claims.sub, uid);
    assert_eq!(claims.iss, "http://auth.test");
    assert_eq!(claims.exp, w.now + 900);
    assert_eq!(claims.client_id.as_deref(), Some(client.id.as_str()));
    assert!(claims.aud.is_none());
    assert_eq!(claims.info, Some(serde_json::json!({"username": "alice"})));
    let grants = claims.grants.clone().unwrap();
    assert!(grants.allows_channel("chat:lobby", ChannelAction::Publish));
    assert!(!grants.allows_channel("news", ChannelAction::Subscribe));
    assert!(grants.allows_room("room-1", RoomAction::PublishVideo));
    assert!(!grants.allows_room("room-1", RoomAction::Admin));
    let sid = claims.sid.clone().unwrap();

    // The session exists and is listed.
    let sessions = w.state.sessions(&uid);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, sid);
    assert_eq!(sessions[0].client_id, client.id);
    assert_eq!(sessions[0].expires_at, w.now + 30 * 24 * 3600);

    // As connection claims for the gateway.
    let conn: ConnectionClaims = claims.clone().into();
    assert_eq!(conn.sub, uid);
    assert_eq!(conn.exp, Some(claims.exp));
    assert_eq!(
        conn.info_bytes().unwrap().unwrap(),
        br#"{"username":"alice"}"#
    );
    assert!(conn.grants.is_some());
    let conn2 = w
        .state
        .verify_connection(&resp.access_token, w.now)
        .unwrap();
    assert_eq!(conn2.jti.as_deref(), Some(claims.jti.as_str()));

    // Introspection of both tokens.
    let i = w.state.introspect(&resp.access_token, w.now);
    assert_eq!(i["active"], true);
    assert_eq!(i["sub"], uid);
    assert_eq!(i["client_id"], client.id);
    assert_eq!(i["scope"], "connect");
    assert_eq!(i["jti"], claims.jti);
    assert_eq!(i["iss"], "http://auth.test");
    assert_eq!(i["token_type"], "Bearer");
    let i = w.state.introspect(&refresh, w.now);
    assert_eq!(i["active"], true);
    assert_eq!(i["token_type"], "refresh_token");
    assert_eq!(i["sid"], sid);

    // Audit trail.
    assert_eq!(w.audits("token_issued").len(), 1);
    assert_eq!(w.logged("SessionStarted").len(), 1);
    assert_eq!(w.logged("RefreshIssued").len(), 1);
    // No secret in the log: the refresh token and code appear nowhere.
    let log = w.log.join("\n");
    assert!(!log.contains(&refresh));
    assert!(!log.contains(&code));
    assert!(!log.contains(&resp.access_token));
}

#[test]
fn single_redirect_uri_may_be_omitted_then_must_not_be_sent_differently() {
    let mut w = World::new();
    w.user("bob");
    let (client, _, ev) = w
        .state
        .create_client("One", vec![REDIRECT.into()], false, w.now)
        .unwrap();
    w.commit(ev);
    let mut req = w.authorize_request(&client.id);
    req.redirect_uri = None;
    let ctx = w.state.validate_authorize(&req).unwrap();
    assert!(!ctx.redirect_uri_given);
    let uid = w.state.user("bob").unwrap().id;
    let code = w.state.issue_code(&ctx, &uid, w.now);
    let mut treq = w.code_request(&client.id, &code);
    treq.redirect_uri = None;
    assert!(w.token(&treq, None).is_ok());
}

#[test]
fn confidential_client_must_authenticate() {
    let mut w = World::new();
    w.user("carol");
    let (client, secret) = w.client(true);
    let secret = secret.unwrap();
    assert!(client.confidential);

    // No secret: invalid_client.
    let code = w.code_for(&client.id, "carol");
    let err = w
        .token(&w.code_request(&client.id, &code), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidClient);
    assert_eq!(err.http_status(), 401);

    // Wrong secret (post): invalid_client.
    let code = w.code_for(&client.id, "carol");
    let mut req = w.code_request(&client.id, &code);
    req.client_secret = Some("wrong".into());
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidClient
    );

    // Both Basic and post: invalid_request.
    let code = w.code_for(&client.id, "carol");
    let mut req = w.code_request(&client.id, &code);
    req.client_secret = Some(secret.clone());
    assert_eq!(
        w.token(&req, Some((&client.id, &secret)))
            .unwrap_err()
            .error,
        OAuthErrorCode::InvalidRequest
    );

    // Basic: works.
    let code = w.code_for(&client.id, "carol");
    let req = w.code_request(&client.id, &code);
    let resp = w.token(&req, Some((&client.id, &secret))).unwrap();
    // Post: works for refresh.
    let mut r = w.refresh_request(&client.id, resp.refresh_token.as_deref().unwrap());
    r.client_secret = Some(secret.clone());
    w.advance(1);
    assert!(w.token(&r, None).is_ok());

    // A public client may not present a secret.
    let (public, _) = w.client(false);
    let code = w.code_for(&public.id, "carol");
    let mut req = w.code_request(&public.id, &code);
    req.client_secret = Some("anything".into());
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidClient
    );

    // Every refusal is audited.
    assert!(w.audits("token_refused").len() >= 4);
}

#[test]
fn wrong_or_missing_verifier() {
    let mut w = World::new();
    w.user("dave");
    let (client, _) = w.client(false);

    let code = w.code_for(&client.id, "dave");
    let mut req = w.code_request(&client.id, &code);
    req.code_verifier = Some("x".repeat(50));
    let err = w.token(&req, None).unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    // The code is spent by the failed attempt.
    let err = w
        .token(&w.code_request(&client.id, &code), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);

    let code = w.code_for(&client.id, "dave");
    let mut req = w.code_request(&client.id, &code);
    req.code_verifier = None;
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidRequest
    );

    // Too short a verifier is refused even if its hash were right.
    let code = w.code_for(&client.id, "dave");
    let mut req = w.code_request(&client.id, &code);
    req.code_verifier = Some("short".into());
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidGrant
    );

    // Another client cannot redeem the code.
    let (other, _) = w.client(false);
    let code = w.code_for(&client.id, "dave");
    let err = w
        .token(&w.code_request(&other.id, &code), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);

    // redirect_uri must match the authorization request.
    let code = w.code_for(&client.id, "dave");
    let mut req = w.code_request(&client.id, &code);
    req.redirect_uri = Some("https://app.example/cb".into());
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidGrant
    );

    // Expired code.
    let code = w.code_for(&client.id, "dave");
    w.advance(61);
    let err = w
        .token(&w.code_request(&client.id, &code), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    assert_eq!(err.error_description, "authorization code expired");

    // Unknown code.
    let err = w
        .token(&w.code_request(&client.id, "nope"), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    assert!(w.logged("SessionStarted").is_empty());
}

#[test]
fn authorize_refusals() {
    let mut w = World::new();
    let (client, _) = w.client(false);
    let base = w.authorize_request(&client.id);

    let redirect_err = |req: &AuthorizeRequest| match w.state.validate_authorize(req) {
        Err(e @ AuthorizeError::Redirect { .. }) => e,
        other => panic!("expected a redirect error, got {other:?}"),
    };

    // plain is refused, and so is a missing method (which means plain).
    let mut req = base.clone();
    req.code_challenge_method = Some("plain".into());
    req.code_challenge = Some(VERIFIER.into());
    let e = redirect_err(&req);
    assert_eq!(e.error().error, OAuthErrorCode::InvalidRequest);
    let url = e.redirect_url().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:9000/callback?error=invalid_request&error_description=")
    );
    assert!(url.ends_with("&state=xyz"));
    let mut req = base.clone();
    req.code_challenge_method = None;
    redirect_err(&req);

    // No PKCE at all.
    let mut req = base.clone();
    req.code_challenge = None;
    assert_eq!(
        redirect_err(&req).error().error,
        OAuthErrorCode::InvalidRequest
    );
    // Malformed challenge.
    let mut req = base.clone();
    req.code_challenge = Some("too-short".into());
    redirect_err(&req);

    // Implicit flow: unsupported.
    let mut req = base.clone();
    req.response_type = Some("token".into());
    assert_eq!(
        redirect_err(&req).error().error,
        OAuthErrorCode::UnsupportedResponseType
    );

    // Scope other than connect.
    let mut req = base.clone();
    req.scope = Some("connect api".into());
    assert_eq!(
        redirect_err(&req).error().error,
        OAuthErrorCode::InvalidScope
    );
    let mut req = base.clone();
    req.scope = Some("connect".into());
    assert!(w.state.validate_authorize(&req).is_ok());

    // Never redirect to an unregistered URI or for an unknown client.
    for req in [
        AuthorizeRequest {
            redirect_uri: Some("https://evil.example/cb".into()),
            ..base.clone()
        },
        AuthorizeRequest {
            redirect_uri: Some(format!("{REDIRECT}/extra")),
            ..base.clone()
        },
        AuthorizeRequest {
            redirect_uri: None,
            ..base.clone()
        },
        AuthorizeRequest {
            client_id: Some("sbc_unknown".into()),
            ..base.clone()
        },
        AuthorizeRequest {
            client_id: None,
            ..base.clone()
        },
        AuthorizeRequest {
            state: Some("s".repeat(5000)),
            ..base.clone()
        },
    ] {
        match w.state.validate_authorize(&req) {
            Err(e @ AuthorizeError::NoRedirect(_)) => assert!(e.redirect_url().is_none()),
            other => panic!("expected NoRedirect, got {other:?}"),
        }
    }
}

#[test]
fn reused_code_revokes_the_first_tokens() {
    let mut w = World::new();
    w.user("erin");
    let (client, _) = w.client(false);
    let code = w.code_for(&client.id, "erin");
    let first = w.token(&w.code_request(&client.id, &code), None).unwrap();
    assert!(w.state.verify_access(&first.access_token, w.now).is_ok());

    w.advance(2);
    let err = w
        .token(&w.code_request(&client.id, &code), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    assert_eq!(
        w.state
            .verify_access(&first.access_token, w.now)
            .unwrap_err(),
        TokenError::Invalid("token revoked".into())
    );
    let err = w
        .token(
            &w.refresh_request(&client.id, first.refresh_token.as_deref().unwrap()),
            None,
        )
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    assert_eq!(w.logged("AccessRevoked").len(), 1);
    assert_eq!(w.logged("FamilyRevoked").len(), 1);
    assert_eq!(
        w.logged("FamilyRevoked")[0]["reason"],
        "authorization code reused"
    );
}

#[test]
fn refresh_rotation() {
    let mut w = World::new();
    let (client, uid, first) = w.logged_in("frank");
    let r1 = first.refresh_token.clone().unwrap();
    w.advance(600);
    let second = w.token(&w.refresh_request(&client, &r1), None).unwrap();
    let r2 = second.refresh_token.clone().unwrap();
    assert_ne!(r1, r2);
    assert_ne!(first.access_token, second.access_token);
    let c1 = w.state.verify_access(&first.access_token, w.now).unwrap();
    let c2 = w.state.verify_access(&second.access_token, w.now).unwrap();
    assert_eq!(c1.sid, c2.sid, "same session");
    assert_ne!(c1.jti, c2.jti);
    assert_eq!(c2.sub, uid);
    assert_eq!(w.state.introspect(&r1, w.now)["active"], false);
    assert_eq!(w.state.introspect(&r2, w.now)["active"], true);
    let s = &w.state.sessions(&uid)[0];
    assert_eq!(s.last_used_at, w.now);
    assert_eq!(s.expires_at, w.now + 30 * 24 * 3600);

    // Scope may narrow but not widen.
    w.advance(1);
    let mut req = w.refresh_request(&client, &r2);
    req.scope = Some("connect api".into());
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidScope
    );
    req.scope = Some("connect".into());
    let third = w.token(&req, None).unwrap();
    assert_eq!(third.scope, "connect");

    // A refresh token is bound to its client.
    let (other, _) = w.client(false);
    let req = w.refresh_request(&other.id, third.refresh_token.as_deref().unwrap());
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidGrant
    );
}

#[test]
fn refresh_reuse_revokes_the_whole_family() {
    let mut w = World::new();
    let (client, uid, first) = w.logged_in("grace");
    let r1 = first.refresh_token.clone().unwrap();
    w.advance(10);
    let second = w.token(&w.refresh_request(&client, &r1), None).unwrap();
    let r2 = second.refresh_token.clone().unwrap();
    w.advance(10);
    let third = w.token(&w.refresh_request(&client, &r2), None).unwrap();
    let r3 = third.refresh_token.clone().unwrap();

    // An attacker replays r1.
    w.advance(10);
    let err = w.token(&w.refresh_request(&client, &r1), None).unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    let revoked = w.logged("FamilyRevoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["reason"], "refresh token reuse");

    // The newest token of the family is dead too, and so are its access tokens.
    let err = w.token(&w.refresh_request(&client, &r3), None).unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    for t in [
        &first.access_token,
        &second.access_token,
        &third.access_token,
    ] {
        assert!(w.state.verify_access(t, w.now).is_err());
    }
    assert!(w.state.sessions(&uid).is_empty());
    assert_eq!(w.state.introspect(&r3, w.now)["active"], false);
}

#[test]
fn expired_refresh_token() {
    let mut w = World::with_config(AuthConfig {
        refresh_ttl: Duration::from_secs(3600),
        ..config()
    });
    let (client, _, first) = w.logged_in("heidi");
    w.advance(3600);
    let err = w
        .token(
            &w.refresh_request(&client, first.refresh_token.as_deref().unwrap()),
            None,
        )
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    assert_eq!(err.error_description, "refresh token expired");
    assert_eq!(
        w.state
            .verify_access(&first.access_token, w.now)
            .unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn session_idle_timeout_and_max_lifetime() {
    let mut w = World::with_config(AuthConfig {
        session_idle_timeout: Some(Duration::from_secs(3600)),
        session_max_lifetime: Some(Duration::from_secs(4 * 3600)),
        ..config()
    });
    let (client, uid, first) = w.logged_in("ivan");
    // Refresh tokens never outlive the session.
    assert_eq!(w.state.sessions(&uid)[0].expires_at, T0 + 4 * 3600);
    let mut refresh = first.refresh_token.unwrap();
    for _ in 0..4 {
        w.advance(3000);
        refresh = w
            .token(&w.refresh_request(&client, &refresh), None)
            .unwrap()
            .refresh_token
            .unwrap();
    }
    w.advance(3000); // 4h10m after login: past the absolute lifetime.
    let err = w
        .token(&w.refresh_request(&client, &refresh), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);

    let (client, uid, first) = w.logged_in("judy");
    w.advance(3601);
    let err = w
        .token(
            &w.refresh_request(&client, first.refresh_token.as_deref().unwrap()),
            None,
        )
        .unwrap_err();
    assert_eq!(err.error_description, "session idle timeout");
    assert!(w.state.sessions(&uid).is_empty());
}

#[test]
fn client_credentials_with_api_keys() {
    let mut w = World::new();
    let (key, ev) = w.state.create_api_key("backend", w.now);
    w.commit(ev);
    let (key2, ev) = w.state.create_api_key("backend-next", w.now);
    w.commit(ev);
    assert!(key.id.starts_with("sbk_"));
    assert_eq!(w.state.api_keys().len(), 2);
    let log = w.log.join("\n");
    assert!(!log.contains(&key.secret));
    assert!(!format!("{key:?}").contains(&key.secret));

    let req = |id: &str, secret: &str| TokenRequest {
        grant_type: Some("client_credentials".into()),
        client_id: Some(id.into()),
        client_secret: Some(secret.into()),
        ..Default::default()
    };
    let resp = w.token(&req(&key.id, &key.secret), None).unwrap();
    assert!(resp.refresh_token.is_none());
    assert_eq!(resp.scope, "api");
    assert_eq!(resp.expires_in, 300);
    let claims = w.state.verify_access(&resp.access_token, w.now).unwrap();
    assert_eq!(claims.sub, format!("apikey:{}", key.id));
    assert_eq!(claims.api_key_id(), Some(key.id.as_str()));
    assert!(claims.has_scope("api"));
    assert!(claims.sid.is_none());

    // HTTP Basic.
    let basic = TokenRequest {
        grant_type: Some("client_credentials".into()),
        scope: Some("api".into()),
        ..Default::default()
    };
    assert!(w.token(&basic, Some((&key2.id, &key2.secret))).is_ok());

    // Wrong secret, unknown id, another key's secret, nothing: invalid_client.
    for r in [
        req(&key.id, "wrong"),
        req("sbk_nope", &key.secret),
        req(&key.id, &key2.secret),
        TokenRequest {
            grant_type: Some("client_credentials".into()),
            ..Default::default()
        },
    ] {
        let err = w.token(&r, None).unwrap_err();
        assert_eq!(err.error, OAuthErrorCode::InvalidClient);
    }
    let mut bad_scope = req(&key.id, &key.secret);
    bad_scope.scope = Some("connect".into());
    assert_eq!(
        w.token(&bad_scope, None).unwrap_err().error,
        OAuthErrorCode::InvalidScope
    );

    // check_api_key: both forms, constant-time compare.
    assert!(w.state.check_api_key(&key.combined()));
    assert!(w.state.check_api_key(&key.secret));
    assert_eq!(w.state.api_key_id_for(&key2.secret), Some(key2.id.clone()));
    assert!(
        !w.state
            .check_api_key(&format!("{}.{}", key.id, key2.secret))
    );
    assert!(!w.state.check_api_key("garbage"));
    assert!(!w.state.check_api_key(""));

    // Revoking the key kills its tokens and its secret.
    let ev = w.state.revoke_api_key(&key.id, w.now).unwrap();
    assert_eq!(
        ev[0].revocation(),
        Some(Revocation::User {
            user_id: format!("apikey:{}", key.id)
        })
    );
    w.commit(ev);
    assert!(w.state.verify_access(&resp.access_token, w.now).is_err());
    assert!(!w.state.check_api_key(&key.secret));
    assert!(w.state.check_api_key(&key2.secret));
    assert_eq!(
        w.state.revoke_api_key(&key.id, w.now).unwrap_err(),
        AuthError::UnknownApiKey
    );
    assert_eq!(
        w.token(&req(&key.id, &key.secret), None).unwrap_err().error,
        OAuthErrorCode::InvalidClient
    );
}

#[test]
fn unsupported_and_malformed_token_requests() {
    let mut w = World::new();
    for (grant, code) in [
        (None, OAuthErrorCode::InvalidRequest),
        (Some("password"), OAuthErrorCode::UnsupportedGrantType),
        (Some("implicit"), OAuthErrorCode::UnsupportedGrantType),
        (
            Some("urn:ietf:params:oauth:grant-type:device_code"),
            OAuthErrorCode::UnsupportedGrantType,
        ),
    ] {
        let req = TokenRequest {
            grant_type: grant.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(w.token(&req, None).unwrap_err().error, code);
    }
    let huge = TokenRequest {
        grant_type: Some("refresh_token".into()),
        refresh_token: Some("x".repeat(100_000)),
        ..Default::default()
    };
    assert_eq!(
        w.token(&huge, None).unwrap_err().error,
        OAuthErrorCode::InvalidRequest
    );
    // Missing client for the code grant.
    let req = TokenRequest {
        grant_type: Some("authorization_code".into()),
        code: Some("c".into()),
        ..Default::default()
    };
    assert_eq!(
        w.token(&req, None).unwrap_err().error,
        OAuthErrorCode::InvalidClient
    );
}

#[test]
fn revoke_refresh_and_access_tokens() {
    let mut w = World::new();
    let (client, uid, first) = w.logged_in("kim");
    let refresh = first.refresh_token.clone().unwrap();

    // Unknown tokens: no events (the endpoint answers 200 anyway).
    assert!(w.state.revoke("garbage", None, w.now).is_empty());
    assert!(w.state.revoke("", None, w.now).is_empty());
    assert!(
        w.state
            .revoke("a.b.c", Some("access_token"), w.now)
            .is_empty()
    );

    // Access token: on the list until its exp.
    let ev = w
        .state
        .revoke(&first.access_token, Some("access_token"), w.now);
    let claims = w.state.verify_access(&first.access_token, w.now).unwrap();
    assert_eq!(
        ev[0].revocation(),
        Some(Revocation::Token {
            jti: claims.jti.clone()
        })
    );
    w.commit(ev);
    assert!(w.state.is_access_revoked(&claims.jti, None));
    assert_eq!(
        w.state
            .verify_access(&first.access_token, w.now)
            .unwrap_err(),
        TokenError::Invalid("token revoked".into())
    );
    assert_eq!(
        w.state.introspect(&first.access_token, w.now)["active"],
        false
    );
    // Revoking twice: nothing more.
    assert!(w.state.revoke(&first.access_token, None, w.now).is_empty());
    // The session is still alive: refresh works.
    w.advance(1);
    let second = w
        .token(&w.refresh_request(&client, &refresh), None)
        .unwrap();
    assert!(w.state.verify_access(&second.access_token, w.now).is_ok());

    // Refresh token (hint or not): the whole family goes.
    let r2 = second.refresh_token.clone().unwrap();
    let ev = w.state.revoke(&r2, Some("refresh_token"), w.now);
    assert!(matches!(
        ev[0].revocation(),
        Some(Revocation::Session { .. })
    ));
    w.commit(ev);
    assert!(w.state.verify_access(&second.access_token, w.now).is_err());
    assert!(w.state.is_access_revoked("whatever", claims.sid.as_deref()));
    assert!(w.token(&w.refresh_request(&client, &r2), None).is_err());
    assert!(w.state.sessions(&uid).is_empty());
    assert_eq!(w.audits("token_revoked").len(), 2);

    // Revocation entries are pruned once the token expired.
    w.advance(1000);
    w.state.prune(w.now);
    assert!(!w.state.is_access_revoked(&claims.jti, None));
}

#[test]
fn introspection_inactive_cases() {
    let mut w = World::new();
    let (_, _, first) = w.logged_in("leo");
    for t in ["", "nonsense", "a.b.c", &"x".repeat(20_000)] {
        assert_eq!(
            w.state.introspect(t, w.now),
            serde_json::json!({"active": false})
        );
    }
    w.advance(900);
    assert_eq!(
        w.state.introspect(&first.access_token, w.now)["active"],
        false
    );
    assert_eq!(
        w.state
            .introspect(first.refresh_token.as_deref().unwrap(), w.now)["active"],
        true
    );
}

#[test]
fn disabled_user_is_refused_everywhere() {
    let mut w = World::new();
    let (client, uid, first) = w.logged_in("mallory");
    let refresh = first.refresh_token.clone().unwrap();
    assert!(!w.state.is_user_disabled(&uid));

    let ev = w.state.disable_user("mallory", w.now).unwrap();
    assert_eq!(
        ev[0].revocation(),
        Some(Revocation::User {
            user_id: uid.clone()
        })
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, switchboard_auth::oauth::AuthEvent::FamilyRevoked { .. }))
    );
    w.commit(ev);
    assert!(w.state.is_user_disabled(&uid));
    assert!(w.state.user(&uid).unwrap().disabled);
    assert!(w.state.disable_user(&uid, w.now).unwrap().is_empty());
    assert_eq!(
        w.state.disable_user("nobody", w.now).unwrap_err(),
        AuthError::UnknownUser
    );

    let err = w
        .token(&w.refresh_request(&client, &refresh), None)
        .unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    assert!(w.state.verify_access(&first.access_token, w.now).is_err());
    assert_eq!(w.state.introspect(&refresh, w.now)["active"], false);

    let ip = "192.0.2.9".parse().unwrap();
    let (err, ev) = w.state.login("mallory", PASSWORD, ip, w.now).unwrap_err();
    assert_eq!(err, switchboard_auth::oauth::LoginError::Disabled);
    w.commit(ev);

    // A code issued before the disable cannot be redeemed either.
    let uid2 = w.user("nina");
    let ctx = w
        .state
        .validate_authorize(&w.authorize_request(&client))
        .unwrap();
    let code = w.state.issue_code(&ctx, &uid2, w.now);
    let ev = w.state.disable_user(&uid2, w.now).unwrap();
    w.commit(ev);
    let err = w.token(&w.code_request(&client, &code), None).unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
}

#[test]
fn sessions_list_and_end() {
    let mut w = World::new();
    let (client, uid, first) = w.logged_in("oscar");
    w.advance(10);
    let code = w.code_for(&client, "oscar");
    let second = w.token(&w.code_request(&client, &code), None).unwrap();
    let sessions = w.state.sessions(&uid);
    assert_eq!(sessions.len(), 2);
    assert_eq!(w.state.sessions("usr_other").len(), 0);

    let sid = sessions[0].id.clone();
    let ev = w.state.end_session(&sid, w.now).unwrap();
    assert_eq!(
        ev[0].revocation(),
        Some(Revocation::Session { sid: sid.clone() })
    );
    w.commit(ev);
    assert_eq!(w.audits("logout").len(), 1);
    assert!(w.state.verify_access(&first.access_token, w.now).is_err());
    assert!(w.state.verify_access(&second.access_token, w.now).is_ok());
    assert!(
        w.token(
            &w.refresh_request(&client, first.refresh_token.as_deref().unwrap()),
            None
        )
        .is_err()
    );
    assert_eq!(w.state.sessions(&uid).len(), 1);
    assert!(w.state.end_session(&sid, w.now).unwrap().is_empty());
    assert_eq!(
        w.state.end_session("ses_nope", w.now).unwrap_err(),
        AuthError::UnknownSession
    );

    // Deleting the client ends its sessions.
    let ev = w.state.delete_client(&client, w.now).unwrap();
    w.commit(ev);
    assert!(w.state.sessions(&uid).is_empty());
    assert!(w.state.verify_access(&second.access_token, w.now).is_err());
    assert!(w.state.clients().is_empty());
    assert_eq!(
        w.state.delete_client(&client, w.now).unwrap_err(),
        AuthError::UnknownClient
    );
}

#[test]
fn management_validation() {
    let mut w = World::new();
    w.user("Alice");
    let taken = w
        .state
        .create_user("alice", PASSWORD, Default::default(), w.now);
    assert_eq!(taken.unwrap_err(), AuthError::UsernameTaken);
    for bad in ["", "with space", "ünïcode", &"x".repeat(65)] {
        assert_eq!(
            w.state
                .create_user(bad, PASSWORD, Default::default(), w.now)
                .unwrap_err(),
            AuthError::InvalidUsername
        );
    }
    assert!(matches!(
        w.state
            .create_user("short", "1234567", Default::default(), w.now),
        Err(AuthError::InvalidPassword(_))
    ));
    assert!(matches!(
        w.state
            .create_user("long", &"p".repeat(1025), Default::default(), w.now),
        Err(AuthError::InvalidPassword(_))
    ));
    // Lookup by id or name, case-insensitively.
    let rec = w.state.user("ALICE").unwrap();
    assert_eq!(rec.username, "Alice");
    assert_eq!(w.state.user(&rec.id).unwrap(), rec);
    assert_eq!(w.state.users().len(), 1);

    for uris in [
        vec![],
        vec!["/relative".to_string()],
        vec!["https://x.example/cb#frag".to_string()],
        vec!["custom-scheme://cb".to_string()],
    ] {
        assert!(matches!(
            w.state.create_client("c", uris, false, w.now),
            Err(AuthError::InvalidClient(_))
        ));
    }
    assert!(matches!(
        w.state
            .create_client("", vec![REDIRECT.into()], false, w.now),
        Err(AuthError::InvalidClient(_))
    ));
    let (c, secret, ev) = w
        .state
        .create_client("conf", vec![REDIRECT.into()], true, w.now)
        .unwrap();
    let secret = secret.unwrap();
    w.commit(ev);
    assert!(!w.log.join("").contains(&secret));
    assert_eq!(w.state.client(&c.id).unwrap(), c);
}
