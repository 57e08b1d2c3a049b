//! Switchboard load generator (the `switchboard-bench` binary).
//!
//! * [`fanout`]: N subscribers spread over channels; a publisher (server API
//!   or WebSocket) at a fixed rate; each payload carries a sequence number and
//!   a send timestamp (nanoseconds since the run's start on this process's
//!   monotonic clock), so every subscriber records end-to-end latency into an
//!   HDR histogram and counts missing and duplicate publications.
//! * [`chaos`]: three cluster nodes on NATS + PostgreSQL under load, random
//!   SIGKILLs and restarts; counts acknowledged, delivered, lost, duplicated
//!   and late publications (see `scripts/chaos`).
//! * [`idle`]: many idle connections: connect rate (handshake + `connect`
//!   with token verification) and server RSS per connection.
//! * [`peers`]: the fan-out and idle scenarios against Switchboard, a plain
//!   `ws` broadcast server, socket.io 4 and NATS core with one driver
//!   (`peer-fanout`, `peer-idle`; `scripts/bench` runs them side by side).
//! * [`sfu`]: WebRTC rooms over real `rtc.*` signaling with str0m media
//!   clients: RTP packets forwarded per server CPU-second, CPU and memory
//!   per subscriber, frame latency through the SFU.
//! * [`storm`]: a reconnect storm: subscribers drop at once, publications
//!   go on, all reconnect together with recovery; time until all recovered
//!   and server CPU.
//!
//! Connections are [`switchboard_client::Client`]s with small WebSocket
//! buffers ([`switchboard_client::lean_ws_config`]), optionally bound to
//! several source addresses round-robin (`--source-ips 127.0.0.1-127.0.0.20`)
//! so that tens of thousands of connections neither exhaust ephemeral ports nor
//! hit the server's per-IP connection rate limit. The process raises its
//! `RLIMIT_NOFILE` soft limit to the hard limit at start (if the hard limit is
//! too low, raise it with `ulimit -Hn` as root first; the server needs as many
//! descriptors as connections too).
//!
//! ```text
//! cargo build --release -p switchboard-server -p switchboard-bench
//! target/release/switchboard serve --dev --http-addr 127.0.0.1:8000 --data-dir "$(mktemp -d)" &
//! PID=$!
//! target/release/switchboard-bench fanout --url ws://127.0.0.1:8000/connection/websocket \
//!     --api http://127.0.0.1:8000 --api-key dev-api-key --secret dev-token-secret \
//!     --subscribers 1000 --channels 1 --rate 100 --duration 10s --server-pid $PID
//! target/release/switchboard-bench idle --url ws://127.0.0.1:8000/connection/websocket \
//!     --connections 10000 --source-ips 127.0.0.1-127.0.0.50 --hold 5s --server-pid $PID
//! ```
//!
//! Notes on reading the numbers:
//!
//! * The server limits connection attempts per client IP (200/s, burst 500 by
//!   default): spread big runs over source addresses (`--source-ips`) or raise
//!   `SWITCHBOARD_CLIENT_CONNECTIONS_PER_SECOND_PER_IP` /
//!   `SWITCHBOARD_CLIENT_CONNECTIONS_BURST_PER_IP` on the server. Rate-limited
//!   attempts are retried with backoff (`--connect-retries`) and counted.
//! * It also limits commands per connection (100/s): with `--publish-via ws`
//!   use enough `--publishers`.
//! * `--dev` channels have presence and forced join/leave pushes, so N
//!   subscribers of one channel cost O(N²) join pushes while connecting; turn
//!   them off for pure fan-out numbers with
//!   `SWITCHBOARD_CHANNEL_DEFAULTS_FORCE_PUSH_JOIN_LEAVE=false
//!   SWITCHBOARD_CHANNEL_DEFAULTS_JOIN_LEAVE=false
//!   SWITCHBOARD_CHANNEL_DEFAULTS_PRESENCE=false`.
//! * Latency is measured in this process (publish send time to receipt on the
//!   subscriber's connection task), so the bench and the server share the
//!   machine's CPUs: on a small machine the bench's own load is part of what
//!   is measured (its CPU time is small next to the server's, see `time`).
//! * Missing numbers include publishes that failed; reordering within 64
//!   publications is tolerated (see [`common::SeqTracker`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod chaos;
pub mod common;
pub mod fanout;
pub mod idle;
pub mod peers;
pub mod sfu;
pub mod storm;

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
