//! Identifiers, requests and events exchanged with the signaling layer.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wrap a string.
            pub fn new(v: impl Into<String>) -> Self {
                Self(v.into())
            }
            /// The string form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(v: &str) -> Self {
                Self(v.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(v: String) -> Self {
                Self(v)
            }
        }
    };
}

string_id!(
    /// A room on this media node (chosen by the signaling layer).
    RoomId
);
string_id!(
    /// A participant of a room (chosen by the signaling layer, unique in its room).
    ParticipantId
);
string_id!(
    /// A published track, assigned by the SFU: `TR-<n>-<publisher mid>`
    /// (only RFC 8830 msid token characters, at most 64).
    ///
    /// In every subscriber offer the track's m-line carries
    /// `a=msid:<publisher participant id> <track id>`, so a client maps the
    /// tracks it receives to [`MediaEvent::TrackPublished`] (which names the
    /// participant; the msid stream id is the participant id with
    /// non-token characters dropped, a hint only).
    TrackId
);

/// What a participant may do, from its grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// May publish microphone audio.
    pub publish_audio: bool,
    /// May publish camera video.
    pub publish_video: bool,
    /// May publish a screen share (video tagged [`TrackSource::Screen`]).
    pub publish_screen: bool,
    /// Receives the other participants' tracks.
    pub subscribe: bool,
}

impl Permissions {
    /// Everything allowed.
    pub const ALL: Permissions = Permissions {
        publish_audio: true,
        publish_video: true,
        publish_screen: true,
        subscribe: true,
    };
    /// Receive only.
    pub const SUBSCRIBE_ONLY: Permissions = Permissions {
        publish_audio: false,
        publish_video: false,
        publish_screen: false,
        subscribe: true,
    };
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Audio (Opus).
    Audio,
    /// Video (VP8, VP9, H.264).
    Video,
}

/// Where a track comes from; decides which permission publishing it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    /// Audio from a microphone (the default for audio m-lines).
    Microphone,
    /// Video from a camera (the default for video m-lines).
    Camera,
    /// A screen share (needs [`Permissions::publish_screen`]).
    Screen,
}

/// A simulcast layer, lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// Lowest resolution (rid `q`, or the first of three).
    Low,
    /// Middle resolution (rid `h`).
    Medium,
    /// Full resolution (rid `f`).
    High,
}

impl Layer {
    /// 0, 1 or 2.
    pub fn index(self) -> usize {
        match self {
            Layer::Low => 0,
            Layer::Medium => 1,
            Layer::High => 2,
        }
    }
}

/// A publisher's SDP offer plus what the SDP cannot say.
#[derive(Debug, Clone, Default)]
pub struct PublishOffer {
    /// The SDP offer text from the client's publisher peer connection.
    pub sdp: String,
    /// Source of a track by its m-line `mid`; missing mids default to
    /// [`TrackSource::Microphone`] (audio) or [`TrackSource::Camera`] (video).
    pub sources: HashMap<String, TrackSource>,
    /// Full-resolution size of a video track by `mid`, if the client says;
    /// simulcast layers are taken as 1, 1/2 and 1/4 of it. Used to pick a
    /// layer from [`SubscriptionPrefs::max_size`].
    pub sizes: HashMap<String, (u32, u32)>,
}

impl PublishOffer {
    /// An offer with default sources.
    pub fn new(sdp: impl Into<String>) -> Self {
        PublishOffer {
            sdp: sdp.into(),
            ..Default::default()
        }
    }

    /// Tag the m-line `mid` with a source.
    pub fn with_source(mut self, mid: &str, source: TrackSource) -> Self {
        self.sources.insert(mid.to_owned(), source);
        self
    }

    /// Give the full-resolution size of the video m-line `mid`.
    pub fn with_size(mut self, mid: &str, width: u32, height: u32) -> Self {
        self.sizes.insert(mid.to_owned(), (width, height));
        self
    }
}

/// How one subscriber wants to receive one video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionPrefs {
    /// Highest simulcast layer wanted (default [`Layer::High`]).
    pub max_layer: Layer,
    /// Size the track is displayed at; picks the smallest layer at least this
    /// big when the publisher told its size ([`PublishOffer::sizes`]).
    pub max_size: Option<(u32, u32)>,
    /// Not displayed: forward nothing (audio tracks ignore this).
    pub paused: bool,
}

impl Default for SubscriptionPrefs {
    fn default() -> Self {
        SubscriptionPrefs {
            max_layer: Layer::High,
            max_size: None,
            paused: false,
        }
    }
}

/// A published track as the others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// SFU-assigned id.
    pub id: TrackId,
    /// The publishing participant.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Microphone, camera or screen.
    pub source: TrackSource,
    /// Simulcast rids offered by the publisher, lowest layer first (empty:
    /// no simulcast).
    pub rids: Vec<String>,
    /// Muted by [`crate::Sfu::set_muted`].
    pub muted: bool,
}

/// What [`crate::Sfu::join`] returns.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    /// The first SDP offer of the participant's subscriber peer (server →
    /// client). The client answers with [`crate::Sfu::subscriber_answer`].
    /// Later offers for the same peer come as [`MediaEvent::SubscriberOffer`].
    pub subscriber_offer: String,
    /// Tracks already published in the room (they are in the offer).
    pub tracks: Vec<TrackInfo>,
    /// Other participants already in the room.
    pub participants: Vec<ParticipantId>,
    /// The host candidates the SFU listens on (also in every SDP).
    pub candidates: Vec<SocketAddr>,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// [`crate::Sfu::leave`] was called.
    Left,
    /// ICE and DTLS did not complete within [`crate::MediaConfig::connect_timeout`].
    IceTimeout,
    /// No packets for [`crate::MediaConfig::idle_timeout`], or the peer failed.
    Vanished,
}

/// Connection quality, from RTT, jitter and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quality {
    /// Loss under 2 %, RTT under 150 ms, jitter under 30 ms.
    Excellent,
    /// Loss under 8 %, RTT under 400 ms, jitter under 100 ms.
    Good,
    /// Anything worse.
    Poor,
}

impl Quality {
    /// Classify measurements.
    pub fn from_measurements(rtt: Option<Duration>, jitter: Option<Duration>, loss: f32) -> Self {
        let rtt = rtt.unwrap_or_default();
        let jitter = jitter.unwrap_or_default();
        if loss < 0.02 && rtt < Duration::from_millis(150) && jitter < Duration::from_millis(30) {
            Quality::Excellent
        } else if loss < 0.08
            && rtt < Duration::from_millis(400)
            && jitter < Duration::from_millis(100)
        {
            Quality::Good
        } else {
            Quality::Poor
        }
    }
}

/// A periodic measurement of one participant (both peers), for call logs.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantStats {
    /// Round-trip time to the client (the latest of either peer).
    pub rtt: Option<Duration>,
    /// Interarrival jitter of the media the participant publishes (worst track).
    pub jitter: Option<Duration>,
    /// Fraction lost (0.0–1.0), worst of upstream and downstream.
    pub loss: f32,
    /// Bits per second received from the participant over the last interval.
    pub bitrate_in: u64,
    /// Bits per second sent to the participant over the last interval.
    pub bitrate_out: u64,
    /// The subscriber peer's bandwidth estimate (TWCC), bits per second.
    pub bandwidth_estimate: Option<u64>,
    /// Classification of the above.
    pub quality: Quality,
}

/// What the SFU tells the signaling layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// A new SDP offer for the participant's subscriber peer (tracks came or
    /// went). Push it to the client; its answer goes to
    /// [`crate::Sfu::subscriber_answer`]. At most one offer is outstanding
    /// per participant; the next one follows the answer.
    SubscriberOffer {
        /// Room.
        room: RoomId,
        /// Receiver of the offer.
        participant: ParticipantId,
        /// SDP text.
        sdp: String,
    },
    /// ICE and DTLS completed for the participant's subscriber peer.
    ParticipantConnected {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
    },
    /// The participant is gone; its tracks were unpublished first.
    ParticipantLeft {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A track became available (the publisher's offer was accepted).
    TrackPublished {
        /// Room.
        room: RoomId,
        /// The track.
        track: TrackInfo,
    },
    /// A track is gone (publisher removed it or left).
    TrackUnpublished {
        /// Room.
        room: RoomId,
        /// Publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A track was muted or unmuted ([`crate::Sfu::set_muted`]).
    TrackMuted {
        /// Room.
        room: RoomId,
        /// Publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
        /// New state.
        muted: bool,
    },
    /// The loudest participants changed (loudest first; empty: silence).
    ActiveSpeakers {
        /// Room.
        room: RoomId,
        /// Speakers with their level (0 = silent … 127 = loudest).
        speakers: Vec<(ParticipantId, u8)>,
    },
    /// A participant's connection quality changed class.
    Quality {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
        /// New class.
        quality: Quality,
    },
    /// Periodic stats ([`crate::MediaConfig::stats_interval`]).
    Stats {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
        /// Measurements.
        stats: ParticipantStats,
    },
}

impl MediaEvent {
    /// Stats, quality and speaker events may be dropped when the consumer
    /// falls behind; the others never are.
    pub fn is_droppable(&self) -> bool {
        matches!(
            self,
            MediaEvent::ActiveSpeakers { .. }
                | MediaEvent::Quality { .. }
                | MediaEvent::Stats { .. }
        )
    }
}
