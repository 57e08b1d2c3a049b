//! Holds back durable publications that arrive ahead of their turn.
//!
//! In a cluster, publications of one channel appended by *different* nodes
//! reach a third node in any order (the bus only keeps each publisher's
//! order). The store gives every durable publication a gapless offset, so a
//! receiving node can restore channel order: it releases offset `n` only
//! after `n - 1`, holds anything ahead, drops anything at or below what it
//! already released (duplicates), and when a gap does not fill by itself
//! within a deadline, asks its caller to fetch the missing range from the
//! store.
//!
//! [`Reorder`] is one channel's state; it reads no clock and does no IO.
//! The driving contract:
//!
//! 1. Create it when the node gets interested in the channel (baseline
//!    unknown: everything is held), then [`Reorder::handle_baseline`] with the
//!    store's top offset read *after* the bus subscription took effect.
//! 2. Feed every durable publication to [`Reorder::handle_publication`] and
//!    deliver what it returns, in that order.
//! 3. When [`Reorder::poll_timeout`] is due, call [`Reorder::handle_timeout`];
//!    a returned [`Gap`] is to be read from the store, then passed to
//!    [`Reorder::handle_fetched`] (or [`Reorder::handle_fetch_failed`]).
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use switchboard_core::reorder::Reorder;
//! let mut r: Reorder<&str> = Reorder::new(Duration::from_millis(500));
//! let now = Instant::now();
//! r.handle_baseline(10, now); // the store's top was 10
//! assert!(r.handle_publication(12, "twelve", now).is_empty()); // held
//! assert_eq!(r.handle_publication(11, "eleven", now), vec!["eleven", "twelve"]);
//! if let Some(when) = r.poll_timeout() {
//!     if let Some(gap) = r.handle_timeout(when) {
//!         // read offsets gap.from..=gap.to from the store, then:
//!         r.handle_fetched(vec![], when);
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A range of offsets the caller should read from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// First missing offset.
    pub from: u64,
    /// Last missing offset (inclusive).
    pub to: u64,
}

/// One channel's hold-back buffer (see the module docs).
#[derive(Debug)]
pub struct Reorder<T> {
    /// Next offset to release; `None` until the baseline is known.
    next: Option<u64>,
    held: BTreeMap<u64, T>,
    gap_deadline: Option<Instant>,
    /// Last offset of the gap whose store read is in flight.
    fetching: Option<u64>,
    gap_timeout: Duration,
    skipped: u64,
}

impl<T> Reorder<T> {
    /// A buffer with an unknown baseline that gives a gap `gap_timeout` to
    /// fill through the bus before asking for a store read.
    pub fn new(gap_timeout: Duration) -> Self {
        Self {
            next: None,
            held: BTreeMap::new(),
            gap_deadline: None,
            fetching: None,
            gap_timeout,
            skipped: 0,
        }
    }

    /// The next offset to be released, once the baseline is known.
    pub fn next_offset(&self) -> Option<u64> {
        self.next
    }

    /// Number of publications held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Offsets given up on: missing from the store too when a gap was
    /// fetched (trimmed by retention, or never committed).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether a store read is in flight.
    pub fn is_fetching(&self) -> bool {
        self.fetching.is_some()
    }

    /// Sets the baseline to the store's top offset `top` (ignored when already
    /// known); returns what is now deliverable.
    pub fn handle_baseline(&mut self, top: u64, now: Instant) -> Vec<T> {
        if self.next.is_none() {
            self.next = Some(top + 1);
        }
        self.release(now)
    }

    /// Forgets the baseline (the stream's epoch changed); everything held is
    /// dropped and new publications are held until the next baseline.
    pub fn reset(&mut self) {
        self.next = None;
        self.held.clear();
        self.gap_deadline = None;
        self.fetching = None;
    }

    /// A durable publication with `offset` arrived; returns what is now
    /// deliverable, in offset order (empty when it is held or a duplicate).
    pub fn handle_publication(&mut self, offset: u64, item: T, now: Instant) -> Vec<T> {
        if self.next.is_some_and(|next| offset < next) {
            return Vec::new(); // already released: a duplicate
        }
        self.held.entry(offset).or_insert(item);
        self.release(now)
    }

    /// When [`Reorder::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.fetching.is_some() {
            None
        } else {
            self.gap_deadline
        }
    }

    /// Time passed; returns the gap to fetch once its deadline is reached (at
    /// most one fetch at a time).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Gap> {
        let deadline = self.gap_deadline?;
        if self.fetching.is_some() || now < deadline {
            return None;
        }
        let next = self.next?;
        let first = *self.held.keys().next()?;
        self.fetching = Some(first - 1);
        Some(Gap {
            from: next,
            to: first - 1,
        })
    }

    /// The store's answer for the last [`Gap`]: the publications it has in
    /// the range (any order, extra ones ignored). Offsets of the range the
    /// store does not have are skipped; a further gap (above the range, e.g.
    /// behind publications held while the read was in flight) waits for
    /// its own deadline. A result for a read that [`Reorder::reset`] made
    /// stale is ignored. Returns what is now deliverable.
    pub fn handle_fetched(&mut self, items: Vec<(u64, T)>, now: Instant) -> Vec<T> {
        let Some(fetch_to) = self.fetching.take() else {
            return Vec::new();
        };
        let Some(next) = self.next else {
            return Vec::new();
        };
        for (offset, item) in items {
            if offset >= next {
                self.held.entry(offset).or_insert(item);
            }
        }
        let mut out = self.release(now);
        // Whatever of the fetched range is still missing is not in the store
        // either: give up on it rather than stall the channel.
        if let (Some(next), Some(&first)) = (self.next, self.held.keys().next())
            && first > next
            && next <= fetch_to
        {
            let resume = first.min(fetch_to + 1);
            self.skipped += resume - next;
            self.next = Some(resume);
            self.gap_deadline = None;
            out.extend(self.release(now));
        }
        out
    }

    /// The store read failed; the gap is retried after another timeout.
    pub fn handle_fetch_failed(&mut self, now: Instant) {
        self.fetching = None;
        if self.gap_deadline.is_some() {
            self.gap_deadline = Some(now + self.gap_timeout);
        }
    }

    fn release(&mut self, now: Instant) -> Vec<T> {
        let Some(mut next) = self.next else {
            return Vec::new();
        };
        // Drop what the baseline already covers.
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() >= next {
                break;
            }
            entry.remove();
        }
        let mut out = Vec::new();
        while let Some(item) = self.held.remove(&next) {
            out.push(item);
            next += 1;
        }
        self.next = Some(next);
        if self.held.is_empty() {
            self.gap_deadline = None;
        } else if !out.is_empty() || self.gap_deadline.is_none() {
            // A new gap (or progress on the old one) starts the clock again.
            self.gap_deadline = Some(now + self.gap_timeout);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn holds_until_baseline_then_releases_in_order() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        assert!(r.handle_publication(6, 6, now).is_empty());
        assert!(r.handle_publication(4, 4, now).is_empty());
        assert!(r.handle_publication(5, 5, now).is_empty());
        // The store's top was 4: 4 is covered by the subscriber's own read.
        assert_eq!(r.handle_baseline(4, now), vec![5, 6]);
        assert_eq!(r.next_offset(), Some(7));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_gap_above_the_fetched_range_is_not_skipped() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        r.handle_baseline(7, now);
        assert!(r.handle_publication(9, 9, now).is_empty());
        let gap = r.handle_timeout(now + T).expect("gap due");
        assert_eq!(gap, Gap { from: 8, to: 8 });
        // 11 arrives while 8 is being read; 10 is not in the fetched range.
        assert!(r.handle_publication(11, 11, now + T).is_empty());
        assert_eq!(r.handle_fetched(vec![(8, 8)], now + T), vec![8, 9]);
        assert_eq!(r.skipped(), 0);
        assert_eq!(r.next_offset(), Some(10));
        let gap = r.handle_timeout(now + T * 2).expect("next gap due");
        assert_eq!(gap, Gap { from: 10, to: 10 });
        assert_eq!(r.handle_fetched(vec![(10, 10)], now + T * 2), vec![10, 11]);
    }

    #[test]
    fn a_read_made_stale_by_a_reset_skips_nothing() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        r.handle_baseline(0, now);
        r.handle_publication(50, 50, now);
        assert_eq!(r.handle_timeout(now + T), Some(Gap { from: 1, to: 49 }));
        // The epoch changes while 1..=49 is being read: a new stream from 1.
        r.reset();
        r.handle_baseline(0, now + T);
        assert!(r.handle_publication(3, 3, now + T).is_empty());
        // The old read's (empty) answer must not skip the new 1..=2.
        assert!(r.handle_fetched(Vec::new(), now + T).is_empty());
        assert_eq!(r.skipped(), 0);
        assert_eq!(r.next_offset(), Some(1));
        assert_eq!(r.handle_publication(1, 1, now + T), vec![1]);
        assert_eq!(r.handle_publication(2, 2, now + T), vec![2, 3]);
    }

    #[test]
    fn drops_duplicates() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        r.handle_baseline(0, now);
        assert_eq!(r.handle_publication(1, 1, now), vec![1]);
        assert!(r.handle_publication(1, 1, now).is_empty());
        assert!(r.handle_publication(3, 3, now).is_empty());
        assert!(r.handle_publication(3, 30, now).is_empty());
        assert_eq!(r.handle_publication(2, 2, now), vec![2, 3]);
    }

    #[test]
    fn gap_is_fetched_after_the_deadline() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        r.handle_baseline(10, now);
        assert!(r.handle_publication(14, 14, now).is_empty());
        assert_eq!(r.poll_timeout(), Some(now + T));
        assert_eq!(r.handle_timeout(now + T / 2), None);
        let gap = r.handle_timeout(now + T).expect("gap");
        assert_eq!(gap, Gap { from: 11, to: 13 });
        assert!(r.is_fetching());
        assert_eq!(r.poll_timeout(), None);
        // 12 arrives through the bus meanwhile; the store has 11..=13.
        assert!(r.handle_publication(12, 12, now + T).is_empty());
        let out = r.handle_fetched(vec![(13, 13), (11, 11), (12, 12)], now + T);
        assert_eq!(out, vec![11, 12, 13, 14]);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.skipped(), 0);
    }

    #[test]
    fn offsets_missing_from_the_store_are_skipped() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        r.handle_baseline(0, now);
        r.handle_publication(3, 3, now);
        let gap = r.handle_timeout(now + T).unwrap();
        assert_eq!(gap, Gap { from: 1, to: 2 });
        assert_eq!(r.handle_fetched(vec![(2, 2)], now + T), vec![2, 3]);
        assert_eq!(r.skipped(), 1);
        assert_eq!(r.next_offset(), Some(4));
    }

    #[test]
    fn failed_fetch_is_retried() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        r.handle_baseline(0, now);
        r.handle_publication(2, 2, now);
        assert!(r.handle_timeout(now + T).is_some());
        r.handle_fetch_failed(now + T);
        assert_eq!(r.poll_timeout(), Some(now + 2 * T));
        assert!(r.handle_timeout(now + 2 * T).is_some());
    }

    #[test]
    fn reset_forgets_everything() {
        let now = Instant::now();
        let mut r = Reorder::new(T);
        r.handle_baseline(5, now);
        r.handle_publication(9, 9, now);
        r.reset();
        assert_eq!(r.held(), 0);
        assert!(r.handle_publication(1, 1, now).is_empty());
        assert_eq!(r.handle_baseline(0, now), vec![1]);
    }

    /// Many publishers' streams interleaved at random: every offset comes out
    /// once, in order.
    #[test]
    fn random_interleavings_come_out_in_order() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let now = Instant::now();
            let mut r = Reorder::new(T);
            r.handle_baseline(0, now);
            // Three publishers own interleaved offsets; each keeps its order.
            let mut queues: Vec<Vec<u64>> = vec![vec![]; 3];
            for o in 1..=100u64 {
                queues[(rand() % 3) as usize].push(o);
            }
            for q in &mut queues {
                q.reverse();
            }
            let mut out = Vec::new();
            while queues.iter().any(|q| !q.is_empty()) {
                let i = (rand() % 3) as usize;
                if let Some(o) = queues[i].pop() {
                    out.extend(r.handle_publication(o, o, now));
                    if rand() % 10 == 0 {
                        out.extend(r.handle_publication(o, o, now)); // echo
                    }
                }
            }
            assert_eq!(out, (1..=100).collect::<Vec<_>>());
        }
    }
}
