//! HTTP endpoints of the built-in OAuth 2.0 authorization server:
//! `/oauth/authorize` (login page, authorization code + PKCE),
//! `/oauth/token`, `/oauth/revoke` (RFC 7009), `/oauth/introspect`
//! (RFC 7662), `/.well-known/jwks.json` and
//! `/.well-known/oauth-authorization-server` (RFC 8414).

use crate::auth::AuthService;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard_auth::oauth::{
    AuthorizeError, AuthorizeRequest, LoginError, OAuthError, OAuthErrorCode, TokenRequest,
};

/// Largest accepted body of an OAuth request.
const MAX_BODY: usize = 16 * 1024;

fn bad_request(description: &str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidRequest, description)
}

fn now() -> i64 {
    crate::node::now_ms() / 1000
}

/// The OAuth routes.
pub fn router(auth: Arc<AuthService>) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route(
            "/oauth/authorize",
            get(authorize_page).post(authorize_submit),
        )
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/oauth/introspect", post(introspect))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(auth)
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn oauth_error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    no_store((status, axum::Json(e)).into_response())
}

async fn jwks(State(auth): State<Arc<AuthService>>) -> Response {
    axum::Json(auth.read(|s| s.jwks())).into_response()
}

async fn metadata(State(auth): State<Arc<AuthService>>) -> Response {
    axum::Json(auth.read(|s| s.metadata(s.config()))).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; color: #1d2330; margin: 0; }}
main {{ max-width: 22rem; margin: 10vh auto; background: #fff; padding: 2rem; border-radius: 12px; box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
h1 {{ font-size: 1.4rem; margin-top: 0; }}
label {{ display: block; margin: 1rem 0 .3rem; font-weight: 600; }}
input {{ width: 100%; box-sizing: border-box; padding: .6rem; font-size: 1rem; border: 1px solid #8a93a6; border-radius: 6px; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .7rem; font-size: 1rem; background: #1f5fd1; color: #fff; border: 0; border-radius: 6px; cursor: pointer; }}
button:focus, input:focus {{ outline: 3px solid #ffbf47; }}
.error {{ background: #fdecec; color: #8a1111; padding: .6rem; border-radius: 6px; }}
.client {{ color: #4a5468; }}
</style>
</head>
<body><main>{body}</main></body>
</html>"#
    )
}

fn login_form(req: &AuthorizeRequest, client_name: &str, error: Option<&str>) -> String {
    let hidden = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| {
                format!(
                    r#"<input type="hidden" name="{name}" value="{}">"#,
                    escape(v)
                )
            })
            .unwrap_or_default()
    };
    let err = error
        .map(|e| {
            format!(
                r#"<p class="error" role="alert" id="login-error">{}</p>"#,
                escape(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in to Switchboard</h1>
<p class="client">to continue to <strong>{client}</strong></p>
{err}
<form method="post" action="/oauth/authorize">
{h1}{h2}{h3}{h4}{h5}{h6}{h7}
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>"#,
        client = escape(client_name),
        h1 = hidden("response_type", &req.response_type),
        h2 = hidden("client_id", &req.client_id),
        h3 = hidden("redirect_uri", &req.redirect_uri),
        h4 = hidden("code_challenge", &req.code_challenge),
        h5 = hidden("code_challenge_method", &req.code_challenge_method),
        h6 = hidden("scope", &req.scope),
        h7 = hidden("state", &req.state),
    );
    page("Sign in", &body)
}

fn error_page(status: StatusCode, e: &OAuthError) -> Response {
    let body = format!(
        r#"<h1>Cannot sign in</h1><p class="error" role="alert">{}: {}</p>"#,
        escape(e.error.as_str()),
        escape(&e.error_description)
    );
    (status, Html(page("Sign-in error", &body))).into_response()
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r)
}

fn authorize_failure(e: AuthorizeError) -> Response {
    match &e {
        AuthorizeError::NoRedirect(err) => error_page(StatusCode::BAD_REQUEST, err),
        AuthorizeError::Redirect { .. } => match e.redirect_url() {
            Some(url) => redirect(&url),
            None => error_page(StatusCode::BAD_REQUEST, e.error()),
        },
    }
}

async fn authorize_page(
    State(auth): State<Arc<AuthService>>,
    Query(req): Query<AuthorizeRequest>,
) -> Response {
    match auth.read(|s| s.validate_authorize(&req)) {
        Ok(ctx) => no_store(Html(login_form(&req, &ctx.client_name, None)).into_response()),
        Err(e) => authorize_failure(e),
    }
}

/// The login form: the authorize parameters plus credentials.
#[derive(Deserialize)]
struct LoginForm {
    #[serde(flatten)]
    authorize: AuthorizeRequest,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn authorize_submit(
    State(auth): State<Arc<AuthService>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(StatusCode::BAD_REQUEST, &bad_request("malformed form"));
    };
    let ctx = match auth.read(|s| s.validate_authorize(&form.authorize)) {
        Ok(ctx) => ctx,
        Err(e) => return authorize_failure(e),
    };
    let svc = auth.clone();
    let (username, password) = (form.username.clone(), form.password.clone());
    // Password hashing is slow on purpose: keep it off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        svc.write(|s| s.login(&username, &password, peer.ip(), now()))
    })
    .await
    .expect("login task");
    match outcome {
        Ok((user_id, events)) => {
            if let Err(e) = auth.commit(events).await {
                tracing::error!(error = %e, "persisting login events");
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &OAuthError::new(OAuthErrorCode::ServerError, "try again"),
                );
            }
            let code = auth.write(|s| s.issue_code(&ctx, &user_id, now()));
            let issuer = auth.read(|s| s.config().issuer.clone());
            redirect(&ctx.redirect_with_code(&code, &issuer))
        }
        Err((err, events)) => {
            let _ = auth.commit(events).await;
            let (status, msg, retry) = match err {
                LoginError::RateLimited { retry_after_secs } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many failed attempts. Try again in {retry_after_secs} seconds."),
                    Some(retry_after_secs),
                ),
                // A disabled account gets the same answer as a wrong
                // password: the page must not tell which accounts exist.
                LoginError::InvalidCredentials | LoginError::Disabled => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong username or password.".to_string(),
                    None,
                ),
            };
            let mut r = (
                status,
                Html(login_form(&form.authorize, &ctx.client_name, Some(&msg))),
            )
                .into_response();
            if let Some(secs) = retry
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            no_store(r)
        }
    }
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

async fn token(
    State(auth): State<Arc<AuthService>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(req)) = form else {
        return oauth_error(&bad_request(
            "expected an application/x-www-form-urlencoded body",
        ));
    };
    let client_auth = basic_auth(&headers);
    let outcome = auth.write(|s| s.token(&req, client_auth, now()));
    match outcome {
        Ok((resp, events)) => match auth.commit(events).await {
            Ok(()) => no_store(axum::Json(resp).into_response()),
            Err(e) => {
                tracing::error!(error = %e, "persisting token events");
                oauth_error(&OAuthError::new(OAuthErrorCode::ServerError, "try again"))
            }
        },
        Err((err, events)) => {
            let _ = auth.commit(events).await;
            oauth_error(&err)
        }
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    token_type_hint: Option<String>,
}

async fn revoke(
    State(auth): State<Arc<AuthService>>,
    form: Result<Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return oauth_error(&bad_request(
            "expected an application/x-www-form-urlencoded body",
        ));
    };
    if f.token.is_empty() {
        return oauth_error(&bad_request("token is required"));
    }
    let events = auth.read(|s| s.revoke(&f.token, f.token_type_hint.as_deref(), now()));
    if let Err(e) = auth.commit(events).await {
        tracing::error!(error = %e, "persisting revocation");
        return oauth_error(&OAuthError::new(OAuthErrorCode::ServerError, "try again"));
    }
    // RFC 7009 §2.2: 200 whether or not the token was known.
    no_store(StatusCode::OK.into_response())
}

fn api_credential(headers: &HeaderMap) -> Option<String> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.to_string());
    }
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("apikey") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| rest.trim().to_string())
}

async fn introspect(
    State(auth): State<Arc<AuthService>>,
    axum::Extension(keys): axum::Extension<crate::api::ConfigKeys>,
    headers: HeaderMap,
    form: Result<Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    // RFC 7662 §2.1: the caller must be authorized: an API key (HTTP Basic
    // with the key id and secret works too) or an API access token.
    let allowed = api_credential(&headers)
        .is_some_and(|k| keys.accepts(&k) || auth.check_api_credential(&k))
        || basic_auth(&headers)
            .is_some_and(|(id, secret)| auth.check_api_credential(&format!("{id}.{secret}")));
    if !allowed {
        let mut r = oauth_error(&OAuthError::new(
            OAuthErrorCode::InvalidClient,
            "authentication required",
        ));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let Ok(Form(f)) = form else {
        return oauth_error(&bad_request(
            "expected an application/x-www-form-urlencoded body",
        ));
    };
    no_store(axum::Json(auth.read(|s| s.introspect(&f.token, now()))).into_response())
}
