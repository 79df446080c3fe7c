//! Service discovery names (weaveDNS): the sans-IO table of DNS entries
//! gossiped on the `dns` channel.
//!
//! [`Dns`] holds every peer's entries in an [`EntrySet`] (a CRDT, see
//! [`entries`]) and applies the channel's policy around it:
//! - only the origin changes its entries: [`Dns::add`] and [`Dns::remove`]
//!   raise the version, deletion leaves a tombstone;
//! - an incoming entry naming us as origin that differs from our copy is
//!   overridden by ours at a higher version (and one we do not hold is
//!   tombstoned), so a restarted peer clears what it no longer has;
//! - entries whose origin the mesh does not know are dropped, and
//!   [`Dns::handle_peers`] drops all entries of peers that are gone
//!   ([`Dns::forget_peer`] for `rmpeer`);
//! - tombstones are purged [`TOMBSTONE_TTL`] after we first held them.
//!
//! Call protocol: feed [`Dns::handle_gossip`] / [`Dns::handle_broadcast`]
//! with payloads, [`Dns::handle_timeout`] at [`Dns::poll_timeout`]; after
//! every input drain [`Dns::poll_transmit`] (deltas to broadcast).
//! [`Dns::full_state`] is the periodic and new-neighbour gossip.

pub mod entries;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub use entries::{EntrySet, Key, Stamp};
pub use wire::{DnsMsg, WireEntry, WireError};

use crate::ids::PeerName;

/// The gossip channel's name.
pub const CHANNEL: &str = "dns";
/// How long a tombstone is kept (weave's 30 min): long enough for every
/// peer to have heard of the deletion through periodic gossip.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(30 * 60);
/// Most entries (tombstones included) in the table: a full state of this
/// many worst-case entries still fits one gossip message.
pub const MAX_TABLE_ENTRIES: usize = 16_384;
/// Most entries one origin may hold in our table, so one misbehaving peer
/// cannot fill it for everyone.
pub const MAX_ENTRIES_PER_ORIGIN: usize = 4_096;
/// The container id of names registered with no container (weave's).
pub const EXTERN_CONTAINER: &str = "weave:extern";

/// Why a local registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name is not a DNS name we serve.
    #[error("invalid name: {0}; use letters, digits, '-' and '_' in dot-separated labels")]
    Name(String),
    /// The container id is empty or too long.
    #[error("invalid container id {0:?}: use a Docker id or name of 1 to 128 characters")]
    Container(String),
    /// The table or our share of it is full.
    #[error(
        "the DNS table is full ({0} entries): remove names with `meshnet dns-remove` or stop containers"
    )]
    Full(usize),
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Incoming entries dropped because their origin is unknown.
    pub unknown_origin: u64,
    /// Incoming entries dropped because a table bound was reached.
    pub over_limit: u64,
    /// Our entries re-asserted over a differing copy from elsewhere.
    pub reasserted: u64,
    /// Undecodable payloads.
    pub malformed: u64,
}

/// One entry as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub name: String,
    pub addr: Ipv4Addr,
    pub container: String,
    pub origin: PeerName,
    pub version: u64,
    pub tombstone: bool,
}

/// The DNS table of one peer. See the module docs for the call protocol.
#[derive(Debug)]
pub struct Dns {
    me: PeerName,
    set: EntrySet,
    /// When each tombstone was first held here (local clock), for purging.
    tombstoned: BTreeMap<Key, Instant>,
    /// Entries per origin.
    per_origin: BTreeMap<PeerName, usize>,
    /// Peers the mesh knows, besides us.
    known: BTreeSet<PeerName>,
    /// Changes not yet broadcast.
    pending: EntrySet,
    counters: Counters,
}

/// Lowercases `name`, appends the trailing dot, and validates it.
pub fn normalize_name(name: &str) -> Result<String, DnsError> {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    wire::valid_name(&n).map_err(DnsError::Name)?;
    Ok(n)
}

impl Dns {
    /// An empty table for peer `me`.
    pub fn new(me: PeerName) -> Dns {
        Dns {
            me,
            set: EntrySet::new(),
            tombstoned: BTreeMap::new(),
            per_origin: BTreeMap::new(),
            known: BTreeSet::new(),
            pending: EntrySet::new(),
            counters: Counters::default(),
        }
    }

    /// Registers `name` (any case, with or without the trailing dot) for
    /// `container` at `addr`. Returns whether anything changed (a live
    /// entry already there is left alone).
    pub fn add(
        &mut self,
        container: &str,
        addr: Ipv4Addr,
        name: &str,
        now: Instant,
    ) -> Result<bool, DnsError> {
        if container.is_empty() || container.len() > wire::MAX_CONTAINER_LEN {
            return Err(DnsError::Container(container.to_owned()));
        }
        let key = Key {
            name: normalize_name(name)?,
            origin: self.me,
            container: container.to_owned(),
            addr,
        };
        let version = match self.set.stamp(&key) {
            Some(s) if s.is_live() => return Ok(false),
            Some(s) => s.version + 1,
            None => {
                self.check_room(self.me).map_err(DnsError::Full)?;
                1
            }
        };
        self.set_own(key, Stamp::live(version), now);
        Ok(true)
    }

    /// Tombstones our live entries of `container` (all containers when
    /// `None`), narrowed to `addr` and `name` when given. Returns how many
    /// were removed.
    pub fn remove(
        &mut self,
        container: Option<&str>,
        addr: Option<Ipv4Addr>,
        name: Option<&str>,
        now: Instant,
    ) -> usize {
        let name = match name.map(normalize_name) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return 0,
            None => None,
        };
        let doomed: Vec<(Key, Stamp)> = self
            .set
            .iter()
            .filter(|(k, s)| {
                s.is_live()
                    && k.origin == self.me
                    && container.is_none_or(|c| c == k.container)
                    && addr.is_none_or(|a| a == k.addr)
                    && name.as_ref().is_none_or(|n| *n == k.name)
            })
            .map(|(k, s)| (k.clone(), s))
            .collect();
        for (k, s) in &doomed {
            let dead = Stamp {
                version: s.version + 1,
                tombstone: true,
            };
            self.set_own(k.clone(), dead, now);
        }
        doomed.len()
    }

    /// Tombstones every live entry we registered whose container is not in
    /// `running` (after a restart, or when container events were missed).
    pub fn retain_containers(&mut self, running: &BTreeSet<String>, now: Instant) -> usize {
        let gone: BTreeSet<String> = self
            .set
            .iter()
            .filter(|(k, s)| {
                s.is_live()
                    && k.origin == self.me
                    && k.container != EXTERN_CONTAINER
                    && !running.contains(&k.container)
            })
            .map(|(k, _)| k.container.clone())
            .collect();
        gone.iter()
            .map(|c| self.remove(Some(c), None, None, now))
            .sum()
    }

    /// Every live address registered for `name` (lowercase FQDN), each
    /// once, in table order.
    pub fn lookup(&self, name: &str) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for (k, s) in self.set.named(name) {
            if s.is_live() && !out.contains(&k.addr) {
                out.push(k.addr);
            }
        }
        out
    }

    /// Whether `name` (lowercase FQDN) has a live entry.
    pub fn exists(&self, name: &str) -> bool {
        self.set.named(name).any(|(_, s)| s.is_live())
    }

    /// The first live name registered for `addr` (table order).
    pub fn reverse(&self, addr: Ipv4Addr) -> Option<&str> {
        self.set
            .iter()
            .find(|(k, s)| s.is_live() && k.addr == addr)
            .map(|(k, _)| k.name.as_str())
    }

    /// Every entry, tombstones included, in table order.
    pub fn entries(&self) -> Vec<EntryView> {
        self.set
            .iter()
            .map(|(k, s)| EntryView {
                name: k.name.clone(),
                addr: k.addr,
                container: k.container.clone(),
                origin: k.origin,
                version: s.version,
                tombstone: s.tombstone,
            })
            .collect()
    }

    /// Number of live entries.
    pub fn live_count(&self) -> usize {
        self.set.iter().filter(|(_, s)| s.is_live()).count()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The peers the mesh knows now. Entries of every other origin are
    /// dropped outright (weave's `PeerGone`). Returns how many went.
    pub fn handle_peers(&mut self, known: BTreeSet<PeerName>) -> usize {
        self.known = known;
        let (me, known) = (self.me, &self.known);
        let n = self
            .set
            .retain(|k, _| k.origin == me || known.contains(&k.origin));
        if n > 0 {
            self.reindex();
        }
        n
    }

    /// Drops every entry of `peer` (after `rmpeer`). Returns how many went.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        if peer == self.me {
            return 0;
        }
        self.known.remove(&peer);
        let n = self.set.retain(|k, _| k.origin != peer);
        if n > 0 {
            self.reindex();
        }
        n
    }

    /// The whole table, for a new neighbour and periodic gossip.
    pub fn full_state(&self) -> Vec<u8> {
        DnsMsg::from_set(&self.set).encode()
    }

    /// Gossip from neighbour `src` (a full state or a relayed delta).
    /// Returns what was new to us, to relay onwards.
    pub fn handle_gossip(
        &mut self,
        _src: PeerName,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, WireError> {
        let changed = self.merge(payload, now)?;
        Ok((!changed.is_empty()).then(|| DnsMsg::from_set(&changed).encode()))
    }

    /// A broadcast originated by `src` (a delta).
    pub fn handle_broadcast(
        &mut self,
        _src: PeerName,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), WireError> {
        self.merge(payload, now).map(drop)
    }

    /// The next delta to broadcast.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            return None;
        }
        let delta = std::mem::take(&mut self.pending);
        Some(DnsMsg::from_set(&delta).encode())
    }

    /// When the next tombstone is due for purging.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tombstoned.values().min().map(|t| *t + TOMBSTONE_TTL)
    }

    /// Purges tombstones older than [`TOMBSTONE_TTL`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .tombstoned
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= TOMBSTONE_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.tombstoned.remove(&k);
            if self.set.stamp(&k).is_some_and(|s| s.tombstone) {
                self.set.remove(&k);
            }
        }
        self.reindex();
    }

    fn merge(&mut self, payload: &[u8], now: Instant) -> Result<EntrySet, WireError> {
        let msg = DnsMsg::decode(payload).inspect_err(|_| self.counters.malformed += 1)?;
        let mut changed = EntrySet::new();
        for e in msg.entries {
            let (key, stamp) = e.into_pair();
            if key.origin == self.me {
                self.reassert(key, stamp, now);
                continue;
            }
            if !self.known.contains(&key.origin) {
                self.counters.unknown_origin += 1;
                continue;
            }
            if self.set.stamp(&key).is_none() && self.check_room(key.origin).is_err() {
                self.counters.over_limit += 1;
                continue;
            }
            if self.join(key.clone(), stamp, now) {
                changed.set(key, stamp);
            }
        }
        Ok(changed)
    }

    /// Another peer holds `stamp` for an entry of ours: ours wins.
    fn reassert(&mut self, key: Key, theirs: Stamp, now: Instant) {
        let ours = match self.set.stamp(&key) {
            Some(s) if s == theirs => return,
            Some(s) => Stamp {
                version: s.version.max(theirs.version) + 1,
                tombstone: s.tombstone,
            },
            // Not ours (any more): a restart forgot it. Kill it everywhere.
            None if theirs.tombstone => return,
            None => Stamp {
                version: theirs.version + 1,
                tombstone: true,
            },
        };
        if self.set.stamp(&key).is_none() && self.check_room(self.me).is_err() {
            self.counters.over_limit += 1;
            return;
        }
        self.counters.reasserted += 1;
        self.set_own(key, ours, now);
    }

    /// Joins one entry, keeping the tombstone clock and counts.
    fn join(&mut self, key: Key, stamp: Stamp, now: Instant) -> bool {
        let new_key = self.set.stamp(&key).is_none();
        if !self.set.join_one(key.clone(), stamp) {
            return false;
        }
        if new_key {
            *self.per_origin.entry(key.origin).or_default() += 1;
        }
        if stamp.tombstone {
            self.tombstoned.entry(key).or_insert(now);
        } else {
            self.tombstoned.remove(&key);
        }
        true
    }

    /// Our own change: set, remember for the next broadcast.
    fn set_own(&mut self, key: Key, stamp: Stamp, now: Instant) {
        let new_key = self.set.stamp(&key).is_none();
        self.set.set(key.clone(), stamp);
        if new_key {
            *self.per_origin.entry(key.origin).or_default() += 1;
        }
        if stamp.tombstone {
            self.tombstoned.entry(key.clone()).or_insert(now);
        } else {
            self.tombstoned.remove(&key);
        }
        self.pending.set(key, stamp);
    }

    /// Whether one more entry of `origin` fits; the error is the bound hit.
    fn check_room(&self, origin: PeerName) -> Result<(), usize> {
        if self.set.len() >= MAX_TABLE_ENTRIES {
            return Err(MAX_TABLE_ENTRIES);
        }
        if self.per_origin.get(&origin).copied().unwrap_or(0) >= MAX_ENTRIES_PER_ORIGIN {
            return Err(MAX_ENTRIES_PER_ORIGIN);
        }
        Ok(())
    }

    /// Recounts entries per origin and drops clocks of purged tombstones.
    fn reindex(&mut self) {
        self.per_origin.clear();
        for (k, _) in self.set.iter() {
            *self.per_origin.entry(k.origin).or_default() += 1;
        }
        let set = &self.set;
        self.tombstoned
            .retain(|k, _| set.stamp(k).is_some_and(|s| s.tombstone));
    }
}

#[cfg(test)]
mod tests;
