//! Sleeve forwarding decisions: which peers a frame goes to, and whether a frame received from
//! the overlay is injected into the local bridge and/or relayed.
//!
//! The router publishes a [`Forwarding`] snapshot computed from the mesh (routes over
//! established symmetric links, broadcast trees, which peers fastdp serves). The [`MacTable`]
//! learns remote MACs from frames the sleeve receives. Both decisions are pure functions of
//! these, the frame and `now`, and neither allocates: relay sets borrow from the snapshot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wire::{Destination, Inner};
use crate::ids::PeerName;

/// How long a learned MAC stays bound to a peer without frames from it (weave: 10 min).
pub const MAC_MAX_AGE: Duration = Duration::from_secs(600);
/// Most MACs learned behind one peer. A host with more containers than this still works: frames
/// to its extra MACs are flooded instead of unicast. A member that sends frames from random
/// source MACs fills only its own share, never the table.
pub const MAX_MACS_PER_PEER: usize = 4096;
/// Most MACs learned in all (16 bytes a key, ~40 with the entry: a few MB at the limit).
pub const MAX_MAC_ENTRIES: usize = 65_536;
/// The ttl a frame starts with: more hops than any sane mesh diameter, few enough that a
/// transient loop during a topology change dies quickly.
pub const INITIAL_TTL: u8 = 32;

/// How this host reaches one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerPath {
    /// Its sleeve UDP address, for direct neighbours only.
    pub udp: Option<SocketAddr>,
    /// True when this peer's frames reach our bridge through the kernel VXLAN port (and ours
    /// reach it that way): the sleeve must not deliver them a second time.
    pub fastdp: bool,
}

/// The routing snapshot the sleeve forwards by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// This host.
    pub local: PeerName,
    /// Every peer we know a path for.
    pub peers: BTreeMap<PeerName, PeerPath>,
    /// Destination → next hop, over established symmetric links.
    pub unicast: BTreeMap<PeerName, PeerName>,
    /// Broadcast source → our next hops in that source's tree (the entry for `local` is where
    /// our own floods start).
    pub broadcast: BTreeMap<PeerName, Vec<PeerName>>,
}

/// Why a frame was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// A bridge link-local group frame (STP, LACP, ...), which must not cross bridges.
    LinkLocal,
    /// The destination MAC lives on a peer the kernel VXLAN path already serves.
    FastdpServed,
    /// The destination MAC lives on this host.
    Local,
    /// No route towards the destination host.
    NoRoute,
    /// The ttl ran out.
    Ttl,
    /// The frame claims to come from this host.
    Looped,
}

/// What to do with a frame read from the local TAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalOut<'a> {
    /// Nothing.
    Drop(DropReason),
    /// To `destination` (the owner of the dst MAC) via `next_hop`.
    Unicast {
        /// The host that owns the destination MAC.
        destination: PeerName,
        /// The direct neighbour to send to.
        next_hop: PeerName,
    },
    /// Flood to these direct neighbours, destination broadcast.
    Broadcast(&'a [PeerName]),
}

/// Where a received frame goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay<'a> {
    /// Nowhere.
    None,
    /// To one neighbour (unicast towards its destination).
    One(PeerName),
    /// To these neighbours (the originator's broadcast tree).
    Tree(&'a [PeerName]),
}

impl Relay<'_> {
    /// The neighbours to send to, never `skip_a` or `skip_b` (the originator and the neighbour
    /// the frame came from: a tree never sends back, but a stale snapshot might).
    pub fn hops(&self, skip_a: PeerName, skip_b: PeerName) -> impl Iterator<Item = PeerName> + '_ {
        let (one, many): (Option<PeerName>, &[PeerName]) = match *self {
            Relay::None => (None, &[]),
            Relay::One(p) => (Some(p), &[]),
            Relay::Tree(t) => (None, t),
        };
        one.into_iter()
            .chain(many.iter().copied())
            .filter(move |p| *p != skip_a && *p != skip_b)
    }
}

/// What to do with a frame received from the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteOut<'a> {
    /// Write it to the local TAP.
    pub inject: bool,
    /// Send it on, with ttl decremented.
    pub relay: Relay<'a>,
    /// Set when the frame was neither injected nor relayed, to count why.
    pub dropped: Option<DropReason>,
}

impl Forwarding {
    fn is_fastdp(&self, peer: PeerName) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.fastdp)
    }

    fn flood(&self) -> LocalOut<'_> {
        LocalOut::Broadcast(
            self.broadcast
                .get(&self.local)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        )
    }

    /// Decides where a frame captured from the local bridge goes.
    pub fn on_local_frame(&self, macs: &MacTable, frame: &[u8], now: Instant) -> LocalOut<'_> {
        let Some(dst) = frame.get(..6).filter(|_| frame.len() >= 14) else {
            return LocalOut::Drop(DropReason::Runt);
        };
        let mut d = [0u8; 6];
        d.copy_from_slice(dst);
        if d[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && d[5] & 0xf0 == 0 {
            return LocalOut::Drop(DropReason::LinkLocal);
        }
        // Fastdp heartbeats must prove the VXLAN path; carried by the sleeve
        // they would prove nothing (and a dead fastdp would look alive).
        if frame[12..14] == crate::overlay::HEARTBEAT_ETHERTYPE.to_be_bytes() {
            return LocalOut::Drop(DropReason::LinkLocal);
        }
        if d[0] & 1 == 1 {
            return self.flood();
        }
        match macs.lookup(d, now) {
            None => self.flood(),
            Some(p) if p == self.local => LocalOut::Drop(DropReason::Local),
            Some(p) if self.is_fastdp(p) => LocalOut::Drop(DropReason::FastdpServed),
            Some(p) => match self.unicast.get(&p) {
                Some(&next_hop) => LocalOut::Unicast {
                    destination: p,
                    next_hop,
                },
                // A route can be missing for a moment while topology converges; flooding then
                // is what a learning bridge would do.
                None => self.flood(),
            },
        }
    }

    /// Decides what happens to a data frame received from the overlay with header `inner`,
    /// and learns its source MAC when it is delivered here.
    pub fn on_remote(
        &self,
        macs: &mut MacTable,
        inner: &Inner,
        frame: &[u8],
        now: Instant,
    ) -> RemoteOut<'_> {
        let mut out = RemoteOut {
            inject: false,
            relay: Relay::None,
            dropped: None,
        };
        if inner.originator == self.local {
            out.dropped = Some(DropReason::Looped);
            return out;
        }
        if frame.len() < 14 {
            out.dropped = Some(DropReason::Runt);
            return out;
        }
        let can_relay = inner.ttl > 1;
        let for_us = match inner.destination {
            Destination::Peer(p) if p == self.local => true,
            Destination::Peer(p) => {
                out.relay = match self.unicast.get(&p) {
                    Some(&hop) if can_relay => Relay::One(hop),
                    Some(_) => {
                        out.dropped = Some(DropReason::Ttl);
                        Relay::None
                    }
                    None => {
                        out.dropped = Some(DropReason::NoRoute);
                        Relay::None
                    }
                };
                false
            }
            Destination::Broadcast => {
                if let Some(t) = self.broadcast.get(&inner.originator).filter(|_| can_relay) {
                    out.relay = Relay::Tree(t);
                }
                true
            }
        };
        if for_us {
            if let Some(src) = frame.get(6..12) {
                let mut s = [0u8; 6];
                s.copy_from_slice(src);
                if s[0] & 1 == 0 {
                    macs.learn(s, inner.originator, now);
                }
            }
            // A fastdp peer's frames already reached our bridge through VXLAN.
            out.inject = !self.is_fastdp(inner.originator);
        }
        out
    }
}

/// A learned MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MacEntry {
    peer: PeerName,
    seen: Instant,
}

/// Remote MAC → the peer whose bridge it is behind, learned from received frames. Bounded by
/// [`MAX_MACS_PER_PEER`] and [`MAX_MAC_ENTRIES`]: a MAC that would pass either is not learned
/// (counted in [`MacTable::refused`]) and frames to it are flooded.
#[derive(Clone, Debug, Default)]
pub struct MacTable {
    entries: BTreeMap<[u8; 6], MacEntry>,
    per_peer: BTreeMap<PeerName, usize>,
    refused: u64,
}

impl MacTable {
    /// An empty table.
    pub fn new() -> MacTable {
        MacTable::default()
    }

    /// Binds `mac` to `peer`. Returns the previous owner when the MAC moved.
    pub fn learn(&mut self, mac: [u8; 6], peer: PeerName, now: Instant) -> Option<PeerName> {
        if let Some(e) = self.entries.get_mut(&mac)
            && e.peer == peer
        {
            e.seen = now;
            return None;
        }
        let old = self.remove(mac);
        let full = self.entries.len() >= MAX_MAC_ENTRIES
            || self.per_peer.get(&peer).copied().unwrap_or(0) >= MAX_MACS_PER_PEER;
        if full {
            self.refused += 1;
        } else {
            self.entries.insert(mac, MacEntry { peer, seen: now });
            *self.per_peer.entry(peer).or_default() += 1;
        }
        old.filter(|o| *o != peer)
    }

    fn remove(&mut self, mac: [u8; 6]) -> Option<PeerName> {
        let old = self.entries.remove(&mac)?.peer;
        self.uncount(old, 1);
        Some(old)
    }

    fn uncount(&mut self, peer: PeerName, n: usize) {
        if let Some(c) = self.per_peer.get_mut(&peer) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// The owner of `mac`, unless the entry aged out.
    pub fn lookup(&self, mac: [u8; 6], now: Instant) -> Option<PeerName> {
        self.entries
            .get(&mac)
            .filter(|e| now.saturating_duration_since(e.seen) < MAC_MAX_AGE)
            .map(|e| e.peer)
    }

    /// Drops entries not refreshed for [`MAC_MAX_AGE`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let mut gone = Vec::new();
        self.entries.retain(|_, e| {
            let keep = now.saturating_duration_since(e.seen) < MAC_MAX_AGE;
            if !keep {
                gone.push(e.peer);
            }
            keep
        });
        gone.into_iter().for_each(|p| self.uncount(p, 1));
        before - self.entries.len()
    }

    /// Drops every MAC of a peer that left.
    pub fn forget_peer(&mut self, peer: PeerName) {
        self.entries.retain(|_, e| e.peer != peer);
        self.per_peer.remove(&peer);
    }

    /// Number of entries (aged ones included until `expire`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// MACs not learned because a limit was reached.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
