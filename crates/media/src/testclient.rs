//! A media test client on str0m (feature `test-client`): a publisher peer
//! that offers audio and video (optionally three simulcast layers `q`/`h`/`f`)
//! and sends synthetic Opus and VP8 frames, and a subscriber peer that
//! answers the SFU's offers and counts what arrives, per track and layer.
//! Each peer has its own UDP socket on loopback, like a browser's two
//! `RTCPeerConnection`s.
//!
//! Synthetic frames are recognisable: a video frame is
//! `[vp8 flag, b'S', b'B', layer, frame counter (u32 BE), padding…]` where the
//! flag's low bit is VP8's "P" bit (0 = keyframe, so str0m's depacketizer
//! reports `is_keyframe`); an audio frame starts `[0xfc, b'S', b'A']`.
//! Keyframes go out first and whenever a keyframe request arrives.
//!
//! Signaling is the test's job: [`TestClient::publish_offer`] /
//! [`TestClient::accept_publish_answer`] and
//! [`TestClient::accept_subscriber_offer`] exchange SDP text.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What the client publishes.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Offer an audio track.
    pub audio: bool,
    /// Offer a video track.
    pub video: bool,
    /// Send video as three simulcast layers `q`, `h`, `f`.
    pub simulcast: bool,
    /// Video frames per second (per layer).
    pub fps: u32,
    /// Audio level written in each audio packet, in -dBov (0 loudest,
    /// 127 silent).
    pub audio_level_dbov: u8,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            audio: true,
            video: true,
            simulcast: false,
            fps: 15,
            audio_level_dbov: 30,
        }
    }
}

/// What arrived on one subscribed track.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackRx {
    /// `audio` or `video`.
    pub kind: String,
    /// Still offered (not stopped by a later offer).
    pub active: bool,
    /// Frames received.
    pub frames: u64,
    /// RTP packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Video keyframes received.
    pub keyframes: u64,
    /// Video frames per source layer (index from the synthetic payload).
    pub layers: [u64; 3],
}

/// Counters of a [`TestClient`].
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Publisher peer completed ICE + DTLS.
    pub publisher_connected: bool,
    /// Subscriber peer completed ICE + DTLS.
    pub subscriber_connected: bool,
    /// Received tracks by SFU track id (from `a=msid`).
    pub tracks: HashMap<String, TrackRx>,
    /// Keyframe requests received by the publisher, by rid (`""` without).
    pub keyframe_requests: HashMap<String, u64>,
    /// Frames written by the publisher.
    pub frames_sent: u64,
    /// Subscriber offers answered.
    pub offers_answered: u64,
}

impl ClientStats {
    /// Sum of frames over active tracks of `kind`.
    pub fn frames(&self, kind: &str) -> u64 {
        self.tracks
            .values()
            .filter(|t| t.kind == kind && t.active)
            .map(|t| t.frames)
            .sum()
    }

    /// Active received tracks.
    pub fn active_tracks(&self) -> usize {
        self.tracks.values().filter(|t| t.active).count()
    }
}

struct Peer {
    rtc: Rtc,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

struct Inner {
    opts: ClientOptions,
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
    stats: ClientStats,
}

/// A str0m client with a publisher and a subscriber peer; see the module
/// docs. Dropping it stops everything without a goodbye (a vanishing client).
pub struct TestClient {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_rtc(now: Instant) -> Rtc {
    Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(now)
}

impl TestClient {
    /// Bind two loopback sockets and start the client task.
    pub async fn new(opts: ClientOptions) -> std::io::Result<TestClient> {
        let sub_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let pub_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let now = Instant::now();
        let mut rtc = new_rtc(now);
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
            stats: ClientStats::default(),
        }));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(inner.clone(), wake.clone(), sub_socket, pub_socket));
        Ok(TestClient { inner, wake, task })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a test already panicked; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create the publisher peer and its offer (audio and/or video).
    pub fn publish_offer(&self) -> String {
        let mut g = self.lock();
        let now = Instant::now();
        let inner = &mut *g;
        if inner.publisher.is_none() {
            let mut rtc = new_rtc(now);
            let local = inner.pub_socket.local_addr().expect("bound socket");
            if let Ok(c) = Candidate::host(local, "udp") {
                rtc.add_local_candidate(c);
            }
            inner.publisher = Some(Peer {
                rtc,
                socket: inner.pub_socket.clone(),
                local,
            });
        }
        let opts = inner.opts.clone();
        let Some(peer) = inner.publisher.as_mut() else {
            return String::new();
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
            let sim = opts.simulcast.then(|| {
                let mut s = Simulcast::new();
                for r in ["q", "h", "f"] {
                    s.add_send_layer(SimulcastLayer::new(r));
                }
                s
            });
            if opts.simulcast {
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
            return String::new();
        };
        inner.pub_pending = Some(pending);
        drop(g);
        self.wake.notify_one();
        offer.to_sdp_string()
    }

    /// Apply the SFU's answer to [`TestClient::publish_offer`].
    pub fn accept_publish_answer(&self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let mut g = self.lock();
        let pending = g.pub_pending.take().ok_or("no offer pending")?;
        let peer = g.publisher.as_mut().ok_or("no publisher")?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        drop(g);
        self.wake.notify_one();
        Ok(())
    }

    /// Answer an SFU subscriber offer.
    pub fn accept_subscriber_offer(&self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let mut g = self.lock();
        let answer = g
            .subscriber
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
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

    /// Publisher mid of the audio track.
    pub fn audio_mid(&self) -> Option<String> {
        self.lock().audio_mid.map(|m| m.to_string())
    }

    /// Publisher mid of the video track.
    pub fn video_mid(&self) -> Option<String> {
        self.lock().video_mid.map(|m| m.to_string())
    }

    /// Send a PLI on the subscriber peer for a received track (as a decoder
    /// would); returns false if the track is unknown.
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
        let ok = g.subscriber.rtc.writer(mid).is_some_and(|mut w| {
            w.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli)
                .is_ok()
        });
        drop(g);
        self.wake.notify_one();
        ok
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        self.lock().stats.clone()
    }

    /// The subscriber and publisher socket addresses.
    pub fn addrs(&self) -> (SocketAddr, Option<SocketAddr>) {
        let g = self.lock();
        (g.subscriber.local, g.publisher.as_ref().map(|p| p.local))
    }
}

/// `(mid, kind, msid track id, active)` of each audio/video m-line.
fn msids(sdp: &str) -> Vec<(String, String, Option<String>, bool)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, bool, Option<String>, Option<String>)> = None;
    let flush = |c: Option<(String, bool, Option<String>, Option<String>)>,
                 out: &mut Vec<(String, String, Option<String>, bool)>| {
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

fn video_frame(key: bool, layer: u8, n: u32) -> Vec<u8> {
    let size = match layer {
        0 => 300,
        1 => 800,
        _ => 1800,
    } * if key { 2 } else { 1 };
    let mut v = vec![if key { 0x00 } else { 0x01 }, b'S', b'B', layer];
    v.extend_from_slice(&n.to_be_bytes());
    v.resize(size, 0x5a);
    v
}

fn audio_frame(n: u32) -> Vec<u8> {
    let mut v = vec![0xfc, b'S', b'A', 0];
    v.extend_from_slice(&n.to_be_bytes());
    v.resize(60, 0x11);
    v
}

/// Poll `peer` until it waits; send its datagrams; return events.
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
                Event::MediaData(d) => {
                    let Some(track) = self.sub_tracks.get(&d.mid) else {
                        continue;
                    };
                    let t = self.stats.tracks.entry(track.clone()).or_default();
                    t.frames += 1;
                    t.bytes += d.data.len() as u64;
                    let (a, b) = (d.seq_range.start(), d.seq_range.end());
                    t.packets += (**b).saturating_sub(**a) + 1;
                    if d.data.len() >= 4 && d.data[1] == b'S' && d.data[2] == b'B' {
                        t.layers[usize::from(d.data[3]).min(2)] += 1;
                        if d.is_keyframe() {
                            t.keyframes += 1;
                        }
                    }
                }
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
            let w = peer.rtc.writer(mid);
            let pt = w.as_ref().and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                    .map(|p| p.pt())
            });
            if let (Some(w), Some(pt)) = (w, pt) {
                let _ = w.audio_level(-level, true).write(
                    pt,
                    now,
                    MediaTime::new(self.audio_ts, str0m::media::Frequency::FORTY_EIGHT_KHZ),
                    audio_frame(self.frame_no),
                );
                self.stats.frames_sent += 1;
            }
            next = next.min(pump(peer, &mut evs));
        }
        if let Some(mid) = self.video_mid
            && now >= self.next_video
        {
            self.next_video = now + Duration::from_millis(1000 / u64::from(self.opts.fps.max(1)));
            self.video_ts += 90_000 / u64::from(self.opts.fps.max(1));
            self.frame_no += 1;
            let layers: Vec<Option<Rid>> = if self.rids.is_empty() {
                vec![None]
            } else {
                self.rids.iter().copied().map(Some).collect()
            };
            for (i, rid) in layers.into_iter().enumerate() {
                let key = self.frame_no == 1 || self.keyframe_wanted.remove(&rid);
                let Some(w) = peer.rtc.writer(mid) else {
                    break;
                };
                let Some(pt) = w
                    .payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
                    .map(|p| p.pt())
                else {
                    break;
                };
                let w = match rid {
                    Some(r) => w.rid(r),
                    None => w,
                };
                let _ = w.write(
                    pt,
                    now,
                    MediaTime::new(self.video_ts, str0m::media::Frequency::NINETY_KHZ),
                    video_frame(key, i as u8, self.frame_no),
                );
                self.stats.frames_sent += 1;
                next = next.min(pump(peer, &mut evs));
            }
        }
        // Events raised while writing (rare) are handled next round.
        for e in evs {
            if let Event::KeyframeRequest(r) = e {
                self.keyframe_wanted.insert(r.rid);
            }
        }
        next.min(self.next_audio).min(self.next_video)
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
}
