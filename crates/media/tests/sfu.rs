//! SFU integration tests: real UDP on 127.0.0.1, str0m test clients,
//! bounded waits, no timing assertions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_client::media::{MediaClient, MediaOptions, TrackRx, VideoCodec};
use switchboard_media::*;

const WAIT: Duration = Duration::from_secs(15);

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// An SFU plus an event router that answers subscriber offers for the
/// registered clients and records every event.
struct Harness {
    sfu: Sfu,
    clients: Arc<Mutex<HashMap<String, Arc<MediaClient>>>>,
    log: Arc<Mutex<Vec<MediaEvent>>>,
}

fn config() -> MediaConfig {
    MediaConfig::new("127.0.0.1:0".parse().unwrap()).with_stats_interval(Duration::from_millis(500))
}

async fn harness(cfg: MediaConfig) -> Harness {
    init_log();
    let (sfu, mut events) = Sfu::start(cfg).await.expect("start");
    let clients: Arc<Mutex<HashMap<String, Arc<MediaClient>>>> = Default::default();
    let log: Arc<Mutex<Vec<MediaEvent>>> = Default::default();
    let (c2, l2, s2) = (clients.clone(), log.clone(), sfu.clone());
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let MediaEvent::SubscriberOffer {
                room,
                participant,
                sdp,
            } = &ev
            {
                let client = c2.lock().unwrap().get(participant.as_str()).cloned();
                if let Some(client) = client {
                    let answer = client.accept_subscriber_offer(sdp).expect("answer");
                    s2.subscriber_answer(room.clone(), participant.clone(), answer)
                        .await
                        .expect("subscriber answer");
                }
            }
            l2.lock().unwrap().push(ev);
        }
    });
    Harness { sfu, clients, log }
}

impl Harness {
    /// Join, answer the first subscriber offer, publish if `publish`.
    async fn connect(
        &self,
        room: &str,
        name: &str,
        perms: Permissions,
        opts: Option<MediaOptions>,
    ) -> Arc<MediaClient> {
        self.connect_sized(room, name, perms, opts, None).await
    }

    /// [`Harness::connect`], telling the SFU the video's capture size.
    async fn connect_sized(
        &self,
        room: &str,
        name: &str,
        perms: Permissions,
        opts: Option<MediaOptions>,
        size: Option<(u32, u32)>,
    ) -> Arc<MediaClient> {
        let client = Arc::new(
            MediaClient::new(opts.clone().unwrap_or_default())
                .await
                .unwrap(),
        );
        self.clients
            .lock()
            .unwrap()
            .insert(name.to_owned(), client.clone());
        let info = self
            .sfu
            .join(room.into(), name.into(), perms)
            .await
            .expect("join");
        let answer = client
            .accept_subscriber_offer(&info.subscriber_offer)
            .unwrap();
        self.sfu
            .subscriber_answer(room.into(), name.into(), answer)
            .await
            .expect("answer");
        if opts.is_some() {
            let offer = client.publish_offer().unwrap();
            let mut offer = PublishOffer::new(offer);
            if let (Some((w, h)), Some(mid)) = (size, client.video_mid()) {
                offer = offer.with_size(&mid, w, h);
            }
            let answer = self
                .sfu
                .publish_offer(room.into(), name.into(), offer)
                .await
                .expect("publish");
            client.accept_publish_answer(&answer).unwrap();
        }
        client
    }

    fn events(&self) -> Vec<MediaEvent> {
        self.log.lock().unwrap().clone()
    }

    fn left(&self, who: &str) -> Option<LeaveReason> {
        self.events().iter().find_map(|e| match e {
            MediaEvent::ParticipantLeft {
                participant,
                reason,
                ..
            } if participant.as_str() == who => Some(*reason),
            _ => None,
        })
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + WAIT;
    while !f() {
        if tokio::time::Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_counts(sfu: &Sfu, what: &str, f: impl Fn(&Counts) -> bool) -> Counts {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let c = sfu.counts().await.unwrap();
        if f(&c) {
            return c;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out waiting for {what}: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A received track of `from` of `kind`, found through the TrackPublished
/// events (the way a real client maps track ids to participants).
fn track_of(h: &Harness, c: &MediaClient, from: &str, kind: &str) -> Option<TrackRx> {
    let ids: Vec<String> = h
        .events()
        .iter()
        .filter_map(|e| match e {
            MediaEvent::TrackPublished { track, .. } if track.participant.as_str() == from => {
                Some(track.id.to_string())
            }
            _ => None,
        })
        .collect();
    c.stats()
        .tracks
        .iter()
        .find(|(id, t)| ids.contains(id) && t.kind == kind && t.active)
        .map(|(_, t)| t.clone())
}

fn frames(h: &Harness, c: &MediaClient, from: &str, kind: &str) -> u64 {
    track_of(h, c, from, kind).map(|t| t.frames).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_three_participants_publish_and_subscribe() {
    let h = harness(config()).await;
    let a = h
        .connect("r", "alice", Permissions::ALL, Some(Default::default()))
        .await;
    let b = h
        .connect("r", "bob", Permissions::ALL, Some(Default::default()))
        .await;
    wait_for("bob gets alice's audio and video", || {
        frames(&h, &b, "alice", "audio") > 20 && frames(&h, &b, "alice", "video") > 10
    })
    .await;
    wait_for("alice gets bob's audio and video", || {
        frames(&h, &a, "bob", "audio") > 20 && frames(&h, &a, "bob", "video") > 10
    })
    .await;
    assert!(a.stats().publisher_connected && a.stats().subscriber_connected);
    let kf = track_of(&h, &b, "alice", "video").unwrap().keyframes;
    assert!(kf >= 1, "video starts with a keyframe");

    // A third joins: both others get its tracks by renegotiation, it gets theirs.
    let c = h
        .connect("r", "carol", Permissions::ALL, Some(Default::default()))
        .await;
    wait_for("carol receives alice and bob", || {
        frames(&h, &c, "alice", "video") > 5 && frames(&h, &c, "bob", "video") > 5
    })
    .await;
    wait_for("alice and bob receive carol", || {
        frames(&h, &a, "carol", "audio") > 10 && frames(&h, &b, "carol", "video") > 5
    })
    .await;
    assert_eq!(c.stats().active_tracks(), 4);

    // One leaves: its tracks are removed for the others.
    h.sfu.leave("r".into(), "bob".into()).await.unwrap();
    wait_for("bob's tracks gone for alice and carol", || {
        a.stats().active_tracks() == 2 && c.stats().active_tracks() == 2
    })
    .await;
    assert_eq!(h.left("bob"), Some(LeaveReason::Left));
    let unpub = h
        .events()
        .iter()
        .filter(|e| matches!(e, MediaEvent::TrackUnpublished { participant, .. } if participant.as_str() == "bob"))
        .count();
    assert_eq!(unpub, 2);
    // Media keeps flowing between the remaining two.
    let before = frames(&h, &a, "carol", "audio");
    wait_for("alice still hears carol", || {
        frames(&h, &a, "carol", "audio") > before + 10
    })
    .await;

    // Connection and stats events.
    wait_for("stats for alice", || {
        h.events().iter().any(|e| {
            matches!(e, MediaEvent::Stats { participant, stats, .. }
                if participant.as_str() == "alice" && stats.bitrate_in > 0)
        })
    })
    .await;
    assert!(h.events().iter().any(|e| matches!(e, MediaEvent::ParticipantConnected { participant, .. } if participant.as_str() == "carol")));
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, MediaEvent::Quality { .. }))
    );

    for p in ["alice", "carol"] {
        h.sfu.leave("r".into(), p.into()).await.unwrap();
    }
    let counts = wait_counts(&h.sfu, "cleanup", |c| c.peers == 0).await;
    assert_eq!((counts.rooms, counts.participants), (0, 0));
    println!(
        "forwarded {} frames, {} datagrams out",
        counts.frames_forwarded, counts.datagrams_out
    );
}

async fn track_id(h: &Harness, from: &str, kind: TrackKind) -> TrackId {
    wait_for("track published", || {
        h.events().iter().any(|e| {
            matches!(e, MediaEvent::TrackPublished { track, .. }
                if track.participant.as_str() == from && track.kind == kind)
        })
    })
    .await;
    h.events()
        .iter()
        .find_map(|e| match e {
            MediaEvent::TrackPublished { track, .. }
                if track.participant.as_str() == from && track.kind == kind =>
            {
                Some(track.id.clone())
            }
            _ => None,
        })
        .expect("track published")
}

fn layers(h: &Harness, c: &MediaClient, from: &str) -> [u64; 3] {
    track_of(h, c, from, "video")
        .map(|t| t.layers)
        .unwrap_or_default()
}

fn kf_requests(c: &MediaClient, rid: &str) -> u64 {
    c.stats().keyframe_requests.get(rid).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layer_switching() {
    let h = harness(config()).await;
    let opts = MediaOptions {
        simulcast: true,
        ..Default::default()
    };
    let a = h.connect("r", "alice", Permissions::ALL, Some(opts)).await;
    let b = h
        .connect("r", "bob", Permissions::SUBSCRIBE_ONLY, None)
        .await;
    let video = track_id(&h, "alice", TrackKind::Video).await;
    let info = h.sfu.tracks("r".into()).await.unwrap();
    let t = info.iter().find(|t| t.id == video).unwrap();
    assert_eq!(t.rids, vec!["q", "h", "f"]);

    // Default: the highest layer.
    wait_for("bob gets layer f", || layers(&h, &b, "alice")[2] > 10).await;

    for (layer, idx, rid) in [
        (Layer::Low, 0, "q"),
        (Layer::High, 2, "f"),
        (Layer::Medium, 1, "h"),
    ] {
        let kf_before = kf_requests(&a, rid);
        let start = layers(&h, &b, "alice");
        h.sfu
            .set_subscription(
                "r".into(),
                "bob".into(),
                video.clone(),
                SubscriptionPrefs {
                    max_layer: layer,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        wait_for("the new layer flows", || {
            layers(&h, &b, "alice")[idx] > start[idx] + 5
        })
        .await;
        assert!(
            kf_requests(&a, rid) > kf_before,
            "keyframe requested on switch to {rid}"
        );
        // From now on only the chosen layer arrives.
        let snap = layers(&h, &b, "alice");
        wait_for("more frames of the layer", || {
            layers(&h, &b, "alice")[idx] > snap[idx] + 10
        })
        .await;
        let now = layers(&h, &b, "alice");
        for other in (0..3).filter(|i| *i != idx) {
            assert_eq!(
                now[other], snap[other],
                "layer {other} still forwarded after switch to {rid}"
            );
        }
    }
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_pause_and_keyframe_forwarding() {
    let h = harness(config()).await;
    let a = h
        .connect("r", "alice", Permissions::ALL, Some(Default::default()))
        .await;
    let b = h
        .connect("r", "bob", Permissions::SUBSCRIBE_ONLY, None)
        .await;
    wait_for("media flows", || {
        frames(&h, &b, "alice", "audio") > 10 && frames(&h, &b, "alice", "video") > 5
    })
    .await;
    let audio = track_id(&h, "alice", TrackKind::Audio).await;
    let video = track_id(&h, "alice", TrackKind::Video).await;
    let offers = b.stats().offers_answered;

    for track in [&audio, &video] {
        h.sfu
            .set_muted("r".into(), "alice".into(), track.clone(), true)
            .await
            .unwrap();
    }
    // Let frames in flight land, then nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fa, fv) = (
        frames(&h, &b, "alice", "audio"),
        frames(&h, &b, "alice", "video"),
    );
    let sent = a.stats().frames_sent;
    wait_for("alice keeps sending", || a.stats().frames_sent > sent + 30).await;
    assert_eq!(
        frames(&h, &b, "alice", "audio"),
        fa,
        "muted audio forwarded"
    );
    assert_eq!(
        frames(&h, &b, "alice", "video"),
        fv,
        "muted video forwarded"
    );
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, MediaEvent::TrackMuted { muted: true, .. }))
    );

    let kf = track_of(&h, &b, "alice", "video").unwrap().keyframes;
    for track in [&audio, &video] {
        h.sfu
            .set_muted("r".into(), "alice".into(), track.clone(), false)
            .await
            .unwrap();
    }
    wait_for("unmuted media flows again", || {
        frames(&h, &b, "alice", "audio") > fa + 10 && frames(&h, &b, "alice", "video") > fv + 5
    })
    .await;
    assert!(
        track_of(&h, &b, "alice", "video").unwrap().keyframes > kf,
        "video resumes on a keyframe"
    );
    assert_eq!(b.stats().offers_answered, offers, "no renegotiation");

    // Pausing video for one subscriber stops it; audio goes on.
    let paused = SubscriptionPrefs {
        paused: true,
        ..Default::default()
    };
    h.sfu
        .set_subscription("r".into(), "bob".into(), video.clone(), paused)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fa, fv) = (
        frames(&h, &b, "alice", "audio"),
        frames(&h, &b, "alice", "video"),
    );
    wait_for("audio continues", || {
        frames(&h, &b, "alice", "audio") > fa + 20
    })
    .await;
    assert_eq!(
        frames(&h, &b, "alice", "video"),
        fv,
        "paused video forwarded"
    );
    h.sfu
        .set_subscription("r".into(), "bob".into(), video.clone(), Default::default())
        .await
        .unwrap();
    wait_for("video resumes", || {
        frames(&h, &b, "alice", "video") > fv + 5
    })
    .await;

    // A subscriber's PLI reaches the publisher.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = kf_requests(&a, "");
    assert!(b.request_keyframe(video.as_str()));
    wait_for("PLI forwarded", || kf_requests(&a, "") > before).await;

    // Active speaker: alice's audio level (-30 dBov) is speech.
    wait_for("alice is the active speaker", || {
        h.events().iter().any(|e| {
            matches!(e, MediaEvent::ActiveSpeakers { speakers, .. }
            if speakers.first().is_some_and(|s| s.0.as_str() == "alice"))
        })
    })
    .await;
    assert_eq!(a.stats().offers_answered, 1);
}

/// Refusals leave the participant usable; nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused() {
    let cfg = config()
        .with_max_participants(2)
        .with_max_tracks_per_participant(1)
        .with_max_sdp_bytes(16 * 1024);
    let h = harness(cfg).await;
    let sfu = &h.sfu;
    let no_video = Permissions {
        publish_video: false,
        ..Permissions::ALL
    };
    let a = h.connect("r", "alice", no_video, None).await;
    let offer = a.publish_offer().unwrap(); // audio + video
    let publish =
        |sdp: String| sfu.publish_offer("r".into(), "alice".into(), PublishOffer::new(sdp));

    // Malformed, hostile, oversized.
    for bad in [
        String::new(),
        "garbage".to_string(),
        "v=0\r\n".to_string(),
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".to_string(),
        format!("{offer}{}", "a=x-padding:0123456789\r\n".repeat(2000)),
        offer.replace("a=ice-ufrag", "a=x-ufrag"),
        offer.replace("a=ice-pwd", "a=x-pwd"),
        offer.replace("a=fingerprint", "a=x-fingerprint"),
        offer.replace(
            "a=mid:",
            "a=mid:this-mid-is-much-too-long-for-an-msid-token-",
        ),
        offer.replace("m=", "m=\u{0}\u{7f}"),
    ] {
        let r = publish(bad.clone()).await;
        assert!(
            matches!(r, Err(MediaError::BadSdp(_))),
            "{r:?} for {:.60?}",
            bad
        );
    }

    // Only unsupported codecs.
    let audio_mid = a.audio_mid().unwrap();
    let video_mid = a.video_mid().unwrap();
    let mut unsupported = String::new();
    for line in deactivate(&offer, &video_mid).lines() {
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let pt = rest.split(' ').next().unwrap();
            unsupported.push_str(&format!("a=rtpmap:{pt} X-UNKNOWN/90000\r\n"));
        } else {
            unsupported.push_str(line);
            unsupported.push_str("\r\n");
        }
    }
    assert_eq!(
        publish(unsupported).await,
        Err(MediaError::UnsupportedCodecs)
    );

    // Two tracks with a limit of one.
    assert_eq!(publish(offer.clone()).await, Err(MediaError::TooManyTracks));

    // A kind the permissions forbid (only the video m-line kept active).
    let only_video = deactivate(&offer, &audio_mid);
    assert_eq!(
        publish(only_video.clone()).await,
        Err(MediaError::NotPermitted {
            kind: PermissionKind::Video
        })
    );
    let screen = PublishOffer::new(only_video).with_source(&video_mid, TrackSource::Screen);
    let no_screen = Permissions {
        publish_screen: false,
        ..Permissions::ALL
    };
    let _s = h.connect("r", "sam", no_screen, None).await;
    assert_eq!(
        sfu.publish_offer("r".into(), "sam".into(), screen).await,
        Err(MediaError::NotPermitted {
            kind: PermissionKind::Screen
        })
    );

    // Room at capacity (alice and sam are in it).
    assert_eq!(
        sfu.join("r".into(), "carol".into(), Permissions::ALL)
            .await
            .err(),
        Some(MediaError::RoomFull)
    );
    assert_eq!(
        sfu.join("r".into(), "alice".into(), Permissions::ALL)
            .await
            .err(),
        Some(MediaError::AlreadyJoined)
    );
    // Unknown participant, answer without an offer, bad answers.
    assert_eq!(
        sfu.leave("r".into(), "nobody".into()).await,
        Err(MediaError::UnknownParticipant)
    );
    assert_eq!(
        sfu.subscriber_answer("r".into(), "alice".into(), offer.clone())
            .await,
        Err(MediaError::NoOfferPending)
    );
    assert_eq!(
        sfu.set_muted("r".into(), "alice".into(), "TR-0-0".into(), true)
            .await,
        Err(MediaError::UnknownTrack)
    );

    // After all that, a valid audio-only publish still works.
    let audio_only = deactivate(&offer, &video_mid);
    let answer = publish(audio_only).await.expect("valid offer accepted");
    a.accept_publish_answer(&answer).unwrap();
    let counts = sfu.counts().await.unwrap();
    assert_eq!((counts.participants, counts.peers), (2, 3));
}

/// Set the m-line with `mid` to inactive.
fn deactivate(sdp: &str, mid: &str) -> String {
    let mut out = String::new();
    let sections: Vec<&str> = sdp.split("m=").collect();
    for (i, sec) in sections.iter().enumerate() {
        if i > 0 {
            out.push_str("m=");
        }
        if sec.contains(&format!("a=mid:{mid}\r\n")) {
            out.push_str(
                &sec.replace("a=sendonly", "a=inactive")
                    .replace("a=sendrecv", "a=inactive"),
            );
        } else {
            out.push_str(sec);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_never_completing_removes_the_participant() {
    let cfg = config().with_connect_timeout(Duration::from_millis(800));
    let h = harness(cfg).await;
    let a = h
        .connect("r", "alice", Permissions::ALL, Some(Default::default()))
        .await;
    wait_for("alice connected", || a.stats().publisher_connected).await;
    // A participant that never answers its offer.
    h.sfu
        .join("r".into(), "ghost".into(), Permissions::ALL)
        .await
        .unwrap();
    wait_for("ghost removed", || h.left("ghost").is_some()).await;
    assert_eq!(h.left("ghost"), Some(LeaveReason::IceTimeout));
    // A publisher peer that never connects: the answer is never applied.
    let c = MediaClient::new(Default::default()).await.unwrap();
    let info = h
        .sfu
        .join("r".into(), "carol".into(), Permissions::ALL)
        .await
        .unwrap();
    let ans = c.accept_subscriber_offer(&info.subscriber_offer).unwrap();
    h.sfu
        .subscriber_answer("r".into(), "carol".into(), ans)
        .await
        .unwrap();
    let offer = c.publish_offer().unwrap();
    h.sfu
        .publish_offer("r".into(), "carol".into(), PublishOffer::new(offer))
        .await
        .unwrap();
    wait_for("carol removed", || h.left("carol").is_some()).await;
    assert_eq!(h.left("carol"), Some(LeaveReason::IceTimeout));
    let c = wait_counts(&h.sfu, "only alice left", |c| c.participants == 1).await;
    assert_eq!(c.peers, 2);
    assert!(
        h.sfu
            .tracks("r".into())
            .await
            .unwrap()
            .iter()
            .all(|t| t.participant.as_str() == "alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_client_is_removed() {
    let cfg = config().with_idle_timeout(Duration::from_millis(1500));
    let h = harness(cfg).await;
    let a = h
        .connect("r", "alice", Permissions::ALL, Some(Default::default()))
        .await;
    let b = h
        .connect("r", "bob", Permissions::ALL, Some(Default::default()))
        .await;
    wait_for("media both ways", || {
        frames(&h, &a, "bob", "video") > 5 && frames(&h, &b, "alice", "video") > 5
    })
    .await;
    // Bob disappears without a word.
    h.clients.lock().unwrap().remove("bob");
    drop(b);
    wait_for("bob removed", || h.left("bob").is_some()).await;
    assert_eq!(h.left("bob"), Some(LeaveReason::Vanished));
    wait_for("bob's tracks gone for alice", || {
        a.stats().active_tracks() == 0
    })
    .await;
    let c = wait_counts(&h.sfu, "bob's peers gone", |c| c.participants == 1).await;
    assert_eq!(c.peers, 2);
}

/// Random datagrams and mutated SDP: errors, never a panic; the node keeps
/// forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_datagrams_and_sdp() {
    use rand::{Rng, SeedableRng};
    let h = harness(config()).await;
    let a = h
        .connect("r", "alice", Permissions::ALL, Some(Default::default()))
        .await;
    let b = h.connect("r", "bob", Permissions::ALL, None).await;
    wait_for("media flows", || frames(&h, &b, "alice", "video") > 5).await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = h.sfu.local_addr();
    for i in 0..3000u32 {
        let len = rng.random_range(0..1400);
        let mut d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Steer the first byte into each demux range (STUN, DTLS, RTP/RTCP).
        if let Some(f) = d.first_mut() {
            *f = [0u8, 1, 20, 23, 128, 144, 200, 255][(i % 8) as usize];
        }
        let _ = sock.send_to(&d, target).await;
        // Pace the burst so the kernel's receive buffer does not overflow
        // (dropped there, a datagram never reaches the SFU's counters).
        if i % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    // The participants' own addresses sending garbage too.
    let offer = MediaClient::new(Default::default())
        .await
        .unwrap()
        .publish_offer()
        .unwrap();
    let lines: Vec<&str> = offer.lines().collect();
    for round in 0..300 {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(0..l.len());
            match rng.random_range(0..4) {
                0 => {
                    l.remove(i);
                }
                1 => {
                    let dup = l[i].clone();
                    l.insert(i, dup);
                }
                2 => {
                    let mut bytes = l[i].clone().into_bytes();
                    if !bytes.is_empty() {
                        let j = rng.random_range(0..bytes.len());
                        bytes[j] = rng.random_range(0x20..0x7f);
                    }
                    l[i] = String::from_utf8_lossy(&bytes).into_owned();
                }
                _ => {
                    let s: String = (0..rng.random_range(0..80))
                        .map(|_| rng.random_range(0x20u8..0x7f) as char)
                        .collect();
                    l.insert(i, s);
                }
            }
        }
        let sdp = l.join("\r\n") + "\r\n";
        let who = format!("f{round}");
        if h.sfu
            .join("fuzz".into(), who.as_str().into(), Permissions::ALL)
            .await
            .is_ok()
        {
            let _ = h
                .sfu
                .publish_offer(
                    "fuzz".into(),
                    who.as_str().into(),
                    PublishOffer::new(sdp.clone()),
                )
                .await;
            let _ = h
                .sfu
                .subscriber_answer("fuzz".into(), who.as_str().into(), sdp)
                .await;
            let _ = h.sfu.leave("fuzz".into(), who.as_str().into()).await;
        }
    }
    let random: String = (0..2000).map(|_| rng.random::<char>()).collect();
    assert!(
        h.sfu
            .publish_offer("r".into(), "bob".into(), PublishOffer::new(random))
            .await
            .is_err()
    );
    let c = h.sfu.counts().await.unwrap();
    assert!(c.datagrams_dropped >= 2500, "{c:?}");
    assert_eq!(c.participants, 2);
    let f = frames(&h, &b, "alice", "video");
    wait_for("still forwarding", || {
        frames(&h, &b, "alice", "video") > f + 5
    })
    .await;
    drop(a);
}

/// Waits until `n` more frames of layer `idx` arrive while no other layer
/// does (retrying while a switch settles); panics with the counts if that
/// never happens within the wait.
async fn settles_on_layer(h: &Harness, c: &MediaClient, from: &str, idx: usize, n: u64) {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = layers(h, c, from);
        while layers(h, c, from)[idx] < snap[idx] + n && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let now = layers(h, c, from);
        let others_still = (0..3).any(|i| i != idx && now[i] != snap[i]);
        if now[idx] >= snap[idx] + n && !others_still {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "never only layer {idx}: {snap:?} -> {now:?}"
        );
    }
}

fn simulcast_opts() -> MediaOptions {
    MediaOptions {
        simulcast: true,
        ..Default::default()
    }
}

/// A subscriber displaying the video small gets the layer that is just big
/// enough (layers are full, 1/2 and 1/4 of the 1280x720 capture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_follows_the_requested_size() {
    let h = harness(config().with_bandwidth_layer_selection(false)).await;
    let a = h
        .connect_sized(
            "r",
            "alice",
            Permissions::ALL,
            Some(simulcast_opts()),
            Some((1280, 720)),
        )
        .await;
    let b = h
        .connect("r", "bob", Permissions::SUBSCRIBE_ONLY, None)
        .await;
    let video = track_id(&h, "alice", TrackKind::Video).await;
    let info = h.sfu.tracks("r".into()).await.unwrap();
    assert_eq!(
        info.iter().find(|t| t.id == video).unwrap().rids,
        vec!["q", "h", "f"]
    );
    settles_on_layer(&h, &b, "alice", 2, 10).await;
    for (size, idx, rid) in [
        ((320, 180), 0, "q"),
        ((640, 360), 1, "h"),
        ((200, 100), 0, "q"),
        ((1280, 720), 2, "f"),
    ] {
        let kf_before = kf_requests(&a, rid);
        h.sfu
            .set_subscription(
                "r".into(),
                "bob".into(),
                video.clone(),
                SubscriptionPrefs {
                    max_size: Some(size),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        settles_on_layer(&h, &b, "alice", idx, 10).await;
        assert!(
            kf_requests(&a, rid) > kf_before,
            "keyframe requested on the switch to {rid} for {size:?}"
        );
    }
    // max_layer still caps a big size.
    h.sfu
        .set_subscription(
            "r".into(),
            "bob".into(),
            video.clone(),
            SubscriptionPrefs {
                max_size: Some((1280, 720)),
                max_layer: Layer::Medium,
                paused: false,
            },
        )
        .await
        .unwrap();
    settles_on_layer(&h, &b, "alice", 1, 10).await;
}

/// A UDP relay for one client that limits the SFU → client direction to
/// `bps` (serialised at that rate behind a 48 KiB drop-tail queue): a slow
/// downlink. Returns the address the client must use for the SFU.
async fn slow_downlink(sfu: std::net::SocketAddr, bps: u64) -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let client: Arc<Mutex<Option<std::net::SocketAddr>>> = Default::default();
    let queued = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let (f, b, c) = (front.clone(), back.clone(), client.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            let _ = b.send_to(&buf[..n], sfu).await;
        }
    });
    let q = queued.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            if q.load(Ordering::Relaxed) + n <= 48 * 1024 {
                q.fetch_add(n, Ordering::Relaxed);
                let _ = tx.send(buf[..n].to_vec());
            }
        }
    });
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now();
        while let Some(d) = rx.recv().await {
            next = next.max(tokio::time::Instant::now())
                + Duration::from_nanos(d.len() as u64 * 8 * 1_000_000_000 / bps);
            tokio::time::sleep_until(next).await;
            queued.fetch_sub(d.len(), Ordering::Relaxed);
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&d, to).await;
            }
        }
    });
    addr
}

/// The subscriber's bandwidth estimate (TWCC) picks the layer: behind a
/// 1 Mbit/s downlink, a subscriber that asks for the top layer
/// (f ≈ 1.4 Mbit/s) settles on a lower one once the estimate reflects the
/// link, and keyframes of it were requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_follows_the_bandwidth_estimate() {
    let h = harness(config()).await;
    let opts = MediaOptions {
        simulcast: true,
        fps: 30,
        video_frame_bytes: 6000,
        audio: false,
        ..Default::default()
    };
    let a = h.connect("r", "alice", Permissions::ALL, Some(opts)).await;
    let video = track_id(&h, "alice", TrackKind::Video).await;
    // Bob reaches the SFU only through the slow link: the SFU's candidate
    // in the offer points at the relay.
    let relay = slow_downlink(h.sfu.local_addr(), 1_000_000).await;
    let b = Arc::new(MediaClient::new(MediaOptions::default()).await.unwrap());
    h.clients.lock().unwrap().insert("bob".into(), b.clone());
    let info = h
        .sfu
        .join("r".into(), "bob".into(), Permissions::SUBSCRIBE_ONLY)
        .await
        .unwrap();
    let sfu_port = format!(" {} typ host", h.sfu.local_addr().port());
    assert!(info.subscriber_offer.contains(&sfu_port));
    let offer = info
        .subscriber_offer
        .replace(&sfu_port, &format!(" {} typ host", relay.port()));
    let answer = b.accept_subscriber_offer(&offer).unwrap();
    h.sfu
        .subscriber_answer("r".into(), "bob".into(), answer)
        .await
        .unwrap();
    wait_for("video reaches bob", || frames(&h, &b, "alice", "video") > 5).await;
    // Eventually a window of frames without the top layer.
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let snap = layers(&h, &b, "alice");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = layers(&h, &b, "alice");
        if now[2] == snap[2] && now[0] + now[1] >= snap[0] + snap[1] + 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "still on the top layer behind 1 Mbit/s: {snap:?} -> {now:?}"
        );
    }
    assert!(
        kf_requests(&a, "h") + kf_requests(&a, "q") > 0,
        "keyframe requested for the lower layer"
    );
    let estimate = h.events().iter().rev().find_map(|e| match e {
        MediaEvent::Stats {
            participant, stats, ..
        } if participant.as_str() == "bob" => stats.bandwidth_estimate,
        _ => None,
    });
    println!("bob's estimate behind 1 Mbit/s: {estimate:?}, video {video}");
}

/// A subscriber of three simulcast videos behind a 1.2 Mbit/s downlink:
/// the SFU splits its bandwidth estimate over the three tracks instead of
/// comparing every track with the whole estimate (which sent three top
/// layers, 2.2 Mbit/s, or, once the estimate fell, three middle layers,
/// still more than it). Eventually all three videos flow, at least one on a
/// layer above the lowest, and the nominal bitrates of the layers they
/// arrive on add up to no more than the estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_videos_share_the_bandwidth_estimate() {
    // Layers q/h/f are 1/6, 4/9 and all of the frame: 0.12/0.32/0.72 Mbit/s.
    const FRAME_BYTES: usize = 3000;
    const FPS: u64 = 30;
    let nominal = |layer: usize| -> u64 {
        let bytes = FRAME_BYTES as u64 * [1, 4, 9][layer] / [6, 9, 9][layer];
        bytes * 8 * FPS
    };
    let h = harness(config()).await;
    let opts = MediaOptions {
        simulcast: true,
        fps: FPS as u32,
        video_frame_bytes: FRAME_BYTES,
        audio: false,
        ..Default::default()
    };
    let publishers = ["alice", "carol", "dave"];
    let mut pubs = Vec::new();
    for name in publishers {
        pubs.push(
            h.connect("r", name, Permissions::ALL, Some(opts.clone()))
                .await,
        );
        track_id(&h, name, TrackKind::Video).await;
    }
    let relay = slow_downlink(h.sfu.local_addr(), 1_200_000).await;
    let b = Arc::new(MediaClient::new(MediaOptions::default()).await.unwrap());
    h.clients.lock().unwrap().insert("bob".into(), b.clone());
    let info = h
        .sfu
        .join("r".into(), "bob".into(), Permissions::SUBSCRIBE_ONLY)
        .await
        .unwrap();
    let sfu_port = format!(" {} typ host", h.sfu.local_addr().port());
    let offer = info
        .subscriber_offer
        .replace(&sfu_port, &format!(" {} typ host", relay.port()));
    let answer = b.accept_subscriber_offer(&offer).unwrap();
    h.sfu
        .subscriber_answer("r".into(), "bob".into(), answer)
        .await
        .unwrap();
    wait_for("video of all three reaches bob", || {
        publishers.iter().all(|p| frames(&h, &b, p, "video") > 5)
    })
    .await;
    let estimate = || {
        h.events().iter().rev().find_map(|e| match e {
            MediaEvent::Stats {
                participant, stats, ..
            } if participant.as_str() == "bob" => stats.bandwidth_estimate,
            _ => None,
        })
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let snap: Vec<[u64; 3]> = publishers.iter().map(|p| layers(&h, &b, p)).collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now: Vec<[u64; 3]> = publishers.iter().map(|p| layers(&h, &b, p)).collect();
        // Per video: frames in the window and the highest layer seen.
        let window: Vec<(u64, Option<usize>)> = snap
            .iter()
            .zip(&now)
            .map(|(s, n)| {
                let got: Vec<u64> = (0..3).map(|i| n[i] - s[i]).collect();
                (got.iter().sum(), (0..3).rev().find(|i| got[*i] > 0))
            })
            .collect();
        let all_flow = window.iter().all(|(f, _)| *f >= 10);
        let sum: u64 = window.iter().filter_map(|(_, top)| top.map(nominal)).sum();
        let above_lowest = window.iter().any(|(_, top)| top.is_some_and(|l| l > 0));
        let est = estimate();
        if all_flow && above_lowest && est.is_some_and(|e| sum <= e) {
            println!("bob: layers {window:?} = {sum} bit/s within the estimate {est:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "layers {window:?} ({sum} bit/s) never within bob's estimate {est:?}"
        );
    }
    drop(pubs);
}

/// Many PLIs from subscribers within `keyframe_min_interval` reach the
/// publisher as one keyframe request; after the interval, the next one
/// goes through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_plis_are_rate_limited() {
    let interval = Duration::from_secs(3);
    let h = harness(config().with_keyframe_min_interval(interval)).await;
    let a = h
        .connect("r", "alice", Permissions::ALL, Some(Default::default()))
        .await;
    let b = h
        .connect("r", "bob", Permissions::SUBSCRIBE_ONLY, None)
        .await;
    let c = h
        .connect("r", "carol", Permissions::SUBSCRIBE_ONLY, None)
        .await;
    wait_for("media flows to both", || {
        frames(&h, &b, "alice", "video") > 5 && frames(&h, &c, "alice", "video") > 5
    })
    .await;
    let video = track_id(&h, "alice", TrackKind::Video).await;
    // Past any request made while setting up.
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    let before = kf_requests(&a, "");
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        assert!(b.request_keyframe(video.as_str()));
        assert!(c.request_keyframe(video.as_str()));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    wait_for("a PLI reaches alice", || kf_requests(&a, "") > before).await;
    // Wait out most of the interval: still only one.
    let rest = interval.saturating_sub(started.elapsed() + Duration::from_millis(500));
    tokio::time::sleep(rest).await;
    assert_eq!(
        kf_requests(&a, ""),
        before + 1,
        "20 PLIs within {interval:?} must reach the publisher once"
    );
    // After the interval a new PLI goes through.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(b.request_keyframe(video.as_str()));
    wait_for("the next PLI after the interval", || {
        kf_requests(&a, "") > before + 1
    })
    .await;
}

/// VP9 and H.264 video are forwarded as published, keyframes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_and_h264_are_forwarded() {
    let h = harness(config()).await;
    for (room, codec, name) in [
        ("vp9", VideoCodec::Vp9, "vp9"),
        ("h264", VideoCodec::H264, "h264"),
    ] {
        let opts = MediaOptions {
            video_codec: codec,
            ..Default::default()
        };
        let a = h
            .connect(room, &format!("{room}-pub"), Permissions::ALL, Some(opts))
            .await;
        let b = h
            .connect(
                room,
                &format!("{room}-sub"),
                Permissions::SUBSCRIBE_ONLY,
                None,
            )
            .await;
        let from = format!("{room}-pub");
        wait_for("video and audio arrive", || {
            frames(&h, &b, &from, "video") > 10 && frames(&h, &b, &from, "audio") > 10
        })
        .await;
        let t = track_of(&h, &b, &from, "video").unwrap();
        assert_eq!(t.codec, name, "received codec");
        assert!(t.keyframes >= 1, "{name}: the first frame is a keyframe");
        assert_eq!(t.layers[2], t.frames, "{name}: every frame intact");
        // A PLI yields another keyframe through the SFU.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let video = track_id(&h, &from, TrackKind::Video).await;
        assert!(b.request_keyframe(video.as_str()));
        wait_for("a new keyframe", || {
            track_of(&h, &b, &from, "video").unwrap().keyframes > t.keyframes
        })
        .await;
        drop(a);
    }
}
