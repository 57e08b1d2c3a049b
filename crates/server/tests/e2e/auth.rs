//! The built-in authorization server over real HTTP, and its tokens on live
//! connections.

use crate::common::*;
use base64::Engine;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_client::{Client, ClientOptions, Event, SubscribeOptions};
use switchboard_proto::codec::Encoding;

const FAST_HASHING: &str =
    "[auth.password_hashing]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier =
        b64url(uuid::Uuid::new_v4().as_bytes()) + &b64url(uuid::Uuid::new_v4().as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier.clone(), b64url(digest.as_ref()))
}

struct Setup {
    s: TestServer,
    client_id: String,
}

async fn setup(extra: &str) -> Setup {
    let s = TestServer::dev(&format!("{FAST_HASHING}{extra}")).await;
    let grants = json!({"channels": [{"pattern": "team:*", "subscribe": true, "publish": true, "presence": true, "history": true}]});
    s.api_ok(
        "user_create",
        json!({"username": "alice", "password": "correct horse", "grants": grants}),
    )
    .await;
    let c = s
        .api_ok(
            "oauth_client_create",
            json!({"name": "Demo app", "redirect_uris": [REDIRECT]}),
        )
        .await;
    let client_id = c["client"]["id"].as_str().unwrap().to_string();
    Setup { s, client_id }
}

fn authorize_query(
    client_id: &str,
    challenge: &str,
    redirect: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", client_id.into()),
        ("redirect_uri", redirect.into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
        ("state", "xyz".into()),
    ]
}

/// Signs in through the login page like a browser; returns the code.
async fn login(
    setup: &Setup,
    challenge: &str,
    password: &str,
) -> Result<String, reqwest::StatusCode> {
    let url = setup.s.http("/oauth/authorize");
    let page = http()
        .get(&url)
        .query(&authorize_query(&setup.client_id, challenge, REDIRECT))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<label for="username">"#) && html.contains(r#"<label for="password">"#)
    );
    let mut form = authorize_query(&setup.client_id, challenge, REDIRECT);
    form.push(("username", "alice".into()));
    form.push(("password", password.into()));
    let resp = http().post(&url).form(&form).send().await.unwrap();
    if resp.status() != 302 {
        return Err(resp.status());
    }
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(location.contains("state=xyz"), "{location}");
    let code = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap();
    Ok(code.to_string())
}

async fn token(s: &TestServer, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(s.http("/oauth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    (status, r.json().await.unwrap())
}

async fn exchange(setup: &Setup, code: &str, verifier: &str) -> (u16, Value) {
    token(
        &setup.s,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", &setup.client_id),
            ("code_verifier", verifier),
        ],
    )
    .await
}

#[tokio::test]
async fn code_flow_with_pkce_gives_tokens_that_connect_with_grants() {
    let setup = setup("").await;
    let s = &setup.s;
    let (verifier, challenge) = pkce();
    let code = login(&setup, &challenge, "correct horse").await.unwrap();
    let (status, tokens) = exchange(&setup, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    // The access token is a connection token; its grants decide.
    let (c, _e) = Client::connect(&s.ws_url(), ClientOptions::with_token(access.clone()))
        .await
        .unwrap();
    c.subscribe("team:red", SubscribeOptions::default())
        .await
        .unwrap();
    c.publish("team:red", b"{}".to_vec()).await.unwrap();
    assert_eq!(
        c.subscribe("other", SubscribeOptions::default())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(103)
    );
    assert_eq!(
        c.publish("other", b"{}".to_vec())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(103)
    );
    // The code is single use: a replay fails and revokes what it gave.
    let (status, err) = exchange(&setup, &code, &verifier).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = token(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &setup.client_id),
        ],
    )
    .await;
    assert_eq!(status, 400, "the family of the replayed code is revoked");
    setup.s.stop().await;
}

#[tokio::test]
async fn refresh_rotation_and_reuse_detection_disconnect_the_session() {
    let setup = setup("").await;
    let s = &setup.s;
    let (verifier, challenge) = pkce();
    let code = login(&setup, &challenge, "correct horse").await.unwrap();
    let (_, t1) = exchange(&setup, &code, &verifier).await;
    let r1 = t1["refresh_token"].as_str().unwrap().to_string();
    let refresh = |rt: String| {
        let cid = setup.client_id.clone();
        async move {
            token(
                s,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &cid),
                ],
            )
            .await
        }
    };
    let (status, t2) = refresh(r1.clone()).await;
    assert_eq!(status, 200, "{t2}");
    let a2 = t2["access_token"].as_str().unwrap().to_string();
    let (_c, mut e) = Client::connect(&s.ws_url(), ClientOptions::with_token(a2))
        .await
        .unwrap();
    // Presenting the rotated-out token again is reuse: the whole family dies,
    // including the live connection that uses its newest access token.
    let (status, err) = refresh(r1).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    match next_event(&mut e, |ev| matches!(ev, Event::Disconnected { .. })).await {
        Event::Disconnected { code, .. } => assert_eq!(code, 3500),
        _ => unreachable!(),
    }
    let (status, _) = refresh(t2["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(status, 400);
    setup.s.stop().await;
}

#[tokio::test]
async fn pkce_and_redirect_abuse_is_refused() {
    let setup = setup("").await;
    let s = &setup.s;
    let (verifier, challenge) = pkce();
    let code = login(&setup, &challenge, "correct horse").await.unwrap();
    let (other_verifier, _) = pkce();
    let (status, err) = exchange(&setup, &code, &other_verifier).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // That spent the code.
    assert_eq!(exchange(&setup, &code, &verifier).await.0, 400);
    let code = login(&setup, &challenge, "correct horse").await.unwrap();
    let (status, err) = token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &setup.client_id),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        err["error"] == "invalid_request" || err["error"] == "invalid_grant",
        "{err}"
    );
    // Plain PKCE is refused (redirected back with an error).
    let mut q = authorize_query(&setup.client_id, "abc", REDIRECT);
    q[4].1 = "plain".into();
    let r = http()
        .get(s.http("/oauth/authorize"))
        .query(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=invalid_request")
    );
    // An unregistered redirect URI is never redirected to.
    let r = http()
        .get(s.http("/oauth/authorize"))
        .query(&authorize_query(
            &setup.client_id,
            &challenge,
            "http://evil.example/cb",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    // Unknown grant type, malformed and oversized bodies.
    let (status, err) = token(
        s,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let r = http()
        .post(s.http("/oauth/token"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = "x".repeat(100_000);
    let r = http()
        .post(s.http("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", big.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status() == 400 || r.status() == 413, "{}", r.status());
    setup.s.stop().await;
}

#[tokio::test]
async fn brute_force_login_is_rate_limited() {
    let setup = setup("[auth]\nlogin_attempts_per_account = 3\n").await;
    let (_, challenge) = pkce();
    for _ in 0..3 {
        assert_eq!(
            login(&setup, &challenge, "wrong password")
                .await
                .unwrap_err(),
            401
        );
    }
    assert_eq!(
        login(&setup, &challenge, "wrong password")
            .await
            .unwrap_err(),
        429
    );
    // Even the right password waits until the window passes.
    assert_eq!(
        login(&setup, &challenge, "correct horse")
            .await
            .unwrap_err(),
        429
    );
    setup.s.stop().await;
}

#[tokio::test]
async fn client_credentials_api_keys_and_bearer_tokens() {
    let setup = setup("").await;
    let s = &setup.s;
    let k = s.api_ok("apikey_create", json!({"name": "backend"})).await;
    let (id, secret) = (
        k["id"].as_str().unwrap().to_string(),
        k["secret"].as_str().unwrap().to_string(),
    );
    // The key works directly on the server API...
    let r = http()
        .post(s.http("/api/info"))
        .header("X-API-Key", &secret)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...and buys a short-lived API access token.
    let bare_secret = secret.split_once('.').unwrap().1.to_string();
    let r = http()
        .post(s.http("/oauth/token"))
        .basic_auth(&id, Some(&bare_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let bearer = t["access_token"].as_str().unwrap().to_string();
    assert!(t.get("refresh_token").is_none());
    let r = http()
        .post(s.http("/api/info"))
        .bearer_auth(&bearer)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Such a token is not a connection token.
    let err = Client::connect(&s.ws_url(), ClientOptions::with_token(bearer.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    let r = http()
        .post(s.http("/oauth/token"))
        .basic_auth(&id, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let list = s.api_ok("apikey_list", json!({})).await;
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str())
    );
    assert!(
        !list.to_string().contains(&bare_secret),
        "secrets are never listed"
    );
    s.api_ok("apikey_revoke", json!({"id": id})).await;
    for cred in [secret.as_str(), bearer.as_str()] {
        let r = http()
            .post(s.http("/api/info"))
            .bearer_auth(cred)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    setup.s.stop().await;
}

#[tokio::test]
async fn revocation_introspection_and_disabled_users_disconnect_live_connections() {
    let setup = setup("").await;
    let s = &setup.s;
    let (verifier, challenge) = pkce();
    let code = login(&setup, &challenge, "correct horse").await.unwrap();
    let (_, t) = exchange(&setup, &code, &verifier).await;
    let access = t["access_token"].as_str().unwrap().to_string();
    let introspect = |tok: String, key: Option<&'static str>| async move {
        let mut req = http()
            .post(s.http("/oauth/introspect"))
            .form(&[("token", tok.as_str())]);
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let r = req.send().await.unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(
        introspect(access.clone(), None).await.0,
        401,
        "introspection needs credentials"
    );
    let (status, info) = introspect(access.clone(), Some(API_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], setup.client_id.as_str());
    let (_c, mut e) = Client::connect(&s.ws_url(), ClientOptions::with_token(access.clone()))
        .await
        .unwrap();
    let r = http()
        .post(s.http("/oauth/revoke"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    match next_event(&mut e, |ev| matches!(ev, Event::Disconnected { .. })).await {
        Event::Disconnected { code, reason } => {
            assert_eq!((code, reason.as_str()), (3500, "token revoked"))
        }
        _ => unreachable!(),
    }
    assert_eq!(
        introspect(access.clone(), Some(API_KEY)).await.1["active"],
        false
    );
    let err = Client::connect(&s.ws_url(), ClientOptions::with_token(access))
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    // Sessions are listed and can be ended; disabling the user cuts even
    // connections made with app-backend (HMAC) tokens.
    let user_id = s.api_ok("user_list", json!({})).await["users"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sessions = s.api_ok("session_list", json!({"user": "alice"})).await;
    assert!(!sessions["sessions"].as_array().unwrap().is_empty());
    let (_h, mut he) = s.connect(&user_id, Encoding::Json).await;
    s.api_ok("user_disable", json!({"username": "alice"})).await;
    match next_event(&mut he, |ev| matches!(ev, Event::Disconnected { .. })).await {
        Event::Disconnected { code, .. } => assert_eq!(code, 3500),
        _ => unreachable!(),
    }
    assert_eq!(
        login(&setup, &challenge, "correct horse")
            .await
            .unwrap_err(),
        401
    );
    setup.s.stop().await;
}

#[tokio::test]
async fn discovery_documents_and_token_forgery() {
    let setup = setup("").await;
    let s = &setup.s;
    let meta: Value = reqwest::get(s.http("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], format!("http://{}", s.addr()));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert!(
        meta["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/token")
    );
    let jwks: Value = reqwest::get(s.http("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("EdDSA"))
    );
    let kid = key["kid"].as_str().unwrap();
    // alg:none with our kid, and HS256 "signed" with the public key: refused.
    let claims = json!({"sub": "mallory", "exp": now() + 600, "iat": now(), "iss": meta["issuer"], "scope": "connect", "jti": "x"});
    let none = format!(
        "{}.{}.",
        b64url(json!({"alg": "none", "kid": kid}).to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let err = Client::connect(&s.ws_url(), ClientOptions::with_token(none))
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key["x"].as_str().unwrap())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    let confused = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&x),
    )
    .unwrap();
    let err = Client::connect(&s.ws_url(), ClientOptions::with_token(confused))
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    setup.s.stop().await;
}

#[tokio::test]
async fn external_identity_provider_tokens_map_roles_to_grants() {
    // The IdP: an Ed25519 key whose JWKS a local HTTP server publishes.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../auth/tests/fixtures");
    let private = std::fs::read(fixtures.join("ed25519_private.pem")).unwrap();
    let public_pem = std::fs::read_to_string(fixtures.join("ed25519_public.pem")).unwrap();
    let der_b64: String = public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der_b64)
        .unwrap();
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(&der[der.len() - 32..]), "kid": "idp-1", "use": "sig"}]});
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || std::future::ready(axum::Json(jwks.clone()))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let extra = format!(
        r#"
[[auth.external_issuers]]
issuer = "https://idp.example"
audience = "switchboard"
jwks_url = "http://{idp}/jwks.json"
roles_claim = "realm.roles"
[auth.external_issuers.role_grants.editor]
channels = [{{ pattern = "docs:*", subscribe = true, publish = true }}]
"#
    );
    let s = TestServer::dev(&extra).await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("idp-1".into());
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&private).unwrap();
    let mint = |aud: &str, roles: Value| {
        let claims = json!({"iss": "https://idp.example", "aud": aud, "sub": "carol", "exp": now() + 600, "iat": now(), "realm": {"roles": roles}});
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let (c, _e) = Client::connect(
        &s.ws_url(),
        ClientOptions::with_token(mint("switchboard", json!(["editor"]))),
    )
    .await
    .unwrap();
    c.subscribe("docs:spec", SubscribeOptions::default())
        .await
        .unwrap();
    c.publish("docs:spec", b"{}".to_vec()).await.unwrap();
    assert_eq!(
        c.subscribe("chat", SubscribeOptions::default())
            .await
            .unwrap_err()
            .protocol_code(),
        Some(103)
    );
    let err = Client::connect(
        &s.ws_url(),
        ClientOptions::with_token(mint("someone-else", json!(["editor"]))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.close_code(), Some(3500), "wrong audience");
    s.stop().await;
}

#[tokio::test]
async fn audit_events_are_counted() {
    let setup = setup("").await;
    let (_, challenge) = pkce();
    let _ = login(&setup, &challenge, "wrong password").await;
    login(&setup, &challenge, "correct horse").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = reqwest::get(setup.s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"switchboard_auth_audit_total{action="login"}"#),
        "login audited"
    );
    assert!(
        text.contains(r#"switchboard_auth_audit_total{action="login_failed"}"#),
        "failure audited"
    );
    setup.s.stop().await;
}

#[tokio::test]
async fn signing_keys_rotate_without_breaking_issued_tokens() {
    let setup = setup("").await;
    let s = &setup.s;
    let (verifier, challenge) = pkce();
    let code = login(&setup, &challenge, "correct horse").await.unwrap();
    let (_, t1) = exchange(&setup, &code, &verifier).await;
    let old_access = t1["access_token"].as_str().unwrap().to_string();
    let old_kid = jsonwebtoken::decode_header(&old_access)
        .unwrap()
        .kid
        .unwrap();
    let keys = s.api_ok("signing_key_rotate", json!({})).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    let jwks: Value = reqwest::get(s.http("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "both keys published"
    );
    // A token from the old key still connects; new tokens use the new key.
    let (c, _e) = Client::connect(&s.ws_url(), ClientOptions::with_token(old_access.clone()))
        .await
        .unwrap();
    c.close().await;
    let (_, t2) = token(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t1["refresh_token"].as_str().unwrap()),
            ("client_id", &setup.client_id),
        ],
    )
    .await;
    let new_kid = jsonwebtoken::decode_header(t2["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid);
    // The active key cannot be retired; the old one can, and its tokens stop working.
    assert!(
        s.api("signing_key_retire", json!({"kid": new_kid}))
            .await
            .get("error")
            .is_some()
    );
    s.api_ok("signing_key_retire", json!({"kid": old_kid}))
        .await;
    let err = Client::connect(&s.ws_url(), ClientOptions::with_token(old_access))
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(3500));
    setup.s.stop().await;
}
