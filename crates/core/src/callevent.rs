//! What happened in rooms and calls: the events the signaling layer records
//! in the event log (stream [`STREAM`]), that the call-log projection folds
//! and that webhooks deliver.
//!
//! Every room event carries `call`, the id of one room session (from the first
//! join until the room empties or is deleted), so a room name reused later
//! starts a new call. 1:1 ringing events carry the same id once the callee
//! accepts and the room starts.

use serde::{Deserialize, Serialize};

/// The event-log stream holding [`CallEvent`]s.
pub const STREAM: &str = "calls";

/// One room or call event; `at_ms` is milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallEvent {
    /// A room session began (first participant, or `room_create`).
    RoomStarted {
        /// Call (room session) id.
        call: String,
        /// Room name.
        room: String,
        /// `sfu`, `p2p` or `auto`.
        mode: String,
        /// When.
        at_ms: i64,
    },
    /// A room session ended (emptied past its timeout, or deleted).
    RoomFinished {
        /// Call id.
        call: String,
        /// Room name.
        room: String,
        /// When.
        at_ms: i64,
    },
    /// An `auto` room moved from peer-to-peer to the SFU.
    ModeChanged {
        /// Call id.
        call: String,
        /// Room name.
        room: String,
        /// The new mode (`sfu`).
        mode: String,
        /// When.
        at_ms: i64,
    },
    /// A participant joined.
    ParticipantJoined {
        /// Call id.
        call: String,
        /// Room name.
        room: String,
        /// Participant id (the client id).
        participant: String,
        /// User id ("" for anonymous).
        user: String,
        /// When.
        at_ms: i64,
    },
    /// A participant left.
    ParticipantLeft {
        /// Call id.
        call: String,
        /// Room name.
        room: String,
        /// Participant id.
        participant: String,
        /// User id.
        user: String,
        /// `left`, `disconnected`, `removed`, `ice_timeout`, `vanished`, `room_deleted`.
        reason: String,
        /// When.
        at_ms: i64,
    },
    /// A participant published a track.
    TrackPublished {
        /// Call id.
        call: String,
        /// Room name.
        room: String,
        /// Publisher.
        participant: String,
        /// Track id.
        track: String,
        /// `audio` or `video`.
        kind: String,
        /// `microphone`, `camera` or `screen`.
        source: String,
        /// When.
        at_ms: i64,
    },
    /// A track went away.
    TrackUnpublished {
        /// Call id.
        call: String,
        /// Room name.
        room: String,
        /// Publisher.
        participant: String,
        /// Track id.
        track: String,
        /// When.
        at_ms: i64,
    },
    /// A periodic quality measurement of one participant (from SFU stats).
    QualitySample {
        /// Call id.
        call: String,
        /// Room name.
        room: String,
        /// Participant.
        participant: String,
        /// Round-trip time in milliseconds, when known.
        rtt_ms: Option<f64>,
        /// Jitter in milliseconds, when known.
        jitter_ms: Option<f64>,
        /// Fraction lost, 0.0–1.0.
        loss: f64,
        /// When.
        at_ms: i64,
    },
    /// `rtc.call`: a user is being rung.
    CallRinging {
        /// Call id (also the room the call will use).
        call: String,
        /// Caller user id.
        caller: String,
        /// Callee user id.
        callee: String,
        /// When.
        at_ms: i64,
    },
    /// The callee accepted.
    CallAccepted {
        /// Call id.
        call: String,
        /// When.
        at_ms: i64,
    },
    /// The callee declined.
    CallDeclined {
        /// Call id.
        call: String,
        /// When.
        at_ms: i64,
    },
    /// The caller cancelled before an answer.
    CallCancelled {
        /// Call id.
        call: String,
        /// When.
        at_ms: i64,
    },
    /// Nobody answered in time (or the callee was offline).
    CallMissed {
        /// Call id.
        call: String,
        /// When.
        at_ms: i64,
    },
}

impl CallEvent {
    /// The event's type name, as stored and as sent to webhooks.
    pub fn kind(&self) -> &'static str {
        match self {
            CallEvent::RoomStarted { .. } => "room_started",
            CallEvent::RoomFinished { .. } => "room_finished",
            CallEvent::ModeChanged { .. } => "mode_changed",
            CallEvent::ParticipantJoined { .. } => "participant_joined",
            CallEvent::ParticipantLeft { .. } => "participant_left",
            CallEvent::TrackPublished { .. } => "track_published",
            CallEvent::TrackUnpublished { .. } => "track_unpublished",
            CallEvent::QualitySample { .. } => "quality_sample",
            CallEvent::CallRinging { .. } => "call_ringing",
            CallEvent::CallAccepted { .. } => "call_accepted",
            CallEvent::CallDeclined { .. } => "call_declined",
            CallEvent::CallCancelled { .. } => "call_cancelled",
            CallEvent::CallMissed { .. } => "call_missed",
        }
    }

    /// The call (room session) the event belongs to.
    pub fn call(&self) -> &str {
        match self {
            CallEvent::RoomStarted { call, .. }
            | CallEvent::RoomFinished { call, .. }
            | CallEvent::ModeChanged { call, .. }
            | CallEvent::ParticipantJoined { call, .. }
            | CallEvent::ParticipantLeft { call, .. }
            | CallEvent::TrackPublished { call, .. }
            | CallEvent::TrackUnpublished { call, .. }
            | CallEvent::QualitySample { call, .. }
            | CallEvent::CallRinging { call, .. }
            | CallEvent::CallAccepted { call, .. }
            | CallEvent::CallDeclined { call, .. }
            | CallEvent::CallCancelled { call, .. }
            | CallEvent::CallMissed { call, .. } => call,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_type_name() {
        let ev = CallEvent::ParticipantJoined {
            call: "c1".into(),
            room: "r".into(),
            participant: "p".into(),
            user: "u".into(),
            at_ms: 5,
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], ev.kind());
        assert_eq!(v["call"], "c1");
        let back: CallEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }
}
