//! Starting servers and clients for the tests.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_auth::{ConnectionTokenSpec, Minter};
use switchboard_client::{Client, ClientOptions, Event, Events};
use switchboard_proto::codec::Encoding;
use switchboard_server::config::{Config, Sources};
use switchboard_server::{Server, ServerHandle};

pub const SECRET: &str = "dev-token-secret";
pub const API_KEY: &str = "dev-api-key";

pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub dir: PathBuf,
    pub config_text: String,
    pub dev: bool,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("sb-e2e-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn load_config(dev: bool, text: &str, dir: &std::path::Path) -> Config {
    let flags = vec![
        (
            "http.addr".to_string(),
            toml::Value::String("127.0.0.1:0".into()),
        ),
        (
            "node.data_dir".to_string(),
            toml::Value::String(dir.display().to_string()),
        ),
    ];
    let file = (!text.is_empty()).then(|| (PathBuf::from("test.toml"), text.to_string()));
    Config::load(&Sources {
        dev,
        file,
        env: vec![],
        flags,
    })
    .expect("valid test config")
}

impl TestServer {
    /// A `--dev` server with extra TOML on top.
    pub async fn dev(extra: &str) -> TestServer {
        Self::start_with(true, extra, temp_dir("dev")).await
    }

    /// A server with only the given TOML (plus the dev secret and key).
    pub async fn with_config(text: &str) -> TestServer {
        let text =
            format!("[token]\nhmac_secret = \"{SECRET}\"\n[api]\nkeys = [\"{API_KEY}\"]\n{text}");
        Self::start_with(false, &text, temp_dir("cfg")).await
    }

    pub async fn start_with(dev: bool, text: &str, dir: PathBuf) -> TestServer {
        let config = load_config(dev, text, &dir);
        let handle = Server::start(config).await.expect("server starts");
        TestServer {
            handle: Some(handle),
            dir,
            config_text: text.to_string(),
            dev,
        }
    }

    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.handle.take().unwrap().shutdown().await.unwrap();
        let config = load_config(self.dev, &self.config_text, &self.dir);
        self.handle = Some(Server::start(config).await.expect("server restarts"));
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.handle.as_ref().unwrap().addr()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr())
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// Calls the server API; returns the whole reply body.
    pub async fn api(&self, method: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(self.http(&format!("/api/{method}")))
            .header("X-API-Key", API_KEY)
            .json(&body)
            .send()
            .await
            .expect("api call");
        resp.json().await.expect("api json")
    }

    /// Calls the server API and returns `result`, failing on `error`.
    pub async fn api_ok(&self, method: &str, body: serde_json::Value) -> serde_json::Value {
        let reply = self.api(method, body).await;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    pub async fn connect(&self, user: &str, encoding: Encoding) -> (Client, Events) {
        self.connect_with(ClientOptions {
            encoding,
            ..ClientOptions::with_token(token(user))
        })
        .await
    }

    pub async fn connect_with(&self, options: ClientOptions) -> (Client, Events) {
        Client::connect(&self.ws_url(), options)
            .await
            .expect("client connects")
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn token(user: &str) -> String {
    token_spec(ConnectionTokenSpec {
        user: user.into(),
        ttl: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
}

pub fn token_spec(spec: ConnectionTokenSpec) -> String {
    Minter::hs256(SECRET)
        .unwrap()
        .mint_connection(&spec, now())
        .unwrap()
}

pub fn sub_token(user: &str, channel: &str, ttl: Duration) -> String {
    Minter::hs256(SECRET)
        .unwrap()
        .mint_subscription(user, channel, Some(ttl), None, now())
        .unwrap()
}

/// Waits for the next event matching `pred`, failing after 5 s.
pub async fn next_event(events: &mut Events, mut pred: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = events.recv().await.expect("event stream open");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("expected event within 5 s")
}

/// The next publication on `channel` as (offset, data as JSON).
pub async fn next_pub(events: &mut Events, channel: &str) -> (u64, serde_json::Value) {
    match next_event(
        events,
        |e| matches!(e, Event::Publication { channel: c, .. } if c == channel),
    )
    .await
    {
        Event::Publication { publication, .. } => (
            publication.offset,
            serde_json::from_slice(&publication.data).expect("JSON data"),
        ),
        _ => unreachable!(),
    }
}

/// Asserts that no event matching `pred` arrives within `wait`.
pub async fn no_event(events: &mut Events, wait: Duration, mut pred: impl FnMut(&Event) -> bool) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return,
            Ok(None) => return,
            Ok(Some(ev)) => assert!(!pred(&ev), "unexpected event {ev:?}"),
        }
    }
}
