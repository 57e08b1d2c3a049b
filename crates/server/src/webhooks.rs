//! Webhooks: room and call events POSTed to the app's endpoints, signed with
//! HMAC-SHA256 and retried with exponential backoff.
//!
//! Each delivery runs in its own task, so a slow or failing endpoint never
//! holds up signaling or the other endpoints. The body is
//! `{"id", "type", "at_ms", "event": {…}}`; headers `Switchboard-Event-Id`
//! (stable across retries, for deduplication) and `Switchboard-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. Connect
//! errors, timeouts, 429 and 5xx are retried after `backoff`, doubling up to
//! `max_backoff`, for `max_attempts` attempts in all; other statuses and
//! exhausted retries are logged and counted in
//! `switchboard_webhook_deliveries_total{result="failed"}`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchboard_core::callevent::CallEvent;
use switchboard_core::duration::serde_str;

/// Event types sent when a webhook lists none.
pub const DEFAULT_EVENTS: &[&str] = &[
    "room_started",
    "room_finished",
    "participant_joined",
    "participant_left",
    "track_published",
    "track_unpublished",
    "call_ringing",
    "call_accepted",
    "call_declined",
    "call_cancelled",
    "call_missed",
];

/// Every event type a webhook may ask for.
pub const ALL_EVENTS: &[&str] = &[
    "room_started",
    "room_finished",
    "mode_changed",
    "participant_joined",
    "participant_left",
    "track_published",
    "track_unpublished",
    "quality_sample",
    "call_ringing",
    "call_accepted",
    "call_declined",
    "call_cancelled",
    "call_missed",
];

/// Deliveries waiting or in flight per endpoint beyond which new events are
/// dropped (and counted), so a dead endpoint cannot exhaust memory.
pub const MAX_PENDING: usize = 10_000;

/// One `[[webhooks]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint (`http://` or `https://`).
    pub url: String,
    /// Shared secret the signature is computed with.
    pub secret: String,
    /// Event types to send (default [`DEFAULT_EVENTS`]).
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Attempts per event, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each retry.
    #[serde(default = "default_backoff", with = "serde_str")]
    pub backoff: Duration,
    /// Longest wait between retries.
    #[serde(default = "default_max_backoff", with = "serde_str")]
    pub max_backoff: Duration,
    /// Time allowed for one attempt (connect and response).
    #[serde(default = "default_timeout", with = "serde_str")]
    pub timeout: Duration,
    /// PEM file of extra CA certificates trusted for this `https://`
    /// endpoint (a private CA), besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect()
}
fn default_attempts() -> u32 {
    6
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl WebhookConfig {
    /// Checks the entry; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("url: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err("url: must be http:// or https://".into());
        }
        if self.secret.is_empty() {
            return Err("secret: must not be empty".into());
        }
        if let Some(bad) = self
            .events
            .iter()
            .find(|e| !ALL_EVENTS.contains(&e.as_str()))
        {
            return Err(format!(
                "events: unknown event {bad:?} (known: {})",
                ALL_EVENTS.join(", ")
            ));
        }
        if self.max_attempts == 0 {
            return Err("max_attempts: must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be positive".into());
        }
        if let Some(path) = &self.ca_file {
            crate::http_client::read_ca_file(path).map_err(|e| format!("ca_file: {e}"))?;
        }
        Ok(())
    }

    /// The HTTP client for this endpoint (redirects are not followed).
    fn client(&self) -> Result<HttpClient, String> {
        crate::http_client::client(self.url.starts_with("https://"), self.ca_file.as_deref())
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// `t=<unix_secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(unix_secs.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_secs},v1={hex}")
}

/// The JSON body sent for one event.
pub fn body(id: &str, event: &CallEvent, at_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "type": event.kind(),
        "at_ms": at_ms,
        "event": event,
    }))
    .unwrap_or_default()
}

use crate::http_client::HttpClient;

struct Endpoint {
    config: WebhookConfig,
    uri: hyper::Uri,
    http: HttpClient,
    pending: AtomicUsize,
}

/// The configured endpoints and the HTTP client delivering to them.
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
}

enum Attempt {
    Delivered,
    Retry(String),
    Fail(String),
}

impl Webhooks {
    /// Endpoints from configuration; fails when an endpoint's HTTP client
    /// cannot be built (e.g. an unreadable `ca_file`).
    pub fn new(configs: Vec<WebhookConfig>) -> Result<Arc<Self>, String> {
        let mut endpoints = Vec::with_capacity(configs.len());
        for (i, config) in configs.into_iter().enumerate() {
            let http = config.client().map_err(|e| format!("webhooks[{i}]: {e}"))?;
            let uri: hyper::Uri = config
                .url
                .parse()
                .map_err(|e| format!("webhooks[{i}].url: {e}"))?;
            endpoints.push(Arc::new(Endpoint {
                config,
                uri,
                http,
                pending: AtomicUsize::new(0),
            }));
        }
        Ok(Arc::new(Self { endpoints }))
    }

    /// Whether any endpoint is configured.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Queues `event` (with its stable id) to every endpoint that wants it;
    /// returns at once. Needs a tokio runtime.
    pub fn dispatch(&self, id: &str, event: &CallEvent) {
        let kind = event.kind();
        let at_ms = event_time(event);
        let mut body_bytes: Option<bytes::Bytes> = None;
        for ep in &self.endpoints {
            if !ep.config.events.iter().any(|e| e == kind) {
                continue;
            }
            if ep.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
                ep.pending.fetch_sub(1, Ordering::SeqCst);
                metrics::counter!("switchboard_webhook_deliveries_total", "result" => "dropped")
                    .increment(1);
                tracing::warn!(url = %ep.config.url, id, kind, "webhook queue full: event dropped");
                continue;
            }
            let body = body_bytes
                .get_or_insert_with(|| body(id, event, at_ms).into())
                .clone();
            let (ep, id) = (ep.clone(), id.to_string());
            tokio::spawn(async move {
                deliver(&ep, &id, kind, body).await;
                ep.pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn event_time(ev: &CallEvent) -> i64 {
    serde_json::to_value(ev)
        .ok()
        .and_then(|v| v["at_ms"].as_i64())
        .unwrap_or_else(crate::node::now_ms)
}

async fn attempt(ep: &Endpoint, id: &str, body: &bytes::Bytes) -> Attempt {
    let cfg = &ep.config;
    let t = crate::node::now_ms() / 1000;
    let req = hyper::Request::post(ep.uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "switchboard-webhooks")
        .header("Switchboard-Event-Id", id)
        .header("Switchboard-Signature", signature(&cfg.secret, t, body))
        .body(http_body_util::Full::new(body.clone()));
    let req = match req {
        Ok(r) => r,
        Err(e) => return Attempt::Fail(format!("request: {e}")),
    };
    let sent = tokio::time::timeout(cfg.timeout, async {
        let resp = ep.http.request(req).await?;
        let status = resp.status();
        // Read the (small) answer so the connection can be reused.
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    })
    .await;
    match sent {
        Ok(Ok(status)) => {
            if status.is_success() {
                Attempt::Delivered
            } else if status.is_server_error() || status.as_u16() == 429 {
                Attempt::Retry(format!("status {status}"))
            } else {
                Attempt::Fail(format!("status {status}"))
            }
        }
        Ok(Err(e)) => Attempt::Retry(error_chain(&e)),
        Err(_) => Attempt::Retry("timed out".into()),
    }
}

/// An error with its causes (connect and TLS errors hide the useful part).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn deliver(ep: &Endpoint, id: &str, kind: &str, body: bytes::Bytes) {
    let cfg = &ep.config;
    let mut n = 0;
    loop {
        n += 1;
        metrics::counter!("switchboard_webhook_attempts_total").increment(1);
        let why = match attempt(ep, id, &body).await {
            Attempt::Delivered => {
                metrics::counter!("switchboard_webhook_deliveries_total", "result" => "ok")
                    .increment(1);
                return;
            }
            Attempt::Fail(why) => {
                n = cfg.max_attempts;
                why
            }
            Attempt::Retry(why) => why,
        };
        if n >= cfg.max_attempts {
            metrics::counter!("switchboard_webhook_deliveries_total", "result" => "failed")
                .increment(1);
            tracing::warn!(url = %cfg.url, id, kind, attempts = n, error = %why, "webhook delivery failed");
            return;
        }
        tracing::debug!(url = %cfg.url, id, attempt = n, error = %why, "webhook attempt failed; retrying");
        tokio::time::sleep(cfg.delay_after(n)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<WebhookConfig, String> {
        let c: WebhookConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_validation() {
        let c = cfg("url = \"http://127.0.0.1:9/hook\"\nsecret = \"s\"\n").unwrap();
        assert_eq!(c.events.len(), DEFAULT_EVENTS.len());
        assert_eq!(c.max_attempts, 6);
        assert_eq!(c.delay_after(1), Duration::from_secs(1));
        assert_eq!(c.delay_after(3), Duration::from_secs(4));
        assert_eq!(c.delay_after(30), Duration::from_secs(60));
        assert!(
            cfg("url = \"ftp://x\"\nsecret = \"s\"\n")
                .unwrap_err()
                .contains("url")
        );
        assert!(
            cfg("url = \"http://x\"\nsecret = \"\"\n")
                .unwrap_err()
                .contains("secret")
        );
        let e =
            cfg("url = \"http://x\"\nsecret = \"s\"\nevents = [\"room_strted\"]\n").unwrap_err();
        assert!(e.contains("room_strted"), "{e}");
        assert!(cfg("url = \"http://x\"\nsecret = \"s\"\nmax_attempts = 0\n").is_err());
    }

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // Known answer: HMAC-SHA256("secret", "1700000000.{}") computed with
        // Python's hmac module.
        assert_eq!(
            signature("secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
