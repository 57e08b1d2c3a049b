//! `peer-fanout` and `peer-idle`: the fan-out and idle-connection scenarios
//! with one driver for Switchboard and the systems people would pick instead:
//! a plain `ws` broadcast server and socket.io 4 (Node servers under
//! `bench/peers/`) and NATS core (`nats-server`, through async-nats).
//!
//! Every system gets the same subscribers-per-channel layout, the same
//! payload (`{"seq":N,"ts":NANOS,"pad":"…"}`, [`payload`]), the same pacing
//! and the same accounting: latency is publish-creation time to receipt on the
//! subscriber's connection task, both on this process's monotonic clock, into
//! an HDR histogram; loss is counted per subscriber by sequence number. Only
//! the wire protocol differs:
//!
//! * `switchboard`: [`switchboard_client::Client`]s with a token (HS256,
//!   verified by the server), `subscribe`; publications through the server API
//!   (`POST /api/publish`) or WebSocket `publish` commands.
//! * `ws`: `ws://…/?channel=NAME` subscribes; the publisher connection sends
//!   text frames `NAME\nPAYLOAD` that the server broadcasts.
//! * `socketio`: engine.io v4 / socket.io v5 over WebSocket, spoken directly:
//!   `0{…}` open, `40` connect, `421["sub","NAME"]` (acknowledged by `431[]`),
//!   events `42["m",PAYLOAD]`, server pings `2` answered with `3`.
//! * `nats`: one async-nats client per subscriber, `SUB NAME`; the publisher
//!   is another client.
//!
//! Server CPU comes from `/proc/<pid>/stat` (user + system time) of the given
//! server processes (several for a cluster), RSS from `/proc/<pid>/status`.
//!
//! The fan-out may step its publish rate up (`--step-factor`) until the p99
//! passes `--p99-limit` or deliveries fall behind; the last step within the
//! limit is the saturation point, and a final step at half its rate gives the
//! latency there.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use switchboard_client::{
    Client, ClientOptions, Encoding, Event, EventHandler, SubscribeOptions, lean_ws_config,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{
    SeqTracker, human_kib, mint_tokens, nanos_since, parse_payload, payload, raise_nofile_limit,
    rss_kib,
};
use crate::fanout::{Latency, PublishVia, Publisher};

/// The system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Switchboard (centrifuge protocol, JSON).
    Switchboard,
    /// The plain `ws` broadcast server (`bench/peers/ws-server.js`).
    Ws,
    /// socket.io 4 (`bench/peers/socketio-server.js`).
    Socketio,
    /// NATS core.
    Nats,
}

/// Where and how to reach the system under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// The system.
    pub system: System,
    /// Endpoints for the subscribers, used round-robin (WebSocket URLs, or
    /// `nats://` URLs); the publisher uses the first.
    pub urls: Vec<String>,
    /// Switchboard: server API base URL.
    pub api: String,
    /// Switchboard: server API key.
    pub api_key: String,
    /// Switchboard: HMAC secret for connection tokens.
    pub secret: String,
    /// Switchboard: publish through the API or WebSocket connections.
    pub publish_via: PublishVia,
    /// Switchboard with `--publish-via ws`: publisher connections.
    pub publishers: usize,
    /// Server processes whose CPU and RSS are measured (summed).
    pub server_pids: Vec<u32>,
    /// Source addresses for WebSocket connections, round-robin.
    pub source_ips: Vec<IpAddr>,
    /// Connections opened at the same time.
    pub connect_concurrency: usize,
    /// Retries of a failed connection (with backoff).
    pub connect_retries: u32,
}

/// Settings of a peer fan-out run.
#[derive(Clone, Debug)]
pub struct PeerFanoutConfig {
    /// What to drive.
    pub target: Target,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Channels; subscriber `i` joins channel `i % channels`.
    pub channels: usize,
    /// Publications per second of the first step (over all channels).
    pub rate: f64,
    /// Rate multiplier between steps (1: a single step).
    pub step_factor: f64,
    /// Most steps before the half-rate step.
    pub max_steps: usize,
    /// Stepping stops after the first step whose p99 exceeds this.
    pub p99_limit: Duration,
    /// Publishing time per step.
    pub duration: Duration,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Most API publishes in flight (Switchboard).
    pub max_in_flight: usize,
    /// Longest wait for a step's last deliveries.
    pub drain: Duration,
    /// Channel name prefix.
    pub channel_prefix: String,
}

/// One publish step.
#[derive(Debug, Serialize)]
pub struct Step {
    /// Target publications per second.
    pub target_rate: f64,
    /// Achieved publications per second.
    pub publish_rate: f64,
    /// Publications sent (attempted).
    pub published: u64,
    /// Publishes that failed.
    pub publish_errors: u64,
    /// Deliveries expected for this step.
    pub expected: u64,
    /// Distinct deliveries received for this step (until the drain ended).
    pub delivered: u64,
    /// Deliveries per second over the publishing window.
    pub delivered_per_sec: f64,
    /// Whether every expected delivery arrived within the drain time.
    pub complete: bool,
    /// Latency of this step's deliveries, milliseconds.
    pub latency_ms: Latency,
    /// Server CPU seconds (user + system) from the step's start to its drain.
    pub server_cpu_secs: f64,
    /// Server CPU seconds per million deliveries.
    pub server_cpu_secs_per_million: f64,
    /// Deliveries per server CPU-second.
    pub delivered_per_server_cpu_sec: f64,
    /// This process's CPU seconds over the same window.
    pub bench_cpu_secs: f64,
    /// Wall seconds from the step's start to its drain.
    pub wall_secs: f64,
}

/// Results of a peer fan-out run.
#[derive(Debug, Serialize)]
pub struct PeerFanoutReport {
    /// `"peer-fanout"`.
    pub bench: &'static str,
    /// System under test.
    pub system: System,
    /// Server processes measured.
    pub server_processes: usize,
    /// Subscribers requested.
    pub subscribers: usize,
    /// Subscribers connected and subscribed.
    pub subscribers_connected: usize,
    /// Subscribers that failed.
    pub subscribers_failed: u64,
    /// Channels.
    pub channels: usize,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Seconds to connect and subscribe everyone.
    pub connect_secs: f64,
    /// Connections (with subscribe) per second.
    pub connect_rate: f64,
    /// Server RSS growth per subscriber, KiB.
    pub server_rss_per_conn_kib: Option<f64>,
    /// The steps, in order (the half-rate step is not among them).
    pub steps: Vec<Step>,
    /// Index in `steps` of the last step within the p99 limit and complete.
    pub saturation_step: Option<usize>,
    /// The step at half the saturation rate (stepped runs).
    pub half_step: Option<Step>,
    /// Sequence numbers never received, over the whole run and all
    /// subscribers (includes failed publishes).
    pub missing: u64,
    /// Sequence numbers received more than once.
    pub duplicates: u64,
    /// Subscriber connections that ended during the run.
    pub disconnects: u64,
}

/// Settings of a peer idle run.
#[derive(Clone, Debug)]
pub struct PeerIdleConfig {
    /// What to drive.
    pub target: Target,
    /// Connections to open.
    pub connections: usize,
    /// How long to hold them.
    pub hold: Duration,
}

/// Results of a peer idle run.
#[derive(Debug, Serialize)]
pub struct PeerIdleReport {
    /// `"peer-idle"`.
    pub bench: &'static str,
    /// System under test.
    pub system: System,
    /// Connections requested.
    pub connections: usize,
    /// Connections established.
    pub connected: usize,
    /// Connections that failed after retries.
    pub failed: u64,
    /// Seconds to establish all connections.
    pub connect_secs: f64,
    /// Connections per second.
    pub connect_rate: f64,
    /// Server CPU seconds spent while connecting.
    pub server_connect_cpu_secs: f64,
    /// Connections per server CPU-second.
    pub connects_per_server_cpu_sec: f64,
    /// Connections still open after the hold.
    pub alive_after_hold: usize,
    /// Server RSS before connecting, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS at the end of the hold, KiB.
    pub server_rss_connected_kib: Option<u64>,
    /// Server RSS growth per connection, KiB.
    pub server_rss_per_conn_kib: Option<f64>,
}

const SHARDS: usize = 16;

/// Counters shared by the subscriber connections.
struct Stats {
    latency: Vec<Mutex<Histogram<u64>>>,
    delivered: AtomicU64,
    disconnects: AtomicU64,
    stopping: AtomicBool,
    start: Instant,
}

struct Sub {
    tracker: Mutex<SeqTracker>,
    shard: usize,
}

impl Stats {
    fn new(start: Instant) -> anyhow::Result<Stats> {
        Ok(Stats {
            latency: (0..SHARDS)
                .map(|_| Histogram::new_with_bounds(1, 600_000_000, 3).map(Mutex::new))
                .collect::<Result<_, _>>()
                .context("histogram")?,
            delivered: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            start,
        })
    }

    /// Accounts one received payload.
    fn record(&self, sub: &Sub, data: &[u8]) {
        let now = nanos_since(self.start);
        let Some((seq, ts)) = parse_payload(data) else {
            return;
        };
        let fresh = sub.tracker.lock().is_ok_and(|mut t| {
            let before = t.received;
            t.record(seq);
            t.received > before
        });
        if fresh {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut h) = self.latency[sub.shard].lock() {
            h.saturating_record((now.saturating_sub(ts) / 1000).max(1));
        }
    }

    fn ended(&self) {
        if !self.stopping.load(Ordering::Relaxed) {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reset_latency(&self) {
        for shard in &self.latency {
            if let Ok(mut h) = shard.lock() {
                h.reset();
            }
        }
    }

    fn latency(&self) -> Latency {
        let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        for shard in &self.latency {
            if let Ok(h) = shard.lock() {
                let _ = all.add(&*h);
            }
        }
        Latency::from_histogram(&all)
    }
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat` (assumes
/// the usual 100 clock ticks per second).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn servers_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_secs(&p.to_string())).sum()
}

fn servers_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_kib(*p)).sum()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// TCP (bound to `local` when given) + WebSocket handshake, small buffers.
async fn dial(url: &str, local: Option<IpAddr>) -> anyhow::Result<Ws> {
    let request = url.into_client_request().context("WebSocket URL")?;
    let host = request.uri().host().context("URL host")?.to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .context("no address")?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(lean_ws_config()))
            .await?;
    Ok(ws)
}

/// Reads text frames until one satisfies `done`, answering engine.io pings.
async fn sio_until(ws: &mut Ws, done: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let wait = async {
        while let Some(msg) = ws.next().await {
            if let Message::Text(t) = msg? {
                if t.as_str() == "2" {
                    ws.send(Message::text("3")).await?;
                } else if done(t.as_str()) {
                    return Ok(());
                }
            }
        }
        bail!("connection closed during the socket.io handshake")
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .context("socket.io handshake timed out")?
}

/// socket.io: engine.io open, namespace connect, and optionally `sub` (acked).
async fn sio_connect(
    url: &str,
    local: Option<IpAddr>,
    channel: Option<&str>,
) -> anyhow::Result<Ws> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.trim_end_matches('/')
    );
    let mut ws = dial(&url, local).await?;
    sio_until(&mut ws, |t| t.starts_with('0')).await?;
    ws.send(Message::text("40")).await?;
    sio_until(&mut ws, |t| t.starts_with("40")).await?;
    if let Some(ch) = channel {
        let frame = format!("421[\"sub\",{}]", serde_json::Value::from(ch));
        ws.send(Message::text(frame)).await?;
        sio_until(&mut ws, |t| t.starts_with("431")).await?;
    }
    Ok(ws)
}

/// The JSON object inside a socket.io event frame `42["m",{…}]`.
fn sio_payload(frame: &str) -> Option<&str> {
    let body = frame.strip_prefix("42")?;
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    (end >= start).then(|| &body[start..=end])
}

/// A live connection kept until the end of the run.
enum Conn {
    Switchboard(Client),
    Task(JoinHandle<()>),
    Nats(async_nats::Client, Option<JoinHandle<()>>),
}

impl Conn {
    async fn close(self) {
        match self {
            Conn::Switchboard(c) => c.close().await,
            Conn::Task(t) => t.abort(),
            Conn::Nats(c, t) => {
                if let Some(t) = t {
                    t.abort();
                }
                drop(c);
            }
        }
    }

    fn alive(&self) -> bool {
        match self {
            Conn::Switchboard(c) => !c.is_closed(),
            Conn::Task(t) => !t.is_finished(),
            Conn::Nats(c, _) => c.connection_state() == async_nats::connection::State::Connected,
        }
    }
}

/// Reads a subscriber WebSocket until it ends.
fn spawn_ws_reader(
    mut ws: Ws,
    sio: bool,
    sub: Option<Arc<Sub>>,
    stats: Arc<Stats>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let t = t.as_str();
                    if sio {
                        if t == "2" {
                            if ws.send(Message::text("3")).await.is_err() {
                                break;
                            }
                        } else if let (Some(p), Some(sub)) = (sio_payload(t), &sub) {
                            stats.record(sub, p.as_bytes());
                        }
                    } else if let Some(sub) = &sub {
                        stats.record(sub, t.as_bytes());
                    }
                }
                Ok(Message::Binary(b)) => {
                    if let Some(sub) = &sub {
                        stats.record(sub, &b);
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        stats.ended();
    })
}

async fn nats_client(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(4096)
        .client_capacity(1024)
        .connect(url)
        .await
        .context("NATS connect")
}

/// Opens connection `i`: subscribed to `channel` when given (and accounted
/// through `sub`), idle otherwise.
async fn open(
    target: &Target,
    i: usize,
    token: Option<String>,
    channel: Option<String>,
    sub: Option<Arc<Sub>>,
    stats: Arc<Stats>,
) -> anyhow::Result<Conn> {
    let url = &target.urls[i % target.urls.len()];
    let local =
        (!target.source_ips.is_empty()).then(|| target.source_ips[i % target.source_ips.len()]);
    match target.system {
        System::Switchboard => {
            let handler = sub.clone().map(|sub| {
                let stats = stats.clone();
                EventHandler::new(move |event| match event {
                    Event::Publication { publication, .. } => stats.record(&sub, &publication.data),
                    Event::Disconnected { .. } => stats.ended(),
                    _ => {}
                })
            });
            let options = ClientOptions {
                token: token.unwrap_or_default(),
                encoding: Encoding::Json,
                events_capacity: 8,
                event_handler: handler,
                local_addr: local,
                ..ClientOptions::default()
            };
            let (client, _events) = Client::connect(url, options).await?;
            if let Some(ch) = channel {
                client.subscribe(&ch, SubscribeOptions::default()).await?;
            }
            Ok(Conn::Switchboard(client))
        }
        System::Ws => {
            let url = match &channel {
                Some(ch) => format!("{url}/?channel={ch}"),
                None => format!("{url}/"),
            };
            let ws = dial(&url, local).await?;
            Ok(Conn::Task(spawn_ws_reader(ws, false, sub, stats)))
        }
        System::Socketio => {
            let ws = sio_connect(url, local, channel.as_deref()).await?;
            Ok(Conn::Task(spawn_ws_reader(ws, true, sub, stats)))
        }
        System::Nats => {
            let client = nats_client(url).await?;
            let reader = match channel {
                Some(ch) => {
                    let mut s = client.subscribe(ch).await?;
                    // SUB is in the server's hands once a round trip is done.
                    client.flush().await?;
                    Some(tokio::spawn(async move {
                        while let Some(m) = s.next().await {
                            if let Some(sub) = &sub {
                                stats.record(sub, &m.payload);
                            }
                        }
                        stats.ended();
                    }))
                }
                None => None,
            };
            Ok(Conn::Nats(client, reader))
        }
    }
}

/// Opens `n` connections with bounded concurrency and retries; returns them
/// by index, the wall time and the failures.
async fn open_many(
    target: &Target,
    n: usize,
    channel_of: impl Fn(usize) -> Option<String>,
    subs: &[Arc<Sub>],
    stats: &Arc<Stats>,
) -> anyhow::Result<(Vec<Option<Conn>>, Duration, u64)> {
    let tokens = match target.system {
        System::Switchboard => Some(mint_tokens(&target.secret, "bench-peer-", n)?),
        _ => None,
    };
    let gate = Arc::new(Semaphore::new(target.connect_concurrency.max(1)));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let target = target.clone();
        let token = tokens.as_ref().map(|t| t[i].clone());
        let channel = channel_of(i);
        let sub = subs.get(i).cloned();
        let stats = stats.clone();
        let first_error = first_error.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut backoff = Duration::from_millis(50);
            for attempt in 0..=target.connect_retries {
                match open(
                    &target,
                    i,
                    token.clone(),
                    channel.clone(),
                    sub.clone(),
                    stats.clone(),
                )
                .await
                {
                    Ok(conn) => return (i, Some(conn)),
                    Err(e) => {
                        if attempt == target.connect_retries
                            && let Ok(mut f) = first_error.lock()
                        {
                            f.get_or_insert(format!("{e:#}"));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            (i, None)
        });
    }
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, conn)) = joined {
            conns[i] = conn;
        }
    }
    let elapsed = start.elapsed();
    let failed = conns.iter().filter(|c| c.is_none()).count() as u64;
    if let Some(e) = first_error.lock().ok().and_then(|mut f| f.take()) {
        eprintln!("  {failed} connections failed; first error: {e}");
    }
    Ok((conns, elapsed, failed))
}

/// The publisher of a peer run.
enum PeerPublisher {
    Switchboard(Publisher),
    /// Frames for a WebSocket writer task (ws and socket.io).
    Frames(mpsc::UnboundedSender<Message>, JoinHandle<()>),
    Nats(async_nats::Client),
}

/// Writes queued frames in batches, answering socket.io pings meanwhile.
fn spawn_writer(mut ws: Ws, mut rx: mpsc::UnboundedReceiver<Message>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    if ws.feed(msg).await.is_err() {
                        break;
                    }
                    let mut batch = 0;
                    while batch < 256 {
                        match rx.try_recv() {
                            Ok(m) => {
                                if ws.feed(m).await.is_err() {
                                    return;
                                }
                                batch += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    if ws.flush().await.is_err() {
                        break;
                    }
                }
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                        if ws.send(Message::text("3")).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        let _ = ws.close(None).await;
    })
}

async fn publisher(target: &Target, max_in_flight: usize) -> anyhow::Result<PeerPublisher> {
    let url = &target.urls[0];
    Ok(match target.system {
        System::Switchboard => PeerPublisher::Switchboard(match target.publish_via {
            PublishVia::Api => Publisher::Api {
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(max_in_flight)
                    .build()
                    .context("HTTP client")?,
                url: format!("{}/api/publish", target.api.trim_end_matches('/')),
                key: target.api_key.clone(),
            },
            PublishVia::Ws => {
                let mut pubs = Vec::new();
                for token in mint_tokens(&target.secret, "bench-pub-", target.publishers.max(1))? {
                    let (client, _events) =
                        Client::connect(url, ClientOptions::with_token(token)).await?;
                    pubs.push(client);
                }
                Publisher::Ws(Arc::new(pubs))
            }
        }),
        System::Ws => {
            let ws = dial(&format!("{url}/"), None).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            PeerPublisher::Frames(tx, spawn_writer(ws, rx))
        }
        System::Socketio => {
            let ws = sio_connect(url, None, None).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            PeerPublisher::Frames(tx, spawn_writer(ws, rx))
        }
        System::Nats => PeerPublisher::Nats(nats_client(url).await?),
    })
}

/// Per-run publishing state.
struct Publishing {
    publisher: PeerPublisher,
    system: System,
    channels: Vec<String>,
    next_seq: Vec<u64>,
    failed: Arc<Vec<AtomicU64>>,
    in_flight: Arc<Semaphore>,
    payload_bytes: usize,
    start: Instant,
    sent: u64,
}

impl Publishing {
    /// Sends publication number `self.sent`.
    async fn send_one(&mut self) -> anyhow::Result<()> {
        let channel = (self.sent % self.channels.len() as u64) as usize;
        let seq = self.next_seq[channel];
        self.next_seq[channel] += 1;
        let n = self.sent;
        self.sent += 1;
        let name = &self.channels[channel];
        match &self.publisher {
            PeerPublisher::Switchboard(p) => {
                let permit = self.in_flight.clone().acquire_owned().await?;
                let p = p.clone();
                let name = name.clone();
                let failed = self.failed.clone();
                let (start, size) = (self.start, self.payload_bytes);
                tokio::spawn(async move {
                    let _permit = permit;
                    let data = payload(seq, nanos_since(start), size);
                    if p.publish(n, &name, data).await.is_err() {
                        failed[channel].fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            PeerPublisher::Frames(tx, _) => {
                let data = payload(seq, nanos_since(self.start), self.payload_bytes);
                let frame = match self.system {
                    System::Socketio => {
                        format!(
                            "42[\"pub\",{},{data}]",
                            serde_json::Value::from(name.as_str())
                        )
                    }
                    _ => format!("{name}\n{data}"),
                };
                if tx.send(Message::text(frame)).is_err() {
                    self.failed[channel].fetch_add(1, Ordering::Relaxed);
                }
            }
            PeerPublisher::Nats(client) => {
                let data = payload(seq, nanos_since(self.start), self.payload_bytes);
                if client.publish(name.clone(), data.into()).await.is_err() {
                    self.failed[channel].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Publishes at `rate` for `duration`; returns (sent, seconds).
    async fn phase(
        &mut self,
        rate: f64,
        duration: Duration,
        max_in_flight: usize,
    ) -> anyhow::Result<(u64, f64)> {
        let first = self.sent;
        let begin = Instant::now();
        let tick = Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.01));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let elapsed = begin.elapsed();
            if elapsed >= duration {
                break;
            }
            let due = first + (elapsed.as_secs_f64() * rate) as u64 + 1;
            while self.sent < due {
                self.send_one().await?;
            }
            if let PeerPublisher::Nats(c) = &self.publisher {
                let _ = c.flush().await;
            }
        }
        // Wait for the API publishes still in flight.
        if let PeerPublisher::Switchboard(_) = self.publisher {
            let all = self
                .in_flight
                .acquire_many(max_in_flight.max(1) as u32)
                .await?;
            drop(all);
        }
        Ok((self.sent - first, begin.elapsed().as_secs_f64()))
    }

    fn failed_total(&self) -> u64 {
        self.failed.iter().map(|f| f.load(Ordering::Relaxed)).sum()
    }
}

/// Runs the peer fan-out benchmark.
pub async fn run_fanout(cfg: PeerFanoutConfig) -> anyhow::Result<PeerFanoutReport> {
    if cfg.subscribers == 0 || cfg.channels == 0 || cfg.rate <= 0.0 {
        bail!("--subscribers, --channels and --rate must be positive");
    }
    raise_nofile_limit();
    let target = &cfg.target;
    let start = Instant::now();
    let stats = Arc::new(Stats::new(start)?);
    let channels: Vec<String> = (0..cfg.channels)
        .map(|i| format!("{}{i}", cfg.channel_prefix))
        .collect();
    let subs: Vec<Arc<Sub>> = (0..cfg.subscribers)
        .map(|i| {
            Arc::new(Sub {
                tracker: Mutex::new(SeqTracker::default()),
                shard: i % SHARDS,
            })
        })
        .collect();
    let rss_before = servers_rss(&target.server_pids);
    eprintln!(
        "{:?}: connecting {} subscribers over {} channel(s)…",
        target.system, cfg.subscribers, cfg.channels
    );
    let names = channels.clone();
    let (conns, elapsed, failed) = open_many(
        target,
        cfg.subscribers,
        |i| Some(names[i % names.len()].clone()),
        &subs,
        &stats,
    )
    .await?;
    let connected = conns.iter().filter(|c| c.is_some()).count();
    if connected == 0 {
        bail!("no subscriber could connect");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = servers_rss(&target.server_pids);
    let mut subs_per_channel = vec![0u64; cfg.channels];
    for (i, c) in conns.iter().enumerate() {
        if c.is_some() {
            subs_per_channel[i % cfg.channels] += 1;
        }
    }

    let mut publishing = Publishing {
        publisher: publisher(target, cfg.max_in_flight).await?,
        system: target.system,
        channels: channels.clone(),
        next_seq: vec![0; cfg.channels],
        failed: Arc::new((0..cfg.channels).map(|_| AtomicU64::new(0)).collect()),
        in_flight: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
        payload_bytes: cfg.payload_bytes,
        start,
        sent: 0,
    };

    let limit_ms = cfg.p99_limit.as_secs_f64() * 1000.0;
    let mut steps = Vec::new();
    let mut saturation_step = None;
    let mut rate = cfg.rate;
    let stepped = cfg.step_factor > 1.0;
    let max_steps = if stepped { cfg.max_steps.max(1) } else { 1 };
    for _ in 0..max_steps {
        let step = run_step(&cfg, &mut publishing, &stats, &subs_per_channel, rate).await?;
        eprintln!(
            "  rate {:>8.0}/s: delivered {:>9.0}/s, p50 {:.2} ms, p99 {:.2} ms, {:.2} CPU-s/M{}",
            step.target_rate,
            step.delivered_per_sec,
            step.latency_ms.p50,
            step.latency_ms.p99,
            step.server_cpu_secs_per_million,
            if step.complete { "" } else { ", incomplete" }
        );
        let ok = step.complete && step.latency_ms.p99 <= limit_ms;
        steps.push(step);
        if !ok {
            break;
        }
        saturation_step = Some(steps.len() - 1);
        rate *= cfg.step_factor;
    }
    let half_step = match (stepped, saturation_step) {
        (true, Some(s)) => {
            quiesce(&stats, cfg.drain * 3).await;
            let step = run_step(
                &cfg,
                &mut publishing,
                &stats,
                &subs_per_channel,
                steps[s].target_rate / 2.0,
            )
            .await?;
            eprintln!(
                "  half of saturation, rate {:.0}/s: p50 {:.2} ms, p99 {:.2} ms",
                step.target_rate, step.latency_ms.p50, step.latency_ms.p99
            );
            Some(step)
        }
        _ => None,
    };

    stats.stopping.store(true, Ordering::Relaxed);
    let mut missing = 0;
    let mut duplicates = 0;
    for (i, c) in conns.iter().enumerate() {
        if c.is_none() {
            continue;
        }
        if let Ok(mut t) = subs[i].tracker.lock() {
            t.finish(publishing.next_seq[i % cfg.channels]);
            missing += t.missing;
            duplicates += t.duplicates;
        }
    }
    let disconnects = stats.disconnects.load(Ordering::Relaxed);
    futures_util::future::join_all(conns.into_iter().flatten().map(Conn::close)).await;
    if let PeerPublisher::Frames(tx, writer) = publishing.publisher {
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }

    Ok(PeerFanoutReport {
        bench: "peer-fanout",
        system: target.system,
        server_processes: target.server_pids.len(),
        subscribers: cfg.subscribers,
        subscribers_connected: connected,
        subscribers_failed: failed,
        channels: cfg.channels,
        payload_bytes: cfg.payload_bytes,
        connect_secs: elapsed.as_secs_f64(),
        connect_rate: connected as f64 / elapsed.as_secs_f64().max(1e-9),
        server_rss_per_conn_kib: match (rss_before, rss_connected) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / connected as f64),
            _ => None,
        },
        steps,
        saturation_step,
        half_step,
        missing,
        duplicates,
        disconnects,
    })
}

/// Waits until deliveries stop arriving for a second (bounded).
async fn quiesce(stats: &Stats, max: Duration) {
    let deadline = Instant::now() + max;
    let mut last = stats.delivered.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stats.delivered.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

async fn run_step(
    cfg: &PeerFanoutConfig,
    publishing: &mut Publishing,
    stats: &Stats,
    subs_per_channel: &[u64],
    rate: f64,
) -> anyhow::Result<Step> {
    let pids = &cfg.target.server_pids;
    let seq_before = publishing.next_seq.clone();
    let failed_before = publishing.failed_total();
    let delivered_before = stats.delivered.load(Ordering::Relaxed);
    stats.reset_latency();
    let cpu_before = servers_cpu(pids);
    let bench_before = cpu_secs("self").unwrap_or(0.0);
    let begin = Instant::now();
    let (sent, secs) = publishing
        .phase(rate, cfg.duration, cfg.max_in_flight)
        .await?;
    let errors = publishing.failed_total() - failed_before;
    // Failed publishes are not attributed to channels here: the expectation
    // assumes all succeeded, minus failures times the average fan-out.
    let mut expected: u64 = (0..cfg.channels)
        .map(|c| (publishing.next_seq[c] - seq_before[c]) * subs_per_channel[c])
        .sum();
    let avg_fanout = subs_per_channel.iter().sum::<u64>() / cfg.channels as u64;
    expected = expected.saturating_sub(errors * avg_fanout);
    let deadline = Instant::now() + cfg.drain;
    while stats.delivered.load(Ordering::Relaxed) - delivered_before < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = begin.elapsed().as_secs_f64();
    let delivered = stats.delivered.load(Ordering::Relaxed) - delivered_before;
    let cpu = servers_cpu(pids) - cpu_before;
    let bench_cpu = cpu_secs("self").unwrap_or(0.0) - bench_before;
    Ok(Step {
        target_rate: rate,
        publish_rate: sent as f64 / secs.max(1e-9),
        published: sent,
        publish_errors: errors,
        expected,
        delivered,
        delivered_per_sec: delivered.min(expected) as f64 / secs.max(1e-9),
        complete: delivered >= expected && errors == 0,
        latency_ms: stats.latency(),
        server_cpu_secs: cpu,
        server_cpu_secs_per_million: if delivered > 0 {
            cpu / delivered as f64 * 1e6
        } else {
            0.0
        },
        delivered_per_server_cpu_sec: if cpu > 0.0 {
            delivered as f64 / cpu
        } else {
            0.0
        },
        bench_cpu_secs: bench_cpu,
        wall_secs: wall,
    })
}

/// Runs the peer idle-connections benchmark.
pub async fn run_idle(cfg: PeerIdleConfig) -> anyhow::Result<PeerIdleReport> {
    if cfg.connections == 0 {
        bail!("--connections must be positive");
    }
    if let Some(limit) = raise_nofile_limit()
        && (limit as usize) < cfg.connections + 64
    {
        eprintln!(
            "warning: RLIMIT_NOFILE is {limit}, below {} connections",
            cfg.connections
        );
    }
    let target = &cfg.target;
    let stats = Arc::new(Stats::new(Instant::now())?);
    let rss_before = servers_rss(&target.server_pids);
    let cpu_before = servers_cpu(&target.server_pids);
    eprintln!(
        "{:?}: opening {} idle connections…",
        target.system, cfg.connections
    );
    let (conns, elapsed, failed) =
        open_many(target, cfg.connections, |_| None, &[], &stats).await?;
    let connect_cpu = servers_cpu(&target.server_pids) - cpu_before;
    let connected = conns.iter().filter(|c| c.is_some()).count();
    eprintln!(
        "  {connected} connected in {:.2} s; holding {:?}…",
        elapsed.as_secs_f64(),
        cfg.hold
    );
    tokio::time::sleep(cfg.hold).await;
    let rss_connected = servers_rss(&target.server_pids);
    let alive = conns.iter().flatten().filter(|c| c.alive()).count();
    stats.stopping.store(true, Ordering::Relaxed);
    futures_util::future::join_all(conns.into_iter().flatten().map(Conn::close)).await;
    Ok(PeerIdleReport {
        bench: "peer-idle",
        system: target.system,
        connections: cfg.connections,
        connected,
        failed,
        connect_secs: elapsed.as_secs_f64(),
        connect_rate: connected as f64 / elapsed.as_secs_f64().max(1e-9),
        server_connect_cpu_secs: connect_cpu,
        connects_per_server_cpu_sec: if connect_cpu > 0.0 {
            connected as f64 / connect_cpu
        } else {
            0.0
        },
        alive_after_hold: alive,
        server_rss_before_kib: rss_before,
        server_rss_connected_kib: rss_connected,
        server_rss_per_conn_kib: match (rss_before, rss_connected) {
            (Some(a), Some(b)) if connected > 0 => Some((b as f64 - a as f64) / connected as f64),
            _ => None,
        },
    })
}

impl PeerFanoutReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("system".into(), format!("{:?}", self.system).to_lowercase()),
            (
                "subscribers".into(),
                format!(
                    "{} connected of {} ({} failed) over {} channel(s), {:.0}/s",
                    self.subscribers_connected,
                    self.subscribers,
                    self.subscribers_failed,
                    self.channels,
                    self.connect_rate
                ),
            ),
        ];
        let mut step_row = |label: String, s: &Step| {
            rows.push((
                label,
                format!(
                    "{:.0} msg/s delivered{}, p50 {:.2} p99 {:.2} p99.9 {:.2} ms, {:.2} server CPU-s per million",
                    s.delivered_per_sec,
                    if s.complete { "" } else { " (incomplete)" },
                    s.latency_ms.p50,
                    s.latency_ms.p99,
                    s.latency_ms.p999,
                    s.server_cpu_secs_per_million
                ),
            ));
        };
        for s in &self.steps {
            step_row(format!("rate {:.0}/s", s.target_rate), s);
        }
        if let Some(s) = &self.half_step {
            step_row(format!("half of saturation ({:.0}/s)", s.target_rate), s);
        }
        rows.push((
            "saturation".into(),
            match self.saturation_step {
                Some(i) => format!(
                    "{:.0} publications/s, {:.0} deliveries/s",
                    self.steps[i].target_rate, self.steps[i].delivered_per_sec
                ),
                None => "first step already over the limit".into(),
            },
        ));
        rows.push((
            "missing / duplicates / disconnects".into(),
            format!(
                "{} / {} / {}",
                self.missing, self.duplicates, self.disconnects
            ),
        ));
        if let Some(r) = self.server_rss_per_conn_kib {
            rows.push(("server RSS per subscriber".into(), human_kib(r)));
        }
        let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        crate::table(&rows)
    }
}

impl PeerIdleReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("system", format!("{:?}", self.system).to_lowercase()),
            (
                "connections",
                format!(
                    "{} of {} ({} failed), {} open after the hold",
                    self.connected, self.connections, self.failed, self.alive_after_hold
                ),
            ),
            (
                "connect",
                format!(
                    "{:.2} s ({:.0}/s; {:.0} per server CPU-second)",
                    self.connect_secs, self.connect_rate, self.connects_per_server_cpu_sec
                ),
            ),
        ];
        if let Some(r) = self.server_rss_per_conn_kib {
            rows.push(("server RSS per connection", human_kib(r)));
        }
        crate::table(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketio_event_payload() {
        let p = payload(7, 99, 64);
        let frame = format!("42[\"m\",{p}]");
        assert_eq!(sio_payload(&frame), Some(p.as_str()));
        assert_eq!(sio_payload("40{\"sid\":\"x\"}"), None);
        assert_eq!(sio_payload("2"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_secs("self").is_some_and(|s| s >= 0.0));
    }
}
