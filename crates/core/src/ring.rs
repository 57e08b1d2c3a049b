//! 1:1 calls: ringing a user on all their connections until they accept,
//! decline or the ring times out (sans-IO).
//!
//! [`Ringer`] keeps the calls of one node keyed by call id. Every `handle_*`
//! takes the time (`now_ms`, milliseconds since the Unix epoch) and returns
//! the [`RingOutput`]s to carry out: pushes to client connections, events for
//! the event log, and the room both users may join once a call is accepted.
//! [`Ringer::poll_timeout`] names the next deadline; call
//! [`Ringer::handle_timeout`] when it passes.
//!
//! ```no_run
//! use switchboard_core::ring::{Party, RingOutput, Ringer};
//! let mut ringer = Ringer::new(30_000);
//! let caller = Party::new("alice", "conn-a");
//! let (_call, out) = ringer
//!     .handle_call(0, "c1", caller, "bob", vec!["conn-b1".into()], None)
//!     .unwrap();
//! for o in out {
//!     match o {
//!         RingOutput::Push { client, message } => { /* send to the connection */ }
//!         RingOutput::Record(event) => { /* append to the call log */ }
//!         RingOutput::AllowRoom { room, users } => { /* let both users join */ }
//!     }
//! }
//! // Later, when the clock reaches ringer.poll_timeout():
//! let _out = ringer.handle_timeout(30_000);
//! ```

use crate::callevent::CallEvent;
use serde_json::{Value, json};
use std::collections::HashMap;

/// How long an ended call is remembered, so late answers get "call ended"
/// rather than "unknown call".
pub const ENDED_RETENTION_MS: i64 = 60_000;

/// Most calls one user may have ringing at once (as caller).
pub const MAX_RINGING_PER_CALLER: usize = 8;

/// One side of a call: a user and the connection acting for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Party {
    /// User id ("" for anonymous connections).
    pub user: String,
    /// Client (connection) id.
    pub client: String,
}

impl Party {
    /// A user acting through one connection.
    pub fn new(user: impl Into<String>, client: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            client: client.into(),
        }
    }
}

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// The callee's connections are ringing.
    Ringing,
    /// The callee accepted; both users may join the call's room.
    Accepted,
    /// The callee declined.
    Declined,
    /// The caller cancelled (or went away) before an answer.
    Cancelled,
    /// Nobody answered in time, or the callee was offline.
    Missed,
}

impl CallState {
    /// The state's name (`ringing`, `accepted`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
            CallState::Accepted => "accepted",
            CallState::Declined => "declined",
            CallState::Cancelled => "cancelled",
            CallState::Missed => "missed",
        }
    }
}

/// Why a request about a call was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Anonymous connections cannot call.
    #[error("anonymous connections cannot call")]
    Anonymous,
    /// The request is malformed (empty user, calling oneself, …).
    #[error("bad call request: {0}")]
    BadRequest(&'static str),
    /// No such call (never existed, or ended long ago).
    #[error("unknown call")]
    UnknownCall,
    /// The call was already answered, declined, cancelled or missed.
    #[error("call already {0}")]
    Ended(&'static str),
    /// Only the callee may accept or decline.
    #[error("only the callee can answer this call")]
    NotCallee,
    /// Only the caller may cancel.
    #[error("only the caller can cancel this call")]
    NotCaller,
    /// The caller has too many calls ringing.
    #[error("too many calls ringing")]
    TooManyCalls,
    /// A call with this id exists already.
    #[error("duplicate call id")]
    Duplicate,
}

/// What the IO layer must do after a transition.
#[derive(Clone, Debug, PartialEq)]
pub enum RingOutput {
    /// Send this JSON as an asynchronous `message` push to one connection.
    Push {
        /// Client (connection) id.
        client: String,
        /// The push (`{"type": "rtc.ring", …}`).
        message: Value,
    },
    /// Record this event in the call log.
    Record(CallEvent),
    /// Let these users join this room (mode `auto`) whatever their grants.
    AllowRoom {
        /// Room name (the call id).
        room: String,
        /// Caller and callee user ids.
        users: Vec<String>,
    },
}

/// A call as the ringer knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Call id; also the room the call uses.
    pub id: String,
    /// Who called, through which connection.
    pub caller: Party,
    /// The user called.
    pub callee: String,
    /// The callee's connections still ringing.
    pub ringing: Vec<String>,
    /// The callee's connection that answered, once one did.
    pub answered_by: Option<String>,
    /// Where the call is.
    pub state: CallState,
    /// When ringing started.
    pub started_ms: i64,
    /// When ringing times out (while ringing), or when the ended call is
    /// forgotten.
    pub deadline_ms: i64,
    /// Application data from the caller, passed to the callee.
    pub data: Value,
}

impl Call {
    /// The room the call uses (its id).
    pub fn room(&self) -> &str {
        &self.id
    }
}

/// The ringing calls of one node.
#[derive(Debug)]
pub struct Ringer {
    ring_timeout_ms: i64,
    calls: HashMap<String, Call>,
}

fn push(client: &str, message: Value) -> RingOutput {
    RingOutput::Push {
        client: client.to_string(),
        message,
    }
}

fn ring_ended(call: &Call, except: Option<&str>, reason: &str, out: &mut Vec<RingOutput>) {
    for c in &call.ringing {
        if Some(c.as_str()) != except {
            out.push(push(
                c,
                json!({"type": "rtc.ring_ended", "call": call.id, "reason": reason}),
            ));
        }
    }
}

impl Ringer {
    /// A ringer whose calls ring for `ring_timeout_ms`.
    pub fn new(ring_timeout_ms: i64) -> Self {
        Self {
            ring_timeout_ms: ring_timeout_ms.max(1),
            calls: HashMap::new(),
        }
    }

    /// A call by id (ringing, or ended within [`ENDED_RETENTION_MS`]).
    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    /// Calls currently ringing.
    pub fn num_ringing(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state == CallState::Ringing)
            .count()
    }

    /// `rtc.call`: `caller` rings every connection in `callee_conns` of user
    /// `callee`. With no connection, the call is missed at once and the
    /// caller is told `offline`.
    pub fn handle_call(
        &mut self,
        now_ms: i64,
        id: &str,
        caller: Party,
        callee: &str,
        callee_conns: Vec<String>,
        data: Option<Value>,
    ) -> Result<(&Call, Vec<RingOutput>), RingError> {
        if caller.user.is_empty() {
            return Err(RingError::Anonymous);
        }
        if callee.is_empty() {
            return Err(RingError::BadRequest("user required"));
        }
        if callee == caller.user {
            return Err(RingError::BadRequest("cannot call yourself"));
        }
        if id.is_empty() {
            return Err(RingError::BadRequest("call id required"));
        }
        if self.calls.contains_key(id) {
            return Err(RingError::Duplicate);
        }
        let ringing_by_caller = self
            .calls
            .values()
            .filter(|c| c.state == CallState::Ringing && c.caller.user == caller.user)
            .count();
        if ringing_by_caller >= MAX_RINGING_PER_CALLER {
            return Err(RingError::TooManyCalls);
        }
        let data = data.unwrap_or(Value::Null);
        let mut call = Call {
            id: id.to_string(),
            caller,
            callee: callee.to_string(),
            ringing: callee_conns,
            answered_by: None,
            state: CallState::Ringing,
            started_ms: now_ms,
            deadline_ms: now_ms + self.ring_timeout_ms,
            data,
        };
        let mut out = vec![RingOutput::Record(CallEvent::CallRinging {
            call: call.id.clone(),
            caller: call.caller.user.clone(),
            callee: call.callee.clone(),
            at_ms: now_ms,
        })];
        if call.ringing.is_empty() {
            call.state = CallState::Missed;
            call.deadline_ms = now_ms + ENDED_RETENTION_MS;
            out.push(push(
                &call.caller.client,
                json!({"type": "rtc.call_ended", "call": call.id, "reason": "offline"}),
            ));
            out.push(RingOutput::Record(CallEvent::CallMissed {
                call: call.id.clone(),
                at_ms: now_ms,
            }));
        } else {
            let ring = json!({
                "type": "rtc.ring",
                "call": call.id,
                "room": call.room(),
                "from": {"user": call.caller.user, "participant": call.caller.client},
                "data": call.data,
            });
            for c in &call.ringing {
                out.push(push(c, ring.clone()));
            }
        }
        let call = self.calls.entry(id.to_string()).or_insert(call);
        Ok((call, out))
    }

    fn ringing_call(&mut self, id: &str) -> Result<&mut Call, RingError> {
        let call = self.calls.get_mut(id).ok_or(RingError::UnknownCall)?;
        if call.state != CallState::Ringing {
            return Err(RingError::Ended(call.state.as_str()));
        }
        Ok(call)
    }

    fn end(call: &mut Call, state: CallState, now_ms: i64) {
        call.state = state;
        call.deadline_ms = now_ms + ENDED_RETENTION_MS;
    }

    /// `rtc.accept` by one of the callee's connections.
    pub fn handle_accept(
        &mut self,
        now_ms: i64,
        id: &str,
        by: &Party,
    ) -> Result<(&Call, Vec<RingOutput>), RingError> {
        let call = self.ringing_call(id)?;
        if by.user != call.callee {
            return Err(RingError::NotCallee);
        }
        let mut out = vec![push(
            &call.caller.client,
            json!({"type": "rtc.accepted", "call": call.id, "room": call.room()}),
        )];
        ring_ended(call, Some(&by.client), "answered_elsewhere", &mut out);
        out.push(RingOutput::Record(CallEvent::CallAccepted {
            call: call.id.clone(),
            at_ms: now_ms,
        }));
        out.push(RingOutput::AllowRoom {
            room: call.room().to_string(),
            users: vec![call.caller.user.clone(), call.callee.clone()],
        });
        call.answered_by = Some(by.client.clone());
        Self::end(call, CallState::Accepted, now_ms);
        Ok((call, out))
    }

    /// `rtc.decline` by one of the callee's connections.
    pub fn handle_decline(
        &mut self,
        now_ms: i64,
        id: &str,
        by: &Party,
    ) -> Result<Vec<RingOutput>, RingError> {
        let call = self.ringing_call(id)?;
        if by.user != call.callee {
            return Err(RingError::NotCallee);
        }
        let mut out = vec![push(
            &call.caller.client,
            json!({"type": "rtc.declined", "call": call.id}),
        )];
        ring_ended(call, Some(&by.client), "declined_elsewhere", &mut out);
        out.push(RingOutput::Record(CallEvent::CallDeclined {
            call: call.id.clone(),
            at_ms: now_ms,
        }));
        call.answered_by = Some(by.client.clone());
        Self::end(call, CallState::Declined, now_ms);
        Ok(out)
    }

    /// `rtc.cancel` by the caller (any of the caller's connections).
    pub fn handle_cancel(
        &mut self,
        now_ms: i64,
        id: &str,
        by: &Party,
    ) -> Result<Vec<RingOutput>, RingError> {
        let call = self.ringing_call(id)?;
        if by.user != call.caller.user {
            return Err(RingError::NotCaller);
        }
        Ok(Self::cancel(call, now_ms))
    }

    fn cancel(call: &mut Call, now_ms: i64) -> Vec<RingOutput> {
        let mut out = Vec::new();
        ring_ended(call, None, "cancelled", &mut out);
        out.push(RingOutput::Record(CallEvent::CallCancelled {
            call: call.id.clone(),
            at_ms: now_ms,
        }));
        Self::end(call, CallState::Cancelled, now_ms);
        out
    }

    /// A connection went away: calls it placed are cancelled; it stops
    /// ringing for calls to its user, and a call with no connection left
    /// ringing is missed (the caller is told `offline`).
    pub fn handle_disconnect(&mut self, now_ms: i64, client: &str) -> Vec<RingOutput> {
        let mut out = Vec::new();
        let mut ids: Vec<&String> = self.calls.keys().collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for id in ids {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            if call.state != CallState::Ringing {
                continue;
            }
            if call.caller.client == client {
                out.extend(Self::cancel(call, now_ms));
            } else if let Some(pos) = call.ringing.iter().position(|c| c == client) {
                call.ringing.remove(pos);
                if call.ringing.is_empty() {
                    out.push(push(
                        &call.caller.client,
                        json!({"type": "rtc.call_ended", "call": call.id, "reason": "offline"}),
                    ));
                    out.push(RingOutput::Record(CallEvent::CallMissed {
                        call: call.id.clone(),
                        at_ms: now_ms,
                    }));
                    Self::end(call, CallState::Missed, now_ms);
                }
            }
        }
        out
    }

    /// The next time [`Ringer::handle_timeout`] has work: a ring timing out
    /// or an ended call to forget.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.calls.values().map(|c| c.deadline_ms).min()
    }

    /// Times out calls ringing past their deadline (the caller gets
    /// `call_ended timeout`, the callee's connections `ring_ended timeout`)
    /// and forgets ended calls past their retention.
    pub fn handle_timeout(&mut self, now_ms: i64) -> Vec<RingOutput> {
        let mut out = Vec::new();
        let mut due: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.deadline_ms <= now_ms)
            .map(|c| c.id.clone())
            .collect();
        due.sort();
        for id in due {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            if call.state == CallState::Ringing {
                out.push(push(
                    &call.caller.client,
                    json!({"type": "rtc.call_ended", "call": call.id, "reason": "timeout"}),
                ));
                ring_ended(call, None, "timeout", &mut out);
                out.push(RingOutput::Record(CallEvent::CallMissed {
                    call: call.id.clone(),
                    at_ms: now_ms,
                }));
                Self::end(call, CallState::Missed, now_ms);
            } else {
                self.calls.remove(&id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushes(out: &[RingOutput]) -> Vec<(String, String, Option<String>)> {
        out.iter()
            .filter_map(|o| match o {
                RingOutput::Push { client, message } => Some((
                    client.clone(),
                    message["type"].as_str().unwrap().to_string(),
                    message["reason"].as_str().map(str::to_string),
                )),
                _ => None,
            })
            .collect()
    }

    fn records(out: &[RingOutput]) -> Vec<&'static str> {
        out.iter()
            .filter_map(|o| match o {
                RingOutput::Record(e) => Some(e.kind()),
                _ => None,
            })
            .collect()
    }

    fn p(s: &str, c: &str, r: Option<&str>) -> (String, String, Option<String>) {
        (s.into(), c.into(), r.map(str::to_string))
    }

    fn ringing(r: &mut Ringer) -> Vec<RingOutput> {
        let (call, out) = r
            .handle_call(
                1_000,
                "c1",
                Party::new("alice", "a1"),
                "bob",
                vec!["b1".into(), "b2".into()],
                Some(json!({"video": true})),
            )
            .unwrap();
        assert_eq!(call.state, CallState::Ringing);
        out
    }

    #[test]
    fn call_rings_every_callee_connection() {
        let mut r = Ringer::new(30_000);
        let out = ringing(&mut r);
        assert_eq!(
            pushes(&out),
            vec![p("b1", "rtc.ring", None), p("b2", "rtc.ring", None)]
        );
        let RingOutput::Push { message, .. } = &out[1] else {
            panic!("push expected");
        };
        assert_eq!(message["from"]["user"], "alice");
        assert_eq!(message["from"]["participant"], "a1");
        assert_eq!(message["room"], "c1");
        assert_eq!(message["data"]["video"], true);
        assert_eq!(records(&out), vec!["call_ringing"]);
        assert_eq!(r.poll_timeout(), Some(31_000));
    }

    #[test]
    fn accept_tells_caller_and_stops_other_connections() {
        let mut r = Ringer::new(30_000);
        ringing(&mut r);
        let (call, out) = r
            .handle_accept(2_000, "c1", &Party::new("bob", "b2"))
            .unwrap();
        assert_eq!(call.state, CallState::Accepted);
        assert_eq!(
            pushes(&out),
            vec![
                p("a1", "rtc.accepted", None),
                p("b1", "rtc.ring_ended", Some("answered_elsewhere"))
            ]
        );
        assert_eq!(records(&out), vec!["call_accepted"]);
        assert!(out.contains(&RingOutput::AllowRoom {
            room: "c1".into(),
            users: vec!["alice".into(), "bob".into()]
        }));
        // A second answer is refused.
        assert_eq!(
            r.handle_decline(2_001, "c1", &Party::new("bob", "b1"))
                .unwrap_err(),
            RingError::Ended("accepted")
        );
        // No timeout for an accepted call; it is forgotten after retention.
        assert!(r.handle_timeout(31_000).is_empty());
        assert!(r.call("c1").is_some());
        r.handle_timeout(2_000 + ENDED_RETENTION_MS);
        assert!(r.call("c1").is_none());
        assert_eq!(
            r.handle_cancel(1, "c1", &Party::new("alice", "a1"))
                .unwrap_err(),
            RingError::UnknownCall
        );
    }

    #[test]
    fn decline_and_cancel() {
        let mut r = Ringer::new(30_000);
        ringing(&mut r);
        let out = r
            .handle_decline(2_000, "c1", &Party::new("bob", "b1"))
            .unwrap();
        assert_eq!(
            pushes(&out),
            vec![
                p("a1", "rtc.declined", None),
                p("b2", "rtc.ring_ended", Some("declined_elsewhere"))
            ]
        );
        assert_eq!(records(&out), vec!["call_declined"]);

        let mut r = Ringer::new(30_000);
        ringing(&mut r);
        assert_eq!(
            r.handle_cancel(2_000, "c1", &Party::new("bob", "b1"))
                .unwrap_err(),
            RingError::NotCaller
        );
        let out = r
            .handle_cancel(2_000, "c1", &Party::new("alice", "a1"))
            .unwrap();
        assert_eq!(
            pushes(&out),
            vec![
                p("b1", "rtc.ring_ended", Some("cancelled")),
                p("b2", "rtc.ring_ended", Some("cancelled"))
            ]
        );
        assert_eq!(records(&out), vec!["call_cancelled"]);
        assert_eq!(r.call("c1").unwrap().state, CallState::Cancelled);
    }

    #[test]
    fn only_the_callee_answers() {
        let mut r = Ringer::new(30_000);
        ringing(&mut r);
        for who in [Party::new("alice", "a1"), Party::new("eve", "e1")] {
            assert_eq!(
                r.handle_accept(2_000, "c1", &who).unwrap_err(),
                RingError::NotCallee
            );
            assert_eq!(
                r.handle_decline(2_000, "c1", &who).unwrap_err(),
                RingError::NotCallee
            );
        }
        assert_eq!(r.call("c1").unwrap().state, CallState::Ringing);
        assert_eq!(
            r.handle_accept(2_000, "nope", &Party::new("bob", "b1"))
                .unwrap_err(),
            RingError::UnknownCall
        );
    }

    #[test]
    fn timeout_misses_the_call() {
        let mut r = Ringer::new(30_000);
        ringing(&mut r);
        assert!(r.handle_timeout(30_999).is_empty());
        let out = r.handle_timeout(31_000);
        assert_eq!(
            pushes(&out),
            vec![
                p("a1", "rtc.call_ended", Some("timeout")),
                p("b1", "rtc.ring_ended", Some("timeout")),
                p("b2", "rtc.ring_ended", Some("timeout"))
            ]
        );
        assert_eq!(records(&out), vec!["call_missed"]);
        assert_eq!(r.num_ringing(), 0);
        assert_eq!(
            r.handle_accept(31_001, "c1", &Party::new("bob", "b1"))
                .unwrap_err(),
            RingError::Ended("missed")
        );
    }

    #[test]
    fn offline_callee_is_missed_at_once() {
        let mut r = Ringer::new(30_000);
        let (call, out) = r
            .handle_call(0, "c1", Party::new("alice", "a1"), "bob", vec![], None)
            .unwrap();
        assert_eq!(call.state, CallState::Missed);
        assert_eq!(
            pushes(&out),
            vec![p("a1", "rtc.call_ended", Some("offline"))]
        );
        assert_eq!(records(&out), vec!["call_ringing", "call_missed"]);
    }

    #[test]
    fn bad_calls_are_refused() {
        let mut r = Ringer::new(30_000);
        let conns = || vec!["b1".to_string()];
        assert_eq!(
            r.handle_call(0, "c", Party::new("", "x"), "bob", conns(), None)
                .unwrap_err(),
            RingError::Anonymous
        );
        assert!(matches!(
            r.handle_call(0, "c", Party::new("a", "x"), "", conns(), None),
            Err(RingError::BadRequest(_))
        ));
        assert!(matches!(
            r.handle_call(0, "c", Party::new("a", "x"), "a", conns(), None),
            Err(RingError::BadRequest(_))
        ));
        for i in 0..MAX_RINGING_PER_CALLER {
            r.handle_call(
                0,
                &format!("c{i}"),
                Party::new("a", "x"),
                "b",
                conns(),
                None,
            )
            .unwrap();
        }
        assert_eq!(
            r.handle_call(0, "more", Party::new("a", "x"), "b", conns(), None)
                .unwrap_err(),
            RingError::TooManyCalls
        );
        assert_eq!(
            r.handle_call(0, "c0", Party::new("z", "x"), "b", conns(), None)
                .unwrap_err(),
            RingError::Duplicate
        );
    }

    #[test]
    fn disconnects_cancel_or_miss() {
        let mut r = Ringer::new(30_000);
        ringing(&mut r);
        // One callee connection leaves: the other still rings.
        assert!(r.handle_disconnect(1_500, "b1").is_empty());
        let out = r.handle_disconnect(1_600, "b2");
        assert_eq!(
            pushes(&out),
            vec![p("a1", "rtc.call_ended", Some("offline"))]
        );
        assert_eq!(records(&out), vec!["call_missed"]);

        let mut r = Ringer::new(30_000);
        ringing(&mut r);
        let out = r.handle_disconnect(1_500, "a1");
        assert_eq!(records(&out), vec!["call_cancelled"]);
        assert_eq!(pushes(&out).len(), 2);
    }
}
