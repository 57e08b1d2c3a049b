//! Rooms: who is in which call room, in which mode, and when an empty room
//! ends.
//!
//! [`Rooms`] is the registry a signaling layer keeps in front of the SFU. It
//! decides; the caller acts on what it returns:
//!
//! * [`Rooms::join`] creates a room implicitly (with the defaults) or joins an
//!   existing one, refuses a full room, and says whether the joiner uses the
//!   SFU or peer-to-peer — and, when an `auto` room outgrows peer-to-peer,
//!   which participants already there must be moved to the SFU.
//! * [`Rooms::leave`] / [`Rooms::delete`] remove; an emptied room ends at
//!   once when its empty timeout is zero (implicit rooms), else later.
//! * [`Rooms::poll`] ends rooms empty for longer than their timeout;
//!   [`Rooms::next_deadline`] says when to call it next.
//!
//! Time is an argument (`now_ms`, milliseconds since the Unix epoch); call
//! ids (one per room session) are handed in by the caller.
//!
//! ```no_run
//! use switchboard_core::room::{Rooms, RoomOptions, RoomMode, Transport};
//! let mut rooms = Rooms::new(RoomOptions::default());
//! let j = rooms.join("standup", "client-1", "alice", 1_000, || "call-1".into()).unwrap();
//! assert_eq!(j.transport, Transport::P2p); // auto: 1:1 is peer-to-peer
//! rooms.join("standup", "client-2", "bob", 1_001, || unreachable!()).unwrap();
//! let j = rooms.join("standup", "client-3", "carol", 1_002, || unreachable!()).unwrap();
//! assert_eq!(j.switched.len(), 2); // move alice and bob to the SFU
//! // The IO loop: sleep until `next_deadline()`, then end what expired.
//! for ended in rooms.poll(5_000) { /* record room_finished for ended.call */ }
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How a room carries media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    /// Everyone through the SFU.
    Sfu,
    /// Signaling relay only, media browser to browser.
    P2p,
    /// Peer-to-peer up to `p2p_max_participants`, then the SFU for good.
    Auto,
}

impl RoomMode {
    /// `sfu`, `p2p` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Sfu => "sfu",
            RoomMode::P2p => "p2p",
            RoomMode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for RoomMode {
    type Err = RoomError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sfu" => Ok(RoomMode::Sfu),
            "p2p" => Ok(RoomMode::P2p),
            "auto" => Ok(RoomMode::Auto),
            other => Err(RoomError::InvalidOptions(format!(
                "unknown mode {other:?} (use sfu, p2p or auto)"
            ))),
        }
    }
}

/// How participants of a room exchange media right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Through the SFU.
    Sfu,
    /// Directly between the participants; the server relays signaling.
    P2p,
}

impl Transport {
    /// `sfu` or `p2p`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sfu => "sfu",
            Transport::P2p => "p2p",
        }
    }
}

/// Options of one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomOptions {
    /// Media mode.
    pub mode: RoomMode,
    /// Participants at most (any mode).
    pub max_participants: usize,
    /// Participants at most while peer-to-peer (`p2p` cap, `auto` threshold).
    pub p2p_max_participants: usize,
    /// How long the room may stay empty before it ends (zero: at once).
    pub empty_timeout: Duration,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            mode: RoomMode::Auto,
            max_participants: 100,
            p2p_max_participants: 2,
            empty_timeout: Duration::from_secs(300),
        }
    }
}

impl RoomOptions {
    /// The most participants the room admits in its mode.
    pub fn capacity(&self) -> usize {
        match self.mode {
            RoomMode::P2p => self.max_participants.min(self.p2p_max_participants),
            _ => self.max_participants,
        }
    }
}

/// One participant of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Participant id (the client id).
    pub participant: String,
    /// User id ("" for anonymous).
    pub user: String,
    /// When it joined (ms since the Unix epoch).
    pub joined_at_ms: i64,
}

/// One room session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    name: String,
    call: String,
    options: RoomOptions,
    created_at_ms: i64,
    transport: Transport,
    members: Vec<Member>,
    empty_since_ms: Option<i64>,
}

impl Room {
    fn new(name: &str, call: String, options: RoomOptions, now_ms: i64) -> Room {
        let transport = match options.mode {
            RoomMode::Sfu => Transport::Sfu,
            RoomMode::P2p | RoomMode::Auto => Transport::P2p,
        };
        Room {
            name: name.to_string(),
            call,
            options,
            created_at_ms: now_ms,
            transport,
            members: Vec::new(),
            empty_since_ms: Some(now_ms),
        }
    }

    /// Room name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Id of this room session (call).
    pub fn call(&self) -> &str {
        &self.call
    }

    /// The room's options.
    pub fn options(&self) -> &RoomOptions {
        &self.options
    }

    /// When the session began (ms since the Unix epoch).
    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// How media flows now.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Participants, in join order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this participant id.
    pub fn member(&self, participant: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.participant == participant)
    }

    /// When the room will end if nobody joins (ms), when it is empty.
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.empty_since_ms.map(|t| {
            t.saturating_add(
                i64::try_from(self.options.empty_timeout.as_millis()).unwrap_or(i64::MAX),
            )
        })
    }
}

/// Why a room operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// No such room.
    #[error("room not found")]
    NotFound,
    /// `create` of a room that exists.
    #[error("room already exists")]
    Exists,
    /// The room is at capacity.
    #[error("room is full ({max} participants at most)")]
    Full {
        /// The capacity that was reached.
        max: usize,
    },
    /// The participant is in the room already.
    #[error("already joined this room")]
    AlreadyJoined,
    /// The participant (sender or target) is not in the room.
    #[error("not a participant of this room")]
    NotMember,
    /// Peer-to-peer signaling in a room that uses the SFU.
    #[error("room is not in p2p mode")]
    NotPeerToPeer,
    /// Bad options.
    #[error("{0}")]
    InvalidOptions(String),
}

/// What [`Rooms::join`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The room session's call id.
    pub call: String,
    /// The join created the room (record `room_started`).
    pub started: bool,
    /// The room's mode.
    pub mode: RoomMode,
    /// How the joiner exchanges media.
    pub transport: Transport,
    /// The participants already there (in join order).
    pub others: Vec<Member>,
    /// Participants to move from peer-to-peer to the SFU now (an `auto`
    /// room outgrew peer-to-peer; record `mode_changed`). Empty otherwise.
    pub switched: Vec<Member>,
}

/// What [`Rooms::leave`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Left {
    /// The member that left.
    pub member: Member,
    /// The room session's call id.
    pub call: String,
    /// How it exchanged media (whether it has SFU peers to drop).
    pub transport: Transport,
    /// The members still there.
    pub others: Vec<Member>,
    /// The room ended with this leave (empty timeout zero).
    pub finished: bool,
}

/// The room registry. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Rooms {
    defaults: RoomOptions,
    rooms: BTreeMap<String, Room>,
}

impl Rooms {
    /// A registry whose implicitly created rooms use `defaults` (with an
    /// empty timeout of zero: they end when the last participant leaves).
    pub fn new(defaults: RoomOptions) -> Rooms {
        Rooms {
            defaults,
            rooms: BTreeMap::new(),
        }
    }

    /// Defaults of implicitly created rooms.
    pub fn defaults(&self) -> &RoomOptions {
        &self.defaults
    }

    /// Creates a room explicitly; it lives until empty for
    /// `options.empty_timeout` (counted from now) or deleted.
    pub fn create(
        &mut self,
        name: &str,
        options: RoomOptions,
        call: String,
        now_ms: i64,
    ) -> Result<&Room, RoomError> {
        if self.rooms.contains_key(name) {
            return Err(RoomError::Exists);
        }
        if options.max_participants == 0 {
            return Err(RoomError::InvalidOptions(
                "max_participants must be at least 1".into(),
            ));
        }
        let room = Room::new(name, call, options, now_ms);
        Ok(self.rooms.entry(name.to_string()).or_insert(room))
    }

    /// `participant` (of `user`) joins `name`, creating it with the defaults
    /// (and call id `new_call()`) if absent.
    pub fn join(
        &mut self,
        name: &str,
        participant: &str,
        user: &str,
        now_ms: i64,
        new_call: impl FnOnce() -> String,
    ) -> Result<Joined, RoomError> {
        let started = !self.rooms.contains_key(name);
        let room = self.rooms.entry(name.to_string()).or_insert_with(|| {
            let options = RoomOptions {
                empty_timeout: Duration::ZERO,
                ..self.defaults.clone()
            };
            Room::new(name, new_call(), options, now_ms)
        });
        if room.member(participant).is_some() {
            return Err(RoomError::AlreadyJoined);
        }
        let cap = room.options.capacity();
        if room.members.len() >= cap {
            return Err(RoomError::Full { max: cap });
        }
        let mut switched = Vec::new();
        if room.transport == Transport::P2p
            && room.options.mode == RoomMode::Auto
            && room.members.len() >= room.options.p2p_max_participants
        {
            room.transport = Transport::Sfu;
            switched = room.members.clone();
        }
        let others = room.members.clone();
        room.members.push(Member {
            participant: participant.to_string(),
            user: user.to_string(),
            joined_at_ms: now_ms,
        });
        room.empty_since_ms = None;
        Ok(Joined {
            call: room.call.clone(),
            started,
            mode: room.options.mode,
            transport: room.transport,
            others,
            switched,
        })
    }

    /// `participant` leaves `name`.
    pub fn leave(&mut self, name: &str, participant: &str, now_ms: i64) -> Result<Left, RoomError> {
        let room = self.rooms.get_mut(name).ok_or(RoomError::NotFound)?;
        let i = room
            .members
            .iter()
            .position(|m| m.participant == participant)
            .ok_or(RoomError::NotMember)?;
        let member = room.members.remove(i);
        let mut finished = false;
        if room.members.is_empty() {
            room.empty_since_ms = Some(now_ms);
            finished = room.options.empty_timeout.is_zero();
        }
        let left = Left {
            member,
            call: room.call.clone(),
            transport: room.transport,
            others: room.members.clone(),
            finished,
        };
        if finished {
            self.rooms.remove(name);
        }
        Ok(left)
    }

    /// Ends a room now; returns it with the members it had.
    pub fn delete(&mut self, name: &str) -> Result<Room, RoomError> {
        self.rooms.remove(name).ok_or(RoomError::NotFound)
    }

    /// Ends the rooms empty past their timeout at `now_ms` and returns them.
    pub fn poll(&mut self, now_ms: i64) -> Vec<Room> {
        let expired: Vec<String> = self
            .rooms
            .values()
            .filter(|r| r.expires_at_ms().is_some_and(|t| t <= now_ms))
            .map(|r| r.name.clone())
            .collect();
        expired
            .iter()
            .filter_map(|n| self.rooms.remove(n))
            .collect()
    }

    /// The earliest time [`Rooms::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        self.rooms.values().filter_map(Room::expires_at_ms).min()
    }

    /// Whether `from` may send peer-to-peer signaling to `to` in `name`.
    pub fn check_signal(&self, name: &str, from: &str, to: &str) -> Result<(), RoomError> {
        let room = self.rooms.get(name).ok_or(RoomError::NotFound)?;
        if room.member(from).is_none() || room.member(to).is_none() || from == to {
            return Err(RoomError::NotMember);
        }
        if room.transport != Transport::P2p {
            return Err(RoomError::NotPeerToPeer);
        }
        Ok(())
    }

    /// A room.
    pub fn get(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// All rooms, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values()
    }

    /// Rooms `participant` is in.
    pub fn rooms_of(&self, participant: &str) -> Vec<String> {
        self.rooms
            .values()
            .filter(|r| r.member(participant).is_some())
            .map(|r| r.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u32) -> impl FnOnce() -> String {
        move || format!("call-{n}")
    }

    #[test]
    fn auto_room_is_p2p_for_two_and_switches_on_the_third() {
        let mut rooms = Rooms::new(RoomOptions::default());
        let a = rooms.join("r", "a", "alice", 10, call(1)).unwrap();
        assert!(a.started);
        assert_eq!((a.transport, a.call.as_str()), (Transport::P2p, "call-1"));
        let b = rooms.join("r", "b", "bob", 11, call(2)).unwrap();
        assert!(!b.started);
        assert_eq!(b.transport, Transport::P2p);
        assert_eq!(b.others.len(), 1);
        assert!(b.switched.is_empty());
        let c = rooms.join("r", "c", "carol", 12, call(3)).unwrap();
        assert_eq!(c.transport, Transport::Sfu);
        let moved: Vec<_> = c.switched.iter().map(|m| m.participant.as_str()).collect();
        assert_eq!(moved, ["a", "b"]);
        // For good: back to two and a new joiner stays on the SFU, nobody moves.
        rooms.leave("r", "c", 13).unwrap();
        let d = rooms.join("r", "d", "dave", 14, call(4)).unwrap();
        assert_eq!(d.transport, Transport::Sfu);
        assert!(d.switched.is_empty());
        assert_eq!(rooms.get("r").unwrap().call(), "call-1");
    }

    #[test]
    fn capacity_is_enforced_per_mode() {
        let mut rooms = Rooms::new(RoomOptions::default());
        let opts = RoomOptions {
            mode: RoomMode::P2p,
            max_participants: 10,
            ..Default::default()
        };
        rooms.create("p", opts, "c".into(), 0).unwrap();
        rooms.join("p", "a", "", 1, call(0)).unwrap();
        rooms.join("p", "b", "", 1, call(0)).unwrap();
        assert_eq!(
            rooms.join("p", "c", "", 1, call(0)),
            Err(RoomError::Full { max: 2 })
        );
        let opts = RoomOptions {
            mode: RoomMode::Sfu,
            max_participants: 1,
            ..Default::default()
        };
        rooms.create("s", opts, "c2".into(), 0).unwrap();
        let j = rooms.join("s", "a", "", 1, call(0)).unwrap();
        assert_eq!(j.transport, Transport::Sfu);
        assert_eq!(
            rooms.join("s", "b", "", 1, call(0)),
            Err(RoomError::Full { max: 1 })
        );
        assert_eq!(
            rooms.join("s", "a", "", 1, call(0)),
            Err(RoomError::AlreadyJoined)
        );
    }

    #[test]
    fn implicit_rooms_end_with_the_last_leave_created_ones_after_the_timeout() {
        let mut rooms = Rooms::new(RoomOptions::default());
        rooms.join("imp", "a", "", 0, call(1)).unwrap();
        assert_eq!(rooms.next_deadline(), None);
        let left = rooms.leave("imp", "a", 5).unwrap();
        assert!(left.finished);
        assert!(rooms.get("imp").is_none());

        let opts = RoomOptions {
            empty_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        rooms.create("c", opts, "call-c".into(), 1_000).unwrap();
        assert_eq!(rooms.next_deadline(), Some(3_000));
        rooms.join("c", "a", "", 2_000, call(9)).unwrap();
        assert_eq!(rooms.next_deadline(), None);
        assert!(rooms.poll(10_000).is_empty());
        assert!(!rooms.leave("c", "a", 10_000).unwrap().finished);
        assert_eq!(rooms.next_deadline(), Some(12_000));
        assert!(rooms.poll(11_999).is_empty());
        let ended = rooms.poll(12_000);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].call(), "call-c");
        assert!(rooms.get("c").is_none());
        // A later join starts a new session.
        let j = rooms.join("c", "a", "", 13_000, call(7)).unwrap();
        assert!(j.started);
        assert_eq!(j.call, "call-7");
    }

    #[test]
    fn signaling_only_between_members_of_a_p2p_room() {
        let mut rooms = Rooms::new(RoomOptions::default());
        rooms.join("r", "a", "", 0, call(1)).unwrap();
        rooms.join("r", "b", "", 0, call(1)).unwrap();
        rooms.join("x", "z", "", 0, call(2)).unwrap();
        assert_eq!(rooms.check_signal("r", "a", "b"), Ok(()));
        assert_eq!(rooms.check_signal("r", "a", "z"), Err(RoomError::NotMember));
        assert_eq!(rooms.check_signal("r", "z", "a"), Err(RoomError::NotMember));
        assert_eq!(rooms.check_signal("r", "a", "a"), Err(RoomError::NotMember));
        assert_eq!(
            rooms.check_signal("nope", "a", "b"),
            Err(RoomError::NotFound)
        );
        rooms.join("r", "c", "", 0, call(1)).unwrap();
        assert_eq!(
            rooms.check_signal("r", "a", "b"),
            Err(RoomError::NotPeerToPeer)
        );
        assert_eq!(rooms.rooms_of("a"), ["r"]);
    }

    #[test]
    fn delete_and_errors() {
        let mut rooms = Rooms::new(RoomOptions::default());
        rooms
            .create("r", RoomOptions::default(), "c".into(), 0)
            .unwrap();
        assert_eq!(
            rooms
                .create("r", RoomOptions::default(), "d".into(), 0)
                .err(),
            Some(RoomError::Exists)
        );
        rooms.join("r", "a", "u", 0, call(0)).unwrap();
        assert_eq!(rooms.leave("r", "b", 0), Err(RoomError::NotMember));
        assert_eq!(rooms.leave("q", "a", 0), Err(RoomError::NotFound));
        let room = rooms.delete("r").unwrap();
        assert_eq!(room.members().len(), 1);
        assert_eq!(rooms.delete("r").err(), Some(RoomError::NotFound));
        assert!("mesh".parse::<RoomMode>().is_err());
        assert_eq!("p2p".parse::<RoomMode>(), Ok(RoomMode::P2p));
        let bad = RoomOptions {
            max_participants: 0,
            ..Default::default()
        };
        assert!(matches!(
            rooms.create("z", bad, "c".into(), 0),
            Err(RoomError::InvalidOptions(_))
        ));
    }

    /// Many simulated clients joining and leaving in a pseudo-random order:
    /// capacity holds, the transport never goes back to p2p once on the SFU,
    /// and every member's room is listed in `rooms_of`.
    #[test]
    fn random_churn_keeps_invariants() {
        let mut rooms = Rooms::new(RoomOptions {
            max_participants: 5,
            ..Default::default()
        });
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut went_sfu = std::collections::BTreeMap::new();
        for t in 0..5_000i64 {
            let room = format!("r{}", next() % 3);
            let p = format!("p{}", next() % 12);
            if next() % 2 == 0 {
                let _ = rooms.join(&room, &p, "", t, || format!("c{t}"));
            } else {
                let _ = rooms.leave(&room, &p, t);
            }
            for r in rooms.iter() {
                assert!(r.members().len() <= 5);
                let sfu = went_sfu.entry(r.call().to_string()).or_insert(false);
                if *sfu {
                    assert_eq!(r.transport(), Transport::Sfu);
                }
                *sfu = r.transport() == Transport::Sfu;
                if r.transport() == Transport::P2p {
                    assert!(r.members().len() <= 2);
                }
                for m in r.members() {
                    assert!(
                        rooms
                            .rooms_of(&m.participant)
                            .contains(&r.name().to_string())
                    );
                }
            }
        }
    }
}
