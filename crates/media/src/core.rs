//! [`SfuCore`]: the sans-IO SFU. It owns every participant's str0m peers and
//! never touches a socket or reads the clock.
//!
//! Driving contract (the same as str0m's, one level up): make one change —
//! a signaling call ([`SfuCore::join`], [`SfuCore::publish_offer`], …), a
//! datagram ([`SfuCore::handle_receive`]) or the passage of time
//! ([`SfuCore::handle_timeout`]) — then drain [`SfuCore::poll_transmit`] and
//! [`SfuCore::poll_event`], and wait until [`SfuCore::poll_timeout`] or the
//! next input.
//!
//! ```no_run
//! use std::time::Instant;
//! use switchboard_media::{MediaConfig, SfuCore};
//! let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
//! let cfg = MediaConfig::new(socket.local_addr().unwrap());
//! let mut core = SfuCore::new(cfg, socket.local_addr().unwrap(), Instant::now()).unwrap();
//! let mut buf = vec![0; 2000];
//! loop {
//!     while let Some(t) = core.poll_transmit() {
//!         socket.send_to(&t.contents, t.destination).unwrap();
//!     }
//!     while let Some(ev) = core.poll_event() {
//!         println!("{ev:?}"); // hand to signaling
//!     }
//!     let wait = core.poll_timeout().saturating_duration_since(Instant::now());
//!     socket.set_read_timeout(Some(wait.max(std::time::Duration::from_millis(1)))).unwrap();
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, from)) => {
//!             core.handle_receive(Instant::now(), from, &buf[..n]);
//!         }
//!         Err(_) => core.handle_timeout(Instant::now()),
//!     }
//! }
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::crypto::CryptoProvider;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc, Vp8Descriptor, Vp8Patch};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::config::MediaConfig;
use crate::error::{MediaError, PermissionKind};
use crate::sdp;
use crate::types::*;

/// A datagram to send from the media socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// Numbers for tests, metrics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rooms with at least one participant.
    pub rooms: usize,
    /// Participants on this node.
    pub participants: usize,
    /// str0m peers (`Rtc` instances) alive.
    pub peers: usize,
    /// Frames forwarded to subscribers since start: audio packets, and
    /// video packets that end a frame (RTP marker bit).
    pub frames_forwarded: u64,
    /// RTP packets forwarded to subscribers since start.
    pub packets_forwarded: u64,
    /// Datagrams received since start.
    pub datagrams_in: u64,
    /// Datagrams sent since start.
    pub datagrams_out: u64,
    /// Datagrams no peer accepted.
    pub datagrams_dropped: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PKey(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Role {
    Publisher,
    Subscriber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerRef(PKey, Role);

struct Peer {
    rtc: Rtc,
    connected: bool,
    failed: bool,
    timeout: Instant,
}

impl Peer {
    fn new(rtc: Rtc, now: Instant) -> Self {
        Peer {
            rtc,
            connected: false,
            failed: false,
            timeout: now,
        }
    }
}

/// A track coming in on a publisher peer.
struct PubTrack {
    id: TrackId,
    mid: Mid,
    kind: TrackKind,
    source: TrackSource,
    /// Lowest layer first; empty without simulcast.
    rids: Vec<Rid>,
    size: Option<(u32, u32)>,
    muted: bool,
    last_keyframe_request: HashMap<Option<Rid>, Instant>,
    /// Payload params of the last payload type seen (codec lookup cache).
    params: Option<PayloadParams>,
    /// Bytes per layer index (0 without simulcast) in the current window.
    window_bytes: [u64; 3],
    /// Bits per second per layer over the last window.
    layer_bps: [u64; 3],
}

impl PubTrack {
    fn info(&self, participant: &ParticipantId) -> TrackInfo {
        TrackInfo {
            id: self.id.clone(),
            participant: participant.clone(),
            kind: self.kind,
            source: self.source,
            rids: self.rids.iter().map(|r| r.to_string()).collect(),
            muted: self.muted,
        }
    }

    fn layer_of(&self, rid: Option<Rid>) -> usize {
        rid.and_then(|r| self.rids.iter().position(|x| *x == r))
            .unwrap_or(0)
            .min(2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// A track going out on a subscriber peer.
struct SubTrack {
    track: TrackId,
    /// msid stream id: the publisher's participant id (str0m keeps only
    /// RFC 8830 token characters).
    stream_id: String,
    source: PKey,
    source_mid: Mid,
    kind: TrackKind,
    state: SubState,
    /// The source went away while the m-line was being negotiated.
    removed: bool,
    prefs: SubscriptionPrefs,
    /// Layer being forwarded (simulcast) — `None` before the first keyframe.
    current_rid: Option<Rid>,
    /// Layer wanted; becomes current on its next keyframe.
    target_rid: Option<Rid>,
    /// Video: forward nothing until a keyframe (start, resume, unmute).
    need_keyframe: bool,
    /// The next forwarded packet starts a new output segment (layer switch,
    /// resume after pause or mute): sequence numbers, timestamps and VP8
    /// picture ids continue from the last packet sent.
    rebase_pending: bool,
    /// Per-subscriber RTP rewriting.
    rw: Rewriter,
    /// Payload type mapping cache: (publisher PT, subscriber PT).
    pt_map: Option<(Pt, Pt)>,
}

impl SubTrack {
    fn out_mid(&self) -> Option<Mid> {
        match self.state {
            SubState::ToOpen => None,
            SubState::Negotiating(m)
            | SubState::Open(m)
            | SubState::ToStop(m)
            | SubState::NegotiatingStop(m) => Some(m),
        }
    }
}

#[derive(Default)]
struct StatsAccum {
    rtt: Option<Duration>,
    jitter: Option<Duration>,
    loss_in: f32,
    loss_out: f32,
    bytes_rx: u64,
    bytes_tx: u64,
    last_bytes_rx: u64,
    last_bytes_tx: u64,
    last_at: Option<Instant>,
}

struct Participant {
    id: ParticipantId,
    room: RoomId,
    perms: Permissions,
    publisher: Option<Peer>,
    subscriber: Peer,
    published: Vec<PubTrack>,
    /// Incoming SSRCs of the publisher peer resolved to (mid, rid).
    pub_ssrcs: Vec<(Ssrc, Mid, Option<Rid>)>,
    subs: Vec<SubTrack>,
    pending: Option<SdpPendingOffer>,
    sub_deadline: Option<Instant>,
    pub_deadline: Option<Instant>,
    last_rx: Instant,
    announced_connected: bool,
    bwe_bps: Option<u64>,
    stats: StatsAccum,
    quality: Option<Quality>,
    next_stats: Instant,
    speech_sum: u64,
    speech_n: u64,
}

impl Participant {
    fn peer_mut(&mut self, role: Role) -> Option<&mut Peer> {
        match role {
            Role::Publisher => self.publisher.as_mut(),
            Role::Subscriber => Some(&mut self.subscriber),
        }
    }
}

struct Room {
    members: Vec<PKey>,
    speakers: Vec<ParticipantId>,
    next_speaker_eval: Instant,
}

/// The sans-IO SFU; see the module docs for the driving contract.
pub struct SfuCore {
    cfg: MediaConfig,
    crypto: Arc<CryptoProvider>,
    candidates: Vec<SocketAddr>,
    rooms: HashMap<RoomId, Room>,
    parts: HashMap<PKey, Participant>,
    by_name: HashMap<(RoomId, ParticipantId), PKey>,
    next_key: u64,
    addr_cache: HashMap<SocketAddr, PeerRef>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
    rtc_events: VecDeque<(PeerRef, Event)>,
    dirty: BTreeSet<PeerRef>,
    next_housekeeping: Instant,
    counts: Counts,
    /// Reused list of room members on the forwarding path.
    scratch: Vec<PKey>,
    /// Participants with a failed or dead peer, found while polling.
    failed: Vec<PKey>,
}

/// Turn a str0m error on peer input into ours.
/// The parser's text is cut to its causes: one line, no parser positions
/// (they are memory addresses), at most 200 characters.
fn bad_sdp(e: impl std::fmt::Display) -> MediaError {
    let text = e.to_string();
    let mut cause: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("PointerOffset") && !l.contains("0x"))
        .collect::<Vec<_>>()
        .join("; ");
    if cause.is_empty() {
        cause = "unparsable".into();
    }
    if let Some((i, _)) = cause.char_indices().nth(200) {
        cause.truncate(i);
    }
    MediaError::BadSdp(cause)
}

impl SfuCore {
    /// A core whose socket is bound to `local_addr` (the port goes into the
    /// host candidates; the IPs come from [`MediaConfig::candidate_ips`]).
    pub fn new(cfg: MediaConfig, local_addr: SocketAddr, now: Instant) -> Result<Self, MediaError> {
        let mut cfg = cfg;
        if cfg.advertised_ips.is_empty() && !local_addr.ip().is_unspecified() {
            cfg.udp_addr = local_addr;
        }
        cfg.validate()?;
        let candidates: Vec<SocketAddr> = cfg
            .candidate_ips()
            .into_iter()
            .map(|ip| SocketAddr::new(ip, local_addr.port()))
            .collect();
        for c in &candidates {
            Candidate::host(*c, "udp")
                .map_err(|e| MediaError::Config(format!("candidate {c}: {e}")))?;
        }
        Ok(SfuCore {
            cfg,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            candidates,
            rooms: HashMap::new(),
            parts: HashMap::new(),
            by_name: HashMap::new(),
            next_key: 1,
            addr_cache: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rtc_events: VecDeque::new(),
            dirty: BTreeSet::new(),
            next_housekeeping: now,
            counts: Counts::default(),
            scratch: Vec::new(),
            failed: Vec::new(),
        })
    }

    // ---------------------------------------------------------------- getters

    /// The host candidates advertised in every SDP.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// Current counts.
    pub fn counts(&self) -> Counts {
        let mut c = self.counts;
        c.rooms = self.rooms.len();
        c.participants = self.parts.len();
        c.peers = self
            .parts
            .values()
            .map(|p| 1 + usize::from(p.publisher.is_some()))
            .sum();
        c
    }

    /// Tracks published in `room`.
    pub fn tracks(&self, room: &RoomId) -> Vec<TrackInfo> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|k| self.parts.get(k))
            .flat_map(|p| p.published.iter().map(|t| t.info(&p.id)))
            .collect()
    }

    // --------------------------------------------------------------- mutators

    /// Add `participant` to `room` (created on first join) and create its
    /// subscriber peer. Returns the first subscriber offer.
    pub fn join(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: ParticipantId,
        perms: Permissions,
    ) -> Result<JoinInfo, MediaError> {
        if self
            .by_name
            .contains_key(&(room.clone(), participant.clone()))
        {
            return Err(MediaError::AlreadyJoined);
        }
        if let Some(r) = self.rooms.get(&room)
            && r.members.len() >= self.cfg.max_participants
        {
            return Err(MediaError::RoomFull);
        }
        if self.parts.len() >= self.cfg.max_participants_total {
            return Err(MediaError::NodeFull);
        }
        let key = PKey(self.next_key);
        self.next_key += 1;

        let mut rtc = self.new_rtc(now, true);
        // Let BWE probe up to what three simulcast videos could use.
        rtc.bwe().set_bitrate(
            Bitrate::kbps(100),
            Bitrate::bps(self.cfg.initial_bandwidth_bps.max(2_500_000)),
        );
        let mut p = Participant {
            id: participant.clone(),
            room: room.clone(),
            perms,
            publisher: None,
            subscriber: Peer::new(rtc, now),
            published: Vec::new(),
            pub_ssrcs: Vec::new(),
            subs: Vec::new(),
            pending: None,
            sub_deadline: Some(now + self.cfg.connect_timeout),
            pub_deadline: None,
            last_rx: now,
            announced_connected: false,
            bwe_bps: None,
            stats: StatsAccum::default(),
            quality: None,
            next_stats: now + self.cfg.stats_interval,
            speech_sum: 0,
            speech_n: 0,
        };
        let r = self.rooms.entry(room.clone()).or_insert_with(|| Room {
            members: Vec::new(),
            speakers: Vec::new(),
            next_speaker_eval: now + self.cfg.speaker_interval,
        });
        let participants: Vec<ParticipantId> = r
            .members
            .iter()
            .filter_map(|k| self.parts.get(k))
            .map(|o| o.id.clone())
            .collect();
        let mut tracks = Vec::new();
        if perms.subscribe {
            for other in r.members.iter().filter_map(|k| self.parts.get(k)) {
                for t in &other.published {
                    tracks.push(t.info(&other.id));
                    p.subs
                        .push(new_sub(t, other_key(&self.by_name, other), &other.id));
                }
            }
        }
        r.members.push(key);

        // First offer: a data channel (so the peer connects even with
        // nothing to receive) plus the tracks already in the room.
        let offer = {
            let mut api = p.subscriber.rtc.sdp_api();
            api.add_channel("switchboard".into());
            for s in &mut p.subs {
                let mid = api.add_media(
                    media_kind(s.kind),
                    Direction::SendOnly,
                    Some(s.stream_id.clone()),
                    Some(s.track.to_string()),
                    None,
                );
                s.state = SubState::Negotiating(mid);
            }
            let Some((offer, pending)) = api.apply() else {
                return Err(MediaError::Stopped);
            };
            p.pending = Some(pending);
            offer.to_sdp_string()
        };
        self.parts.insert(key, p);
        self.by_name.insert((room, participant), key);
        self.dirty.insert(PeerRef(key, Role::Subscriber));
        self.drive(now);
        Ok(JoinInfo {
            subscriber_offer: offer,
            tracks,
            participants,
            candidates: self.candidates.clone(),
        })
    }

    /// Accept the offer of the participant's publisher peer (first offer or
    /// renegotiation) and return the SDP answer.
    pub fn publish_offer(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
        offer: PublishOffer,
    ) -> Result<String, MediaError> {
        let key = self.key(room, participant)?;
        let scan = sdp::scan(&offer.sdp, self.cfg.max_sdp_bytes)?;
        let parsed = SdpOffer::from_sdp_string(&offer.sdp).map_err(bad_sdp)?;

        // Policy: codecs, permissions, track count.
        let p = self.parts.get(&key).ok_or(MediaError::UnknownParticipant)?;
        let sending = scan.sections.iter().filter(|s| s.is_sending()).count();
        if sending > self.cfg.max_tracks_per_participant {
            return Err(MediaError::TooManyTracks);
        }
        for s in &scan.sections {
            if !s.is_sending() {
                continue;
            }
            if !s.has_supported_codec() {
                return Err(MediaError::UnsupportedCodecs);
            }
            let kind = s.kind().unwrap_or(TrackKind::Audio);
            let source = source_for(&offer, s.mid.as_deref().unwrap_or_default(), kind);
            let allowed = match source {
                TrackSource::Microphone => p.perms.publish_audio,
                TrackSource::Camera => p.perms.publish_video,
                TrackSource::Screen => p.perms.publish_screen,
            };
            if !allowed {
                return Err(MediaError::NotPermitted {
                    kind: match source {
                        TrackSource::Screen => PermissionKind::Screen,
                        _ => kind.into(),
                    },
                });
            }
        }
        let fresh = p.publisher.is_none();
        let mut peer = match self.parts.get_mut(&key).and_then(|p| p.publisher.take()) {
            Some(peer) => peer,
            None => Peer::new(self.new_rtc(now, false), now),
        };
        let answer = match peer.rtc.sdp_api().accept_offer(parsed) {
            Ok(a) => a.to_sdp_string(),
            Err(e) => {
                if !fresh
                    && peer.rtc.is_alive()
                    && let Some(p) = self.parts.get_mut(&key)
                {
                    p.publisher = Some(peer);
                }
                return Err(bad_sdp(e));
            }
        };
        let p = self
            .parts
            .get_mut(&key)
            .ok_or(MediaError::UnknownParticipant)?;
        p.publisher = Some(peer);
        if fresh {
            p.pub_deadline = Some(now + self.cfg.connect_timeout);
        }

        // Tracks: new sending m-lines are published, vanished ones unpublished.
        let mut added = Vec::new();
        let mut gone = Vec::new();
        for s in &scan.sections {
            let Some(mid_s) = s.mid.as_deref() else {
                continue;
            };
            let mid = Mid::from(mid_s);
            let exists = p.published.iter().any(|t| t.mid == mid);
            if s.is_sending() && !exists {
                let kind = s.kind().unwrap_or(TrackKind::Audio);
                let rids: Vec<Rid> = sdp::order_rids(&s.send_rids)
                    .iter()
                    .take(3)
                    .map(|r| Rid::from(r.as_str()))
                    .collect();
                let t = PubTrack {
                    id: TrackId::new(format!("TR-{}-{}", key.0, mid_s)),
                    mid,
                    kind,
                    source: source_for(&offer, mid_s, kind),
                    rids,
                    size: offer.sizes.get(mid_s).copied(),
                    muted: false,
                    last_keyframe_request: HashMap::new(),
                    params: None,
                    window_bytes: [0; 3],
                    layer_bps: [0; 3],
                };
                added.push(t.info(&p.id));
                p.published.push(t);
            } else if !s.is_sending() && exists {
                gone.push(mid);
            }
        }
        for t in added {
            self.events.push_back(MediaEvent::TrackPublished {
                room: room.clone(),
                track: t.clone(),
            });
            self.fan_out_track(key, &t.id, now);
        }
        for mid in gone {
            self.unpublish(key, mid, now);
        }
        self.dirty.insert(PeerRef(key, Role::Publisher));
        self.drive(now);
        Ok(answer)
    }

    /// Apply the client's answer to the last [`MediaEvent::SubscriberOffer`]
    /// (or [`JoinInfo::subscriber_offer`]).
    pub fn subscriber_answer(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
        answer_sdp: &str,
    ) -> Result<(), MediaError> {
        let key = self.key(room, participant)?;
        sdp::scan(answer_sdp, self.cfg.max_sdp_bytes)?;
        let answer = SdpAnswer::from_sdp_string(answer_sdp).map_err(bad_sdp)?;
        let p = self
            .parts
            .get_mut(&key)
            .ok_or(MediaError::UnknownParticipant)?;
        let pending = p.pending.take().ok_or(MediaError::NoOfferPending)?;
        if let Err(e) = p.subscriber.rtc.sdp_api().accept_answer(pending, answer) {
            // The offer is spent; put the tracks back to be offered again.
            for s in &mut p.subs {
                match s.state {
                    SubState::Negotiating(_) => s.state = SubState::ToOpen,
                    SubState::NegotiatingStop(m) => s.state = SubState::ToStop(m),
                    _ => {}
                }
            }
            self.renegotiate(key);
            self.drive(now);
            return Err(bad_sdp(e));
        }
        let mut opened = Vec::new();
        for s in &mut p.subs {
            match s.state {
                SubState::Negotiating(m) if s.removed => s.state = SubState::ToStop(m),
                SubState::Negotiating(m) => {
                    s.state = SubState::Open(m);
                    opened.push(s.track.clone());
                }
                _ => {}
            }
        }
        p.subs
            .retain(|s| !matches!(s.state, SubState::NegotiatingStop(_)));
        self.select_layers(key, now, &opened);
        self.renegotiate(key);
        self.dirty.insert(PeerRef(key, Role::Subscriber));
        self.drive(now);
        Ok(())
    }

    /// Mute or unmute a published track for everyone (no renegotiation:
    /// forwarding stops, the m-lines stay).
    pub fn set_muted(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
        track: &TrackId,
        muted: bool,
    ) -> Result<(), MediaError> {
        let key = self.key(room, participant)?;
        let p = self
            .parts
            .get_mut(&key)
            .ok_or(MediaError::UnknownParticipant)?;
        let t = p
            .published
            .iter_mut()
            .find(|t| &t.id == track)
            .ok_or(MediaError::UnknownTrack)?;
        if t.muted == muted {
            return Ok(());
        }
        t.muted = muted;
        let kind = t.kind;
        self.events.push_back(MediaEvent::TrackMuted {
            room: room.clone(),
            participant: participant.clone(),
            track: track.clone(),
            muted,
        });
        // A muted track frees its subscribers' budget for the other tracks;
        // an unmuted video takes some back and needs a keyframe.
        let resumed_video = !muted && kind == TrackKind::Video;
        for k in self.members(room) {
            if k == key {
                continue;
            }
            if !muted
                && let Some(s) = self
                    .parts
                    .get_mut(&k)
                    .and_then(|o| o.subs.iter_mut().find(|s| &s.track == track))
            {
                // The output continues from the last packet sent before the
                // mute; video on a keyframe.
                s.need_keyframe = resumed_video;
                s.rebase_pending = true;
            }
            let force = if resumed_video {
                std::slice::from_ref(track)
            } else {
                &[]
            };
            self.select_layers(k, now, force);
        }
        self.drive(now);
        Ok(())
    }

    /// How `participant` wants to receive `track` (layer, size, paused).
    pub fn set_subscription(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
        track: &TrackId,
        prefs: SubscriptionPrefs,
    ) -> Result<(), MediaError> {
        let key = self.key(room, participant)?;
        let p = self
            .parts
            .get_mut(&key)
            .ok_or(MediaError::UnknownParticipant)?;
        let s = p
            .subs
            .iter_mut()
            .find(|s| &s.track == track)
            .ok_or(MediaError::UnknownTrack)?;
        let resumed = s.prefs.paused && !prefs.paused;
        s.prefs = prefs;
        if resumed && s.kind == TrackKind::Video {
            s.need_keyframe = true;
            s.rebase_pending = true;
            s.current_rid = None;
        }
        // Every change (pause, size, layer) moves budget between tracks.
        let force = if resumed {
            std::slice::from_ref(track)
        } else {
            &[]
        };
        self.select_layers(key, now, force);
        self.drive(now);
        Ok(())
    }

    /// Remove a participant (its tracks are unpublished for the others).
    pub fn leave(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<(), MediaError> {
        let key = self.key(room, participant)?;
        self.remove(key, LeaveReason::Left, now);
        self.drive(now);
        Ok(())
    }

    /// A datagram arrived on the media socket from `source`. Returns whether
    /// a peer took it. Garbage is dropped, never a panic.
    pub fn handle_receive(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> bool {
        self.counts.datagrams_in += 1;
        let Ok(contents) = data.try_into() else {
            self.counts.datagrams_dropped += 1;
            return false;
        };
        let Some(destination) = self.local_for(source.ip()) else {
            self.counts.datagrams_dropped += 1;
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let mut target = None;
        if let Some(r) = self.addr_cache.get(&source).copied()
            && let Some(peer) = self.parts.get_mut(&r.0).and_then(|p| p.peer_mut(r.1))
            && peer.rtc.accepts(&input)
        {
            target = Some(r);
        }
        if target.is_none() {
            'find: for (k, p) in self.parts.iter() {
                for (role, peer) in [
                    (Role::Subscriber, Some(&p.subscriber)),
                    (Role::Publisher, p.publisher.as_ref()),
                ] {
                    if let Some(peer) = peer
                        && peer.rtc.is_alive()
                        && peer.rtc.accepts(&input)
                    {
                        target = Some(PeerRef(*k, role));
                        break 'find;
                    }
                }
            }
            if let Some(r) = target {
                self.addr_cache.insert(source, r);
            }
        }
        let Some(r) = target else {
            self.counts.datagrams_dropped += 1;
            return false;
        };
        let Some(p) = self.parts.get_mut(&r.0) else {
            return false;
        };
        p.last_rx = now;
        if let Some(peer) = p.peer_mut(r.1)
            && peer.rtc.handle_input(input).is_err()
        {
            peer.failed = true;
        }
        self.dirty.insert(r);
        self.drive(now);
        true
    }

    /// Time passed: run peers' timers, timeouts, stats and speaker detection.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerRef> = self
            .parts
            .iter()
            .flat_map(|(k, p)| {
                let s = (p.subscriber.timeout <= now).then_some(PeerRef(*k, Role::Subscriber));
                let pb = p
                    .publisher
                    .as_ref()
                    .filter(|x| x.timeout <= now)
                    .map(|_| PeerRef(*k, Role::Publisher));
                s.into_iter().chain(pb)
            })
            .collect();
        for r in due {
            if let Some(peer) = self.parts.get_mut(&r.0).and_then(|p| p.peer_mut(r.1))
                && peer.rtc.handle_input(Input::Timeout(now)).is_err()
            {
                peer.failed = true;
            }
            self.dirty.insert(r);
        }
        self.drive(now);
        if now >= self.next_housekeeping {
            self.housekeeping(now);
            self.next_housekeeping = now + Duration::from_millis(100);
            self.drive(now);
        }
    }

    // ---------------------------------------------------------------- polling

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_some() {
            self.counts.datagrams_out += 1;
        }
        t
    }

    /// Next event for the signaling layer.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// Events waiting in [`SfuCore::poll_event`].
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// When [`SfuCore::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_housekeeping;
        for p in self.parts.values() {
            t = t.min(p.subscriber.timeout);
            if let Some(pb) = &p.publisher {
                t = t.min(pb.timeout);
            }
        }
        t
    }

    // --------------------------------------------------------------- internal

    fn key(&self, room: &RoomId, participant: &ParticipantId) -> Result<PKey, MediaError> {
        self.by_name
            .get(&(room.clone(), participant.clone()))
            .copied()
            .ok_or(MediaError::UnknownParticipant)
    }

    fn members(&self, room: &RoomId) -> Vec<PKey> {
        self.rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    fn local_for(&self, ip: IpAddr) -> Option<SocketAddr> {
        let v4 = ip.is_ipv4() || ip.to_canonical().is_ipv4();
        self.candidates
            .iter()
            .find(|c| c.is_ipv4() == v4)
            .or(self.candidates.first())
            .copied()
    }

    fn new_rtc(&self, now: Instant, subscriber: bool) -> Rtc {
        let mut b = Rtc::builder()
            .set_ice_lite(true)
            .set_crypto_provider(self.crypto.clone())
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_h264(true)
            // RTP mode: packets are forwarded as they come (rewritten per
            // subscriber), never depacketized and packetized again.
            .set_rtp_mode(true)
            .set_stats_interval(Some(self.cfg.stats_interval));
        if subscriber {
            b = b.enable_bwe(Some(Bitrate::bps(self.cfg.initial_bandwidth_bps)));
        }
        let mut rtc = b.build(now);
        for c in &self.candidates {
            if let Ok(c) = Candidate::host(*c, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        rtc
    }

    /// Poll dirty peers until they wait, handling their events, until
    /// nothing is left to do; participants whose peer failed are removed.
    fn drive(&mut self, now: Instant) {
        loop {
            loop {
                while let Some(r) = self.dirty.pop_first() {
                    self.poll_peer(r);
                }
                let Some((r, ev)) = self.rtc_events.pop_front() else {
                    break;
                };
                self.on_rtc_event(r, ev, now);
            }
            // Peers fail only on input, which marks them dirty: the polled
            // ones are all that need checking.
            if self.failed.is_empty() {
                break;
            }
            let mut failed = std::mem::take(&mut self.failed);
            failed.sort_unstable();
            failed.dedup();
            for k in failed {
                self.remove(k, LeaveReason::Vanished, now);
            }
        }
    }

    fn poll_peer(&mut self, r: PeerRef) {
        let Some(peer) = self.parts.get_mut(&r.0).and_then(|p| p.peer_mut(r.1)) else {
            return;
        };
        if peer.failed || !peer.rtc.is_alive() {
            self.failed.push(r.0);
            return;
        }
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    peer.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.transmits.push_back(Transmit {
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(e)) => self.rtc_events.push_back((r, e)),
                Err(e) => {
                    tracing::debug!(?r, "peer failed: {e}");
                    peer.failed = true;
                    break;
                }
            }
            if !peer.rtc.is_alive() {
                break;
            }
        }
        if peer.failed || !peer.rtc.is_alive() {
            self.failed.push(r.0);
        }
    }

    fn on_rtc_event(&mut self, r: PeerRef, ev: Event, now: Instant) {
        let PeerRef(key, role) = r;
        match ev {
            Event::Connected => {
                let Some(p) = self.parts.get_mut(&key) else {
                    return;
                };
                match role {
                    Role::Subscriber => {
                        p.subscriber.connected = true;
                        p.sub_deadline = None;
                        if !p.announced_connected {
                            p.announced_connected = true;
                            self.events.push_back(MediaEvent::ParticipantConnected {
                                room: p.room.clone(),
                                participant: p.id.clone(),
                            });
                        }
                    }
                    Role::Publisher => {
                        if let Some(pb) = p.publisher.as_mut() {
                            pb.connected = true;
                        }
                        p.pub_deadline = None;
                        // Ask for keyframes so subscribers can start.
                        let mids: Vec<(Mid, Vec<Rid>)> = p
                            .published
                            .iter()
                            .filter(|t| t.kind == TrackKind::Video)
                            .map(|t| (t.mid, t.rids.clone()))
                            .collect();
                        for (mid, rids) in mids {
                            if rids.is_empty() {
                                self.request_keyframe(key, mid, None, now);
                            }
                            for rid in rids {
                                self.request_keyframe(key, mid, Some(rid), now);
                            }
                        }
                    }
                }
            }
            Event::RtpPacket(pkt) if role == Role::Publisher => self.forward(key, pkt),
            Event::KeyframeRequest(req) if role == Role::Subscriber => {
                let Some(p) = self.parts.get(&key) else {
                    return;
                };
                let Some(s) = p.subs.iter().find(|s| s.out_mid() == Some(req.mid)) else {
                    return;
                };
                let (src, mid, rid) = (s.source, s.source_mid, s.current_rid.or(s.target_rid));
                self.request_keyframe(src, mid, rid, now);
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
                if role == Role::Subscriber =>
            {
                if let Some(p) = self.parts.get_mut(&key) {
                    p.bwe_bps = Some(estimate.as_u64());
                }
            }
            Event::PeerStats(s) => {
                if let Some(p) = self.parts.get_mut(&key) {
                    if s.rtt.is_some() {
                        p.stats.rtt = s.rtt;
                    }
                    match role {
                        Role::Publisher => {
                            p.stats.loss_in = s.ingress_loss_fraction.unwrap_or(0.0);
                            p.stats.bytes_rx = s.bytes_rx;
                        }
                        Role::Subscriber => {
                            p.stats.loss_out = s.egress_loss_fraction.unwrap_or(0.0);
                            p.stats.bytes_tx = s.bytes_tx;
                        }
                    }
                }
            }
            Event::MediaIngressStats(s) if role == Role::Publisher => {
                if let Some(p) = self.parts.get_mut(&key) {
                    let rate = p
                        .published
                        .iter()
                        .find(|t| t.mid == s.mid)
                        .map(|t| {
                            if t.kind == TrackKind::Audio {
                                48_000
                            } else {
                                90_000
                            }
                        })
                        .unwrap_or(90_000);
                    let j = Duration::from_secs_f64(f64::from(s.jitter) / f64::from(rate));
                    p.stats.jitter = Some(p.stats.jitter.map_or(j, |x| x.max(j)));
                    if s.rtt.is_some() {
                        p.stats.rtt = s.rtt;
                    }
                }
            }
            _ => {}
        }
    }

    /// Forward one RTP packet from publisher `key` to every subscriber of its
    /// track: the payload is shared (no copy), and each subscriber's stream
    /// gets its own SSRC, sequence numbers, timestamps and payload type.
    fn forward(&mut self, key: PKey, pkt: RtpPacket) {
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let (mid, rid) = match p.pub_ssrcs.iter().find(|e| e.0 == ssrc) {
            Some(e) => (e.1, e.2),
            None => {
                let Some(pb) = p.publisher.as_mut() else {
                    return;
                };
                let mut api = pb.rtc.direct_api();
                let Some(rx) = api.stream_rx(&ssrc) else {
                    return;
                };
                let e = (ssrc, rx.mid(), rx.rid());
                p.pub_ssrcs.push(e);
                (e.1, e.2)
            }
        };
        let Some(t) = p.published.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let layer = t.layer_of(rid);
        t.window_bytes[layer] += pkt.payload.len() as u64;
        if t.muted {
            return;
        }
        let kind = t.kind;
        let pt = pkt.header.payload_type;
        let params = match t.params {
            Some(pp) if pp.pt() == pt => pp,
            _ => {
                let Some(pp) = p
                    .publisher
                    .as_ref()
                    .and_then(|pb| pb.rtc.codec_config().find(|x| x.pt() == pt))
                    .copied()
                else {
                    return;
                };
                t.params = Some(pp);
                pp
            }
        };
        let codec = params.spec().codec;
        let clock_rate = params.spec().clock_rate.get();
        if kind == TrackKind::Audio
            && let Some(level) = pkt.header.ext_vals.audio_level
        {
            p.speech_sum += u64::from(127 - level.unsigned_abs().min(127));
            p.speech_n += 1;
        }
        let is_key = kind == TrackKind::Video && starts_keyframe(codec, &pkt.payload);
        let vp8 = if codec == Codec::Vp8 {
            Vp8Descriptor::parse(&pkt.payload).ok()
        } else {
            None
        };
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let mut members = std::mem::take(&mut self.scratch);
        members.clear();
        if let Some(r) = self.rooms.get(&p.room) {
            members.extend_from_slice(&r.members);
        }
        let end_of_frame = kind == TrackKind::Audio || pkt.header.marker;
        let input = InPacket {
            ssrc,
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            at: pkt.timestamp,
            clock_rate,
            vp8,
        };
        for &k in &members {
            if k == key {
                continue;
            }
            let Some(sp) = self.parts.get_mut(&k) else {
                continue;
            };
            if !sp.subscriber.connected {
                continue;
            }
            let Some(s) = sp
                .subs
                .iter_mut()
                .find(|s| s.source == key && s.source_mid == mid)
            else {
                continue;
            };
            let SubState::Open(out_mid) = s.state else {
                continue;
            };
            if kind == TrackKind::Video {
                if s.prefs.paused {
                    continue;
                }
                if rid.is_some() && rid != s.current_rid {
                    // Switch to the target layer on its keyframe.
                    if rid == s.target_rid && is_key {
                        s.current_rid = rid;
                        s.need_keyframe = false;
                        s.rebase_pending = true;
                    } else {
                        continue;
                    }
                }
                if s.need_keyframe {
                    if !is_key {
                        continue;
                    }
                    s.need_keyframe = false;
                    s.rebase_pending = true;
                }
            }
            let out_pt = match s.pt_map {
                Some((i, o)) if i == pt => o,
                _ => {
                    let Some(o) = sp.subscriber.rtc.codec_config().match_params(params) else {
                        continue;
                    };
                    s.pt_map = Some((pt, o.pt()));
                    o.pt()
                }
            };
            // The send stream first: the rewriter's state (next sequence
            // number, a pending rebase) only moves for a packet that is sent.
            let mut api = sp.subscriber.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            let rebase = std::mem::take(&mut s.rebase_pending);
            let Some(out) = s.rw.map(&input, rebase) else {
                continue; // older than the segment (only without a rebase)
            };
            let mut w = RtpWrite::new(
                out_pt,
                out.seq.into(),
                out.ts,
                pkt.timestamp,
                pkt.payload.clone(),
            )
            .marker(pkt.header.marker)
            .ext_vals(ext.clone())
            .nackable(kind == TrackKind::Video);
            if let Some(patch) = out.vp8 {
                w = w.vp8_patch(patch);
            }
            tx.write_rtp(w);
            self.counts.packets_forwarded += 1;
            if end_of_frame {
                self.counts.frames_forwarded += 1;
            }
            self.dirty.insert(PeerRef(k, Role::Subscriber));
        }
        self.scratch = members;
    }

    /// Ask the publisher for a keyframe, at most once per
    /// `keyframe_min_interval` per track and layer.
    fn request_keyframe(&mut self, key: PKey, mid: Mid, rid: Option<Rid>, now: Instant) {
        let min = self.cfg.keyframe_min_interval;
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        let Some(t) = p.published.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if t.kind != TrackKind::Video {
            return;
        }
        if t.last_keyframe_request
            .get(&rid)
            .is_some_and(|at| now.saturating_duration_since(*at) < min)
        {
            return;
        }
        let Some(pb) = p.publisher.as_mut() else {
            return;
        };
        if !pb.connected {
            return;
        }
        // PLI unless the publisher only negotiated FIR.
        let pli = pb.rtc.media(mid).is_none_or(|m| {
            let pts = m.remote_pts();
            let cfg = pb.rtc.codec_config();
            pts.is_empty()
                || pts
                    .iter()
                    .any(|pt| cfg.find(|p| p.pt() == *pt).is_some_and(|p| p.fb_pli()))
        });
        let kind = if pli {
            KeyframeRequestKind::Pli
        } else {
            KeyframeRequestKind::Fir
        };
        if let Some(rx) = pb.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(kind);
            t.last_keyframe_request.insert(rid, now);
            self.counts.keyframe_requests += 1;
            self.dirty.insert(PeerRef(key, Role::Publisher));
        }
    }

    /// Offer a newly published track to everyone else in the room.
    fn fan_out_track(&mut self, src: PKey, track: &TrackId, _now: Instant) {
        let Some(p) = self.parts.get(&src) else {
            return;
        };
        let Some(t) = p.published.iter().find(|t| &t.id == track) else {
            return;
        };
        let sub = new_sub(t, src, &p.id);
        let room = p.room.clone();
        for k in self.members(&room) {
            if k == src {
                continue;
            }
            let Some(o) = self.parts.get_mut(&k) else {
                continue;
            };
            if !o.perms.subscribe || o.subs.iter().any(|s| &s.track == track) {
                continue;
            }
            o.subs.push(SubTrack {
                prefs: SubscriptionPrefs::default(),
                ..sub.clone_fresh()
            });
            self.renegotiate(k);
        }
    }

    /// Remove the track at `mid` of publisher `key` and tell everyone.
    fn unpublish(&mut self, key: PKey, mid: Mid, _now: Instant) {
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        let Some(i) = p.published.iter().position(|t| t.mid == mid) else {
            return;
        };
        let t = p.published.remove(i);
        let room = p.room.clone();
        self.events.push_back(MediaEvent::TrackUnpublished {
            room: room.clone(),
            participant: p.id.clone(),
            track: t.id.clone(),
        });
        for k in self.members(&room) {
            let Some(o) = self.parts.get_mut(&k) else {
                continue;
            };
            o.subs
                .retain(|s| !(s.track == t.id && s.state == SubState::ToOpen));
            for s in o.subs.iter_mut().filter(|s| s.track == t.id) {
                match s.state {
                    SubState::Open(m) => s.state = SubState::ToStop(m),
                    SubState::Negotiating(_) => s.removed = true,
                    _ => {}
                }
            }
            self.renegotiate(k);
        }
    }

    /// If the subscriber peer has changes and no offer outstanding, make one.
    fn renegotiate(&mut self, key: PKey) {
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        if p.pending.is_some() {
            return;
        }
        let mut api = p.subscriber.rtc.sdp_api();
        for s in &mut p.subs {
            match s.state {
                SubState::ToOpen => {
                    let mid = api.add_media(
                        media_kind(s.kind),
                        Direction::SendOnly,
                        Some(s.stream_id.clone()),
                        Some(s.track.to_string()),
                        None,
                    );
                    s.state = SubState::Negotiating(mid);
                }
                SubState::ToStop(m) => {
                    api.stop_media(m);
                    s.state = SubState::NegotiatingStop(m);
                }
                _ => {}
            }
        }
        if !api.has_changes() {
            return;
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        p.pending = Some(pending);
        self.events.push_back(MediaEvent::SubscriberOffer {
            room: p.room.clone(),
            participant: p.id.clone(),
            sdp: offer.to_sdp_string(),
        });
        self.dirty.insert(PeerRef(key, Role::Subscriber));
    }

    /// Choose the simulcast layer of every video track subscriber `key`
    /// receives, splitting its bandwidth budget between them
    /// ([`allocate_layers`]). A track whose target changes, is in `force`,
    /// or still waits for a keyframe gets a keyframe request for its new
    /// layer (unless paused or muted).
    fn select_layers(&mut self, key: PKey, now: Instant, force: &[TrackId]) {
        let Some(p) = self.parts.get(&key) else {
            return;
        };
        let budget = if self.cfg.bandwidth_layer_selection {
            // Before the first TWCC estimate, str0m's BWE starts from the
            // configured initial bandwidth: use it rather than no limit.
            Some(p.bwe_bps.unwrap_or(self.cfg.initial_bandwidth_bps))
        } else {
            None
        };
        let mut audio_bps = 0u64;
        // (track, source, source mid, muted, candidates) per open video.
        let mut videos: Vec<(TrackId, PKey, Mid, bool, Vec<Rid>)> = Vec::new();
        let mut demands: Vec<VideoDemand> = Vec::new();
        for s in &p.subs {
            if !matches!(s.state, SubState::Open(_)) {
                continue;
            }
            let Some(t) = self
                .parts
                .get(&s.source)
                .and_then(|src| src.published.iter().find(|t| t.id == s.track))
            else {
                continue;
            };
            match s.kind {
                TrackKind::Audio => {
                    if !t.muted {
                        audio_bps += t.layer_bps[0];
                    }
                }
                TrackKind::Video => {
                    let cands = layer_candidates(t, &s.prefs);
                    demands.push(VideoDemand {
                        costs: cands.iter().map(|(_, bps)| *bps).collect(),
                        active: !t.muted && !s.prefs.paused,
                        screen: t.source == TrackSource::Screen,
                        area: s.prefs.max_size.map(|(w, h)| u64::from(w) * u64::from(h)),
                    });
                    let rids = cands.iter().filter_map(|(i, _)| t.rids.get(*i)).copied();
                    videos.push((s.track.clone(), s.source, t.mid, t.muted, rids.collect()));
                }
            }
        }
        let picks = allocate_layers(budget, audio_bps, &demands);
        for ((track, src_key, mid, muted, rids), pick) in videos.into_iter().zip(picks) {
            let target = rids.get(pick).copied();
            let Some(s) = self
                .parts
                .get_mut(&key)
                .and_then(|p| p.subs.iter_mut().find(|s| s.track == track))
            else {
                continue;
            };
            let changed = target != s.target_rid;
            s.target_rid = target;
            let forced = force.contains(&track);
            if (changed || forced || s.need_keyframe) && !s.prefs.paused && !muted {
                self.request_keyframe(src_key, mid, target, now);
            }
        }
    }

    fn remove(&mut self, key: PKey, reason: LeaveReason, now: Instant) {
        let Some(p) = self.parts.get(&key) else {
            return;
        };
        let mids: Vec<Mid> = p.published.iter().map(|t| t.mid).collect();
        for mid in mids {
            self.unpublish(key, mid, now);
        }
        let Some(mut p) = self.parts.remove(&key) else {
            return;
        };
        p.subscriber.rtc.disconnect();
        if let Some(pb) = p.publisher.as_mut() {
            pb.rtc.disconnect();
        }
        self.by_name.remove(&(p.room.clone(), p.id.clone()));
        self.addr_cache.retain(|_, r| r.0 != key);
        self.dirty.retain(|r| r.0 != key);
        self.rtc_events.retain(|(r, _)| r.0 != key);
        // Subscriptions of others to this participant's tracks are already
        // stopping; drop any left over pointing at it.
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|k| *k != key);
            if room.members.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
        for o in self.parts.values_mut() {
            o.subs
                .retain(|s| s.source != key || !matches!(s.state, SubState::ToOpen));
        }
        self.events.push_back(MediaEvent::ParticipantLeft {
            room: p.room,
            participant: p.id,
            reason,
        });
    }

    fn housekeeping(&mut self, now: Instant) {
        // Connect and idle timeouts.
        let mut gone = Vec::new();
        for (k, p) in &self.parts {
            let ice_timeout = p.sub_deadline.is_some_and(|d| now >= d)
                || p.pub_deadline.is_some_and(|d| now >= d);
            if ice_timeout {
                gone.push((*k, LeaveReason::IceTimeout));
            } else if p.subscriber.connected
                && now.saturating_duration_since(p.last_rx) >= self.cfg.idle_timeout
            {
                gone.push((*k, LeaveReason::Vanished));
            }
        }
        for (k, reason) in gone {
            self.remove(k, reason, now);
        }

        // Stats, quality, bitrates, layer selection.
        let keys: Vec<PKey> = self.parts.keys().copied().collect();
        for k in keys {
            let Some(p) = self.parts.get_mut(&k) else {
                continue;
            };
            if now < p.next_stats {
                continue;
            }
            p.next_stats = now + self.cfg.stats_interval;
            let secs = p
                .stats
                .last_at
                .map(|t| now.saturating_duration_since(t).as_secs_f64())
                .unwrap_or(self.cfg.stats_interval.as_secs_f64())
                .max(0.001);
            for t in &mut p.published {
                for i in 0..3 {
                    t.layer_bps[i] = (t.window_bytes[i] as f64 * 8.0 / secs) as u64;
                    t.window_bytes[i] = 0;
                }
            }
            let st = &mut p.stats;
            let bitrate_in =
                (st.bytes_rx.saturating_sub(st.last_bytes_rx) as f64 * 8.0 / secs) as u64;
            let bitrate_out =
                (st.bytes_tx.saturating_sub(st.last_bytes_tx) as f64 * 8.0 / secs) as u64;
            st.last_bytes_rx = st.bytes_rx;
            st.last_bytes_tx = st.bytes_tx;
            st.last_at = Some(now);
            let loss = st.loss_in.max(st.loss_out);
            let quality = Quality::from_measurements(st.rtt, st.jitter, loss);
            let stats = ParticipantStats {
                rtt: st.rtt,
                jitter: st.jitter,
                loss,
                bitrate_in,
                bitrate_out,
                bandwidth_estimate: p.bwe_bps,
                quality,
            };
            st.jitter = None;
            if p.subscriber.connected {
                if p.quality != Some(quality) {
                    p.quality = Some(quality);
                    self.events.push_back(MediaEvent::Quality {
                        room: p.room.clone(),
                        participant: p.id.clone(),
                        quality,
                    });
                }
                self.events.push_back(MediaEvent::Stats {
                    room: p.room.clone(),
                    participant: p.id.clone(),
                    stats,
                });
            }
            self.select_layers(k, now, &[]);
        }

        // Active speakers.
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let members = self.members(&room);
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            if now < r.next_speaker_eval {
                continue;
            }
            r.next_speaker_eval = now + self.cfg.speaker_interval;
            let mut levels: Vec<(ParticipantId, u8)> = Vec::new();
            for k in members {
                let Some(p) = self.parts.get_mut(&k) else {
                    continue;
                };
                if let Some(avg) = p.speech_sum.checked_div(p.speech_n) {
                    let avg = avg.min(127) as u8;
                    // Louder than -50 dBov counts as speaking.
                    if avg > 127 - 50 {
                        levels.push((p.id.clone(), avg));
                    }
                }
                p.speech_sum = 0;
                p.speech_n = 0;
            }
            levels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            levels.truncate(3);
            let ids: Vec<ParticipantId> = levels.iter().map(|l| l.0.clone()).collect();
            if ids != r.speakers {
                r.speakers = ids;
                self.events.push_back(MediaEvent::ActiveSpeakers {
                    room: room.clone(),
                    speakers: levels,
                });
            }
        }
    }
}

/// Share of a subscriber's bandwidth estimate that forwarded media may use
/// (the rest is headroom for RTP/SRTP overhead, RTX and estimate noise).
const BUDGET_PERCENT: u64 = 80;

/// One video track competing for a subscriber's bandwidth, as
/// [`allocate_layers`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VideoDemand {
    /// Measured bits per second of each layer this subscriber may get, lowest
    /// first (one entry without simulcast; 0: not measured yet).
    costs: Vec<u64>,
    /// Forwarded at all: not paused by the subscriber, not muted by the
    /// publisher. Inactive tracks take nothing from the budget.
    active: bool,
    /// A screen share: upgraded before cameras (text must stay legible).
    screen: bool,
    /// Display area the subscriber asked for (`max_size`, w × h); `None`
    /// counts as the largest.
    area: Option<u64>,
}

/// Split a subscriber's budget over its video tracks; returns, per demand,
/// the index into its `costs` (the layer to forward).
///
/// Without a budget (bandwidth-based selection off) every track gets its
/// highest allowed layer. Otherwise the usable budget is
/// [`BUDGET_PERCENT`] of `budget` minus `audio_bps` (audio goes first), and:
///
/// 1. every active track gets its lowest layer, even if their sum does not
///    fit (video keeps flowing at the lowest quality);
/// 2. screen shares, then cameras by requested area (largest first; ties in
///    input order) are upgraded: each screen share as far as it fits, then
///    the cameras one layer per round in that order, while the sum fits;
/// 3. a track with no measured layer yet stays on its lowest layer (start
///    low, upgrade once the bitrates are known).
///
/// Inactive tracks get index 0 and cost nothing. Pure and deterministic.
fn allocate_layers(budget: Option<u64>, audio_bps: u64, demands: &[VideoDemand]) -> Vec<usize> {
    let top = |d: &VideoDemand| d.costs.len().saturating_sub(1);
    let Some(budget) = budget else {
        return demands.iter().map(top).collect();
    };
    let usable = (budget.saturating_mul(BUDGET_PERCENT) / 100).saturating_sub(audio_bps);
    let mut pick = vec![0usize; demands.len()];
    let cost = |i: usize, layer: usize| demands[i].costs.get(layer).copied().unwrap_or(0);
    let mut used: u64 = (0..demands.len())
        .filter(|i| demands[*i].active)
        .map(|i| cost(i, 0))
        .sum();
    let mut order: Vec<usize> = (0..demands.len())
        .filter(|i| {
            let d = &demands[*i];
            d.active && d.costs.len() > 1 && d.costs.iter().any(|c| *c > 0)
        })
        .collect();
    // Stable: equal priority keeps the input order.
    order.sort_by_key(|i| {
        let d = &demands[*i];
        (!d.screen, std::cmp::Reverse(d.area.unwrap_or(u64::MAX)))
    });
    let step = |i: usize, pick: &mut [usize], used: &mut u64| -> bool {
        let (cur, next) = (pick[i], pick[i] + 1);
        if next > top(&demands[i]) {
            return false;
        }
        let after = (*used - cost(i, cur)).saturating_add(cost(i, next));
        if after > usable {
            return false;
        }
        pick[i] = next;
        *used = after;
        true
    };
    for &i in order.iter().filter(|i| demands[**i].screen) {
        while step(i, &mut pick, &mut used) {}
    }
    loop {
        let mut progressed = false;
        for &i in order.iter().filter(|i| !demands[**i].screen) {
            progressed |= step(i, &mut pick, &mut used);
        }
        if !progressed {
            break;
        }
    }
    pick
}

/// The layers subscriber prefs allow for `t`, lowest first, each with its
/// measured bitrate: up to `max_layer` and the smallest layer at least
/// `max_size` big. Layers the publisher does not send (browsers drop the
/// top layers of a small capture, or under congestion; Chromium sends only
/// two of three rids at 640x360) are left out while another allowed layer
/// flows. Without simulcast: one entry, index 0.
fn layer_candidates(t: &PubTrack, prefs: &SubscriptionPrefs) -> Vec<(usize, u64)> {
    if t.rids.is_empty() {
        return vec![(0, t.layer_bps[0])];
    }
    let n = t.rids.len();
    let mut cap = prefs.max_layer.index().min(n - 1);
    if let (Some((w, h)), Some((fw, fh))) = (prefs.max_size, t.size) {
        // Layer i (from the top) is full size / 2^i.
        let mut by_size = n - 1;
        for i in 0..n {
            let scale = 1u32 << (n - 1 - i);
            if fw / scale >= w && fh / scale >= h {
                by_size = i;
                break;
            }
        }
        cap = cap.min(by_size);
    }
    let all: Vec<(usize, u64)> = (0..=cap).map(|i| (i, t.layer_bps[i.min(2)])).collect();
    if all.iter().any(|(_, bps)| *bps > 0) {
        all.into_iter().filter(|(_, bps)| *bps > 0).collect()
    } else {
        all
    }
}

fn source_for(offer: &PublishOffer, mid: &str, kind: TrackKind) -> TrackSource {
    offer.sources.get(mid).copied().unwrap_or(match kind {
        TrackKind::Audio => TrackSource::Microphone,
        TrackKind::Video => TrackSource::Camera,
    })
}

/// Whether an RTP payload starts a keyframe (its first packet), so a
/// subscriber can start or switch layers there.
fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        // S=1, partition 0, P=0 in the VP8 payload header.
        Codec::Vp8 => str0m::format::detect_vp8_keyframe(payload),
        // Not inter-picture predicted (P=0) and the start of a frame (B=1).
        Codec::Vp9 => payload
            .first()
            .is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0),
        // An SPS (sent ahead of the IDR, alone or in a STAP-A), or an IDR.
        Codec::H264 => {
            str0m::format::detect_h264_nalu(payload, 7)
                || str0m::format::detect_h264_keyframe(payload)
        }
        _ => false,
    }
}

/// One incoming RTP packet as [`Rewriter`] sees it.
struct InPacket {
    ssrc: Ssrc,
    /// Extended sequence number (per incoming SSRC).
    seq: u64,
    ts: u32,
    /// Arrival time.
    at: Instant,
    clock_rate: u32,
    vp8: Option<Vp8Descriptor>,
}

/// Where a packet goes on a subscriber's stream.
#[derive(Debug, PartialEq, Eq)]
struct OutPacket {
    seq: u64,
    ts: u32,
    vp8: Option<Vp8Patch>,
}

/// The last packet a [`Rewriter`] put out (highest sequence number).
#[derive(Debug, Clone, Copy)]
struct LastOut {
    seq: u64,
    ts: u32,
    at: Instant,
    picture_id: Option<u16>,
    tl0: Option<u8>,
}

/// Maps one subscriber's view of a forwarded track onto a single continuous
/// RTP stream: out = in + offset for the sequence number, timestamp and VP8
/// picture id / TL0PICIDX. The offsets change only at a rebase (the first
/// packet, a layer switch or a resume, always on a keyframe for video, and
/// when the incoming SSRC changes), where the output continues from the
/// last packet sent: sequence + 1, timestamp + the arrival time elapsed, so
/// receivers see neither a gap to NACK nor a jump in time.
#[derive(Debug, Default)]
struct Rewriter {
    last: Option<LastOut>,
    ssrc: Option<Ssrc>,
    seq_off: u64,
    ts_off: u32,
    /// Packets of the current segment start here; older ones (late
    /// retransmissions from before the rebase) are dropped.
    min_in: u64,
    pid_off: u16,
    tl0_off: u8,
}

impl Rewriter {
    fn map(&mut self, p: &InPacket, rebase: bool) -> Option<OutPacket> {
        let rebase = rebase || self.ssrc != Some(p.ssrc);
        if rebase {
            let (seq, ts) = match &self.last {
                Some(l) => {
                    let us = p.at.saturating_duration_since(l.at).as_micros();
                    let ticks = (us * u128::from(p.clock_rate) / 1_000_000)
                        .clamp(1, u128::from(u32::MAX / 2));
                    (l.seq + 1, l.ts.wrapping_add(ticks as u32))
                }
                // Start below 2^16: the receiver assumes rollover count 0.
                None => (p.seq & 0xffff, p.ts),
            };
            self.seq_off = seq.wrapping_sub(p.seq);
            self.ts_off = ts.wrapping_sub(p.ts);
            self.min_in = p.seq;
            self.ssrc = Some(p.ssrc);
            let last = self.last.as_ref();
            self.pid_off = match (
                last.and_then(|l| l.picture_id),
                p.vp8.and_then(|d| d.picture_id()),
            ) {
                (Some(l), Some(cur)) => l.wrapping_add(1).wrapping_sub(cur) & 0x7fff,
                _ => 0,
            };
            self.tl0_off = match (
                last.and_then(|l| l.tl0),
                p.vp8.and_then(|d| d.tl0_pic_idx()),
            ) {
                (Some(l), Some(cur)) => l.wrapping_add(1).wrapping_sub(cur),
                _ => 0,
            };
        } else if p.seq < self.min_in {
            return None;
        }
        let seq = p.seq.wrapping_add(self.seq_off);
        let ts = p.ts.wrapping_add(self.ts_off);
        let mut picture_id = None;
        let mut tl0 = None;
        let mut patch = None;
        if let Some(d) = p.vp8 {
            picture_id = d
                .picture_id()
                .map(|v| v.wrapping_add(self.pid_off) & 0x7fff);
            tl0 = d.tl0_pic_idx().map(|v| v.wrapping_add(self.tl0_off));
            if self.pid_off != 0 || self.tl0_off != 0 {
                let build = |pid: Option<u16>| {
                    let mut b = d.patch();
                    if let Some(v) = pid {
                        b = b.picture_id(v);
                    }
                    if let Some(v) = tl0 {
                        b = b.tl0_pic_idx(v);
                    }
                    b.build()
                };
                // A 7-bit picture id keeps its width (continuity modulo 128).
                patch = build(picture_id)
                    .or_else(|_| build(picture_id.map(|v| v & 0x7f)))
                    .ok();
            }
        }
        if rebase || self.last.is_none_or(|l| seq > l.seq) {
            self.last = Some(LastOut {
                seq,
                ts,
                at: p.at,
                picture_id,
                tl0,
            });
        }
        Some(OutPacket {
            seq,
            ts,
            vp8: patch,
        })
    }
}

fn media_kind(k: TrackKind) -> MediaKind {
    match k {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video => MediaKind::Video,
    }
}

fn other_key(by_name: &HashMap<(RoomId, ParticipantId), PKey>, p: &Participant) -> PKey {
    by_name
        .get(&(p.room.clone(), p.id.clone()))
        .copied()
        .unwrap_or(PKey(0))
}

fn new_sub(t: &PubTrack, source: PKey, publisher: &ParticipantId) -> SubTrack {
    SubTrack {
        track: t.id.clone(),
        stream_id: publisher.to_string(),
        source,
        source_mid: t.mid,
        kind: t.kind,
        state: SubState::ToOpen,
        removed: false,
        prefs: SubscriptionPrefs::default(),
        current_rid: None,
        target_rid: None,
        need_keyframe: t.kind == TrackKind::Video,
        rebase_pending: false,
        rw: Rewriter::default(),
        pt_map: None,
    }
}

impl SubTrack {
    fn clone_fresh(&self) -> SubTrack {
        SubTrack {
            track: self.track.clone(),
            stream_id: self.stream_id.clone(),
            source: self.source,
            source_mid: self.source_mid,
            kind: self.kind,
            state: SubState::ToOpen,
            removed: false,
            prefs: self.prefs,
            current_rid: None,
            target_rid: None,
            need_keyframe: self.kind == TrackKind::Video,
            rebase_pending: false,
            rw: Rewriter::default(),
            pt_map: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark's simulcast layers (q/h/f ≈ 0.16/0.43/0.96 Mbit/s).
    fn camera() -> VideoDemand {
        VideoDemand {
            costs: vec![160_000, 430_000, 960_000],
            active: true,
            screen: false,
            area: None,
        }
    }

    fn spent(demands: &[VideoDemand], picks: &[usize]) -> u64 {
        demands
            .iter()
            .zip(picks)
            .filter(|(d, _)| d.active)
            .map(|(d, p)| d.costs[*p])
            .sum()
    }

    /// Three cameras against the initial 1.5 Mbit/s estimate: each top layer
    /// fits alone (what per-track selection chose: 2.9 Mbit/s in total), but
    /// together only lower layers fit, and every video keeps a layer.
    #[test]
    fn three_videos_share_the_estimate() {
        let demands = vec![camera(), camera(), camera()];
        let audio = 3 * 40_000;
        let budget = 1_500_000;
        let picks = allocate_layers(Some(budget), audio, &demands);
        assert_eq!(picks.len(), 3);
        assert!(
            spent(&demands, &picks) + audio <= budget * BUDGET_PERCENT / 100,
            "{picks:?} over the budget"
        );
        assert!(picks.iter().all(|p| *p < 2), "no top layer fits: {picks:?}");
        // Fair: upgrades go round, no track is two layers above another.
        assert_eq!(picks, vec![1, 1, 0]);
        // A larger estimate upgrades further, still within the budget.
        let picks = allocate_layers(Some(4_000_000), audio, &demands);
        assert_eq!(picks, vec![2, 2, 2]);
        let picks = allocate_layers(Some(3_000_000), audio, &demands);
        assert!(spent(&demands, &picks) + audio <= 3_000_000 * BUDGET_PERCENT / 100);
        assert_eq!(picks, vec![2, 1, 1]);
    }

    #[test]
    fn audio_is_reserved_first() {
        let demands = vec![camera()];
        // 0.8 × 1 Mbit/s = 800k: f (960k) never, h (430k) only without
        // 400k of audio.
        assert_eq!(allocate_layers(Some(1_000_000), 0, &demands), vec![1]);
        assert_eq!(allocate_layers(Some(1_000_000), 400_000, &demands), vec![0]);
    }

    #[test]
    fn lowest_layers_even_when_they_do_not_fit() {
        let demands = vec![camera(), camera(), camera()];
        assert_eq!(allocate_layers(Some(100_000), 0, &demands), vec![0, 0, 0]);
    }

    #[test]
    fn no_budget_means_the_highest_allowed_layer() {
        let mut capped = camera();
        capped.costs.truncate(2);
        let single = VideoDemand {
            costs: vec![500_000],
            ..camera()
        };
        let demands = vec![camera(), capped, single];
        assert_eq!(allocate_layers(None, 0, &demands), vec![2, 1, 0]);
    }

    #[test]
    fn paused_and_muted_tracks_take_nothing() {
        let paused = VideoDemand {
            active: false,
            ..camera()
        };
        // 0.8 × 2.5 Mbit/s = 2 Mbit/s: two top layers (1.92) fit once the
        // third track is inactive.
        let demands = vec![camera(), paused, camera()];
        assert_eq!(allocate_layers(Some(2_500_000), 0, &demands), vec![2, 0, 2]);
        let demands = vec![camera(), camera(), camera()];
        let picks = allocate_layers(Some(2_500_000), 0, &demands);
        assert!(picks.iter().filter(|p| **p == 2).count() < 2, "{picks:?}");
    }

    #[test]
    fn screen_share_then_larger_sizes_first() {
        let screen = VideoDemand {
            screen: true,
            ..camera()
        };
        let small = VideoDemand {
            area: Some(320 * 180),
            ..camera()
        };
        let large = VideoDemand {
            area: Some(1280 * 720),
            ..camera()
        };
        // 0.8 × 1.75 Mbit/s = 1.4 Mbit/s: the screen share goes to the top
        // (0.96 + 2 × 0.16 = 1.28), the cameras stay low.
        let demands = vec![small.clone(), screen, large.clone()];
        assert_eq!(allocate_layers(Some(1_750_000), 0, &demands), vec![0, 2, 0]);
        // Without it the larger display is upgraded first.
        let demands = vec![small, large];
        // 0.8 × 0.8 Mbit/s = 640k: 160k + 430k.
        assert_eq!(allocate_layers(Some(800_000), 0, &demands), vec![0, 1]);
    }

    /// A VP8 payload with a 15-bit picture id and TL0PICIDX.
    fn vp8(picture_id: u16, tl0: u8, key: bool) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            0x00,
            if key { 0x00 } else { 0x01 },
            0xaa,
        ]
    }

    fn input(ssrc: u32, seq: u64, ts: u32, ms: u64, payload: &[u8], t0: Instant) -> InPacket {
        InPacket {
            ssrc: ssrc.into(),
            seq,
            ts,
            at: t0 + Duration::from_millis(ms),
            clock_rate: 90_000,
            vp8: Vp8Descriptor::parse(payload).ok(),
        }
    }

    /// A layer switch (new SSRC, other sequence, timestamp and picture id
    /// bases) continues the subscriber's stream where it stopped; late
    /// packets of the old segment are dropped.
    #[test]
    fn rewriter_keeps_one_continuous_stream_across_switches() {
        let t0 = Instant::now();
        let mut rw = Rewriter::default();
        let key = vp8(1000, 7, true);
        let first = rw.map(&input(1, 70_000, 500, 0, &key, t0), true).unwrap();
        // The output starts below 2^16 with the incoming timestamp, no patch.
        assert_eq!(first.seq, 70_000 & 0xffff);
        assert_eq!(first.ts, 500);
        assert_eq!(first.vp8, None);
        let delta = vp8(1001, 8, false);
        let second = rw
            .map(&input(1, 70_001, 3500, 33, &delta, t0), false)
            .unwrap();
        assert_eq!((second.seq, second.ts), (first.seq + 1, 3500));

        // Switch to another layer 33 ms later: sequence + 1, timestamp +
        // 33 ms at 90 kHz, picture id and TL0PICIDX + 1 (patched).
        let other = vp8(20, 200, true);
        let sw = rw
            .map(&input(2, 9, 1_000_000, 66, &other, t0), true)
            .unwrap();
        assert_eq!(sw.seq, second.seq + 1);
        assert_eq!(sw.ts, 3500 + 2970);
        let patch = sw.vp8.expect("picture id rewritten");
        let want = Vp8Descriptor::parse(&other)
            .unwrap()
            .patch()
            .picture_id(1002)
            .tl0_pic_idx(9)
            .build()
            .unwrap();
        assert_eq!(patch, want);
        // A retransmission from before the switch point is not forwarded.
        assert_eq!(rw.map(&input(2, 8, 1_000_000, 70, &other, t0), false), None);
        // The new segment continues with the new offsets.
        let next = rw.map(
            &input(2, 10, 1_003_000, 99, &vp8(21, 201, false), t0),
            false,
        );
        assert_eq!(
            next.map(|o| (o.seq, o.ts)),
            Some((sw.seq + 1, sw.ts + 3000))
        );

        // Resume after a 2 s pause: the timestamp advances by the pause.
        let resumed = rw
            .map(
                &input(2, 100, 9_000_000, 2099, &vp8(90, 250, true), t0),
                true,
            )
            .unwrap();
        assert_eq!(resumed.seq, sw.seq + 2);
        assert_eq!(resumed.ts, sw.ts + 3000 + 180_000);
    }

    #[test]
    fn keyframe_starts_per_codec() {
        assert!(starts_keyframe(Codec::Vp8, &vp8(1, 1, true)));
        assert!(!starts_keyframe(Codec::Vp8, &vp8(1, 1, false)));
        // VP9: B=1 P=0 starts a keyframe; P=1 or a later packet does not.
        assert!(starts_keyframe(Codec::Vp9, &[0x08, 0x80]));
        assert!(!starts_keyframe(Codec::Vp9, &[0x48, 0x84]));
        assert!(!starts_keyframe(Codec::Vp9, &[0x04, 0x80]));
        // H.264: an SPS (STAP-A or alone) or an IDR slice.
        assert!(starts_keyframe(Codec::H264, &[0x67, 0x42]));
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a]));
        assert!(!starts_keyframe(Codec::Opus, &[0x65]));
    }

    #[test]
    fn unmeasured_tracks_start_low() {
        let new = VideoDemand {
            costs: vec![0, 0, 0],
            ..camera()
        };
        let demands = vec![new, camera()];
        assert_eq!(allocate_layers(Some(10_000_000), 0, &demands), vec![0, 2]);
    }
}
