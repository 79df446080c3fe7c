//! The pure CRDT of DNS entries: a map from an entry's identity to its
//! [`Stamp`], joined key by key with the larger stamp winning.
//!
//! An entry's identity is (name, origin peer, container, address); only the
//! origin changes its own entries, and every change raises the version, so
//! the join (per-key maximum over a total order) is commutative,
//! associative and idempotent (see the property tests in `tests/dns.rs`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::ids::PeerName;

/// What identifies one entry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Key {
    /// Fully qualified, lowercase, with the trailing dot (`web.weave.local.`).
    pub name: String,
    /// The peer that registered it: the only one that may change it.
    pub origin: PeerName,
    /// The container id (`weave:extern` for names with no container).
    pub container: String,
    /// The container's address.
    pub addr: Ipv4Addr,
}

/// An entry's version and liveness; ordered by version, then tombstone, so
/// at equal versions a deletion wins.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// Raised by the origin on every change.
    pub version: u64,
    /// Deleted (the container died or the name was removed).
    pub tombstone: bool,
}

impl Stamp {
    /// A live entry at `version`.
    pub fn live(version: u64) -> Stamp {
        Stamp {
            version,
            tombstone: false,
        }
    }

    /// Whether the entry answers queries.
    pub fn is_live(self) -> bool {
        !self.tombstone
    }
}

/// A set of entries with their stamps.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct EntrySet {
    map: BTreeMap<Key, Stamp>,
}

impl EntrySet {
    /// An empty set.
    pub fn new() -> EntrySet {
        EntrySet::default()
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The stamp of `key`.
    pub fn stamp(&self, key: &Key) -> Option<Stamp> {
        self.map.get(key).copied()
    }

    /// Joins one entry; returns whether it changed the set.
    pub fn join_one(&mut self, key: Key, stamp: Stamp) -> bool {
        match self.map.get_mut(&key) {
            Some(s) if *s >= stamp => false,
            Some(s) => {
                *s = stamp;
                true
            }
            None => {
                self.map.insert(key, stamp);
                true
            }
        }
    }

    /// Joins `other` into `self`; returns the entries that were new or newer.
    pub fn join(&mut self, other: &EntrySet) -> EntrySet {
        let mut changed = EntrySet::new();
        for (k, s) in &other.map {
            if self.join_one(k.clone(), *s) {
                changed.map.insert(k.clone(), *s);
            }
        }
        changed
    }

    /// Sets `key` to `stamp` whatever it held (the origin's own changes).
    pub fn set(&mut self, key: Key, stamp: Stamp) {
        self.map.insert(key, stamp);
    }

    /// Drops `key` outright (tombstone purge).
    pub fn remove(&mut self, key: &Key) -> Option<Stamp> {
        self.map.remove(key)
    }

    /// Drops every entry `keep` refuses; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&Key, Stamp) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|k, s| keep(k, *s));
        before - self.map.len()
    }

    /// All entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, Stamp)> {
        self.map.iter().map(|(k, s)| (k, *s))
    }

    /// The entries named exactly `name` (lowercase FQDN), in key order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Key, Stamp)> + 'a {
        self.map
            .range(name_start(name)..)
            .take_while(move |(k, _)| k.name == name)
            .map(|(k, s)| (k, *s))
    }
}

impl FromIterator<(Key, Stamp)> for EntrySet {
    /// Joins every pair (a repeated key keeps its largest stamp).
    fn from_iter<I: IntoIterator<Item = (Key, Stamp)>>(iter: I) -> EntrySet {
        let mut set = EntrySet::new();
        for (k, s) in iter {
            set.join_one(k, s);
        }
        set
    }
}

/// The smallest key with this name.
fn name_start(name: &str) -> Key {
    Key {
        name: name.to_owned(),
        origin: PeerName::default(),
        container: String::new(),
        addr: Ipv4Addr::UNSPECIFIED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, addr: u8) -> Key {
        Key {
            name: name.into(),
            origin: PeerName::new(1).expect("name"),
            container: "c".into(),
            addr: Ipv4Addr::new(10, 0, 0, addr),
        }
    }

    #[test]
    fn larger_stamp_wins_and_tombstone_wins_a_tie() {
        let mut s = EntrySet::new();
        assert!(s.join_one(key("a.", 1), Stamp::live(2)));
        assert!(!s.join_one(key("a.", 1), Stamp::live(1)));
        assert!(!s.join_one(key("a.", 1), Stamp::live(2)));
        let dead = Stamp {
            version: 2,
            tombstone: true,
        };
        assert!(s.join_one(key("a.", 1), dead));
        assert!(!s.join_one(key("a.", 1), Stamp::live(2)));
        assert_eq!(s.stamp(&key("a.", 1)), Some(dead));
    }

    #[test]
    fn named_finds_exactly_that_name() {
        let s: EntrySet = [
            (key("a.", 1), Stamp::live(1)),
            (key("a.", 2), Stamp::live(1)),
            (key("ab.", 3), Stamp::live(1)),
            (key("", 4), Stamp::live(1)),
        ]
        .into_iter()
        .collect();
        let addrs: Vec<_> = s.named("a.").map(|(k, _)| k.addr.octets()[3]).collect();
        assert_eq!(addrs, [1, 2]);
        assert_eq!(s.named("b.").count(), 0);
    }
}
