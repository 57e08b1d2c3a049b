//! `sfu`: WebRTC forwarding cost of a running server's SFU, driven over real
//! signaling.
//!
//! Each participant is a messaging connection ([`Client`]) plus a str0m
//! [`MediaClient`]: `rtc.join`, `rtc.answer` (and every later `rtc.offer`
//! push answered), and for publishers `rtc.publish`, exactly as an app
//! would. Publishers send synthetic Opus (50 packets/s) and VP8 video at
//! `fps` (three simulcast layers with `simulcast`); every participant
//! receives the others' tracks. After everyone receives media and a warm-up,
//! a measurement window counts:
//!
//! * RTP packets received by all subscribers (= forwarded by the SFU, lost
//!   ones included through the sequence number ranges);
//! * the server process's CPU time (`/proc/<pid>/stat` utime + stime) and
//!   RSS (before joining, after everyone joined);
//! * one-way frame latency publisher → SFU → subscriber, from send times
//!   embedded in the frames (one monotonic clock: this process). This is an
//!   upper bound on the SFU's added latency: it includes both client stacks
//!   and this process's scheduling on the same CPUs.
//!
//! The server must run its rooms in SFU mode for rooms of two
//! (`SWITCHBOARD_MEDIA_DEFAULT_MODE=sfu`), otherwise the two first joiners
//! are told to go peer-to-peer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::media::{MediaClient, MediaOptions};
use switchboard_client::{Client, ClientOptions, Encoding, Event, Events};

use crate::common::{human_kib, mint_tokens, rss_kib};

/// Settings of an `sfu` run.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// WebSocket URL of the server.
    pub url: String,
    /// HMAC secret for connection tokens.
    pub secret: String,
    /// Rooms.
    pub rooms: usize,
    /// Participants per room that publish audio + video (and receive).
    pub publishers: usize,
    /// Participants per room that only receive.
    pub subscribers: usize,
    /// Publish VP8 as three simulcast layers.
    pub simulcast: bool,
    /// Video frames per second.
    pub fps: u32,
    /// Top-layer video delta frame size in bytes.
    pub video_frame_bytes: usize,
    /// Time after everyone receives media before measuring.
    pub warmup: Duration,
    /// Measurement window.
    pub duration: Duration,
    /// Server process to measure (CPU, RSS).
    pub server_pid: Option<u32>,
    /// Room name prefix (a per-run suffix is added).
    pub room_prefix: String,
}

/// Results of an `sfu` run.
#[derive(Debug, Clone, Serialize)]
pub struct SfuReport {
    /// Rooms.
    pub rooms: usize,
    /// Participants (all rooms).
    pub participants: usize,
    /// Publishing participants (all rooms).
    pub publishers: usize,
    /// Received video tracks summed over participants (subscriber × video
    /// track pairs).
    pub video_subscriptions: usize,
    /// Measurement window, seconds.
    pub window_s: f64,
    /// RTP packets received by all subscribers in the window.
    pub packets: u64,
    /// Packets per second.
    pub packets_per_s: f64,
    /// Payload bits per second received by all subscribers.
    pub bitrate_bps: f64,
    /// Video frames received per simulcast layer (q, h, f; `f` without
    /// simulcast).
    pub frames_by_layer: [u64; 3],
    /// Server CPU seconds in the window (user + system).
    pub server_cpu_s: Option<f64>,
    /// Server CPU utilisation in the window (1.0 = one core).
    pub server_cores: Option<f64>,
    /// Packets forwarded per server CPU-second.
    pub packets_per_cpu_s: Option<f64>,
    /// Server millicores per received video track (subscriber × track).
    pub millicores_per_video_subscription: Option<f64>,
    /// Server millicores per participant.
    pub millicores_per_participant: Option<f64>,
    /// Server RSS before joining, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS with everyone in the call, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// This process's CPU seconds in the window (the clients' share of the
    /// machine).
    pub bench_cpu_s: Option<f64>,
    /// Frame latency samples.
    pub latency_samples: u64,
    /// Latency percentiles in milliseconds: p50, p99, p999, max.
    pub latency_ms: [f64; 4],
}

struct Participant {
    media: Arc<MediaClient>,
    _client: Client,
}

async fn rpc(c: &Client, method: &str, body: Value) -> anyhow::Result<Value> {
    let r = c
        .rpc(method, body.to_string().into_bytes())
        .await
        .with_context(|| format!("{method} failed"))?;
    serde_json::from_slice(&r.data).with_context(|| format!("{method} result"))
}

/// Answers the SFU's later offers pushed over the connection.
fn answer_offers(client: Client, mut events: Events, media: Arc<MediaClient>, room: String) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let Event::Message { data } = ev else {
                continue;
            };
            let Ok(msg) = serde_json::from_slice::<Value>(&data) else {
                continue;
            };
            if msg["type"] == "rtc.offer"
                && let Some(sdp) = msg["sdp"].as_str()
                && let Ok(answer) = media.accept_subscriber_offer(sdp)
            {
                let _ = rpc(&client, "rtc.answer", json!({"room": room, "sdp": answer})).await;
            }
        }
    });
}

async fn join(
    cfg: &SfuConfig,
    token: String,
    room: &str,
    publish: bool,
) -> anyhow::Result<Participant> {
    let (client, events) = Client::connect(
        &cfg.url,
        ClientOptions {
            encoding: Encoding::Json,
            ..ClientOptions::with_token(token)
        },
    )
    .await
    .context("connect")?;
    let media = Arc::new(
        MediaClient::new(MediaOptions {
            audio: publish,
            video: publish,
            simulcast: cfg.simulcast,
            fps: cfg.fps,
            video_frame_bytes: cfg.video_frame_bytes,
            record_latency: true,
            ..MediaOptions::default()
        })
        .await?,
    );
    let joined = rpc(&client, "rtc.join", json!({"room": room})).await?;
    if joined["mode"].as_str().is_some_and(|m| m != "sfu") {
        bail!(
            "room {room} is in {} mode: start the server with SWITCHBOARD_MEDIA_DEFAULT_MODE=sfu",
            joined["mode"]
        );
    }
    let offer = joined["offer"].as_str().context("rtc.join: no offer")?;
    let answer = media.accept_subscriber_offer(offer)?;
    answer_offers(client.clone(), events, media.clone(), room.to_owned());
    rpc(&client, "rtc.answer", json!({"room": room, "sdp": answer})).await?;
    if publish {
        let offer = media.publish_offer()?;
        let ans = rpc(&client, "rtc.publish", json!({"room": room, "sdp": offer})).await?;
        media.accept_publish_answer(ans["sdp"].as_str().context("rtc.publish: no sdp")?)?;
    }
    Ok(Participant {
        media,
        _client: client,
    })
}

/// utime + stime of a process in seconds, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' fields are numbered from 3 (state); utime is 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Runs the scenario and reports.
pub async fn run(cfg: SfuConfig) -> anyhow::Result<SfuReport> {
    let per_room = cfg.publishers + cfg.subscribers;
    if cfg.rooms == 0 || per_room == 0 || cfg.publishers == 0 {
        bail!("need at least one room and one publisher per room");
    }
    let rss_before = cfg.server_pid.and_then(rss_kib);
    let tokens = mint_tokens(&cfg.secret, "sfu-bench-", cfg.rooms * per_room)?;
    let mut tokens = tokens.into_iter();
    let mut people = Vec::new();
    // Publishers first, so subscribers join a room that already has tracks
    // (fewer renegotiations while setting up).
    for r in 0..cfg.rooms {
        let room = format!("{}{r}", cfg.room_prefix);
        for i in 0..per_room {
            let token = tokens.next().context("token")?;
            let p = join(&cfg, token, &room, i < cfg.publishers)
                .await
                .with_context(|| format!("participant {i} of {room}"))?;
            people.push(p);
        }
    }
    // Everyone receives every other publisher's audio and video.
    let expected = |i: usize| {
        let publishers_seen = cfg.publishers - usize::from(i % per_room < cfg.publishers);
        publishers_seen * 2
    };
    let deadline =
        Instant::now() + Duration::from_secs(30) + Duration::from_millis(300) * people.len() as u32;
    loop {
        let ready = people.iter().enumerate().all(|(i, p)| {
            let st = p.media.stats();
            st.tracks
                .values()
                .filter(|t| t.active && t.frames > 0)
                .count()
                >= expected(i)
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            let short = people
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    let st = p.media.stats();
                    st.tracks
                        .values()
                        .filter(|t| t.active && t.frames > 0)
                        .count()
                        < expected(*i)
                })
                .count();
            bail!("{short} participants still miss media after the setup deadline");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(cfg.warmup).await;
    let rss_after = cfg.server_pid.and_then(rss_kib);

    let snapshot = |people: &[Participant]| {
        let mut packets = 0u64;
        let mut bytes = 0u64;
        let mut layers = [0u64; 3];
        for p in people {
            let st = p.media.stats();
            for t in st.tracks.values() {
                packets += t.packets;
                bytes += t.bytes;
                for (l, n) in layers.iter_mut().zip(t.layers) {
                    *l += n;
                }
            }
            p.media.take_latencies();
        }
        (packets, bytes, layers)
    };
    let pid = cfg.server_pid.map(|p| p.to_string());
    let cpu0 = pid.as_deref().and_then(cpu_seconds);
    let self0 = cpu_seconds("self");
    let (p0, b0, l0) = snapshot(&people);
    let t0 = Instant::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let end = t0 + cfg.duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for p in &people {
            for d in p.media.take_latencies() {
                let _ = hist.record((d.as_micros() as u64).max(1));
            }
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = pid.as_deref().and_then(cpu_seconds);
    let self1 = cpu_seconds("self");
    let mut packets = 0u64;
    let mut bytes = 0u64;
    let mut layers = [0u64; 3];
    for p in &people {
        let st = p.media.stats();
        for t in st.tracks.values() {
            packets += t.packets;
            bytes += t.bytes;
            for (l, n) in layers.iter_mut().zip(t.layers) {
                *l += n;
            }
        }
        for d in p.media.take_latencies() {
            let _ = hist.record((d.as_micros() as u64).max(1));
        }
    }
    let packets = packets - p0;
    let bytes = bytes - b0;
    let frames_by_layer = [layers[0] - l0[0], layers[1] - l0[1], layers[2] - l0[2]];
    let server_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let participants = people.len();
    let video_subscriptions: usize = (0..participants).map(|i| expected(i) / 2).sum();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    drop(people);
    Ok(SfuReport {
        rooms: cfg.rooms,
        participants,
        publishers: cfg.rooms * cfg.publishers,
        video_subscriptions,
        window_s: window,
        packets,
        packets_per_s: packets as f64 / window,
        bitrate_bps: bytes as f64 * 8.0 / window,
        frames_by_layer,
        server_cpu_s: server_cpu,
        server_cores: server_cpu.map(|c| c / window),
        packets_per_cpu_s: server_cpu.filter(|c| *c > 0.0).map(|c| packets as f64 / c),
        millicores_per_video_subscription: server_cpu
            .map(|c| c / window * 1000.0 / video_subscriptions.max(1) as f64),
        millicores_per_participant: server_cpu
            .map(|c| c / window * 1000.0 / participants.max(1) as f64),
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        bench_cpu_s: self0.zip(self1).map(|(a, b)| b - a),
        latency_samples: hist.len(),
        latency_ms: [ms(0.5), ms(0.99), ms(0.999), hist.max() as f64 / 1000.0],
    })
}

impl SfuReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| {
            v.map(|v| format!("{v:.2}{unit}"))
                .unwrap_or_else(|| "- (no --server-pid)".into())
        };
        let mem = match (self.server_rss_before_kib, self.server_rss_after_kib) {
            (Some(a), Some(b)) => format!(
                "{} -> {} ({} per participant)",
                human_kib(a as f64),
                human_kib(b as f64),
                human_kib(b.saturating_sub(a) as f64 / self.participants.max(1) as f64)
            ),
            _ => "- (no --server-pid)".into(),
        };
        let mut layers = BTreeMap::new();
        for (name, n) in ["q", "h", "f"].iter().zip(self.frames_by_layer) {
            layers.insert(*name, n);
        }
        crate::table(&[
            (
                "participants",
                format!(
                    "{} in {} rooms ({} publishing), {} video subscriptions",
                    self.participants, self.rooms, self.publishers, self.video_subscriptions
                ),
            ),
            ("window", format!("{:.1} s", self.window_s)),
            (
                "RTP packets forwarded",
                format!("{} ({:.0}/s)", self.packets, self.packets_per_s),
            ),
            (
                "forwarded bitrate",
                format!("{:.1} Mbit/s", self.bitrate_bps / 1e6),
            ),
            ("video frames by layer", format!("{layers:?}")),
            ("server CPU", opt(self.server_cpu_s, " s")),
            ("server cores busy", opt(self.server_cores, "")),
            ("packets per CPU-second", opt(self.packets_per_cpu_s, "")),
            (
                "millicores per video subscription",
                opt(self.millicores_per_video_subscription, ""),
            ),
            (
                "millicores per participant",
                opt(self.millicores_per_participant, ""),
            ),
            ("server RSS", mem),
            ("bench CPU", opt(self.bench_cpu_s, " s")),
            (
                "frame latency p50/p99/p999/max",
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms ({} frames)",
                    self.latency_ms[0],
                    self.latency_ms[1],
                    self.latency_ms[2],
                    self.latency_ms[3],
                    self.latency_samples
                ),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable() {
        let a = cpu_seconds("self").expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = cpu_seconds("self").unwrap();
        assert!(b >= a);
        assert_eq!(cpu_seconds("999999999"), None);
    }
}
