//! Whether a reconnecting subscriber can be given exactly what it missed.
//!
//! ```no_run
//! use switchboard_core::{StreamPosition, recovery::{plan, Plan}};
//! let top = StreamPosition { offset: 10, epoch: "e1".into() };
//! let seen = StreamPosition { offset: 7, epoch: "e1".into() };
//! // The oldest publication still in history has offset 3.
//! assert_eq!(plan(&seen, &top, Some(3)), Plan::Fetch { after: 7, complete: true });
//! ```

use crate::StreamPosition;

/// What to do for a subscriber that asks to recover from a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The client has everything: recovered, nothing to send.
    UpToDate,
    /// Send publications with offset > `after`; `complete` says whether
    /// nothing between the client's position and the top was lost.
    Fetch {
        /// Offset the client last saw.
        after: u64,
        /// Whether every missed publication is still in history.
        complete: bool,
    },
    /// The stream was reset (other epoch) or the client claims a position
    /// from the future: not recovered; the client restarts from the top.
    Reset,
}

impl Plan {
    /// Whether the client may be told `recovered: true`.
    pub fn recovered(&self) -> bool {
        matches!(self, Plan::UpToDate | Plan::Fetch { complete: true, .. })
    }
}

/// Decides how to recover a subscriber that saw up to `seen`, given the top
/// of the stream and the oldest offset still in history (`None` if empty).
pub fn plan(seen: &StreamPosition, top: &StreamPosition, oldest: Option<u64>) -> Plan {
    if seen.epoch != top.epoch || seen.offset > top.offset {
        return Plan::Reset;
    }
    if seen.offset == top.offset {
        return Plan::UpToDate;
    }
    // The next publication the client needs is seen.offset + 1; it must
    // still be in history for the recovery to be complete.
    let complete = oldest.is_some_and(|oldest| oldest <= seen.offset + 1);
    Plan::Fetch {
        after: seen.offset,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn decisions() {
        let top = pos(10, "a");
        assert_eq!(plan(&pos(10, "a"), &top, Some(1)), Plan::UpToDate);
        assert_eq!(
            plan(&pos(5, "a"), &top, Some(1)),
            Plan::Fetch {
                after: 5,
                complete: true
            }
        );
        assert_eq!(
            plan(&pos(5, "a"), &top, Some(6)),
            Plan::Fetch {
                after: 5,
                complete: true
            }
        );
        assert_eq!(
            plan(&pos(5, "a"), &top, Some(7)),
            Plan::Fetch {
                after: 5,
                complete: false
            }
        );
        assert_eq!(
            plan(&pos(5, "a"), &top, None),
            Plan::Fetch {
                after: 5,
                complete: false
            }
        );
        assert_eq!(plan(&pos(5, "b"), &top, Some(1)), Plan::Reset);
        assert_eq!(plan(&pos(11, "a"), &top, Some(1)), Plan::Reset);
        assert!(!Plan::Reset.recovered());
    }
}
