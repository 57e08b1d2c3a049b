//! Pieces shared by the benchmarks: durations, source addresses, tokens,
//! process RSS, file-descriptor limit, sequence tracking, payloads, and
//! opening many connections with bounded concurrency and retries.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use switchboard_auth::{ConnectionTokenSpec, Minter};
use switchboard_client::{Client, ClientError, ClientOptions, Encoding, EventHandler, Events};
use tokio::sync::Semaphore;

/// Parses `30s`, `500ms`, `2m`, `1h`, `1.5s` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the JSON or protobuf encoding name.
pub fn parse_encoding(s: &str) -> Result<Encoding, String> {
    Encoding::from_format(s).ok_or_else(|| format!("unknown encoding {s:?} (json or protobuf)"))
}

/// Parses a comma-separated list of source addresses; an item may be an
/// inclusive IPv4 range such as `127.0.0.1-127.0.0.20`.
pub fn parse_source_ips(s: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if let Some((a, b)) = item.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .with_context(|| format!("bad address in {item:?}"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .with_context(|| format!("bad address in {item:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                bail!("bad address range {item:?}");
            }
            out.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
        } else {
            out.push(
                item.parse()
                    .with_context(|| format!("bad address {item:?}"))?,
            );
        }
    }
    Ok(out)
}

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Mints `n` HS256 connection tokens for users `{prefix}{i}` (valid 24 h).
pub fn mint_tokens(secret: &str, prefix: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let minter = Minter::hs256(secret).context("token secret")?;
    let now = unix_now();
    (0..n)
        .map(|i| {
            let spec = ConnectionTokenSpec {
                user: format!("{prefix}{i}"),
                ttl: Some(Duration::from_secs(24 * 3600)),
                ..Default::default()
            };
            minter
                .mint_connection(&spec, now)
                .context("minting a token")
        })
        .collect()
}

/// `VmRSS` of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    rss_of(&format!("/proc/{pid}/status"))
}

/// `VmRSS` of this process in KiB.
pub fn self_rss_kib() -> Option<u64> {
    rss_of("/proc/self/status")
}

fn rss_of(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit. (Equivalent to `ulimit -n $(ulimit -Hn)`.)
pub fn raise_nofile_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Tracks the sequence numbers of one stream at O(1) memory: received,
/// duplicates and missing numbers, tolerating reordering within a window of
/// 64 numbers (a number more than 64 behind the newest is counted missing, and
/// a duplicate if it arrives later).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqTracker {
    /// Lowest number not yet accounted for.
    base: u64,
    /// Bit `i`: `base + i` was received (bit 0 is always clear).
    seen: u64,
    /// Distinct numbers received.
    pub received: u64,
    /// Numbers received more than once (or too late).
    pub duplicates: u64,
    /// Numbers known to be missing (final after [`SeqTracker::finish`]).
    pub missing: u64,
}

impl SeqTracker {
    /// Records one received sequence number.
    pub fn record(&mut self, seq: u64) {
        if seq < self.base {
            self.duplicates += 1;
            return;
        }
        let mut off = seq - self.base;
        if off >= 64 {
            let shift = off - 63;
            if shift >= 64 {
                self.missing += (64 - u64::from(self.seen.count_ones())) + (shift - 64);
                self.seen = 0;
            } else {
                let dropped = self.seen & ((1u64 << shift) - 1);
                self.missing += shift - u64::from(dropped.count_ones());
                self.seen >>= shift;
            }
            self.base += shift;
            off = 63;
        }
        let bit = 1u64 << off;
        if self.seen & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen |= bit;
        self.received += 1;
        let run = self.seen.trailing_ones();
        self.seen = if run >= 64 { 0 } else { self.seen >> run };
        self.base += u64::from(run);
    }

    /// Accounts for every number below `total` not received as missing.
    pub fn finish(&mut self, total: u64) {
        if total <= self.base {
            return;
        }
        let span = total - self.base;
        let seen = if span >= 64 {
            self.seen
        } else {
            self.seen & ((1u64 << span) - 1)
        };
        self.missing += span - u64::from(seen.count_ones());
        self.base = total;
        self.seen = 0;
    }
}

/// A publication payload: `{"seq":N,"ts":NANOS,"pad":"xxx…"}`, padded to
/// about `size` bytes. `ts` is nanoseconds since the run's start instant.
pub fn payload(seq: u64, ts_nanos: u64, size: usize) -> String {
    let mut s = format!("{{\"seq\":{seq},\"ts\":{ts_nanos},\"pad\":\"");
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// The `(seq, ts)` of a payload made by [`payload`].
pub fn parse_payload(data: &[u8]) -> Option<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct P {
        seq: u64,
        ts: u64,
    }
    let p: P = serde_json::from_slice(data).ok()?;
    Some((p.seq, p.ts))
}

/// Nanoseconds since `start`.
pub fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Makes the event handler of connection `i`.
pub type HandlerFactory = Arc<dyn Fn(usize) -> EventHandler + Send + Sync>;

/// How to open a batch of connections.
#[derive(Clone)]
pub struct ConnectPlan {
    /// Per-connection event handler (pushes are then handled on the
    /// connection task instead of being queued).
    pub handler_for: Option<HandlerFactory>,
    /// WebSocket URL.
    pub url: String,
    /// Options shared by all connections (token and local address are set per
    /// connection).
    pub options: ClientOptions,
    /// Source addresses, used round-robin (empty: let the OS choose).
    pub source_ips: Vec<IpAddr>,
    /// Connections opened at the same time.
    pub concurrency: usize,
    /// Attempts after the first for a failed connection (with backoff).
    pub retries: u32,
}

/// Outcome of [`connect_many`].
pub struct Connected<R> {
    /// The successful connections with what the setup step returned, by index
    /// (`None` where every attempt failed).
    pub clients: Vec<Option<(Client, R)>>,
    /// Wall time from the first attempt to the last result.
    pub elapsed: Duration,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Final failures, counted by error message.
    pub failures: BTreeMap<String, u64>,
}

impl<R> Connected<R> {
    /// Number of successful connections.
    pub fn ok(&self) -> usize {
        self.clients.iter().filter(|c| c.is_some()).count()
    }

    /// Number of connections that failed.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Opens one connection per token, `plan.concurrency` at a time, retrying
/// failures with exponential backoff. `setup` runs on each fresh connection
/// (e.g. to subscribe and start reading its events) and counts as part of the
/// attempt; what it returns is kept with the client.
pub async fn connect_many<F, Fut, R>(
    plan: &ConnectPlan,
    tokens: Vec<String>,
    setup: F,
) -> Connected<R>
where
    F: Fn(usize, Client, Events) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, ClientError>> + Send,
    R: Send + 'static,
{
    let n = tokens.len();
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let setup = Arc::new(setup);
    let plan = Arc::new(plan.clone());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let gate = gate.clone();
        let setup = setup.clone();
        let plan = plan.clone();
        let Ok(permit) = gate.acquire_owned().await else {
            break;
        };
        tasks.spawn(async move {
            let _permit = permit;
            let mut options = plan.options.clone();
            options.token = token;
            if let Some(make) = &plan.handler_for {
                options.event_handler = Some(make(i));
            }
            if !plan.source_ips.is_empty() {
                options.local_addr = Some(plan.source_ips[i % plan.source_ips.len()]);
            }
            let mut retried = 0u64;
            let mut backoff = Duration::from_millis(50);
            loop {
                let attempt = async {
                    let (client, events) = Client::connect(&plan.url, options.clone()).await?;
                    let kept = setup(i, client.clone(), events).await?;
                    Ok::<_, ClientError>((client, kept))
                };
                match attempt.await {
                    Ok(conn) => return (i, Ok(conn), retried),
                    Err(e) if retried < u64::from(plan.retries) => {
                        retried += 1;
                        let _ = e;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => return (i, Err(e), retried),
                }
            }
        });
    }
    let mut clients: Vec<Option<(Client, R)>> = (0..n).map(|_| None).collect();
    let mut failures = BTreeMap::new();
    let mut retried = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, result, r)) = joined else { continue };
        retried += r;
        match result {
            Ok(conn) => clients[i] = Some(conn),
            Err(e) => *failures.entry(error_kind(&e)).or_insert(0) += 1,
        }
    }
    Connected {
        clients,
        elapsed: start.elapsed(),
        retried,
        failures,
    }
}

/// A short, groupable description of an error.
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Transport(m) => {
            let m: String = m.chars().take(80).collect();
            format!("transport: {m}")
        }
        other => other.to_string(),
    }
}

/// Formats KiB as a human size.
pub fn human_kib(kib: f64) -> String {
    if kib >= 1024.0 * 1024.0 {
        format!("{:.2} GiB", kib / 1024.0 / 1024.0)
    } else if kib >= 1024.0 {
        format!("{:.1} MiB", kib / 1024.0)
    } else {
        format!("{kib:.1} KiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn source_ips() {
        let ips = parse_source_ips("127.0.0.1-127.0.0.3, ::1").unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[2].to_string(), "127.0.0.3");
        assert!(parse_source_ips("127.0.0.5-127.0.0.1").is_err());
    }

    #[test]
    fn payload_round_trip() {
        let p = payload(42, 123_456_789, 128);
        assert_eq!(p.len(), 128);
        assert_eq!(parse_payload(p.as_bytes()), Some((42, 123_456_789)));
        let p = payload(1, 2, 0);
        assert_eq!(parse_payload(p.as_bytes()), Some((1, 2)));
    }

    #[test]
    fn seq_tracker_in_order() {
        let mut t = SeqTracker::default();
        for i in 0..1000 {
            t.record(i);
        }
        t.finish(1000);
        assert_eq!((t.received, t.missing, t.duplicates), (1000, 0, 0));
    }

    #[test]
    fn seq_tracker_gaps_dups_reorder() {
        let mut t = SeqTracker::default();
        // 0..100 reordered in pairs, 50 missing, 10 duplicated.
        for i in (0..100u64).step_by(2) {
            if i != 50 {
                t.record(i + 1);
                t.record(i);
            } else {
                t.record(i + 1);
            }
        }
        t.record(10);
        t.finish(100);
        assert_eq!((t.received, t.missing, t.duplicates), (99, 1, 1));

        // A big gap, then the tail never arrives.
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(1000);
        t.record(5); // too late: counted missing then duplicate
        t.finish(1010);
        assert_eq!(t.received, 2);
        assert_eq!(t.missing, 1010 - 2);
        assert_eq!(t.duplicates, 1);

        // Nothing received.
        let mut t = SeqTracker::default();
        t.finish(7);
        assert_eq!(t.missing, 7);
    }
}
