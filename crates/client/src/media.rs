//! A WebRTC media client on str0m (cargo feature `media`): what the tests
//! and the load generator use to publish to and receive from a Switchboard
//! SFU.
//!
//! A [`MediaClient`] has two peers, like a browser's two
//! `RTCPeerConnection`s for one call: a **publisher** that offers audio
//! and/or video (VP8, VP9 or H.264; VP8 optionally as three simulcast layers
//! `q`/`h`/`f`) and sends synthetic frames, and a **subscriber** that answers
//! the SFU's offers and counts what arrives per track and layer. Each peer
//! has its own UDP socket. Signaling is the caller's job (over `rtc.*` RPCs
//! or straight into the SFU): [`MediaClient::publish_offer`] /
//! [`MediaClient::accept_publish_answer`] and
//! [`MediaClient::accept_subscriber_offer`] exchange SDP text.
//!
//! Synthetic frames are recognisable after forwarding: after a codec prefix
//! (VP8: the "P" bit byte, VP9: an uncompressed-header byte, H.264: a start
//! code and NAL header; each says keyframe or not, so the receiving
//! depacketizer reports `is_keyframe`) comes `SB` (video) or `SA` (audio),
//! the layer as an ASCII digit, the frame number and the send time as hex
//! digits (no zero bytes, so no H.264 start code can appear), then padding.
//! The send time is microseconds on this process's monotonic clock, so a
//! receiving client in the same process measures one-way latency
//! ([`MediaClient::take_latencies`]). Keyframes go out first and whenever a
//! keyframe request (PLI/FIR) arrives.
//!
//! ```no_run
//! use switchboard_client::media::{MediaClient, MediaOptions};
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let media = MediaClient::new(MediaOptions::default()).await?;
//! let offer = media.publish_offer()?;
//! // … send `offer` with rtc.publish, get the answer back …
//! # let answer = String::new();
//! media.accept_publish_answer(&answer)?;
//! println!("{:?}", media.stats().frames("video"));
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast,
    SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The video codec a [`MediaClient`] publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    /// VP8 (the default; the only one with simulcast here).
    #[default]
    Vp8,
    /// VP9 (non-flexible mode, one spatial layer).
    Vp9,
    /// H.264 (Annex B NAL units).
    H264,
}

impl VideoCodec {
    fn str0m(self) -> Codec {
        match self {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::Vp9 => Codec::Vp9,
            VideoCodec::H264 => Codec::H264,
        }
    }
}

/// What a [`MediaClient`] publishes and how.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Offer an audio (Opus) track.
    pub audio: bool,
    /// Offer a video track.
    pub video: bool,
    /// Send video as three simulcast layers `q`, `h`, `f` (VP8 only).
    pub simulcast: bool,
    /// Video codec; the publisher offers only this one (plus Opus).
    pub video_codec: VideoCodec,
    /// Video frames per second (per layer).
    pub fps: u32,
    /// Audio level written in each audio packet, in -dBov (0 loudest,
    /// 127 silent).
    pub audio_level_dbov: u8,
    /// Size of a video delta frame of the top layer in bytes (the lower
    /// simulcast layers are 1/6 and 4/9 of it, keyframes twice the size).
    pub video_frame_bytes: usize,
    /// Local address both sockets bind to (port 0).
    pub bind_ip: IpAddr,
    /// Keep the one-way latency of each received frame for
    /// [`MediaClient::take_latencies`] (at most 200,000 unread samples).
    pub record_latency: bool,
}

impl Default for MediaOptions {
    fn default() -> Self {
        MediaOptions {
            audio: true,
            video: true,
            simulcast: false,
            video_codec: VideoCodec::Vp8,
            fps: 15,
            audio_level_dbov: 30,
            video_frame_bytes: 1800,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            record_latency: false,
        }
    }
}

/// Why an SDP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaClientError {
    /// The remote SDP could not be parsed or applied.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// An answer arrived but no publisher offer is pending.
    #[error("no publisher offer pending")]
    NoOfferPending,
    /// Nothing to offer (no audio nor video in the options).
    #[error("nothing to publish")]
    NothingToPublish,
}

/// What arrived on one subscribed track.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackRx {
    /// `audio` or `video`.
    pub kind: String,
    /// Still offered (not stopped by a later offer).
    pub active: bool,
    /// Codec of the last frame (`opus`, `vp8`, `vp9`, `h264`).
    pub codec: String,
    /// Frames received.
    pub frames: u64,
    /// RTP packets received (from the frames' sequence number ranges).
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Video keyframes received.
    pub keyframes: u64,
    /// Video frames per source layer (from the synthetic payload).
    pub layers: [u64; 3],
}

/// Counters of a [`MediaClient`].
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    /// Publisher peer completed ICE + DTLS.
    pub publisher_connected: bool,
    /// Subscriber peer completed ICE + DTLS.
    pub subscriber_connected: bool,
    /// Received tracks by SFU track id (from `a=msid`).
    pub tracks: HashMap<String, TrackRx>,
    /// Keyframe requests received by the publisher, by rid (`""` without).
    pub keyframe_requests: HashMap<String, u64>,
    /// Frames written by the publisher (each simulcast layer counts).
    pub frames_sent: u64,
    /// Subscriber offers answered.
    pub offers_answered: u64,
}

impl MediaStats {
    /// Sum of frames over active tracks of `kind` (`audio` or `video`).
    pub fn frames(&self, kind: &str) -> u64 {
        self.tracks
            .values()
            .filter(|t| t.kind == kind && t.active)
            .map(|t| t.frames)
            .sum()
    }

    /// Sum of RTP packets over all received tracks.
    pub fn packets(&self) -> u64 {
        self.tracks.values().map(|t| t.packets).sum()
    }

    /// Active received tracks.
    pub fn active_tracks(&self) -> usize {
        self.tracks.values().filter(|t| t.active).count()
    }
}

/// Most unread latency samples kept.
const MAX_LATENCIES: usize = 200_000;

struct Peer {
    rtc: Rtc,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

struct Inner {
    opts: MediaOptions,
    publisher: Option<Peer>,
    subscriber: Peer,
    pub_pending: Option<SdpPendingOffer>,
    pub_socket: Arc<UdpSocket>,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    rids: Vec<Rid>,
    sending: bool,
    keyframe_wanted: HashSet<Option<Rid>>,
    frame_no: u32,
    audio_ts: u64,
    video_ts: u64,
    next_audio: Instant,
    next_video: Instant,
    /// Subscriber mid → SFU track id.
    sub_tracks: HashMap<Mid, String>,
    latencies: Vec<Duration>,
    stats: MediaStats,
}

/// A str0m client with a publisher and a subscriber peer; see the module
/// docs. Dropping it stops everything without a goodbye (like a vanishing
/// browser).
pub struct MediaClient {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for MediaClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_rtc(now: Instant, video: Option<VideoCodec>) -> Rtc {
    let b = Rtc::builder().set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()));
    let b = match video {
        None => b,
        Some(c) => {
            let b = b.clear_codecs().enable_opus(true, false);
            match c {
                VideoCodec::Vp8 => b.enable_vp8(true),
                VideoCodec::Vp9 => b.enable_vp9(true),
                VideoCodec::H264 => b.enable_h264(true),
            }
        }
    };
    b.build(now)
}

/// The process-wide origin of the send times embedded in frames.
fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl MediaClient {
    /// Bind two sockets on `opts.bind_ip` and start the client task.
    pub async fn new(opts: MediaOptions) -> std::io::Result<MediaClient> {
        clock_origin();
        let sub_socket = Arc::new(UdpSocket::bind((opts.bind_ip, 0)).await?);
        let pub_socket = Arc::new(UdpSocket::bind((opts.bind_ip, 0)).await?);
        let now = Instant::now();
        let mut rtc = new_rtc(now, None);
        let local = sub_socket.local_addr()?;
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        let inner = Arc::new(Mutex::new(Inner {
            opts,
            publisher: None,
            subscriber: Peer {
                rtc,
                socket: sub_socket.clone(),
                local,
            },
            pub_pending: None,
            pub_socket: pub_socket.clone(),
            audio_mid: None,
            video_mid: None,
            rids: Vec::new(),
            sending: true,
            keyframe_wanted: HashSet::new(),
            frame_no: 0,
            audio_ts: 0,
            video_ts: 0,
            next_audio: now,
            next_video: now,
            sub_tracks: HashMap::new(),
            latencies: Vec::new(),
            stats: MediaStats::default(),
        }));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(inner.clone(), wake.clone(), sub_socket, pub_socket));
        Ok(MediaClient { inner, wake, task })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Poisoned only if a panic happened while holding it; the state is
        // plain counters and str0m peers, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create the publisher peer and its offer (audio and/or video, as the
    /// options say).
    pub fn publish_offer(&self) -> Result<String, MediaClientError> {
        let mut g = self.lock();
        let now = Instant::now();
        let inner = &mut *g;
        let opts = inner.opts.clone();
        if !opts.audio && !opts.video {
            return Err(MediaClientError::NothingToPublish);
        }
        if inner.publisher.is_none() {
            let mut rtc = new_rtc(now, Some(opts.video_codec));
            let local = inner
                .pub_socket
                .local_addr()
                .map_err(|e| MediaClientError::BadSdp(e.to_string()))?;
            if let Ok(c) = Candidate::host(local, "udp") {
                rtc.add_local_candidate(c);
            }
            inner.publisher = Some(Peer {
                rtc,
                socket: inner.pub_socket.clone(),
                local,
            });
        }
        let Some(peer) = inner.publisher.as_mut() else {
            return Err(MediaClientError::NothingToPublish);
        };
        let mut api = peer.rtc.sdp_api();
        if opts.audio && inner.audio_mid.is_none() {
            inner.audio_mid = Some(api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some("stream".into()),
                Some("mic".into()),
                None,
            ));
        }
        if opts.video && inner.video_mid.is_none() {
            let simulcast = opts.simulcast && opts.video_codec == VideoCodec::Vp8;
            let sim = simulcast.then(|| {
                let mut s = Simulcast::new();
                for r in ["q", "h", "f"] {
                    s.add_send_layer(SimulcastLayer::new(r));
                }
                s
            });
            if simulcast {
                inner.rids = ["q", "h", "f"].iter().map(|r| Rid::from(*r)).collect();
            }
            inner.video_mid = Some(api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("stream".into()),
                Some("cam".into()),
                sim,
            ));
        }
        let Some((offer, pending)) = api.apply() else {
            return Err(MediaClientError::NothingToPublish);
        };
        inner.pub_pending = Some(pending);
        drop(g);
        self.wake.notify_one();
        Ok(offer.to_sdp_string())
    }

    /// Apply the SFU's answer to [`MediaClient::publish_offer`].
    pub fn accept_publish_answer(&self, sdp: &str) -> Result<(), MediaClientError> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| MediaClientError::BadSdp(e.to_string()))?;
        let mut g = self.lock();
        let pending = g
            .pub_pending
            .take()
            .ok_or(MediaClientError::NoOfferPending)?;
        let peer = g
            .publisher
            .as_mut()
            .ok_or(MediaClientError::NoOfferPending)?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| MediaClientError::BadSdp(e.to_string()))?;
        drop(g);
        self.wake.notify_one();
        Ok(())
    }

    /// Answer an SFU subscriber offer.
    pub fn accept_subscriber_offer(&self, sdp: &str) -> Result<String, MediaClientError> {
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| MediaClientError::BadSdp(e.to_string()))?;
        let mut g = self.lock();
        let answer = g
            .subscriber
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| MediaClientError::BadSdp(e.to_string()))?;
        // Track ids from a=msid; stopped m-lines (port 0) are inactive.
        for (mid, kind, track, active) in msids(sdp) {
            let mid = Mid::from(mid.as_str());
            let Some(track) = track.or_else(|| g.sub_tracks.get(&mid).cloned()) else {
                continue;
            };
            g.sub_tracks.insert(mid, track.clone());
            let t = g.stats.tracks.entry(track).or_default();
            t.kind = kind;
            t.active = active;
        }
        g.stats.offers_answered += 1;
        drop(g);
        self.wake.notify_one();
        Ok(answer.to_sdp_string())
    }

    /// Start or stop writing media.
    pub fn set_sending(&self, on: bool) {
        self.lock().sending = on;
        self.wake.notify_one();
    }

    /// Publisher mid of the audio track, once offered.
    pub fn audio_mid(&self) -> Option<String> {
        self.lock().audio_mid.map(|m| m.to_string())
    }

    /// Publisher mid of the video track, once offered.
    pub fn video_mid(&self) -> Option<String> {
        self.lock().video_mid.map(|m| m.to_string())
    }

    /// Send a PLI on the subscriber peer for a received track (as a decoder
    /// would); false if the track is unknown.
    pub fn request_keyframe(&self, track: &str) -> bool {
        let mut g = self.lock();
        let Some(mid) = g
            .sub_tracks
            .iter()
            .find(|(_, t)| t.as_str() == track)
            .map(|(m, _)| *m)
        else {
            return false;
        };
        let ok = g
            .subscriber
            .rtc
            .writer(mid)
            .is_some_and(|mut w| w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok());
        drop(g);
        self.wake.notify_one();
        ok
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MediaStats {
        self.lock().stats.clone()
    }

    /// One-way latencies (send on a publisher of this process → complete
    /// frame on this subscriber) recorded since the last call; empty unless
    /// [`MediaOptions::record_latency`].
    pub fn take_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut self.lock().latencies)
    }

    /// The subscriber and (once publishing) publisher socket addresses.
    pub fn addrs(&self) -> (SocketAddr, Option<SocketAddr>) {
        let g = self.lock();
        (g.subscriber.local, g.publisher.as_ref().map(|p| p.local))
    }
}

/// `(mid, kind, msid track id, active)` of each audio/video m-line.
fn msids(sdp: &str) -> Vec<(String, String, Option<String>, bool)> {
    type Section = (String, bool, Option<String>, Option<String>);
    let mut out = Vec::new();
    let mut cur: Option<Section> = None;
    let flush = |c: Option<Section>, out: &mut Vec<(String, String, Option<String>, bool)>| {
        if let Some((kind, active, Some(mid), track)) = c
            && (kind == "audio" || kind == "video")
        {
            out.push((mid, kind, track, active));
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            flush(cur.take(), &mut out);
            let mut p = m.split(' ');
            let kind = p.next().unwrap_or_default().to_owned();
            let active = p.next() != Some("0");
            cur = Some((kind, active, None, None));
        } else if let Some(c) = cur.as_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                c.2 = Some(mid.to_owned());
            } else if let Some(ms) = line.strip_prefix("a=msid:") {
                c.3 = ms.split(' ').nth(1).map(|s| s.to_owned());
            }
        }
    }
    flush(cur, &mut out);
    out
}

/// Hex digits of `v`, `width` wide (ASCII, never a zero byte).
fn push_hex(out: &mut Vec<u8>, v: u64, width: u32) {
    for i in (0..width).rev() {
        let nib = ((v >> (i * 4)) & 0xf) as u8;
        out.push(b"0123456789abcdef"[usize::from(nib)]);
    }
}

/// Microseconds since [`clock_origin`].
fn micros_now(now: Instant) -> u64 {
    now.saturating_duration_since(clock_origin()).as_micros() as u64
}

/// A synthetic video frame; see the module docs.
fn video_frame(
    codec: VideoCodec,
    key: bool,
    layer: u8,
    n: u32,
    sent_us: u64,
    top: usize,
) -> Vec<u8> {
    let size = match layer {
        0 => top / 6,
        1 => top * 4 / 9,
        _ => top,
    }
    .max(40)
        * if key { 2 } else { 1 };
    let mut v = Vec::with_capacity(size);
    match codec {
        VideoCodec::Vp8 => v.push(if key { 0x00 } else { 0x01 }),
        // frame_marker 0b10, profile 0, show_existing 0, frame_type bit.
        VideoCodec::Vp9 => v.push(if key { 0x80 } else { 0x84 }),
        // Start code, then an IDR (type 5) or non-IDR (type 1) slice header.
        VideoCodec::H264 => v.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }]),
    }
    v.extend_from_slice(b"SB");
    v.push(b'0' + layer.min(2));
    push_hex(&mut v, u64::from(n), 8);
    push_hex(&mut v, sent_us, 16);
    v.resize(size, 0x5a);
    v
}

fn audio_frame(n: u32, sent_us: u64) -> Vec<u8> {
    let mut v = vec![0xfc, b'S', b'A', b'0'];
    push_hex(&mut v, u64::from(n), 8);
    push_hex(&mut v, sent_us, 16);
    v.resize(60, 0x11);
    v
}

/// `(video, layer, send time µs)` of a synthetic frame, wherever the codec
/// prefix ends (within the first 6 bytes).
fn parse_frame(d: &[u8]) -> Option<(bool, u8, u64)> {
    let at = d
        .windows(2)
        .take(6)
        .position(|w| w == b"SB" || w == b"SA")?;
    let video = d.get(at + 1) == Some(&b'B');
    let layer = d.get(at + 2)?.checked_sub(b'0')?.min(2);
    let ts = d.get(at + 11..at + 27)?;
    let ts = u64::from_str_radix(std::str::from_utf8(ts).ok()?, 16).ok()?;
    Some((video, layer, ts))
}

/// Poll `peer` until it waits; send its datagrams; collect events.
fn pump(peer: &mut Peer, events: &mut Vec<Event>) -> Instant {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => return t,
            Ok(Output::Transmit(t)) => {
                let _ = peer.socket.try_send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(e)) => events.push(e),
            Err(_) => return Instant::now() + Duration::from_secs(3600),
        }
    }
}

fn payload_type(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<str0m::format::PayloadParams> {
    rtc.writer(mid)?
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .copied()
}

impl Inner {
    /// Drive both peers, handle events, write media when due. Returns the
    /// next deadline.
    fn step(&mut self, now: Instant) -> Instant {
        let mut next = now + Duration::from_millis(100);
        let mut evs = Vec::new();
        next = next.min(pump(&mut self.subscriber, &mut evs));
        for e in evs.drain(..) {
            match e {
                Event::Connected => self.stats.subscriber_connected = true,
                Event::MediaData(d) => self.received(now, &d),
                _ => {}
            }
        }
        let Some(peer) = self.publisher.as_mut() else {
            return next;
        };
        next = next.min(pump(peer, &mut evs));
        for e in evs.drain(..) {
            match e {
                Event::Connected => self.stats.publisher_connected = true,
                Event::KeyframeRequest(r) => {
                    let k = r.rid.map(|r| r.to_string()).unwrap_or_default();
                    *self.stats.keyframe_requests.entry(k).or_default() += 1;
                    self.keyframe_wanted.insert(r.rid);
                }
                _ => {}
            }
        }
        if !self.stats.publisher_connected || !self.sending {
            return next;
        }
        if let Some(mid) = self.audio_mid
            && now >= self.next_audio
        {
            self.next_audio = now + Duration::from_millis(20);
            self.audio_ts += 960;
            let level = self.opts.audio_level_dbov.min(127) as i8;
            if let Some(pt) = payload_type(&mut peer.rtc, mid, Codec::Opus)
                && let Some(w) = peer.rtc.writer(mid)
            {
                let _ = w.audio_level(-level, true).write(
                    pt.pt(),
                    now,
                    MediaTime::new(self.audio_ts, Frequency::FORTY_EIGHT_KHZ),
                    audio_frame(self.frame_no, micros_now(now)),
                );
                self.stats.frames_sent += 1;
            }
            next = next.min(pump(peer, &mut evs));
        }
        if let Some(mid) = self.video_mid
            && now >= self.next_video
        {
            let fps = u64::from(self.opts.fps.max(1));
            self.next_video = now + Duration::from_millis(1000 / fps);
            self.video_ts += 90_000 / fps;
            self.frame_no += 1;
            let layers: Vec<Option<Rid>> = if self.rids.is_empty() {
                vec![None]
            } else {
                self.rids.iter().copied().map(Some).collect()
            };
            let codec = self.opts.video_codec;
            let pt = payload_type(&mut peer.rtc, mid, codec.str0m());
            for (i, rid) in layers.into_iter().enumerate() {
                let key = self.frame_no == 1 || self.keyframe_wanted.remove(&rid);
                let (Some(pt), Some(w)) = (pt, peer.rtc.writer(mid)) else {
                    break;
                };
                let w = match rid {
                    Some(r) => w.rid(r),
                    None => w,
                };
                let layer = if self.rids.is_empty() { 2 } else { i as u8 };
                let _ = w.write(
                    pt.pt(),
                    now,
                    MediaTime::new(self.video_ts, Frequency::NINETY_KHZ),
                    video_frame(
                        codec,
                        key,
                        layer,
                        self.frame_no,
                        micros_now(now),
                        self.opts.video_frame_bytes,
                    ),
                );
                self.stats.frames_sent += 1;
                next = next.min(pump(peer, &mut evs));
            }
        }
        // Requests raised while writing (rare) are served next frame.
        for e in evs {
            if let Event::KeyframeRequest(r) = e {
                self.keyframe_wanted.insert(r.rid);
            }
        }
        next.min(self.next_audio).min(self.next_video)
    }

    fn received(&mut self, now: Instant, d: &str0m::media::MediaData) {
        let Some(track) = self.sub_tracks.get(&d.mid) else {
            return;
        };
        let t = self.stats.tracks.entry(track.clone()).or_default();
        t.frames += 1;
        t.bytes += d.data.len() as u64;
        if t.codec.is_empty() {
            t.codec = d.params.spec().codec.to_string().to_lowercase();
        }
        let (a, b) = (d.seq_range.start(), d.seq_range.end());
        t.packets += (**b).saturating_sub(**a) + 1;
        let Some((video, layer, sent_us)) = parse_frame(&d.data) else {
            return;
        };
        if video {
            t.layers[usize::from(layer)] += 1;
            if d.is_keyframe() {
                t.keyframes += 1;
            }
        }
        if self.opts.record_latency && self.latencies.len() < MAX_LATENCIES {
            let us = micros_now(now).saturating_sub(sent_us);
            self.latencies.push(Duration::from_micros(us));
        }
    }

    fn receive(&mut self, sub: bool, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let peer = if sub {
            Some(&mut self.subscriber)
        } else {
            self.publisher.as_mut()
        };
        let Some(peer) = peer else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: peer.local,
                contents,
            },
        );
        let _ = peer.rtc.handle_input(input);
    }

    fn timeout(&mut self, now: Instant) {
        let _ = self.subscriber.rtc.handle_input(Input::Timeout(now));
        if let Some(p) = self.publisher.as_mut() {
            let _ = p.rtc.handle_input(Input::Timeout(now));
        }
    }
}

async fn run(
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
    sub_socket: Arc<UdpSocket>,
    pub_socket: Arc<UdpSocket>,
) {
    let lock = || inner.lock().unwrap_or_else(|e| e.into_inner());
    let mut b1 = vec![0u8; 2048];
    let mut b2 = vec![0u8; 2048];
    loop {
        let deadline = {
            let mut g = lock();
            let now = Instant::now();
            g.timeout(now);
            g.step(now)
        };
        let deadline = tokio::time::Instant::from_std(deadline.max(Instant::now()));
        tokio::select! {
            r = sub_socket.recv_from(&mut b1) => {
                if let Ok((n, from)) = r {
                    lock().receive(true, Instant::now(), from, &b1[..n]);
                }
            }
            r = pub_socket.recv_from(&mut b2) => {
                if let Ok((n, from)) = r {
                    lock().receive(false, Instant::now(), from, &b2[..n]);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
            _ = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msid_parse() {
        let sdp = "v=0\r\nm=audio 9 UDP 111\r\na=mid:0\r\na=msid:alice alice:0\r\n\
                   m=video 0 UDP 96\r\na=mid:1\r\na=msid:bob bob:1\r\n\
                   m=application 9 x\r\na=mid:2\r\n";
        let v = msids(sdp);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            ("0".into(), "audio".into(), Some("alice:0".into()), true)
        );
        assert_eq!(
            v[1],
            ("1".into(), "video".into(), Some("bob:1".into()), false)
        );
    }

    #[test]
    fn synthetic_frames_parse_back_and_hold_no_start_code() {
        for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
            for key in [true, false] {
                let f = video_frame(codec, key, 1, 0x0000_0100, 0x0001_0000_0001, 1800);
                assert_eq!(parse_frame(&f), Some((true, 1, 0x0001_0000_0001)));
                let body = if codec == VideoCodec::H264 {
                    &f[4..]
                } else {
                    &f[..]
                };
                assert!(!body.windows(3).any(|w| w == [0, 0, 1]), "{codec:?}");
            }
        }
        assert_eq!(parse_frame(&audio_frame(7, 42)), Some((false, 0, 42)));
        assert_eq!(parse_frame(b"garbage"), None);
        assert_eq!(parse_frame(b""), None);
    }
}
