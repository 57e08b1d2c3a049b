//! Call signaling: the `rtc.*` RPC methods clients call over their
//! messaging connection, the pushes that carry the SFU's events back, and the
//! room methods of the server API (`room_create`, `room_list`, …).
//!
//! A participant is one client connection (its client id is the participant
//! id). The room registry ([`switchboard_core::room::Rooms`]) decides who is
//! in which room and whether media goes peer-to-peer or through the SFU:
//!
//! * SFU: `rtc.join` returns the first subscriber offer; the client answers
//!   with `rtc.answer`, publishes with `rtc.publish` (its offer → the SFU's
//!   answer), and receives later offers, track and participant changes,
//!   active speakers and quality as asynchronous `message` pushes
//!   (`{"type": "rtc.offer", …}`).
//! * Peer-to-peer: `rtc.join` returns `mode: "p2p"` and no offer; clients
//!   exchange offers, answers and candidates with `rtc.signal`, which the
//!   server relays. When an `auto` room outgrows peer-to-peer, the
//!   participants already there get `rtc.mode` with an SFU offer.
//!
//! Leaving, disconnecting, removal through the API, or the SFU giving up on
//! the peer removes the participant and tells the others. Room and call
//! events are recorded in the call log; a timer task ends rooms left empty
//! past their `empty_timeout`.

use crate::calllog::CallLog;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use switchboard_auth::grants::RoomAction;
use switchboard_core::callevent::CallEvent;
use switchboard_core::room::{Left, Room, RoomError, RoomMode, RoomOptions, Rooms, Transport};
use switchboard_gateway::Hub;
use switchboard_gateway::engine::{CallerContext, EngineError};
use switchboard_media::{
    Layer, LeaveReason, MediaError, MediaEvent, ParticipantId, Permissions, PublishOffer, Quality,
    RoomId, Sfu, SubscriptionPrefs, TrackId, TrackInfo, TrackKind, TrackSource,
};
use switchboard_proto::api::ApiError;
use switchboard_proto::codes::ClientError;

/// Error detail of a join refused because this media node is draining.
pub const DRAINING: &str = "media node draining";

/// Largest `data` of one `rtc.signal` (serialized JSON).
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;

/// Server API methods handled here.
pub const API_METHODS: &[&str] = &[
    "room_create",
    "room_list",
    "room_get",
    "room_delete",
    "room_remove_participant",
    "room_mute_track",
];

/// One ICE server handed to clients at join.
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// Static username, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Static credential, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Time-limited TURN credentials (coturn `use-auth-secret`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:` URLs of the TURN servers sharing the secret.
    pub urls: Vec<String>,
    /// The shared secret (`static-auth-secret` in coturn).
    pub secret: String,
    /// Lifetime of the credentials.
    #[serde(
        default = "default_turn_ttl",
        with = "switchboard_core::duration::serde_str"
    )]
    pub ttl: Duration,
}

fn default_turn_ttl() -> Duration {
    Duration::from_secs(3600)
}

/// The TURN REST credential for `user` valid until `expires_at` (Unix
/// seconds): username `expires_at:user`, password base64(HMAC-SHA1(secret,
/// username)).
pub fn turn_credentials(secret: &str, user: &str, expires_at: i64) -> (String, String) {
    use base64::Engine;
    let username = format!("{expires_at}:{user}");
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        secret.as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, username.as_bytes());
    (
        username,
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
    )
}

/// Settings of call signaling (from the `[media]` configuration).
#[derive(Clone, Debug)]
pub struct CallsConfig {
    /// Refuse tokens without room grants.
    pub require_grants: bool,
    /// STUN/TURN servers handed out at join.
    pub ice_servers: Vec<IceServer>,
    /// TURN REST credentials.
    pub turn: Option<TurnConfig>,
    /// Options of rooms created without explicit ones (`empty_timeout` is
    /// the default for `room_create`; rooms created by a join end when
    /// empty).
    pub room_defaults: RoomOptions,
    /// How long a 1:1 call's room ([`Calls::allow_call_room`]) waits empty
    /// for its participants before it ends.
    pub call_room_timeout: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            require_grants: true,
            ice_servers: Vec::new(),
            turn: None,
            room_defaults: RoomOptions::default(),
            call_room_timeout: Duration::from_secs(30),
        }
    }
}

/// Signaling state behind one lock (never held across an await).
#[derive(Default)]
struct State {
    rooms: Rooms,
    /// Permissions of each (room, participant), for moving to the SFU.
    perms: HashMap<(String, String), Permissions>,
    /// (room, participant) whose SFU removal we asked for: the SFU's
    /// `ParticipantLeft` for them is already handled.
    leaving: HashSet<(String, String)>,
    /// Users allowed into 1:1 call rooms whatever their grants.
    call_users: HashMap<String, HashSet<String>>,
    /// Participants whose connection is on another node (cluster mode):
    /// participant → that gateway node's id.
    origins: HashMap<String, String>,
}

/// Delivers pushes to participants connected to other nodes (cluster mode;
/// see [`crate::rtcroute`]).
pub trait RemotePush: Send + Sync {
    /// Queues `data` for `client` on gateway node `node`, in order.
    fn push(&self, node: &str, client: &str, data: Bytes);
    /// Called when `room` ended on this node (its placement can go).
    fn room_finished(&self, room: &str);
}

/// Signaling state of this node's calls.
pub struct Calls {
    sfu: Sfu,
    hub: Arc<Hub>,
    log: Arc<CallLog>,
    cfg: CallsConfig,
    state: Mutex<State>,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    remote: std::sync::OnceLock<Arc<dyn RemotePush>>,
    draining: std::sync::atomic::AtomicBool,
}

fn err(code: ClientError, detail: impl Into<String>) -> EngineError {
    EngineError::new(code, detail)
}

fn media_error(e: MediaError) -> EngineError {
    let code = match &e {
        MediaError::BadSdp(_) | MediaError::UnsupportedCodecs | MediaError::NoOfferPending => {
            ClientError::BAD_REQUEST
        }
        MediaError::TooManyTracks | MediaError::RoomFull | MediaError::NodeFull => {
            ClientError::LIMIT_EXCEEDED
        }
        MediaError::NotPermitted { .. } => ClientError::PERMISSION_DENIED,
        MediaError::UnknownParticipant | MediaError::UnknownTrack => ClientError::BAD_REQUEST,
        MediaError::AlreadyJoined => ClientError::ALREADY_SUBSCRIBED,
        _ => ClientError::INTERNAL,
    };
    // The message names the cause (no internals beyond that).
    EngineError::new(code, e.to_string())
}

fn room_error(e: RoomError) -> EngineError {
    let code = match &e {
        RoomError::Full { .. } => ClientError::LIMIT_EXCEEDED,
        RoomError::AlreadyJoined => ClientError::ALREADY_SUBSCRIBED,
        _ => ClientError::BAD_REQUEST,
    };
    EngineError::new(code, e.to_string())
}

pub(crate) fn not_found(what: &str) -> ApiError {
    ApiError::new(ApiError::METHOD_NOT_FOUND.code, "not found")
        .with_message(format!("{what} not found"))
}

fn api_room_error(e: RoomError) -> ApiError {
    match e {
        RoomError::NotFound => not_found("room"),
        RoomError::NotMember => not_found("participant"),
        RoomError::Exists => ApiError::CONFLICT.with_message("room already exists"),
        e => ApiError::BAD_REQUEST.with_message(e.to_string()),
    }
}

fn source_name(s: TrackSource) -> &'static str {
    match s {
        TrackSource::Microphone => "microphone",
        TrackSource::Camera => "camera",
        TrackSource::Screen => "screen",
    }
}

fn kind_name(k: TrackKind) -> &'static str {
    if k == TrackKind::Audio {
        "audio"
    } else {
        "video"
    }
}

fn track_json(t: &TrackInfo) -> Value {
    json!({
        "id": t.id.as_str(),
        "participant": t.participant.as_str(),
        "kind": kind_name(t.kind),
        "source": source_name(t.source),
        "rids": t.rids,
        "muted": t.muted,
    })
}

/// A room as the server API shows it; with `tracks`, its participants too.
fn room_json(room: &Room, tracks: Option<&[TrackInfo]>) -> Value {
    let o = room.options();
    let mut v = json!({
        "room": room.name(),
        "call": room.call(),
        "mode": o.mode.as_str(),
        "transport": room.transport().as_str(),
        "max_participants": o.max_participants,
        "empty_timeout": switchboard_core::duration::format(o.empty_timeout),
        "created_at": room.created_at_ms(),
        "num_participants": room.members().len(),
    });
    if let Some(tracks) = tracks {
        v["participants"] = room
            .members()
            .iter()
            .map(|m| {
                json!({
                    "participant": m.participant,
                    "user": m.user,
                    "joined_at": m.joined_at_ms,
                    "tracks": tracks
                        .iter()
                        .filter(|t| t.participant.as_str() == m.participant)
                        .map(track_json)
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    v
}

fn parse<T: for<'de> Deserialize<'de>>(data: &Bytes) -> Result<T, EngineError> {
    serde_json::from_slice(data)
        .map_err(|e| err(ClientError::BAD_REQUEST, format!("rtc request: {e}")))
}

fn parse_api<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BAD_REQUEST.with_message(format!("malformed request: {e}")))
}

#[derive(Deserialize)]
struct RoomReq {
    room: String,
}

#[derive(Deserialize)]
struct PublishReq {
    room: String,
    sdp: String,
    #[serde(default)]
    sources: BTreeMap<String, String>,
    #[serde(default)]
    sizes: BTreeMap<String, (u32, u32)>,
}

#[derive(Deserialize)]
struct AnswerReq {
    room: String,
    sdp: String,
}

#[derive(Deserialize)]
struct MuteReq {
    room: String,
    track: String,
    muted: bool,
}

#[derive(Deserialize)]
struct SubscribeReq {
    room: String,
    track: String,
    #[serde(default)]
    max_layer: Option<String>,
    #[serde(default)]
    max_size: Option<(u32, u32)>,
    #[serde(default)]
    paused: bool,
}

#[derive(Deserialize)]
struct SignalReq {
    room: String,
    to: String,
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    room: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    max_participants: Option<usize>,
    #[serde(default)]
    empty_timeout: Option<Value>,
}

#[derive(Deserialize)]
struct RemoveReq {
    room: String,
    participant: String,
}

fn valid_room(room: &str) -> Result<(), String> {
    if room.is_empty()
        || room.len() > 128
        || room.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("invalid room name".into());
    }
    Ok(())
}

fn now_ms() -> i64 {
    crate::node::now_ms()
}

fn new_call_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

impl Calls {
    /// Signaling over an SFU. Starts the task that ends rooms left empty
    /// (it stops with [`Calls::shutdown`]).
    pub fn new(sfu: Sfu, hub: Arc<Hub>, log: Arc<CallLog>, cfg: CallsConfig) -> Arc<Self> {
        let calls = Arc::new(Self {
            sfu,
            hub,
            log,
            state: Mutex::new(State {
                rooms: Rooms::new(cfg.room_defaults.clone()),
                ..State::default()
            }),
            cfg,
            timer: Mutex::new(None),
            remote: std::sync::OnceLock::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        let timer = tokio::spawn(Self::run_timer(Arc::downgrade(&calls)));
        *calls.timer.lock() = Some(timer);
        calls
    }

    /// Ends empty rooms at their deadline; checks at least every second.
    async fn run_timer(calls: Weak<Calls>) {
        loop {
            let wait = {
                let Some(calls) = calls.upgrade() else { return };
                let now = now_ms();
                let ended = calls.state.lock().rooms.poll(now);
                for room in ended {
                    calls.finished(room.name(), room.call(), now);
                }
                let next = calls.state.lock().rooms.next_deadline();
                next.map_or(1000, |t| (t - now).clamp(1, 1000))
            };
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }

    /// Stops the SFU and the room timer.
    pub async fn shutdown(&self) {
        if let Some(t) = self.timer.lock().take() {
            t.abort();
        }
        self.sfu.shutdown().await;
    }

    /// The SFU.
    pub fn sfu(&self) -> &Sfu {
        &self.sfu
    }

    /// The call log events are recorded in.
    pub fn log(&self) -> &Arc<CallLog> {
        &self.log
    }

    /// Lets `users` join `room` with every permission whatever their room
    /// grants (an accepted 1:1 call), creating the room in `auto` mode if
    /// absent. The room's call id is then the room name (the ringing call's
    /// id); it ends if nobody is in it for the configured call room timeout.
    pub fn allow_call_room(&self, room: &str, users: Vec<String>) {
        let now = now_ms();
        let mut st = self.state.lock();
        st.call_users
            .entry(room.to_string())
            .or_default()
            .extend(users.into_iter().filter(|u| !u.is_empty()));
        if st.rooms.get(room).is_none() {
            let options = RoomOptions {
                mode: RoomMode::Auto,
                empty_timeout: self.cfg.call_room_timeout,
                ..self.cfg.room_defaults.clone()
            };
            if st
                .rooms
                .create(room, options, room.to_string(), now)
                .is_ok()
            {
                self.log.record(CallEvent::RoomStarted {
                    call: room.to_string(),
                    room: room.to_string(),
                    mode: RoomMode::Auto.as_str().into(),
                    at_ms: now,
                });
            }
        }
    }

    /// The id of the current session (call) of `room`, if it exists.
    pub fn call_of_room(&self, room: &str) -> Option<String> {
        self.state
            .lock()
            .rooms
            .get(room)
            .map(|r| r.call().to_string())
    }

    fn permissions(&self, caller: &CallerContext, room: &str) -> Result<Permissions, EngineError> {
        if !caller.user.is_empty()
            && self
                .state
                .lock()
                .call_users
                .get(room)
                .is_some_and(|u| u.contains(&caller.user))
        {
            return Ok(Permissions::ALL);
        }
        match &caller.grants {
            Some(g) => {
                if !g.allows_room(room, RoomAction::Join) {
                    return Err(err(
                        ClientError::PERMISSION_DENIED,
                        "no join grant for this room",
                    ));
                }
                Ok(Permissions {
                    publish_audio: g.allows_room(room, RoomAction::PublishAudio),
                    publish_video: g.allows_room(room, RoomAction::PublishVideo),
                    publish_screen: g.allows_room(room, RoomAction::PublishScreen),
                    subscribe: g.allows_room(room, RoomAction::SubscribeMedia),
                })
            }
            None if self.cfg.require_grants => Err(err(
                ClientError::PERMISSION_DENIED,
                "token has no room grants",
            )),
            None => Ok(Permissions::ALL),
        }
    }

    fn ice_servers_for(&self, user: &str) -> Value {
        let mut list: Vec<Value> = self.cfg.ice_servers.iter().map(|s| json!(s)).collect();
        if let Some(turn) = &self.cfg.turn {
            let expires = now_ms() / 1000 + turn.ttl.as_secs() as i64;
            let who = if user.is_empty() { "anonymous" } else { user };
            let (username, credential) = turn_credentials(&turn.secret, who, expires);
            list.push(json!({"urls": turn.urls, "username": username, "credential": credential}));
        }
        Value::Array(list)
    }

    fn members(&self, room: &str) -> Vec<String> {
        self.state
            .lock()
            .rooms
            .get(room)
            .map(|r| r.members().iter().map(|m| m.participant.clone()).collect())
            .unwrap_or_default()
    }

    fn push(&self, client: &str, v: &Value) {
        let data = Bytes::from(v.to_string());
        let origin = self.state.lock().origins.get(client).cloned();
        match (origin, self.remote.get()) {
            (Some(node), Some(remote)) => remote.push(&node, client, data),
            _ => {
                self.hub.send_message(client, data);
            }
        }
    }

    fn push_room(&self, room: &str, except: Option<&str>, v: &Value) {
        for p in self.members(room) {
            if Some(p.as_str()) != except {
                self.push(&p, v);
            }
        }
    }

    /// Refuses SFU methods in a room whose participant uses peer-to-peer.
    fn require_sfu(&self, room: &str, me: &str) -> Result<(), EngineError> {
        let st = self.state.lock();
        if let Some(r) = st.rooms.get(room)
            && r.member(me).is_some()
            && r.transport() == Transport::P2p
        {
            return Err(err(
                ClientError::BAD_REQUEST,
                "room is in p2p mode: media does not go through the server",
            ));
        }
        Ok(())
    }

    /// Asks the SFU to drop a participant whose departure is already handled.
    async fn sfu_leave(&self, room: &str, participant: &str) {
        let key = (room.to_string(), participant.to_string());
        self.state.lock().leaving.insert(key.clone());
        if self
            .sfu
            .leave(
                RoomId::new(room.to_string()),
                ParticipantId::new(participant.to_string()),
            )
            .await
            .is_err()
        {
            self.state.lock().leaving.remove(&key);
        }
    }

    fn finished(&self, room: &str, call: &str, at_ms: i64) {
        self.state.lock().call_users.remove(room);
        self.log.record(CallEvent::RoomFinished {
            call: call.to_string(),
            room: room.to_string(),
            at_ms,
        });
        if let Some(remote) = self.remote.get() {
            remote.room_finished(room);
        }
    }

    /// Forgets where a participant's connection is once it is in no room.
    fn forget_origin(&self, participant: &str) {
        let mut st = self.state.lock();
        if st.rooms.rooms_of(participant).is_empty() {
            st.origins.remove(participant);
        }
    }

    /// After the registry removed a participant: drop its SFU peers, tell
    /// the others, record it.
    async fn after_leave(&self, room: &str, left: Left, reason: &str) {
        let now = now_ms();
        let p = left.member.participant.clone();
        self.state
            .lock()
            .perms
            .remove(&(room.to_string(), p.clone()));
        if left.transport == Transport::Sfu {
            self.sfu_leave(room, &p).await;
        }
        let msg = json!({"type": "rtc.participant_left", "room": room, "participant": p, "reason": reason});
        for o in &left.others {
            self.push(&o.participant, &msg);
        }
        self.log.record(CallEvent::ParticipantLeft {
            call: left.call.clone(),
            room: room.to_string(),
            participant: p,
            user: left.member.user.clone(),
            reason: reason.to_string(),
            at_ms: now,
        });
        if left.finished {
            self.finished(room, &left.call, now);
        }
        self.forget_origin(&left.member.participant);
    }

    /// `participant` leaves `room` (`reason` as told to the others).
    async fn leave_room(
        &self,
        room: &str,
        participant: &str,
        reason: &str,
    ) -> Result<(), RoomError> {
        let left = self.state.lock().rooms.leave(room, participant, now_ms())?;
        self.after_leave(room, left, reason).await;
        Ok(())
    }

    /// Moves participants of an `auto` room from peer-to-peer to the SFU:
    /// each gets `rtc.mode` with its first subscriber offer.
    async fn switch_to_sfu(&self, room: &str, call: &str, members: &[String]) {
        self.log.record(CallEvent::ModeChanged {
            call: call.to_string(),
            room: room.to_string(),
            mode: Transport::Sfu.as_str().into(),
            at_ms: now_ms(),
        });
        for p in members {
            let perms = self
                .state
                .lock()
                .perms
                .get(&(room.to_string(), p.clone()))
                .copied()
                .unwrap_or(Permissions::SUBSCRIBE_ONLY);
            match self
                .sfu
                .join(
                    RoomId::new(room.to_string()),
                    ParticipantId::new(p.clone()),
                    perms,
                )
                .await
            {
                Ok(info) => {
                    let still_here = self
                        .state
                        .lock()
                        .rooms
                        .get(room)
                        .is_some_and(|r| r.member(p).is_some());
                    if still_here {
                        self.push(
                            p,
                            &json!({"type": "rtc.mode", "room": room, "mode": "sfu", "offer": info.subscriber_offer}),
                        );
                    } else {
                        // It left while we were adding it.
                        self.sfu_leave(room, p).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, room, participant = %p, "moving participant to the SFU");
                    if self.leave_room(room, p, "removed").await.is_ok() {
                        self.push(p, &json!({"type": "rtc.removed", "room": room}));
                    }
                }
            }
        }
    }

    async fn join(&self, caller: &CallerContext, room: String) -> Result<Value, EngineError> {
        valid_room(&room).map_err(|e| err(ClientError::BAD_REQUEST, e))?;
        let perms = self.permissions(caller, &room)?;
        let me = caller.client.clone();
        let now = now_ms();
        let joined = {
            let mut st = self.state.lock();
            let j = st
                .rooms
                .join(&room, &me, &caller.user, now, new_call_id)
                .map_err(room_error)?;
            st.perms.insert((room.clone(), me.clone()), perms);
            j
        };
        if joined.started {
            self.log.record(CallEvent::RoomStarted {
                call: joined.call.clone(),
                room: room.clone(),
                mode: joined.mode.as_str().into(),
                at_ms: now,
            });
        }
        if !joined.switched.is_empty() {
            let moved: Vec<String> = joined
                .switched
                .iter()
                .map(|m| m.participant.clone())
                .collect();
            self.switch_to_sfu(&room, &joined.call, &moved).await;
        }
        let mut reply = json!({
            "room": room,
            "participant": me,
            "mode": joined.transport.as_str(),
            "tracks": [],
            "participants": joined.others.iter().map(|m| m.participant.as_str()).collect::<Vec<_>>(),
            // Who they are, as rtc.participant_joined tells those already there.
            "users": joined.others.iter().map(|m| (m.participant.clone(), json!(m.user))).collect::<serde_json::Map<_, _>>(),
            "ice_servers": self.ice_servers_for(&caller.user),
            "permissions": {
                "publish_audio": perms.publish_audio,
                "publish_video": perms.publish_video,
                "publish_screen": perms.publish_screen,
                "subscribe": perms.subscribe,
            },
        });
        if joined.transport == Transport::Sfu {
            match self
                .sfu
                .join(
                    RoomId::new(room.clone()),
                    ParticipantId::new(me.clone()),
                    perms,
                )
                .await
            {
                Ok(info) => {
                    reply["offer"] = json!(info.subscriber_offer);
                    reply["tracks"] = info.tracks.iter().map(track_json).collect();
                }
                Err(e) => {
                    // Undo the registry join; nobody was told yet.
                    let left = {
                        let mut st = self.state.lock();
                        st.perms.remove(&(room.clone(), me.clone()));
                        st.rooms.leave(&room, &me, now_ms())
                    };
                    if let Ok(left) = left
                        && left.finished
                    {
                        self.finished(&room, &left.call, now_ms());
                    }
                    return Err(media_error(e));
                }
            }
        }
        self.log.record(CallEvent::ParticipantJoined {
            call: joined.call.clone(),
            room: room.clone(),
            participant: me.clone(),
            user: caller.user.clone(),
            at_ms: now,
        });
        let msg = json!({"type": "rtc.participant_joined", "room": room, "participant": me, "user": caller.user});
        for o in &joined.others {
            self.push(&o.participant, &msg);
        }
        Ok(reply)
    }

    fn signal(&self, me: &str, data: &Bytes) -> Result<Value, EngineError> {
        let req: SignalReq = parse(data)?;
        if !req.data.is_object() {
            return Err(err(
                ClientError::BAD_REQUEST,
                "signal data must be a JSON object",
            ));
        }
        let size = serde_json::to_string(&req.data).map_or(usize::MAX, |s| s.len());
        if size > MAX_SIGNAL_BYTES {
            return Err(err(
                ClientError::BAD_REQUEST,
                format!("signal data too large ({size} bytes, at most {MAX_SIGNAL_BYTES})"),
            ));
        }
        self.state
            .lock()
            .rooms
            .check_signal(&req.room, me, &req.to)
            .map_err(room_error)?;
        self.push(
            &req.to,
            &json!({"type": "rtc.signal", "room": req.room, "from": me, "data": req.data}),
        );
        metrics::counter!("switchboard_rtc_signals_total").increment(1);
        Ok(json!({}))
    }

    /// Runs an `rtc.*` method for a client connected to this node.
    pub async fn rpc(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        self.rpc_from(None, caller, method, data).await
    }

    /// Runs an `rtc.*` method for a client connected to gateway node
    /// `origin` (`None`: this node); its pushes go back there.
    pub async fn rpc_from(
        &self,
        origin: Option<&str>,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        if let Some(node) = origin {
            self.state
                .lock()
                .origins
                .insert(caller.client.clone(), node.to_string());
        }
        let out = self.run_rpc(caller, method, data).await;
        if origin.is_some() && out.is_err() {
            self.forget_origin(&caller.client);
        }
        out
    }

    async fn run_rpc(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        let me = ParticipantId::new(caller.client.clone());
        let out = match method {
            "rtc.join" => {
                let req: RoomReq = parse(&data)?;
                if self.is_draining() {
                    return Err(err(ClientError::NOT_AVAILABLE, DRAINING));
                }
                self.join(caller, req.room).await?
            }
            "rtc.signal" => self.signal(&caller.client, &data)?,
            "rtc.publish" => {
                let req: PublishReq = parse(&data)?;
                self.require_sfu(&req.room, &caller.client)?;
                let mut offer = PublishOffer::new(req.sdp);
                for (mid, src) in &req.sources {
                    let source = match src.as_str() {
                        "microphone" => TrackSource::Microphone,
                        "camera" => TrackSource::Camera,
                        "screen" => TrackSource::Screen,
                        other => {
                            return Err(err(
                                ClientError::BAD_REQUEST,
                                format!("unknown source {other:?}"),
                            ));
                        }
                    };
                    offer = offer.with_source(mid, source);
                }
                for (mid, (w, h)) in &req.sizes {
                    offer = offer.with_size(mid, *w, *h);
                }
                let answer = self
                    .sfu
                    .publish_offer(RoomId::new(req.room), me, offer)
                    .await
                    .map_err(media_error)?;
                json!({"sdp": answer})
            }
            "rtc.answer" => {
                let req: AnswerReq = parse(&data)?;
                self.require_sfu(&req.room, &caller.client)?;
                self.sfu
                    .subscriber_answer(RoomId::new(req.room), me, req.sdp)
                    .await
                    .map_err(media_error)?;
                json!({})
            }
            "rtc.mute" => {
                let req: MuteReq = parse(&data)?;
                self.require_sfu(&req.room, &caller.client)?;
                self.sfu
                    .set_muted(
                        RoomId::new(req.room),
                        me,
                        TrackId::new(req.track),
                        req.muted,
                    )
                    .await
                    .map_err(media_error)?;
                json!({})
            }
            "rtc.subscribe" => {
                let req: SubscribeReq = parse(&data)?;
                self.require_sfu(&req.room, &caller.client)?;
                let max_layer = match req.max_layer.as_deref() {
                    None | Some("high") => Layer::High,
                    Some("medium") => Layer::Medium,
                    Some("low") => Layer::Low,
                    Some(other) => {
                        return Err(err(
                            ClientError::BAD_REQUEST,
                            format!("unknown layer {other:?}"),
                        ));
                    }
                };
                let prefs = SubscriptionPrefs {
                    max_layer,
                    max_size: req.max_size,
                    paused: req.paused,
                };
                self.sfu
                    .set_subscription(RoomId::new(req.room), me, TrackId::new(req.track), prefs)
                    .await
                    .map_err(media_error)?;
                json!({})
            }
            "rtc.leave" => {
                let req: RoomReq = parse(&data)?;
                self.leave_room(&req.room, &caller.client, "left")
                    .await
                    .map_err(room_error)?;
                json!({})
            }
            _ => {
                return Err(err(
                    ClientError::METHOD_NOT_FOUND,
                    format!("rpc method {method:?}"),
                ));
            }
        };
        Ok(Bytes::from(out.to_string()))
    }

    /// A client went away: it leaves every room it was in (the others get
    /// `rtc.participant_left` with reason `disconnected`).
    pub async fn disconnected(&self, client: &str) {
        let rooms = self.state.lock().rooms.rooms_of(client);
        for room in rooms {
            let _ = self.leave_room(&room, client, "disconnected").await;
        }
        self.state.lock().origins.remove(client);
    }

    /// Sends pushes for participants on other nodes through `remote`
    /// (cluster mode). Set once.
    pub fn set_remote(&self, remote: Arc<dyn RemotePush>) {
        let _ = self.remote.set(remote);
    }

    /// Whether [`Calls::evacuate`] ran: joins are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Graceful drain: refuses new joins and closes every room on this node.
    /// Participants connected to other nodes get `rtc.reconnect` (reason
    /// `moved`) so they join again, on another media node; those connected
    /// here are moved by the connection drain (their SDK rejoins after
    /// reconnecting). Returns the rooms closed.
    pub async fn evacuate(&self) -> Vec<String> {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let rooms: Vec<String> = self
            .state
            .lock()
            .rooms
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        let mut closed = Vec::new();
        for name in rooms {
            let room = {
                let mut st = self.state.lock();
                match st.rooms.delete(&name) {
                    Ok(room) => {
                        for m in room.members() {
                            st.perms.remove(&(name.clone(), m.participant.clone()));
                        }
                        room
                    }
                    Err(_) => continue,
                }
            };
            let now = now_ms();
            let moved = json!({"type": "rtc.reconnect", "room": name, "reason": "moved"});
            for m in room.members() {
                if self.state.lock().origins.contains_key(&m.participant) {
                    self.push(&m.participant, &moved);
                }
                if room.transport() == Transport::Sfu {
                    self.sfu_leave(&name, &m.participant).await;
                }
                self.log.record(CallEvent::ParticipantLeft {
                    call: room.call().to_string(),
                    room: name.clone(),
                    participant: m.participant.clone(),
                    user: m.user.clone(),
                    reason: "moved".into(),
                    at_ms: now,
                });
                self.forget_origin(&m.participant);
            }
            // The call goes on elsewhere: its placement (and options) stay
            // for the next media node to take over.
            self.state.lock().call_users.remove(&name);
            self.log.record(CallEvent::RoomFinished {
                call: room.call().to_string(),
                room: name.clone(),
                at_ms: now,
            });
            closed.push(name);
        }
        closed
    }

    /// Runs a room method of the server API (`None`: not one of
    /// [`API_METHODS`]).
    pub async fn api(&self, method: &str, body: &[u8]) -> Option<Result<Value, ApiError>> {
        if !API_METHODS.contains(&method) {
            return None;
        }
        Some(self.run_api(method, body).await)
    }

    async fn tracks_of(&self, room: &str) -> Vec<TrackInfo> {
        self.sfu
            .tracks(RoomId::new(room.to_string()))
            .await
            .unwrap_or_default()
    }

    async fn run_api(&self, method: &str, body: &[u8]) -> Result<Value, ApiError> {
        match method {
            "room_create" => {
                let req: CreateReq = parse_api(body)?;
                valid_room(&req.room).map_err(|e| ApiError::BAD_REQUEST.with_message(e))?;
                let defaults = &self.cfg.room_defaults;
                let mut options = defaults.clone();
                if let Some(mode) = &req.mode {
                    options.mode = mode.parse().map_err(|e: RoomError| {
                        ApiError::BAD_REQUEST.with_message(e.to_string())
                    })?;
                }
                if let Some(max) = req.max_participants {
                    if max == 0 || max > defaults.max_participants {
                        return Err(ApiError::BAD_REQUEST.with_message(format!(
                            "max_participants must be between 1 and {} (media.max_participants)",
                            defaults.max_participants
                        )));
                    }
                    options.max_participants = max;
                }
                if let Some(t) = &req.empty_timeout {
                    options.empty_timeout = match t {
                        Value::String(s) => switchboard_core::duration::parse(s).map_err(|e| {
                            ApiError::BAD_REQUEST.with_message(format!("empty_timeout: {e}"))
                        })?,
                        Value::Number(n) if n.as_u64().is_some() => {
                            Duration::from_secs(n.as_u64().unwrap_or(0))
                        }
                        _ => {
                            return Err(ApiError::BAD_REQUEST.with_message(
                                "empty_timeout: a duration such as \"5m\" or a number of seconds",
                            ));
                        }
                    };
                }
                let now = now_ms();
                let call = new_call_id();
                let room = {
                    let mut st = self.state.lock();
                    let r = st
                        .rooms
                        .create(&req.room, options, call.clone(), now)
                        .map_err(api_room_error)?;
                    room_json(r, Some(&[]))
                };
                self.log.record(CallEvent::RoomStarted {
                    call,
                    room: req.room,
                    mode: room["mode"].as_str().unwrap_or_default().to_string(),
                    at_ms: now,
                });
                Ok(json!({ "room": room }))
            }
            "room_list" => {
                let rooms: Vec<Value> = self
                    .state
                    .lock()
                    .rooms
                    .iter()
                    .map(|r| room_json(r, None))
                    .collect();
                let counts =
                    self.sfu.counts().await.map_err(|_| {
                        ApiError::NOT_AVAILABLE.with_message("media server stopped")
                    })?;
                Ok(json!({
                    "rooms": rooms,
                    "sfu": {"rooms": counts.rooms, "participants": counts.participants, "peers": counts.peers},
                }))
            }
            "room_get" => {
                let req: RoomReq = parse_api(body)?;
                let tracks = self.tracks_of(&req.room).await;
                let st = self.state.lock();
                let room = st.rooms.get(&req.room).ok_or_else(|| not_found("room"))?;
                Ok(json!({ "room": room_json(room, Some(&tracks)) }))
            }
            "room_delete" => {
                let req: RoomReq = parse_api(body)?;
                let room = {
                    let mut st = self.state.lock();
                    let room = st.rooms.delete(&req.room).map_err(api_room_error)?;
                    for m in room.members() {
                        st.perms.remove(&(req.room.clone(), m.participant.clone()));
                    }
                    room
                };
                let now = now_ms();
                let ended = json!({"type": "rtc.room_ended", "room": req.room});
                for m in room.members() {
                    self.push(&m.participant, &ended);
                    if room.transport() == Transport::Sfu {
                        self.sfu_leave(&req.room, &m.participant).await;
                    }
                    self.log.record(CallEvent::ParticipantLeft {
                        call: room.call().to_string(),
                        room: req.room.clone(),
                        participant: m.participant.clone(),
                        user: m.user.clone(),
                        reason: "room_deleted".into(),
                        at_ms: now,
                    });
                }
                self.finished(&req.room, room.call(), now);
                for m in room.members() {
                    self.forget_origin(&m.participant);
                }
                Ok(json!({}))
            }
            "room_remove_participant" => {
                let req: RemoveReq = parse_api(body)?;
                let left = self
                    .state
                    .lock()
                    .rooms
                    .leave(&req.room, &req.participant, now_ms())
                    .map_err(api_room_error)?;
                self.push(
                    &req.participant,
                    &json!({"type": "rtc.removed", "room": req.room}),
                );
                self.after_leave(&req.room, left, "removed").await;
                Ok(json!({}))
            }
            "room_mute_track" => {
                let req: MuteReq = parse_api(body)?;
                let transport = self
                    .state
                    .lock()
                    .rooms
                    .get(&req.room)
                    .map(Room::transport)
                    .ok_or_else(|| not_found("room"))?;
                if transport == Transport::P2p {
                    return Err(ApiError::BAD_REQUEST
                        .with_message("room is in p2p mode: its tracks are not on the server"));
                }
                let tracks = self.tracks_of(&req.room).await;
                let track = tracks
                    .iter()
                    .find(|t| t.id.as_str() == req.track)
                    .ok_or_else(|| not_found("track"))?;
                self.sfu
                    .set_muted(
                        RoomId::new(req.room),
                        track.participant.clone(),
                        track.id.clone(),
                        req.muted,
                    )
                    .await
                    .map_err(|e| ApiError::BAD_REQUEST.with_message(e.to_string()))?;
                Ok(json!({}))
            }
            _ => Err(ApiError::METHOD_NOT_FOUND),
        }
    }

    /// Turns SFU events into pushes and call-log events; runs until the SFU
    /// stops.
    pub async fn run_events(self: Arc<Self>, mut events: tokio::sync::mpsc::Receiver<MediaEvent>) {
        while let Some(ev) = events.recv().await {
            self.handle_event(ev).await;
        }
    }

    async fn handle_event(&self, ev: MediaEvent) {
        match ev {
            MediaEvent::SubscriberOffer {
                room,
                participant,
                sdp,
            } => {
                self.push(
                    participant.as_str(),
                    &json!({"type": "rtc.offer", "room": room.as_str(), "sdp": sdp}),
                );
            }
            MediaEvent::ParticipantConnected { room, participant } => {
                self.push(
                    participant.as_str(),
                    &json!({"type": "rtc.connected", "room": room.as_str()}),
                );
            }
            MediaEvent::ParticipantLeft {
                room,
                participant,
                reason,
            } => {
                let key = (room.as_str().to_string(), participant.as_str().to_string());
                if self.state.lock().leaving.remove(&key) {
                    return; // we asked for it and told the room already
                }
                let reason = match reason {
                    LeaveReason::Left => "left",
                    LeaveReason::IceTimeout => "ice_timeout",
                    LeaveReason::Vanished => "vanished",
                };
                let left =
                    self.state
                        .lock()
                        .rooms
                        .leave(room.as_str(), participant.as_str(), now_ms());
                if let Ok(left) = left {
                    // The SFU gave up on it: it is told too.
                    self.push(
                        participant.as_str(),
                        &json!({"type": "rtc.participant_left", "room": room.as_str(), "participant": participant.as_str(), "reason": reason}),
                    );
                    let mut left = left;
                    // Its SFU peers are gone already.
                    left.transport = Transport::P2p;
                    self.after_leave(room.as_str(), left, reason).await;
                }
            }
            MediaEvent::TrackPublished { room, track } => {
                if let Some(call) = self.call_of_room(room.as_str()) {
                    self.log.record(CallEvent::TrackPublished {
                        call,
                        room: room.as_str().to_string(),
                        participant: track.participant.as_str().to_string(),
                        track: track.id.as_str().to_string(),
                        kind: kind_name(track.kind).into(),
                        source: source_name(track.source).into(),
                        at_ms: now_ms(),
                    });
                }
                let msg = json!({"type": "rtc.track_published", "room": room.as_str(), "track": track_json(&track)});
                self.push_room(room.as_str(), None, &msg);
            }
            MediaEvent::TrackUnpublished {
                room,
                participant,
                track,
            } => {
                if let Some(call) = self.call_of_room(room.as_str()) {
                    self.log.record(CallEvent::TrackUnpublished {
                        call,
                        room: room.as_str().to_string(),
                        participant: participant.as_str().to_string(),
                        track: track.as_str().to_string(),
                        at_ms: now_ms(),
                    });
                }
                let msg = json!({"type": "rtc.track_unpublished", "room": room.as_str(), "participant": participant.as_str(), "track": track.as_str()});
                self.push_room(room.as_str(), None, &msg);
            }
            MediaEvent::TrackMuted {
                room,
                participant,
                track,
                muted,
            } => {
                let msg = json!({"type": "rtc.track_muted", "room": room.as_str(), "participant": participant.as_str(), "track": track.as_str(), "muted": muted});
                self.push_room(room.as_str(), None, &msg);
            }
            MediaEvent::ActiveSpeakers { room, speakers } => {
                let list: Vec<Value> = speakers
                    .iter()
                    .map(|(p, level)| json!({"participant": p.as_str(), "level": level}))
                    .collect();
                self.push_room(room.as_str(), None, &json!({"type": "rtc.active_speakers", "room": room.as_str(), "speakers": list}));
            }
            MediaEvent::Quality {
                room,
                participant,
                quality,
            } => {
                let q = match quality {
                    Quality::Excellent => "excellent",
                    Quality::Good => "good",
                    Quality::Poor => "poor",
                };
                self.push_room(room.as_str(), None, &json!({"type": "rtc.quality", "room": room.as_str(), "participant": participant.as_str(), "quality": q}));
            }
            MediaEvent::Stats {
                room,
                participant,
                stats,
            } => {
                metrics::counter!("switchboard_media_stats_total").increment(1);
                crate::stats::record_media(room.as_str(), participant.as_str(), &stats);
                if let Some(call) = self.call_of_room(room.as_str()) {
                    self.log.record(CallEvent::QualitySample {
                        call,
                        room: room.as_str().to_string(),
                        participant: participant.as_str().to_string(),
                        rtt_ms: ms(stats.rtt),
                        jitter_ms: ms(stats.jitter),
                        loss: f64::from(stats.loss),
                        at_ms: now_ms(),
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::turn_credentials;

    #[test]
    fn turn_rest_credentials_match_coturn_scheme() {
        // Known answer: HMAC-SHA1("secret", "1700000000:alice"), base64.
        let (user, pass) = turn_credentials("secret", "alice", 1_700_000_000);
        assert_eq!(user, "1700000000:alice");
        // Computed independently (Python hmac + base64).
        assert_eq!(pass, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }
}
