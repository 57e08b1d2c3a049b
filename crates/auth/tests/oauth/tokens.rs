//! verify_access against forged and malformed tokens; key rotation; JWKS
//! and metadata; secrets out of Debug output.

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_auth::TokenError;
use switchboard_auth::oauth::{AuthConfig, AuthError, AuthEvent, AuthState, TokenRequest};

use crate::*;

fn payload(w: &World, token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    let _ = w;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn other_ed_key() -> EncodingKey {
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    EncodingKey::from_ed_der(doc.as_ref())
}

#[test]
fn forged_and_malformed_tokens_are_refused() {
    let mut w = World::new();
    let (_, _, resp) = w.logged_in("alice");
    let good = resp.access_token;
    let claims = payload(&w, &good);
    let kid = w.state.signing_keys()[0].kid.clone();
    assert!(w.state.verify_access(&good, w.now).is_ok());

    let invalid = |t: &str| match w.state.verify_access(t, w.now) {
        Err(TokenError::Invalid(reason)) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    };

    // Signed by another Ed25519 key under our kid.
    assert_eq!(
        invalid(&sign(
            Algorithm::EdDSA,
            Some(&kid),
            &claims,
            &other_ed_key()
        )),
        "bad signature"
    );
    // Wrong kid / no kid.
    assert_eq!(
        invalid(&sign(
            Algorithm::EdDSA,
            Some("other-kid"),
            &claims,
            &other_ed_key()
        )),
        "unknown kid"
    );
    assert_eq!(
        invalid(&sign(Algorithm::EdDSA, None, &claims, &other_ed_key())),
        "missing kid"
    );
    // alg none.
    let b64 = |v: &Value| b64url(serde_json::to_string(v).unwrap().as_bytes());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": kid})),
        b64(&claims)
    );
    invalid(&none);
    let none2 = format!(
        "{}.{}.",
        b64(&json!({"alg": "None", "kid": kid})),
        b64(&claims)
    );
    invalid(&none2);
    // HS256 "signed" with our public key (raw bytes and its JWK text).
    let jwks = w.state.jwks();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&x)
        .unwrap();
    for secret in [raw.clone(), x.clone().into_bytes()] {
        let t = sign(
            Algorithm::HS256,
            Some(&kid),
            &claims,
            &EncodingKey::from_secret(&secret),
        );
        assert_eq!(invalid(&t), "unexpected alg");
    }
    // Tampered payload with the original signature.
    let mut tampered = claims.clone();
    tampered["sub"] = json!("usr_admin");
    let parts: Vec<&str> = good.split('.').collect();
    let t = format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]);
    assert_eq!(invalid(&t), "bad signature");
    // Garbage.
    for t in ["", "a", "a.b", "a.b.c", "a.b.c.d", &"x".repeat(20_000)] {
        invalid(t);
    }
    // Expired.
    assert_eq!(
        w.state.verify_access(&good, w.now + 900).unwrap_err(),
        TokenError::Expired
    );
    // Another issuer's state (other keys) refuses it, and ours refuses theirs.
    let other = World::with_config(AuthConfig {
        issuer: "http://other.test".into(),
        ..config()
    });
    assert_eq!(
        other.state.verify_access(&good, w.now).unwrap_err(),
        TokenError::Invalid("unknown kid".into())
    );
    // Errors never echo the token.
    let err = w.state.verify_access(&good, w.now + 900).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&good[..20]));
}

#[test]
fn audience_is_set_and_checked() {
    let mut w = World::with_config(AuthConfig {
        audience: Some("switchboard".into()),
        ..config()
    });
    let (_, _, resp) = w.logged_in("bob");
    let claims = w.state.verify_access(&resp.access_token, w.now).unwrap();
    assert_eq!(
        claims.aud,
        Some(switchboard_auth::Audience::One("switchboard".into()))
    );

    // The same keys but another configured audience: refused.
    let mut other = AuthState::new(AuthConfig {
        audience: Some("elsewhere".into()),
        ..config()
    });
    for line in &w.log {
        other.apply(&serde_json::from_str::<AuthEvent>(line).unwrap());
    }
    assert_eq!(
        other.verify_access(&resp.access_token, w.now).unwrap_err(),
        TokenError::Invalid("audience mismatch".into())
    );
    // A token without aud, where one is required: refused.
    let mut no_aud = AuthState::new(config());
    for line in &w.log {
        no_aud.apply(&serde_json::from_str::<AuthEvent>(line).unwrap());
    }
    let (key, ev) = no_aud.create_api_key("k", w.now);
    for e in &ev {
        no_aud.apply(e);
        w.state.apply(e);
    }
    let req = TokenRequest {
        grant_type: Some("client_credentials".into()),
        client_id: Some(key.id.clone()),
        client_secret: Some(key.secret.clone()),
        ..Default::default()
    };
    let (t, _) = no_aud.token(&req, None, w.now).unwrap();
    assert!(no_aud.verify_access(&t.access_token, w.now).is_ok());
    assert_eq!(
        w.state.verify_access(&t.access_token, w.now).unwrap_err(),
        TokenError::Invalid("audience mismatch".into())
    );
}

#[test]
fn key_rotation() {
    let mut w = World::new();
    let (client, _, first) = w.logged_in("carol");
    let old_kid = w.state.signing_keys()[0].kid.clone();

    let ev = w.state.rotate_signing_key(w.now);
    w.commit(ev);
    let keys = w.state.signing_keys();
    assert_eq!(keys.len(), 2);
    assert!(!keys[0].active && keys[1].active);
    let new_kid = keys[1].kid.clone();
    assert_ne!(old_kid, new_kid);
    let jwks = w.state.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![new_kid.as_str(), old_kid.as_str()]);

    // Old tokens still verify; new ones use the new kid.
    assert!(w.state.verify_access(&first.access_token, w.now).is_ok());
    w.advance(1);
    let second = w
        .token(
            &w.refresh_request(&client, first.refresh_token.as_deref().unwrap()),
            None,
        )
        .unwrap();
    let h = jsonwebtoken::decode_header(&second.access_token).unwrap();
    assert_eq!(h.kid.as_deref(), Some(new_kid.as_str()));
    assert!(w.state.verify_access(&second.access_token, w.now).is_ok());

    // The active key cannot be retired; the old one can, and its tokens die.
    assert!(matches!(
        w.state.retire_signing_key(&new_kid, w.now),
        Err(AuthError::SigningKey(_))
    ));
    let ev = w.state.retire_signing_key(&old_kid, w.now).unwrap();
    w.commit(ev);
    assert_eq!(
        w.state
            .verify_access(&first.access_token, w.now)
            .unwrap_err(),
        TokenError::Invalid("unknown kid".into())
    );
    assert!(w.state.verify_access(&second.access_token, w.now).is_ok());
    assert_eq!(w.state.jwks()["keys"].as_array().unwrap().len(), 1);
    assert!(w.state.retire_signing_key(&old_kid, w.now).is_err());
    assert!(w.state.ensure_signing_key(w.now).is_empty());
}

#[test]
fn jwks_keys_verify_tokens_with_a_third_party_library() {
    let mut w = World::new();
    let (_, uid, resp) = w.logged_in("dave");
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(w.state.jwks()).unwrap();
    let jwk = jwks.find(&w.state.signing_keys()[0].kid).unwrap();
    assert_eq!(w.state.jwks()["keys"][0]["kty"], "OKP");
    assert_eq!(w.state.jwks()["keys"][0]["crv"], "Ed25519");
    assert_eq!(w.state.jwks()["keys"][0]["use"], "sig");
    assert_eq!(w.state.jwks()["keys"][0]["alg"], "EdDSA");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    v.validate_exp = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(&resp.access_token, &key, &v).unwrap();
    assert_eq!(data.claims["sub"], uid);
    assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    // And as a connection token with the crate's own Verifier (PEM-less
    // verification is through AuthState; the claims are Centrifugo-compatible).
    let conn = w
        .state
        .verify_connection(&resp.access_token, w.now)
        .unwrap();
    assert_eq!(conn.sub, uid);
}

#[test]
fn metadata_document() {
    let w = World::new();
    let m = w.state.metadata(w.state.config());
    assert_eq!(m["issuer"], "http://auth.test");
    assert_eq!(
        m["authorization_endpoint"],
        "http://auth.test/oauth/authorize"
    );
    assert_eq!(m["token_endpoint"], "http://auth.test/oauth/token");
    assert_eq!(m["jwks_uri"], "http://auth.test/.well-known/jwks.json");
    assert_eq!(m["revocation_endpoint"], "http://auth.test/oauth/revoke");
    assert_eq!(
        m["introspection_endpoint"],
        "http://auth.test/oauth/introspect"
    );
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(
        m["grant_types_supported"],
        json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert!(
        m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let mut w = World::new();
    let key_event = w
        .log
        .iter()
        .map(|l| serde_json::from_str::<AuthEvent>(l).unwrap())
        .find(|e| matches!(e, AuthEvent::SigningKeyCreated { .. }))
        .unwrap();
    let AuthEvent::SigningKeyCreated { pkcs8_b64, .. } = &key_event else {
        unreachable!()
    };
    assert!(!format!("{key_event:?}").contains(&pkcs8_b64.0));

    let (_, ev) = w
        .state
        .create_user("erin", PASSWORD, Default::default(), w.now)
        .unwrap();
    let AuthEvent::UserCreated { password_hash, .. } = &ev[0] else {
        unreachable!()
    };
    assert!(password_hash.0.starts_with("$argon2id$"));
    assert!(!format!("{ev:?}").contains(&password_hash.0));
    w.commit(ev);

    let (_, _, resp) = w.logged_in("frank");
    let shown = format!("{resp:?}");
    assert!(!shown.contains(&resp.access_token));
    assert!(!shown.contains(resp.refresh_token.as_deref().unwrap()));
    let req = TokenRequest {
        grant_type: Some("refresh_token".into()),
        refresh_token: Some("secret-refresh".into()),
        client_secret: Some("secret-client".into()),
        code: Some("secret-code".into()),
        code_verifier: Some("secret-verifier".into()),
        ..Default::default()
    };
    assert!(!format!("{req:?}").contains("secret-"));
    assert!(!format!("{:?}", w.state).contains("argon2"));
}

#[test]
fn hmac_connection_tokens_carry_grants() {
    use switchboard_auth::grants::ChannelAction;
    use switchboard_auth::{ConnectionTokenSpec, Minter, Verifier, VerifierConfig};
    let token = Minter::hs256("secret")
        .unwrap()
        .mint_connection(
            &ConnectionTokenSpec {
                user: "42".into(),
                grants: Some(user_grants()),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    let v = Verifier::new(&VerifierConfig {
        hmac_secret: Some("secret".into()),
        ..Default::default()
    })
    .unwrap();
    let claims = v.verify_connection(&token, T0).unwrap();
    assert!(
        claims
            .grants
            .unwrap()
            .allows_channel("chat:x", ChannelAction::Subscribe)
    );
    let plain = Minter::hs256("secret")
        .unwrap()
        .mint_connection(&ConnectionTokenSpec::default(), T0)
        .unwrap();
    assert!(v.verify_connection(&plain, T0).unwrap().grants.is_none());
}

#[test]
fn config_from_toml() {
    let cfg: AuthConfig = toml::from_str(
        r#"
        issuer = "https://auth.example.com"
        audience = "switchboard"
        access_ttl = "10m"
        refresh_ttl = "7d"
        session_idle_timeout = "1h"
        login_attempts_per_account = 3

        [password_hashing]
        memory_kib = 65536

        [[external_issuers]]
        issuer = "https://idp.example.com/realms/main"
        audience = "switchboard"
        jwks_url = "https://idp.example.com/realms/main/protocol/openid-connect/certs"
        roles_claim = "realm_access.roles"

        [external_issuers.default_grants]
        channels = [{ pattern = "public:*", subscribe = true }]

        [external_issuers.role_grants.admin]
        channels = [{ pattern = "*", subscribe = true, publish = true }]
        rooms = [{ pattern = "*", join = true, admin = true }]
        "#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.access_ttl.as_secs(), 600);
    assert_eq!(cfg.refresh_ttl.as_secs(), 7 * 24 * 3600);
    assert_eq!(cfg.code_ttl.as_secs(), 60);
    assert_eq!(cfg.session_idle_timeout.unwrap().as_secs(), 3600);
    assert_eq!(cfg.login_attempts_per_account, 3);
    assert_eq!(cfg.login_attempts_per_ip, 20);
    assert_eq!(cfg.password_hashing.memory_kib, 65536);
    assert_eq!(cfg.password_hashing.iterations, 2);
    let ext = &cfg.external_issuers[0];
    assert_eq!(ext.user_claim, "sub");
    assert!(ext.role_grants["admin"].rooms[0].admin);

    assert!(toml::from_str::<AuthConfig>("isuer = 'x'").is_err());
    let bad = AuthConfig {
        issuer: "http://x/".into(),
        ..AuthConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = AuthConfig {
        password_hashing: switchboard_auth::oauth::PasswordHashing {
            memory_kib: 1,
            iterations: 0,
            parallelism: 1,
        },
        ..AuthConfig::default()
    };
    assert!(bad.validate().is_err());
    AuthConfig::default().validate().unwrap();
}
