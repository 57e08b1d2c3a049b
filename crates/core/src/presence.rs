//! Who is subscribed to which channel, for presence queries and join/leave.
//!
//! Entries are added on subscribe and removed on unsubscribe or disconnect.
//! Each entry carries an expiry refreshed by the connection's heartbeat, so a
//! connection that vanished without a close (or a node that died) disappears
//! after the TTL: call [`PresenceTable::expire`] with the current time and send
//! the returned leaves.
//!
//! ```no_run
//! use switchboard_core::{presence::PresenceTable, PublisherInfo};
//! let mut table = PresenceTable::default();
//! let info = PublisherInfo { user: "alice".into(), client: "c1".into(), ..Default::default() };
//! table.add("chat", info, 1_000 + 60_000);
//! for (channel, gone) in table.expire(200_000) { /* push leave(channel, gone) */ }
//! ```

use crate::PublisherInfo;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug)]
struct Entry {
    info: PublisherInfo,
    expires_at_ms: i64,
}

/// Presence of every channel on this node.
#[derive(Debug, Default)]
pub struct PresenceTable {
    channels: HashMap<String, HashMap<String, Entry>>,
}

/// Presence counts of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Connections subscribed.
    pub num_clients: u32,
    /// Distinct users among them.
    pub num_users: u32,
}

impl PresenceTable {
    /// Adds or refreshes a client in a channel; returns true if it was new.
    pub fn add(&mut self, channel: &str, info: PublisherInfo, expires_at_ms: i64) -> bool {
        let clients = self.channels.entry(channel.to_string()).or_default();
        clients
            .insert(
                info.client.clone(),
                Entry {
                    info,
                    expires_at_ms,
                },
            )
            .is_none()
    }

    /// Removes a client from a channel; returns its info if it was there.
    pub fn remove(&mut self, channel: &str, client: &str) -> Option<PublisherInfo> {
        let clients = self.channels.get_mut(channel)?;
        let removed = clients.remove(client).map(|e| e.info);
        if clients.is_empty() {
            self.channels.remove(channel);
        }
        removed
    }

    /// Extends the expiry of a client in the given channels.
    pub fn touch<'a>(
        &mut self,
        channels: impl IntoIterator<Item = &'a str>,
        client: &str,
        expires_at_ms: i64,
    ) {
        for ch in channels {
            if let Some(e) = self.channels.get_mut(ch).and_then(|c| c.get_mut(client)) {
                e.expires_at_ms = expires_at_ms;
            }
        }
    }

    /// Removes entries that expired at `now_ms`, returning them as leaves.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(String, PublisherInfo)> {
        let mut gone = Vec::new();
        self.channels.retain(|ch, clients| {
            clients.retain(|_, e| {
                let keep = e.expires_at_ms > now_ms;
                if !keep {
                    gone.push((ch.clone(), e.info.clone()));
                }
                keep
            });
            !clients.is_empty()
        });
        gone
    }

    /// Everyone in a channel.
    pub fn get(&self, channel: &str) -> Vec<PublisherInfo> {
        self.channels
            .get(channel)
            .map(|c| c.values().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Counts for a channel.
    pub fn stats(&self, channel: &str) -> PresenceStats {
        let Some(clients) = self.channels.get(channel) else {
            return PresenceStats::default();
        };
        let users: HashSet<&str> = clients.values().map(|e| e.info.user.as_str()).collect();
        PresenceStats {
            num_clients: clients.len() as u32,
            num_users: users.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(user: &str, client: &str) -> PublisherInfo {
        PublisherInfo {
            user: user.into(),
            client: client.into(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_users_and_clients() {
        let mut t = PresenceTable::default();
        assert!(t.add("c", info("alice", "1"), 100));
        assert!(t.add("c", info("alice", "2"), 100));
        assert!(t.add("c", info("bob", "3"), 100));
        assert!(!t.add("c", info("bob", "3"), 200));
        assert_eq!(
            t.stats("c"),
            PresenceStats {
                num_clients: 3,
                num_users: 2
            }
        );
        assert_eq!(t.remove("c", "1").unwrap().user, "alice");
        assert_eq!(t.stats("c").num_clients, 2);
    }

    #[test]
    fn expiry_turns_silent_clients_into_leaves() {
        let mut t = PresenceTable::default();
        t.add("c", info("alice", "1"), 100);
        t.add("c", info("bob", "2"), 100);
        t.touch(["c"], "2", 300);
        let gone = t.expire(150);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].1.client, "1");
        assert_eq!(t.stats("c").num_clients, 1);
        assert_eq!(t.expire(301).len(), 1);
        assert_eq!(t.stats("c"), PresenceStats::default());
    }
}
