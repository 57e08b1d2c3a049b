//! [`MediaError`]: why a call into the SFU was refused.

use crate::types::TrackKind;

/// Why a request was refused. Peer input never panics: it ends up here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The SDP could not be parsed or misses something required (the text
    /// says what). The client's fault.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// No m-line offered a codec the SFU forwards (Opus, VP8, VP9, H.264).
    #[error("no supported codec offered")]
    UnsupportedCodecs,
    /// More tracks than [`crate::MediaConfig::max_tracks_per_participant`].
    #[error("too many tracks")]
    TooManyTracks,
    /// The participant's permissions do not allow publishing this kind.
    #[error("not permitted to publish {kind:?}")]
    NotPermitted {
        /// What was refused.
        kind: PermissionKind,
    },
    /// The room has [`crate::MediaConfig::max_participants`] participants.
    #[error("room is full")]
    RoomFull,
    /// No such participant in that room (never joined, left, or removed).
    #[error("unknown participant")]
    UnknownParticipant,
    /// The participant id is already in the room.
    #[error("participant already joined")]
    AlreadyJoined,
    /// No such track.
    #[error("unknown track")]
    UnknownTrack,
    /// An answer arrived while no subscriber offer was outstanding.
    #[error("no offer outstanding")]
    NoOfferPending,
    /// The media node is at [`crate::MediaConfig::max_participants_total`].
    #[error("media node at capacity")]
    NodeFull,
    /// The media task has stopped (shut down or failed).
    #[error("media node stopped")]
    Stopped,
    /// Socket setup failed (bind).
    #[error("io: {0}")]
    Io(String),
    /// The configuration is invalid (the text says why).
    #[error("invalid media config: {0}")]
    Config(String),
}

/// What a [`MediaError::NotPermitted`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionKind {
    /// Microphone audio.
    Audio,
    /// Camera video.
    Video,
    /// Screen share.
    Screen,
}

impl From<TrackKind> for PermissionKind {
    fn from(k: TrackKind) -> Self {
        match k {
            TrackKind::Audio => PermissionKind::Audio,
            TrackKind::Video => PermissionKind::Video,
        }
    }
}
