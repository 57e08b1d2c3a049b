//! Replaying the persisted event stream into a fresh state reproduces it.

use switchboard_auth::oauth::{AuthEvent, AuthState, OAuthErrorCode};

use crate::*;

fn replayed(w: &World) -> AuthState {
    let mut fresh = AuthState::new(config());
    for line in &w.log {
        let e: AuthEvent = serde_json::from_str(line).unwrap();
        fresh.apply(&e);
    }
    fresh
}

#[test]
fn replay_reproduces_the_state() {
    let mut w = World::new();
    // Users, one disabled.
    let uid = w.user("alice");
    let bob = w.user("bob");
    let ev = w.state.disable_user(&bob, w.now).unwrap();
    w.commit(ev);
    // API keys, one revoked.
    let (k1, ev) = w.state.create_api_key("one", w.now);
    w.commit(ev);
    let (k2, ev) = w.state.create_api_key("two", w.now);
    w.commit(ev);
    let ev = w.state.revoke_api_key(&k1.id, w.now).unwrap();
    w.commit(ev);
    // Clients, a rotated key, sessions: one live (rotated once), one ended.
    let (client, _) = w.client(false);
    let (conf, secret) = w.client(true);
    let ev = w.state.rotate_signing_key(w.now);
    w.commit(ev);
    let code = w.code_for(&client.id, "alice");
    let live = w.token(&w.code_request(&client.id, &code), None).unwrap();
    w.advance(5);
    let live = w
        .token(
            &w.refresh_request(&client.id, live.refresh_token.as_deref().unwrap()),
            None,
        )
        .unwrap();
    let code = w.code_for(&conf.id, "alice");
    let secret = secret.unwrap();
    let ended = w
        .token(&w.code_request(&conf.id, &code), Some((&conf.id, &secret)))
        .unwrap();
    let ended_sid = w
        .state
        .verify_access(&ended.access_token, w.now)
        .unwrap()
        .sid
        .unwrap();
    let ev = w.state.end_session(&ended_sid, w.now).unwrap();
    w.commit(ev);
    let revoked_access = {
        let code = w.code_for(&client.id, "alice");
        let t = w.token(&w.code_request(&client.id, &code), None).unwrap();
        let ev = w.state.revoke(&t.access_token, None, w.now);
        w.commit(ev);
        t
    };

    let mut r = replayed(&w);
    assert_eq!(r.users(), w.state.users());
    assert!(r.is_user_disabled(&bob));
    assert_eq!(r.api_keys(), w.state.api_keys());
    assert!(r.check_api_key(&k2.combined()));
    assert!(!r.check_api_key(&k1.combined()));
    assert_eq!(r.clients(), w.state.clients());
    assert_eq!(r.jwks(), w.state.jwks());
    assert_eq!(r.signing_keys(), w.state.signing_keys());
    assert_eq!(r.sessions(&uid), w.state.sessions(&uid));
    assert_eq!(r.sessions(&uid).len(), 2);

    // Tokens behave the same in the replayed state.
    assert!(r.verify_access(&live.access_token, w.now).is_ok());
    assert!(r.verify_access(&ended.access_token, w.now).is_err());
    assert!(
        r.verify_access(&revoked_access.access_token, w.now)
            .is_err()
    );
    let ip = "192.0.2.1".parse().unwrap();
    assert!(r.login("alice", PASSWORD, ip, w.now).is_ok());
    assert!(r.ensure_signing_key(w.now).is_empty());

    // The live refresh token rotates in the replayed state, and its
    // predecessor counts as reused there too.
    let req = w.refresh_request(&client.id, live.refresh_token.as_deref().unwrap());
    let (resp, ev) = r.token(&req, None, w.now + 1).unwrap();
    for e in &ev {
        r.apply(e);
    }
    assert!(r.verify_access(&resp.access_token, w.now + 1).is_ok());
    let (err, ev) = r.token(&req, None, w.now + 2).unwrap_err();
    assert_eq!(err.error, OAuthErrorCode::InvalidGrant);
    assert!(
        ev.iter()
            .any(|e| matches!(e, AuthEvent::FamilyRevoked { .. }))
    );

    // Every event type's JSON carries its tag.
    for line in &w.log {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let e: AuthEvent = serde_json::from_str(line).unwrap();
        assert_eq!(v["type"], e.kind());
    }
}
