//! Server API methods of the authorization server: API keys, users, OAuth
//! clients and sessions (`apikey_create`, `user_create`, `session_end`, …).

use crate::api::ApiState;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use switchboard_auth::Grants;
use switchboard_auth::oauth::AuthError;
use switchboard_proto::api::ApiError;

/// Names of the methods handled here.
pub const METHODS: &[&str] = &[
    "apikey_create",
    "apikey_list",
    "apikey_revoke",
    "user_create",
    "user_list",
    "user_disable",
    "oauth_client_create",
    "oauth_client_list",
    "oauth_client_delete",
    "session_list",
    "session_end",
    "signing_key_list",
    "signing_key_rotate",
    "signing_key_retire",
];

fn now() -> i64 {
    crate::node::now_ms() / 1000
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BAD_REQUEST.with_message(format!("malformed request: {e}")))
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::UnknownUser
        | AuthError::UnknownApiKey
        | AuthError::UnknownClient
        | AuthError::UnknownSession => {
            ApiError::new(ApiError::METHOD_NOT_FOUND.code, "not found").with_message(e.to_string())
        }
        AuthError::UsernameTaken => ApiError::CONFLICT.with_message(e.to_string()),
        AuthError::Internal(_) | AuthError::SigningKey(_) => ApiError::INTERNAL,
        _ => ApiError::BAD_REQUEST.with_message(e.to_string()),
    }
}

#[derive(Deserialize)]
struct Name {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    grants: Option<Grants>,
}

#[derive(Deserialize)]
struct Username {
    username: String,
}

#[derive(Deserialize)]
struct NewClient {
    name: String,
    redirect_uris: Vec<String>,
    #[serde(default)]
    confidential: bool,
}

#[derive(Deserialize)]
struct ClientId {
    client_id: String,
}

#[derive(Deserialize)]
struct User {
    user: String,
}

#[derive(Deserialize)]
struct Kid {
    kid: String,
}

#[derive(Deserialize)]
struct Session {
    session: String,
}

/// Runs `method` if it is one of the auth methods; `None` otherwise.
pub async fn handle(
    state: &ApiState,
    method: &str,
    body: &[u8],
) -> Option<Result<Value, ApiError>> {
    if !METHODS.contains(&method) {
        return None;
    }
    Some(run(state, method, body).await)
}

async fn commit(
    state: &ApiState,
    events: Vec<switchboard_auth::oauth::AuthEvent>,
) -> Result<(), ApiError> {
    state.auth.commit(events).await.map_err(|e| {
        tracing::error!(error = %e, "persisting auth events");
        ApiError::INTERNAL
    })
}

async fn run(state: &ApiState, method: &str, body: &[u8]) -> Result<Value, ApiError> {
    let auth = &state.auth;
    match method {
        "apikey_create" => {
            let req: Name = parse(body)?;
            let (created, events) = auth.read(|s| s.create_api_key(&req.name, now()));
            commit(state, events).await?;
            Ok(json!({ "id": created.id, "secret": created.combined() }))
        }
        "apikey_list" => Ok(json!({ "keys": auth.read(|s| s.api_keys()) })),
        "apikey_revoke" => {
            let req: Id = parse(body)?;
            let events = auth
                .read(|s| s.revoke_api_key(&req.id, now()))
                .map_err(auth_error)?;
            commit(state, events).await?;
            Ok(json!({}))
        }
        "user_create" => {
            let req: NewUser = parse(body)?;
            let svc = auth.clone();
            let grants = req.grants.unwrap_or_default();
            // Hashing the password is slow on purpose: off the async workers.
            let (user, events) = tokio::task::spawn_blocking(move || {
                svc.read(|s| s.create_user(&req.username, &req.password, grants, now()))
            })
            .await
            .map_err(|_| ApiError::INTERNAL)?
            .map_err(auth_error)?;
            commit(state, events).await?;
            Ok(json!({ "user": user }))
        }
        "user_list" => Ok(json!({ "users": auth.read(|s| s.users()) })),
        "user_disable" => {
            let req: Username = parse(body)?;
            let events = auth
                .read(|s| s.disable_user(&req.username, now()))
                .map_err(auth_error)?;
            commit(state, events).await?;
            Ok(json!({}))
        }
        "oauth_client_create" => {
            let req: NewClient = parse(body)?;
            let (client, secret, events) = auth
                .read(|s| {
                    s.create_client(
                        &req.name,
                        req.redirect_uris.clone(),
                        req.confidential,
                        now(),
                    )
                })
                .map_err(auth_error)?;
            commit(state, events).await?;
            Ok(json!({ "client": client, "client_secret": secret }))
        }
        "oauth_client_list" => Ok(json!({ "clients": auth.read(|s| s.clients()) })),
        "oauth_client_delete" => {
            let req: ClientId = parse(body)?;
            let events = auth
                .read(|s| s.delete_client(&req.client_id, now()))
                .map_err(auth_error)?;
            commit(state, events).await?;
            Ok(json!({}))
        }
        "session_list" => {
            let req: User = parse(body)?;
            let user_id = auth
                .read(|s| s.user(&req.user).map(|u| u.id))
                .unwrap_or(req.user);
            Ok(json!({ "sessions": auth.read(|s| s.sessions(&user_id)) }))
        }
        "session_end" => {
            let req: Session = parse(body)?;
            let events = auth
                .read(|s| s.end_session(&req.session, now()))
                .map_err(auth_error)?;
            commit(state, events).await?;
            Ok(json!({}))
        }
        "signing_key_list" => Ok(json!({ "keys": auth.read(|s| s.signing_keys()) })),
        "signing_key_rotate" => {
            // New tokens are signed with a new key; the old one stays in the
            // JWKS (tokens it signed keep verifying) until retired.
            let events = auth.read(|s| s.rotate_signing_key(now()));
            commit(state, events).await?;
            Ok(json!({ "keys": auth.read(|s| s.signing_keys()) }))
        }
        "signing_key_retire" => {
            let req: Kid = parse(body)?;
            let events = auth
                .read(|s| s.retire_signing_key(&req.kid, now()))
                .map_err(auth_error)?;
            commit(state, events).await?;
            Ok(json!({}))
        }
        _ => Err(ApiError::METHOD_NOT_FOUND),
    }
}
