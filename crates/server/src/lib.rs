//! The composition root of Switchboard: configuration, the node, the HTTP
//! server (client transports, server API, metrics, health) and the
//! `switchboard` binary.
//!
//! [`Server::start`] wires a store, a bus, a hub, the node engine and the
//! gateway together and serves them; [`ServerHandle::shutdown`] drains
//! clients and flushes the store. Tests start servers in-process this way.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod api_auth;
pub mod auth;
pub mod calllog;
pub mod calls;
pub mod cluster;
pub mod config;
pub mod guard;
pub mod http_client;
pub mod node;
pub mod oauth;
pub mod ringing;
pub mod rtcroute;
pub mod stats;
pub mod web;
pub mod webhooks;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use config::Config;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use node::{HubDelivery, Node};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use switchboard_bus::{Bus, InProcessBus, NatsBus, NodeInfo, NodeRegistry, RegistryConfig};
use switchboard_gateway::{Gateway, Hub};
use switchboard_store::{DynStore, PgConfig, PgStore, SqliteStore};
use tokio::sync::watch;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may exist in tests that embed several servers;
        // the handle still renders what this recorder sees.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    auth: Arc<auth::AuthService>,
}

impl ServerHandle {
    /// The address the HTTP listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drains clients, stops the listener, flushes the store, and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.done.await.context("server task panicked")?
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("server task panicked")?
    }

    /// The node's authorization server (users, clients, keys).
    pub fn auth(&self) -> &Arc<auth::AuthService> {
        &self.auth
    }

    /// A sender that triggers a graceful shutdown.
    pub fn shutdown_trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The server composition.
pub struct Server;

impl Server {
    /// Opens the store, builds the node and starts serving on `config.http.addr`.
    pub async fn start(mut config: Config) -> anyhow::Result<ServerHandle> {
        let handle = metrics_handle().clone();
        stats::ensure_namespace(&mut config.channel);
        std::fs::create_dir_all(&config.node.data_dir).with_context(|| {
            format!("creating data directory {}", config.node.data_dir.display())
        })?;
        let cl = config.cluster.clone();
        let store: DynStore = match cl.store {
            config::StoreKind::Sqlite => {
                let db = config.node.data_dir.join("switchboard.db");
                Arc::new(
                    SqliteStore::open(&db)
                        .await
                        .with_context(|| format!("opening store {}", db.display()))?,
                )
            }
            config::StoreKind::Postgres => Arc::new(
                PgStore::open(&pg_config(&cl))
                    .await
                    .context("opening the PostgreSQL store (cluster.postgres.url)")?,
            ),
        };
        let node_id = cl.node_id.clone().unwrap_or_else(|| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{}-{}", config.node.name, &suffix[..8])
        });
        let namespaces = Arc::new(config.channel.clone());
        let hub = Arc::new(Hub::new(namespaces.clone()));
        let store_guard = Arc::new(guard::StoreGuard::new(cl.breaker.config()));
        let (bus, nats): (Arc<dyn Bus>, Option<NatsBus>) = match cl.bus {
            config::BusKind::Memory => {
                let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
                bus.set_handler(Arc::new(HubDelivery(hub.clone())));
                (bus, None)
            }
            config::BusKind::Nats => {
                let nats = NatsBus::connect(nats_config(&cl, &node_id))
                    .await
                    .context("connecting to NATS (cluster.nats.urls)")?;
                let bus: Arc<dyn Bus> = guard::GuardedBus::new(nats.clone(), cl.breaker.config());
                (bus, Some(nats))
            }
        };
        let order = nats.as_ref().map(|nats| {
            let order = cluster::ChannelOrder::new(
                hub.clone(),
                store.clone(),
                store_guard.clone(),
                namespaces.clone(),
                bus.clone(),
            );
            bus.set_handler(order.clone());
            order.follow_reconnects(nats.clone());
            order
        });
        let mut node = Node::new(
            store.clone(),
            bus,
            namespaces.clone(),
            config.history.idempotency_window,
            config.client.presence_ttl,
            config.history.max_page,
        );
        node.set_store_guard(store_guard.clone());
        let node = Arc::new(node);
        let listener = tokio::net::TcpListener::bind(config.http.addr)
            .await
            .with_context(|| format!("binding {}", config.http.addr))?;
        let addr = listener.local_addr()?;
        let mut auth_config = config.auth.clone();
        if auth_config.issuer == switchboard_auth::oauth::AuthConfig::default().issuer {
            // Follow the address actually bound unless an issuer is configured.
            auth_config.issuer = format!("http://{addr}");
        }
        let verifier =
            switchboard_auth::Verifier::new(&config.token).context("token configuration")?;
        let auth =
            auth::AuthService::open(store.clone(), store_guard.clone(), auth_config, verifier)
                .await
                .context("auth state")?;
        if let Err(e) = auth.load_external_jwks().await {
            tracing::warn!(error = %e, "loading external issuers' JWKS");
        }
        let gateway = Gateway::new(
            config.gateway(),
            node.clone(),
            hub.clone(),
            auth.clone(),
            namespaces,
        );
        auth.attach_gateway(gateway.clone());
        let call_log = calllog::CallLog::open(
            store.clone(),
            webhooks::Webhooks::new(config.webhooks.clone()).map_err(|e| anyhow::anyhow!(e))?,
        )
        .await?;
        let ringing =
            ringing::Ringing::start(hub.clone(), call_log.clone(), config.media.ring_timeout);
        node.attach_ringing(ringing.clone());
        let media = if config.media.enabled && cl.has_role(config::Role::Media) {
            let m = &config.media;
            let media_cfg = switchboard_media::MediaConfig::new(m.udp_addr)
                .with_advertised_ips(m.advertised_ips.clone())
                .with_max_participants(m.max_participants)
                .with_max_tracks_per_participant(m.max_tracks_per_participant)
                .with_connect_timeout(m.connect_timeout)
                .with_idle_timeout(m.idle_timeout);
            let (sfu, events) = switchboard_media::Sfu::start(media_cfg)
                .await
                .with_context(|| format!("starting the SFU on udp {}", m.udp_addr))?;
            tracing::info!(udp = %sfu.local_addr(), "media listening");
            let calls = calls::Calls::new(
                sfu,
                hub.clone(),
                call_log.clone(),
                calls::CallsConfig {
                    require_grants: m.require_grants,
                    ice_servers: m.ice_servers.clone(),
                    turn: m.turn.clone(),
                    room_defaults: switchboard_core::room::RoomOptions {
                        mode: m.default_mode,
                        max_participants: m.max_participants,
                        p2p_max_participants: m.p2p_max_participants,
                        empty_timeout: m.empty_timeout,
                    },
                    call_room_timeout: m.ring_timeout,
                },
            );
            node.attach_calls(calls.clone());
            ringing.attach_calls(calls.clone());
            Some((calls.clone(), tokio::spawn(calls.run_events(events))))
        } else {
            None
        };
        let config_keys = api::ConfigKeys(config.api.all_keys());
        let api_state = Arc::new(api::ApiState {
            node: node.clone(),
            gateway: gateway.clone(),
            keys: config_keys.clone(),
            auth: auth.clone(),
            max_channel_length: config.client.max_channel_length,
            max_publication_bytes: config.client.max_publication_bytes,
            node_name: config.node.name.clone(),
            node_uid: if nats.is_some() {
                node_id.clone()
            } else {
                uuid::Uuid::new_v4().to_string()
            },
            started: Instant::now(),
            call_log: call_log.clone(),
        });
        let cluster = match (nats, order) {
            (Some(nats), Some(order)) => {
                let mut registry_config = RegistryConfig::for_bus(&nats);
                registry_config.ttl = cl.nats.registry_ttl;
                let registry = NodeRegistry::open(&nats, registry_config)
                    .await
                    .context("opening the node registry on JetStream KV")?;
                let host = if addr.ip().is_unspecified() {
                    SocketAddr::from(([127, 0, 0, 1], addr.port()))
                } else {
                    addr
                };
                let info = NodeInfo {
                    id: node_id.clone(),
                    roles: cl.role_names(),
                    address: cl
                        .advertise_url
                        .clone()
                        .unwrap_or_else(|| format!("http://{host}")),
                    load: 0.0,
                    meta: [
                        ("name".to_string(), config.node.name.clone()),
                        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                    ]
                    .into_iter()
                    .collect(),
                    ..NodeInfo::default()
                };
                let cluster =
                    cluster::Cluster::start(nats, registry, order, info, cl.nats.request_timeout)
                        .await
                        .context("registering in the node registry")?;
                node.attach_cluster(cluster.clone());
                let router = rtcroute::MediaRouter::start(
                    &cluster,
                    hub.clone(),
                    media.as_ref().map(|(calls, _)| calls.clone()),
                );
                node.attach_router(router.clone());
                ringing.attach_router(router);
                let state = api_state.clone();
                cluster.serve(
                    node.clone(),
                    hub.clone(),
                    Arc::new(move || api::local_node_result(&state)),
                );
                tracing::info!(node = %node_id, roles = ?cl.role_names(), "joined the cluster");
                Some(cluster)
            }
            _ => None,
        };
        let ready = Arc::new(AtomicBool::new(true));
        let ready2 = ready.clone();
        let mut app = Router::new();
        if cl.has_role(config::Role::Gateway) {
            app = app.merge(gateway.router());
        }
        if cl.has_role(config::Role::Auth) {
            app = app
                .merge(oauth::router(auth.clone()))
                .merge(web::router(auth.clone()));
        }
        if cl.has_role(config::Role::Api) {
            app = app.route("/api/{method}", post(api::handle).with_state(api_state));
        }
        let app = app
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = ready2.load(Ordering::SeqCst);
                    async move {
                        if ready {
                            (StatusCode::OK, "ready").into_response()
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
                        }
                    }
                }),
            )
            .route("/metrics", get(move || std::future::ready(handle.render())))
            .layer(axum::Extension(config_keys));
        let (tx, mut rx) = watch::channel(false);
        let auth_handle = auth.clone();
        let stats_task = stats::spawn(node.clone(), hub.clone(), config.node.name.clone());

        let housekeeping = {
            let node = node.clone();
            let gateway = gateway.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut n: u64 = 0;
                loop {
                    tick.tick().await;
                    n += 1;
                    // Auth events appended by other processes or nodes.
                    if let Err(e) = auth.poll().await {
                        tracing::warn!(error = %e, "reading auth events");
                    }
                    if n.is_multiple_of(5) {
                        node.expire_presence().await;
                        gateway.housekeeping();
                        auth.write(|s| s.prune(node::now_ms() / 1000));
                    }
                }
            })
        };

        let drain_timeout = config.shutdown.drain_timeout;
        let done = tokio::spawn(async move {
            let mut stop_rx = rx.clone();
            let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = http_stop_rx.await;
            });
            let server_task = tokio::spawn(async move { serve.await });
            // Wait for the shutdown signal.
            let _ = stop_rx.wait_for(|v| *v).await;
            let _ = rx.borrow_and_update();
            tracing::info!("shutting down: draining clients");
            ready.store(false, Ordering::SeqCst);
            if let Some(cluster) = &cluster
                && let Some(router) = node.router()
                && node.calls().is_some()
            {
                // Rooms first: no new ones here, and participants connected
                // elsewhere move to another media node.
                cluster.set_draining();
                let moved = router.drain(Duration::from_secs(5)).await;
                tracing::info!(rooms = moved, "media drained");
            }
            gateway.drain();
            let deadline = Instant::now() + drain_timeout;
            while gateway.hub().num_conns() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = http_stop_tx.send(());
            match tokio::time::timeout(Duration::from_secs(2), server_task).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server error"),
                Ok(_) => {}
                Err(_) => tracing::warn!("http server did not stop in time"),
            }
            housekeeping.abort();
            stats_task.abort();
            if let Some((calls, events)) = media {
                calls.shutdown().await;
                events.abort();
            }
            if let Some(cluster) = cluster {
                cluster.leave().await;
            }
            store.close().await.context("closing store")?;
            tracing::info!("shutdown complete");
            Ok(())
        });
        Ok(ServerHandle {
            addr,
            shutdown: tx,
            done,
            auth: auth_handle,
        })
    }
}

/// The PostgreSQL settings of `[cluster.postgres]`.
pub fn pg_config(cl: &config::ClusterConfig) -> PgConfig {
    let mut pg = PgConfig::new(cl.postgres.url.clone());
    pg.pool_size = cl.postgres.pool_size;
    pg.schema = cl.postgres.schema.clone();
    pg
}

/// The NATS settings of `[cluster.nats]` for node `node_id`.
pub fn nats_config(cl: &config::ClusterConfig, node_id: &str) -> switchboard_bus::NatsConfig {
    use switchboard_bus::NatsAuth;
    let n = &cl.nats;
    let auth = if let Some(path) = &n.credentials {
        NatsAuth::CredentialsFile(path.clone())
    } else if let (Some(user), Some(password)) = (&n.user, &n.password) {
        NatsAuth::UserPassword {
            user: user.clone(),
            password: password.clone(),
        }
    } else if let Some(token) = &n.token {
        NatsAuth::Token(token.clone())
    } else {
        NatsAuth::None
    };
    switchboard_bus::NatsConfig {
        urls: n.urls.clone(),
        auth,
        tls: n.tls,
        tls_ca_file: n.tls_ca_file.clone(),
        subject_prefix: n.subject_prefix.clone(),
        node_id: node_id.to_string(),
        request_timeout: n.request_timeout,
        ..switchboard_bus::NatsConfig::default()
    }
}
