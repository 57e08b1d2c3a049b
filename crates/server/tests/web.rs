//! The browser side of a `--dev` server: the embedded pages, the seeded demo
//! users and OAuth client, admin access tokens on the server API, and the
//! live stats channel.

use serde_json::{Value, json};
use std::time::Duration;
use switchboard_client::{Client, ClientOptions, Event, SubscribeOptions};
use switchboard_server::config::{Config, Sources};
use switchboard_server::{Server, ServerHandle, web};

async fn dev_server(tag: &str) -> (ServerHandle, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sb-web-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::load(&Sources {
        dev: true,
        file: None,
        env: vec![],
        flags: vec![
            (
                "http.addr".into(),
                toml::Value::String("127.0.0.1:0".into()),
            ),
            (
                "node.data_dir".into(),
                toml::Value::String(dir.display().to_string()),
            ),
        ],
    })
    .expect("dev config");
    web::apply_dev_config(&mut config);
    let server = Server::start(config).await.expect("server starts");
    let base = format!("http://{}", server.addr());
    web::seed_dev(server.auth(), &base).await.expect("seeding");
    // Seeding twice is a no-op (a restart of `serve --dev`).
    web::seed_dev(server.auth(), &base)
        .await
        .expect("seeding again");
    (server, dir)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// Signs `user` in through the login form (authorization code + PKCE) and
/// returns the access token.
async fn sign_in(base: &str, client_id: &str, user: &str) -> String {
    use base64::Engine;
    let verifier = "a-demo-verifier-of-at-least-43-characters-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()),
    );
    let redirect = format!("{base}/");
    let resp = http()
        .post(format!("{base}/oauth/authorize"))
        .form(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", &redirect),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "s"),
            ("username", user),
            ("password", web::DEV_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "login of {user}");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let code = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .expect("code in the redirect")
        .to_string();
    let tokens: Value = http()
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

#[tokio::test]
async fn dev_pages_sign_in_admin_api_and_stats() {
    let (server, dir) = dev_server("all").await;
    let base = format!("http://{}", server.addr());

    // Pages: embedded, or a page saying how to build them.
    let page = http().get(format!("{base}/")).send().await.unwrap();
    if web::assets_built() {
        assert_eq!(page.status(), 200);
        let body = page.text().await.unwrap();
        assert!(body.contains("/assets/demo.js"), "{body}");
        let sdk = http()
            .get(format!("{base}/sdk/switchboard.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(sdk.status(), 200);
    } else {
        assert_eq!(page.status(), 503);
        assert!(page.text().await.unwrap().contains("npm run build"));
    }

    // The demo client, registered for this address.
    let cfg: Value = http()
        .get(format!("{base}/web/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = cfg["client_id"].as_str().expect("demo client").to_string();
    assert!(
        cfg["redirect_uris"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("{base}/dashboard")))
    );

    // The admin's own token calls the server API; alice's does not.
    let admin = sign_in(&base, &client_id, web::DEV_ADMIN).await;
    let alice = sign_in(&base, &client_id, "alice").await;
    let call = |token: String| {
        let base = base.clone();
        async move {
            http()
                .post(format!("{base}/api/info"))
                .bearer_auth(token)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(call(admin.clone()).await, 200);
    assert_eq!(call(alice.clone()).await, 401);

    // Stats: the admin's grant covers the private channel; alice's does not.
    let ws = format!("ws://{}/connection/websocket", server.addr());
    let (a, _) = Client::connect(&ws, ClientOptions::with_token(alice))
        .await
        .unwrap();
    let denied = a
        .subscribe("$switchboard:stats", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(denied.protocol_code(), Some(103));
    let (c, mut events) = Client::connect(&ws, ClientOptions::with_token(admin))
        .await
        .unwrap();
    c.subscribe("$switchboard:stats", SubscribeOptions::default())
        .await
        .unwrap();
    let snapshot = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Event::Publication {
                channel,
                publication,
            }) = events.recv().await
                && channel == "$switchboard:stats"
            {
                return serde_json::from_slice::<Value>(&publication.data).unwrap();
            }
        }
    })
    .await
    .expect("a stats snapshot within 5 s");
    assert!(snapshot["connections"].as_u64().unwrap() >= 2, "{snapshot}");
    assert!(
        snapshot["subscriptions"].as_u64().unwrap() >= 1,
        "{snapshot}"
    );
    for key in [
        "messages_in",
        "messages_out",
        "latency_ms",
        "rooms",
        "bitrate_in",
        "loss_max",
    ] {
        assert!(snapshot.get(key).is_some(), "{key} missing in {snapshot}");
    }

    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
