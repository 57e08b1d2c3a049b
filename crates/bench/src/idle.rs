//! `idle`: many idle connections: connect rate (incl. token verification) and
//! server memory per connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use switchboard_client::{ClientOptions, Encoding};

use crate::common::{
    ConnectPlan, connect_many, human_kib, mint_tokens, raise_nofile_limit, rss_kib, self_rss_kib,
};

/// Settings of an idle run.
#[derive(Clone, Debug)]
pub struct IdleConfig {
    /// WebSocket URL.
    pub url: String,
    /// HMAC secret for connection tokens.
    pub secret: String,
    /// Connections to open.
    pub connections: usize,
    /// Source addresses, used round-robin.
    pub source_ips: Vec<std::net::IpAddr>,
    /// Server process to measure (VmRSS).
    pub server_pid: Option<u32>,
    /// How long to hold the connections open.
    pub hold: Duration,
    /// Wire encoding.
    pub encoding: Encoding,
    /// Connections opened at the same time.
    pub concurrency: usize,
    /// Retries of a failed connection.
    pub retries: u32,
}

/// Results of an idle run.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// `"idle"`.
    pub bench: &'static str,
    /// Encoding used.
    pub encoding: &'static str,
    /// Connections requested.
    pub connections: usize,
    /// Connections established.
    pub connected: usize,
    /// Connections that failed after retries.
    pub failed: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
    /// Final failures by error.
    pub failures: BTreeMap<String, u64>,
    /// Source addresses used.
    pub source_ips: usize,
    /// Seconds to establish all connections.
    pub connect_secs: f64,
    /// Connections per second (WebSocket handshake + connect with token).
    pub connect_rate: f64,
    /// Server CPU seconds (user + system) spent while connecting.
    pub server_connect_cpu_secs: Option<f64>,
    /// Connections per server CPU-second: the connect rate one core sustains.
    pub connect_rate_per_server_core: Option<f64>,
    /// Connections still open at the end of the hold.
    pub alive_after_hold: usize,
    /// Seconds held.
    pub hold_secs: f64,
    /// Seconds to close all connections.
    pub close_secs: f64,
    /// Server VmRSS before connecting, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server VmRSS with all connections open, KiB.
    pub server_rss_connected_kib: Option<u64>,
    /// Server VmRSS at the end of the hold, KiB.
    pub server_rss_after_hold_kib: Option<u64>,
    /// Server RSS growth per connection, KiB.
    pub server_rss_per_conn_kib: Option<f64>,
    /// This process's RSS growth per connection, KiB.
    pub bench_rss_per_conn_kib: Option<f64>,
}

/// Runs the idle benchmark.
pub async fn run(cfg: IdleConfig) -> anyhow::Result<IdleReport> {
    if cfg.connections == 0 {
        bail!("--connections must be positive");
    }
    let limit = raise_nofile_limit();
    if let Some(limit) = limit
        && (limit as usize) < cfg.connections + 64
    {
        eprintln!(
            "warning: RLIMIT_NOFILE is {limit}, below {} connections; raise the hard limit",
            cfg.connections
        );
    }
    let tokens = mint_tokens(&cfg.secret, "bench-idle-", cfg.connections)?;
    let server_before = cfg.server_pid.and_then(rss_kib);
    let server_cpu = || {
        cfg.server_pid
            .and_then(|p| crate::sfu::cpu_seconds(&p.to_string()))
    };
    let cpu_before = server_cpu();
    let bench_before = self_rss_kib();
    let plan = ConnectPlan {
        handler_for: None,
        url: cfg.url.clone(),
        options: ClientOptions {
            encoding: cfg.encoding,
            events_capacity: 8,
            command_capacity: 4,
            ..ClientOptions::default()
        },
        source_ips: cfg.source_ips.clone(),
        concurrency: cfg.concurrency,
        retries: cfg.retries,
    };
    eprintln!("opening {} connections…", cfg.connections);
    let connected = connect_many(&plan, tokens, |_, _, events| async { Ok(events) }).await;
    let connect_secs = connected.elapsed.as_secs_f64();
    let ok = connected.ok();
    let connect_cpu = match (cpu_before, server_cpu()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    for (kind, n) in &connected.failures {
        eprintln!("  {n} failed: {kind}");
    }
    eprintln!(
        "{ok} connected in {connect_secs:.2} s ({:.0}/s); holding {:?}…",
        ok as f64 / connect_secs.max(1e-9),
        cfg.hold
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_connected = cfg.server_pid.and_then(rss_kib);
    let bench_connected = self_rss_kib();

    let hold_start = Instant::now();
    tokio::time::sleep(cfg.hold.saturating_sub(Duration::from_millis(500))).await;
    let hold_secs = hold_start.elapsed().as_secs_f64() + 0.5;
    let server_after_hold = cfg.server_pid.and_then(rss_kib);
    let clients: Vec<_> = connected
        .clients
        .iter()
        .flatten()
        .map(|(c, _)| c.clone())
        .collect();
    let alive = clients.iter().filter(|c| !c.is_closed()).count();

    let close_start = Instant::now();
    futures_util::future::join_all(clients.iter().map(|c| c.close())).await;
    let close_secs = close_start.elapsed().as_secs_f64();

    let per_conn = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if ok > 0 => Some((b as f64 - a as f64) / ok as f64),
        _ => None,
    };
    Ok(IdleReport {
        bench: "idle",
        encoding: cfg.encoding.as_str(),
        connections: cfg.connections,
        connected: ok,
        failed: connected.failed(),
        retried: connected.retried,
        failures: connected.failures.clone(),
        source_ips: cfg.source_ips.len(),
        connect_secs,
        connect_rate: ok as f64 / connect_secs.max(1e-9),
        server_connect_cpu_secs: connect_cpu,
        connect_rate_per_server_core: connect_cpu.map(|c| ok as f64 / c.max(0.01)),
        alive_after_hold: alive,
        hold_secs,
        close_secs,
        server_rss_before_kib: server_before,
        server_rss_connected_kib: server_connected,
        server_rss_after_hold_kib: server_after_hold,
        server_rss_per_conn_kib: per_conn(server_before, server_connected),
        bench_rss_per_conn_kib: per_conn(bench_before, bench_connected),
    })
}

impl IdleReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("encoding", self.encoding.to_string()),
            (
                "connections",
                format!(
                    "{} of {} ({} failed, {} retried attempts) from {} source address(es)",
                    self.connected,
                    self.connections,
                    self.failed,
                    self.retried,
                    self.source_ips.max(1)
                ),
            ),
            (
                "connect",
                format!(
                    "{:.2} s ({:.0} conn/s)",
                    self.connect_secs, self.connect_rate
                ),
            ),
            (
                "held",
                format!(
                    "{:.1} s, {} still open",
                    self.hold_secs, self.alive_after_hold
                ),
            ),
            ("close", format!("{:.2} s", self.close_secs)),
        ];
        if let (Some(c), Some(r)) = (
            self.server_connect_cpu_secs,
            self.connect_rate_per_server_core,
        ) {
            rows.push((
                "server CPU while connecting",
                format!("{c:.2} s ({r:.0} conn per CPU-second)"),
            ));
        }
        if let (Some(a), Some(b)) = (self.server_rss_before_kib, self.server_rss_connected_kib) {
            rows.push((
                "server RSS",
                format!(
                    "{} → {} ({} per connection)",
                    human_kib(a as f64),
                    human_kib(b as f64),
                    human_kib(self.server_rss_per_conn_kib.unwrap_or(0.0))
                ),
            ));
        }
        if let Some(r) = self.bench_rss_per_conn_kib {
            rows.push(("bench RSS per connection", human_kib(r)));
        }
        crate::table(&rows)
    }
}
