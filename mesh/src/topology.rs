//! The topology store: what every known peer reports about itself, merged by
//! `(version, uid)`, plus the bookkeeping that turns our own changes into coalesced
//! [`PeerDelta`]s. Pure data: no timers here, the [`crate::Mesh`] decides when to send.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::{PeerName, PeerUid, ShortId};
use crate::keys::PublicKey;
use crate::wire::{ConnSummary, Hello, PeerDelta, PeerRecord};

/// Uid of a placeholder: a peer known only as the far end of someone's connection.
const PLACEHOLDER_UID: PeerUid = PeerUid(0);

/// One peer as we currently believe it to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Its static key (placeholders have none).
    pub key: Option<PublicKey>,
    pub nickname: String,
    pub uid: PeerUid,
    pub version: u64,
    pub short_id: ShortId,
    pub listen_port: u16,
    pub conns: BTreeMap<PeerName, ConnSummary>,
}

impl Peer {
    fn placeholder() -> Peer {
        Peer {
            key: None,
            nickname: String::new(),
            uid: PLACEHOLDER_UID,
            version: 0,
            short_id: ShortId::default(),
            listen_port: 0,
            conns: BTreeMap::new(),
        }
    }

    pub fn is_placeholder(&self) -> bool {
        self.uid == PLACEHOLDER_UID
    }

    fn from_record(r: &PeerRecord) -> Peer {
        Peer {
            key: Some(r.key),
            nickname: r.nickname.clone(),
            uid: r.uid,
            version: r.version,
            short_id: r.short_id,
            listen_port: r.listen_port,
            conns: r.conns.iter().cloned().collect(),
        }
    }
}

/// What happened to a received delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeltaOutcome {
    /// It applied on top of our record: relay it.
    Applied,
    /// We already have it (or something newer from the same incarnation): drop it.
    Stale,
    /// We cannot apply it: ask the sender for the full record.
    NeedFull,
}

/// What happened to a received full record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FullOutcome {
    /// Ours is as new or newer.
    NotBetter,
    /// Replaced ours; with the equivalent delta when ours was the same incarnation.
    Replaced(Option<PeerDelta>),
}

impl FullOutcome {
    #[cfg(test)]
    fn replaced(&self) -> bool {
        matches!(self, FullOutcome::Replaced(_))
    }
}

/// The delta that turns `old` into `new` (same peer, same uid).
fn diff(name: PeerName, old: &Peer, new: &Peer) -> PeerDelta {
    let upserts = new
        .conns
        .iter()
        .filter(|(n, c)| old.conns.get(n) != Some(c))
        .map(|(n, c)| (*n, c.clone()))
        .collect();
    let removed = old
        .conns
        .keys()
        .filter(|n| !new.conns.contains_key(n))
        .copied()
        .collect();
    PeerDelta {
        name,
        uid: new.uid,
        from_version: old.version,
        to_version: new.version,
        nickname: new.nickname.clone(),
        short_id: new.short_id,
        listen_port: new.listen_port,
        upserts,
        removed,
    }
}

/// What we learned from a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HelloOutcome {
    New,
    Restarted,
    Known,
}

/// The peer graph as reported by its members.
#[derive(Debug)]
pub(crate) struct Topology {
    ours: PeerName,
    peers: BTreeMap<PeerName, Peer>,
    /// Our version when the pending delta started, and the connections changed since.
    pending: Option<(u64, BTreeSet<PeerName>)>,
    /// Peers created since the last drain (for `Event::PeerAdded`).
    added: Vec<PeerName>,
    /// Bumped on every change to any record: routes computed at one generation hold until
    /// it moves.
    generation: u64,
    /// Route searches run over this topology (work accounting for tests and metrics).
    searches: AtomicU64,
}

impl Topology {
    pub fn new(
        ours: PeerName,
        key: PublicKey,
        nickname: String,
        uid: PeerUid,
        short_id: ShortId,
        port: u16,
    ) -> Self {
        let me = Peer {
            key: Some(key),
            nickname,
            uid,
            version: 1,
            short_id,
            listen_port: port,
            conns: BTreeMap::new(),
        };
        Topology {
            ours,
            peers: BTreeMap::from([(ours, me)]),
            pending: None,
            added: Vec::new(),
            generation: 0,
            searches: AtomicU64::new(0),
        }
    }

    /// Counts one route search (called by `routes`).
    pub fn count_search(&self) {
        self.searches.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes on every change to any record.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Route searches run so far.
    pub fn searches(&self) -> u64 {
        self.searches.load(Ordering::Relaxed)
    }

    pub fn peers(&self) -> &BTreeMap<PeerName, Peer> {
        &self.peers
    }

    pub fn peer(&self, name: PeerName) -> Option<&Peer> {
        self.peers.get(&name)
    }

    fn me(&self) -> &Peer {
        match self.peers.get(&self.ours) {
            Some(p) => p,
            None => unreachable!("our own record is never removed"),
        }
    }

    fn me_mut(&mut self) -> &mut Peer {
        self.generation += 1;
        match self.peers.get_mut(&self.ours) {
            Some(p) => p,
            None => unreachable!("our own record is never removed"),
        }
    }

    pub fn our_version(&self) -> u64 {
        self.me().version
    }

    pub fn our_short_id(&self) -> ShortId {
        self.me().short_id
    }

    pub fn drain_added(&mut self) -> Vec<PeerName> {
        std::mem::take(&mut self.added)
    }

    /// Starts (or extends) the pending delta and bumps our version.
    fn bump_local(&mut self, changed: Option<PeerName>) {
        self.generation += 1;
        let from = self.our_version();
        let entry = self.pending.get_or_insert_with(|| (from, BTreeSet::new()));
        if let Some(c) = changed {
            entry.1.insert(c);
        }
        // Saturating: a hostile peer can claim version u64::MAX; we must not panic on it.
        let me = self.me_mut();
        me.version = me.version.saturating_add(1);
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Sets or clears our connection to `remote`.
    pub fn set_local_conn(&mut self, remote: PeerName, conn: Option<ConnSummary>) {
        let current = self.me().conns.get(&remote).cloned();
        if current == conn {
            return;
        }
        self.bump_local(Some(remote));
        match conn {
            Some(c) => {
                self.me_mut().conns.insert(remote, c);
                self.ensure(remote);
            }
            None => {
                self.me_mut().conns.remove(&remote);
            }
        }
    }

    pub fn set_local_short_id(&mut self, id: ShortId) {
        self.bump_local(None);
        self.me_mut().short_id = id;
    }

    /// Someone reports a record about us from another incarnation at `version`: move past it
    /// so every peer replaces that record with ours.
    fn bump_past(&mut self, version: u64) {
        if version >= self.our_version() {
            self.bump_local(None);
            self.me_mut().version = version.saturating_add(1);
        }
    }

    /// Builds the delta for everything changed since the last call.
    pub fn take_delta(&mut self) -> Option<PeerDelta> {
        let (from, changed) = self.pending.take()?;
        let me = self.me();
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        for name in changed {
            match me.conns.get(&name) {
                Some(c) => upserts.push((name, c.clone())),
                None => removed.push(name),
            }
        }
        Some(PeerDelta {
            name: self.ours,
            uid: me.uid,
            from_version: from,
            to_version: me.version,
            nickname: me.nickname.clone(),
            short_id: me.short_id,
            listen_port: me.listen_port,
            upserts,
            removed,
        })
    }

    fn ensure(&mut self, name: PeerName) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.peers.entry(name) {
            self.generation += 1;
            e.insert(Peer::placeholder());
            self.added.push(name);
        }
    }

    /// The key the mesh knows `name` under, if any.
    pub fn key_of(&self, name: PeerName) -> Option<PublicKey> {
        self.peers.get(&name).and_then(|p| p.key)
    }

    /// Records what a peer said in its handshake, and the key it proved it holds.
    pub fn note_hello(&mut self, hello: &Hello, key: PublicKey) -> HelloOutcome {
        let fresh = Peer {
            key: Some(key),
            nickname: hello.nickname.clone(),
            uid: hello.uid,
            version: 0,
            short_id: hello.short_id,
            listen_port: hello.listen_port,
            conns: BTreeMap::new(),
        };
        self.generation += 1;
        match self.peers.get_mut(&hello.name) {
            None => {
                self.peers.insert(hello.name, fresh);
                self.added.push(hello.name);
                HelloOutcome::New
            }
            Some(p) if p.is_placeholder() => {
                *p = fresh;
                HelloOutcome::Known
            }
            Some(p) if p.uid != hello.uid => {
                *p = fresh;
                HelloOutcome::Restarted
            }
            Some(_) => HelloOutcome::Known,
        }
    }

    /// Peers known only as the far end of someone's connection.
    pub fn placeholders(&self) -> Vec<PeerName> {
        self.peers
            .iter()
            .filter(|(n, p)| **n != self.ours && p.is_placeholder())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Applies a delta from the network.
    pub fn apply_delta(&mut self, d: &PeerDelta) -> DeltaOutcome {
        if d.to_version <= d.from_version {
            return DeltaOutcome::Stale;
        }
        if d.name == self.ours {
            if d.uid != self.me().uid {
                self.bump_past(d.to_version);
            }
            return DeltaOutcome::Stale;
        }
        let Some(p) = self.peers.get_mut(&d.name) else {
            return DeltaOutcome::NeedFull;
        };
        if p.is_placeholder() || p.uid != d.uid {
            // Another incarnation (or nothing yet): only a full record can replace ours, and
            // only if it is newer by (version, uid).
            return if (d.to_version, d.uid) > (p.version, p.uid) {
                DeltaOutcome::NeedFull
            } else {
                DeltaOutcome::Stale
            };
        }
        if p.version >= d.to_version {
            return DeltaOutcome::Stale;
        }
        if p.version != d.from_version {
            return DeltaOutcome::NeedFull;
        }
        self.generation += 1;
        p.version = d.to_version;
        p.nickname.clone_from(&d.nickname);
        p.short_id = d.short_id;
        p.listen_port = d.listen_port;
        for name in &d.removed {
            p.conns.remove(name);
        }
        for (name, c) in &d.upserts {
            p.conns.insert(*name, c.clone());
        }
        for (name, _) in &d.upserts {
            self.ensure(*name);
        }
        DeltaOutcome::Applied
    }

    /// Merges a full record. When it replaces a record of the same incarnation, also returns
    /// the delta from our old version to the new one, so relaying costs only what changed.
    pub fn apply_full(&mut self, r: &PeerRecord) -> FullOutcome {
        if r.name == self.ours {
            if r.uid != self.me().uid {
                self.bump_past(r.version);
            }
            return FullOutcome::NotBetter;
        }
        if r.uid == PLACEHOLDER_UID {
            return FullOutcome::NotBetter;
        }
        let old = self.peers.get(&r.name);
        if old.is_some_and(|p| (r.version, r.uid) <= (p.version, p.uid)) {
            return FullOutcome::NotBetter;
        }
        let new = Peer::from_record(r);
        let delta = old
            .filter(|p| !p.is_placeholder() && p.uid == r.uid)
            .map(|p| diff(r.name, p, &new));
        if old.is_none() {
            self.added.push(r.name);
        }
        self.generation += 1;
        self.peers.insert(r.name, new);
        for (name, _) in &r.conns {
            self.ensure(*name);
        }
        FullOutcome::Replaced(delta)
    }

    /// Reacts to a digest entry: true when the sender knows something newer than we do.
    pub fn digest_wants(&mut self, name: PeerName, uid: PeerUid, version: u64) -> bool {
        if name == self.ours {
            if uid != self.me().uid {
                self.bump_past(version);
            }
            return false;
        }
        if uid == PLACEHOLDER_UID {
            return false;
        }
        match self.peers.get(&name) {
            None => true,
            Some(p) => (version, uid) > (p.version, p.uid),
        }
    }

    /// Our full record of `name` (placeholders have none).
    pub fn record(&self, name: PeerName) -> Option<PeerRecord> {
        let p = self.peers.get(&name).filter(|p| !p.is_placeholder())?;
        Some(PeerRecord {
            name,
            key: p.key?,
            nickname: p.nickname.clone(),
            uid: p.uid,
            version: p.version,
            short_id: p.short_id,
            listen_port: p.listen_port,
            conns: p.conns.iter().map(|(n, c)| (*n, c.clone())).collect(),
        })
    }

    /// Every real record.
    #[cfg(test)]
    pub fn all_records(&self) -> Vec<PeerRecord> {
        self.peers.keys().filter_map(|n| self.record(*n)).collect()
    }

    /// `(name, uid, version)` of every real record.
    pub fn digest(&self) -> Vec<(PeerName, PeerUid, u64)> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.is_placeholder())
            .map(|(n, p)| (*n, p.uid, p.version))
            .collect()
    }

    /// Peers reachable from us over any reported connection (weave's GC reachability).
    pub fn reachable(&self) -> BTreeSet<PeerName> {
        let mut seen = BTreeSet::from([self.ours]);
        let mut stack = vec![self.ours];
        while let Some(n) = stack.pop() {
            if let Some(p) = self.peers.get(&n) {
                for r in p.conns.keys() {
                    if seen.insert(*r) {
                        stack.push(*r);
                    }
                }
            }
        }
        seen
    }

    /// Removes unreachable peers not in `keep`; returns them.
    pub fn garbage_collect(&mut self, keep: &BTreeSet<PeerName>) -> Vec<PeerName> {
        let reachable = self.reachable();
        let dead: Vec<PeerName> = self
            .peers
            .keys()
            .filter(|n| !reachable.contains(n) && !keep.contains(n))
            .copied()
            .collect();
        for n in &dead {
            self.generation += 1;
            self.peers.remove(n);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(v: u64) -> PeerName {
        PeerName::new(v).unwrap()
    }

    fn conn(addr: &str) -> ConnSummary {
        ConnSummary {
            remote_addr: addr.into(),
            outbound: true,
            established: true,
        }
    }

    fn topo(n: u64, uid: u64) -> Topology {
        Topology::new(
            name(n),
            PublicKey([n as u8; 32]),
            format!("p{n}"),
            PeerUid(uid),
            ShortId::new(n as u16).unwrap(),
            6783,
        )
    }

    #[test]
    fn deltas_apply_in_order_and_request_on_gaps() {
        let mut a = topo(1, 11);
        let mut b = topo(2, 22);
        b.apply_full(&a.record(name(1)).unwrap());
        a.set_local_conn(name(2), Some(conn("10.0.0.2:6783")));
        a.set_local_conn(name(3), Some(conn("10.0.0.3:6783")));
        let d1 = a.take_delta().unwrap();
        assert_eq!((d1.from_version, d1.to_version), (1, 3));
        assert_eq!(d1.upserts.len(), 2);
        a.set_local_conn(name(3), None);
        let d2 = a.take_delta().unwrap();
        assert_eq!(d2.removed, vec![name(3)]);
        assert!(a.take_delta().is_none());
        // Out of order: d2 cannot apply before d1.
        assert_eq!(b.apply_delta(&d2), DeltaOutcome::NeedFull);
        assert_eq!(b.apply_delta(&d1), DeltaOutcome::Applied);
        assert_eq!(b.apply_delta(&d1), DeltaOutcome::Stale);
        assert_eq!(b.apply_delta(&d2), DeltaOutcome::Applied);
        assert_eq!(b.record(name(1)), a.record(name(1)));
        // The placeholder for peer 3 stays until GC.
        assert!(b.peer(name(3)).unwrap().is_placeholder());
        let dead = b.garbage_collect(&BTreeSet::new());
        assert_eq!(dead, vec![name(1), name(3)]);
    }

    #[test]
    fn merge_by_version_then_uid_and_self_bump() {
        let mut a = topo(1, 11);
        let rec = |uid, version| PeerRecord {
            name: name(5),
            key: PublicKey([5; 32]),
            nickname: String::new(),
            uid: PeerUid(uid),
            version,
            short_id: ShortId::default(),
            listen_port: 1,
            conns: vec![],
        };
        assert!(a.apply_full(&rec(7, 3)).replaced());
        assert!(!a.apply_full(&rec(7, 3)).replaced());
        assert!(!a.apply_full(&rec(6, 3)).replaced());
        assert!(a.apply_full(&rec(8, 3)).replaced());
        assert!(a.apply_full(&rec(1, 4)).replaced());
        let mut old_me = a.record(name(1)).unwrap();
        old_me.uid = PeerUid(99);
        old_me.version = 40;
        assert!(!a.apply_full(&old_me).replaced());
        assert_eq!(a.our_version(), 41);
        assert!(a.has_pending());
        // A hostile "older incarnation" at u64::MAX saturates instead of overflowing.
        old_me.version = u64::MAX;
        a.apply_full(&old_me);
        a.set_local_conn(name(9), None);
        a.set_local_conn(name(9), Some(conn("1.2.3.4:5")));
        assert_eq!(a.our_version(), u64::MAX);
    }
}
