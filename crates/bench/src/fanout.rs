//! `fanout`: N subscribers spread over channels, a publisher at a fixed rate,
//! end-to-end latency and delivery accounting.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use switchboard_client::{
    Client, ClientOptions, Encoding, Event, EventHandler, Events, SubscribeOptions,
};
use tokio::sync::{Semaphore, watch};

use crate::common::{
    ConnectPlan, SeqTracker, connect_many, human_kib, mint_tokens, nanos_since, parse_payload,
    payload, raise_nofile_limit, rss_kib, self_rss_kib,
};

/// How publications reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishVia {
    /// `POST /api/publish` with the API key.
    Api,
    /// `publish` commands over WebSocket publisher connections.
    Ws,
}

/// How subscribers consume their events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventsVia {
    /// A callback on the connection task ([`switchboard_client::EventHandler`]): leanest.
    Handler,
    /// The [`Events`] queue drained by one task per subscriber.
    Queue,
}

/// Settings of a fanout run.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// WebSocket URL.
    pub url: String,
    /// Server API base URL (`http://host:port`).
    pub api: String,
    /// Server API key.
    pub api_key: String,
    /// HMAC secret for connection tokens.
    pub secret: String,
    /// Number of subscriber connections.
    pub subscribers: usize,
    /// Number of channels (subscriber `i` joins channel `i % channels`).
    pub channels: usize,
    /// Publications per second, over all channels.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Wire encoding of the subscribers (and WebSocket publishers).
    pub encoding: Encoding,
    /// Approximate payload size in bytes.
    pub payload_bytes: usize,
    /// Publish path.
    pub publish_via: PublishVia,
    /// How subscribers consume events.
    pub events_via: EventsVia,
    /// WebSocket publisher connections (`--publish-via ws`).
    pub publishers: usize,
    /// Most publishes in flight at once.
    pub max_in_flight: usize,
    /// How long to wait for the last deliveries after publishing stops.
    pub drain: Duration,
    /// Channel name prefix.
    pub channel_prefix: String,
    /// Server process to measure (VmRSS).
    pub server_pid: Option<u32>,
    /// Source addresses for the subscriber connections.
    pub source_ips: Vec<std::net::IpAddr>,
    /// Connections opened at the same time.
    pub connect_concurrency: usize,
    /// Retries of a failed connection.
    pub connect_retries: u32,
}

/// Results of a fanout run.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    /// `"fanout"`.
    pub bench: &'static str,
    /// Encoding used.
    pub encoding: &'static str,
    /// Publish path.
    pub publish_via: PublishVia,
    /// How subscribers consumed events.
    pub events_via: EventsVia,
    /// Subscribers requested.
    pub subscribers: usize,
    /// Subscribers connected and subscribed.
    pub subscribers_connected: usize,
    /// Subscribers that failed to connect or subscribe.
    pub subscribers_failed: u64,
    /// Channels.
    pub channels: usize,
    /// Seconds to connect and subscribe everyone.
    pub connect_secs: f64,
    /// Connections (with subscribe) per second.
    pub connect_rate: f64,
    /// Target publish rate.
    pub target_rate: f64,
    /// Publish attempts.
    pub published: u64,
    /// Publishes that failed.
    pub publish_errors: u64,
    /// Achieved publish rate.
    pub publish_rate: f64,
    /// Seconds spent publishing.
    pub publish_secs: f64,
    /// Deliveries expected for the successful publishes.
    pub expected_deliveries: u64,
    /// Distinct publications received, over all subscribers.
    pub delivered: u64,
    /// Deliveries per second over the publishing window.
    pub delivered_per_sec: f64,
    /// Sequence numbers never received (includes failed publishes).
    pub missing: u64,
    /// Sequence numbers received more than once.
    pub duplicates: u64,
    /// Subscribers whose connection ended during the run.
    pub disconnects: u64,
    /// End-to-end latency percentiles, milliseconds.
    pub latency_ms: Latency,
    /// Server VmRSS before connecting, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server VmRSS with everyone connected and subscribed, KiB.
    pub server_rss_connected_kib: Option<u64>,
    /// Server RSS growth per subscriber, KiB.
    pub server_rss_per_conn_kib: Option<f64>,
    /// This process's VmRSS with everyone connected, KiB.
    pub bench_rss_kib: Option<u64>,
}

/// Latency summary in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

const SHARDS: usize = 16;

/// Counters shared by the subscriber tasks.
struct Stats {
    /// Latency in microseconds, sharded to limit lock contention.
    latency: Vec<Mutex<Histogram<u64>>>,
    delivered: AtomicU64,
    disconnects: AtomicU64,
    stopping: std::sync::atomic::AtomicBool,
}

impl Stats {
    fn new() -> anyhow::Result<Stats> {
        let latency = (0..SHARDS)
            .map(|_| Histogram::new_with_bounds(1, 600_000_000, 3).map(Mutex::new))
            .collect::<Result<_, _>>()
            .context("histogram")?;
        Ok(Stats {
            latency,
            delivered: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        for shard in &self.latency {
            if let Ok(h) = shard.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }
}

/// Per-subscriber accounting.
struct SubState {
    tracker: Mutex<SeqTracker>,
    shard: usize,
}

/// Handles one event of a subscriber: latency and sequence accounting.
fn on_event(sub: &SubState, stats: &Stats, start: Instant, event: Event) {
    match event {
        Event::Publication { publication, .. } => {
            let now = nanos_since(start);
            let Some((seq, ts)) = parse_payload(&publication.data) else {
                return;
            };
            let fresh = match sub.tracker.lock() {
                Ok(mut tracker) => {
                    let before = tracker.received;
                    tracker.record(seq);
                    tracker.received > before
                }
                Err(_) => false,
            };
            if fresh {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            let us = (now.saturating_sub(ts) / 1000).max(1);
            if let Ok(mut h) = stats.latency[sub.shard].lock() {
                h.saturating_record(us);
            }
        }
        Event::Disconnected { .. } if !stats.stopping.load(Ordering::Relaxed) => {
            stats.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        _ => {} // join/leave and other pushes
    }
}

/// Queue mode: one task per subscriber drains its [`Events`].
async fn subscriber_loop(
    sub: Arc<SubState>,
    mut events: Events,
    start: Instant,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = events.recv() => event,
        };
        let Some(event) = event else { break };
        on_event(&sub, &stats, start, event);
    }
}

/// Publishes through the HTTP server API or WebSocket clients.
#[derive(Clone)]
pub(crate) enum Publisher {
    Api {
        http: reqwest::Client,
        url: String,
        key: String,
    },
    Ws(Arc<Vec<Client>>),
}

impl Publisher {
    pub(crate) async fn publish(&self, n: u64, channel: &str, data: String) -> Result<(), String> {
        match self {
            Publisher::Api { http, url, key } => {
                let body = format!(
                    "{{\"channel\":{},\"data\":{data}}}",
                    serde_json::Value::from(channel)
                );
                let resp = http
                    .post(url)
                    .header("X-API-Key", key)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let text = resp.text().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}: {text}"));
                }
                // Centrifugo-style APIs may answer 200 with an error object.
                if text.contains("\"error\"") {
                    return Err(text);
                }
                Ok(())
            }
            Publisher::Ws(clients) => {
                let client = &clients[(n as usize) % clients.len()];
                client
                    .publish(channel, data)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Runs the fanout benchmark.
pub async fn run(cfg: FanoutConfig) -> anyhow::Result<FanoutReport> {
    if cfg.subscribers == 0 || cfg.channels == 0 {
        bail!("--subscribers and --channels must be positive");
    }
    if cfg.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    raise_nofile_limit();
    let start = Instant::now();
    let channels: Vec<String> = (0..cfg.channels)
        .map(|i| format!("{}{i}", cfg.channel_prefix))
        .collect();
    let server_rss_before = cfg.server_pid.and_then(rss_kib);

    // Subscribers.
    let tokens = mint_tokens(&cfg.secret, "bench-sub-", cfg.subscribers)?;
    let stats = Arc::new(Stats::new()?);
    let subs: Arc<Vec<Arc<SubState>>> = Arc::new(
        (0..cfg.subscribers)
            .map(|i| {
                Arc::new(SubState {
                    tracker: Mutex::new(SeqTracker::default()),
                    shard: i % SHARDS,
                })
            })
            .collect(),
    );
    let handler_for: Option<crate::common::HandlerFactory> = match cfg.events_via {
        EventsVia::Handler => {
            let subs = subs.clone();
            let stats = stats.clone();
            Some(Arc::new(move |i: usize| {
                let sub = subs[i].clone();
                let stats = stats.clone();
                EventHandler::new(move |event| on_event(&sub, &stats, start, event))
            }))
        }
        EventsVia::Queue => None,
    };
    let plan = ConnectPlan {
        handler_for,
        url: cfg.url.clone(),
        options: ClientOptions {
            encoding: cfg.encoding,
            events_capacity: 64,
            ..ClientOptions::default()
        },
        source_ips: cfg.source_ips.clone(),
        concurrency: cfg.connect_concurrency,
        retries: cfg.connect_retries,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let subscribe_to = channels.clone();
    let setup_stats = stats.clone();
    let setup_subs = subs.clone();
    let events_via = cfg.events_via;
    eprintln!("connecting {} subscribers…", cfg.subscribers);
    // Each subscriber subscribes, then handles its events from the start (join
    // pushes arrive while the others connect).
    let connected = connect_many(&plan, tokens, move |i, client: Client, events| {
        let channel = subscribe_to[i % subscribe_to.len()].clone();
        let stats = setup_stats.clone();
        let sub = setup_subs[i].clone();
        let stop = stop_rx.clone();
        async move {
            client
                .subscribe(&channel, SubscribeOptions::default())
                .await?;
            Ok(match events_via {
                EventsVia::Queue => Some(tokio::spawn(subscriber_loop(
                    sub, events, start, stats, stop,
                ))),
                EventsVia::Handler => None,
            })
        }
    })
    .await;
    for (kind, n) in &connected.failures {
        eprintln!("  {n} subscribers failed: {kind}");
    }
    let subscribers_connected = connected.ok();
    if subscribers_connected == 0 {
        bail!("no subscriber could connect");
    }
    let connect_secs = connected.elapsed.as_secs_f64();
    // Let the server settle (join pushes, allocations) before measuring memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_rss_connected = cfg.server_pid.and_then(rss_kib);
    let bench_rss = self_rss_kib();

    let mut subs_per_channel = vec![0u64; cfg.channels];
    let mut clients = Vec::with_capacity(subscribers_connected);
    let mut readers = Vec::with_capacity(subscribers_connected);
    for (i, conn) in connected.clients.into_iter().enumerate() {
        let Some((client, reader)) = conn else {
            continue;
        };
        let channel = i % cfg.channels;
        subs_per_channel[channel] += 1;
        clients.push(client);
        readers.push((i, channel, reader));
    }

    // Publisher.
    let publisher = match cfg.publish_via {
        PublishVia::Api => Publisher::Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(cfg.max_in_flight)
                .build()
                .context("HTTP client")?,
            url: format!("{}/api/publish", cfg.api.trim_end_matches('/')),
            key: cfg.api_key.clone(),
        },
        PublishVia::Ws => {
            let tokens = mint_tokens(&cfg.secret, "bench-pub-", cfg.publishers.max(1))?;
            let mut pubs = Vec::new();
            for token in tokens {
                let (client, _events) = Client::connect(
                    &cfg.url,
                    ClientOptions {
                        token,
                        encoding: cfg.encoding,
                        ..ClientOptions::default()
                    },
                )
                .await
                .context("connecting a WebSocket publisher")?;
                pubs.push(client);
            }
            Publisher::Ws(Arc::new(pubs))
        }
    };

    eprintln!(
        "publishing {:.0} msg/s to {} channel(s) for {:?}…",
        cfg.rate, cfg.channels, cfg.duration
    );
    let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
    let failed: Arc<Vec<AtomicU64>> =
        Arc::new((0..cfg.channels).map(|_| AtomicU64::new(0)).collect());
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut next_seq = vec![0u64; cfg.channels];
    let mut tasks = tokio::task::JoinSet::new();
    let pub_start = Instant::now();
    let tick = Duration::from_secs_f64((1.0 / cfg.rate).clamp(0.001, 0.01));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    loop {
        ticker.tick().await;
        let elapsed = pub_start.elapsed();
        if elapsed >= cfg.duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * cfg.rate) as u64 + 1;
        while sent < due {
            let channel = (sent % cfg.channels as u64) as usize;
            let seq = next_seq[channel];
            next_seq[channel] += 1;
            let permit = in_flight.clone().acquire_owned().await?;
            let publisher = publisher.clone();
            let name = channels[channel].clone();
            let failed = failed.clone();
            let first_error = first_error.clone();
            let size = cfg.payload_bytes;
            let n = sent;
            tasks.spawn(async move {
                let _permit = permit;
                let data = payload(seq, nanos_since(start), size);
                if let Err(e) = publisher.publish(n, &name, data).await {
                    failed[channel].fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert(e);
                    }
                }
            });
            sent += 1;
        }
        // Reap finished publishes so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let publish_secs = pub_start.elapsed().as_secs_f64();
    let failed: Vec<u64> = failed.iter().map(|f| f.load(Ordering::Relaxed)).collect();
    let errors: u64 = failed.iter().sum();
    if let Some(e) = first_error.lock().ok().and_then(|mut f| f.take()) {
        eprintln!("  {errors} publishes failed; first error: {e}");
    }
    let expected: u64 = (0..cfg.channels)
        .map(|c| next_seq[c].saturating_sub(failed[c]) * subs_per_channel[c])
        .sum();

    // Drain.
    let drain_deadline = Instant::now() + cfg.drain;
    while stats.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats.stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut missing = 0;
    let mut duplicates = 0;
    for (i, channel, reader) in readers {
        if let Some(reader) = reader {
            let _ = reader.await;
        }
        if let Ok(mut tracker) = subs[i].tracker.lock() {
            tracker.finish(next_seq[channel]);
            missing += tracker.missing;
            duplicates += tracker.duplicates;
        }
    }
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let latency = stats.merged();

    // Close everything (not measured).
    let closing = clients.iter().map(|c| c.close());
    futures_util::future::join_all(closing).await;
    if let Publisher::Ws(pubs) = &publisher {
        futures_util::future::join_all(pubs.iter().map(|c| c.close())).await;
    }

    Ok(FanoutReport {
        bench: "fanout",
        encoding: cfg.encoding.as_str(),
        publish_via: cfg.publish_via,
        events_via: cfg.events_via,
        subscribers: cfg.subscribers,
        subscribers_connected,
        subscribers_failed: connected.failures.values().sum(),
        channels: cfg.channels,
        connect_secs,
        connect_rate: subscribers_connected as f64 / connect_secs.max(1e-9),
        target_rate: cfg.rate,
        published: sent,
        publish_errors: errors,
        publish_rate: sent as f64 / publish_secs.max(1e-9),
        publish_secs,
        expected_deliveries: expected,
        delivered,
        delivered_per_sec: delivered as f64 / publish_secs.max(1e-9),
        missing,
        duplicates,
        disconnects: stats.disconnects.load(Ordering::Relaxed),
        latency_ms: Latency::from_histogram(&latency),
        server_rss_before_kib: server_rss_before,
        server_rss_connected_kib: server_rss_connected,
        server_rss_per_conn_kib: match (server_rss_before, server_rss_connected) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / subscribers_connected as f64),
            _ => None,
        },
        bench_rss_kib: bench_rss,
    })
}

impl FanoutReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            (
                "encoding / publish / events",
                format!(
                    "{} / {:?} / {:?}",
                    self.encoding, self.publish_via, self.events_via
                )
                .to_lowercase(),
            ),
            (
                "subscribers",
                format!(
                    "{} connected of {} ({} failed) over {} channel(s)",
                    self.subscribers_connected,
                    self.subscribers,
                    self.subscribers_failed,
                    self.channels
                ),
            ),
            (
                "connect + subscribe",
                format!("{:.2} s ({:.0}/s)", self.connect_secs, self.connect_rate),
            ),
            (
                "published",
                format!(
                    "{} in {:.2} s ({:.1}/s, target {:.1}/s), {} errors",
                    self.published,
                    self.publish_secs,
                    self.publish_rate,
                    self.target_rate,
                    self.publish_errors
                ),
            ),
            (
                "delivered",
                format!(
                    "{} of {} expected ({:.0} msg/s)",
                    self.delivered, self.expected_deliveries, self.delivered_per_sec
                ),
            ),
            (
                "missing / duplicates",
                format!("{} / {}", self.missing, self.duplicates),
            ),
            ("subscriber disconnects", self.disconnects.to_string()),
            (
                "latency ms",
                format!(
                    "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2}, n={})",
                    self.latency_ms.p50,
                    self.latency_ms.p90,
                    self.latency_ms.p99,
                    self.latency_ms.p999,
                    self.latency_ms.max,
                    self.latency_ms.mean,
                    self.latency_ms.count
                ),
            ),
        ];
        if let (Some(a), Some(b)) = (self.server_rss_before_kib, self.server_rss_connected_kib) {
            rows.push((
                "server RSS",
                format!(
                    "{} → {} ({} per subscriber)",
                    human_kib(a as f64),
                    human_kib(b as f64),
                    human_kib(self.server_rss_per_conn_kib.unwrap_or(0.0))
                ),
            ));
        }
        if let Some(r) = self.bench_rss_kib {
            rows.push(("bench RSS", human_kib(r as f64)));
        }
        crate::table(&rows)
    }
}
