//! The live stats channel `$switchboard:stats`: once a second the node
//! publishes a snapshot of its load (connections, subscriptions, messages
//! in and out per second, command latency percentiles, rooms, participants,
//! media bitrate and packet loss) for the operator dashboard.
//!
//! The figures come from what the node already counts: the Prometheus
//! recorder of [`crate::metrics_handle`] (counters and the command latency
//! histogram, differenced between two ticks), the hub, the rooms of the call
//! signaling (`room_list`) and the per-participant media stats the SFU
//! reports ([`record_media`]; peer-to-peer media never reaches the server,
//! so bitrate and loss cover SFU rooms only).
//!
//! Every node publishes its own snapshot (named by `node`); the dashboard
//! sums them for the cluster. The channel is private (`$`): a connection subscribes with a channel
//! grant for it (the dev admin has one) or a subscription token. Its
//! namespace `switchboard` is added by [`ensure_namespace`] as ephemeral (no
//! history, no presence, no client publishes) unless the configuration
//! defines it. Publications skip the store, so nothing accumulates.
//!
//! The recorder and the media registry are process-wide: several servers
//! started in one process (tests) report the sum of all of them.

use crate::node::Node;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use switchboard_core::namespace::Namespaces;
use switchboard_gateway::Hub;
use switchboard_gateway::engine::{Engine, PublishRequest};
use switchboard_media::ParticipantStats;

/// The channel the snapshots are published to.
pub const STATS_CHANNEL: &str = "$switchboard:stats";
/// Namespace of [`STATS_CHANNEL`].
pub const STATS_NAMESPACE: &str = "switchboard";
/// How often a snapshot is published.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Media stats older than this are left out (the participant left).
const MEDIA_STALE: Duration = Duration::from_secs(10);

/// Adds the ephemeral `switchboard` namespace unless configured.
pub fn ensure_namespace(namespaces: &mut Namespaces) {
    namespaces
        .namespaces
        .entry(STATS_NAMESPACE.to_string())
        .or_default();
}

struct MediaSample {
    at: Instant,
    stats: ParticipantStats,
}

fn media_registry() -> &'static Mutex<HashMap<String, MediaSample>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, MediaSample>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Records the latest media stats of a participant (called for every stats
/// report of the SFU).
pub fn record_media(room: &str, participant: &str, stats: &ParticipantStats) {
    let mut reg = media_registry().lock();
    let now = Instant::now();
    reg.retain(|_, s| now.duration_since(s.at) < MEDIA_STALE);
    reg.insert(
        format!("{room}/{participant}"),
        MediaSample {
            at: now,
            stats: stats.clone(),
        },
    );
}

/// One published snapshot (the JSON of each publication).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Node name.
    pub node: String,
    /// Unix milliseconds.
    pub time: i64,
    /// Open client connections.
    pub connections: usize,
    /// Distinct connected users.
    pub users: usize,
    /// Channel subscriptions of all connections.
    pub subscriptions: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Client commands received per second.
    pub messages_in: f64,
    /// Frames delivered to clients per second (publications, join/leave).
    pub messages_out: f64,
    /// Publications per second (clients and API).
    pub publications: f64,
    /// Command latency percentiles over the last interval, milliseconds
    /// (upper bound of the histogram bucket; `null` without commands).
    pub latency_ms: Latency,
    /// Rooms of this node's call signaling (SFU and peer-to-peer).
    pub rooms: usize,
    /// Participants in those rooms.
    pub participants: usize,
    /// Media received by the SFU, bits per second (sum over participants).
    pub bitrate_in: u64,
    /// Media sent by the SFU, bits per second.
    pub bitrate_out: u64,
    /// Mean packet loss over participants, percent.
    pub loss_avg: f64,
    /// Worst packet loss of a participant, percent.
    pub loss_max: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// Totals read from the Prometheus exposition text.
#[derive(Clone, Debug, Default)]
struct Totals {
    commands: f64,
    sent: f64,
    publications: f64,
    /// Command latency histogram: upper bound (seconds) → cumulative count.
    latency: BTreeMap<OrdF64, f64>,
}

/// An `f64` ordered by `total_cmp`, for histogram bounds as map keys.
#[derive(Clone, Copy, Debug)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Splits one exposition line into (name, labels, value).
fn parse_line(line: &str) -> Option<(&str, &str, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    match head.split_once('{') {
        Some((name, rest)) => Some((name, rest.trim_end_matches('}'), value)),
        None => Some((head.trim(), "", value)),
    }
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

fn read_totals(text: &str) -> Totals {
    let mut t = Totals::default();
    for line in text.lines() {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        match name {
            "switchboard_commands_total" => t.commands += value,
            "switchboard_messages_sent_total" => t.sent += value,
            "switchboard_publications_total" => t.publications += value,
            "switchboard_command_duration_seconds_bucket" => {
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                *t.latency.entry(OrdF64(le)).or_default() += value;
            }
            _ => {}
        }
    }
    t
}

/// Percentile `q` (0–1) of the observations between two cumulative
/// histograms, as the upper bound of the bucket it falls in (ms).
fn percentile(now: &BTreeMap<OrdF64, f64>, before: &BTreeMap<OrdF64, f64>, q: f64) -> Option<f64> {
    let delta = |le: &OrdF64, v: f64| v - before.get(le).copied().unwrap_or(0.0);
    let total = now.iter().last().map(|(le, v)| delta(le, *v))?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut last_finite = None;
    for (le, v) in now {
        if le.0.is_finite() {
            last_finite = Some(le.0);
        }
        if delta(le, *v) >= rank {
            let bound = if le.0.is_finite() { le.0 } else { last_finite? };
            return Some((bound * 1000.0 * 1000.0).round() / 1000.0);
        }
    }
    None
}

fn media_totals() -> (u64, u64, f64, f64) {
    let mut reg = media_registry().lock();
    let now = Instant::now();
    reg.retain(|_, s| now.duration_since(s.at) < MEDIA_STALE);
    let (mut bin, mut bout, mut loss_sum, mut loss_max) = (0u64, 0u64, 0f64, 0f64);
    for s in reg.values() {
        bin += s.stats.bitrate_in;
        bout += s.stats.bitrate_out;
        let loss = f64::from(s.stats.loss) * 100.0;
        loss_sum += loss;
        loss_max = loss_max.max(loss);
    }
    let avg = if reg.is_empty() {
        0.0
    } else {
        loss_sum / reg.len() as f64
    };
    (bin, bout, avg, loss_max)
}

/// Rooms and participants of the node's call signaling (SFU and
/// peer-to-peer rooms alike), as the `room_list` API method reports them.
async fn room_counts(calls: &crate::calls::Calls) -> (usize, usize) {
    match calls.api("room_list", b"{}").await {
        Some(Ok(v)) => {
            let rooms = v["rooms"].as_array().map(Vec::as_slice).unwrap_or_default();
            let participants = rooms
                .iter()
                .filter_map(|r| r["num_participants"].as_u64())
                .sum::<u64>();
            (rooms.len(), participants as usize)
        }
        _ => (0, 0),
    }
}

/// Starts the publisher task: one snapshot per [`INTERVAL`] to
/// [`STATS_CHANNEL`], until the task is aborted.
pub fn spawn(node: Arc<Node>, hub: Arc<Hub>, node_name: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut before = read_totals(&crate::metrics_handle().render());
        let mut before_at = Instant::now();
        loop {
            tick.tick().await;
            let now = read_totals(&crate::metrics_handle().render());
            let now_at = Instant::now();
            let secs = now_at.duration_since(before_at).as_secs_f64().max(0.001);
            let rate = |a: f64, b: f64| ((a - b).max(0.0) / secs * 10.0).round() / 10.0;
            let channels = hub.channels();
            let (rooms, participants) = match node.calls() {
                Some(calls) => room_counts(calls).await,
                None => (0, 0),
            };
            let (bitrate_in, bitrate_out, loss_avg, loss_max) = media_totals();
            let snapshot = Snapshot {
                node: node_name.clone(),
                time: crate::node::now_ms(),
                connections: hub.num_conns(),
                users: hub.num_users(),
                subscriptions: channels.iter().map(|(_, n)| n).sum(),
                channels: channels.len(),
                messages_in: rate(now.commands, before.commands),
                messages_out: rate(now.sent, before.sent),
                publications: rate(now.publications, before.publications),
                latency_ms: Latency {
                    p50: percentile(&now.latency, &before.latency, 0.50),
                    p90: percentile(&now.latency, &before.latency, 0.90),
                    p99: percentile(&now.latency, &before.latency, 0.99),
                },
                rooms,
                participants,
                bitrate_in,
                bitrate_out,
                loss_avg: (loss_avg * 100.0).round() / 100.0,
                loss_max: (loss_max * 100.0).round() / 100.0,
            };
            before = now;
            before_at = now_at;
            let data = match serde_json::to_vec(&snapshot) {
                Ok(d) => Bytes::from(d),
                Err(_) => continue,
            };
            // Published even without local subscribers: in a cluster the
            // dashboard may follow the channel on another node (the bus only
            // carries it to nodes with interest).
            let req = PublishRequest {
                data,
                info: None,
                tags: Default::default(),
                idempotency_key: None,
                skip_history: true,
            };
            if let Err(e) = node.publish(STATS_CHANNEL, req).await {
                tracing::debug!(error = %e, "publishing stats");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_percentiles() {
        let a = read_totals(
            "# TYPE x counter\nswitchboard_commands_total{method=\"publish\",result=\"ok\"} 10\n\
             switchboard_commands_total{method=\"connect\",result=\"ok\"} 5\n\
             switchboard_command_duration_seconds_bucket{method=\"publish\",le=\"0.001\"} 0\n\
             switchboard_command_duration_seconds_bucket{method=\"publish\",le=\"0.01\"} 0\n\
             switchboard_command_duration_seconds_bucket{method=\"publish\",le=\"+Inf\"} 0\n",
        );
        assert_eq!(a.commands, 15.0);
        let b = read_totals(
            "switchboard_command_duration_seconds_bucket{method=\"publish\",le=\"0.001\"} 90\n\
             switchboard_command_duration_seconds_bucket{method=\"publish\",le=\"0.01\"} 99\n\
             switchboard_command_duration_seconds_bucket{method=\"publish\",le=\"+Inf\"} 100\n",
        );
        assert_eq!(percentile(&b.latency, &a.latency, 0.5), Some(1.0));
        assert_eq!(percentile(&b.latency, &a.latency, 0.95), Some(10.0));
        assert_eq!(percentile(&b.latency, &a.latency, 0.999), Some(10.0));
        assert_eq!(percentile(&a.latency, &a.latency, 0.5), None);
    }
}
