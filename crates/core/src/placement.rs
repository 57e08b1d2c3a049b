//! Where a room lives: weighted rendezvous hashing over media nodes.
//!
//! Every gateway that has to place a room computes the same choice from the
//! same candidate list, so concurrent first joins mostly agree even before
//! the compare-and-set in the node registry settles it. Each candidate's
//! score is `weight / -ln(u)` with `u` a hash of (key, node) in (0, 1) and
//! `weight = 1 / (1 + load)`: with equal loads rooms spread evenly, a
//! loaded node gets proportionally fewer new rooms, and adding or removing a
//! node only moves the rooms that choose it.

/// A node that may hold rooms.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<'a> {
    /// Node id.
    pub id: &'a str,
    /// Current load (e.g. peers); higher loads attract fewer rooms.
    pub load: f64,
}

/// The candidate `key` belongs on, by weighted rendezvous hashing (`None`
/// when there are no candidates). Ties are broken by node id so the answer
/// does not depend on the list's order.
pub fn choose<'a>(key: &str, candidates: &[Candidate<'a>]) -> Option<&'a str> {
    let key_hash = fnv1a(key.as_bytes());
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let s = score(key_hash, c);
        best = match best {
            Some((bs, bid)) if bs > s || (bs == s && bid <= c.id) => Some((bs, bid)),
            _ => Some((s, c.id)),
        };
    }
    best.map(|(_, id)| id)
}

fn score(key_hash: u64, c: &Candidate<'_>) -> f64 {
    let h = splitmix64(key_hash ^ fnv1a(c.id.as_bytes()));
    // 53 random bits in (0, 1): never 0, so ln is finite and negative.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let load = if c.load.is_finite() {
        c.load.max(0.0)
    } else {
        f64::MAX
    };
    let weight = 1.0 / (1.0 + load);
    weight / -u.ln()
}

/// FNV-1a, 64 bits: stable across processes, versions and platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A finalizer that spreads FNV's weak low bits over the whole word.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn nodes<'a>(ids: &[&'a str], load: f64) -> Vec<Candidate<'a>> {
        ids.iter().map(|id| Candidate { id, load }).collect()
    }

    fn spread(cands: &[Candidate<'_>], rooms: usize) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for i in 0..rooms {
            let n = choose(&format!("room-{i}"), cands).unwrap();
            *out.entry(n.to_string()).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn no_candidates_no_choice() {
        assert_eq!(choose("r", &[]), None);
    }

    #[test]
    fn same_inputs_same_choice_whatever_the_order() {
        let a = nodes(&["n1", "n2", "n3"], 0.0);
        let mut b = a.clone();
        b.reverse();
        for i in 0..200 {
            let k = format!("room-{i}");
            assert_eq!(choose(&k, &a), choose(&k, &b));
        }
    }

    #[test]
    fn equal_loads_spread_rooms_evenly() {
        let s = spread(&nodes(&["n1", "n2", "n3"], 5.0), 3000);
        for n in ["n1", "n2", "n3"] {
            let c = s[n];
            assert!((800..=1200).contains(&c), "{n} got {c} of 3000: {s:?}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_rooms() {
        let three = nodes(&["n1", "n2", "n3"], 0.0);
        let two = nodes(&["n1", "n3"], 0.0);
        for i in 0..1000 {
            let k = format!("room-{i}");
            let before = choose(&k, &three).unwrap();
            let after = choose(&k, &two).unwrap();
            if before != "n2" {
                assert_eq!(before, after, "{k} moved although its node stayed");
            }
        }
    }

    #[test]
    fn loaded_node_gets_fewer_rooms() {
        let cands = vec![
            Candidate {
                id: "busy",
                load: 9.0,
            },
            Candidate {
                id: "idle",
                load: 0.0,
            },
        ];
        let s = spread(&cands, 2000);
        let busy = s.get("busy").copied().unwrap_or(0);
        // Weights 0.1 vs 1: the busy node's share is about 1/11.
        assert!(busy < 350, "busy node got {busy} of 2000");
        assert!(busy > 50, "busy node should still get some: {busy}");
    }

    #[test]
    fn nonsense_loads_do_not_break_the_choice() {
        let cands = vec![
            Candidate {
                id: "a",
                load: f64::NAN,
            },
            Candidate {
                id: "b",
                load: -3.0,
            },
            Candidate {
                id: "c",
                load: f64::INFINITY,
            },
        ];
        assert!(choose("room", &cands).is_some());
    }
}
