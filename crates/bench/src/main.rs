//! `switchboard-bench`: load generator for Switchboard (see the library docs).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchboard_bench::chaos::{self, ChaosConfig};
use switchboard_bench::common::{parse_duration, parse_encoding, parse_source_ips};
use switchboard_bench::fanout::{self, EventsVia, FanoutConfig, PublishVia};
use switchboard_bench::idle::{self, IdleConfig};
use switchboard_bench::peers::{self, PeerFanoutConfig, PeerIdleConfig, System, Target};
use switchboard_bench::sfu::{self, SfuConfig};
use switchboard_bench::storm::{self, StormConfig};
use switchboard_client::Encoding;

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Switchboard load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Subscribers × publish rate: delivery rate, end-to-end latency, loss.
    Fanout(FanoutArgs),
    /// Many idle connections: connect rate and server memory per connection.
    Idle(IdleArgs),
    /// WebRTC rooms through the SFU: packets forwarded per CPU-second,
    /// CPU and memory per subscriber, latency.
    Sfu(SfuArgs),
    /// Three cluster nodes on their own NATS + proxied PostgreSQL, load, random
    /// faults (node SIGKILL/SIGTERM, NATS restart, PostgreSQL cut): acknowledged,
    /// refused, delivered, lost, duplicated and late counts.
    Chaos(ChaosArgs),
    /// Fan-out with one driver for Switchboard and its peers (ws, socket.io,
    /// NATS): stepped publish rate, latency, server CPU per delivery, loss.
    PeerFanout(PeerFanoutArgs),
    /// Idle connections with one driver for Switchboard and its peers.
    PeerIdle(PeerIdleArgs),
    /// Reconnect storm: subscribers on durable channels drop at once and
    /// all reconnect with recovery; time until all recovered, server CPU.
    Storm(StormArgs),
}

#[derive(Args)]
struct PeerTargetArgs {
    /// System under test.
    #[arg(long, value_enum)]
    system: System,
    /// Endpoint(s), comma-separated, used round-robin by the subscribers
    /// (WebSocket base URL; for socket.io the server's base URL; for NATS a
    /// nats:// URL). Default: the system's usual local endpoint.
    #[arg(long)]
    url: Option<String>,
    /// Switchboard server API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    api: String,
    /// Switchboard server API key.
    #[arg(long, default_value = "dev-api-key", env = "SWITCHBOARD_BENCH_API_KEY")]
    api_key: String,
    /// Switchboard HMAC secret for connection tokens (HS256).
    #[arg(
        long,
        default_value = "dev-token-secret",
        env = "SWITCHBOARD_BENCH_SECRET"
    )]
    secret: String,
    /// Switchboard publish path.
    #[arg(long, value_enum, default_value = "api")]
    publish_via: PublishVia,
    /// Switchboard WebSocket publisher connections (with --publish-via ws).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Server process id(s), comma-separated: CPU time and RSS are summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Local source addresses for WebSocket connections (see `fanout`).
    #[arg(long, value_name = "IPS")]
    source_ips: Option<String>,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Retries (with backoff) of a failed connection.
    #[arg(long, default_value_t = 10)]
    connect_retries: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PeerFanoutArgs {
    #[command(flatten)]
    target: PeerTargetArgs,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Channels; subscriber i joins channel i % channels.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Publications per second (of the first step, over all channels).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Rate multiplier between steps; 1 runs a single step.
    #[arg(long, default_value_t = 1.0)]
    step_factor: f64,
    /// Most steps.
    #[arg(long, default_value_t = 8)]
    max_steps: usize,
    /// Stop stepping after the first step whose p99 exceeds this.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    p99_limit: Duration,
    /// Publishing time per step.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    payload_bytes: usize,
    /// Most Switchboard API publishes in flight.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Longest wait for a step's last deliveries.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    drain: Duration,
    /// Channel name prefix (a per-run suffix is added).
    #[arg(long, default_value = "bench")]
    channel_prefix: String,
}

#[derive(Args)]
struct PeerIdleArgs {
    #[command(flatten)]
    target: PeerTargetArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How long to hold them open.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    hold: Duration,
}

impl PeerTargetArgs {
    fn target(&self) -> anyhow::Result<Target> {
        let default = match self.system {
            System::Switchboard => "ws://127.0.0.1:8000/connection/websocket",
            System::Ws => "ws://127.0.0.1:9101",
            System::Socketio => "ws://127.0.0.1:9102",
            System::Nats => "nats://127.0.0.1:4222",
        };
        let urls = self
            .url
            .as_deref()
            .unwrap_or(default)
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect::<Vec<_>>();
        if urls.is_empty() {
            anyhow::bail!("--url is empty");
        }
        Ok(Target {
            system: self.system,
            urls,
            api: self.api.clone(),
            api_key: self.api_key.clone(),
            secret: self.secret.clone(),
            publish_via: self.publish_via,
            publishers: self.publishers,
            server_pids: self.server_pid.clone(),
            source_ips: source_ips(self.source_ips.as_deref())?,
            connect_concurrency: self.connect_concurrency,
            connect_retries: self.connect_retries,
        })
    }
}

#[derive(Args)]
struct ChaosArgs {
    /// The `switchboard` binary (default: next to this one).
    #[arg(long)]
    bin: Option<std::path::PathBuf>,
    /// The `nats-server` binary; the run starts its own on a free port.
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    nats_server: std::path::PathBuf,
    /// PostgreSQL URL, loopback (a fresh schema is created and dropped; the
    /// nodes reach it through the run's proxy).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// Length of the run (publishing and faults).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Subscriber connections, spread over the nodes.
    #[arg(long, default_value_t = 30)]
    subscribers: usize,
    /// Publications per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Fault kinds drawn at random (each once per shuffled round), comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "node-kill,node-term,nats-restart,pg-cut"
    )]
    faults: Vec<chaos::Fault>,
    /// Shortest pause between faults.
    #[arg(long, alias = "fault-min", default_value = "5s", value_parser = parse_duration)]
    kill_min: Duration,
    /// Longest pause between faults.
    #[arg(long, alias = "fault-max", default_value = "12s", value_parser = parse_duration)]
    kill_max: Duration,
    /// Shortest downtime of a killed node or NATS, or of a PostgreSQL cut.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    down_min: Duration,
    /// Longest downtime of a killed node or NATS, or of a PostgreSQL cut.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    down_max: Duration,
    /// Bounded wait at the end for subscribers to catch up.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    drain: Duration,
    /// Seed of the fault schedule (0: from the clock).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Common {
    /// WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// HMAC secret for connection tokens (HS256).
    #[arg(
        long,
        default_value = "dev-token-secret",
        env = "SWITCHBOARD_BENCH_SECRET"
    )]
    secret: String,
    /// Wire encoding.
    #[arg(long, default_value = "json", value_parser = parse_encoding)]
    encoding: Encoding,
    /// Server process id: report its VmRSS before and after connecting.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Local source addresses, used round-robin: a comma-separated list, items
    /// may be IPv4 ranges (127.0.0.1-127.0.0.20).
    #[arg(long, value_name = "IPS")]
    source_ips: Option<String>,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Retries (with backoff) of a connection that failed, e.g. rate limited.
    #[arg(long, default_value_t = 10)]
    connect_retries: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Server API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    api: String,
    /// Server API key.
    #[arg(long, default_value = "dev-api-key", env = "SWITCHBOARD_BENCH_API_KEY")]
    api_key: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Channels; subscriber i joins channel i % channels.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Publications per second (over all channels).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Payload size in bytes (JSON with seq, timestamp and padding).
    #[arg(long, default_value_t = 128)]
    payload_bytes: usize,
    /// Publish through the server API or WebSocket publisher connections.
    #[arg(long, value_enum, default_value = "api")]
    publish_via: PublishVia,
    /// How subscribers consume events: a callback on each connection task
    /// (leanest) or the client's event queue drained by a task per subscriber.
    #[arg(long, value_enum, default_value = "handler")]
    events_via: EventsVia,
    /// WebSocket publisher connections (with --publish-via ws); publishes are
    /// spread over them round-robin (the server rate-limits commands per
    /// connection).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Most publishes in flight at once.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// How long to wait for the last deliveries after publishing stops.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// Channel name prefix (a per-run suffix is added).
    #[arg(long, default_value = "bench")]
    channel_prefix: String,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How long to hold them open.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    hold: Duration,
}

#[derive(Args)]
struct StormArgs {
    #[command(flatten)]
    common: Common,
    /// Server API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    api: String,
    /// Server API key.
    #[arg(long, default_value = "dev-api-key", env = "SWITCHBOARD_BENCH_API_KEY")]
    api_key: String,
    /// Subscribers (one connection each).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Durable channels the subscribers are spread over.
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Publications per channel while the subscribers are away.
    #[arg(long, default_value_t = 10)]
    missed: u64,
    /// Channel name prefix (a namespace with history).
    #[arg(long, default_value = "storm")]
    channel_prefix: String,
}

#[derive(Args)]
struct SfuArgs {
    /// WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// HMAC secret for connection tokens (HS256).
    #[arg(
        long,
        default_value = "dev-token-secret",
        env = "SWITCHBOARD_BENCH_SECRET"
    )]
    secret: String,
    /// Server process id: its CPU time and RSS are measured.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Participants per room publishing audio + video (they receive too).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Receive-only participants per room.
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
    /// Publish video as three simulcast layers (q, h, f).
    #[arg(long)]
    simulcast: bool,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Top-layer video delta frame size in bytes (q is 1/6, h 4/9 of it).
    #[arg(long, default_value_t = 4000)]
    video_frame_bytes: usize,
    /// Time between everyone receiving media and the measurement.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Measurement window.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Room name prefix (a per-run suffix is added).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Fanout(a) => {
                let run_id = std::process::id();
                let cfg = FanoutConfig {
                    url: a.common.url,
                    api: a.api,
                    api_key: a.api_key,
                    secret: a.common.secret,
                    subscribers: a.subscribers,
                    channels: a.channels,
                    rate: a.rate,
                    duration: a.duration,
                    encoding: a.common.encoding,
                    payload_bytes: a.payload_bytes,
                    publish_via: a.publish_via,
                    events_via: a.events_via,
                    publishers: a.publishers,
                    max_in_flight: a.max_in_flight,
                    drain: a.drain,
                    channel_prefix: format!("{}-{run_id}-", a.channel_prefix),
                    server_pid: a.common.server_pid,
                    source_ips: source_ips(a.common.source_ips.as_deref())?,
                    connect_concurrency: a.common.connect_concurrency,
                    connect_retries: a.common.connect_retries,
                };
                let report = fanout::run(cfg).await?;
                if a.common.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", report.table());
                }
            }
            Command::Sfu(a) => {
                let cfg = SfuConfig {
                    url: a.url,
                    secret: a.secret,
                    rooms: a.rooms,
                    publishers: a.publishers,
                    subscribers: a.subscribers,
                    simulcast: a.simulcast,
                    fps: a.fps,
                    video_frame_bytes: a.video_frame_bytes,
                    warmup: a.warmup,
                    duration: a.duration,
                    server_pid: a.server_pid,
                    room_prefix: format!("{}-{}-", a.room_prefix, std::process::id()),
                };
                let report = sfu::run(cfg).await?;
                if a.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", report.table());
                }
            }
            Command::Chaos(a) => {
                let cfg = ChaosConfig {
                    bin: a.bin.unwrap_or_else(chaos::default_bin),
                    nats_server: a.nats_server,
                    postgres: a.postgres,
                    duration: a.duration,
                    subscribers: a.subscribers,
                    rate: a.rate,
                    faults: a.faults,
                    fault_every: (a.kill_min, a.kill_max),
                    down_for: (a.down_min, a.down_max),
                    drain: a.drain,
                    seed: a.seed,
                };
                let report = chaos::run(cfg).await?;
                if a.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", report.table());
                }
            }
            Command::PeerFanout(a) => {
                let cfg = PeerFanoutConfig {
                    target: a.target.target()?,
                    subscribers: a.subscribers,
                    channels: a.channels,
                    rate: a.rate,
                    step_factor: a.step_factor,
                    max_steps: a.max_steps,
                    p99_limit: a.p99_limit,
                    duration: a.duration,
                    payload_bytes: a.payload_bytes,
                    max_in_flight: a.max_in_flight,
                    drain: a.drain,
                    channel_prefix: format!("{}-{}-", a.channel_prefix, std::process::id()),
                };
                let report = peers::run_fanout(cfg).await?;
                if a.target.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", report.table());
                }
            }
            Command::PeerIdle(a) => {
                let cfg = PeerIdleConfig {
                    target: a.target.target()?,
                    connections: a.connections,
                    hold: a.hold,
                };
                let report = peers::run_idle(cfg).await?;
                if a.target.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", report.table());
                }
            }
            Command::Storm(a) => {
                let cfg = StormConfig {
                    url: a.common.url,
                    api: a.api,
                    api_key: a.api_key,
                    secret: a.common.secret,
                    clients: a.clients,
                    channels: a.channels,
                    missed: a.missed,
                    source_ips: source_ips(a.common.source_ips.as_deref())?,
                    server_pid: a.common.server_pid,
                    concurrency: a.common.connect_concurrency,
                    encoding: a.common.encoding,
                    prefix: a.channel_prefix,
                };
                let report = storm::run(cfg).await?;
                if a.common.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{}", report.human());
                }
            }
            Command::Idle(a) => {
                let cfg = IdleConfig {
                    url: a.common.url,
                    secret: a.common.secret,
                    connections: a.connections,
                    source_ips: source_ips(a.common.source_ips.as_deref())?,
                    server_pid: a.common.server_pid,
                    hold: a.hold,
                    encoding: a.common.encoding,
                    concurrency: a.common.connect_concurrency,
                    retries: a.common.connect_retries,
                };
                let report = idle::run(cfg).await?;
                if a.common.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", report.table());
                }
            }
        }
        Ok(())
    })
}

fn source_ips(s: Option<&str>) -> anyhow::Result<Vec<std::net::IpAddr>> {
    s.map(parse_source_ips)
        .transpose()
        .map(Option::unwrap_or_default)
}
