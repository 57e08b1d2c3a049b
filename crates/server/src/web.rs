//! The browser side served by the binary: the demo app (`/`), the operator
//! dashboard (`/dashboard`), their static assets and the browser SDK
//! (`/sdk/switchboard.js`), all embedded at build time by `build.rs` from
//! `web/dist/` and `sdk/js/dist/` (built with npm; no Node at run time).
//!
//! A checkout where the assets were not built still compiles; its pages
//! then say how to build them.
//!
//! `--dev` mode also seeds what the demo needs on a fresh machine
//! ([`apply_dev_config`], [`seed_dev`]): demo users with a known password,
//! an admin user for the dashboard, and a public OAuth client whose
//! redirect URIs are the server's own pages.

use crate::auth::AuthService;
use crate::config::Config;
use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;
use switchboard_core::namespace::NamespaceOptions;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Name of the public OAuth client the demo and the dashboard sign in with.
pub const DEMO_CLIENT_NAME: &str = "Switchboard demo (dev)";
/// Demo users seeded in `--dev` mode.
pub const DEV_USERS: &[&str] = &["alice", "bob", "carol"];
/// The admin user seeded in `--dev` mode (listed in `auth.admin_users`).
pub const DEV_ADMIN: &str = "admin";
/// Password of every seeded dev user. Development only.
pub const DEV_PASSWORD: &str = "switchboard-dev";
/// Ephemeral namespace of the demo's typing indicators (`typing:<room>`).
pub const TYPING_NAMESPACE: &str = "typing";

fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    assets::ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, ct, bytes)| (*ct, *bytes))
}

/// Whether the npm-built pages are embedded in this binary.
pub fn assets_built() -> bool {
    asset("/index.html").is_some()
}

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchboard: web assets not built</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1f2933}
pre{background:#f1f5f9;padding:1rem;border-radius:6px;overflow-x:auto}</style></head>
<body><main><h1>The web assets are not built</h1>
<p>This <code>switchboard</code> binary was compiled before the demo app, the dashboard
and the browser SDK were built with npm, so it has none of them embedded.
The server itself works (WebSocket, server API, OAuth).</p>
<p>Build the assets, then the binary (it embeds them at compile time):</p>
<pre>(cd sdk/js &amp;&amp; npm ci &amp;&amp; npm run build)
(cd web &amp;&amp; npm ci &amp;&amp; npm run build)
cargo run --release -p switchboard-server -- serve --dev</pre>
</main></body></html>"#;

fn respond(content_type: &'static str, bytes: &'static [u8], cache: &'static str) -> Response {
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn page(path: &str) -> Response {
    match asset(path) {
        Some((ct, bytes)) => {
            let mut r = respond(ct, bytes, "no-cache");
            r.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            r
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(NOT_BUILT)).into_response(),
    }
}

async fn static_file(uri: Uri) -> Response {
    match asset(uri.path()) {
        Some((ct, bytes)) => respond(ct, bytes, "no-cache"),
        None if uri.path().starts_with("/sdk/") => (
            StatusCode::NOT_FOUND,
            "the browser SDK is not embedded in this binary: build it (cd sdk/js && npm ci && npm run build), then rebuild the server\n",
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `GET /web/config.json`: what the pages need to sign in (the demo OAuth
/// client, if registered) and whether the assets are embedded.
async fn web_config(State(auth): State<Arc<AuthService>>) -> Response {
    let client = auth.read(|s| {
        s.clients()
            .into_iter()
            .filter(|c| c.name == DEMO_CLIENT_NAME && !c.confidential)
            .max_by_key(|c| c.created_at)
    });
    let body = json!({
        "client_id": client.as_ref().map(|c| c.id.clone()),
        "redirect_uris": client.map(|c| c.redirect_uris).unwrap_or_default(),
        "stats_channel": crate::stats::STATS_CHANNEL,
    });
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The routes of the pages, their assets and the SDK bundle.
pub fn router(auth: Arc<AuthService>) -> Router {
    let mut r = Router::new()
        .route("/", get(|| async { page("/index.html") }))
        .route("/dashboard", get(|| async { page("/dashboard.html") }))
        .route("/web/config.json", get(web_config).with_state(auth))
        .route("/sdk/{file}", get(static_file))
        // Browsers ask for it on every page (the login page too); no icon.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }));
    for (path, _, _) in assets::ASSETS {
        if path.starts_with("/sdk/") || *path == "/index.html" || *path == "/dashboard.html" {
            continue;
        }
        r = r.route(path, get(static_file));
    }
    r
}

/// `--dev` additions to the configuration: the seeded admin may call the
/// server API with its own token (`auth.admin_users`), and the demo's typing
/// indicators get an ephemeral namespace (`typing:*`: no history).
pub fn apply_dev_config(config: &mut Config) {
    if config.auth.admin_users.is_empty() {
        config.auth.admin_users.push(DEV_ADMIN.to_string());
    }
    config
        .channel
        .namespaces
        .entry(TYPING_NAMESPACE.to_string())
        .or_insert_with(|| NamespaceOptions {
            history_size: 0,
            history_ttl: None,
            force_recovery: false,
            join_leave: false,
            force_push_join_leave: false,
            presence: false,
            ..NamespaceOptions::dev()
        });
}

fn demo_grants(admin: bool) -> Value {
    let all = |pattern: &str| json!({ "pattern": pattern, "subscribe": true, "publish": true, "presence": true, "history": true });
    let mut channels = vec![all("chat:*"), all("typing:*"), all("lobby")];
    if admin {
        channels.push(json!({ "pattern": crate::stats::STATS_CHANNEL, "subscribe": true }));
    }
    json!({
        "channels": channels,
        "rooms": [{
            "pattern": "*", "join": true, "publish_audio": true, "publish_video": true,
            "publish_screen": true, "subscribe_media": true, "admin": admin,
        }],
    })
}

async fn commit(
    auth: &AuthService,
    events: Vec<switchboard_auth::oauth::AuthEvent>,
) -> anyhow::Result<()> {
    auth.commit(events).await.context("persisting auth events")
}

/// Seeds a `--dev` server (idempotent): the users of [`DEV_USERS`] and
/// [`DEV_ADMIN`] with [`DEV_PASSWORD`], and the public OAuth client
/// [`DEMO_CLIENT_NAME`] redirecting to `/` and `/dashboard` of `base` (and
/// of its `localhost` spelling). A demo client from an earlier run with
/// other redirect URIs (another port) is replaced.
pub async fn seed_dev(auth: &Arc<AuthService>, base: &str) -> anyhow::Result<()> {
    let now = crate::node::now_ms() / 1000;
    for name in DEV_USERS.iter().chain([&DEV_ADMIN]) {
        if auth.read(|s| s.user(name).is_some()) {
            continue;
        }
        let grants: switchboard_auth::Grants =
            serde_json::from_value(demo_grants(*name == DEV_ADMIN)).context("demo grants")?;
        let svc = auth.clone();
        let name = name.to_string();
        // argon2id is slow on purpose: off the async workers.
        let (_, events) = tokio::task::spawn_blocking(move || {
            svc.read(|s| s.create_user(&name, DEV_PASSWORD, grants, now))
        })
        .await
        .context("hashing a dev password")?
        .map_err(|e| anyhow::anyhow!("creating a dev user: {e}"))?;
        commit(auth, events).await?;
    }

    let mut uris = vec![format!("{base}/"), format!("{base}/dashboard")];
    if let Some(port) = base.strip_prefix("http://127.0.0.1:") {
        uris.push(format!("http://localhost:{port}/"));
        uris.push(format!("http://localhost:{port}/dashboard"));
    }
    let mut have = false;
    for c in auth.read(|s| s.clients()) {
        if c.name != DEMO_CLIENT_NAME {
            continue;
        }
        let same = c.redirect_uris.len() == uris.len()
            && uris.iter().all(|u| c.redirect_uris.contains(u))
            && !c.confidential;
        if same && !have {
            have = true;
        } else {
            let events = auth
                .read(|s| s.delete_client(&c.id, now))
                .map_err(|e| anyhow::anyhow!("replacing the demo client: {e}"))?;
            commit(auth, events).await?;
        }
    }
    if !have {
        let (_, _, events) = auth
            .read(|s| s.create_client(DEMO_CLIENT_NAME, uris, false, now))
            .map_err(|e| anyhow::anyhow!("registering the demo client: {e}"))?;
        commit(auth, events).await?;
    }
    Ok(())
}
