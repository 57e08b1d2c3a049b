//! `chaos`: a bounded fault-injection run against a real three-node cluster.
//!
//! Starts its own `nats-server` (a free loopback port, its own JetStream
//! directory), a TCP proxy in this process in front of the machine's
//! PostgreSQL, and three `switchboard` processes on loopback that reach NATS
//! directly and PostgreSQL through the proxy (a unique subject prefix and
//! schema per run). It subscribes clients spread over the nodes to one
//! durable channel, publishes a steady stream through the server API of
//! random live nodes, and meanwhile injects one fault at a time at random
//! intervals, of a kind drawn at random from [`ChaosConfig::faults`] (a
//! shuffled round of every chosen kind at a time):
//!
//! * [`Fault::NodeKill`]: SIGKILL a random node, restart it after a random pause;
//! * [`Fault::NodeTerm`]: SIGTERM a random node, wait until it has drained and
//!   exited, start it again;
//! * [`Fault::NatsRestart`]: SIGKILL `nats-server`, start it again on the same
//!   port and store directory after a random pause;
//! * [`Fault::PgCut`]: close every proxied PostgreSQL connection and refuse new
//!   ones for a random time, then accept again.
//!
//! Subscribers behave like an SDK given every node's endpoint: when their
//! connection ends they try the next endpoint with backoff and jitter and
//! re-subscribe with recovery from their last offset and epoch.
//!
//! At the end (after a bounded drain) it reports, for acknowledged
//! publications (the server API answered with an offset): how many
//! deliveries were expected (acknowledged × subscribers), delivered (distinct
//! offsets received per subscriber), lost (expected − delivered), duplicated
//! (receipts of an offset the subscriber already had, before the client's
//! dedup) and late (first receipt more than 1 s after the publish was sent,
//! on this process's clock); publishes the server refused with an error
//! (e.g. code 100 "store unavailable" during a PostgreSQL cut) are counted
//! apart and not expected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;
use switchboard_client::{Client, ClientOptions, Event, SubscribeOptions};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::common::{mint_tokens, nanos_since, parse_payload, payload};

const API_KEY: &str = "chaos-api-key";
const SECRET: &str = "chaos-token-secret";
const CHANNEL: &str = "chaos:stream";
const NODES: usize = 3;
/// Longest wait for a SIGTERMed node to drain and exit before SIGKILL
/// (its `shutdown.drain_timeout` is 10 s).
const TERM_BOUND: Duration = Duration::from_secs(30);

/// A kind of fault the run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL a node, restart it after a random pause.
    NodeKill,
    /// SIGTERM a node (it drains: clients get reconnect advice), wait until
    /// it exited, start it again.
    NodeTerm,
    /// SIGKILL `nats-server`, restart it on the same port and store directory
    /// after a random pause.
    NatsRestart,
    /// Cut the PostgreSQL proxy (every connection closed, new ones refused)
    /// for a random time.
    PgCut,
}

impl Fault {
    /// Every kind, in report order.
    pub const ALL: [Fault; 4] = [
        Fault::NodeKill,
        Fault::NodeTerm,
        Fault::NatsRestart,
        Fault::PgCut,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::NodeKill => "node-kill",
            Fault::NodeTerm => "node-term",
            Fault::NatsRestart => "nats-restart",
            Fault::PgCut => "pg-cut",
        }
    }
}

/// Parameters of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The `switchboard` binary.
    pub bin: PathBuf,
    /// The `nats-server` binary the run starts (its own, never the machine's).
    pub nats_server: PathBuf,
    /// PostgreSQL URL (loopback); the nodes reach it through the run's proxy.
    pub postgres: String,
    /// How long publishers publish and faults happen.
    pub duration: Duration,
    /// Subscriber connections (spread round-robin over the nodes).
    pub subscribers: usize,
    /// Publications per second (total).
    pub rate: u32,
    /// Kinds of faults to draw from (a shuffled round of them at a time).
    pub faults: Vec<Fault>,
    /// A fault starts every `fault_every.0..fault_every.1` (uniform).
    pub fault_every: (Duration, Duration),
    /// A killed node, NATS or a PostgreSQL cut stays down
    /// `down_for.0..down_for.1` (uniform).
    pub down_for: (Duration, Duration),
    /// How long to wait at the end for subscribers to catch up.
    pub drain: Duration,
    /// Seed of the random choices (0: from the clock).
    pub seed: u64,
}

/// Faults injected, by kind.
#[derive(Debug, Default, Serialize)]
pub struct FaultCounts {
    /// Nodes killed with SIGKILL and restarted.
    pub node_kill: u64,
    /// Nodes stopped with SIGTERM and restarted.
    pub node_term: u64,
    /// `nats-server` killed with SIGKILL and restarted.
    pub nats_restart: u64,
    /// PostgreSQL proxy cuts.
    pub pg_cut: u64,
}

/// Publish calls sent while PostgreSQL was cut, by outcome.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CutPublishes {
    /// Calls sent during a cut.
    pub sent: u64,
    /// Acknowledged (answered after the restore).
    pub acked: u64,
    /// Refused with an error.
    pub refused: u64,
    /// Without an answer.
    pub failed: u64,
    /// Longest call, ms.
    pub max_call_ms: u64,
}

/// One injected fault.
#[derive(Debug, Serialize)]
pub struct FaultRecord {
    /// Kind of fault.
    pub kind: Fault,
    /// Node index, for node faults.
    pub node: Option<usize>,
    /// Start, ms since the run started.
    pub at_ms: u64,
    /// End (component back: node ready, NATS listening, proxy accepting).
    pub until_ms: u64,
    /// SIGTERM to exit, for `node-term`.
    pub exit_ms: Option<u64>,
    /// Late receipts of publications sent from 2 s before this fault to 5 s
    /// after its end.
    pub late: u64,
    /// Earliest and latest such late receipt, ms since the run started.
    pub late_received_ms: Option<(u64, u64)>,
}

/// An acknowledged publication some subscribers never received.
#[derive(Debug, Serialize)]
pub struct LostOffset {
    /// Offset.
    pub offset: u64,
    /// When the publish was sent, ms since the run started.
    pub sent_ms: u64,
    /// Subscribers (indices) without it.
    pub subscribers: Vec<usize>,
    /// Faults under way from 2 s after the publish to 5 s before it
    /// (indices into the fault log).
    pub faults: Vec<usize>,
}

/// What a chaos run measured.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    /// Seed used (re-run with it to repeat the fault schedule).
    pub seed: u64,
    /// Publications the server API acknowledged with an offset.
    pub published_acknowledged: u64,
    /// Publishes the server answered with an error (not acknowledged).
    pub publish_refused: u64,
    /// Refused publishes by error code.
    pub publish_refused_by_code: BTreeMap<i64, u64>,
    /// Publish calls without an answer (not acknowledged; may or may not exist).
    pub publish_failed: u64,
    /// Publishes both sent and acknowledged while PostgreSQL was cut (expected 0).
    pub acknowledged_during_pg_cut: u64,
    /// Publish calls sent while PostgreSQL was cut, by outcome.
    pub pg_cut_publishes: CutPublishes,
    /// Longest publish call, ms (the HTTP timeout is 5 s).
    pub publish_call_max_ms: u64,
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
    /// Late receipts by the kind of fault under way from 2 s after the
    /// publish to 5 s before it ("none": no fault near).
    pub late_by_fault: BTreeMap<String, u64>,
    /// Longest first-receipt delay, ms.
    pub late_max_ms: u64,
    /// Distinct offsets some subscriber received that were never acknowledged.
    pub delivered_unacknowledged: u64,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// Longest SIGTERM-to-exit of a `node-term`, ms.
    pub node_term_exit_max_ms: u64,
    /// `node-term`s that did not exit within 30 s (then SIGKILLed).
    pub node_term_forced: u64,
    /// Subscriber reconnections.
    pub reconnects: u64,
    /// Re-subscriptions answered `recovered: false`.
    pub not_recovered: u64,
    /// Every fault, in order.
    pub fault_log: Vec<FaultRecord>,
    /// Lost offsets (at most 100).
    pub lost_offsets: Vec<LostOffset>,
}

impl ChaosReport {
    /// The report as an aligned table.
    pub fn table(&self) -> String {
        let codes = self
            .publish_refused_by_code
            .iter()
            .map(|(c, n)| format!("code {c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = crate::table(&[
            ("seed", self.seed.to_string()),
            (
                "published (acknowledged)",
                self.published_acknowledged.to_string(),
            ),
            (
                "publish refused (error)",
                if codes.is_empty() {
                    self.publish_refused.to_string()
                } else {
                    format!("{} ({codes})", self.publish_refused)
                },
            ),
            ("publish calls failed", self.publish_failed.to_string()),
            (
                "acked during pg cut",
                self.acknowledged_during_pg_cut.to_string(),
            ),
            (
                "sent during pg cut",
                format!(
                    "{} (acked after restore {}, refused {}, no answer {}; longest {} ms)",
                    self.pg_cut_publishes.sent,
                    self.pg_cut_publishes.acked - self.acknowledged_during_pg_cut,
                    self.pg_cut_publishes.refused,
                    self.pg_cut_publishes.failed,
                    self.pg_cut_publishes.max_call_ms
                ),
            ),
            (
                "publish call (max)",
                format!("{} ms", self.publish_call_max_ms),
            ),
            ("subscribers", self.subscribers.to_string()),
            ("expected deliveries", self.expected_deliveries.to_string()),
            ("delivered", self.delivered.to_string()),
            ("lost", self.lost.to_string()),
            ("duplicated (before dedup)", self.duplicated.to_string()),
            (
                "late (> 1 s)",
                if self.late == 0 {
                    "0".to_string()
                } else {
                    let near = self
                        .late_by_fault
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("{} (near {near}; max {} ms)", self.late, self.late_max_ms)
                },
            ),
            (
                "delivered, not acked",
                self.delivered_unacknowledged.to_string(),
            ),
            ("faults: node-kill", self.faults.node_kill.to_string()),
            ("faults: node-term", self.faults.node_term.to_string()),
            ("faults: nats-restart", self.faults.nats_restart.to_string()),
            ("faults: pg-cut", self.faults.pg_cut.to_string()),
            (
                "node-term exit (max)",
                format!(
                    "{} ms{}",
                    self.node_term_exit_max_ms,
                    if self.node_term_forced > 0 {
                        format!(", {} forced", self.node_term_forced)
                    } else {
                        String::new()
                    }
                ),
            ),
            ("subscriber reconnects", self.reconnects.to_string()),
            ("recovered: false", self.not_recovered.to_string()),
        ]);
        for (i, f) in self.fault_log.iter().enumerate() {
            out.push_str(&format!(
                "fault {i}: {:.1}-{:.1} s {}{}{}{}\n",
                f.at_ms as f64 / 1e3,
                f.until_ms as f64 / 1e3,
                f.kind.name(),
                f.node.map(|n| format!(" node {n}")).unwrap_or_default(),
                f.exit_ms
                    .map(|ms| format!(", exited in {ms} ms"))
                    .unwrap_or_default(),
                f.late_received_ms
                    .map(|(lo, hi)| format!(
                        ", {} late received {:.1}-{:.1} s",
                        f.late,
                        lo as f64 / 1e3,
                        hi as f64 / 1e3
                    ))
                    .unwrap_or_default(),
            ));
        }
        for l in &self.lost_offsets {
            out.push_str(&format!(
                "lost offset {} (sent at {} ms): subscribers {:?}, faults near {:?}\n",
                l.offset, l.sent_ms, l.subscribers, l.faults
            ));
        }
        out
    }
}

/// xorshift64*: enough for a fault schedule, no dependency.
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_tcp(port: u16, bound: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + bound;
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on 127.0.0.1:{port} after {bound:?}")
}

/// The run's own `nats-server` (JetStream on, data in `dir/js`).
struct Nats {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Nats {
    /// Starts the server on its port and JetStream directory.
    async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))?;
        let child = tokio::process::Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        wait_tcp(self.port, Duration::from_secs(10)).await
    }

    /// SIGKILL: no goodbye to the clients.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// A TCP proxy in front of PostgreSQL that can be cut and restored.
struct Proxy {
    upstream: String,
    port: u16,
    task: Option<JoinHandle<()>>,
    /// Proxied connections open now.
    open: Arc<AtomicUsize>,
}

/// Decrements the open-connection count when a proxied connection ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Proxy {
    /// Listens (again) on the proxy's port.
    fn restore(&mut self) -> anyhow::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket
            .bind(([127, 0, 0, 1], self.port).into())
            .context("binding the PostgreSQL proxy")?;
        let listener: TcpListener = socket.listen(128)?;
        self.port = listener.local_addr()?.port();
        let upstream = self.upstream.clone();
        let open = self.open.clone();
        self.task = Some(tokio::spawn(async move {
            // Owned by this task: aborting it closes every proxied connection.
            let mut conns = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    // Reap finished connections.
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                open.fetch_add(1, Ordering::Relaxed);
                let guard = OpenGuard(open.clone());
                let upstream = upstream.clone();
                conns.spawn(async move {
                    let _guard = guard;
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        Ok(())
    }

    /// Drops every connection and stops listening (new ones are refused);
    /// returns how many connections it closed.
    async fn cut(&mut self) -> usize {
        let n = self.open.load(Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// `host:port` of a `postgres://` URL and the URL with it replaced by `to`.
fn split_pg_url(url: &str, to: &str) -> anyhow::Result<(String, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .context("the PostgreSQL URL has no scheme")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p),
        _ => (hostport, "5432"),
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        bail!("the chaos run is loopback only: PostgreSQL host {host:?} is not 127.0.0.1");
    }
    let upstream = format!("{}:{port}", if host == "[::1]" { "[::1]" } else { host });
    Ok((upstream, format!("{scheme}://{user}{to}{tail}")))
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
    nats: Nats,
    proxy: Proxy,
    /// Which nodes are up (read by the publishers).
    alive: Arc<Mutex<Vec<bool>>>,
    /// Odd while PostgreSQL is cut (incremented at each cut and restore).
    pg_cut: Arc<AtomicU64>,
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

    /// SIGTERM node `i` (through `kill -TERM`) and wait until it exited;
    /// returns how long that took and whether it had to be SIGKILLed.
    async fn terminate(&mut self, i: usize) -> anyhow::Result<(Duration, bool)> {
        self.alive.lock().unwrap()[i] = false;
        let Some(mut child) = self.nodes[i].child.take() else {
            return Ok((Duration::ZERO, false));
        };
        let t0 = Instant::now();
        if let Some(pid) = child.id() {
            let status = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .context("running kill -TERM")?;
            if !status.success() {
                bail!("kill -TERM {pid} failed: {status}");
            }
        }
        match tokio::time::timeout(TERM_BOUND, child.wait()).await {
            Ok(_) => Ok((t0.elapsed(), false)),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Ok((t0.elapsed(), true))
            }
        }
    }

    async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        wait_ready(&self.nodes[i].addr).await?;
        self.alive.lock().unwrap()[i] = true;
        Ok(())
    }

    async fn cut_pg(&mut self) -> usize {
        self.pg_cut.fetch_add(1, Ordering::SeqCst);
        self.proxy.cut().await
    }

    fn restore_pg(&mut self) -> anyhow::Result<()> {
        self.proxy.restore()?;
        self.pg_cut.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Stops everything the run started.
    async fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
        self.nats.kill().await;
        let _ = self.proxy.cut().await;
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
    /// Late first receipts: (send time, delay), ns.
    late: Vec<(u64, u64)>,
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
        {
            let delay = nanos_since(start).saturating_sub(ts);
            if delay > 1_000_000_000 {
                self.late.push((ts, delay));
            }
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

/// What the publisher saw.
#[derive(Default)]
struct Published {
    /// Acknowledged offsets with their send time (ns since the start).
    acked: Vec<(u64, u64)>,
    refused: BTreeMap<i64, u64>,
    failed: u64,
    acked_during_cut: u64,
    max_call_ms: u64,
    in_cut: CutPublishes,
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs the chaos scenario.
pub async fn run(cfg: ChaosConfig) -> anyhow::Result<ChaosReport> {
    if cfg.faults.is_empty() {
        bail!("no fault kinds chosen");
    }
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

    let nats_port = free_port()?;
    let (upstream, _) = split_pg_url(&cfg.postgres, "")?;
    let mut proxy = Proxy {
        upstream,
        port: 0,
        task: None,
        open: Arc::new(AtomicUsize::new(0)),
    };
    proxy.restore()?;
    let (_, node_pg) = split_pg_url(&cfg.postgres, &format!("127.0.0.1:{}", proxy.port))?;

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
urls = ["nats://127.0.0.1:{nats_port}"]
subject_prefix = "{prefix}"
registry_ttl = "3s"
[cluster.postgres]
url = "{node_pg}"
schema = "{schema}"
pool_size = 4
"#
        ),
    )?;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(Node {
            addr: format!("127.0.0.1:{}", free_port()?),
            child: None,
        });
    }
    let mut cluster = Cluster {
        bin: cfg.bin.clone(),
        config,
        dir: dir.clone(),
        nodes,
        nats: Nats {
            bin: cfg.nats_server.clone(),
            port: nats_port,
            dir: dir.clone(),
            child: None,
        },
        proxy,
        alive: Arc::new(Mutex::new(vec![false; NODES])),
        pg_cut: Arc::new(AtomicU64::new(0)),
    };
    let result = tokio::select! {
        r = drive(&cfg, &mut cluster, &mut rng, seed) => r,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    cluster.shutdown().await;
    let _ = std::process::Command::new("psql")
        .args([
            cfg.postgres.as_str(),
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
    match &result {
        Ok(r) if r.lost == 0 => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!("chaos: logs kept in {}", dir.display()),
    }
    result
}

async fn drive(
    cfg: &ChaosConfig,
    cluster: &mut Cluster,
    rng: &mut Rng,
    seed: u64,
) -> anyhow::Result<ChaosReport> {
    cluster.nats.start().await?;
    let out = tokio::process::Command::new(&cluster.bin)
        .arg("migrate")
        .arg("--config")
        .arg(&cluster.config)
        .output()
        .await
        .with_context(|| format!("running {}", cluster.bin.display()))?;
    if !out.status.success() {
        bail!("migrate: {}", String::from_utf8_lossy(&out.stderr));
    }
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

    // Publisher: a steady rate through a random live node's server API;
    // each call in its own task, so a stalled call does not hold up the rate.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        let alive = cluster.alive.clone();
        let pg_cut = cluster.pg_cut.clone();
        let rate = cfg.rate.max(1);
        let mut prng = Rng(rng.next() | 1);
        let apis = Arc::new(apis);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client");
            let out = Arc::new(Mutex::new(Published::default()));
            let mut calls = JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                while calls.try_join_next().is_some() {}
                let up: Vec<usize> = {
                    let a = alive.lock().unwrap();
                    (0..NODES).filter(|&i| a[i]).collect()
                };
                if up.is_empty() {
                    continue;
                }
                let node = up[prng.below(up.len())];
                let sent = nanos_since(start);
                let data: serde_json::Value =
                    serde_json::from_str(&payload(seq, sent, 64)).unwrap();
                seq += 1;
                let (http, apis, pg_cut, out) =
                    (http.clone(), apis.clone(), pg_cut.clone(), out.clone());
                calls.spawn(async move {
                    let cut_before = pg_cut.load(Ordering::SeqCst);
                    let t0 = Instant::now();
                    let reply = http
                        .post(&apis[node])
                        .header("X-API-Key", API_KEY)
                        .json(&json!({ "channel": CHANNEL, "data": data }))
                        .send()
                        .await;
                    let body = match reply {
                        Ok(r) => r.json::<serde_json::Value>().await.ok(),
                        Err(_) => None,
                    };
                    let body = body.unwrap_or_default();
                    let took = t0.elapsed().as_millis() as u64;
                    let in_cut = cut_before % 2 == 1;
                    let mut out = out.lock().unwrap();
                    out.max_call_ms = out.max_call_ms.max(took);
                    if in_cut {
                        out.in_cut.sent += 1;
                        out.in_cut.max_call_ms = out.in_cut.max_call_ms.max(took);
                    }
                    if let Some(o) = body["result"]["offset"].as_u64() {
                        out.acked.push((o, sent));
                        if in_cut {
                            out.in_cut.acked += 1;
                            if pg_cut.load(Ordering::SeqCst) == cut_before {
                                out.acked_during_cut += 1;
                            }
                        }
                    } else if let Some(code) = body["error"]["code"].as_i64() {
                        *out.refused.entry(code).or_insert(0) += 1;
                        out.in_cut.refused += u64::from(in_cut);
                    } else {
                        out.failed += 1;
                        out.in_cut.failed += u64::from(in_cut);
                    }
                });
            }
            while calls.join_next().await.is_some() {}
            Arc::try_unwrap(out)
                .map(|m| m.into_inner().unwrap())
                .unwrap_or_default()
        })
    };

    // Faults: one at a time, until the duration is over.
    let deadline = start + cfg.duration;
    let mut counts = FaultCounts::default();
    let mut log: Vec<FaultRecord> = Vec::new();
    let mut term_max = Duration::ZERO;
    let mut term_forced = 0u64;
    let mut bag: Vec<Fault> = Vec::new();
    loop {
        // Kinds come from a shuffled bag (each chosen kind once per round),
        // so a short run still sees every kind. Always draw the same numbers
        // per fault, whatever its kind, so a seed repeats the schedule.
        if bag.is_empty() {
            bag = cfg.faults.clone();
            for i in (1..bag.len()).rev() {
                bag.swap(i, rng.below(i + 1));
            }
        }
        let kind = bag.pop().expect("refilled");
        let wait = rng.between(cfg.fault_every);
        let victim = rng.below(NODES);
        let down = rng.between(cfg.down_for);
        if Instant::now() + wait >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
            break;
        }
        tokio::time::sleep(wait).await;
        let down = down.min(deadline.saturating_duration_since(Instant::now()));
        let at = nanos_since(start);
        let mut node = None;
        let mut exit_ms = None;
        let mut note = String::new();
        match kind {
            Fault::NodeKill => {
                node = Some(victim);
                cluster.kill(victim).await;
                counts.node_kill += 1;
                tokio::time::sleep(down).await;
                cluster.start(victim).await?;
            }
            Fault::NodeTerm => {
                node = Some(victim);
                let (took, forced) = cluster.terminate(victim).await?;
                counts.node_term += 1;
                term_max = term_max.max(took);
                term_forced += u64::from(forced);
                exit_ms = Some(took.as_millis() as u64);
                note = format!(
                    ", exited after {took:.1?}{}",
                    if forced { " (SIGKILL)" } else { "" }
                );
                cluster.start(victim).await?;
            }
            Fault::NatsRestart => {
                cluster.nats.kill().await;
                counts.nats_restart += 1;
                tokio::time::sleep(down).await;
                cluster.nats.start().await?;
            }
            Fault::PgCut => {
                let closed = cluster.cut_pg().await;
                counts.pg_cut += 1;
                note = format!(", {closed} connections closed");
                tokio::time::sleep(down).await;
                cluster.restore_pg()?;
            }
        }
        let until = nanos_since(start);
        eprintln!(
            "chaos: fault {} at {:.1} s: {}{}{note}, back at {:.1} s",
            log.len(),
            at as f64 / 1e9,
            kind.name(),
            node.map(|n| format!(" node {n}")).unwrap_or_default(),
            until as f64 / 1e9,
        );
        log.push(FaultRecord {
            kind,
            node,
            at_ms: at / 1_000_000,
            until_ms: until / 1_000_000,
            exit_ms,
            late: 0,
            late_received_ms: None,
        });
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await?;
    let acked: Vec<u64> = published.acked.iter().map(|&(o, _)| o).collect();

    // Drain: every subscriber has every acknowledged offset (bounded).
    let drain_until = Instant::now() + cfg.drain;
    while Instant::now() < drain_until
        && tallies.iter().any(|t| {
            let t = t.lock().unwrap();
            acked.iter().any(|o| !t.receipts.contains_key(o))
        })
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &subs {
        s.abort();
    }
    let refused: u64 = published.refused.values().sum();
    let mut report = ChaosReport {
        seed,
        published_acknowledged: acked.len() as u64,
        publish_refused: refused,
        publish_refused_by_code: published.refused.clone(),
        publish_failed: published.failed,
        acknowledged_during_pg_cut: published.acked_during_cut,
        pg_cut_publishes: published.in_cut.clone(),
        publish_call_max_ms: published.max_call_ms,
        subscribers: cfg.subscribers,
        expected_deliveries: acked.len() as u64 * cfg.subscribers as u64,
        delivered: 0,
        lost: 0,
        duplicated: 0,
        late: 0,
        late_by_fault: BTreeMap::new(),
        late_max_ms: 0,
        delivered_unacknowledged: 0,
        faults: counts,
        node_term_exit_max_ms: term_max.as_millis() as u64,
        node_term_forced: term_forced,
        reconnects: 0,
        not_recovered: 0,
        fault_log: Vec::new(),
        lost_offsets: Vec::new(),
    };
    let acked_set: HashSet<u64> = acked.iter().copied().collect();
    let mut unacked: HashSet<u64> = HashSet::new();
    let mut missing: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, t) in tallies.iter().enumerate() {
        let t = t.lock().unwrap();
        for &o in &acked {
            if t.receipts.contains_key(&o) {
                report.delivered += 1;
            } else {
                missing.entry(o).or_default().push(i);
            }
        }
        unacked.extend(t.receipts.keys().filter(|o| !acked_set.contains(o)));
        report.duplicated += t
            .receipts
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum::<u64>();
        report.late += t.late.len() as u64;
        for &(sent, delay) in &t.late {
            report.late_max_ms = report.late_max_ms.max(delay / 1_000_000);
            let received = (sent + delay) / 1_000_000;
            let first = near(&log, sent / 1_000_000).next();
            let kind = match first {
                Some(i) => {
                    let f = &mut log[i];
                    f.late += 1;
                    let (lo, hi) = f.late_received_ms.unwrap_or((received, received));
                    f.late_received_ms = Some((lo.min(received), hi.max(received)));
                    f.kind.name()
                }
                None => "none",
            };
            *report.late_by_fault.entry(kind.to_string()).or_insert(0) += 1;
        }
        report.reconnects += t.reconnects;
        report.not_recovered += t.not_recovered;
    }
    report.lost = report.expected_deliveries - report.delivered;
    report.delivered_unacknowledged = unacked.len() as u64;
    let sent: HashMap<u64, u64> = published.acked.iter().copied().collect();
    for (offset, subscribers) in missing.into_iter().take(100) {
        let sent_ms = sent.get(&offset).copied().unwrap_or(0) / 1_000_000;
        let faults = near(&log, sent_ms).collect();
        report.lost_offsets.push(LostOffset {
            offset,
            sent_ms,
            subscribers,
            faults,
        });
    }
    report.fault_log = log;
    Ok(report)
}

/// Indices of the faults under way from 2 s after `ms` (since the start)
/// to 5 s before it (the NATS client retries at most every 4 s).
fn near(log: &[FaultRecord], ms: u64) -> impl Iterator<Item = usize> + '_ {
    log.iter()
        .enumerate()
        .filter(move |(_, f)| f.at_ms <= ms + 2000 && ms <= f.until_ms + 5000)
        .map(|(i, _)| i)
}

/// The default `switchboard` binary: next to this executable.
pub fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join("switchboard")
}
