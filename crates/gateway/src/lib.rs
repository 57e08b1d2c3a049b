//! Client connections for Switchboard: transports, sessions, heartbeats,
//! per-connection send queues and limits.
//!
//! A [`Gateway`] serves the Centrifugo client protocol v2 over WebSocket
//! (`/connection/websocket`, JSON text frames or protobuf binary frames with
//! `?format=protobuf`), over HTTP-streaming and SSE with bidirectional
//! emulation (`/connection/http_stream`, `/connection/sse`, commands through
//! `/emulation`), and over the unidirectional `uni_websocket`, `uni_sse` and
//! `uni_http_stream` transports. Each connection is one task (the shared
//! driver of `transport.rs`) running a
//! [`session::Session`] (the protocol state machine) against a [`hub::Conn`]
//! (its bounded send queue, shared with the [`Hub`] that fans publications
//! out). Everything durable goes through the [`Engine`] the server provides.
//!
//! ```text
//!  socket ─frames─▶ Session ─publish/history/presence─▶ Engine (store, bus)
//!     ▲                │                                    │
//!     └─batch◀── Conn queue ◀── Hub::deliver_* ◀────────── bus
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod convert;
pub mod engine;
pub mod hub;
pub mod session;
mod stream;
mod transport;
mod ws;
mod wsframe;

pub use engine::Engine;
pub use hub::Hub;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchboard_core::namespace::Namespaces;
use switchboard_proto::codec::Encoding;
use switchboard_proto::codes::Disconnect;

/// Limits and timings of client connections.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest accepted frame from a client.
    pub max_frame_bytes: usize,
    /// Largest publication payload from a client.
    pub max_publication_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_channels_per_connection: usize,
    /// Longest channel name.
    pub max_channel_length: usize,
    /// Commands one frame may carry.
    pub max_commands_per_frame: usize,
    /// Server ping period; clients answer with a pong.
    pub ping_interval: Duration,
    /// How long to wait for a pong before disconnecting.
    pub pong_timeout: Duration,
    /// How long a new connection may take to send `connect`.
    pub connect_timeout: Duration,
    /// Grace after token expiry before the connection is closed.
    pub expired_close_delay: Duration,
    /// Send queue bound in bytes.
    pub send_queue_max_bytes: usize,
    /// Send queue bound in frames.
    pub send_queue_max_messages: usize,
    /// Bytes written per socket write at most.
    pub write_batch_bytes: usize,
    /// Sustained commands per second per connection.
    pub commands_per_second: NonZeroU32,
    /// Command burst per connection.
    pub commands_burst: NonZeroU32,
    /// Sustained connection attempts per second per IP address.
    pub connections_per_second_per_ip: NonZeroU32,
    /// Connection attempt burst per IP address.
    pub connections_burst_per_ip: NonZeroU32,
    /// Accept connections without a token (user id "").
    pub allow_anonymous: bool,
    /// Presence entries expire this long after the last heartbeat.
    pub presence_ttl: Duration,
    /// Most publications one history call returns.
    pub history_max_limit: usize,
    /// Node name reported to clients.
    pub node_name: String,
    /// Server version reported to clients.
    pub version: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let nz = |n| NonZeroU32::new(n).expect("non-zero");
        Self {
            max_frame_bytes: 64 * 1024,
            max_publication_bytes: 64 * 1024,
            max_channels_per_connection: 128,
            max_channel_length: 255,
            max_commands_per_frame: 100,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            expired_close_delay: Duration::from_secs(25),
            send_queue_max_bytes: 1024 * 1024,
            send_queue_max_messages: 10_000,
            write_batch_bytes: 64 * 1024,
            commands_per_second: nz(100),
            commands_burst: nz(200),
            connections_per_second_per_ip: nz(200),
            connections_burst_per_ip: nz(500),
            allow_anonymous: false,
            presence_ttl: Duration::from_secs(60),
            history_max_limit: 10_000,
            node_name: "switchboard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

type IpLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// State shared by every connection of a gateway.
pub struct Shared {
    config: GatewayConfig,
    engine: Arc<dyn Engine>,
    hub: Arc<Hub>,
    verifier: Arc<dyn auth::Authenticator>,
    namespaces: Arc<Namespaces>,
    ip_limiter: IpLimiter,
    /// One clock for every connection's command limiter: a fresh default
    /// clock calibrates itself (cpuid and timing), a measurable part of a
    /// connect.
    clock: governor::clock::DefaultClock,
    draining: AtomicBool,
    /// Emulated sessions (HTTP-streaming, SSE) by session id: where
    /// `/emulation` requests deliver their commands.
    emulation: stream::Registry,
}

/// A new connection record for a transport.
fn new_conn(shared: &Shared, encoding: Encoding, unidirectional: bool) -> Arc<hub::Conn> {
    let cfg = &shared.config;
    let conn = hub::Conn::new(
        shared.hub.next_conn_id(),
        encoding,
        cfg.send_queue_max_bytes,
        cfg.send_queue_max_messages,
    );
    Arc::new(if unidirectional {
        conn.unidirectional()
    } else {
        conn
    })
}

impl Shared {
    fn command_limiter(&self) -> governor::DefaultDirectRateLimiter {
        let q = governor::Quota::per_second(self.config.commands_per_second)
            .allow_burst(self.config.commands_burst);
        governor::RateLimiter::direct_with_clock(q, self.clock.clone())
    }
}

/// The client-facing side of a node.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway using `engine` for everything durable and `hub` for fan-out.
    pub fn new(
        config: GatewayConfig,
        engine: Arc<dyn Engine>,
        hub: Arc<Hub>,
        verifier: Arc<dyn auth::Authenticator>,
        namespaces: Arc<Namespaces>,
    ) -> Self {
        let q = governor::Quota::per_second(config.connections_per_second_per_ip)
            .allow_burst(config.connections_burst_per_ip);
        let shared = Shared {
            config,
            engine,
            hub,
            verifier,
            namespaces,
            ip_limiter: governor::RateLimiter::keyed(q),
            clock: Default::default(),
            draining: AtomicBool::new(false),
            emulation: Default::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The hub of this gateway's connections.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// Routes of the client transports, to merge into the server's router.
    /// Needs `ConnectInfo<SocketAddr>` (serve with `into_make_service_with_connect_info`).
    pub fn router(&self) -> axum::Router {
        ws::router(self.shared.clone()).merge(stream::router(self.shared.clone()))
    }

    /// Stops accepting connections and asks every client to reconnect
    /// elsewhere (shutdown code, reconnect allowed).
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        for conn in self.shared.hub.all_conns() {
            conn.disconnect(Disconnect::SHUTDOWN);
        }
    }

    /// Whether [`Gateway::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Disconnects every connection whose token `still_valid` rejects
    /// (revoked token, ended session, disabled user) with code 3500.
    /// Returns how many were disconnected.
    pub fn revalidate(&self, still_valid: impl Fn(&auth::TokenIdentity) -> bool) -> usize {
        let mut n = 0;
        for conn in self.shared.hub.all_conns() {
            if !still_valid(&conn.token_identity()) {
                conn.disconnect(Disconnect::new(
                    Disconnect::INVALID_TOKEN.code,
                    "token revoked",
                ));
                n += 1;
            }
        }
        n
    }

    /// Drops rate-limiter state of idle IP addresses (call periodically).
    pub fn housekeeping(&self) {
        self.shared.ip_limiter.retain_recent();
    }
}
