//! External identity providers: a JWKS the test generates (ES256 and
//! Ed25519), claim mapping, and the refusals.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_auth::TokenError;
use switchboard_auth::grants::{ChannelAction, ChannelGrant, Grants, RoomAction, RoomGrant};
use switchboard_auth::oauth::{AuthConfig, AuthError, AuthState, ExternalIssuer};

use crate::*;

const IDP: &str = "https://idp.example.com/realms/main";

/// A fake identity provider: one ES256 and one Ed25519 key.
struct Idp {
    ec: EncodingKey,
    ed: EncodingKey,
    jwks: Value,
}

impl Idp {
    fn new() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let ec_doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec_pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_doc.as_ref()).unwrap();
        let point = ec_pair.public_key().as_ref();
        assert_eq!(point.len(), 65);
        let ed_doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed_pair = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap();
        let jwks = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256", "use": "sig",
             "x": b64url(&point[1..33]), "y": b64url(&point[33..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1",
             "x": b64url(ed_pair.public_key().as_ref())},
            // Never trusted: a symmetric key and an encryption key.
            {"kty": "oct", "kid": "hmac", "k": b64url(b"shared-secret-shared-secret-1234"), "alg": "HS256"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": b64url(&point[1..33]), "y": b64url(&point[33..])},
        ]});
        Idp {
            ec: EncodingKey::from_ec_der(ec_doc.as_ref()),
            ed: EncodingKey::from_ed_der(ed_doc.as_ref()),
            jwks,
        }
    }

    fn es256(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &self.ec).unwrap()
    }

    fn eddsa(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &self.ed).unwrap()
    }
}

fn issuer_config() -> AuthConfig {
    let mut ext = ExternalIssuer::new(IDP);
    ext.audience = Some("switchboard".into());
    ext.jwks_url = Some(format!("{IDP}/protocol/openid-connect/certs"));
    ext.roles_claim = Some("realm_access.roles".into());
    ext.default_grants = Grants {
        channels: vec![ChannelGrant::read("public:*")],
        rooms: vec![],
    };
    ext.role_grants = BTreeMap::from([
        (
            "admin".to_string(),
            Grants {
                channels: vec![ChannelGrant::all("*")],
                rooms: vec![RoomGrant::all("*")],
            },
        ),
        (
            "caller".to_string(),
            Grants {
                channels: vec![],
                rooms: vec![RoomGrant::participant("call-*")],
            },
        ),
    ]);
    AuthConfig {
        external_issuers: vec![ext],
        ..config()
    }
}

fn claims(roles: &[&str]) -> Value {
    json!({
        "iss": IDP,
        "sub": "f:1234:ana",
        "aud": ["account", "switchboard"],
        "exp": T0 + 300,
        "iat": T0,
        "jti": "idp-jti-1",
        "azp": "web",
        "scope": "openid profile",
        "realm_access": {"roles": roles},
    })
}

fn state_with_jwks(idp: &Idp) -> (AuthState, AuthConfig) {
    let cfg = issuer_config();
    cfg.validate().unwrap();
    let mut state = AuthState::new(cfg.clone());
    state.set_external_jwks(IDP, &idp.jwks).unwrap();
    (state, cfg)
}

#[test]
fn external_token_maps_user_and_roles() {
    let idp = Idp::new();
    let (state, cfg) = state_with_jwks(&idp);

    let t = idp.es256(Some("ec-1"), &claims(&["caller", "offline_access"]));
    let c = state.verify_external(&t, &cfg, T0 + 10).unwrap();
    assert_eq!(c.sub, "f:1234:ana");
    assert_eq!(c.iss, IDP);
    assert_eq!(c.exp, T0 + 300);
    assert_eq!(c.jti, "idp-jti-1");
    assert_eq!(c.client_id.as_deref(), Some("web"));
    assert_eq!(c.scope, "openid profile");
    let g = c.grants.clone().unwrap();
    assert!(g.allows_channel("public:news", ChannelAction::Subscribe));
    assert!(!g.allows_channel("public:news", ChannelAction::Publish));
    assert!(g.allows_room("call-7", RoomAction::PublishAudio));
    assert!(!g.allows_room("call-7", RoomAction::Admin));
    assert!(!g.allows_room("other", RoomAction::Join));

    // An admin, signed with the Ed25519 key and no kid.
    let t = idp.eddsa(None, &claims(&["admin"]));
    let c = state.verify_external(&t, &cfg, T0 + 10).unwrap();
    let g = c.grants.unwrap();
    assert!(g.allows_channel("anything", ChannelAction::Publish));
    assert!(g.allows_room("any", RoomAction::Admin));

    // Roles as a space-separated string, user id from another claim.
    let mut cfg2 = cfg.clone();
    cfg2.external_issuers[0].roles_claim = Some("groups".into());
    cfg2.external_issuers[0].user_claim = "preferred_username".into();
    let mut c2 = claims(&[]);
    c2["groups"] = json!("caller admin");
    c2["preferred_username"] = json!("ana");
    let t = idp.es256(Some("ec-1"), &c2);
    let c = state.verify_external(&t, &cfg2, T0).unwrap();
    assert_eq!(c.sub, "ana");
    assert!(c.grants.unwrap().allows_room("x", RoomAction::Admin));
}

#[test]
fn external_tokens_refused() {
    let idp = Idp::new();
    let (state, cfg) = state_with_jwks(&idp);
    let base = claims(&["admin"]);
    let refuse = |t: &str| state.verify_external(t, &cfg, T0 + 10).unwrap_err();

    // Wrong audience / no audience.
    let mut c = base.clone();
    c["aud"] = json!("other-app");
    assert_eq!(
        refuse(&idp.es256(Some("ec-1"), &c)),
        TokenError::Invalid("audience mismatch".into())
    );
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        refuse(&idp.es256(Some("ec-1"), &c)),
        TokenError::Invalid("audience mismatch".into())
    );
    // Expired; no exp; not yet valid.
    assert_eq!(
        state
            .verify_external(&idp.es256(Some("ec-1"), &base), &cfg, T0 + 300)
            .unwrap_err(),
        TokenError::Expired
    );
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refuse(&idp.es256(Some("ec-1"), &c)),
        TokenError::Invalid("missing exp".into())
    );
    let mut c = base.clone();
    c["nbf"] = json!(T0 + 100);
    refuse(&idp.es256(Some("ec-1"), &c));
    // Unknown issuer (not configured), and a configured one forged by another key.
    let mut c = base.clone();
    c["iss"] = json!("https://evil.example");
    assert_eq!(
        refuse(&idp.es256(Some("ec-1"), &c)),
        TokenError::Invalid("unknown issuer".into())
    );
    let forger = Idp::new();
    assert_eq!(
        refuse(&forger.es256(Some("ec-1"), &base)),
        TokenError::Invalid("bad signature".into())
    );
    // Wrong kid, or a kid whose key does not fit the alg.
    assert_eq!(
        refuse(&idp.es256(Some("nope"), &base)),
        TokenError::Invalid("unknown kid".into())
    );
    assert_eq!(
        refuse(&idp.es256(Some("ed-1"), &base)),
        TokenError::Invalid("unknown kid".into())
    );
    // The encryption-use key is not a signature key.
    assert_eq!(
        refuse(&idp.es256(Some("enc"), &base)),
        TokenError::Invalid("unknown kid".into())
    );
    // HS256 with the JWKS's symmetric key, or with the public key: refused.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("hmac".into());
    let t = jsonwebtoken::encode(
        &h,
        &base,
        &EncodingKey::from_secret(b"shared-secret-shared-secret-1234"),
    )
    .unwrap();
    assert_eq!(refuse(&t), TokenError::Invalid("unexpected alg".into()));
    // alg none.
    let b64 = |v: &Value| b64url(serde_json::to_string(v).unwrap().as_bytes());
    refuse(&format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "ec-1"})),
        b64(&base)
    ));
    // Missing user claim.
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        refuse(&idp.es256(Some("ec-1"), &c)),
        TokenError::Invalid("missing user claim".into())
    );
    // Our own access tokens are not external tokens.
    let mut w = World::with_config(issuer_config());
    let (_, _, resp) = w.logged_in("zed");
    assert!(
        w.state
            .verify_external(&resp.access_token, &cfg, w.now)
            .is_err()
    );
    // And external tokens are not ours.
    assert!(
        state
            .verify_access(&idp.es256(Some("ec-1"), &base), T0)
            .is_err()
    );
}

#[test]
fn jwks_installation_rules() {
    let idp = Idp::new();
    let cfg = issuer_config();
    let mut state = AuthState::new(cfg.clone());
    // Before the JWKS arrives: not configured.
    let t = idp.es256(Some("ec-1"), &claims(&[]));
    assert_eq!(
        state.verify_external(&t, &cfg, T0).unwrap_err(),
        TokenError::NotConfigured
    );
    assert_eq!(
        state
            .set_external_jwks("https://unknown", &idp.jwks)
            .unwrap_err(),
        AuthError::UnknownIssuer
    );
    assert!(matches!(
        state.set_external_jwks(IDP, &json!({"nokeys": []})),
        Err(AuthError::InvalidJwks(_))
    ));
    assert!(matches!(
        state.set_external_jwks(IDP, &json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})),
        Err(AuthError::InvalidJwks(_))
    ));
    state.set_external_jwks(IDP, &idp.jwks).unwrap();
    assert!(state.verify_external(&t, &cfg, T0).is_ok());
    // A rotated JWKS replaces the old keys.
    let next = Idp::new();
    state.set_external_jwks(IDP, &next.jwks).unwrap();
    assert!(state.verify_external(&t, &cfg, T0).is_err());
    assert!(
        state
            .verify_external(&next.es256(Some("ec-1"), &claims(&[])), &cfg, T0)
            .is_ok()
    );
}
