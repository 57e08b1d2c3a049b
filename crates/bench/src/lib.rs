//! Switchboard load generator (the `switchboard-bench` binary).
//!
//! * [`fanout`]: N subscribers spread over channels; a publisher (server API
//!   or WebSocket) at a fixed rate; each payload carries a sequence number and
//!   a send timestamp (nanoseconds since the run's start on this process's
//!   monotonic clock), so every subscriber records end-to-end latency into an
//!   HDR histogram and counts missing and duplicate publications.
//! * [`idle`]: many idle connections: connect rate (handshake + `connect`
//!   with token verification) and server RSS per connection.
//!
//! Connections are [`switchboard_client::Client`]s with small WebSocket
//! buffers ([`switchboard_client::lean_ws_config`]), optionally bound to
//! several source addresses round-robin (`--source-ips 127.0.0.1-127.0.0.20`)
//! so that tens of thousands of connections neither exhaust ephemeral ports nor
//! hit the server's per-IP connection rate limit. The process raises its
//! `RLIMIT_NOFILE` soft limit to the hard limit at start (if the hard limit is
//! too low, raise it with `ulimit -Hn` as root first).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod common;
pub mod fanout;
pub mod idle;

/// Renders `(label, value)` rows as an aligned two-column table.
pub fn table(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out
}
