//! Hybrid logical clock: timestamps that follow wall time but never go
//! backwards and order causally across nodes (Lamport-compatible).
//!
//! ```no_run
//! use switchboard_core::hlc::{Hlc, Timestamp};
//! let mut clock = Hlc::new(7);
//! let local = clock.tick(1_700_000_000_000);
//! let remote = Timestamp { wall_ms: 1_700_000_000_005, logical: 0, node: 9 };
//! let after = clock.observe(1_700_000_000_001, remote);
//! assert!(after > remote && after > local);
//! ```

/// A hybrid logical clock timestamp; ordered by wall time, then logical
/// counter, then node id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Physical component, milliseconds since the Unix epoch.
    pub wall_ms: i64,
    /// Logical counter within one `wall_ms`.
    pub logical: u32,
    /// Tie breaker: the node that issued the timestamp.
    pub node: u32,
}

/// The clock of one node.
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
}

impl Hlc {
    /// A clock for node `node`.
    pub fn new(node: u32) -> Self {
        Self {
            last: Timestamp {
                wall_ms: 0,
                logical: 0,
                node,
            },
        }
    }

    /// A timestamp for a local event happening at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Timestamp {
        if now_ms > self.last.wall_ms {
            self.last.wall_ms = now_ms;
            self.last.logical = 0;
        } else {
            self.last.logical += 1;
        }
        self.last
    }

    /// A timestamp for receiving `remote` at wall time `now_ms`: greater than
    /// both `remote` and every timestamp issued so far.
    pub fn observe(&mut self, now_ms: i64, remote: Timestamp) -> Timestamp {
        let wall = now_ms.max(self.last.wall_ms).max(remote.wall_ms);
        let logical = if wall == self.last.wall_ms && wall == remote.wall_ms {
            self.last.logical.max(remote.logical) + 1
        } else if wall == self.last.wall_ms {
            self.last.logical + 1
        } else if wall == remote.wall_ms {
            remote.logical + 1
        } else {
            0
        };
        self.last.wall_ms = wall;
        self.last.logical = logical;
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_when_wall_clock_does() {
        let mut c = Hlc::new(1);
        let a = c.tick(1000);
        let b = c.tick(900);
        assert!(b > a);
        assert_eq!(b.wall_ms, 1000);
    }

    #[test]
    fn observe_orders_after_remote() {
        let mut c = Hlc::new(1);
        let remote = Timestamp {
            wall_ms: 5000,
            logical: 3,
            node: 2,
        };
        let t = c.observe(1000, remote);
        assert!(t > remote);
        let t2 = c.tick(1001);
        assert!(t2 > t);
    }
}
