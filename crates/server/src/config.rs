//! Server configuration: one TOML file plus `SWITCHBOARD_*` environment
//! overrides, validated once at start.
//!
//! Layers, later ones winning: built-in defaults, the `--dev` defaults, the
//! `--config` file, environment variables, command-line flags. Environment
//! variables name a key by its path in upper case with `_` between parts:
//! `SWITCHBOARD_HTTP_ADDR` is `http.addr`, `SWITCHBOARD_CLIENT_MAX_FRAME_BYTES`
//! is `client.max_frame_bytes`, `SWITCHBOARD_CHANNEL_DEFAULTS_HISTORY_SIZE` is
//! `channel.defaults.history_size`. Values are read as TOML values when they
//! parse as one (numbers, booleans, `["a","b"]`) and as strings otherwise. Any
//! unknown key, in the file or the environment, is refused with its name.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_auth::VerifierConfig;
use switchboard_core::duration::serde_str;
use switchboard_core::namespace::{NamespaceOptions, Namespaces};
use switchboard_gateway::GatewayConfig;

/// The API key of `--dev` mode.
pub const DEV_API_KEY: &str = "dev-api-key";
/// The token HMAC secret of `--dev` mode.
pub const DEV_TOKEN_SECRET: &str = "dev-token-secret";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// The whole configuration of a node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listener (client transports, server API, metrics, health).
    pub http: HttpConfig,
    /// This node.
    pub node: NodeConfig,
    /// Logging.
    pub log: LogConfig,
    /// Server API authentication.
    pub api: ApiConfig,
    /// Connection and subscription token verification.
    pub token: VerifierConfig,
    /// Client connection limits and timings.
    pub client: ClientConfig,
    /// Channel namespaces.
    pub channel: Namespaces,
    /// Publication history.
    pub history: HistoryConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// The built-in OAuth 2.0 authorization server.
    pub auth: switchboard_auth::oauth::AuthConfig,
    /// Calls: the SFU and its signaling.
    pub media: MediaSection,
    /// Endpoints receiving room and call events (`[[webhooks]]`).
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
}

/// Calls: the SFU's UDP socket, limits, ICE servers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    /// Run the SFU on this node.
    pub enabled: bool,
    /// The one UDP address all peers share (default 127.0.0.1:0: any free
    /// port; set a fixed port in production).
    pub udp_addr: SocketAddr,
    /// Addresses put in ICE candidates instead of `udp_addr`'s (NAT, containers).
    pub advertised_ips: Vec<std::net::IpAddr>,
    /// Refuse `rtc.join` to tokens without room grants (off in `--dev`).
    pub require_grants: bool,
    /// Participants per room.
    pub max_participants: usize,
    /// Published tracks per participant.
    pub max_tracks_per_participant: usize,
    /// Time allowed for ICE and DTLS after join.
    #[serde(with = "serde_str")]
    pub connect_timeout: Duration,
    /// A participant sending nothing for this long is removed.
    #[serde(with = "serde_str")]
    pub idle_timeout: Duration,
    /// Mode of rooms created without one (`sfu`, `p2p`, `auto`).
    pub default_mode: switchboard_core::room::RoomMode,
    /// Participants at most while a room is peer-to-peer (`p2p` rooms'
    /// capacity, the size at which `auto` rooms switch to the SFU when one
    /// more joins).
    pub p2p_max_participants: usize,
    /// How long a room made with `room_create` may stay empty before it ends
    /// (rooms created by a join end when the last participant leaves).
    #[serde(with = "serde_str")]
    pub empty_timeout: Duration,
    /// How long a 1:1 call (`rtc.call`) rings before it is missed.
    #[serde(with = "serde_str")]
    pub ring_timeout: Duration,
    /// STUN/TURN servers handed to clients at join.
    pub ice_servers: Vec<crate::calls::IceServer>,
    /// TURN with time-limited credentials (coturn `use-auth-secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<crate::calls::TurnConfig>,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            enabled: true,
            // Any free port by default; production sets a fixed one to open
            // in the firewall.
            udp_addr: "127.0.0.1:0".parse().expect("valid address"),
            advertised_ips: Vec::new(),
            require_grants: true,
            max_participants: 100,
            max_tracks_per_participant: 8,
            connect_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(30),
            default_mode: switchboard_core::room::RoomMode::Auto,
            p2p_max_participants: 2,
            empty_timeout: Duration::from_secs(300),
            ring_timeout: Duration::from_secs(30),
            ice_servers: Vec::new(),
            turn: None,
        }
    }
}

/// HTTP listener settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; loopback by default.
    pub addr: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8000".parse().expect("valid address"),
        }
    }
}

/// Node identity and local storage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Name reported to clients and in `info`.
    pub name: String,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "switchboard".into(),
            data_dir: PathBuf::from("data"),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `tracing` env-filter syntax (`info`, `switchboard=debug`).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Server API keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Accepted keys (several at once for rotation).
    pub keys: Vec<String>,
    /// One more accepted key (convenient for `SWITCHBOARD_API_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ApiConfig {
    /// Every accepted key.
    pub fn all_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .chain(self.key.iter())
            .filter(|k| !k.is_empty())
            .cloned()
            .collect()
    }
}

/// Client connection limits and timings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Largest frame a client may send.
    pub max_frame_bytes: usize,
    /// Largest publication payload a client may send.
    pub max_publication_bytes: usize,
    /// Subscriptions per connection.
    pub max_channels_per_connection: usize,
    /// Longest channel name in bytes.
    pub max_channel_length: usize,
    /// Commands per frame.
    pub max_commands_per_frame: usize,
    /// Server ping period.
    #[serde(with = "serde_str")]
    pub ping_interval: Duration,
    /// Time allowed for a pong.
    #[serde(with = "serde_str")]
    pub pong_timeout: Duration,
    /// Time allowed between opening a connection and `connect`.
    #[serde(with = "serde_str")]
    pub connect_timeout: Duration,
    /// Grace after a token expires before the connection is closed.
    #[serde(with = "serde_str")]
    pub expired_close_delay: Duration,
    /// Send queue bound in bytes; a slower reader is disconnected ("slow").
    pub send_queue_max_bytes: usize,
    /// Send queue bound in frames.
    pub send_queue_max_messages: usize,
    /// Sustained commands per second per connection.
    pub commands_per_second: NonZeroU32,
    /// Command burst per connection.
    pub commands_burst: NonZeroU32,
    /// Sustained connection attempts per second per client IP.
    pub connections_per_second_per_ip: NonZeroU32,
    /// Connection attempt burst per client IP.
    pub connections_burst_per_ip: NonZeroU32,
    /// Accept connections without a token.
    pub allow_anonymous: bool,
    /// Presence expires this long after a connection's last heartbeat.
    #[serde(with = "serde_str")]
    pub presence_ttl: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let g = GatewayConfig::default();
        Self {
            max_frame_bytes: g.max_frame_bytes,
            max_publication_bytes: g.max_publication_bytes,
            max_channels_per_connection: g.max_channels_per_connection,
            max_channel_length: g.max_channel_length,
            max_commands_per_frame: g.max_commands_per_frame,
            ping_interval: g.ping_interval,
            pong_timeout: g.pong_timeout,
            connect_timeout: g.connect_timeout,
            expired_close_delay: g.expired_close_delay,
            send_queue_max_bytes: g.send_queue_max_bytes,
            send_queue_max_messages: g.send_queue_max_messages,
            commands_per_second: g.commands_per_second,
            commands_burst: g.commands_burst,
            connections_per_second_per_ip: g.connections_per_second_per_ip,
            connections_burst_per_ip: g.connections_burst_per_ip,
            allow_anonymous: g.allow_anonymous,
            presence_ttl: g.presence_ttl,
        }
    }
}

/// History settings shared by all namespaces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// How long an idempotency key suppresses a repeated publish.
    #[serde(with = "serde_str")]
    pub idempotency_window: Duration,
    /// Most publications one history page returns.
    pub max_page: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            idempotency_window: Duration::from_secs(300),
            max_page: 10_000,
        }
    }
}

/// Graceful shutdown settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long to wait for clients to leave before exiting anyway.
    #[serde(with = "serde_str")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Where configuration comes from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Apply the `--dev` defaults.
    pub dev: bool,
    /// TOML text of the `--config` file, with its path for messages.
    pub file: Option<(PathBuf, String)>,
    /// Environment variables (name, value); only `SWITCHBOARD_*` are read.
    pub env: Vec<(String, String)>,
    /// Command-line overrides as (dotted key, TOML value).
    pub flags: Vec<(String, toml::Value)>,
}

/// A configuration that cannot be used; the message names the bad key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn dev_layer() -> toml::Table {
    let mut t = toml::Table::new();
    let mut api = toml::Table::new();
    api.insert("keys".into(), toml::Value::Array(vec![DEV_API_KEY.into()]));
    t.insert("api".into(), api.into());
    let mut token = toml::Table::new();
    token.insert("hmac_secret".into(), DEV_TOKEN_SECRET.into());
    t.insert("token".into(), token.into());
    let mut media = toml::Table::new();
    media.insert("require_grants".into(), false.into());
    t.insert("media".into(), media.into());
    let mut client = toml::Table::new();
    client.insert("allow_anonymous".into(), true.into());
    t.insert("client".into(), client.into());
    let mut channel = toml::Table::new();
    channel.insert("allow_unknown_namespaces".into(), true.into());
    let defaults = toml::Value::try_from(NamespaceOptions::dev()).expect("dev options serialize");
    channel.insert("defaults".into(), defaults);
    t.insert("channel".into(), channel.into());
    t
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if !entry.is_table() {
            *entry = toml::Value::Table(Default::default());
        }
        cur = entry.as_table_mut().expect("table");
    }
    cur.insert(last.to_string(), value);
}

fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Splits an environment variable's name (without prefix) into a key path.
fn env_path(name: &str) -> Result<Vec<String>, ConfigError> {
    let lower = name.to_ascii_lowercase();
    let (section, rest) = lower.split_once('_').ok_or_else(|| {
        ConfigError(format!(
            "{ENV_PREFIX}{name}: expected {ENV_PREFIX}<SECTION>_<KEY>"
        ))
    })?;
    if section == "channel"
        && let Some(key) = rest.strip_prefix("defaults_")
    {
        return Ok(vec!["channel".into(), "defaults".into(), key.into()]);
    }
    Ok(vec![section.to_string(), rest.to_string()])
}

impl Config {
    /// Builds and validates the configuration from its sources.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut table = if sources.dev {
            dev_layer()
        } else {
            toml::Table::new()
        };
        if let Some((path, text)) = &sources.file {
            let file: toml::Table = toml::from_str(text)
                .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.message())))?;
            merge(&mut table, file);
        }
        for (name, value) in &sources.env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path = env_path(rest)?;
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            set_path(&mut table, &refs, parse_env_value(value));
        }
        for (key, value) in &sources.flags {
            let refs: Vec<&str> = key.split('.').collect();
            set_path(&mut table, &refs, value.clone());
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                ConfigError(format!("{path}: {}", e.into_inner().message()))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.channel.validate().map_err(ConfigError)?;
        let c = &self.client;
        if c.max_frame_bytes < 1024 {
            return Err(ConfigError(
                "client.max_frame_bytes: must be at least 1024".into(),
            ));
        }
        if c.max_publication_bytes > c.max_frame_bytes {
            return Err(ConfigError(
                "client.max_publication_bytes: must not exceed client.max_frame_bytes".into(),
            ));
        }
        if c.send_queue_max_bytes < c.max_frame_bytes {
            return Err(ConfigError(
                "client.send_queue_max_bytes: must be at least client.max_frame_bytes".into(),
            ));
        }
        if c.ping_interval.is_zero() {
            return Err(ConfigError("client.ping_interval: must be positive".into()));
        }
        if c.pong_timeout.is_zero() || c.pong_timeout >= c.ping_interval {
            return Err(ConfigError(
                "client.pong_timeout: must be positive and shorter than client.ping_interval"
                    .into(),
            ));
        }
        if c.max_channel_length == 0 {
            return Err(ConfigError(
                "client.max_channel_length: must be positive".into(),
            ));
        }
        if self.history.max_page == 0 {
            return Err(ConfigError("history.max_page: must be positive".into()));
        }
        let m = &self.media;
        if m.max_participants == 0 {
            return Err(ConfigError(
                "media.max_participants: must be positive".into(),
            ));
        }
        if m.ring_timeout.is_zero() {
            return Err(ConfigError("media.ring_timeout: must be positive".into()));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate()
                .map_err(|e| ConfigError(format!("webhooks[{i}].{e}")))?;
        }
        switchboard_auth::Verifier::new(&self.token)
            .map_err(|e| ConfigError(format!("token.{e}")))?;
        Ok(())
    }

    /// The gateway's view of this configuration.
    pub fn gateway(&self) -> GatewayConfig {
        let c = &self.client;
        GatewayConfig {
            max_frame_bytes: c.max_frame_bytes,
            max_publication_bytes: c.max_publication_bytes,
            max_channels_per_connection: c.max_channels_per_connection,
            max_channel_length: c.max_channel_length,
            max_commands_per_frame: c.max_commands_per_frame,
            ping_interval: c.ping_interval,
            pong_timeout: c.pong_timeout,
            connect_timeout: c.connect_timeout,
            expired_close_delay: c.expired_close_delay,
            send_queue_max_bytes: c.send_queue_max_bytes,
            send_queue_max_messages: c.send_queue_max_messages,
            commands_per_second: c.commands_per_second,
            commands_burst: c.commands_burst,
            connections_per_second_per_ip: c.connections_per_second_per_ip,
            connections_burst_per_ip: c.connections_burst_per_ip,
            allow_anonymous: c.allow_anonymous,
            presence_ttl: c.presence_ttl,
            history_max_limit: self.history.max_page,
            node_name: self.node.name.clone(),
            ..GatewayConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            dev: false,
            file: Some(("test.toml".into(), file.into())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: vec![],
        })
    }

    #[test]
    fn dev_defaults() {
        let c = Config::load(&Sources {
            dev: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.api.all_keys(), vec![DEV_API_KEY]);
        assert_eq!(c.token.hmac_secret.as_deref(), Some(DEV_TOKEN_SECRET));
        assert_eq!(c.channel.defaults.history_size, 1000);
        assert!(c.channel.allow_unknown_namespaces);
        assert!(c.http.addr.ip().is_loopback());
    }

    #[test]
    fn file_and_env_override() {
        let c = load(
            "[http]\naddr = \"127.0.0.1:9000\"\n[channel.namespaces.chat]\nhistory_size = 10\nhistory_ttl = \"5m\"\n",
            &[("SWITCHBOARD_CLIENT_MAX_FRAME_BYTES", "2048"), ("SWITCHBOARD_CLIENT_MAX_PUBLICATION_BYTES", "1024"), ("SWITCHBOARD_API_KEY", "k1"), ("OTHER", "x")],
        )
        .unwrap();
        assert_eq!(c.http.addr.port(), 9000);
        assert_eq!(c.client.max_frame_bytes, 2048);
        assert_eq!(c.api.all_keys(), vec!["k1"]);
        assert_eq!(
            c.channel.namespaces["chat"].history_ttl,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn media_room_keys() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.media.default_mode, switchboard_core::room::RoomMode::Auto);
        assert_eq!(c.media.p2p_max_participants, 2);
        assert_eq!(c.media.empty_timeout, Duration::from_secs(300));
        assert_eq!(c.media.ring_timeout, Duration::from_secs(30));
        let c = load(
            "[media]\ndefault_mode = \"sfu\"\np2p_max_participants = 3\nempty_timeout = \"1m\"\nring_timeout = \"45s\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.media.default_mode, switchboard_core::room::RoomMode::Sfu);
        assert_eq!(c.media.p2p_max_participants, 3);
        assert_eq!(c.media.empty_timeout, Duration::from_secs(60));
        assert_eq!(c.media.ring_timeout, Duration::from_secs(45));
        let e = load("[media]\ndefault_mode = \"mesh\"\n", &[]).unwrap_err();
        assert!(e.0.contains("media.default_mode"), "{e}");
        let e = load("[media]\nring_timeout = \"0s\"\n", &[]).unwrap_err();
        assert!(e.0.contains("media.ring_timeout"), "{e}");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let e = load("[channel.namespaces.chat]\nhistroy_size = 10\n", &[]).unwrap_err();
        assert!(e.0.contains("channel.namespaces.chat"), "{e}");
        assert!(e.0.contains("histroy_size"), "{e}");
        let e = load("[client]\nping_interval = \"soon\"\n", &[]).unwrap_err();
        assert!(e.0.contains("client.ping_interval"), "{e}");
        let e = load("", &[("SWITCHBOARD_CLIENT_MAX_FRAM_BYTES", "1")]).unwrap_err();
        assert!(e.0.contains("max_fram_bytes"), "{e}");
        let e = load("[channel.defaults]\nforce_recovery = true\n", &[]).unwrap_err();
        assert!(e.0.contains("force_recovery"), "{e}");
        let e = load("[http]\naddr = \"nowhere\"\n", &[]).unwrap_err();
        assert!(e.0.contains("http.addr"), "{e}");
    }
}
