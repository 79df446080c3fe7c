//! The address ring: a CRDT mapping tokens (start addresses) to an owning
//! peer, as weave's `ipam/ring`. Token `t` owns `[t, next token)`; the ring
//! always has a token at the range start, so every address has exactly one
//! owner by construction (no wrap-around case).
//!
//! Merge is a join: tokens are unioned and, per token, the entry with the
//! greatest `(version, peer, free)` wins. That makes merge commutative,
//! associative and idempotent on *any* two rings of the same lineage; the
//! *safety* questions (did someone take space I have allocations in?) are
//! answered by the allocator comparing ownership before and after, not here.
//!
//! A ring also carries its [`Lineage`]: the identity of the initialisation
//! that created it (a consensus decision or a seed list). Rings of different
//! lineages never merge entry-wise; the allocator adopts the greater lineage
//! and re-claims its live addresses from their new owners.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::addr::{AddrRange, PeerName, fnv1a};
pub use crate::wire::MAX_RING_TOKENS;

/// Identity of one ring initialisation. Equal lineages mean "the same ring",
/// whose entries merge; different lineages were initialised separately.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Lineage(pub u64);

impl Lineage {
    /// Lineage of a `seed=` initialisation: depends only on the seed list, so
    /// peers seeded identically while disconnected share one ring (weave test
    /// 380).
    pub fn from_seeds(range: AddrRange, seeds: &BTreeSet<PeerName>) -> Self {
        let mut bytes = Vec::with_capacity(8 * seeds.len() + 9);
        bytes.push(b's');
        bytes.extend_from_slice(&range.start.to_be_bytes());
        bytes.extend_from_slice(&range.end.to_be_bytes());
        for s in seeds {
            bytes.extend_from_slice(&s.as_u64().to_be_bytes());
        }
        Lineage(fnv1a(&[&bytes]))
    }

    /// Lineage of a consensus decision: depends on the deciding proposal, so
    /// two groups that each reached consensus alone get different lineages.
    pub fn from_consensus(range: AddrRange, round: u32, proposer: PeerName) -> Self {
        Lineage(fnv1a(&[
            b"c",
            &range.start.to_be_bytes(),
            &range.end.to_be_bytes(),
            &round.to_be_bytes(),
            &proposer.as_u64().to_be_bytes(),
        ]))
    }
}

/// What a token says: who owns the range from it to the next token.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Owner.
    pub peer: PeerName,
    /// Bumped by every change; the greatest wins a merge.
    pub version: u32,
    /// Advisory count of free addresses, used to pick donors.
    pub free: u32,
}

impl Entry {
    fn key(&self) -> (u32, PeerName, u32) {
        (self.version, self.peer, self.free)
    }
}

/// Why a ring operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The two rings cover different universes.
    #[error(
        "incompatible IP allocation ranges: {ours} vs {theirs}; restart with the same --ipalloc-range"
    )]
    RangeMismatch {
        /// Ours.
        ours: AddrRange,
        /// Theirs.
        theirs: AddrRange,
    },
    /// The two rings were initialised separately.
    #[error("ring lineage differs ({ours:?} vs {theirs:?})")]
    LineageMismatch {
        /// Ours.
        ours: Lineage,
        /// Theirs.
        theirs: Lineage,
    },
    /// A transfer named space the giver does not own.
    #[error("range {range} is not wholly owned by {peer}")]
    NotOwner {
        /// The range.
        range: AddrRange,
        /// The supposed owner.
        peer: PeerName,
    },
    /// The merge would grow the ring past [`MAX_RING_TOKENS`]: two rings that each split the
    /// space finely must not together push our full state over the message limit.
    #[error(
        "merge refused: the ring would hold {tokens} tokens, more than {MAX_RING_TOKENS}; the sender splits the ring abnormally finely (buggy or hostile peer)"
    )]
    TooManyTokens {
        /// Tokens the merged ring would hold.
        tokens: usize,
    },
    /// The merge would change a range we own (weave's `ErrEntryInMyRange`): only we give our
    /// space away, so such an entry is forged or from a peer whose state is corrupt.
    #[error(
        "merge refused: it changes the range at {} that we own; only we give our space away, so the sender is buggy or hostile",
        std::net::Ipv4Addr::from(*token)
    )]
    EntryInMyRange {
        /// The token inside our range.
        token: u32,
    },
    /// Structural problem in a decoded ring.
    #[error("invalid ring: {0}")]
    Invalid(&'static str),
}

/// The ring CRDT. See the module docs.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ring {
    range: AddrRange,
    lineage: Lineage,
    entries: BTreeMap<u32, Entry>,
    /// Peers declared gone by `rmpeer`/`reset` (grow-only, merged by
    /// union): everyone drops reservations held for them.
    #[serde(default)]
    removed: BTreeSet<PeerName>,
}

impl Ring {
    /// Divides `range` among `peers` by recursive halving (first half of the
    /// range to the first half of the sorted peers), so every share is as
    /// CIDR-aligned as the peer count allows, exactly as weave's
    /// `ClaimForPeers`. `peers` must be non-empty.
    pub fn split(range: AddrRange, peers: &BTreeSet<PeerName>, lineage: Lineage) -> Ring {
        let list: Vec<PeerName> = peers.iter().copied().collect();
        let mut ring = Ring {
            range,
            lineage,
            entries: BTreeMap::new(),
            removed: BTreeSet::new(),
        };
        subdivide(&mut ring.entries, range.start, range.end, &list);
        if ring.entries.is_empty() {
            // Only reachable with an empty peer list: keep the invariant
            // (a token at start) by leaving the space to the default name.
            ring.entries.insert(
                range.start,
                Entry {
                    peer: PeerName::default(),
                    version: 0,
                    free: range.size(),
                },
            );
        }
        ring
    }

    /// The universe.
    pub fn range(&self) -> AddrRange {
        self.range
    }

    /// The lineage.
    pub fn lineage(&self) -> Lineage {
        self.lineage
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true for a valid ring; present for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks the structural invariants of a ring from the wire or disk.
    pub fn validate(&self) -> Result<(), RingError> {
        if self.range.is_empty() {
            return Err(RingError::Invalid("empty range"));
        }
        match self.entries.first_key_value() {
            Some((t, _)) if *t == self.range.start => {}
            _ => return Err(RingError::Invalid("no token at range start")),
        }
        match self.entries.last_key_value() {
            Some((t, _)) if *t < self.range.end => {}
            _ => return Err(RingError::Invalid("token outside range")),
        }
        Ok(())
    }

    /// Every token's range and entry, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (AddrRange, &Entry)> + '_ {
        let mut it = self.entries.iter().peekable();
        let end = self.range.end;
        std::iter::from_fn(move || {
            let (t, e) = it.next()?;
            let next = it.peek().map(|(n, _)| **n).unwrap_or(end);
            Some((AddrRange::new(*t, next), e))
        })
    }

    /// Owner of `addr`, `None` outside the range.
    pub fn owner(&self, addr: u32) -> Option<PeerName> {
        if !self.range.contains(addr) {
            return None;
        }
        self.entries.range(..=addr).next_back().map(|(_, e)| e.peer)
    }

    /// The ranges `peer` owns, adjacent ones coalesced, in order.
    pub fn owned_by(&self, peer: PeerName) -> Vec<AddrRange> {
        let mut out: Vec<AddrRange> = Vec::new();
        for (r, e) in self.iter() {
            if e.peer != peer {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// Addresses owned per peer.
    pub fn sizes(&self) -> BTreeMap<PeerName, u64> {
        let mut m = BTreeMap::new();
        for (r, e) in self.iter() {
            *m.entry(e.peer).or_insert(0) += u64::from(r.size());
        }
        m
    }

    /// Every peer named by some token.
    pub fn peers(&self) -> BTreeSet<PeerName> {
        self.entries.values().map(|e| e.peer).collect()
    }

    /// Joins `other` into `self`; returns whether anything changed.
    pub fn merge(&mut self, other: &Ring) -> Result<bool, RingError> {
        if self.range != other.range {
            return Err(RingError::RangeMismatch {
                ours: self.range,
                theirs: other.range,
            });
        }
        if self.lineage != other.lineage {
            return Err(RingError::LineageMismatch {
                ours: self.lineage,
                theirs: other.lineage,
            });
        }
        let added = other
            .entries
            .keys()
            .filter(|t| !self.entries.contains_key(t))
            .count();
        if self.entries.len() + added > MAX_RING_TOKENS {
            return Err(RingError::TooManyTokens {
                tokens: self.entries.len() + added,
            });
        }
        let mut changed = false;
        for p in &other.removed {
            changed |= self.removed.insert(*p);
        }
        for (t, theirs) in &other.entries {
            match self.entries.get_mut(t) {
                Some(ours) if ours.key() >= theirs.key() => {}
                Some(ours) => {
                    *ours = *theirs;
                    changed = true;
                }
                None => {
                    self.entries.insert(*t, *theirs);
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Joins `other` into `self` as peer `me` receives it: refused whole (nothing merged)
    /// when it would change any range `me` owns, by a newer entry at one of our tokens or a
    /// new token inside our space. Only `me` gives its space away, so a legitimate ring
    /// never holds a newer entry for our space than we do.
    pub fn merge_as(&mut self, other: &Ring, me: PeerName) -> Result<bool, RingError> {
        if self.range == other.range && self.lineage == other.lineage {
            for (t, theirs) in &other.entries {
                let intrudes = match self.entries.get(t) {
                    Some(ours) => ours.peer == me && theirs.key() > ours.key(),
                    None => self.owner(*t) == Some(me),
                };
                if intrudes {
                    return Err(RingError::EntryInMyRange { token: *t });
                }
            }
        }
        self.merge(other)
    }

    /// A ring from its parts (for tests and fuzzing), checked like a decoded one.
    pub fn from_parts(
        range: AddrRange,
        lineage: Lineage,
        entries: BTreeMap<u32, Entry>,
    ) -> Result<Ring, RingError> {
        let ring = Ring {
            range,
            lineage,
            entries,
            removed: BTreeSet::new(),
        };
        ring.validate()?;
        Ok(ring)
    }

    /// Moves `range` from `from` to `to`. Splits tokens at both ends so only
    /// `range` changes hands; every touched entry's version is bumped so the
    /// change wins merges. Only the owner may call this for its own space
    /// (the allocator guarantees it).
    pub fn transfer(
        &mut self,
        range: AddrRange,
        from: PeerName,
        to: PeerName,
    ) -> Result<(), RingError> {
        let range = range.intersect(&self.range);
        if range.is_empty() {
            return Ok(());
        }
        let not_owner = RingError::NotOwner { range, peer: from };
        for (r, e) in self.iter() {
            if r.overlaps(&range) && e.peer != from {
                return Err(not_owner);
            }
        }
        self.split_at(range.start);
        if range.end < self.range.end {
            self.split_at(range.end);
        }
        for (_, e) in self.entries.range_mut(range.start..range.end) {
            e.peer = to;
            e.version = e.version.saturating_add(1);
            e.free = 0;
        }
        Ok(())
    }

    /// Ensures a token exists at `at`, copying the covering entry (version
    /// bumped, free unknown) so it supersedes any stale copy elsewhere.
    fn split_at(&mut self, at: u32) {
        if self.entries.contains_key(&at) || !self.range.contains(at) {
            return;
        }
        if let Some((_, e)) = self.entries.range(..at).next_back() {
            let e = Entry {
                peer: e.peer,
                version: e.version.saturating_add(1),
                free: 0,
            };
            self.entries.insert(at, e);
        }
    }

    /// Peers declared gone.
    pub fn removed(&self) -> &BTreeSet<PeerName> {
        &self.removed
    }

    /// Gives every token of `from` to `to`, adding `bump` to versions so the
    /// takeover dominates (weave's rmpeer/reset add 100), and records `from`
    /// as gone. Returns the number of addresses moved.
    pub fn transfer_peer(&mut self, from: PeerName, to: PeerName, bump: u32) -> u64 {
        self.removed.insert(from);
        let mut moved = 0u64;
        let sizes: Vec<(u32, u32)> = self.iter().map(|(r, _)| (r.start, r.size())).collect();
        for (t, size) in sizes {
            if let Some(e) = self.entries.get_mut(&t)
                && e.peer == from
            {
                e.peer = to;
                e.version = e.version.saturating_add(bump);
                moved += u64::from(size);
            }
        }
        moved
    }

    /// Records `free` for each of `peer`'s tokens from `free_of(range)`,
    /// bumping versions only where the count changed. Returns whether any did.
    pub fn refresh_free(&mut self, peer: PeerName, free_of: impl Fn(AddrRange) -> u32) -> bool {
        let spans: Vec<(u32, AddrRange)> = self
            .iter()
            .filter(|(_, e)| e.peer == peer)
            .map(|(r, _)| (r.start, r))
            .collect();
        let mut changed = false;
        for (t, r) in spans {
            let f = free_of(r);
            if let Some(e) = self.entries.get_mut(&t)
                && e.free != f
            {
                e.free = f;
                e.version = e.version.saturating_add(1);
                changed = true;
            }
        }
        changed
    }
}

fn subdivide(entries: &mut BTreeMap<u32, Entry>, from: u32, to: u32, peers: &[PeerName]) {
    let share = to.saturating_sub(from);
    let Some(first) = peers.first() else { return };
    if share == 0 {
        return;
    }
    if peers.len() == 1 || share == 1 {
        entries.insert(
            from,
            Entry {
                peer: *first,
                version: 0,
                free: share,
            },
        );
        return;
    }
    let mid = from + share / 2;
    let (a, b) = peers.split_at(peers.len() / 2);
    subdivide(entries, from, mid, a);
    subdivide(entries, mid, to, b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> PeerName {
        PeerName::new(n).unwrap()
    }

    fn universe() -> AddrRange {
        AddrRange::new(0x0a20_0000, 0x0a30_0000)
    }

    #[test]
    fn split_halves_like_weave() {
        let peers: BTreeSet<_> = [p(1), p(2), p(3)].into();
        let r = Ring::split(universe(), &peers, Lineage(7));
        r.validate().unwrap();
        let sizes = r.sizes();
        assert_eq!(sizes[&p(1)], 1 << 19);
        assert_eq!(sizes[&p(2)], 1 << 18);
        assert_eq!(sizes[&p(3)], 1 << 18);
        assert_eq!(r.owner(0x0a20_0000), Some(p(1)));
        assert_eq!(r.owner(0x0a2f_ffff), Some(p(3)));
        assert_eq!(r.owner(0x0a30_0000), None);
    }

    #[test]
    fn transfer_splits_and_bumps() {
        let peers: BTreeSet<_> = [p(1)].into();
        let mut r = Ring::split(universe(), &peers, Lineage(1));
        let chunk = AddrRange::new(0x0a28_0000, 0x0a29_0000);
        r.transfer(chunk, p(1), p(2)).unwrap();
        assert_eq!(r.owner(0x0a27_ffff), Some(p(1)));
        assert_eq!(r.owner(0x0a28_0000), Some(p(2)));
        assert_eq!(r.owner(0x0a29_0000), Some(p(1)));
        assert_eq!(r.owned_by(p(2)), vec![chunk]);
        assert!(r.transfer(chunk, p(1), p(3)).is_err());
        let mut stale = Ring::split(universe(), &peers, Lineage(1));
        assert!(stale.merge(&r).unwrap());
        assert_eq!(stale, r);
        assert!(!stale.merge(&r).unwrap());
    }

    #[test]
    fn merge_refuses_other_range_or_lineage() {
        let peers: BTreeSet<_> = [p(1)].into();
        let mut a = Ring::split(universe(), &peers, Lineage(1));
        let b = Ring::split(universe(), &peers, Lineage(2));
        assert!(matches!(
            a.merge(&b),
            Err(RingError::LineageMismatch { .. })
        ));
        let c = Ring::split(AddrRange::new(0, 16), &peers, Lineage(1));
        assert!(matches!(a.merge(&c), Err(RingError::RangeMismatch { .. })));
    }

    #[test]
    fn rmpeer_dominates() {
        let peers: BTreeSet<_> = [p(1), p(2)].into();
        let mut a = Ring::split(universe(), &peers, Lineage(1));
        let moved = a.transfer_peer(p(2), p(1), 100);
        assert_eq!(moved, 1 << 19);
        let mut b = Ring::split(universe(), &peers, Lineage(1));
        b.merge(&a).unwrap();
        assert_eq!(b.sizes()[&p(1)], 1 << 20);
    }
}
