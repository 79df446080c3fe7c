//! The peer-to-peer half of [`Ipam`]: initialisation (seed, consensus,
//! observer priming), ring merge and lineage adoption, donation, exact
//! hand-over of claimed or re-claimed addresses, conflict bookkeeping, and
//! the periodic tick.
//!
//! Two ownership rules make "no address is live on two containers" hold:
//! only an owner hands out or gives away its own free space (and persists
//! that before telling anyone), and an address someone else says is live in
//! our space is *contested*: never handed out, transferred to that peer as
//! soon as it is free here.
//!
//! Separately initialised rings (different [`Lineage`]s) meet
//! deterministically: every peer keeps the greater lineage; a peer of the
//! lesser one adopts it and asks the new owners for exactly the addresses
//! it has live (`SpaceKind::Reclaim`). Owners grant what is free
//! and name what is live on both sides; both report those conflicts and
//! everything else stays usable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::addr::{AddrRange, Cidr, PeerName};
use crate::allocator::Ipam;
use crate::ring::{Lineage, Ring};
use crate::types::{
    Conflict, Error, Event, Init, MAX_CLAIM_ATTEMPTS, RETRY_INTERVAL, RequestId, TAKEOVER_BUMP,
    Transmit,
};
use crate::wire::{GossipState, MAX_ADDR_LIST, Message, Role, SpaceKind, WireError};

impl Ipam {
    /// Starts the periodic tick.
    pub(crate) fn arm(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + RETRY_INTERVAL);
        }
    }

    fn role(&self) -> Role {
        if self.is_observer() {
            Role::Observer
        } else {
            Role::Elector
        }
    }

    /// Our gossip payload, for the mesh's periodic gossip and for pushes.
    pub fn full_state(&self) -> Vec<u8> {
        Message::Gossip(GossipState {
            role: self.role(),
            wants_ring: self.ring.is_none() && self.initialising && self.is_observer(),
            paxos: if self.ring.is_none() {
                Some(self.paxos.state().clone())
            } else {
                None
            },
            ring: self.ring.clone(),
        })
        .encode()
    }

    pub(crate) fn broadcast_state(&mut self) {
        let b = self.full_state();
        self.transmits.push_back(Transmit::Broadcast(b));
    }

    fn unicast(&mut self, to: PeerName, m: &Message) {
        self.transmits.push_back(Transmit::Unicast(to, m.encode()));
    }

    pub(crate) fn send_release(&mut self, to: PeerName, mut addrs: Vec<u32>) {
        addrs.truncate(MAX_ADDR_LIST);
        self.unicast(to, &Message::Release { addrs });
    }

    /// Begins initialisation if there is no ring yet (lazy, as weave).
    pub(crate) fn ensure_ring(&mut self, now: Instant) {
        if self.ring.is_some() {
            return;
        }
        match self.cfg.init.clone() {
            Init::Seed(seeds) => {
                let lineage = Lineage::from_seeds(self.universe, &seeds);
                let ring = Ring::split(self.universe, &seeds, lineage);
                self.install_ring(ring, now);
                self.broadcast_state();
            }
            Init::Consensus { .. } => {
                if !self.initialising {
                    self.initialising = true;
                    self.propose(now);
                }
            }
            Init::Observer => {
                if !self.initialising {
                    self.initialising = true;
                    self.broadcast_state();
                }
            }
        }
    }

    fn propose(&mut self, now: Instant) {
        self.paxos.propose();
        self.dirty = true;
        let jitter = Duration::from_millis(self.rng.below(2500));
        self.next_propose = Some(now + RETRY_INTERVAL + jitter);
        if !self.check_decided(now) {
            self.broadcast_state();
        }
    }

    /// Creates the ring once Paxos chose a value; true if it did.
    fn check_decided(&mut self, now: Instant) -> bool {
        if self.ring.is_some() {
            return false;
        }
        let Some((pid, peers)) = self.paxos.decided() else {
            return false;
        };
        let lineage = Lineage::from_consensus(self.universe, pid.round, pid.proposer);
        let ring = Ring::split(self.universe, &peers, lineage);
        self.install_ring(ring, now);
        self.broadcast_state();
        true
    }

    fn install_ring(&mut self, ring: Ring, now: Instant) {
        let first = self.ring.is_none();
        self.ring = Some(ring);
        self.initialising = false;
        self.next_propose = None;
        if first {
            self.events.push_back(Event::RingReady);
        }
        self.on_ring_changed(now);
    }

    /// After any ring change: recompute free space, forget bookkeeping the
    /// change made moot, persist, and retry what was waiting.
    pub(crate) fn on_ring_changed(&mut self, now: Instant) {
        let me = self.cfg.name;
        if let Some(ring) = &self.ring {
            // Reservations for peers declared gone (rmpeer/reset) go too:
            // their containers went with them.
            let gone = ring.removed();
            self.contested
                .retain(|a, p| ring.owner(*a) == Some(me) && !gone.contains(p));
            self.conflicts
                .retain(|a, p| ring.owner(*a) != Some(me) && !gone.contains(p));
        }
        self.rebuild_space();
        self.dirty = true;
        self.retry(now);
    }

    /// Decodes and handles a payload from the gossip channel.
    pub fn handle_gossip(
        &mut self,
        src: PeerName,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), WireError> {
        let m = Message::decode(bytes)?;
        self.handle_message(src, m, now);
        Ok(())
    }

    /// Decodes and handles a unicast payload.
    pub fn handle_unicast(
        &mut self,
        src: PeerName,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), WireError> {
        self.handle_gossip(src, bytes, now)
    }

    fn handle_message(&mut self, src: PeerName, m: Message, now: Instant) {
        if self.shut_down {
            return;
        }
        if src == self.cfg.name {
            self.events.push_back(Event::PeerProblem {
                peer: src,
                problem: "received IPAM message from a peer using our own name: a cloned host? \
                          give one of them a new identity"
                    .into(),
            });
            return;
        }
        self.arm(now);
        match m {
            Message::Gossip(g) => self.handle_state(src, g, now),
            Message::RingUpdate(r) => self.merge_ring(src, r, now),
            Message::SpaceRequest { kind, .. } if !self.known.contains_key(&src) => {
                // Space given to a name no one in the mesh has would be lost to everyone;
                // a request "from" it is forged (or arrived before its sender's record).
                self.events.push_back(Event::PeerProblem {
                    peer: src,
                    problem: format!(
                        "{kind:?} space request refused: {src} is not a known peer (forged sender, or it asked before its record reached us; it will retry)"
                    ),
                });
            }
            Message::SpaceRequest { id, range, kind } => match kind {
                SpaceKind::Donate => self.handle_donation_request(src, id, range, now),
                SpaceKind::Claim => self.handle_exact_request(src, id, range, false, now),
                SpaceKind::Reclaim => self.handle_exact_request(src, id, range, true, now),
            },
            Message::SpaceDenied {
                id: _,
                range,
                conflicts,
            } => self.handle_denied(src, range, &conflicts, now),
            Message::Release { addrs } => self.handle_release(src, &addrs),
            Message::Verify { addrs } => self.handle_verify(src, &addrs),
        }
    }

    fn handle_state(&mut self, src: PeerName, g: GossipState, now: Instant) {
        if let Some(r) = g.ring {
            self.merge_ring(src, r, now);
        } else if let Some(px) = &g.paxos {
            if self.ring.is_some() {
                // It is still initialising: our ring ends that.
                let m = Message::Gossip(self.gossip_for_unicast());
                self.unicast(src, &m);
            } else {
                let merged = self.paxos.merge(px);
                let thought = self.paxos.think();
                if thought {
                    self.dirty = true;
                }
                if !self.check_decided(now) && (thought || merged && self.initialising) {
                    self.broadcast_state();
                }
            }
        }
        if g.wants_ring {
            if self.ring.is_some() {
                let m = Message::Gossip(self.gossip_for_unicast());
                self.unicast(src, &m);
            } else if !self.is_observer() {
                self.ensure_ring(now);
            }
        }
    }

    fn gossip_for_unicast(&self) -> GossipState {
        GossipState {
            role: self.role(),
            wants_ring: false,
            paxos: None,
            ring: self.ring.clone(),
        }
    }

    fn merge_ring(&mut self, src: PeerName, incoming: Ring, now: Instant) {
        if incoming.range() != self.universe {
            self.events.push_back(Event::PeerProblem {
                peer: src,
                problem: format!(
                    "incompatible IP allocation ranges: peer uses {}, we use {}; relaunch with the same --ipalloc-range",
                    incoming.range(),
                    self.universe
                ),
            });
            return;
        }
        let Some(ours) = self.ring.as_mut() else {
            self.install_ring(incoming, now);
            return;
        };
        if ours.lineage() == incoming.lineage() {
            match ours.merge_as(&incoming, self.cfg.name) {
                Ok(true) => self.on_ring_changed(now),
                Ok(false) => {}
                Err(e) => self.events.push_back(Event::PeerProblem {
                    peer: src,
                    problem: e.to_string(),
                }),
            }
        } else if incoming.lineage() > ours.lineage() {
            // Deterministic meeting of separately initialised rings: the
            // greater lineage survives everywhere; our live addresses are
            // re-claimed from their new owners by the next retry.
            *ours = incoming;
            self.events.push_back(Event::RingAdopted { from: src });
            self.on_ring_changed(now);
            self.broadcast_state();
            self.ask_for_space(now);
        } else {
            let m = Message::Gossip(self.gossip_for_unicast());
            self.unicast(src, &m);
        }
    }

    /// Completes what can complete locally.
    pub(crate) fn retry(&mut self, now: Instant) {
        let _ = now;
        if self.ring.is_none() {
            return;
        }
        let allocs: Vec<_> = self
            .pending_allocs
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, p) in allocs {
            let got = match self.held_in(&p.ident, p.subnet) {
                Some(c) => Some(c),
                None => self.try_allocate(&p.ident, p.subnet, p.is_container),
            };
            if let Some(addr) = got {
                self.pending_allocs.remove(&id);
                self.events
                    .push_back(Event::Allocated { request: id, addr });
            }
        }
        let me = self.cfg.name;
        let claims: Vec<_> = self
            .pending_claims
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, p) in claims {
            let a = p.addr.addr;
            if self.by_addr.get(&a) == Some(&p.ident) {
                self.finish_claim(id, Ok(p.addr));
                continue;
            }
            let owner = self.ring.as_ref().and_then(|r| r.owner(a));
            if owner != Some(me) {
                continue;
            }
            if self.space.take(a) {
                self.record(&p.ident, p.addr, p.is_container);
                self.finish_claim(id, Ok(p.addr));
            } else if let Some(holder) = self.by_addr.get(&a) {
                let e = Error::AlreadyOwned {
                    addr: p.addr.ip(),
                    ident: holder.clone(),
                };
                self.finish_claim(id, Err(e));
            } else {
                let peer = self.contested.get(&a).copied().unwrap_or(me);
                let e = Error::OwnedByOtherPeer {
                    addr: p.addr.ip(),
                    peer,
                };
                self.finish_claim(id, Err(e));
            }
        }
    }

    fn finish_claim(&mut self, request: RequestId, r: Result<Cidr, Error>) {
        self.pending_claims.remove(&request);
        self.events.push_back(match r {
            Ok(addr) => Event::Claimed { request, addr },
            Err(error) => Event::Failed { request, error },
        });
    }

    /// Sends the space requests that waiting work needs.
    pub(crate) fn ask_for_space(&mut self, now: Instant) {
        let _ = now;
        let Some(ring) = self.ring.clone() else {
            return;
        };
        let me = self.cfg.name;
        // Claims of addresses another peer owns.
        let claims: Vec<_> = self
            .pending_claims
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, p) in claims {
            let Some(owner) = ring.owner(p.addr.addr) else {
                continue;
            };
            if owner == me {
                continue;
            }
            if self.known.contains_key(&owner) {
                let a = p.addr.addr;
                let m = Message::SpaceRequest {
                    id: id.0,
                    range: AddrRange::new(a, a + 1),
                    kind: SpaceKind::Claim,
                };
                self.unicast(owner, &m);
            } else if let Some(c) = self.pending_claims.get_mut(&id) {
                c.attempts += 1;
                if c.attempts > MAX_CLAIM_ATTEMPTS {
                    let e = Error::OwnedByOtherPeer {
                        addr: p.addr.ip(),
                        peer: owner,
                    };
                    self.finish_claim(id, Err(e));
                }
            }
        }
        // Live addresses we hold in someone else's space.
        for (owner, run) in self.unowned_runs() {
            if self.known.contains_key(&owner) {
                let m = Message::SpaceRequest {
                    id: 0,
                    range: run,
                    kind: SpaceKind::Reclaim,
                };
                self.unicast(owner, &m);
            }
        }
        // Allocations waiting for space: one donation request per subnet.
        let subnets: BTreeSet<Cidr> = self.pending_allocs.values().map(|p| p.subnet).collect();
        for subnet in subnets {
            let host = subnet.host_range().intersect(&self.universe);
            if self.space.lowest_in(host).is_some() {
                continue;
            }
            if let Some(donor) = self.pick_donor(&ring, host) {
                let m = Message::SpaceRequest {
                    id: 0,
                    range: host,
                    kind: SpaceKind::Donate,
                };
                self.unicast(donor, &m);
            } else {
                self.fail_full(&ring, subnet);
            }
        }
    }

    /// No free address here and no reachable peer left to ask: the
    /// allocations waiting in `subnet` fail now, saying how full it is,
    /// rather than wait for space nobody can give.
    fn fail_full(&mut self, ring: &Ring, subnet: Cidr) {
        let me = self.cfg.name;
        let host = subnet.host_range().intersect(&self.universe);
        let (mut reachable_free, mut unreachable) = (0u64, 0u64);
        for (r, e) in ring.iter() {
            // A peer that just denied us has none, whatever it advertised.
            if e.peer == me || !r.overlaps(&host) || self.denied_donors.contains(&e.peer) {
                continue;
            }
            let free = u64::from(e.free.min(r.intersect(&host).size()));
            if self.known.contains_key(&e.peer) {
                reachable_free += free;
            } else {
                unreachable += free;
            }
        }
        let size = u64::from(host.size());
        let used = size.saturating_sub(reachable_free + unreachable);
        let failed: Vec<RequestId> = self
            .pending_allocs
            .iter()
            .filter(|(_, p)| p.subnet == subnet)
            .map(|(id, _)| *id)
            .collect();
        for request in failed {
            self.pending_allocs.remove(&request);
            self.events.push_back(Event::Failed {
                request,
                error: Error::Full {
                    subnet,
                    used,
                    size,
                    unreachable,
                },
            });
        }
    }

    /// A reachable owner in `host`, weighted by its advertised free count
    /// (peers advertising none still qualify, with weight 1, because counts
    /// lag behind donations).
    fn pick_donor(&mut self, ring: &Ring, host: AddrRange) -> Option<PeerName> {
        let me = self.cfg.name;
        let mut weights: BTreeMap<PeerName, u64> = BTreeMap::new();
        for (r, e) in ring.iter() {
            if e.peer == me
                || !r.overlaps(&host)
                || !self.known.contains_key(&e.peer)
                || self.denied_donors.contains(&e.peer)
            {
                continue;
            }
            *weights.entry(e.peer).or_insert(1) += u64::from(e.free.min(r.intersect(&host).size()));
        }
        let total: u64 = weights.values().sum();
        if total == 0 {
            return None;
        }
        let mut pick = self.rng.below(total);
        for (p, w) in weights {
            if pick < w {
                return Some(p);
            }
            pick -= w;
        }
        None
    }

    fn handle_donation_request(&mut self, src: PeerName, id: u64, range: AddrRange, now: Instant) {
        let me = self.cfg.name;
        let r = range.intersect(&self.universe);
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let free = self.space.free_ranges_in(r);
        let total: u64 = free.iter().map(|f| u64::from(f.size())).sum();
        let Some(largest) = free
            .iter()
            .max_by_key(|f| (f.size(), std::cmp::Reverse(f.start)))
            .copied()
        else {
            self.unicast(
                src,
                &Message::SpaceDenied {
                    id,
                    range,
                    conflicts: Vec::new(),
                },
            );
            return;
        };
        let mut chunk = aligned_block(largest);
        if u64::from(chunk.size()) * 2 > total && chunk.size() > 1 {
            chunk.start += chunk.size() / 2;
        }
        if ring.transfer(chunk, me, src).is_err() {
            return;
        }
        self.on_ring_changed(now);
        self.broadcast_state();
        if let Some(ring) = self.ring.clone() {
            self.unicast(src, &Message::RingUpdate(ring));
        }
    }

    fn handle_exact_request(
        &mut self,
        src: PeerName,
        id: u64,
        range: AddrRange,
        live: bool,
        now: Instant,
    ) {
        let me = self.cfg.name;
        let r = range.intersect(&self.universe);
        if self.ring.is_none() || r.is_empty() {
            return;
        }
        // Free addresses, plus addresses reserved for exactly this peer.
        let mut give: BTreeSet<u32> = BTreeSet::new();
        let mut runs: Vec<AddrRange> = self.space.free_ranges_in(r);
        let mut conflicts: Vec<u32> = Vec::new();
        for (a, p) in self.contested.range(r.start..r.end) {
            if self.by_addr.contains_key(a) {
                continue;
            }
            if *p == src {
                give.insert(*a);
            } else {
                conflicts.push(*a);
            }
        }
        let ring = self
            .ring
            .as_ref()
            .map(|r| r.owned_by(me))
            .unwrap_or_default();
        let mine = |a: u32| ring.iter().any(|o| o.contains(a));
        let mut new_conflicts = Vec::new();
        for (a, ident) in self.by_addr.range(r.start..r.end) {
            if !mine(*a) {
                continue;
            }
            conflicts.push(*a);
            if live && self.contested.insert(*a, src).is_none() {
                new_conflicts.push(Conflict {
                    addr: (*a).into(),
                    ident: ident.clone(),
                    peer: src,
                });
            }
        }
        runs.extend(give.iter().map(|a| AddrRange::new(*a, a + 1)));
        let mut transferred = false;
        if let Some(ring) = self.ring.as_mut() {
            for run in runs {
                if ring.transfer(run, me, src).is_ok() {
                    transferred = true;
                }
            }
        }
        for a in give {
            self.contested.remove(&a);
        }
        let had_new = !new_conflicts.is_empty();
        for c in new_conflicts {
            self.events.push_back(Event::Conflict(c));
        }
        if transferred {
            self.on_ring_changed(now);
            self.broadcast_state();
        } else if had_new {
            self.rebuild_space();
            self.dirty = true;
        }
        if let Some(ring) = self.ring.clone() {
            self.unicast(src, &Message::RingUpdate(ring));
        }
        if !conflicts.is_empty() {
            conflicts.sort_unstable();
            conflicts.truncate(MAX_ADDR_LIST);
            self.unicast(
                src,
                &Message::SpaceDenied {
                    id,
                    range,
                    conflicts,
                },
            );
        }
    }

    fn handle_denied(&mut self, src: PeerName, range: AddrRange, conflicts: &[u32], now: Instant) {
        let failed: Vec<_> = self
            .pending_claims
            .iter()
            .filter(|(_, p)| range.contains(p.addr.addr))
            .map(|(id, p)| (*id, p.addr))
            .collect();
        for (id, addr) in failed {
            let e = Error::OwnedByOtherPeer {
                addr: addr.ip(),
                peer: src,
            };
            self.finish_claim(id, Err(e));
        }
        for a in conflicts {
            if !range.contains(*a) {
                continue;
            }
            if let Some(ident) = self.by_addr.get(a)
                && self.conflicts.insert(*a, src).is_none()
            {
                self.events.push_back(Event::Conflict(Conflict {
                    addr: (*a).into(),
                    ident: ident.clone(),
                    peer: src,
                }));
            }
        }
        if conflicts.is_empty() {
            self.denied_donors.insert(src);
            // Ask the next donor now, or fail if none is left.
            self.ask_for_space(now);
        }
    }

    fn handle_release(&mut self, src: PeerName, addrs: &[u32]) {
        let mut changed = false;
        for a in addrs {
            if self.contested.get(a) == Some(&src) {
                self.contested.remove(a);
                changed = true;
            }
        }
        if changed {
            self.rebuild_space();
            self.dirty = true;
        }
    }

    fn handle_verify(&mut self, src: PeerName, addrs: &[u32]) {
        let me = self.cfg.name;
        let gone: Vec<u32> = addrs
            .iter()
            .copied()
            .filter(|a| {
                let held = self.by_addr.contains_key(a);
                let owner = self.ring.as_ref().and_then(|r| r.owner(*a));
                !held || owner == Some(me)
            })
            .collect();
        if !gone.is_empty() {
            self.send_release(src, gone);
        }
    }

    /// Asks every reachable peer we reserve contested addresses for whether
    /// it still holds them.
    fn verify_contested(&mut self) {
        let mut by_peer: BTreeMap<PeerName, Vec<u32>> = BTreeMap::new();
        for (a, p) in &self.contested {
            if self.known.contains_key(p) {
                by_peer.entry(*p).or_default().push(*a);
            }
        }
        for (p, mut addrs) in by_peer {
            addrs.truncate(MAX_ADDR_LIST);
            self.unicast(p, &Message::Verify { addrs });
        }
    }

    /// The mesh's view of reachable peers (with nicknames) changed.
    pub fn handle_peers_changed(&mut self, known: BTreeMap<PeerName, String>, now: Instant) {
        let me = self.cfg.name;
        let my_nick = self.known.get(&me).cloned().unwrap_or_default();
        self.known = known;
        self.known.entry(me).or_insert(my_nick);
        for (p, n) in &self.known {
            if !n.is_empty() {
                self.nicknames.insert(*p, n.clone());
            }
        }
        if let Some(ring) = &self.ring {
            for p in ring.peers() {
                if self.known.contains_key(&p) {
                    self.unknown_since.remove(&p);
                } else {
                    self.unknown_since.entry(p).or_insert(now);
                }
            }
        }
        self.arm(now);
        self.ask_for_space(now);
    }

    /// Timer input; see [`Ipam::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            self.next_tick = None;
            self.next_propose = None;
            return;
        }
        if self.next_propose.is_some_and(|t| t <= now) {
            self.next_propose = None;
            if self.ring.is_none() && self.initialising && self.paxos.is_elector() {
                self.propose(now);
            }
        }
        if self.next_tick.is_none_or(|t| t > now) {
            return;
        }
        self.next_tick = Some(now + RETRY_INTERVAL);
        self.denied_donors.clear();
        self.expire_dead(now);
        self.reclaim_unreachable(now);
        if self.ring.is_none() && self.initialising && self.is_observer() {
            self.broadcast_state();
        }
        let me = self.cfg.name;
        let space = &self.space;
        if let Some(ring) = self.ring.as_mut()
            && ring.refresh_free(me, |r| space.free_in(r))
        {
            self.dirty = true;
            self.broadcast_state();
        }
        self.retry(now);
        self.ask_for_space(now);
        self.verify_contested();
    }

    /// Opt-in: takes over peers unknown for longer than configured. Only
    /// the lowest-named reachable ring member acts, so one peer does it.
    fn reclaim_unreachable(&mut self, now: Instant) {
        let Some(after) = self.cfg.reclaim_unreachable_after else {
            return;
        };
        let me = self.cfg.name;
        let Some(ring) = self.ring.as_ref() else {
            return;
        };
        let ring_peers = ring.peers();
        let designated = ring_peers
            .iter()
            .filter(|p| self.known.contains_key(*p))
            .chain(std::iter::once(&me))
            .min()
            .copied();
        if designated != Some(me) {
            return;
        }
        let dead: Vec<PeerName> = self
            .unknown_since
            .iter()
            .filter(|(p, t)| now.saturating_duration_since(**t) >= after && ring_peers.contains(*p))
            .map(|(p, _)| *p)
            .collect();
        let mut moved = 0;
        if let Some(ring) = self.ring.as_mut() {
            for p in &dead {
                moved += ring.transfer_peer(*p, me, TAKEOVER_BUMP);
            }
        }
        for p in dead {
            self.unknown_since.remove(&p);
        }
        if moved > 0 {
            self.on_ring_changed(now);
            self.broadcast_state();
        }
    }
}

/// The largest power-of-two block aligned to its size inside `r`.
fn aligned_block(r: AddrRange) -> AddrRange {
    let mut size: u64 = 1u64 << (63 - u64::from(r.size().max(1)).leading_zeros());
    while size > 1 {
        let start = u64::from(r.start).div_ceil(size) * size;
        if start + size <= u64::from(r.end) {
            return AddrRange::new(start as u32, (start + size) as u32);
        }
        size /= 2;
    }
    AddrRange::new(r.start, r.start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_blocks() {
        assert_eq!(aligned_block(AddrRange::new(0, 16)), AddrRange::new(0, 16));
        assert_eq!(aligned_block(AddrRange::new(3, 16)), AddrRange::new(8, 16));
        assert_eq!(aligned_block(AddrRange::new(5, 6)), AddrRange::new(5, 6));
        assert_eq!(aligned_block(AddrRange::new(1, 4)), AddrRange::new(2, 4));
    }
}
