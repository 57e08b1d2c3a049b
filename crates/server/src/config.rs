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
    /// Cluster mode: the bus and store engines, this node's roles.
    pub cluster: ClusterConfig,
}

/// What a node runs (`cluster.roles`, `--roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every role below.
    All,
    /// Client connections (`/connection/*` transports).
    Gateway,
    /// The SFU and call signaling (`rtc.*`, room API methods).
    Media,
    /// The server API (`/api/*`).
    Api,
    /// The OAuth authorization server, the web app and its sign-in pages.
    Auth,
}

impl Role {
    /// The roles `all` stands for.
    pub const EVERY: [Role; 4] = [Role::Gateway, Role::Media, Role::Api, Role::Auth];

    /// The role's name in configuration and in the node registry.
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Media => "media",
            Role::Api => "api",
            Role::Auth => "auth",
        }
    }
}

/// The node-to-node bus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process: a single node (embedded mode).
    #[default]
    Memory,
    /// NATS (`[cluster.nats]`), with the node registry on JetStream KV.
    Nats,
}

/// The store of publications, events and auth state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in `node.data_dir` (one node).
    #[default]
    Sqlite,
    /// PostgreSQL (`[cluster.postgres]`), shared by every node.
    Postgres,
}

/// Cluster mode: `bus = "nats"` and `store = "postgres"` let several nodes
/// serve one deployment (see docs/CLUSTER.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `memory` (one node) or `nats`.
    pub bus: BusKind,
    /// `sqlite` (one node) or `postgres`.
    pub store: StoreKind,
    /// What this node runs: any of `gateway`, `media`, `api`, `auth`, or `all`.
    pub roles: Vec<Role>,
    /// Unique id of this node in the cluster (default: `node.name` and a
    /// random suffix, new at every start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Address other nodes and tools report for this node (default:
    /// `http://<bound http address>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// NATS settings (used when `bus = "nats"`).
    pub nats: NatsSection,
    /// PostgreSQL settings (used when `store = "postgres"`).
    pub postgres: PostgresSection,
    /// Circuit breakers around the store and the bus.
    pub breaker: BreakerSection,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            bus: BusKind::Memory,
            store: StoreKind::Sqlite,
            roles: vec![Role::All],
            node_id: None,
            advertise_url: None,
            nats: NatsSection::default(),
            postgres: PostgresSection::default(),
            breaker: BreakerSection::default(),
        }
    }
}

impl ClusterConfig {
    /// Whether this node runs `role` (`all` runs every role).
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::All)
    }

    /// The roles this node runs, `all` expanded, by name.
    pub fn role_names(&self) -> Vec<String> {
        Role::EVERY
            .iter()
            .filter(|r| self.has_role(**r))
            .map(|r| r.name().to_string())
            .collect()
    }
}

/// NATS connection settings (`[cluster.nats]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`).
    pub urls: Vec<String>,
    /// A `.creds` file (JWT and NKey seed, as issued by `nsc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// User name (with `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password (with `user`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Authentication token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Require TLS (also implied by `tls://` URLs).
    pub tls: bool,
    /// Extra root certificate (PEM) to trust, e.g. a private CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// First token of every subject and the prefix of the KV buckets, so
    /// several deployments can share one NATS account (`[A-Za-z0-9_-]`).
    pub subject_prefix: String,
    /// A node that stops heartbeating disappears from the registry after
    /// this long (heartbeats every third of it).
    #[serde(with = "serde_str")]
    pub registry_ttl: Duration,
    /// Timeout of node-to-node requests (presence, info).
    #[serde(with = "serde_str")]
    pub request_timeout: Duration,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            credentials: None,
            user: None,
            password: None,
            token: None,
            tls: false,
            tls_ca_file: None,
            subject_prefix: "sb".into(),
            registry_ttl: Duration::from_secs(15),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// PostgreSQL settings (`[cluster.postgres]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSection {
    /// `postgres://user:password@host:5432/database`.
    pub url: String,
    /// Connections in this node's pool.
    pub pool_size: u32,
    /// Schema holding the tables (created if missing; default: the
    /// server's `search_path`). `[a-z0-9_]+`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 10,
            schema: None,
        }
    }
}

/// Circuit breaker settings (`[cluster.breaker]`), used by the store's
/// breaker (every store call) and the bus's (publishes to NATS).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// Consecutive failures that open a breaker.
    pub failure_threshold: u32,
    /// A single failure whose call took at least this long opens it (the
    /// call waited for a timeout: the engine is unreachable).
    #[serde(with = "serde_str")]
    pub slow_failure: Duration,
    /// How long an open breaker fails calls fast before letting one probe
    /// through.
    #[serde(with = "serde_str")]
    pub cool_down: Duration,
}

impl Default for BreakerSection {
    fn default() -> Self {
        let d = switchboard_core::breaker::BreakerConfig::default();
        Self {
            failure_threshold: d.failure_threshold,
            slow_failure: Duration::from_millis(d.slow_failure_ms),
            cool_down: Duration::from_millis(d.cool_down_ms),
        }
    }
}

impl BreakerSection {
    /// The breaker's settings.
    pub fn config(&self) -> switchboard_core::breaker::BreakerConfig {
        switchboard_core::breaker::BreakerConfig {
            failure_threshold: self.failure_threshold,
            slow_failure_ms: self.slow_failure.as_millis() as u64,
            cool_down_ms: self.cool_down.as_millis() as u64,
        }
    }
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
    if section == "cluster" {
        for sub in ["nats", "postgres"] {
            if let Some(key) = rest.strip_prefix(sub).and_then(|r| r.strip_prefix('_')) {
                return Ok(vec!["cluster".into(), sub.into(), key.into()]);
            }
        }
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
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if c.roles.is_empty() {
            return Err(ConfigError(
                "cluster.roles: name at least one of gateway, media, api, auth, all".into(),
            ));
        }
        if c.node_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 128)
        {
            return Err(ConfigError(
                "cluster.node_id: must be 1 to 128 characters".into(),
            ));
        }
        if c.bus == BusKind::Nats {
            let n = &c.nats;
            if n.urls.is_empty() {
                return Err(ConfigError(
                    "cluster.nats.urls: at least one URL is required with cluster.bus = \"nats\""
                        .into(),
                ));
            }
            for u in &n.urls {
                let ok = ["nats://", "tls://", "ws://", "wss://"]
                    .iter()
                    .any(|s| u.starts_with(s) && u.len() > s.len());
                if !ok {
                    return Err(ConfigError(format!(
                        "cluster.nats.urls: {u:?} is not a nats://, tls://, ws:// or wss:// URL"
                    )));
                }
            }
            let methods = [
                n.credentials.is_some(),
                n.user.is_some() || n.password.is_some(),
                n.token.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if methods > 1 {
                return Err(ConfigError(
                    "cluster.nats: use one of credentials, user/password or token".into(),
                ));
            }
            if n.user.is_some() != n.password.is_some() {
                return Err(ConfigError(
                    "cluster.nats.password: user and password go together".into(),
                ));
            }
            if n.subject_prefix.is_empty()
                || !n
                    .subject_prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ConfigError(
                    "cluster.nats.subject_prefix: must be non-empty [A-Za-z0-9_-]".into(),
                ));
            }
            if n.registry_ttl < Duration::from_secs(1) {
                return Err(ConfigError(
                    "cluster.nats.registry_ttl: must be at least 1s".into(),
                ));
            }
            if n.request_timeout.is_zero() {
                return Err(ConfigError(
                    "cluster.nats.request_timeout: must be positive".into(),
                ));
            }
        }
        let b = &c.breaker;
        if b.failure_threshold == 0 {
            return Err(ConfigError(
                "cluster.breaker.failure_threshold: must be at least 1".into(),
            ));
        }
        if b.slow_failure < Duration::from_millis(1) {
            return Err(ConfigError(
                "cluster.breaker.slow_failure: must be at least 1ms".into(),
            ));
        }
        if b.cool_down < Duration::from_millis(1) || b.cool_down > Duration::from_secs(600) {
            return Err(ConfigError(
                "cluster.breaker.cool_down: must be between 1ms and 10m".into(),
            ));
        }
        if c.store == StoreKind::Postgres {
            let p = &c.postgres;
            if !(p.url.starts_with("postgres://") || p.url.starts_with("postgresql://")) {
                return Err(ConfigError(
                    "cluster.postgres.url: a postgres:// URL is required with cluster.store = \"postgres\""
                        .into(),
                ));
            }
            if p.pool_size < 2 {
                return Err(ConfigError(
                    "cluster.postgres.pool_size: must be at least 2 (one writer, one reader)"
                        .into(),
                ));
            }
            if let Some(s) = &p.schema
                && (s.is_empty()
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            {
                return Err(ConfigError(
                    "cluster.postgres.schema: must be non-empty [a-z0-9_]".into(),
                ));
            }
        }
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
    fn breaker_settings_parse_and_validate() {
        let c = load("", &[]).unwrap();
        assert_eq!(
            c.cluster.breaker.config(),
            switchboard_core::breaker::BreakerConfig::default()
        );
        let c = load(
            "[cluster.breaker]\nfailure_threshold = 1\nslow_failure = \"500ms\"\ncool_down = \"10m\"\n",
            &[],
        )
        .unwrap();
        let b = c.cluster.breaker.config();
        assert_eq!(
            (b.failure_threshold, b.slow_failure_ms, b.cool_down_ms),
            (1, 500, 600_000)
        );
        let err = |text: &str| load(text, &[]).unwrap_err().0;
        assert!(
            err("[cluster.breaker]\nfailure_threshold = 0\n")
                .starts_with("cluster.breaker.failure_threshold: must be at least 1"),
        );
        assert!(
            err("[cluster.breaker]\ncool_down = \"11m\"\n")
                .starts_with("cluster.breaker.cool_down")
        );
        assert!(
            err("[cluster.breaker]\nslow_failure = \"0s\"\n")
                .starts_with("cluster.breaker.slow_failure")
        );
        assert!(err("[cluster.breaker]\nopen_for = \"1s\"\n").contains("open_for"));
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

    #[test]
    fn cluster_section() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.cluster.bus, BusKind::Memory);
        assert_eq!(c.cluster.store, StoreKind::Sqlite);
        assert!(c.cluster.has_role(Role::Gateway) && c.cluster.has_role(Role::Media));
        let c = load(
            "[cluster]\nbus = \"nats\"\nstore = \"postgres\"\nroles = [\"gateway\", \"api\"]\n\
             [cluster.nats]\nurls = [\"nats://a:4222\", \"tls://b:4222\"]\nuser = \"sb\"\npassword = \"pw\"\n\
             subject_prefix = \"prod\"\ntls_ca_file = \"/etc/ca.pem\"\n\
             [cluster.postgres]\nurl = \"postgres://db/sb\"\npool_size = 4\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.cluster.bus, BusKind::Nats);
        assert_eq!(c.cluster.nats.urls.len(), 2);
        assert_eq!(c.cluster.postgres.pool_size, 4);
        assert_eq!(c.cluster.role_names(), vec!["gateway", "api"]);
        assert!(!c.cluster.has_role(Role::Media));
        let c = load(
            "",
            &[
                ("SWITCHBOARD_CLUSTER_ROLES", "[\"media\"]"),
                ("SWITCHBOARD_CLUSTER_NATS_SUBJECT_PREFIX", "p1"),
                ("SWITCHBOARD_CLUSTER_POSTGRES_POOL_SIZE", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.cluster.role_names(), vec!["media"]);
        assert_eq!(c.cluster.nats.subject_prefix, "p1");
        assert_eq!(c.cluster.postgres.pool_size, 3);
    }

    #[test]
    fn cluster_errors_name_the_key() {
        for (file, key) in [
            ("[cluster]\nbus = \"kafka\"\n", "cluster.bus"),
            ("[cluster]\nstore = \"mysql\"\n", "cluster.store"),
            (
                "[cluster]\nroles = [\"gateway\", \"cook\"]\n",
                "cluster.roles",
            ),
            ("[cluster]\nroles = []\n", "cluster.roles"),
            ("[cluster]\nstore = \"postgres\"\n", "cluster.postgres.url"),
            (
                "[cluster]\nstore = \"postgres\"\n[cluster.postgres]\nurl = \"postgres://x/y\"\npool_size = 1\n",
                "cluster.postgres.pool_size",
            ),
            (
                "[cluster]\nbus = \"nats\"\n[cluster.nats]\nurls = []\n",
                "cluster.nats.urls",
            ),
            (
                "[cluster]\nbus = \"nats\"\n[cluster.nats]\nurls = [\"http://x\"]\n",
                "cluster.nats.urls",
            ),
            (
                "[cluster]\nbus = \"nats\"\n[cluster.nats]\nuser = \"u\"\n",
                "cluster.nats.password",
            ),
            (
                "[cluster]\nbus = \"nats\"\n[cluster.nats]\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\"\n",
                "cluster.nats",
            ),
            (
                "[cluster]\nbus = \"nats\"\n[cluster.nats]\nsubject_prefix = \"a.b\"\n",
                "cluster.nats.subject_prefix",
            ),
            ("[cluster.nats]\nurl = \"nats://x\"\n", "cluster.nats"),
        ] {
            let e = load(file, &[]).unwrap_err();
            assert!(e.0.contains(key), "{file}: {e}");
        }
    }
}
