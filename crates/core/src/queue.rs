//! The bounded send queue of one connection.
//!
//! Frames wait here until the connection's writer takes them. The queue is
//! bounded in bytes and in frames. When a push would pass a bound, ephemeral
//! frames are dropped first (oldest first); a conflatable frame replaces the
//! queued frame with the same key in place; a durable frame that still does
//! not fit is refused with [`Overflow`], and the caller disconnects the client
//! with the "slow" code so that it reconnects and recovers from history —
//! never a silent gap.
//!
//! ```no_run
//! use switchboard_core::queue::{SendQueue, Class};
//! use bytes::Bytes;
//! let mut q = SendQueue::new(1 << 20, 1000);
//! if q.push(Bytes::from_static(b"{}"), Class::Durable).is_err() {
//!     // disconnect with code 3008 "slow"
//! }
//! let batch = q.pop_batch(64 * 1024); // write these in one syscall
//! ```

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// How a frame may be treated under pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Must be delivered or the client disconnected (replies, durable pubs).
    Durable,
    /// May be dropped when the queue is full (typing, cursors).
    Ephemeral,
    /// Ephemeral, and replaces a queued frame with the same key.
    Conflate(u64),
}

/// What happened to a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Appended at the end.
    Queued,
    /// Replaced a queued frame with the same conflation key.
    Conflated,
    /// An ephemeral frame that did not fit was dropped.
    Dropped,
}

/// A durable frame did not fit: the client is too slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug)]
struct Slot {
    frame: Option<Bytes>,
    class: Class,
}

/// A per-connection send queue bounded in bytes and frames.
#[derive(Debug)]
pub struct SendQueue {
    slots: VecDeque<Slot>,
    head_seq: u64,
    bytes: usize,
    frames: usize,
    max_bytes: usize,
    max_frames: usize,
    by_key: HashMap<u64, u64>,
    dropped: u64,
}

impl SendQueue {
    /// A queue holding at most `max_bytes` bytes and `max_frames` frames.
    pub fn new(max_bytes: usize, max_frames: usize) -> Self {
        Self {
            slots: VecDeque::new(),
            head_seq: 0,
            bytes: 0,
            frames: 0,
            max_bytes,
            max_frames: max_frames.max(1),
            by_key: HashMap::new(),
            dropped: 0,
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Ephemeral frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn fits(&self, extra: usize) -> bool {
        self.frames < self.max_frames && self.bytes + extra <= self.max_bytes
    }

    /// Queues a frame, dropping or conflating ephemeral frames as needed.
    pub fn push(&mut self, frame: Bytes, class: Class) -> Result<Pushed, Overflow> {
        if let Class::Conflate(key) = class
            && let Some(&seq) = self.by_key.get(&key)
        {
            let idx = (seq - self.head_seq) as usize;
            let slot = &mut self.slots[idx];
            let old = slot.frame.replace(frame.clone()).map_or(0, |f| f.len());
            self.bytes = self.bytes - old + frame.len();
            return Ok(Pushed::Conflated);
        }
        if !self.fits(frame.len()) {
            self.evict_ephemeral(frame.len());
        }
        if !self.fits(frame.len()) {
            // Even an empty queue takes one frame, so a frame larger than the
            // byte bound still goes out when nothing else waits.
            if self.frames > 0 || frame.len() <= self.max_bytes {
                return match class {
                    Class::Durable => Err(Overflow),
                    _ => {
                        self.dropped += 1;
                        Ok(Pushed::Dropped)
                    }
                };
            }
        }
        let seq = self.head_seq + self.slots.len() as u64;
        if let Class::Conflate(key) = class {
            self.by_key.insert(key, seq);
        }
        self.bytes += frame.len();
        self.frames += 1;
        self.slots.push_back(Slot {
            frame: Some(frame),
            class,
        });
        Ok(Pushed::Queued)
    }

    fn evict_ephemeral(&mut self, extra: usize) {
        for i in 0..self.slots.len() {
            if self.fits(extra) {
                break;
            }
            let slot = &mut self.slots[i];
            if slot.class == Class::Durable {
                continue;
            }
            if let Some(f) = slot.frame.take() {
                self.bytes -= f.len();
                self.frames -= 1;
                self.dropped += 1;
                if let Class::Conflate(key) = slot.class {
                    self.by_key.remove(&key);
                }
            }
        }
        self.compact_front();
    }

    fn compact_front(&mut self) {
        while self.slots.front().is_some_and(|s| s.frame.is_none()) {
            self.slots.pop_front();
            self.head_seq += 1;
        }
    }

    /// Takes frames from the front, up to about `max_bytes` in total (always
    /// at least one frame when the queue is not empty).
    pub fn pop_batch(&mut self, max_bytes: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut taken = 0;
        while let Some(slot) = self.slots.front_mut() {
            if let Some(f) = &slot.frame {
                if !out.is_empty() && taken + f.len() > max_bytes {
                    break;
                }
                taken += f.len();
            }
            let slot = self.slots.pop_front().expect("front exists");
            let seq = self.head_seq;
            self.head_seq += 1;
            if let Some(f) = slot.frame {
                if let Class::Conflate(key) = slot.class
                    && self.by_key.get(&key) == Some(&seq)
                {
                    self.by_key.remove(&key);
                }
                self.bytes -= f.len();
                self.frames -= 1;
                out.push(f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn durable_overflow_is_refused_not_dropped() {
        let mut q = SendQueue::new(10, 100);
        assert_eq!(q.push(b("12345"), Class::Durable), Ok(Pushed::Queued));
        assert_eq!(q.push(b("12345"), Class::Durable), Ok(Pushed::Queued));
        assert_eq!(q.push(b("1"), Class::Durable), Err(Overflow));
        assert_eq!(q.pop_batch(100), vec![b("12345"), b("12345")]);
    }

    #[test]
    fn ephemeral_frames_make_room_for_durable_ones() {
        let mut q = SendQueue::new(10, 100);
        q.push(b("eeeee"), Class::Ephemeral).unwrap();
        q.push(b("ddddd"), Class::Durable).unwrap();
        assert_eq!(q.push(b("DDDDD"), Class::Durable), Ok(Pushed::Queued));
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.pop_batch(100), vec![b("ddddd"), b("DDDDD")]);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn conflation_keeps_latest_per_key_in_place() {
        let mut q = SendQueue::new(1000, 100);
        q.push(b("car1@a"), Class::Conflate(1)).unwrap();
        q.push(b("car2@a"), Class::Conflate(2)).unwrap();
        assert_eq!(
            q.push(b("car1@b"), Class::Conflate(1)),
            Ok(Pushed::Conflated)
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_batch(1000), vec![b("car1@b"), b("car2@a")]);
        // After delivery the key starts fresh.
        assert_eq!(q.push(b("car1@c"), Class::Conflate(1)), Ok(Pushed::Queued));
    }

    #[test]
    fn frame_bound_applies() {
        let mut q = SendQueue::new(1000, 2);
        q.push(b("a"), Class::Durable).unwrap();
        q.push(b("b"), Class::Durable).unwrap();
        assert_eq!(q.push(b("c"), Class::Durable), Err(Overflow));
        assert_eq!(q.push(b("c"), Class::Ephemeral), Ok(Pushed::Dropped));
    }

    #[test]
    fn batches_respect_byte_budget() {
        let mut q = SendQueue::new(1000, 100);
        for _ in 0..5 {
            q.push(b("xxxx"), Class::Durable).unwrap();
        }
        assert_eq!(q.pop_batch(9).len(), 2);
        assert_eq!(q.pop_batch(1).len(), 1);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn random_operations_keep_counters_consistent() {
        let mut q = SendQueue::new(200, 20);
        let mut seed = 7u64;
        for _ in 0..10_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (seed >> 33) as usize;
            match r % 4 {
                0 => {
                    let _ = q.push(Bytes::from(vec![0; r % 30]), Class::Durable);
                }
                1 => {
                    let _ = q.push(Bytes::from(vec![0; r % 30]), Class::Ephemeral);
                }
                2 => {
                    let _ = q.push(
                        Bytes::from(vec![0; r % 30]),
                        Class::Conflate((r % 5) as u64),
                    );
                }
                _ => {
                    q.pop_batch(r % 100);
                }
            }
            assert!(q.len() <= 20);
            assert!(q.bytes() <= 200 + 30);
        }
        let rest: usize = q.pop_batch(usize::MAX).iter().map(Bytes::len).sum();
        assert_eq!(q.bytes(), 0);
        assert!(rest <= 230);
    }
}
