//! `storm`: a reconnect storm. Many subscribers on durable channels drop
//! their connections at once, publications go on while they are away, and
//! every one of them reconnects at the same moment with recovery from its
//! last offset and epoch. Reports the time until all are recovered, the
//! server CPU spent, and any publication not recovered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use serde_json::json;
use switchboard_client::{ClientOptions, Encoding, Event, SubscribeOptions};

use crate::common::{ConnectPlan, connect_many, mint_tokens, raise_nofile_limit};
use crate::peers::cpu_secs;

/// Settings of a storm run.
#[derive(Clone, Debug)]
pub struct StormConfig {
    /// WebSocket URL.
    pub url: String,
    /// Server API base URL (publishes go there).
    pub api: String,
    /// Server API key.
    pub api_key: String,
    /// HMAC secret for connection tokens.
    pub secret: String,
    /// Subscribers (one connection each).
    pub clients: usize,
    /// Durable channels; subscriber `i` is on channel `i % channels`.
    pub channels: usize,
    /// Publications per channel while the subscribers are away.
    pub missed: u64,
    /// Source addresses, used round-robin.
    pub source_ips: Vec<std::net::IpAddr>,
    /// Server process to measure (CPU).
    pub server_pid: Option<u32>,
    /// Connections opened at the same time (first connect and the storm).
    pub concurrency: usize,
    /// Wire encoding.
    pub encoding: Encoding,
    /// Namespace prefix of the channels (`<prefix>:<n>`), which must keep
    /// history.
    pub prefix: String,
}

/// Results of a storm run.
#[derive(Debug, Serialize)]
pub struct StormReport {
    /// `"storm"`.
    pub bench: &'static str,
    /// Subscribers requested.
    pub clients: usize,
    /// Channels.
    pub channels: usize,
    /// Subscribers connected and subscribed before the drop.
    pub subscribed: usize,
    /// Publications made while the subscribers were away.
    pub published_while_away: u64,
    /// Subscribers reconnected and re-subscribed in the storm.
    pub reconnected: usize,
    /// Re-subscriptions answered `recovered: true`.
    pub recovered: usize,
    /// Re-subscriptions answered `recovered: false`, or that failed.
    pub not_recovered: usize,
    /// Publications a subscriber should have recovered but did not get
    /// (summed over subscribers).
    pub missing: u64,
    /// Publications received twice by a subscriber (summed).
    pub duplicates: u64,
    /// Seconds from the start of the storm until every subscriber had
    /// recovered (or failed).
    pub storm_secs: f64,
    /// Reconnects (with recovery) per second over the storm.
    pub reconnect_rate: f64,
    /// Server CPU seconds (user + system) during the storm.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU milliseconds per recovered subscriber.
    pub server_cpu_ms_per_client: Option<f64>,
    /// Failed connection attempts that were retried during the storm.
    pub retried: u64,
}

impl StormReport {
    /// A few lines for a person.
    pub fn human(&self) -> String {
        format!(
            "storm: {} subscribers on {} channels, {} publications missed each; \
             {} reconnected in {:.2} s ({:.0}/s), {} recovered, {} not, missing {}, duplicates {}, \
             server CPU {} ({} ms per subscriber), {} retried",
            self.subscribed,
            self.channels,
            self.published_while_away / self.channels.max(1) as u64,
            self.reconnected,
            self.storm_secs,
            self.reconnect_rate,
            self.recovered,
            self.not_recovered,
            self.missing,
            self.duplicates,
            self.server_cpu_secs
                .map_or("n/a".into(), |c| format!("{c:.2} s")),
            self.server_cpu_ms_per_client
                .map_or("n/a".into(), |c| format!("{c:.3}")),
            self.retried,
        )
    }
}

/// Runs a reconnect storm.
pub async fn run(cfg: StormConfig) -> anyhow::Result<StormReport> {
    if cfg.clients == 0 || cfg.channels == 0 {
        bail!("storm: --clients and --channels must be at least 1");
    }
    raise_nofile_limit();
    let (prefix, channels) = (cfg.prefix.clone(), cfg.channels);
    let channel = move |i: usize| format!("{prefix}:{}", i % channels);
    let http = reqwest::Client::new();
    let publish_url = format!("{}/api/publish", cfg.api.trim_end_matches('/'));
    // One publication per channel first, so every subscription has a
    // position to recover from.
    let publish = |ch: String, seq: u64| {
        let http = http.clone();
        let url = publish_url.clone();
        let key = cfg.api_key.clone();
        async move {
            let r: serde_json::Value = http
                .post(&url)
                .header("X-API-Key", key)
                .json(&json!({ "channel": ch, "data": { "seq": seq } }))
                .send()
                .await?
                .json()
                .await?;
            match r["result"]["offset"].as_u64() {
                Some(o) => Ok(o),
                None => bail!("publish to {ch} refused: {r}"),
            }
        }
    };
    for c in 0..cfg.channels {
        publish(channel(c), 0).await?;
    }

    let plan = ConnectPlan {
        handler_for: None,
        url: cfg.url.clone(),
        options: ClientOptions {
            encoding: cfg.encoding,
            ..ClientOptions::with_token(String::new())
        },
        source_ips: cfg.source_ips.clone(),
        concurrency: cfg.concurrency,
        retries: 10,
    };
    let tokens = mint_tokens(&cfg.secret, "storm", cfg.clients)?;
    // Phase 1: everyone subscribes; each remembers its position.
    let positions: Arc<Vec<(AtomicU64, std::sync::Mutex<String>)>> = Arc::new(
        (0..cfg.clients)
            .map(|_| (AtomicU64::new(0), std::sync::Mutex::new(String::new())))
            .collect(),
    );
    let first = {
        let positions = positions.clone();
        let channel = channel.clone();
        connect_many(&plan, tokens.clone(), move |i, client, _events| {
            let positions = positions.clone();
            let ch = channel(i);
            async move {
                let r = client
                    .subscribe(
                        &ch,
                        SubscribeOptions {
                            recoverable: true,
                            ..Default::default()
                        },
                    )
                    .await?;
                positions[i].0.store(r.offset, Ordering::Relaxed);
                *positions[i].1.lock().unwrap() = r.epoch;
                Ok(())
            }
        })
        .await
    };
    let subscribed = first.ok();
    if subscribed < cfg.clients {
        bail!(
            "storm: only {subscribed} of {} subscribers connected: {:?}",
            cfg.clients,
            first.failures
        );
    }
    // Phase 2: all drop at once; publications go on meanwhile.
    let closing: Vec<_> = first
        .clients
        .into_iter()
        .flatten()
        .map(|(client, ())| tokio::spawn(async move { client.close().await }))
        .collect();
    for c in closing {
        let _ = c.await;
    }
    let mut expected_last = vec![0u64; cfg.channels];
    for seq in 1..=cfg.missed {
        for (c, last) in expected_last.iter_mut().enumerate() {
            *last = publish(channel(c), seq).await?;
        }
    }
    // Phase 3: the storm. Every subscriber reconnects at once and recovers.
    let recovered = Arc::new(AtomicU64::new(0));
    let not_recovered = Arc::new(AtomicU64::new(0));
    let missing = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let cpu_before = cfg.server_pid.and_then(|p| cpu_secs(&p.to_string()));
    let started = Instant::now();
    let storm_plan = ConnectPlan {
        concurrency: cfg.clients,
        ..plan.clone()
    };
    let second = {
        let positions = positions.clone();
        let expected_last = Arc::new(expected_last);
        let channel = channel.clone();
        let (recovered, not_recovered, missing, duplicates) = (
            recovered.clone(),
            not_recovered.clone(),
            missing.clone(),
            duplicates.clone(),
        );
        connect_many(&storm_plan, tokens, move |i, client, mut events| {
            let from = positions[i].0.load(Ordering::Relaxed);
            let epoch = positions[i].1.lock().unwrap().clone();
            let want = expected_last[i % expected_last.len()];
            let ch = channel(i);
            let (recovered, not_recovered, missing, duplicates) = (
                recovered.clone(),
                not_recovered.clone(),
                missing.clone(),
                duplicates.clone(),
            );
            async move {
                let r = client
                    .subscribe(
                        &ch,
                        SubscribeOptions {
                            recover: Some((from, epoch)),
                            recoverable: true,
                            ..Default::default()
                        },
                    )
                    .await?;
                let mut seen: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
                // Anything still missing may follow as live publications.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while seen.iter().copied().max().unwrap_or(from) < want {
                    match tokio::time::timeout_at(deadline, events.recv()).await {
                        Ok(Some(Event::Publication { publication, .. })) => {
                            seen.push(publication.offset)
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
                let total = seen.len() as u64;
                seen.sort_unstable();
                seen.dedup();
                duplicates.fetch_add(total - seen.len() as u64, Ordering::Relaxed);
                let got = seen.iter().filter(|&&o| o > from && o <= want).count() as u64;
                missing.fetch_add(want.saturating_sub(from) - got, Ordering::Relaxed);
                if r.recovered {
                    recovered.fetch_add(1, Ordering::Relaxed);
                } else {
                    not_recovered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(client)
            }
        })
        .await
    };
    let storm_secs = started.elapsed().as_secs_f64();
    let cpu_after = cfg.server_pid.and_then(|p| cpu_secs(&p.to_string()));
    let reconnected = second.ok();
    let server_cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    for (client, _) in second.clients.into_iter().flatten() {
        client.close().await;
    }
    let failed = cfg.clients - reconnected;
    Ok(StormReport {
        bench: "storm",
        clients: cfg.clients,
        channels: cfg.channels,
        subscribed,
        published_while_away: cfg.missed * cfg.channels as u64,
        reconnected,
        recovered: recovered.load(Ordering::Relaxed) as usize,
        not_recovered: not_recovered.load(Ordering::Relaxed) as usize + failed,
        missing: missing.load(Ordering::Relaxed),
        duplicates: duplicates.load(Ordering::Relaxed),
        storm_secs,
        reconnect_rate: reconnected as f64 / storm_secs.max(1e-9),
        server_cpu_secs: server_cpu,
        server_cpu_ms_per_client: server_cpu.map(|c| c * 1000.0 / reconnected.max(1) as f64),
        retried: second.retried,
    })
}
