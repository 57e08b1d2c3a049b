//! Call signaling: the `rtc.*` RPC methods clients call over their
//! messaging connection, and the pushes that carry the SFU's events back.
//!
//! A participant is one client connection (its client id is the participant
//! id). `rtc.join` returns the first subscriber offer; the client answers with
//! `rtc.answer`, publishes with `rtc.publish` (its offer → the SFU's
//! answer), and receives later offers, track and participant changes, active
//! speakers and quality as asynchronous `message` pushes
//! (`{"type": "rtc.offer", …}`). Leaving, disconnecting, or the SFU giving up
//! on the peer removes the participant and tells the others.

use crate::calllog::CallLog;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::grants::RoomAction;
use switchboard_gateway::Hub;
use switchboard_gateway::engine::{CallerContext, EngineError};
use switchboard_media::{
    Layer, LeaveReason, MediaError, MediaEvent, ParticipantId, Permissions, PublishOffer, Quality,
    RoomId, Sfu, SubscriptionPrefs, TrackId, TrackInfo, TrackKind, TrackSource,
};
use switchboard_proto::codes::ClientError;

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

/// Signaling state of this node's calls.
pub struct Calls {
    sfu: Sfu,
    hub: Arc<Hub>,
    log: Arc<CallLog>,
    require_grants: bool,
    ice_servers: Vec<IceServer>,
    turn: Option<TurnConfig>,
    /// Participants by room, and rooms by participant.
    rooms: Mutex<HashMap<String, BTreeSet<String>>>,
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

fn source_name(s: TrackSource) -> &'static str {
    match s {
        TrackSource::Microphone => "microphone",
        TrackSource::Camera => "camera",
        TrackSource::Screen => "screen",
    }
}

fn track_json(t: &TrackInfo) -> Value {
    json!({
        "id": t.id.as_str(),
        "participant": t.participant.as_str(),
        "kind": if t.kind == TrackKind::Audio { "audio" } else { "video" },
        "source": source_name(t.source),
        "rids": t.rids,
        "muted": t.muted,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(data: &Bytes) -> Result<T, EngineError> {
    serde_json::from_slice(data)
        .map_err(|e| err(ClientError::BAD_REQUEST, format!("rtc request: {e}")))
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

fn valid_room(room: &str) -> Result<(), EngineError> {
    if room.is_empty()
        || room.len() > 128
        || room.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err(ClientError::BAD_REQUEST, "invalid room name"));
    }
    Ok(())
}

impl Calls {
    /// Signaling over an SFU; `require_grants` refuses tokens without room grants.
    pub fn new(
        sfu: Sfu,
        hub: Arc<Hub>,
        log: Arc<CallLog>,
        require_grants: bool,
        ice_servers: Vec<IceServer>,
        turn: Option<TurnConfig>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sfu,
            hub,
            log,
            require_grants,
            ice_servers,
            turn,
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// The SFU.
    pub fn sfu(&self) -> &Sfu {
        &self.sfu
    }

    /// The call log events are recorded in.
    pub fn log(&self) -> &Arc<CallLog> {
        &self.log
    }

    fn permissions(&self, caller: &CallerContext, room: &str) -> Result<Permissions, EngineError> {
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
            None if self.require_grants => Err(err(
                ClientError::PERMISSION_DENIED,
                "token has no room grants",
            )),
            None => Ok(Permissions::ALL),
        }
    }

    fn ice_servers_for(&self, user: &str) -> Value {
        let mut list: Vec<Value> = self.ice_servers.iter().map(|s| json!(s)).collect();
        if let Some(turn) = &self.turn {
            let expires = crate::node::now_ms() / 1000 + turn.ttl.as_secs() as i64;
            let who = if user.is_empty() { "anonymous" } else { user };
            let (username, credential) = turn_credentials(&turn.secret, who, expires);
            list.push(json!({"urls": turn.urls, "username": username, "credential": credential}));
        }
        Value::Array(list)
    }

    fn members(&self, room: &str) -> Vec<String> {
        self.rooms
            .lock()
            .get(room)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn push(&self, client: &str, v: &Value) {
        self.hub.send_message(client, Bytes::from(v.to_string()));
    }

    fn push_room(&self, room: &str, except: Option<&str>, v: &Value) {
        for p in self.members(room) {
            if Some(p.as_str()) != except {
                self.push(&p, v);
            }
        }
    }

    /// Runs an `rtc.*` method.
    pub async fn rpc(
        &self,
        caller: &CallerContext,
        method: &str,
        data: Bytes,
    ) -> Result<Bytes, EngineError> {
        let me = ParticipantId::new(caller.client.clone());
        let out = match method {
            "rtc.join" => {
                let req: RoomReq = parse(&data)?;
                valid_room(&req.room)?;
                let perms = self.permissions(caller, &req.room)?;
                let info = self
                    .sfu
                    .join(RoomId::new(req.room.clone()), me.clone(), perms)
                    .await
                    .map_err(media_error)?;
                self.rooms
                    .lock()
                    .entry(req.room.clone())
                    .or_default()
                    .insert(caller.client.clone());
                let joined = json!({"type": "rtc.participant_joined", "room": req.room, "participant": caller.client, "user": caller.user});
                self.push_room(&req.room, Some(&caller.client), &joined);
                json!({
                    "room": req.room,
                    "participant": caller.client,
                    "offer": info.subscriber_offer,
                    "tracks": info.tracks.iter().map(track_json).collect::<Vec<_>>(),
                    "participants": info.participants.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                    "ice_servers": self.ice_servers_for(&caller.user),
                    "permissions": {
                        "publish_audio": perms.publish_audio,
                        "publish_video": perms.publish_video,
                        "publish_screen": perms.publish_screen,
                        "subscribe": perms.subscribe,
                    },
                })
            }
            "rtc.publish" => {
                let req: PublishReq = parse(&data)?;
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
                self.sfu
                    .subscriber_answer(RoomId::new(req.room), me, req.sdp)
                    .await
                    .map_err(media_error)?;
                json!({})
            }
            "rtc.mute" => {
                let req: MuteReq = parse(&data)?;
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
                self.sfu
                    .leave(RoomId::new(req.room), me)
                    .await
                    .map_err(media_error)?;
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

    /// A client went away: it leaves every room it was in.
    pub async fn disconnected(&self, client: &str) {
        let rooms: Vec<String> = self
            .rooms
            .lock()
            .iter()
            .filter(|(_, m)| m.contains(client))
            .map(|(r, _)| r.clone())
            .collect();
        for room in rooms {
            let _ = self
                .sfu
                .leave(RoomId::new(room), ParticipantId::new(client.to_string()))
                .await;
        }
    }

    /// Turns SFU events into pushes; runs until the SFU stops.
    pub async fn run_events(self: Arc<Self>, mut events: tokio::sync::mpsc::Receiver<MediaEvent>) {
        while let Some(ev) = events.recv().await {
            self.handle_event(ev);
        }
    }

    fn handle_event(&self, ev: MediaEvent) {
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
                let reason = match reason {
                    LeaveReason::Left => "left",
                    LeaveReason::IceTimeout => "ice_timeout",
                    LeaveReason::Vanished => "vanished",
                };
                let msg = json!({"type": "rtc.participant_left", "room": room.as_str(), "participant": participant.as_str(), "reason": reason});
                // The others, and the participant itself when it did not ask.
                self.push_room(room.as_str(), None, &msg);
                let mut rooms = self.rooms.lock();
                if let Some(m) = rooms.get_mut(room.as_str()) {
                    m.remove(participant.as_str());
                    if m.is_empty() {
                        rooms.remove(room.as_str());
                    }
                }
            }
            MediaEvent::TrackPublished { room, track } => {
                let msg = json!({"type": "rtc.track_published", "room": room.as_str(), "track": track_json(&track)});
                self.push_room(room.as_str(), None, &msg);
            }
            MediaEvent::TrackUnpublished {
                room,
                participant,
                track,
            } => {
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
            MediaEvent::Stats { .. } => {
                metrics::counter!("switchboard_media_stats_total").increment(1);
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
