//! The call-log projection: [`CallEvent`]s folded into one summary per call
//! (sans-IO).
//!
//! A call is one room session (from its first join until the room ends) or
//! one 1:1 ring; a ring that is accepted and whose room then starts is the
//! same call (the room is named after the call id). Feed events in log order
//! with [`CallLogProjection::apply`]; read with [`CallLogProjection::get`]
//! and [`CallLogProjection::list`], passing the time so live calls report
//! their duration so far.
//!
//! ```no_run
//! use switchboard_core::calllog::{CallLogProjection, ListFilter};
//! use switchboard_core::callevent::CallEvent;
//! let mut log = CallLogProjection::new(10_000);
//! log.apply(&CallEvent::RoomStarted {
//!     call: "c1".into(), room: "standup".into(), mode: "sfu".into(), at_ms: 0,
//! });
//! let calls = log.list(&ListFilter::default(), 5_000);
//! assert_eq!(calls[0].duration_ms, Some(5_000));
//! ```

use crate::callevent::CallEvent;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Most quality samples kept per participant and metric; beyond it every
/// other sample is dropped (the percentiles stay representative).
pub const MAX_SAMPLES: usize = 2048;

/// What [`CallLogProjection::list`] returns.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only calls this user took part in (participant, caller or callee).
    pub user: Option<String>,
    /// Only calls in this room.
    pub room: Option<String>,
    /// At most this many (newest first).
    pub limit: Option<usize>,
}

/// Percentiles of one metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value seen.
    pub max: f64,
}

/// RTT, jitter and loss percentiles over a set of samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QualitySummary {
    /// Samples received.
    pub samples: u64,
    /// Round-trip time, ms (absent when never measured).
    pub rtt_ms: Option<Percentiles>,
    /// Jitter, ms (absent when never measured).
    pub jitter_ms: Option<Percentiles>,
    /// Loss fraction 0.0–1.0.
    pub loss: Option<Percentiles>,
}

/// One stay of a participant in the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParticipantSummary {
    /// Participant id (client id).
    pub participant: String,
    /// User id ("" for anonymous).
    pub user: String,
    /// When it joined.
    pub joined_at_ms: i64,
    /// When it left (absent while present).
    pub left_at_ms: Option<i64>,
    /// Why it left.
    pub left_reason: Option<String>,
    /// How long it stayed (so far, while present).
    pub duration_ms: i64,
    /// Its quality (absent without samples).
    pub quality: Option<QualitySummary>,
}

/// A track published during the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackSummary {
    /// Track id.
    pub track: String,
    /// Publisher.
    pub participant: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `microphone`, `camera` or `screen`.
    pub source: String,
    /// When it was published.
    pub published_at_ms: i64,
    /// When it went away (absent while published).
    pub unpublished_at_ms: Option<i64>,
}

/// The ringing part of a 1:1 call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RingSummary {
    /// Caller user id.
    pub caller: String,
    /// Callee user id.
    pub callee: String,
    /// `ringing`, `accepted`, `declined`, `cancelled` or `missed`.
    pub outcome: String,
    /// When ringing started.
    pub rang_at_ms: i64,
    /// When the ringing ended (absent while ringing).
    pub ended_at_ms: Option<i64>,
}

/// Everything known about one call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallSummary {
    /// Call id.
    pub call: String,
    /// Room name (the call id for 1:1 calls).
    pub room: String,
    /// `sfu`, `p2p` or `auto` (the latest mode; absent before the room started).
    pub mode: Option<String>,
    /// When the call began (ringing or room start).
    pub started_at_ms: i64,
    /// When the room ended, or the ring ended without an answer.
    pub ended_at_ms: Option<i64>,
    /// From the room's start to its end (or now, while live); absent when
    /// no room ever started (missed, declined, cancelled calls).
    pub duration_ms: Option<i64>,
    /// Whether the call is over.
    pub ended: bool,
    /// Every stay of every participant, in join order.
    pub participants: Vec<ParticipantSummary>,
    /// Tracks published, in publication order.
    pub tracks: Vec<TrackSummary>,
    /// Quality over all participants (absent without samples).
    pub quality: Option<QualitySummary>,
    /// For 1:1 calls: the ringing and its outcome.
    pub ringing: Option<RingSummary>,
}

#[derive(Clone, Debug, Default)]
struct Samples {
    values: Vec<f64>,
    /// Keep one sample in `stride` (doubles each time the buffer fills).
    stride: u64,
    seen: u64,
}

impl Samples {
    fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.stride = self.stride.max(1);
        self.seen += 1;
        if !(self.seen - 1).is_multiple_of(self.stride) {
            return;
        }
        self.values.push(v);
        if self.values.len() >= MAX_SAMPLES {
            let mut i = 0;
            self.values.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
        }
    }

    fn percentiles(&self) -> Option<Percentiles> {
        percentiles(self.values.clone())
    }
}

/// Nearest-rank percentiles of `values` (`None` when empty).
pub fn percentiles(mut values: Vec<f64>) -> Option<Percentiles> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let n = values.len();
        let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        values[idx]
    };
    Some(Percentiles {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: values[values.len() - 1],
    })
}

#[derive(Clone, Debug, Default)]
struct Quality {
    samples: u64,
    rtt: Samples,
    jitter: Samples,
    loss: Samples,
}

impl Quality {
    fn add(&mut self, rtt: Option<f64>, jitter: Option<f64>, loss: f64) {
        self.samples += 1;
        if let Some(v) = rtt {
            self.rtt.add(v);
        }
        if let Some(v) = jitter {
            self.jitter.add(v);
        }
        self.loss.add(loss);
    }

    fn summary(&self) -> Option<QualitySummary> {
        (self.samples > 0).then(|| QualitySummary {
            samples: self.samples,
            rtt_ms: self.rtt.percentiles(),
            jitter_ms: self.jitter.percentiles(),
            loss: self.loss.percentiles(),
        })
    }
}

#[derive(Clone, Debug)]
struct Stay {
    participant: String,
    user: String,
    joined_at_ms: i64,
    left_at_ms: Option<i64>,
    left_reason: Option<String>,
}

#[derive(Clone, Debug)]
struct Entry {
    call: String,
    room: String,
    mode: Option<String>,
    started_at_ms: i64,
    room_started_ms: Option<i64>,
    room_finished_ms: Option<i64>,
    ring: Option<RingSummary>,
    stays: Vec<Stay>,
    tracks: Vec<TrackSummary>,
    quality: BTreeMap<String, Quality>,
    /// Order of creation (for newest-first listing).
    seq: u64,
}

impl Entry {
    fn new(call: &str, room: &str, at_ms: i64, seq: u64) -> Self {
        Self {
            call: call.to_string(),
            room: room.to_string(),
            mode: None,
            started_at_ms: at_ms,
            room_started_ms: None,
            room_finished_ms: None,
            ring: None,
            stays: Vec::new(),
            tracks: Vec::new(),
            quality: BTreeMap::new(),
            seq,
        }
    }

    fn ended_at(&self) -> Option<i64> {
        if let Some(t) = self.room_finished_ms {
            return Some(t);
        }
        match &self.ring {
            Some(r) if self.room_started_ms.is_none() && r.outcome != "accepted" => r.ended_at_ms,
            _ => None,
        }
    }

    fn involves(&self, user: &str) -> bool {
        self.stays.iter().any(|s| s.user == user)
            || self
                .ring
                .as_ref()
                .is_some_and(|r| r.caller == user || r.callee == user)
    }

    fn summary(&self, now_ms: i64) -> CallSummary {
        let ended_at = self.ended_at();
        let end = ended_at.unwrap_or(now_ms);
        let participants = self
            .stays
            .iter()
            .map(|s| ParticipantSummary {
                participant: s.participant.clone(),
                user: s.user.clone(),
                joined_at_ms: s.joined_at_ms,
                left_at_ms: s.left_at_ms,
                left_reason: s.left_reason.clone(),
                duration_ms: (s.left_at_ms.unwrap_or(end) - s.joined_at_ms).max(0),
                quality: self.quality.get(&s.participant).and_then(Quality::summary),
            })
            .collect();
        let mut all = Quality::default();
        for q in self.quality.values() {
            all.samples += q.samples;
            all.rtt.values.extend_from_slice(&q.rtt.values);
            all.jitter.values.extend_from_slice(&q.jitter.values);
            all.loss.values.extend_from_slice(&q.loss.values);
        }
        CallSummary {
            call: self.call.clone(),
            room: self.room.clone(),
            mode: self.mode.clone(),
            started_at_ms: self.started_at_ms,
            ended_at_ms: ended_at,
            duration_ms: self
                .room_started_ms
                .map(|start| (self.room_finished_ms.unwrap_or(end) - start).max(0)),
            ended: ended_at.is_some(),
            participants,
            tracks: self.tracks.clone(),
            quality: all.summary(),
            ringing: self.ring.clone(),
        }
    }
}

/// Per-call summaries folded from the call events.
#[derive(Debug)]
pub struct CallLogProjection {
    max_calls: usize,
    calls: HashMap<String, Entry>,
    /// Room-session call ids that belong to an accepted 1:1 call.
    aliases: HashMap<String, String>,
    seq: u64,
}

impl CallLogProjection {
    /// An empty projection keeping at most `max_calls` calls (the oldest
    /// ended ones are forgotten first).
    pub fn new(max_calls: usize) -> Self {
        Self {
            max_calls: max_calls.max(1),
            calls: HashMap::new(),
            aliases: HashMap::new(),
            seq: 0,
        }
    }

    /// Number of calls held.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    fn resolve(&self, call: &str) -> String {
        self.aliases
            .get(call)
            .cloned()
            .unwrap_or_else(|| call.to_string())
    }

    fn entry(&mut self, call: &str, room: &str, at_ms: i64) -> &mut Entry {
        let id = self.resolve(call);
        if !self.calls.contains_key(&id) {
            self.seq += 1;
            let e = Entry::new(&id, room, at_ms, self.seq);
            self.calls.insert(id.clone(), e);
        }
        self.calls.get_mut(&id).expect("inserted above")
    }

    /// Folds one event in (events must come in log order). Events of
    /// unknown calls start a call, so a log whose beginning was trimmed
    /// still yields what it can.
    pub fn apply(&mut self, ev: &CallEvent) {
        match ev {
            CallEvent::RoomStarted {
                call,
                room,
                mode,
                at_ms,
            } => {
                // A room named after an accepted 1:1 call is that call.
                if call != room
                    && let Some(e) = self.calls.get(room)
                    && e.ring.as_ref().is_some_and(|r| r.outcome == "accepted")
                    && e.room_started_ms.is_none()
                {
                    self.aliases.insert(call.clone(), room.clone());
                }
                let e = self.entry(call, room, *at_ms);
                e.mode = Some(mode.clone());
                e.room_started_ms.get_or_insert(*at_ms);
                e.room_finished_ms = None;
            }
            CallEvent::RoomFinished { call, room, at_ms } => {
                let e = self.entry(call, room, *at_ms);
                e.room_finished_ms = Some(*at_ms);
                for s in e.stays.iter_mut().filter(|s| s.left_at_ms.is_none()) {
                    s.left_at_ms = Some(*at_ms);
                    s.left_reason = Some("room_finished".into());
                }
                for t in e
                    .tracks
                    .iter_mut()
                    .filter(|t| t.unpublished_at_ms.is_none())
                {
                    t.unpublished_at_ms = Some(*at_ms);
                }
            }
            CallEvent::ModeChanged {
                call,
                room,
                mode,
                at_ms,
            } => {
                self.entry(call, room, *at_ms).mode = Some(mode.clone());
            }
            CallEvent::ParticipantJoined {
                call,
                room,
                participant,
                user,
                at_ms,
            } => {
                let e = self.entry(call, room, *at_ms);
                e.room_started_ms.get_or_insert(*at_ms);
                e.stays.push(Stay {
                    participant: participant.clone(),
                    user: user.clone(),
                    joined_at_ms: *at_ms,
                    left_at_ms: None,
                    left_reason: None,
                });
            }
            CallEvent::ParticipantLeft {
                call,
                room,
                participant,
                user,
                reason,
                at_ms,
            } => {
                let e = self.entry(call, room, *at_ms);
                match e
                    .stays
                    .iter_mut()
                    .rev()
                    .find(|s| &s.participant == participant && s.left_at_ms.is_none())
                {
                    Some(s) => {
                        s.left_at_ms = Some(*at_ms);
                        s.left_reason = Some(reason.clone());
                    }
                    None => e.stays.push(Stay {
                        participant: participant.clone(),
                        user: user.clone(),
                        joined_at_ms: *at_ms,
                        left_at_ms: Some(*at_ms),
                        left_reason: Some(reason.clone()),
                    }),
                }
            }
            CallEvent::TrackPublished {
                call,
                room,
                participant,
                track,
                kind,
                source,
                at_ms,
            } => {
                self.entry(call, room, *at_ms).tracks.push(TrackSummary {
                    track: track.clone(),
                    participant: participant.clone(),
                    kind: kind.clone(),
                    source: source.clone(),
                    published_at_ms: *at_ms,
                    unpublished_at_ms: None,
                });
            }
            CallEvent::TrackUnpublished {
                call,
                room,
                track,
                at_ms,
                ..
            } => {
                let e = self.entry(call, room, *at_ms);
                if let Some(t) = e
                    .tracks
                    .iter_mut()
                    .rev()
                    .find(|t| &t.track == track && t.unpublished_at_ms.is_none())
                {
                    t.unpublished_at_ms = Some(*at_ms);
                }
            }
            CallEvent::QualitySample {
                call,
                room,
                participant,
                rtt_ms,
                jitter_ms,
                loss,
                at_ms,
            } => {
                self.entry(call, room, *at_ms)
                    .quality
                    .entry(participant.clone())
                    .or_default()
                    .add(*rtt_ms, *jitter_ms, *loss);
            }
            CallEvent::CallRinging {
                call,
                caller,
                callee,
                at_ms,
            } => {
                let e = self.entry(call, call, *at_ms);
                e.ring = Some(RingSummary {
                    caller: caller.clone(),
                    callee: callee.clone(),
                    outcome: "ringing".into(),
                    rang_at_ms: *at_ms,
                    ended_at_ms: None,
                });
            }
            CallEvent::CallAccepted { call, at_ms } => self.ring_outcome(call, "accepted", *at_ms),
            CallEvent::CallDeclined { call, at_ms } => self.ring_outcome(call, "declined", *at_ms),
            CallEvent::CallCancelled { call, at_ms } => {
                self.ring_outcome(call, "cancelled", *at_ms)
            }
            CallEvent::CallMissed { call, at_ms } => self.ring_outcome(call, "missed", *at_ms),
        }
        self.evict();
    }

    fn ring_outcome(&mut self, call: &str, outcome: &str, at_ms: i64) {
        let e = self.entry(call, call, at_ms);
        let ring = e.ring.get_or_insert_with(|| RingSummary {
            caller: String::new(),
            callee: String::new(),
            outcome: String::new(),
            rang_at_ms: at_ms,
            ended_at_ms: None,
        });
        ring.outcome = outcome.to_string();
        ring.ended_at_ms = Some(at_ms);
    }

    fn evict(&mut self) {
        while self.calls.len() > self.max_calls {
            // The oldest ended call, else the oldest call.
            let victim = self
                .calls
                .values()
                .filter(|e| e.ended_at().is_some())
                .min_by_key(|e| e.seq)
                .or_else(|| self.calls.values().min_by_key(|e| e.seq))
                .map(|e| e.call.clone());
            let Some(victim) = victim else { return };
            self.calls.remove(&victim);
            self.aliases.retain(|_, target| *target != victim);
        }
    }

    /// The summary of one call (by its id, or the id of its room session).
    pub fn get(&self, call: &str, now_ms: i64) -> Option<CallSummary> {
        self.calls
            .get(&self.resolve(call))
            .map(|e| e.summary(now_ms))
    }

    /// Calls matching `filter`, newest first.
    pub fn list(&self, filter: &ListFilter, now_ms: i64) -> Vec<CallSummary> {
        let mut found: Vec<&Entry> = self
            .calls
            .values()
            .filter(|e| filter.room.as_ref().is_none_or(|r| &e.room == r))
            .filter(|e| filter.user.as_ref().is_none_or(|u| e.involves(u)))
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse(e.seq));
        found
            .into_iter()
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|e| e.summary(now_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(call: &str, p: &str, user: &str, at_ms: i64) -> CallEvent {
        CallEvent::ParticipantJoined {
            call: call.into(),
            room: "r".into(),
            participant: p.into(),
            user: user.into(),
            at_ms,
        }
    }

    fn left(call: &str, p: &str, user: &str, at_ms: i64) -> CallEvent {
        CallEvent::ParticipantLeft {
            call: call.into(),
            room: "r".into(),
            participant: p.into(),
            user: user.into(),
            reason: "left".into(),
            at_ms,
        }
    }

    fn sample(p: &str, rtt: f64, loss: f64, at_ms: i64) -> CallEvent {
        CallEvent::QualitySample {
            call: "c1".into(),
            room: "r".into(),
            participant: p.into(),
            rtt_ms: Some(rtt),
            jitter_ms: None,
            loss,
            at_ms,
        }
    }

    #[test]
    fn room_session_summary() {
        let mut log = CallLogProjection::new(100);
        log.apply(&CallEvent::RoomStarted {
            call: "c1".into(),
            room: "r".into(),
            mode: "auto".into(),
            at_ms: 1_000,
        });
        log.apply(&joined("c1", "p1", "alice", 1_000));
        log.apply(&joined("c1", "p2", "bob", 2_000));
        log.apply(&CallEvent::TrackPublished {
            call: "c1".into(),
            room: "r".into(),
            participant: "p1".into(),
            track: "t1".into(),
            kind: "video".into(),
            source: "camera".into(),
            at_ms: 2_500,
        });
        log.apply(&CallEvent::ModeChanged {
            call: "c1".into(),
            room: "r".into(),
            mode: "sfu".into(),
            at_ms: 2_600,
        });
        // While live, durations run to "now".
        let live = log.get("c1", 5_000).unwrap();
        assert!(!live.ended);
        assert_eq!(live.duration_ms, Some(4_000));
        assert_eq!(live.participants[1].duration_ms, 3_000);
        log.apply(&left("c1", "p2", "bob", 6_000));
        log.apply(&left("c1", "p1", "alice", 7_000));
        log.apply(&CallEvent::RoomFinished {
            call: "c1".into(),
            room: "r".into(),
            at_ms: 7_000,
        });
        let s = log.get("c1", 99_999).unwrap();
        assert!(s.ended);
        assert_eq!(s.mode.as_deref(), Some("sfu"));
        assert_eq!(s.duration_ms, Some(6_000));
        assert_eq!(s.ended_at_ms, Some(7_000));
        let p: Vec<_> = s
            .participants
            .iter()
            .map(|p| (p.user.as_str(), p.joined_at_ms, p.left_at_ms, p.duration_ms))
            .collect();
        assert_eq!(
            p,
            vec![
                ("alice", 1_000, Some(7_000), 6_000),
                ("bob", 2_000, Some(6_000), 4_000)
            ]
        );
        assert_eq!(s.tracks[0].track, "t1");
        assert_eq!(s.tracks[0].unpublished_at_ms, Some(7_000));
        assert!(s.ringing.is_none());
    }

    #[test]
    fn quality_percentiles() {
        let mut log = CallLogProjection::new(100);
        log.apply(&joined("c1", "p1", "alice", 0));
        for i in 1..=100 {
            log.apply(&sample("p1", i as f64, if i > 95 { 0.2 } else { 0.0 }, i));
        }
        log.apply(&sample("p2", 500.0, 0.0, 101));
        let s = log.get("c1", 200).unwrap();
        let q = s.participants[0].quality.as_ref().unwrap();
        assert_eq!(q.samples, 100);
        let rtt = q.rtt_ms.as_ref().unwrap();
        assert_eq!(
            (rtt.p50, rtt.p90, rtt.p99, rtt.max),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert!(q.jitter_ms.is_none());
        assert_eq!(q.loss.as_ref().unwrap().p99, 0.2);
        assert_eq!(q.loss.as_ref().unwrap().p90, 0.0);
        let all = s.quality.unwrap();
        assert_eq!(all.samples, 101);
        assert_eq!(all.rtt_ms.unwrap().max, 500.0);
    }

    #[test]
    fn samples_stay_bounded() {
        let mut s = Samples::default();
        for i in 0..(MAX_SAMPLES * 10) {
            s.add(i as f64);
        }
        assert!(s.values.len() < MAX_SAMPLES);
        let p = s.percentiles().unwrap();
        let n = (MAX_SAMPLES * 10) as f64;
        assert!((p.p50 - n / 2.0).abs() < n * 0.05, "{p:?}");
        s.add(f64::NAN);
        assert!(percentiles(vec![]).is_none());
    }

    #[test]
    fn ringing_outcomes_and_accepted_call_room() {
        let mut log = CallLogProjection::new(100);
        let ring = |call: &str, at_ms| CallEvent::CallRinging {
            call: call.into(),
            caller: "alice".into(),
            callee: "bob".into(),
            at_ms,
        };
        log.apply(&ring("missed", 0));
        log.apply(&CallEvent::CallMissed {
            call: "missed".into(),
            at_ms: 30_000,
        });
        log.apply(&ring("ok", 40_000));
        log.apply(&CallEvent::CallAccepted {
            call: "ok".into(),
            at_ms: 41_000,
        });
        // The room session of the call has its own id: it joins the call.
        log.apply(&CallEvent::RoomStarted {
            call: "session-9".into(),
            room: "ok".into(),
            mode: "auto".into(),
            at_ms: 42_000,
        });
        log.apply(&CallEvent::ParticipantJoined {
            call: "session-9".into(),
            room: "ok".into(),
            participant: "p1".into(),
            user: "alice".into(),
            at_ms: 42_000,
        });
        log.apply(&CallEvent::RoomFinished {
            call: "session-9".into(),
            room: "ok".into(),
            at_ms: 52_000,
        });
        let missed = log.get("missed", 60_000).unwrap();
        let r = missed.ringing.unwrap();
        assert_eq!(
            (r.outcome.as_str(), r.ended_at_ms),
            ("missed", Some(30_000))
        );
        assert!(missed.ended);
        assert_eq!(missed.duration_ms, None);
        let ok = log.get("ok", 60_000).unwrap();
        assert_eq!(ok.ringing.unwrap().outcome, "accepted");
        assert_eq!(ok.duration_ms, Some(10_000));
        assert_eq!(ok.participants.len(), 1);
        assert_eq!(log.get("session-9", 0).unwrap().call, "ok");
        assert_eq!(log.len(), 2);

        let bob = log.list(
            &ListFilter {
                user: Some("bob".into()),
                ..Default::default()
            },
            60_000,
        );
        assert_eq!(
            bob.iter().map(|c| c.call.as_str()).collect::<Vec<_>>(),
            vec!["ok", "missed"]
        );
        let carol = ListFilter {
            user: Some("carol".into()),
            ..Default::default()
        };
        assert!(log.list(&carol, 0).is_empty());
        let one = ListFilter {
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(log.list(&one, 0).len(), 1);
        let by_room = ListFilter {
            room: Some("missed".into()),
            ..Default::default()
        };
        assert_eq!(log.list(&by_room, 0)[0].call, "missed");
    }

    #[test]
    fn oldest_ended_calls_are_evicted_first() {
        let mut log = CallLogProjection::new(2);
        log.apply(&joined("live", "p", "u", 0));
        log.apply(&CallEvent::CallMissed {
            call: "old".into(),
            at_ms: 1,
        });
        log.apply(&CallEvent::CallMissed {
            call: "new".into(),
            at_ms: 2,
        });
        assert_eq!(log.len(), 2);
        assert!(log.get("live", 3).is_some());
        assert!(log.get("old", 3).is_none());
        assert!(log.get("new", 3).is_some());
    }

    #[test]
    fn a_leave_without_join_is_kept() {
        let mut log = CallLogProjection::new(10);
        log.apply(&left("c", "p", "u", 5));
        let s = log.get("c", 10).unwrap();
        assert_eq!(s.participants[0].left_at_ms, Some(5));
        assert_eq!(s.participants[0].duration_ms, 0);
    }
}
