//! One client connection's protocol state machine.
//!
//! The transport task feeds it frames ([`Session::handle_frame`]), wakes it at
//! [`Session::next_deadline`] ([`Session::handle_timeout`]) and hands it
//! server-side actions ([`Session::handle_control`]); the session answers by
//! queueing bytes on its [`Conn`] and by returning a [`Disconnect`] when the
//! connection must close. Wall-clock time (Unix seconds, for token expiry) and
//! monotonic time are passed in.

use crate::auth::TokenIdentity;
use crate::engine::{CallerContext, EngineError, PublishRequest};
use crate::hub::{Conn, Control};
use crate::{Shared, convert};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_auth::TokenError;
use switchboard_auth::grants::ChannelAction;
use switchboard_core::channel::{self, ChannelNameError};
use switchboard_core::namespace::{Decision, NamespaceOptions, Requester};
use switchboard_core::{HistoryQuery, PublisherInfo, StreamPosition};
use switchboard_proto::client::{self, Command, Reply};
use switchboard_proto::codec;
use switchboard_proto::codes::{ClientError, Disconnect, Unsubscribe};

/// Unsubscribe code sent when a subscription token expired without refresh.
const UNSUBSCRIBE_EXPIRED: u32 = 2501;

struct Connected {
    client: String,
    user: String,
    conn_info: Bytes,
    expires_at: Option<i64>,
    /// Switchboard grants from the token: when present they alone decide
    /// channel permissions (namespaces must still exist and enable the
    /// feature).
    grants: Option<switchboard_auth::Grants>,
}

struct Sub {
    expires_at: Option<i64>,
    info: PublisherInfo,
    presence: bool,
    push_join_leave: bool,
}

/// The protocol state of one connection.
pub struct Session {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    connected: Option<Connected>,
    subs: HashMap<Arc<str>, Sub>,
    limiter: governor::DefaultDirectRateLimiter,
    opened_at: Instant,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    next_presence_touch: Option<Instant>,
    next_expiry_check: Option<Instant>,
    /// Session id reported in the connect reply or push (emulation and
    /// unidirectional transports); empty otherwise.
    session_id: String,
}

type CmdResult = Result<Option<Reply>, Failure>;

/// Why a command did not succeed.
enum Failure {
    /// Reply with this error and keep the connection.
    Error(client::Error),
    /// Close the connection.
    Disconnect(Disconnect),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Error(e.to_error())
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        if e.error.code == ClientError::INTERNAL.code {
            // Internal details stay in the log.
            tracing::warn!(detail = %e.detail, "engine error");
            return Failure::Error(e.error.to_error());
        }
        // Other errors say what was wrong with the request.
        if e.detail.is_empty() {
            Failure::Error(e.error.to_error())
        } else {
            Failure::Error(e.error.with_message(e.detail))
        }
    }
}

impl Session {
    /// A session for a freshly opened connection.
    pub fn new(shared: Arc<Shared>, conn: Arc<Conn>, now: Instant) -> Self {
        let limiter = shared.command_limiter();
        Self {
            shared,
            conn,
            connected: None,
            subs: HashMap::new(),
            limiter,
            opened_at: now,
            next_ping: None,
            pong_deadline: None,
            next_presence_touch: None,
            next_expiry_check: None,
            session_id: String::new(),
        }
    }

    /// Sets the session id sent in the connect reply (emulated transports
    /// address their `/emulation` requests with it) or connect push.
    pub fn set_session_id(&mut self, id: String) {
        self.session_id = id;
    }

    /// Bytes a transport writes at most per write.
    pub(crate) fn write_batch_bytes(&self) -> usize {
        self.shared.config.write_batch_bytes
    }

    /// Whether the client has connected.
    pub fn is_connected(&self) -> bool {
        self.connected.is_some()
    }

    /// The connection this session writes to.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// When [`Session::handle_timeout`] must next be called.
    pub fn next_deadline(&self) -> Instant {
        if self.connected.is_none() {
            return self.opened_at + self.shared.config.connect_timeout;
        }
        [
            self.next_ping,
            self.pong_deadline,
            self.next_presence_touch,
            self.next_expiry_check,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Runs the timers due at `now`.
    pub async fn handle_timeout(&mut self, now: Instant, unix_now: i64) -> Result<(), Disconnect> {
        if self.connected.is_none() {
            if now >= self.opened_at + self.shared.config.connect_timeout {
                return Err(Disconnect::STALE);
            }
            return Ok(());
        }
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return Err(Disconnect::NO_PONG);
        }
        if self.next_ping.is_some_and(|t| now >= t) {
            // An empty reply (an empty push on unidirectional transports:
            // the same bytes) is the protocol's ping.
            self.conn.send(codec::ping_frame(self.conn.encoding()));
            self.next_ping = Some(now + self.shared.config.ping_interval);
            // Unidirectional clients cannot answer: no pong expected.
            if self.pong_deadline.is_none() && !self.conn.is_unidirectional() {
                self.pong_deadline = Some(now + self.shared.config.pong_timeout);
            }
        }
        if self.next_presence_touch.is_some_and(|t| now >= t) {
            let channels: Vec<String> = self
                .subs
                .iter()
                .filter(|(_, s)| s.presence)
                .map(|(c, _)| c.to_string())
                .collect();
            if !channels.is_empty() {
                let client = self
                    .connected
                    .as_ref()
                    .map(|c| c.client.clone())
                    .unwrap_or_default();
                if let Err(e) = self.shared.engine.touch_presence(&channels, &client).await {
                    tracing::warn!(error = %e, "presence touch failed");
                }
            }
            self.next_presence_touch = Some(now + self.shared.config.presence_ttl / 3);
        }
        if self.next_expiry_check.is_some_and(|t| now >= t) {
            self.next_expiry_check = Some(now + Duration::from_secs(1));
            self.check_expiry(unix_now).await?;
        }
        Ok(())
    }

    async fn check_expiry(&mut self, unix_now: i64) -> Result<(), Disconnect> {
        let grace = self.shared.config.expired_close_delay.as_secs() as i64;
        if let Some(c) = &self.connected
            && c.expires_at.is_some_and(|at| unix_now >= at + grace)
        {
            return Err(Disconnect::EXPIRED);
        }
        let expired: Vec<Arc<str>> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|at| unix_now >= at + grace))
            .map(|(c, _)| c.clone())
            .collect();
        for ch in expired {
            self.server_unsubscribe(
                &ch,
                Unsubscribe::new(UNSUBSCRIBE_EXPIRED, "subscription expired"),
            )
            .await;
        }
        Ok(())
    }

    /// Handles one frame of commands from the client.
    pub async fn handle_frame(
        &mut self,
        frame: &[u8],
        now: Instant,
        unix_now: i64,
    ) -> Result<(), Disconnect> {
        metrics::counter!("switchboard_transport_bytes_in_total").increment(frame.len() as u64);
        if frame.len() > self.shared.config.max_frame_bytes {
            tracing::debug!(len = frame.len(), "frame too large");
            return Err(Disconnect::new(
                Disconnect::BAD_REQUEST.code,
                "frame too large",
            ));
        }
        if self.conn.is_unidirectional() {
            return self.handle_uni_frame(frame, now, unix_now).await;
        }
        let commands = match codec::decode_commands(
            self.conn.encoding(),
            frame,
            self.shared.config.max_commands_per_frame,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "malformed frame");
                metrics::counter!("switchboard_commands_total", "method" => "malformed", "result" => "bad_request")
                    .increment(1);
                return Err(Disconnect::BAD_REQUEST);
            }
        };
        for cmd in commands {
            self.handle_command(cmd, now, unix_now).await?;
        }
        Ok(())
    }

    /// Unidirectional transports: the first frame is a bare `ConnectRequest`
    /// (JSON); anything the client sends later is ignored.
    async fn handle_uni_frame(
        &mut self,
        frame: &[u8],
        now: Instant,
        unix_now: i64,
    ) -> Result<(), Disconnect> {
        if self.connected.is_some() {
            return Ok(());
        }
        let text = frame.trim_ascii();
        let req: client::ConnectRequest = if text.is_empty() {
            client::ConnectRequest::default()
        } else {
            match serde_json::from_slice(text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed unidirectional connect request");
                    metrics::counter!("switchboard_commands_total", "method" => "connect", "result" => "bad_request")
                        .increment(1);
                    return Err(Disconnect::BAD_REQUEST);
                }
            }
        };
        let started = Instant::now();
        let result = self.connect(0, req, now, unix_now).await;
        let label = match &result {
            Ok(_) => "ok".to_string(),
            Err(Failure::Error(e)) => e.code.to_string(),
            Err(Failure::Disconnect(d)) => d.code.to_string(),
        };
        metrics::counter!("switchboard_commands_total", "method" => "connect", "result" => label)
            .increment(1);
        metrics::histogram!("switchboard_command_duration_seconds", "method" => "connect")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => Ok(()),
            // No reply to carry an error: it becomes the disconnect.
            Err(Failure::Error(e)) => Err(uni_connect_disconnect(&e)),
            Err(Failure::Disconnect(d)) => Err(d),
        }
    }

    async fn handle_command(
        &mut self,
        cmd: Command,
        now: Instant,
        unix_now: i64,
    ) -> Result<(), Disconnect> {
        let method = cmd.method_name();
        let id = cmd.id;
        if method == "pong" || (id == 0 && cmd.ping.is_some()) {
            self.pong_deadline = None;
            return Ok(());
        }
        if self.connected.is_none() && cmd.connect.is_none() {
            return Err(Disconnect::BAD_REQUEST);
        }
        if self.connected.is_some() && self.limiter.check().is_err() {
            metrics::counter!("switchboard_commands_total", "method" => method, "result" => "rate_limited")
                .increment(1);
            if id != 0 {
                self.reply(Reply::for_error(
                    id,
                    ClientError::TOO_MANY_REQUESTS.to_error(),
                ));
            }
            return Ok(());
        }
        let started = Instant::now();
        let result = self.dispatch(cmd, now, unix_now).await;
        let label = match &result {
            Ok(_) => "ok".to_string(),
            Err(Failure::Error(e)) => e.code.to_string(),
            Err(Failure::Disconnect(d)) => d.code.to_string(),
        };
        metrics::counter!("switchboard_commands_total", "method" => method, "result" => label)
            .increment(1);
        metrics::histogram!("switchboard_command_duration_seconds", "method" => method)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(Some(mut reply)) => {
                reply.id = id;
                if id != 0 {
                    self.reply(reply);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(Failure::Error(e)) => {
                if id != 0 {
                    self.reply(Reply::for_error(id, e));
                }
                Ok(())
            }
            Err(Failure::Disconnect(d)) => Err(d),
        }
    }

    fn reply(&self, reply: Reply) {
        if let Some(bytes) = self.conn.encode(&reply) {
            self.conn.send(bytes);
        }
    }

    async fn dispatch(&mut self, cmd: Command, now: Instant, unix_now: i64) -> CmdResult {
        let id = cmd.id;
        if let Some(req) = cmd.connect {
            return self.connect(id, req, now, unix_now).await;
        }
        if let Some(req) = cmd.subscribe {
            return self.subscribe(id, req, unix_now).await;
        }
        if let Some(req) = cmd.unsubscribe {
            self.unsubscribe(&req.channel).await;
            return Ok(Some(Reply {
                unsubscribe: Some(Default::default()),
                ..Default::default()
            }));
        }
        if let Some(req) = cmd.publish {
            return self.publish(req).await;
        }
        if let Some(req) = cmd.presence {
            return self.presence(req).await;
        }
        if let Some(req) = cmd.presence_stats {
            return self.presence_stats(req).await;
        }
        if let Some(req) = cmd.history {
            return self.history(req).await;
        }
        if cmd.ping.is_some() {
            return Ok(Some(Reply {
                ping: Some(Default::default()),
                ..Default::default()
            }));
        }
        if let Some(req) = cmd.send {
            self.shared.engine.message(&self.caller(), req.data).await?;
            return Ok(None);
        }
        if let Some(req) = cmd.rpc {
            let data = self
                .shared
                .engine
                .rpc(&self.caller(), &req.method, req.data)
                .await?;
            return Ok(Some(Reply {
                rpc: Some(client::RpcResult { data }),
                ..Default::default()
            }));
        }
        if let Some(req) = cmd.refresh {
            return self.refresh(req, unix_now);
        }
        if let Some(req) = cmd.sub_refresh {
            return self.sub_refresh(req, unix_now);
        }
        Err(ClientError::METHOD_NOT_FOUND.into())
    }

    fn caller(&self) -> CallerContext {
        let c = self.connected.as_ref();
        CallerContext {
            client: c.map(|c| c.client.clone()).unwrap_or_default(),
            user: c.map(|c| c.user.clone()).unwrap_or_default(),
            grants: c.and_then(|c| c.grants.clone()),
        }
    }

    fn grants(&self) -> Option<&switchboard_auth::Grants> {
        self.connected.as_ref().and_then(|c| c.grants.as_ref())
    }

    fn user(&self) -> &str {
        self.connected.as_ref().map_or("", |c| c.user.as_str())
    }

    fn ttl(expires_at: Option<i64>, unix_now: i64) -> (bool, u32) {
        match expires_at {
            Some(at) => (true, (at - unix_now).max(0).min(u32::MAX as i64) as u32),
            None => (false, 0),
        }
    }

    async fn connect(
        &mut self,
        _id: u32,
        req: client::ConnectRequest,
        now: Instant,
        unix_now: i64,
    ) -> CmdResult {
        if self.connected.is_some() {
            return Err(Failure::Disconnect(Disconnect::BAD_REQUEST));
        }
        let cfg = &self.shared.config;
        let mut identity = TokenIdentity::default();
        let mut grants = None;
        let (user, conn_info, expires_at, mut server_subs) = if req.token.is_empty() {
            if !cfg.allow_anonymous {
                return Err(ClientError::UNAUTHORIZED.into());
            }
            (String::new(), Bytes::new(), None, Vec::new())
        } else {
            let claims = match self.shared.verifier.verify_connection(&req.token, unix_now) {
                Ok(v) => {
                    identity = TokenIdentity {
                        user: v.claims.sub.clone(),
                        jti: v.claims.jti.clone(),
                        session: v.session,
                    };
                    grants = v.claims.grants.clone();
                    v.claims
                }
                Err(TokenError::Expired) => return Err(ClientError::TOKEN_EXPIRED.into()),
                Err(e) => {
                    tracing::info!(error = %e, "connection token refused");
                    metrics::counter!("switchboard_auth_refusals_total", "kind" => "connection")
                        .increment(1);
                    return Err(Failure::Disconnect(Disconnect::INVALID_TOKEN));
                }
            };
            let info = claims
                .info_bytes()
                .ok()
                .flatten()
                .map(Bytes::from)
                .unwrap_or_default();
            let mut subs: Vec<(String, Bytes)> = claims
                .channels
                .iter()
                .map(|c| (c.clone(), Bytes::new()))
                .collect();
            for (ch, opts) in &claims.subs {
                let data = opts
                    .data_bytes()
                    .ok()
                    .flatten()
                    .map(Bytes::from)
                    .unwrap_or_default();
                subs.push((ch.clone(), data));
            }
            (
                claims.sub.clone(),
                info,
                claims.connection_expires_at(),
                subs,
            )
        };
        if expires_at.is_some_and(|at| at <= unix_now) {
            return Err(ClientError::TOKEN_EXPIRED.into());
        }
        let client = uuid::Uuid::new_v4().to_string();
        self.conn.set_token_identity(identity);
        self.shared
            .hub
            .add_conn(&self.conn, client.clone(), user.clone());
        self.connected = Some(Connected {
            client: client.clone(),
            user,
            conn_info,
            expires_at,
            grants,
        });
        self.next_ping = Some(now + self.shared.config.ping_interval);
        self.next_presence_touch = Some(now + self.shared.config.presence_ttl / 3);
        self.next_expiry_check = Some(now + Duration::from_secs(1));

        server_subs.sort_by(|a, b| a.0.cmp(&b.0));
        server_subs.dedup_by(|a, b| a.0 == b.0);
        let mut results = HashMap::new();
        let mut finished: Vec<(Arc<str>, u64)> = Vec::new();
        for (channel, data) in server_subs {
            if channel::validate(&channel, self.shared.config.max_channel_length).is_err() {
                continue;
            }
            let sub_req = req.subs.get(&channel).cloned().unwrap_or_default();
            let ch: Arc<str> = channel.as_str().into();
            match self
                .start_subscribe(&ch, &sub_req, None, unix_now, true)
                .await
            {
                Ok((mut res, after)) => {
                    res.data = data;
                    results.insert(channel, res);
                    finished.push((ch, after));
                }
                Err(_) => {
                    self.conn.finish_subscribe(None, &[(&ch, 0)]);
                    tracing::debug!(channel = %channel, "server-side subscription failed");
                }
            }
        }
        let (expires, ttl) = Self::ttl(expires_at, unix_now);
        let ping = self.shared.config.ping_interval.as_secs() as u32;
        let node = self.shared.config.node_name.clone();
        let version = self.shared.config.version.clone();
        let session = self.session_id.clone();
        let reply = if self.conn.is_unidirectional() {
            // Unidirectional: a connect push, and no pongs expected.
            let push = client::Push {
                connect: Some(client::Connect {
                    client,
                    version,
                    expires,
                    ttl,
                    subs: results,
                    ping,
                    pong: false,
                    session,
                    node,
                    ..Default::default()
                }),
                ..Default::default()
            };
            Reply {
                push: Some(push),
                ..Default::default()
            }
        } else {
            let result = client::ConnectResult {
                client,
                version,
                expires,
                ttl,
                subs: results,
                ping,
                pong: true,
                session,
                node,
                ..Default::default()
            };
            Reply {
                id: _id,
                connect: Some(result),
                ..Default::default()
            }
        };
        let bytes = self.conn.encode(&reply).unwrap_or_default();
        let chans: Vec<(&str, u64)> = finished.iter().map(|(c, o)| (&**c, *o)).collect();
        self.conn.finish_subscribe(Some(bytes), &chans);
        for (ch, _) in finished {
            self.after_subscribe(&ch).await;
        }
        Ok(None)
    }

    fn options(&self, channel: &str) -> Result<NamespaceOptions, Failure> {
        match channel::validate(channel, self.shared.config.max_channel_length) {
            Ok(()) => {}
            Err(ChannelNameError::TooLong { .. }) => return Err(ClientError::LIMIT_EXCEEDED.into()),
            Err(_) => return Err(ClientError::BAD_REQUEST.into()),
        }
        self.shared
            .namespaces
            .resolve(channel)
            .cloned()
            .map_err(|_| ClientError::UNKNOWN_CHANNEL.into())
    }

    async fn subscribe(
        &mut self,
        id: u32,
        req: client::SubscribeRequest,
        unix_now: i64,
    ) -> CmdResult {
        let opts = self.options(&req.channel)?;
        if self.subs.contains_key(req.channel.as_str()) {
            return Err(ClientError::ALREADY_SUBSCRIBED.into());
        }
        if self.subs.len() >= self.shared.config.max_channels_per_connection {
            return Err(ClientError::LIMIT_EXCEEDED.into());
        }
        let who = Requester {
            user: self.user(),
            subscribed: false,
        };
        let mut chan_info = Bytes::new();
        let mut sub_expires = None;
        let decision = match self.grants() {
            Some(g) => {
                if channel::limited_users(&req.channel).is_some()
                    && !channel::user_allowed(&req.channel, self.user())
                {
                    Decision::Deny
                } else if g.allows_channel(&req.channel, ChannelAction::Subscribe) {
                    Decision::Allow
                } else {
                    Decision::NeedsToken
                }
            }
            None => opts.subscribe_decision(&req.channel, who),
        };
        if !req.token.is_empty() {
            match self
                .shared
                .verifier
                .verify_subscription(&req.token, &req.channel, unix_now)
            {
                Ok(claims) => {
                    if claims.sub != self.user() {
                        return Err(ClientError::PERMISSION_DENIED.into());
                    }
                    chan_info = claims
                        .info_bytes()
                        .ok()
                        .flatten()
                        .map(Bytes::from)
                        .unwrap_or_default();
                    sub_expires = claims.subscription_expires_at();
                    if sub_expires.is_some_and(|at| at <= unix_now) {
                        return Err(ClientError::TOKEN_EXPIRED.into());
                    }
                }
                Err(TokenError::Expired) => return Err(ClientError::TOKEN_EXPIRED.into()),
                Err(e) => {
                    tracing::info!(error = %e, "subscription token refused");
                    metrics::counter!("switchboard_auth_refusals_total", "kind" => "subscription")
                        .increment(1);
                    return Err(ClientError::PERMISSION_DENIED.into());
                }
            }
        } else if decision != Decision::Allow {
            return Err(ClientError::PERMISSION_DENIED.into());
        }
        let ch: Arc<str> = req.channel.as_str().into();
        let (result, after) = match self
            .start_subscribe(&ch, &req, Some((chan_info, sub_expires)), unix_now, false)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.conn.finish_subscribe(None, &[(&ch, 0)]);
                return Err(e);
            }
        };
        let reply = Reply {
            id,
            subscribe: Some(result),
            ..Default::default()
        };
        self.conn.finish_subscribe(
            Some(self.conn.encode(&reply).unwrap_or_default()),
            &[(&ch, after)],
        );
        self.after_subscribe(&ch).await;
        Ok(None)
    }

    /// Registers the subscription (deliveries buffered) and computes the
    /// subscribe result; the caller queues the reply with
    /// [`Conn::finish_subscribe`] and then calls `after_subscribe`.
    async fn start_subscribe(
        &mut self,
        ch: &Arc<str>,
        req: &client::SubscribeRequest,
        token: Option<(Bytes, Option<i64>)>,
        unix_now: i64,
        server_side: bool,
    ) -> Result<(client::SubscribeResult, u64), Failure> {
        let opts = self.options(ch)?;
        let push_join_leave =
            opts.join_leave && (opts.force_push_join_leave || req.join_leave || server_side);
        let recoverable =
            opts.recovery_allowed() && (opts.force_recovery || req.recoverable || req.recover);
        let (chan_info, expires_at) = token.unwrap_or_default();
        let c = self.connected.as_ref().expect("connected");
        let info = PublisherInfo {
            user: c.user.clone(),
            client: c.client.clone(),
            conn_info: c.conn_info.clone(),
            chan_info,
        };
        self.conn.begin_subscribe(ch);
        self.shared.hub.subscribe(ch, &self.conn, push_join_leave);
        if let Err(e) = self.shared.engine.subscribe_channel(ch).await {
            self.shared.hub.unsubscribe(ch, self.conn.id());
            return Err(e.into());
        }
        self.subs.insert(
            ch.clone(),
            Sub {
                expires_at,
                info,
                presence: opts.presence,
                push_join_leave: opts.join_leave,
            },
        );
        let mut result = client::SubscribeResult::default();
        let (expires, ttl) = Self::ttl(expires_at, unix_now);
        result.expires = expires;
        result.ttl = ttl;
        let mut after = 0;
        if opts.is_durable() {
            let outcome = if req.recover && opts.recovery_allowed() {
                let since = StreamPosition {
                    offset: req.offset,
                    epoch: req.epoch.clone(),
                };
                self.shared.engine.recover(ch, &since).await.map(|r| {
                    result.was_recovering = true;
                    result.recovered = r.recovered;
                    after = r
                        .publications
                        .last()
                        .map_or(req.offset.min(r.position.offset), |p| p.offset);
                    if !r.recovered && r.position.epoch != req.epoch {
                        after = r.position.offset;
                    }
                    result.publications = r.publications.iter().map(convert::publication).collect();
                    r.position
                })
            } else {
                self.shared
                    .engine
                    .position(ch)
                    .await
                    .inspect(|p| after = p.offset)
            };
            match outcome {
                Ok(pos) => {
                    result.epoch = pos.epoch;
                    result.offset = pos.offset;
                    result.recoverable = recoverable;
                    result.positioned = recoverable;
                }
                Err(e) => {
                    self.subs.remove(ch);
                    self.shared.hub.unsubscribe(ch, self.conn.id());
                    self.shared.engine.unsubscribe_channel(ch).await;
                    return Err(e.into());
                }
            }
        }
        Ok((result, after))
    }

    async fn after_subscribe(&mut self, ch: &Arc<str>) {
        let Some(sub) = self.subs.get(ch) else { return };
        if let Err(e) = self
            .shared
            .engine
            .join(ch, &sub.info, sub.presence, sub.push_join_leave)
            .await
        {
            tracing::warn!(error = %e, "join failed");
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> bool {
        let Some(sub) = self.subs.remove(channel) else {
            return false;
        };
        self.shared.hub.unsubscribe(channel, self.conn.id());
        self.shared.engine.unsubscribe_channel(channel).await;
        if let Err(e) = self
            .shared
            .engine
            .leave(channel, &sub.info, sub.presence, sub.push_join_leave)
            .await
        {
            tracing::warn!(error = %e, "leave failed");
        }
        true
    }

    async fn server_unsubscribe(&mut self, channel: &str, reason: Unsubscribe) {
        if self.unsubscribe(channel).await {
            let push = client::Push {
                channel: channel.to_string(),
                unsubscribe: Some(reason.to_push()),
                ..Default::default()
            };
            self.reply(Reply {
                push: Some(push),
                ..Default::default()
            });
        }
    }

    async fn publish(&mut self, req: client::PublishRequest) -> CmdResult {
        let opts = self.options(&req.channel)?;
        if req.data.len() > self.shared.config.max_publication_bytes {
            return Err(ClientError::LIMIT_EXCEEDED.into());
        }
        let sub = self.subs.get(req.channel.as_str());
        let who = Requester {
            user: self.user(),
            subscribed: sub.is_some(),
        };
        let allowed = match self.grants() {
            Some(g) => g.allows_channel(&req.channel, ChannelAction::Publish),
            None => opts.publish_allowed(who),
        };
        if !allowed {
            return Err(ClientError::PERMISSION_DENIED.into());
        }
        let c = self.connected.as_ref().expect("connected");
        let info = PublisherInfo {
            user: c.user.clone(),
            client: c.client.clone(),
            conn_info: c.conn_info.clone(),
            chan_info: sub.map(|s| s.info.chan_info.clone()).unwrap_or_default(),
        };
        let req2 = PublishRequest {
            data: req.data,
            info: Some(info),
            ..Default::default()
        };
        self.shared.engine.publish(&req.channel, req2).await?;
        Ok(Some(Reply {
            publish: Some(Default::default()),
            ..Default::default()
        }))
    }

    /// Presence (and its stats) must be on in the namespace, and allowed
    /// by the token's grants or the namespace rules.
    fn check_presence(&self, channel: &str) -> Result<(), Failure> {
        let opts = self.options(channel)?;
        if !opts.presence {
            return Err(ClientError::NOT_AVAILABLE.into());
        }
        let who = Requester {
            user: self.user(),
            subscribed: self.subs.contains_key(channel),
        };
        let allowed = match self.grants() {
            Some(g) => g.allows_channel(channel, ChannelAction::Presence),
            None => opts.presence_allowed(who),
        };
        if allowed {
            Ok(())
        } else {
            Err(ClientError::PERMISSION_DENIED.into())
        }
    }

    async fn presence(&mut self, req: client::PresenceRequest) -> CmdResult {
        self.check_presence(&req.channel)?;
        let list = self.shared.engine.presence(&req.channel).await?;
        let presence = list
            .iter()
            .map(|i| (i.client.clone(), convert::client_info(i)))
            .collect();
        Ok(Some(Reply {
            presence: Some(client::PresenceResult { presence }),
            ..Default::default()
        }))
    }

    async fn presence_stats(&mut self, req: client::PresenceStatsRequest) -> CmdResult {
        self.check_presence(&req.channel)?;
        let s = self.shared.engine.presence_stats(&req.channel).await?;
        Ok(Some(Reply {
            presence_stats: Some(client::PresenceStatsResult {
                num_clients: s.num_clients,
                num_users: s.num_users,
            }),
            ..Default::default()
        }))
    }

    async fn history(&mut self, req: client::HistoryRequest) -> CmdResult {
        let opts = self.options(&req.channel)?;
        if !opts.is_durable() {
            return Err(ClientError::NOT_AVAILABLE.into());
        }
        let who = Requester {
            user: self.user(),
            subscribed: self.subs.contains_key(req.channel.as_str()),
        };
        let allowed = match self.grants() {
            Some(g) => g.allows_channel(&req.channel, ChannelAction::History),
            None => opts.history_allowed(who),
        };
        if !allowed {
            return Err(ClientError::PERMISSION_DENIED.into());
        }
        let max = self.shared.config.history_max_limit;
        let limit = match req.limit {
            l if l < 0 => Some(max),
            l => Some((l as usize).min(max)),
        };
        let query = HistoryQuery {
            since: req.since.as_ref().map(convert::position),
            limit,
            reverse: req.reverse,
        };
        let page = self.shared.engine.history(&req.channel, &query).await?;
        Ok(Some(Reply {
            history: Some(client::HistoryResult {
                publications: page.publications.iter().map(convert::publication).collect(),
                epoch: page.position.epoch,
                offset: page.position.offset,
            }),
            ..Default::default()
        }))
    }

    fn refresh(&mut self, req: client::RefreshRequest, unix_now: i64) -> CmdResult {
        let verified = match self.shared.verifier.verify_connection(&req.token, unix_now) {
            Ok(v) => v,
            Err(TokenError::Expired) => return Err(ClientError::TOKEN_EXPIRED.into()),
            Err(e) => {
                tracing::info!(error = %e, "refresh token refused");
                return Err(Failure::Disconnect(Disconnect::INVALID_TOKEN));
            }
        };
        let claims = &verified.claims;
        let c = self.connected.as_mut().expect("connected");
        if claims.sub != c.user {
            return Err(Failure::Disconnect(Disconnect::INVALID_TOKEN));
        }
        c.expires_at = claims.connection_expires_at();
        c.grants = claims.grants.clone();
        self.conn.set_token_identity(TokenIdentity {
            user: claims.sub.clone(),
            jti: claims.jti.clone(),
            session: verified.session.clone(),
        });
        let (expires, ttl) = Self::ttl(c.expires_at, unix_now);
        Ok(Some(Reply {
            refresh: Some(client::RefreshResult {
                client: c.client.clone(),
                version: self.shared.config.version.clone(),
                expires,
                ttl,
            }),
            ..Default::default()
        }))
    }

    fn sub_refresh(&mut self, req: client::SubRefreshRequest, unix_now: i64) -> CmdResult {
        let claims =
            match self
                .shared
                .verifier
                .verify_subscription(&req.token, &req.channel, unix_now)
            {
                Ok(c) => c,
                Err(TokenError::Expired) => return Err(ClientError::TOKEN_EXPIRED.into()),
                Err(_) => return Err(ClientError::PERMISSION_DENIED.into()),
            };
        if claims.sub != self.user() {
            return Err(ClientError::PERMISSION_DENIED.into());
        }
        let Some(sub) = self.subs.get_mut(req.channel.as_str()) else {
            return Err(ClientError::BAD_REQUEST.into());
        };
        sub.expires_at = claims.subscription_expires_at();
        let (expires, ttl) = Self::ttl(sub.expires_at, unix_now);
        Ok(Some(Reply {
            sub_refresh: Some(client::SubRefreshResult { expires, ttl }),
            ..Default::default()
        }))
    }

    /// Runs a server-side action requested through the hub.
    pub async fn handle_control(
        &mut self,
        control: Control,
        unix_now: i64,
    ) -> Result<(), Disconnect> {
        if self.connected.is_none() {
            return Ok(());
        }
        match control {
            Control::Subscribe { channel, data } => {
                if self.subs.contains_key(channel.as_str()) {
                    return Ok(());
                }
                let ch: Arc<str> = channel.as_str().into();
                let req = client::SubscribeRequest {
                    channel: channel.clone(),
                    ..Default::default()
                };
                match self.start_subscribe(&ch, &req, None, unix_now, true).await {
                    Ok((res, after)) => {
                        let push = client::Push {
                            channel,
                            subscribe: Some(client::Subscribe {
                                recoverable: res.recoverable,
                                epoch: res.epoch,
                                offset: res.offset,
                                positioned: res.positioned,
                                data,
                            }),
                            ..Default::default()
                        };
                        let bytes = self
                            .conn
                            .encode(&Reply {
                                push: Some(push),
                                ..Default::default()
                            })
                            .unwrap_or_default();
                        self.conn.finish_subscribe(Some(bytes), &[(&ch, after)]);
                        self.after_subscribe(&ch).await;
                    }
                    Err(_) => self.conn.finish_subscribe(None, &[(&ch, 0)]),
                }
            }
            Control::Unsubscribe { channel, reason } => {
                self.server_unsubscribe(&channel, reason).await
            }
            Control::Refresh { expired, expire_at } => {
                if expired {
                    return Err(Disconnect::EXPIRED);
                }
                if let Some(c) = self.connected.as_mut() {
                    c.expires_at = expire_at;
                    let (expires, ttl) = Self::ttl(expire_at, unix_now);
                    let push = client::Push {
                        refresh: Some(client::Refresh { expires, ttl }),
                        ..Default::default()
                    };
                    self.reply(Reply {
                        push: Some(push),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(())
    }

    /// Cleans up after the connection closed: leaves every channel.
    pub async fn close(&mut self) {
        let channels: Vec<Arc<str>> = self.subs.keys().cloned().collect();
        for ch in channels {
            self.unsubscribe(&ch).await;
        }
        self.shared.hub.remove_conn(&self.conn);
        if self.connected.is_some() {
            self.shared.engine.disconnected(&self.caller()).await;
        }
    }
}

/// The disconnect a unidirectional client gets for a connect error (it has no
/// reply to read the error from).
fn uni_connect_disconnect(e: &client::Error) -> Disconnect {
    let is = |c: ClientError| e.code == c.code;
    if is(ClientError::TOKEN_EXPIRED) || is(ClientError::EXPIRED) {
        Disconnect::EXPIRED
    } else if is(ClientError::UNAUTHORIZED) || is(ClientError::PERMISSION_DENIED) {
        Disconnect::INVALID_TOKEN
    } else if is(ClientError::TOO_MANY_REQUESTS) {
        Disconnect::TOO_MANY_REQUESTS
    } else if is(ClientError::INTERNAL) {
        Disconnect::SERVER_ERROR
    } else {
        Disconnect::new(Disconnect::BAD_REQUEST.code, e.message.clone())
    }
}
