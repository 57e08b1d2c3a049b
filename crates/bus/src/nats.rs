//! The NATS bus: channel fan-out on per-channel subjects, node-directed
//! request/reply and broadcasts.

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use async_nats::{
    Client, ConnectOptions, Event, Request, RequestErrorKind, Subscriber, client::PublishErrorKind,
    connection::State,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Bus, BusError, BusHandler, BusMessage, codec,
    subject::{SUBJECT_ESCAPE, escape, escape_into, unescape},
};

/// How a node authenticates to NATS.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (or credentials inside the URL, `nats://user:pass@host`).
    #[default]
    None,
    /// A token (`authorization { token: … }` on the server).
    Token(String),
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A `.creds` file (JWT + NKey seed), as issued by `nsc`.
    CredentialsFile(PathBuf),
    /// An NKey seed (`SU…`).
    NKey(String),
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(***)"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Self::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
            Self::NKey(_) => f.write_str("NKey(***)"),
        }
    }
}

/// Connection settings of a [`NatsBus`].
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`); the client picks
    /// one and fails over to the others (and to servers the cluster
    /// advertises).
    pub urls: Vec<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// Require TLS (also implied by `tls://` URLs). Uses rustls with the
    /// aws-lc-rs provider and the system roots plus `tls_ca_file`.
    pub tls: bool,
    /// Extra root certificate (PEM) to trust, e.g. a private CA.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// First token of every subject this bus uses (`sb` → `sb.ch.…`), so
    /// several deployments can share one NATS account.
    pub subject_prefix: String,
    /// This node's id: the target of [`NatsBus::request`] and the key of its
    /// registry entry. Must be unique in the cluster.
    pub node_id: String,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Default timeout of [`NatsBus::request`], and the bound on waiting for
    /// the server in `publish` / `subscribe_channel`.
    pub request_timeout: Duration,
    /// When NATS is unreachable at start: `true` returns a disconnected bus
    /// that keeps trying in the background (the node starts, local delivery
    /// works, `publish` fails with [`BusError::Unavailable`]); `false` makes
    /// [`NatsBus::connect`] fail.
    pub retry_initial_connect: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            auth: NatsAuth::None,
            tls: false,
            tls_ca_file: None,
            tls_client_cert: None,
            subject_prefix: "sb".into(),
            node_id: String::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            retry_initial_connect: false,
        }
    }
}

/// Handles requests and broadcasts addressed to this node (see
/// [`NatsBus::request`] and [`NatsBus::broadcast`]).
#[async_trait::async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request. `Err` reaches the caller as
    /// [`BusError::Remote`]. For a broadcast the answer is discarded.
    /// Requests are handled concurrently (one task each), so two requests
    /// from the same caller may run in any order.
    async fn handle(&self, method: &str, payload: Bytes) -> Result<Bytes, String>;
}

/// The [`Bus`] over NATS core pub/sub.
///
/// * **Fan-out**: a message about channel `c` is published on
///   `<prefix>.ch.<escaped c>` (see the crate docs for the escaping). A node
///   receives it only if it called [`Bus::subscribe_channel`] for `c`, which
///   the hub does when the channel gets its first local subscriber. A node
///   receives its own publications too (NATS echo), so the node's local
///   subscribers get everything through the same ordered path.
/// * **Order**: one subscription and one delivery task per channel; NATS
///   keeps the order of one publisher on one subject, so the publications a
///   node publishes on a channel reach every node in that order.
/// * **Disconnection**: the client reconnects by itself (forever, with
///   backoff) and re-establishes every subscription. Meanwhile
///   [`Bus::publish`] fails at once with [`BusError::Unavailable`]; messages
///   published by other nodes during the outage are *not* replayed, so the
///   node should resynchronise its durable channels from the store when
///   [`NatsBus::health`] turns true again.
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: String,
    node_id: String,
    request_timeout: Duration,
    handler: Arc<OnceLock<Arc<dyn BusHandler>>>,
    requests: Arc<OnceLock<Arc<dyn RequestHandler>>>,
    channels: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ChannelSub>>>>,
    health: watch::Receiver<bool>,
    service: Mutex<Vec<JoinHandle<()>>>,
}

/// This node's interest in one channel.
#[derive(Default)]
struct ChannelSub {
    /// Balanced `subscribe_channel` calls not yet undone.
    refs: usize,
    /// The delivery task, owning the NATS subscription.
    task: Option<JoinHandle<()>>,
    /// Removed from the map: a caller holding it must start over.
    dead: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.service.get_mut().drain(..) {
            task.abort();
        }
        for entry in self.channels.get_mut().values() {
            if let Ok(mut sub) = entry.try_lock()
                && let Some(task) = sub.task.take()
            {
                task.abort();
            }
        }
    }
}

impl fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBus")
            .field("node_id", &self.inner.node_id)
            .field("prefix", &self.inner.prefix)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to NATS and starts serving this node's request subjects.
    ///
    /// Fails with [`BusError::Unavailable`] if no server is reachable (unless
    /// `retry_initial_connect`), and with [`BusError::Rejected`] for a bad
    /// configuration (empty `node_id` or prefix, unreadable credentials).
    pub async fn connect(config: NatsConfig) -> Result<Self, BusError> {
        if config.node_id.is_empty() {
            return Err(BusError::Rejected("nats: node_id must be set".into()));
        }
        if config.subject_prefix.is_empty()
            || config
                .subject_prefix
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(BusError::Rejected(format!(
                "nats: subject_prefix {:?} must be a non-empty [A-Za-z0-9_-] token",
                config.subject_prefix
            )));
        }
        let (health_tx, health) = watch::channel(false);
        let health_tx = Arc::new(health_tx);
        let options = connect_options(&config, health_tx.clone()).await?;
        let urls: Vec<async_nats::ServerAddr> = config
            .urls
            .iter()
            .map(|u| {
                u.parse()
                    .map_err(|e| BusError::Rejected(format!("nats: bad url {u:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        if urls.is_empty() {
            return Err(BusError::Rejected("nats: no urls".into()));
        }
        let client = options
            .connect(urls)
            .await
            .map_err(|e| BusError::Unavailable(format!("nats connect: {e}")))?;
        if client.connection_state() == State::Connected {
            health_tx.send_replace(true);
        }
        let inner = Arc::new(Inner {
            client,
            prefix: config.subject_prefix,
            node_id: config.node_id,
            request_timeout: config.request_timeout,
            handler: Arc::default(),
            requests: Arc::default(),
            channels: Mutex::default(),
            health,
            service: Mutex::default(),
        });
        let bus = Self { inner };
        bus.serve_requests().await?;
        Ok(bus)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The subject prefix.
    pub fn subject_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Whether the connection to NATS is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }

    /// Connection health as a watch: `true` while connected. A `false` →
    /// `true` transition is a reconnect, after which the node should
    /// resynchronise what it may have missed.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.inner.health.clone()
    }

    /// The underlying client, for JetStream users in this crate's callers
    /// (shares the connection).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The subject carrying the messages of `channel`.
    pub fn channel_subject(&self, channel: &str) -> String {
        let mut subject = String::with_capacity(self.inner.prefix.len() + channel.len() + 8);
        subject.push_str(&self.inner.prefix);
        subject.push_str(".ch.");
        escape_into(channel, SUBJECT_ESCAPE, &mut subject);
        subject
    }

    /// Number of channels this node currently has a NATS subscription for.
    pub fn subscribed_channels(&self) -> usize {
        self.inner.channels.lock().len()
    }

    /// Installs the handler of requests and broadcasts to this node. Until
    /// then requests are answered with an error; a second handler is ignored.
    pub fn set_request_handler(&self, handler: Arc<dyn RequestHandler>) {
        let _ = self.inner.requests.set(handler);
    }

    /// Sends a request to node `node` and waits for its answer, at most the
    /// configured `request_timeout`.
    ///
    /// Errors: [`BusError::NoResponders`] when no such node is connected,
    /// [`BusError::Timeout`], [`BusError::Remote`] when its handler failed,
    /// [`BusError::Unavailable`] while disconnected.
    pub async fn request(
        &self,
        node: &str,
        method: &str,
        payload: Bytes,
    ) -> Result<Bytes, BusError> {
        self.request_with_timeout(node, method, payload, self.inner.request_timeout)
            .await
    }

    /// [`NatsBus::request`] with an explicit timeout.
    pub async fn request_with_timeout(
        &self,
        node: &str,
        method: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        self.check_connected()?;
        let subject = self.node_subject(node, method);
        let request = Request::new().payload(payload).timeout(Some(timeout));
        let reply = self
            .inner
            .client
            .send_request(subject, request)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::TimedOut => BusError::Timeout,
                RequestErrorKind::NoResponders => BusError::NoResponders(node.to_owned()),
                RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                    BusError::Rejected(e.to_string())
                }
                _ => BusError::Unavailable(e.to_string()),
            })?;
        decode_reply(reply.payload)
    }

    /// Sends `payload` to the request handler of every node (this one
    /// included), without waiting for answers.
    pub async fn broadcast(&self, method: &str, payload: Bytes) -> Result<(), BusError> {
        self.check_connected()?;
        let mut subject = format!("{}.all.", self.inner.prefix);
        escape_into(method, SUBJECT_ESCAPE, &mut subject);
        self.send(subject, payload).await
    }

    /// Flushes what is queued and closes the connection (graceful shutdown).
    /// Later calls fail with [`BusError::Unavailable`].
    pub async fn close(&self) {
        if self.is_connected() {
            let _ =
                tokio::time::timeout(self.inner.request_timeout, self.inner.client.flush()).await;
        }
        for task in self.inner.service.lock().drain(..) {
            task.abort();
        }
        let _ = self.inner.client.drain().await;
    }

    fn node_subject(&self, node: &str, method: &str) -> String {
        let mut subject = format!("{}.node.", self.inner.prefix);
        escape_into(node, SUBJECT_ESCAPE, &mut subject);
        subject.push('.');
        escape_into(method, SUBJECT_ESCAPE, &mut subject);
        subject
    }

    fn check_connected(&self) -> Result<(), BusError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(BusError::Unavailable("not connected to NATS".into()))
        }
    }

    /// Publishes, bounded in time (the client's queue can be full while the
    /// connection is stalled).
    async fn send(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        match tokio::time::timeout(
            self.inner.request_timeout,
            self.inner.client.publish(subject, payload),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(match e.kind() {
                PublishErrorKind::MaxPayloadExceeded | PublishErrorKind::InvalidSubject => {
                    BusError::Rejected(e.to_string())
                }
                PublishErrorKind::Send => BusError::Unavailable(e.to_string()),
            }),
            Err(_) => Err(BusError::Unavailable("nats publish queue stalled".into())),
        }
    }

    /// Subscribes to this node's request subject and to broadcasts.
    async fn serve_requests(&self) -> Result<(), BusError> {
        let prefix = &self.inner.prefix;
        let direct = format!(
            "{prefix}.node.{}.*",
            escape(&self.inner.node_id, SUBJECT_ESCAPE)
        );
        let all = format!("{prefix}.all.*");
        for subject in [direct, all] {
            let subscriber = self
                .inner
                .client
                .subscribe(subject)
                .await
                .map_err(|e| BusError::Unavailable(format!("nats subscribe: {e}")))?;
            let task = tokio::spawn(serve(
                subscriber,
                self.inner.client.clone(),
                self.inner.requests.clone(),
            ));
            self.inner.service.lock().push(task);
        }
        self.sync_with_server().await;
        Ok(())
    }

    /// Waits until the server has processed everything this connection sent
    /// so far (a `flush` only empties the socket buffer). A request to a
    /// subject nobody serves comes back as "no responders" from the server
    /// itself, after it has handled the preceding SUBs. On a NATS cluster
    /// the interest still takes a moment to reach the other servers.
    ///
    /// After a reconnect ([`NatsBus::health`] turned true) this returns once
    /// the re-sent subscriptions are in effect. Returns at once while
    /// disconnected.
    pub async fn sync_with_server(&self) {
        if !self.is_connected() {
            return;
        }
        let subject = format!(
            "{}.sync.{}",
            self.inner.prefix,
            escape(&self.inner.node_id, SUBJECT_ESCAPE)
        );
        let request = Request::new().timeout(Some(self.inner.request_timeout));
        match self.inner.client.send_request(subject, request).await {
            Ok(_) => {}
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {}
            Err(e) => tracing::warn!(error = %e, "nats: sync with server failed"),
        }
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
        self.check_connected()?;
        let subject = self.channel_subject(msg.channel());
        self.send(subject, codec::encode(&msg)).await
    }

    fn set_handler(&self, handler: Arc<dyn BusHandler>) {
        let _ = self.inner.handler.set(handler);
    }

    async fn subscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        loop {
            let entry = self
                .inner
                .channels
                .lock()
                .entry(channel.to_owned())
                .or_default()
                .clone();
            let mut sub = entry.lock().await;
            if sub.dead {
                continue;
            }
            if sub.task.is_none() {
                let subscriber = match self
                    .inner
                    .client
                    .subscribe(self.channel_subject(channel))
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        if sub.refs == 0 {
                            sub.dead = true;
                            self.remove_entry(channel, &entry);
                        }
                        return Err(BusError::Unavailable(format!("nats subscribe: {e}")));
                    }
                };
                sub.task = Some(tokio::spawn(deliver(
                    subscriber,
                    self.inner.handler.clone(),
                )));
                // Make the interest effective before the caller reads history,
                // so nothing published from now on is missed. While
                // disconnected the subscription is sent on reconnect.
                self.sync_with_server().await;
            }
            sub.refs += 1;
            return Ok(());
        }
    }

    async fn unsubscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        let Some(entry) = self.inner.channels.lock().get(channel).cloned() else {
            tracing::warn!(
                channel,
                "nats: unsubscribe_channel without subscribe_channel"
            );
            return Ok(());
        };
        let mut sub = entry.lock().await;
        if sub.dead || sub.refs == 0 {
            return Ok(());
        }
        sub.refs -= 1;
        if sub.refs == 0 {
            if let Some(task) = sub.task.take() {
                // Dropping the subscriber unsubscribes from NATS.
                task.abort();
            }
            sub.dead = true;
            self.remove_entry(channel, &entry);
        }
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        self.is_connected()
    }
}

impl NatsBus {
    fn remove_entry(&self, channel: &str, entry: &Arc<tokio::sync::Mutex<ChannelSub>>) {
        let mut map = self.inner.channels.lock();
        if map.get(channel).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(channel);
        }
    }
}

async fn connect_options(
    config: &NatsConfig,
    health: Arc<watch::Sender<bool>>,
) -> Result<ConnectOptions, BusError> {
    let mut options = match &config.auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::Token(token) => ConnectOptions::with_token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| BusError::Rejected(format!("nats credentials {}: {e}", path.display())))?,
        NatsAuth::NKey(seed) => ConnectOptions::with_nkey(seed.clone()),
    };
    if config.tls {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls_client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.retry_initial_connect {
        options = options.retry_on_initial_connect();
    }
    Ok(options
        .name(format!("switchboard {}", config.node_id))
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .event_callback(move |event| {
            let health = health.clone();
            async move {
                match event {
                    Event::Connected => {
                        health.send_replace(true);
                    }
                    Event::Disconnected | Event::Closed => {
                        health.send_replace(false);
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "nats: slow consumer, messages dropped");
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        }))
}

/// Delivers the messages of one channel subscription, in order.
async fn deliver(mut subscriber: Subscriber, handler: Arc<OnceLock<Arc<dyn BusHandler>>>) {
    while let Some(message) = subscriber.next().await {
        match codec::decode(message.payload) {
            Ok(msg) => {
                if let Some(handler) = handler.get() {
                    handler.handle(msg);
                }
            }
            Err(e) => {
                tracing::warn!(subject = %message.subject, error = %e, "nats: undecodable bus message dropped");
            }
        }
    }
}

const REPLY_OK: u8 = 0;
const REPLY_ERR: u8 = 1;

fn encode_reply(result: Result<Bytes, String>) -> Bytes {
    let (tag, body) = match &result {
        Ok(body) => (REPLY_OK, body.as_ref()),
        Err(msg) => (REPLY_ERR, msg.as_bytes()),
    };
    let mut buf = BytesMut::with_capacity(body.len() + 2);
    buf.put_u8(codec::VERSION);
    buf.put_u8(tag);
    buf.put_slice(body);
    buf.freeze()
}

fn decode_reply(payload: Bytes) -> Result<Bytes, BusError> {
    match payload.get(..2) {
        Some([codec::VERSION, REPLY_OK]) => Ok(payload.slice(2..)),
        Some([codec::VERSION, REPLY_ERR]) => Err(BusError::Remote(
            String::from_utf8_lossy(&payload[2..]).into_owned(),
        )),
        _ => Err(BusError::Remote("malformed reply".into())),
    }
}

/// Serves requests (with a reply subject) and broadcasts (without).
async fn serve(
    mut subscriber: Subscriber,
    client: Client,
    handler: Arc<OnceLock<Arc<dyn RequestHandler>>>,
) {
    while let Some(message) = subscriber.next().await {
        let method = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|token| unescape(token, SUBJECT_ESCAPE));
        let handler = handler.get().cloned();
        let client = client.clone();
        tokio::spawn(async move {
            let result = match (method, handler) {
                (Some(method), Some(handler)) => handler.handle(&method, message.payload).await,
                (None, _) => Err("malformed method".to_owned()),
                (_, None) => Err("node not ready".to_owned()),
            };
            if let Some(reply) = message.reply
                && let Err(e) = client.publish(reply, encode_reply(result)).await
            {
                tracing::debug!(error = %e, "nats: reply not sent");
            }
        });
    }
}
