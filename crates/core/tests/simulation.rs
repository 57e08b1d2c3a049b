//! Deterministic simulation: many clients follow a channel through a lossy
//! network, disconnect at random, and recover with `recovery::plan` against a
//! bounded history window. Every client must end with exactly the stream, in
//! order, or have been told `recovered: false` — never a silent gap.

use std::collections::VecDeque;
use switchboard_core::StreamPosition;
use switchboard_core::recovery::{Plan, plan};

/// A seeded xorshift generator: the same seed gives the same run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The server side: a stream with a bounded history window.
struct Stream {
    epoch: String,
    top: u64,
    window: VecDeque<u64>,
    size: usize,
}

impl Stream {
    fn publish(&mut self) -> u64 {
        self.top += 1;
        self.window.push_back(self.top);
        if self.window.len() > self.size {
            self.window.pop_front();
        }
        self.top
    }
    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
    fn since(&self, after: u64) -> Vec<u64> {
        self.window.iter().copied().filter(|&o| o > after).collect()
    }
}

#[derive(Default)]
struct Client {
    connected: bool,
    seen: Vec<u64>,
    last: u64,
    /// Publications in flight to this client (the network may delay them).
    inbox: VecDeque<u64>,
    told_unrecovered: bool,
}

/// Reconnects a client and recovers from its last seen position.
fn reconnect(c: &mut Client, stream: &Stream) {
    let seen = StreamPosition {
        offset: c.last,
        epoch: stream.epoch.clone(),
    };
    let missed = stream.since(c.last);
    match plan(&seen, &stream.position(), missed.first().copied()) {
        Plan::UpToDate => {}
        Plan::Fetch { after, complete } => {
            if !complete {
                c.told_unrecovered = true;
            }
            for o in stream.since(after) {
                c.seen.push(o);
                c.last = o;
            }
        }
        Plan::Reset => unreachable!("one epoch in this run"),
    }
    c.connected = true;
}

fn run(seed: u64, clients: usize, steps: usize, history: usize) -> (usize, usize) {
    let mut rng = Rng(seed);
    let mut stream = Stream {
        epoch: "e1".into(),
        top: 0,
        window: VecDeque::new(),
        size: history,
    };
    let mut cs: Vec<Client> = (0..clients).map(|_| Client::default()).collect();
    for _ in 0..steps {
        // Publish now and then; connected clients get it in order (one
        // ordered connection), possibly delayed.
        if rng.chance(40) {
            let o = stream.publish();
            for c in cs.iter_mut().filter(|c| c.connected) {
                c.inbox.push_back(o);
            }
        }
        for c in cs.iter_mut() {
            if c.connected {
                // Deliver some in-flight publications.
                while !c.inbox.is_empty() && rng.chance(70) {
                    let o = c.inbox.pop_front().unwrap();
                    assert!(o > c.last, "order broken");
                    c.seen.push(o);
                    c.last = o;
                }
                // Drop the connection: undelivered frames are lost.
                if rng.chance(3) {
                    c.connected = false;
                    c.inbox.clear();
                }
            } else if rng.chance(20) {
                reconnect(c, &stream);
            }
        }
    }
    // Everyone comes back at the end.
    for c in cs.iter_mut().filter(|c| !c.connected) {
        reconnect(c, &stream);
    }
    // Drain what is in flight.
    for c in cs.iter_mut() {
        while let Some(o) = c.inbox.pop_front() {
            c.seen.push(o);
            c.last = o;
        }
    }
    let mut complete = 0;
    let mut unrecovered = 0;
    for c in &cs {
        // Strictly increasing: never a duplicate, never out of order.
        assert!(
            c.seen.windows(2).all(|w| w[0] < w[1]),
            "duplicate or reordering"
        );
        let gapless =
            c.seen.windows(2).all(|w| w[1] == w[0] + 1) && c.seen.first().is_none_or(|&f| f == 1);
        if c.told_unrecovered {
            unrecovered += 1;
        } else {
            assert!(gapless, "a gap without recovered: false (seed {seed})");
            assert_eq!(c.last, stream.top, "caught up");
            complete += 1;
        }
    }
    (complete, unrecovered)
}

#[test]
fn large_history_recovers_everyone() {
    for seed in 1..=20 {
        let (complete, unrecovered) = run(seed, 50, 2_000, 10_000);
        assert_eq!(unrecovered, 0);
        assert_eq!(complete, 50);
    }
}

#[test]
fn small_history_never_hides_a_gap() {
    let mut told = 0;
    for seed in 1..=20 {
        let (_, unrecovered) = run(seed, 50, 2_000, 3);
        told += unrecovered;
    }
    // With a 3-message window, long disconnections must be reported.
    assert!(told > 0);
}
