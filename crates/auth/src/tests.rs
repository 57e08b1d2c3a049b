//! Unit tests with real crypto; key pairs live in `tests/fixtures`.

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use serde_json::value::RawValue;

use crate::*;

const RSA_PRIVATE: &str = include_str!("../tests/fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../tests/fixtures/rsa_public.pem");
const RSA_PUBLIC_PKCS1: &str = include_str!("../tests/fixtures/rsa_public_pkcs1.pem");
const EC256_PRIVATE: &str = include_str!("../tests/fixtures/ec_p256_private.pem");
const EC256_PUBLIC: &str = include_str!("../tests/fixtures/ec_p256_public.pem");
const EC384_PRIVATE: &str = include_str!("../tests/fixtures/ec_p384_private.pem");
const EC384_PUBLIC: &str = include_str!("../tests/fixtures/ec_p384_public.pem");
const EC256_OTHER_PUBLIC: &str = include_str!("../tests/fixtures/ec_p256_other_public.pem");
const ED_PRIVATE: &str = include_str!("../tests/fixtures/ed25519_private.pem");
const ED_PUBLIC: &str = include_str!("../tests/fixtures/ed25519_public.pem");

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "test-secret";

fn hmac_verifier() -> Verifier {
    Verifier::new(&VerifierConfig {
        hmac_secret: Some(SECRET.into()),
        ..Default::default()
    })
    .unwrap()
}

fn all_keys_config() -> VerifierConfig {
    VerifierConfig {
        hmac_secret: Some(SECRET.into()),
        rsa_public_key: Some(RSA_PUBLIC.into()),
        ecdsa_public_key: Some(EC256_PUBLIC.into()),
        ed25519_public_key: Some(ED_PUBLIC.into()),
        ..Default::default()
    }
}

fn spec(user: &str, ttl_secs: Option<u64>) -> ConnectionTokenSpec {
    ConnectionTokenSpec {
        user: user.into(),
        ttl: ttl_secs.map(Duration::from_secs),
        ..Default::default()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs an exact JSON payload text with HS256.
fn sign_raw(payload: &str) -> String {
    let raw: Box<RawValue> = RawValue::from_string(payload.to_owned()).unwrap();
    Minter::hs256(SECRET).unwrap().sign(&raw).unwrap()
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, TokenError>) -> String {
    match r {
        Err(TokenError::Invalid(reason)) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn hs256_round_trip() {
    let minter = Minter::hs256(SECRET).unwrap();
    let token = minter
        .mint_connection(
            &ConnectionTokenSpec {
                user: "42".into(),
                ttl: Some(Duration::from_secs(60)),
                channels: vec!["news".into(), "chat:lobby".into()],
                info: Some(json!({"name": "Alice"})),
                meta: Some(json!({"plan": "pro"})),
                jti: Some("id-1".into()),
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
    let claims = hmac_verifier().verify_connection(&token, NOW + 30).unwrap();
    assert_eq!(claims.sub, "42");
    assert_eq!(claims.exp, Some(NOW + 60));
    assert_eq!(claims.iat, Some(NOW));
    assert_eq!(claims.jti.as_deref(), Some("id-1"));
    assert_eq!(claims.channels, ["news", "chat:lobby"]);
    let info: serde_json::Value =
        serde_json::from_slice(&claims.info_bytes().unwrap().unwrap()).unwrap();
    assert_eq!(info, json!({"name": "Alice"}));
    let meta: serde_json::Value = serde_json::from_slice(claims.meta_bytes().unwrap()).unwrap();
    assert_eq!(meta, json!({"plan": "pro"}));
    assert_eq!(claims.connection_expires_at(), Some(NOW + 60));
}

#[test]
fn hs384_and_hs512_round_trip() {
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = Minter::hmac(alg, SECRET)
            .unwrap()
            .mint_connection(&spec("u", Some(60)), NOW)
            .unwrap();
        assert_eq!(
            hmac_verifier().verify_connection(&token, NOW).unwrap().sub,
            "u"
        );
    }
}

#[test]
fn anonymous_and_no_exp() {
    let token = Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(&spec("", None), NOW)
        .unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert!(payload.get("exp").is_none(), "exp must be omitted");
    let claims = hmac_verifier()
        .verify_connection(&token, NOW + 10_000_000)
        .unwrap();
    assert_eq!(claims.sub, "");
    assert_eq!(claims.connection_expires_at(), None);
}

#[test]
fn expired_token() {
    let token = Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(&spec("u", Some(60)), NOW)
        .unwrap();
    let v = hmac_verifier();
    assert!(v.verify_connection(&token, NOW + 59).is_ok());
    assert_eq!(
        v.verify_connection(&token, NOW + 60).unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(
        v.verify_connection(&token, NOW + 3600).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn leeway_applies_to_exp_and_nbf() {
    let v = Verifier::new(&VerifierConfig {
        hmac_secret: Some(SECRET.into()),
        leeway_secs: 10,
        ..Default::default()
    })
    .unwrap();
    let token = sign_raw(&format!(r#"{{"sub":"u","exp":{},"nbf":{}}}"#, NOW, NOW + 5));
    assert!(v.verify_connection(&token, NOW).is_ok());
    assert!(v.verify_connection(&token, NOW + 9).is_ok());
    assert_eq!(
        v.verify_connection(&token, NOW + 10).unwrap_err(),
        TokenError::Expired
    );
    let early = sign_raw(&format!(r#"{{"sub":"u","nbf":{}}}"#, NOW + 11));
    assert_invalid(v.verify_connection(&early, NOW));
}

#[test]
fn nbf_in_future_is_invalid() {
    let v = hmac_verifier();
    let token = sign_raw(&format!(r#"{{"sub":"u","nbf":{}}}"#, NOW + 100));
    assert_eq!(
        assert_invalid(v.verify_connection(&token, NOW)),
        "token not yet valid"
    );
    assert!(v.verify_connection(&token, NOW + 100).is_ok());
}

#[test]
fn float_numeric_dates_are_accepted() {
    let token = sign_raw(&format!(r#"{{"sub":"u","exp":{}.7}}"#, NOW + 5));
    let claims = hmac_verifier().verify_connection(&token, NOW).unwrap();
    assert_eq!(claims.exp, Some(NOW + 5));
}

#[test]
fn wrong_secret_is_invalid() {
    let token = Minter::hs256("another-secret")
        .unwrap()
        .mint_connection(&spec("u", Some(60)), NOW)
        .unwrap();
    assert_eq!(
        assert_invalid(hmac_verifier().verify_connection(&token, NOW)),
        "bad signature"
    );
}

#[test]
fn alg_none_is_refused() {
    let v = Verifier::new(&all_keys_config()).unwrap();
    let payload = b64url(br#"{"sub":"admin"}"#);
    for alg in ["none", "None", "NONE"] {
        let header = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        for sig in ["", "c2ln"] {
            let token = format!("{header}.{payload}.{sig}");
            assert_eq!(
                assert_invalid(v.verify_connection(&token, NOW)),
                "alg none is not allowed"
            );
        }
    }
}

#[test]
fn unknown_alg_is_invalid() {
    let v = hmac_verifier();
    let header = b64url(br#"{"alg":"HS1024"}"#);
    let token = format!("{header}.{}.sig", b64url(b"{}"));
    assert_invalid(v.verify_connection(&token, NOW));
}

#[test]
fn tampered_payload_is_invalid() {
    let token = Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(&spec("user", Some(60)), NOW)
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64url(format!(r#"{{"sub":"admin","exp":{}}}"#, NOW + 60).as_bytes());
    let token = format!("{}.{}.{}", parts[0], forged, parts[2]);
    assert_eq!(
        assert_invalid(hmac_verifier().verify_connection(&token, NOW)),
        "bad signature"
    );
}

#[test]
fn tampered_signature_on_asymmetric_token_is_invalid() {
    let token = Minter::from_private_pem(Algorithm::EdDSA, ED_PRIVATE.as_bytes())
        .unwrap()
        .mint_connection(&spec("u", Some(60)), NOW)
        .unwrap();
    let mut bytes = token.into_bytes();
    let i = bytes.len() - 3;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let token = String::from_utf8(bytes).unwrap();
    assert_invalid(
        Verifier::new(&all_keys_config())
            .unwrap()
            .verify_connection(&token, NOW),
    );
}

#[test]
fn malformed_tokens_are_invalid() {
    let v = hmac_verifier();
    for token in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
        assert_invalid(v.verify_connection(token, NOW));
    }
}

#[test]
fn asymmetric_round_trips() {
    let v = Verifier::new(&all_keys_config()).unwrap();
    let cases = [
        (Algorithm::RS256, RSA_PRIVATE),
        (Algorithm::RS384, RSA_PRIVATE),
        (Algorithm::RS512, RSA_PRIVATE),
        (Algorithm::PS256, RSA_PRIVATE),
        (Algorithm::PS512, RSA_PRIVATE),
        (Algorithm::ES256, EC256_PRIVATE),
        (Algorithm::EdDSA, ED_PRIVATE),
    ];
    for (alg, pem) in cases {
        let minter = Minter::from_private_pem(alg, pem.as_bytes()).unwrap();
        assert_eq!(minter.algorithm(), alg);
        let token = minter
            .mint_connection(&spec(&format!("{alg:?}"), Some(60)), NOW)
            .unwrap();
        let claims = v
            .verify_connection(&token, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(claims.sub, format!("{alg:?}"));

        let sub = minter
            .mint_subscription("u", "chan", Some(Duration::from_secs(60)), None, NOW)
            .unwrap();
        assert_eq!(
            v.verify_subscription(&sub, "chan", NOW).unwrap().channel,
            "chan"
        );
    }
}

#[test]
fn rsa_pkcs1_public_key_is_accepted() {
    let token = Minter::from_private_pem(Algorithm::RS256, RSA_PRIVATE.as_bytes())
        .unwrap()
        .mint_connection(&spec("u", Some(60)), NOW)
        .unwrap();
    let v = Verifier::new(&VerifierConfig {
        rsa_public_key: Some(RSA_PUBLIC_PKCS1.into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(v.verify_connection(&token, NOW).unwrap().sub, "u");
}

#[test]
fn es384_round_trip_and_curve_mismatch() {
    let minter = Minter::from_private_pem(Algorithm::ES384, EC384_PRIVATE.as_bytes()).unwrap();
    let token = minter.mint_connection(&spec("u", Some(60)), NOW).unwrap();
    let v384 = Verifier::new(&VerifierConfig {
        ecdsa_public_key: Some(EC384_PUBLIC.into()),
        ..Default::default()
    })
    .unwrap();
    assert!(v384.verify_connection(&token, NOW).is_ok());
    // ES384 token against a configured P-256 key.
    let v256 = Verifier::new(&all_keys_config()).unwrap();
    assert_invalid(v256.verify_connection(&token, NOW));
}

#[test]
fn token_signed_by_other_key_of_same_family_is_invalid() {
    let minter = Minter::from_private_pem(Algorithm::ES256, EC256_PRIVATE.as_bytes()).unwrap();
    let token = minter.mint_connection(&spec("u", Some(60)), NOW).unwrap();
    let v = Verifier::new(&VerifierConfig {
        ecdsa_public_key: Some(EC256_OTHER_PUBLIC.into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        assert_invalid(v.verify_connection(&token, NOW)),
        "bad signature"
    );
}

#[test]
fn alg_without_key_is_not_configured() {
    let v = hmac_verifier();
    let token = Minter::from_private_pem(Algorithm::RS256, RSA_PRIVATE.as_bytes())
        .unwrap()
        .mint_connection(&spec("u", Some(60)), NOW)
        .unwrap();
    assert_eq!(
        v.verify_connection(&token, NOW).unwrap_err(),
        TokenError::NotConfigured
    );

    let empty = Verifier::new(&VerifierConfig {
        hmac_secret: Some(String::new()),
        ..Default::default()
    })
    .unwrap();
    assert!(!empty.is_configured());
    assert_eq!(
        empty.verify_connection("garbage", NOW).unwrap_err(),
        TokenError::NotConfigured
    );
}

#[test]
fn hmac_with_public_key_as_secret_is_refused() {
    // Classic alg-confusion attack: HS256 signed with the RSA public key text.
    let token = Minter::hs256(RSA_PUBLIC)
        .unwrap()
        .mint_connection(&spec("admin", Some(60)), NOW)
        .unwrap();
    let v = Verifier::new(&VerifierConfig {
        rsa_public_key: Some(RSA_PUBLIC.into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        v.verify_connection(&token, NOW).unwrap_err(),
        TokenError::NotConfigured
    );
}

#[test]
fn subscription_tokens() {
    let minter = Minter::hs256(SECRET).unwrap();
    let v = hmac_verifier();
    let token = minter
        .mint_subscription(
            "42",
            "chat:room",
            Some(Duration::from_secs(60)),
            Some(&json!({"role": "mod"})),
            NOW,
        )
        .unwrap();
    let claims = v.verify_subscription(&token, "chat:room", NOW).unwrap();
    assert_eq!(claims.sub, "42");
    assert_eq!(claims.channel, "chat:room");
    let info: serde_json::Value =
        serde_json::from_slice(&claims.info_bytes().unwrap().unwrap()).unwrap();
    assert_eq!(info, json!({"role": "mod"}));

    assert_eq!(
        assert_invalid(v.verify_subscription(&token, "chat:other", NOW)),
        "channel mismatch"
    );
    assert_eq!(
        v.verify_subscription(&token, "chat:room", NOW + 60)
            .unwrap_err(),
        TokenError::Expired
    );

    let no_channel = sign_raw(r#"{"sub":"42"}"#);
    assert_eq!(
        assert_invalid(v.verify_subscription(&no_channel, "", NOW)),
        "missing channel claim"
    );
    assert_eq!(
        minter.mint_subscription("42", "", None, None, NOW),
        Err(MintError::Spec("empty channel"))
    );
}

#[test]
fn subscription_override_and_expire_at() {
    let token = sign_raw(
        r#"{"sub":"u","channel":"c","expire_at":0,"exp":1,"override":{"presence":{"value":true},"unknown":{}}}"#,
    );
    let claims = hmac_verifier().verify_subscription(&token, "c", 0).unwrap();
    let ov = claims.override_.unwrap();
    assert_eq!(ov.presence, Some(BoolValue { value: true }));
    assert_eq!(ov.join_leave, None);
    assert_eq!(claims.expire_at, Some(0));
    let claims = SubscriptionClaims {
        expire_at: Some(0),
        exp: Some(5),
        ..Default::default()
    };
    assert_eq!(claims.subscription_expires_at(), None);
}

#[test]
fn audience_and_issuer_checks() {
    let v = Verifier::new(&VerifierConfig {
        hmac_secret: Some(SECRET.into()),
        audience: Some("switchboard".into()),
        issuer: Some("https://auth.example".into()),
        ..Default::default()
    })
    .unwrap();
    let good = Minter::hs256(SECRET)
        .unwrap()
        .with_audience("switchboard")
        .with_issuer("https://auth.example");
    let token = good.mint_connection(&spec("u", Some(60)), NOW).unwrap();
    let claims = v.verify_connection(&token, NOW).unwrap();
    assert_eq!(claims.aud, Some(Audience::One("switchboard".into())));
    let sub = good.mint_subscription("u", "c", None, None, NOW).unwrap();
    assert!(v.verify_subscription(&sub, "c", NOW).is_ok());

    let aud_list =
        sign_raw(r#"{"sub":"u","aud":["x","switchboard"],"iss":"https://auth.example"}"#);
    assert!(v.verify_connection(&aud_list, NOW).is_ok());

    let cases = [
        (
            r#"{"sub":"u","aud":"other","iss":"https://auth.example"}"#,
            "audience mismatch",
        ),
        (
            r#"{"sub":"u","aud":["x","y"],"iss":"https://auth.example"}"#,
            "audience mismatch",
        ),
        (
            r#"{"sub":"u","iss":"https://auth.example"}"#,
            "audience mismatch",
        ),
        (
            r#"{"sub":"u","aud":"switchboard","iss":"https://evil.example"}"#,
            "issuer mismatch",
        ),
        (r#"{"sub":"u","aud":"switchboard"}"#, "issuer mismatch"),
    ];
    for (payload, reason) in cases {
        assert_eq!(
            assert_invalid(v.verify_connection(&sign_raw(payload), NOW)),
            reason,
            "{payload}"
        );
    }

    // Without audience/issuer configured, the claims are not checked.
    let token = sign_raw(r#"{"sub":"u","aud":"anything","iss":"anyone"}"#);
    assert!(hmac_verifier().verify_connection(&token, NOW).is_ok());
}

#[test]
fn info_raw_json_is_preserved() {
    let info = r#"{"z": 1, "a":[1,2.50,"x\u00e9"],"big":12345678901234567890,"n":null}"#;
    let token = sign_raw(&format!(
        r#"{{"sub":"u","info":{info},"meta":{{"k":[true]}},"subs":{{"c1":{{"data":{{"d":1}},"override":{{"force_recovery":{{"value":false}}}}}},"c2":{{}}}},"channels":null}}"#
    ));
    let claims = hmac_verifier().verify_connection(&token, NOW).unwrap();
    let bytes = claims.info_bytes().unwrap().unwrap();
    assert_eq!(bytes, info.as_bytes(), "info text is forwarded untouched");
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let original: serde_json::Value = serde_json::from_str(info).unwrap();
    assert_eq!(parsed, original);
    assert_eq!(claims.meta_bytes().unwrap(), br#"{"k":[true]}"#);
    assert!(claims.channels.is_empty());
    let c1 = &claims.subs["c1"];
    assert_eq!(c1.data_bytes().unwrap().unwrap(), br#"{"d":1}"#);
    assert_eq!(
        c1.override_.as_ref().unwrap().force_recovery,
        Some(BoolValue { value: false })
    );
    assert!(claims.subs["c2"].data_bytes().unwrap().is_none());
}

#[test]
fn b64info_is_decoded_and_validated() {
    let token = Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(
            &ConnectionTokenSpec {
                user: "u".into(),
                b64info: Some(vec![0, 159, 255]),
                info: Some(json!({"ignored": true})),
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
    let claims = hmac_verifier().verify_connection(&token, NOW).unwrap();
    assert_eq!(claims.info_bytes().unwrap().unwrap(), [0, 159, 255]);

    let bad = sign_raw(r#"{"sub":"u","b64info":"not base64!"}"#);
    assert_eq!(
        assert_invalid(hmac_verifier().verify_connection(&bad, NOW)),
        "malformed base64 claim"
    );
    let bad_sub = sign_raw(r#"{"sub":"u","subs":{"c":{"b64data":"%%"}}}"#);
    assert_invalid(hmac_verifier().verify_connection(&bad_sub, NOW));
}

#[test]
fn malformed_claims_are_invalid() {
    let v = hmac_verifier();
    for payload in [
        r#"{"sub":"u","exp":"tomorrow"}"#,
        r#"{"sub":"u","channels":"news"}"#,
        r#"{"sub":5}"#,
        r#"[1,2]"#,
        "[9999999999]",
        "\"str\"",
    ] {
        assert_invalid(v.verify_connection(&sign_raw(payload), NOW));
    }
}

#[test]
fn expire_at_overrides_exp() {
    let token = Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(
            &ConnectionTokenSpec {
                expire_at: Some(NOW + 500),
                ..spec("u", Some(60))
            },
            NOW,
        )
        .unwrap();
    let claims = hmac_verifier().verify_connection(&token, NOW).unwrap();
    assert_eq!(claims.connection_expires_at(), Some(NOW + 500));
    let never = ConnectionClaims {
        expire_at: Some(0),
        exp: Some(NOW),
        ..Default::default()
    };
    assert_eq!(never.connection_expires_at(), None);
}

#[test]
fn errors_never_contain_the_token() {
    let token = Minter::hs256("other")
        .unwrap()
        .mint_connection(&spec("u", Some(60)), NOW)
        .unwrap();
    let err = hmac_verifier().verify_connection(&token, NOW).unwrap_err();
    let shown = format!("{err} {err:?}");
    for part in token.split('.') {
        assert!(!shown.contains(part), "{shown}");
    }
}

#[test]
fn verify_claims_supports_custom_claim_sets() {
    #[derive(serde::Deserialize)]
    struct Custom {
        scope: String,
    }
    let token = sign_raw(&format!(r#"{{"scope":"rooms:join","exp":{}}}"#, NOW + 1));
    let v = hmac_verifier();
    let c: Custom = v.verify_claims(&token, NOW).unwrap();
    assert_eq!(c.scope, "rooms:join");
    assert_eq!(
        v.verify_claims::<Custom>(&token, NOW + 1).err(),
        Some(TokenError::Expired)
    );
}

#[test]
fn config_from_toml_and_debug_redacts_secret() {
    let cfg: VerifierConfig = toml::from_str(&format!(
        "hmac_secret = \"{SECRET}\"\nrsa_public_key = '''\n{RSA_PUBLIC}'''\naudience = \"sb\"\nleeway_secs = 5\n"
    ))
    .unwrap();
    assert_eq!(cfg.leeway_secs, 5);
    assert!(!format!("{cfg:?}").contains(SECRET));
    let v = Verifier::new(&cfg).unwrap();
    assert!(v.is_configured());
    assert!(!format!("{v:?}").contains(SECRET));

    let alias: VerifierConfig = toml::from_str("hmac_secret_key = \"s\"").unwrap();
    assert_eq!(alias.hmac_secret.as_deref(), Some("s"));
    assert!(toml::from_str::<VerifierConfig>("hmac_secrett = \"s\"").is_err());
    assert_eq!(VerifierConfig::default().leeway_secs, 0);
}

#[test]
fn bad_keys_are_refused() {
    let err = Verifier::new(&VerifierConfig {
        rsa_public_key: Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.which, "rsa_public_key");
    // A private key where a public one is expected.
    assert!(
        Verifier::new(&VerifierConfig {
            ed25519_public_key: Some(ED_PRIVATE.into()),
            ..Default::default()
        })
        .is_err()
    );
    assert!(Minter::hs256("").is_err());
    assert!(Minter::hmac(Algorithm::RS256, SECRET).is_err());
    assert!(Minter::from_private_pem(Algorithm::HS256, RSA_PRIVATE.as_bytes()).is_err());
    assert!(Minter::from_private_pem(Algorithm::ES256, ED_PUBLIC.as_bytes()).is_err());
}

#[test]
fn sub_second_ttl_rounds_up() {
    let token = Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(
            &ConnectionTokenSpec {
                ttl: Some(Duration::from_millis(500)),
                ..spec("u", None)
            },
            NOW,
        )
        .unwrap();
    let claims = hmac_verifier().verify_connection(&token, NOW).unwrap();
    assert_eq!(claims.exp, Some(NOW + 1));
}
