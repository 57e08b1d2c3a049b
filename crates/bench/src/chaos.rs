//! `chaos`: a bounded node-loss run against a real three-node cluster.
//!
//! Starts three `switchboard` processes on loopback sharing NATS and
//! PostgreSQL (a unique subject prefix and schema per run), subscribes
//! clients spread over the nodes to one durable channel, publishes a steady
//! stream through the server API of random live nodes, and meanwhile kills a
//! random node with SIGKILL at random intervals and restarts it after a random
//! pause. Subscribers behave like an SDK given every node's endpoint: when
//! their connection ends they try the next endpoint with backoff and jitter
//! and re-subscribe with recovery from their last offset and epoch.
//!
//! At the end (after restarting any dead node and a bounded drain) it reports,
//! for acknowledged publications (the server API answered with an offset):
//! how many deliveries were expected (acknowledged × subscribers), delivered
//! (distinct offsets received per subscriber), lost (expected − delivered),
//! duplicated (receipts of an offset the subscriber already had, before the
//! client's dedup) and late (first receipt more than 1 s after the publish
//! was sent, on this process's clock).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;
use switchboard_client::{Client, ClientOptions, Event, SubscribeOptions};

use crate::common::{mint_tokens, nanos_since, parse_payload, payload};

const API_KEY: &str = "chaos-api-key";
const SECRET: &str = "chaos-token-secret";
const CHANNEL: &str = "chaos:stream";
const NODES: usize = 3;

/// Parameters of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The `switchboard` binary.
    pub bin: PathBuf,
    /// NATS URL.
    pub nats: String,
    /// PostgreSQL URL.
    pub postgres: String,
    /// How long publishers publish and nodes get killed.
    pub duration: Duration,
    /// Subscriber connections (spread round-robin over the nodes).
    pub subscribers: usize,
    /// Publications per second (total).
    pub rate: u32,
    /// A kill happens every `kill_every.0..kill_every.1` (uniform).
    pub kill_every: (Duration, Duration),
    /// A killed node stays down `down_for.0..down_for.1` (uniform).
    pub down_for: (Duration, Duration),
    /// How long to wait at the end for subscribers to catch up.
    pub drain: Duration,
    /// Seed of the random choices (0: from the clock).
    pub seed: u64,
}

/// What a chaos run measured.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    /// Seed used (re-run with it to repeat the kill schedule).
    pub seed: u64,
    /// Publications the server API acknowledged with an offset.
    pub published_acknowledged: u64,
    /// Publish calls that failed (not acknowledged; may or may not exist).
    pub publish_failed: u64,
    /// Subscribers.
    pub subscribers: usize,
    /// Acknowledged × subscribers.
    pub expected_deliveries: u64,
    /// Distinct acknowledged offsets received, summed over subscribers.
    pub delivered: u64,
    /// Expected − delivered.
    pub lost: u64,
    /// Receipts of an offset the subscriber already had (before dedup).
    pub duplicated: u64,
    /// First receipts more than 1 s after the publish was sent.
    pub late: u64,
    /// Nodes killed with SIGKILL (each restarted).
    pub kills: u64,
    /// Subscriber reconnections.
    pub reconnects: u64,
    /// Re-subscriptions answered `recovered: false`.
    pub not_recovered: u64,
}

impl ChaosReport {
    /// The report as an aligned table.
    pub fn table(&self) -> String {
        crate::table(&[
            ("seed", self.seed.to_string()),
            (
                "published (acknowledged)",
                self.published_acknowledged.to_string(),
            ),
            ("publish calls failed", self.publish_failed.to_string()),
            ("subscribers", self.subscribers.to_string()),
            ("expected deliveries", self.expected_deliveries.to_string()),
            ("delivered", self.delivered.to_string()),
            ("lost", self.lost.to_string()),
            ("duplicated (before dedup)", self.duplicated.to_string()),
            ("late (> 1 s)", self.late.to_string()),
            ("kills (SIGKILL + restart)", self.kills.to_string()),
            ("subscriber reconnects", self.reconnects.to_string()),
            ("recovered: false", self.not_recovered.to_string()),
        ])
    }
}

/// xorshift64*: enough for a kill schedule, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.next() % span })
    }
}

struct Node {
    addr: String,
    child: Option<tokio::process::Child>,
}

struct Cluster {
    bin: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
    /// Which nodes are up (read by the publishers).
    alive: Arc<Mutex<Vec<bool>>>,
}

impl Cluster {
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{i}.log")))?;
        let child = tokio::process::Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(["--http-addr", &self.nodes[i].addr])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{i}")))
            .env("SWITCHBOARD_NODE_NAME", format!("chaos{i}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning switchboard")?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    async fn kill(&mut self, i: usize) {
        self.alive.lock().unwrap()[i] = false;
        if let Some(mut child) = self.nodes[i].child.take() {
            // tokio's start_kill is SIGKILL on Unix.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        wait_ready(&self.nodes[i].addr).await?;
        self.alive.lock().unwrap()[i] = true;
        Ok(())
    }
}

async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let url = format!("http://{addr}/readyz");
    for _ in 0..300 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node {addr} not ready within 15 s")
}

#[derive(Default)]
struct Tally {
    /// Receipts per offset (duplicates included).
    receipts: HashMap<u64, u32>,
    late: u64,
    reconnects: u64,
    not_recovered: u64,
    /// Highest offset handed to the application.
    last: u64,
}

impl Tally {
    fn record(&mut self, offset: u64, data: &[u8], start: Instant) {
        let n = self.receipts.entry(offset).or_insert(0);
        *n += 1;
        if *n == 1
            && let Some((_, ts)) = parse_payload(data)
            && nanos_since(start).saturating_sub(ts) > 1_000_000_000
        {
            self.late += 1;
        }
        self.last = self.last.max(offset);
    }
}

/// A subscriber that fails over between `endpoints` and recovers from its
/// last offset; runs until aborted.
async fn subscriber(
    endpoints: Vec<String>,
    start_at: usize,
    token: String,
    tally: Arc<Mutex<Tally>>,
    ready: tokio::sync::oneshot::Sender<()>,
    start: Instant,
) {
    let mut ready = Some(ready);
    let mut position: Option<(u64, String)> = None;
    let mut idx = start_at;
    let mut attempt = 0u32;
    loop {
        let url = &endpoints[idx % endpoints.len()];
        let mut options = ClientOptions::with_token(token.clone());
        options.max_server_ping_delay = Some(Duration::from_secs(5));
        let session = match Client::connect(url, options).await {
            Ok((client, events)) => {
                let sub = client
                    .subscribe(
                        CHANNEL,
                        SubscribeOptions {
                            recover: position.clone(),
                            recoverable: true,
                            ..Default::default()
                        },
                    )
                    .await;
                sub.map(|r| (client, events, r)).ok()
            }
            Err(_) => None,
        };
        let Some((_client, mut events, r)) = session else {
            let base = Duration::from_millis(100 * 2u64.pow(attempt.min(4)));
            let jitter = Duration::from_millis(nanos_since(start) % (base.as_millis() as u64 + 1));
            tokio::time::sleep(base + jitter).await;
            attempt += 1;
            idx += 1;
            continue;
        };
        attempt = 0;
        let epoch = r.epoch.clone();
        {
            let mut t = tally.lock().unwrap();
            if position.is_some() {
                t.reconnects += 1;
                if !r.recovered {
                    t.not_recovered += 1;
                }
            }
            if position.is_none() {
                t.last = r.offset;
            }
            for p in &r.publications {
                t.record(p.offset, &p.data, start);
            }
            position = Some((t.last, epoch.clone()));
        }
        if let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Publication {
                    channel,
                    publication,
                } if channel == CHANNEL => {
                    let mut t = tally.lock().unwrap();
                    t.record(publication.offset, &publication.data, start);
                    position = Some((t.last, epoch.clone()));
                }
                Event::Disconnected { .. } => break,
                _ => {}
            }
        }
        idx += 1;
    }
}

/// Runs the chaos scenario.
pub async fn run(cfg: ChaosConfig) -> anyhow::Result<ChaosReport> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let seed = if cfg.seed == 0 { nanos | 1 } else { cfg.seed };
    let mut rng = Rng(seed);
    let tag = format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff);
    let prefix = format!("chaos{tag}");
    let schema = format!("sb_chaos_{tag}");
    let dir = std::env::temp_dir().join(format!("switchboard-chaos-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[api]
keys = ["{API_KEY}"]
[token]
hmac_secret = "{SECRET}"
[channel]
allow_unknown_namespaces = true
[channel.defaults]
history_size = 100000
history_ttl = "1h"
allow_subscribe_for_client = true
[cluster]
bus = "nats"
store = "postgres"
[cluster.nats]
urls = ["{nats}"]
subject_prefix = "{prefix}"
registry_ttl = "3s"
[cluster.postgres]
url = "{pg}"
schema = "{schema}"
pool_size = 4
"#,
            nats = cfg.nats,
            pg = cfg.postgres,
        ),
    )?;
    let out = std::process::Command::new(&cfg.bin)
        .arg("migrate")
        .arg("--config")
        .arg(&config)
        .output()
        .with_context(|| format!("running {}", cfg.bin.display()))?;
    if !out.status.success() {
        bail!("migrate: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        nodes.push(Node {
            addr: format!("127.0.0.1:{port}"),
            child: None,
        });
    }
    let mut cluster = Cluster {
        bin: cfg.bin.clone(),
        config,
        dir: dir.clone(),
        nodes,
        alive: Arc::new(Mutex::new(vec![false; NODES])),
    };
    let result = drive(&cfg, &mut cluster, &mut rng, seed).await;
    for i in 0..NODES {
        cluster.kill(i).await;
    }
    let _ = std::process::Command::new("psql")
        .args([
            cfg.postgres.as_str(),
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("node logs kept in {}", dir.display());
    }
    result
}

async fn drive(
    cfg: &ChaosConfig,
    cluster: &mut Cluster,
    rng: &mut Rng,
    seed: u64,
) -> anyhow::Result<ChaosReport> {
    for i in 0..NODES {
        cluster.start(i).await?;
    }
    let start = Instant::now();
    let endpoints: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("ws://{}/connection/websocket", n.addr))
        .collect();
    let apis: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("http://{}/api/publish", n.addr))
        .collect();
    let tokens = mint_tokens(SECRET, "chaos-sub", cfg.subscribers)?;
    let mut tallies = Vec::new();
    let mut subs = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        subs.push(tokio::spawn(subscriber(
            endpoints.clone(),
            i % NODES,
            token,
            tally.clone(),
            tx,
            start,
        )));
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("subscriber did not subscribe within 10 s")??;
        tallies.push(tally);
    }

    // Publisher: a steady rate through a random live node's server API.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        let alive = cluster.alive.clone();
        let rate = cfg.rate.max(1);
        let mut prng = Rng(rng.next() | 1);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client");
            let mut acked = Vec::new();
            let mut failed = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let up: Vec<usize> = {
                    let a = alive.lock().unwrap();
                    (0..NODES).filter(|&i| a[i]).collect()
                };
                if up.is_empty() {
                    continue;
                }
                let node = up[prng.below(up.len())];
                let data: serde_json::Value =
                    serde_json::from_str(&payload(seq, nanos_since(start), 64)).unwrap();
                seq += 1;
                let reply = http
                    .post(&apis[node])
                    .header("X-API-Key", API_KEY)
                    .json(&json!({ "channel": CHANNEL, "data": data }))
                    .send()
                    .await;
                let offset = match reply {
                    Ok(r) => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["result"]["offset"].as_u64()),
                    Err(_) => None,
                };
                match offset {
                    Some(o) => acked.push(o),
                    None => failed += 1,
                }
            }
            (acked, failed)
        })
    };

    // Killer: one node down at a time, until the duration is over.
    let deadline = start + cfg.duration;
    let mut kills = 0u64;
    loop {
        let wait = rng.between(cfg.kill_every);
        if Instant::now() + wait >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
            break;
        }
        tokio::time::sleep(wait).await;
        let victim = rng.below(NODES);
        cluster.kill(victim).await;
        kills += 1;
        let down = rng.between(cfg.down_for);
        tokio::time::sleep(down.min(deadline.saturating_duration_since(Instant::now()))).await;
        cluster.start(victim).await?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, publish_failed) = publisher.await?;

    // Drain: every subscriber reaches the highest acknowledged offset.
    let top = acked.iter().copied().max().unwrap_or(0);
    let drain_until = Instant::now() + cfg.drain;
    while Instant::now() < drain_until && tallies.iter().any(|t| t.lock().unwrap().last < top) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &subs {
        s.abort();
    }
    let mut report = ChaosReport {
        seed,
        published_acknowledged: acked.len() as u64,
        publish_failed,
        subscribers: cfg.subscribers,
        expected_deliveries: acked.len() as u64 * cfg.subscribers as u64,
        delivered: 0,
        lost: 0,
        duplicated: 0,
        late: 0,
        kills,
        reconnects: 0,
        not_recovered: 0,
    };
    for t in &tallies {
        let t = t.lock().unwrap();
        report.delivered += acked.iter().filter(|o| t.receipts.contains_key(o)).count() as u64;
        report.duplicated += t
            .receipts
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum::<u64>();
        report.late += t.late;
        report.reconnects += t.reconnects;
        report.not_recovered += t.not_recovered;
    }
    report.lost = report.expected_deliveries - report.delivered;
    Ok(report)
}

/// The default `switchboard` binary: next to this executable.
pub fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join("switchboard")
}
