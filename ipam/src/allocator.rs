//! The [`Ipam`] state machine: the request API (allocate,
//! claim, free, lookup), container liveness with a grace period, `rmpeer`,
//! hand-over on reset, and persistence. Message handling, retries and
//! donation live in `protocol.rs`; status rendering in `status.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::addr::{AddrRange, Cidr, Ident, PeerName, SplitMix};
use crate::consensus::Paxos;
use crate::persist::{Owned, PERSIST_FORMAT, PersistError, Persisted};
use crate::ring::Ring;
use crate::space::Space;
use crate::types::{
    Allocation, Config, Conflict, Error, Event, Init, RequestId, TAKEOVER_BUMP, Transmit,
};
use crate::wire::MAX_EXACT_RANGE;

#[derive(Clone, Debug)]
pub(crate) struct PendingAlloc {
    pub(crate) ident: Ident,
    pub(crate) subnet: Cidr,
    pub(crate) is_container: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct PendingClaim {
    pub(crate) ident: Ident,
    pub(crate) addr: Cidr,
    pub(crate) is_container: bool,
    pub(crate) attempts: u32,
}

/// The IPAM state machine.
///
/// Call protocol (quinn-style, sans-IO): feed inputs with the request
/// methods and `handle_*`; after **every** call drain, in this order:
/// 1. `poll_persist`: write the returned state durably *first*;
/// 2. `poll_transmit`: send;
/// 3. `poll_event`: deliver, and only now answer a caller whose request
///    returned [`Allocation::Done`].
///
/// Persisting before anything leaves means a kill -9 at any instant can
/// lose only work nobody was told about: an acknowledged address, or space
/// given to a peer, is always on disk. Arm a timer for
/// [`Ipam::poll_timeout`] and call [`Ipam::handle_timeout`] when it fires;
/// send [`Ipam::full_state`] on the mesh's periodic gossip.
///
/// [`crate::node::Node`] is that protocol, written once: the router and the
/// simulators drive it rather than this type's `poll_*` methods.
#[derive(Debug)]
pub struct Ipam {
    pub(crate) cfg: Config,
    pub(crate) universe: AddrRange,
    pub(crate) ring: Option<Ring>,
    pub(crate) paxos: Paxos,
    pub(crate) initialising: bool,
    pub(crate) space: Space,
    pub(crate) owned: BTreeMap<Ident, Owned>,
    pub(crate) by_addr: BTreeMap<u32, Ident>,
    pub(crate) contested: BTreeMap<u32, PeerName>,
    pub(crate) conflicts: BTreeMap<u32, PeerName>,
    pub(crate) dead: BTreeMap<Ident, Instant>,
    pub(crate) pending_allocs: BTreeMap<RequestId, PendingAlloc>,
    pub(crate) pending_claims: BTreeMap<RequestId, PendingClaim>,
    pub(crate) known: BTreeMap<PeerName, String>,
    pub(crate) nicknames: BTreeMap<PeerName, String>,
    pub(crate) unknown_since: BTreeMap<PeerName, Instant>,
    pub(crate) denied_donors: BTreeSet<PeerName>,
    pub(crate) next_request: u64,
    pub(crate) rng: SplitMix,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) dirty: bool,
    pub(crate) seq: u64,
    pub(crate) next_tick: Option<Instant>,
    pub(crate) next_propose: Option<Instant>,
    pub(crate) shut_down: bool,
}

impl Ipam {
    /// A fresh peer with no persisted state. `seed` drives donor choice and
    /// re-proposal jitter.
    pub fn new(cfg: Config, seed: u64) -> Ipam {
        // Only consensus peers vote: a seed or observer peer must never
        // count as (or form) a quorum.
        let elector = matches!(cfg.init, Init::Consensus { .. });
        let n = match &cfg.init {
            Init::Consensus { peers } => *peers,
            _ => 1,
        };
        let universe = cfg.range.range();
        let paxos = Paxos::new(cfg.name, n, elector);
        let mut known = BTreeMap::new();
        known.insert(cfg.name, String::new());
        Ipam {
            universe,
            ring: None,
            paxos,
            initialising: false,
            space: Space::default(),
            owned: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            contested: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            dead: BTreeMap::new(),
            pending_allocs: BTreeMap::new(),
            pending_claims: BTreeMap::new(),
            known,
            nicknames: BTreeMap::new(),
            unknown_since: BTreeMap::new(),
            denied_donors: BTreeSet::new(),
            next_request: 1,
            rng: SplitMix::new(seed ^ cfg.name.as_u64()),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dirty: false,
            seq: 0,
            next_tick: None,
            next_propose: None,
            shut_down: false,
            cfg,
        }
    }

    /// Restores from persisted state. Fails (and the caller should start
    /// with [`Ipam::new`] and log the error) if the state belongs to another
    /// peer or range, or is corrupt. Dead-container marks are not
    /// persisted: call [`Ipam::handle_containers_running`] after start (the
    /// addresses of containers that died meanwhile go after the grace).
    pub fn from_persisted(cfg: Config, p: Persisted, seed: u64) -> Result<Ipam, PersistError> {
        if p.format != PERSIST_FORMAT {
            return Err(PersistError::Format { found: p.format });
        }
        if p.peer != cfg.name {
            return Err(PersistError::OtherPeer {
                persisted: p.peer,
                me: cfg.name,
            });
        }
        if p.range != cfg.range {
            return Err(PersistError::OtherRange {
                persisted: p.range,
                configured: cfg.range,
            });
        }
        let mut ipam = Ipam::new(cfg, seed);
        if let Some(ring) = &p.ring {
            ring.validate()
                .map_err(|e| PersistError::Corrupt(e.to_string()))?;
            if ring.range() != ipam.universe {
                return Err(PersistError::Corrupt(
                    "ring range differs from range".into(),
                ));
            }
        }
        ipam.paxos.restore(&p.paxos);
        ipam.ring = p.ring;
        for (ident, o) in p.owned {
            for c in &o.addrs {
                if let Some(prev) = ipam.by_addr.insert(c.addr, ident.clone())
                    && prev != ident
                {
                    return Err(PersistError::Corrupt(format!(
                        "{} held by {prev} and {ident}",
                        c.ip()
                    )));
                }
            }
            ipam.owned.insert(ident, o);
        }
        ipam.contested = p.contested;
        ipam.seq = p.seq;
        ipam.rebuild_space();
        Ok(ipam)
    }

    /// [`Ipam::from_persisted`] falling back to a fresh peer, returning the
    /// reason the persisted state was not used.
    pub fn restore_or_new(
        cfg: Config,
        p: Option<Persisted>,
        seed: u64,
    ) -> (Ipam, Option<PersistError>) {
        match p {
            None => (Ipam::new(cfg, seed), None),
            Some(p) => match Ipam::from_persisted(cfg.clone(), p, seed) {
                Ok(i) => (i, None),
                Err(e) => {
                    let mut fresh = Ipam::new(cfg, seed);
                    // Make the router overwrite the unusable file.
                    fresh.dirty = true;
                    (fresh, Some(e))
                }
            },
        }
    }

    /// True for `--ipalloc-init observer`.
    pub fn is_observer(&self) -> bool {
        matches!(self.cfg.init, Init::Observer)
    }

    /// This peer.
    pub fn name(&self) -> PeerName {
        self.cfg.name
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The ring, once initialised.
    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// The state to persist, if it changed since the last call. See the
    /// call protocol on [`Ipam`].
    pub fn poll_persist(&mut self) -> Option<Persisted> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.seq += 1;
        Some(self.persisted())
    }

    /// Tells the state machine that writing the state last returned by
    /// [`Ipam::poll_persist`] failed: it is offered again by the next call.
    /// Until a write succeeds, hold back transmits and events.
    pub fn persist_failed(&mut self) {
        self.dirty = true;
    }

    /// A snapshot of the durable state.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            format: PERSIST_FORMAT,
            peer: self.cfg.name,
            range: self.cfg.range,
            seq: self.seq,
            ring: self.ring.clone(),
            paxos: self.paxos.state().clone(),
            owned: self.owned.clone(),
            contested: self.contested.clone(),
        }
    }

    /// Next output for the wire.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next output for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Ipam::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_tick, self.next_propose) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn new_request(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    fn check_subnet(&self, subnet: Cidr) -> Result<(), Error> {
        if !subnet.is_network() {
            return Err(Error::NotNetwork(subnet));
        }
        if subnet.size() < 4 {
            return Err(Error::TooSmall(subnet));
        }
        if !subnet.range().overlaps(&self.universe) {
            return Err(Error::OutOfBounds {
                subnet,
                range: self.cfg.range,
            });
        }
        Ok(())
    }

    /// The address `ident` holds inside `subnet`, if any.
    pub(crate) fn held_in(&self, ident: &Ident, subnet: Cidr) -> Option<Cidr> {
        self.owned
            .get(ident)?
            .addrs
            .iter()
            .find(|c| subnet.contains(c.addr) && c.len == subnet.len)
            .copied()
    }

    pub(crate) fn record(&mut self, ident: &Ident, addr: Cidr, is_container: bool) {
        let o = self.owned.entry(ident.clone()).or_default();
        o.is_container = is_container;
        o.addrs.insert(addr);
        self.by_addr.insert(addr.addr, ident.clone());
        self.dirty = true;
    }

    /// Allocates an address for `ident` in `subnet` (default subnet when
    /// `None`). Idempotent: the same ident gets the same address, and a
    /// container marked dead is resurrected. `is_container` is weave's
    /// `check-alive`: such addresses are released when the container dies.
    pub fn allocate(
        &mut self,
        ident: &Ident,
        subnet: Option<Cidr>,
        is_container: bool,
        now: Instant,
    ) -> Result<Allocation, Error> {
        if self.shut_down {
            return Err(Error::ShuttingDown);
        }
        let subnet = subnet.unwrap_or(self.cfg.default_subnet);
        self.check_subnet(subnet)?;
        self.dead.remove(ident);
        self.arm(now);
        self.ensure_ring(now);
        if let Some(c) = self.held_in(ident, subnet) {
            return Ok(Allocation::Done(c));
        }
        if self.ring.is_some()
            && let Some(c) = self.try_allocate(ident, subnet, is_container)
        {
            return Ok(Allocation::Done(c));
        }
        let id = self.new_request();
        self.pending_allocs.insert(
            id,
            PendingAlloc {
                ident: ident.clone(),
                subnet,
                is_container,
            },
        );
        self.ensure_ring(now);
        self.ask_for_space(now);
        Ok(Allocation::Pending(id))
    }

    pub(crate) fn try_allocate(
        &mut self,
        ident: &Ident,
        subnet: Cidr,
        is_container: bool,
    ) -> Option<Cidr> {
        let host = subnet.host_range().intersect(&self.universe);
        let a = self.space.take_lowest(host)?;
        let c = Cidr {
            addr: a,
            len: subnet.len,
        };
        self.record(ident, c, is_container);
        Some(c)
    }

    /// Claims exactly `addr` (prefix = its subnet) for `ident`. Outside the
    /// universe it is just recorded. With `no_error_on_unknown` (addresses
    /// already in use at startup) it succeeds at once and is re-claimed
    /// from its owner in the background.
    pub fn claim(
        &mut self,
        ident: &Ident,
        addr: Cidr,
        is_container: bool,
        no_error_on_unknown: bool,
        now: Instant,
    ) -> Result<Allocation, Error> {
        if self.shut_down {
            return Err(Error::ShuttingDown);
        }
        self.dead.remove(ident);
        self.arm(now);
        self.ensure_ring(now);
        if let Some(holder) = self.by_addr.get(&addr.addr) {
            if holder == ident {
                return Ok(Allocation::Done(addr));
            }
            if !ident.0.is_empty() && ident.0 != "_" {
                return Err(Error::AlreadyOwned {
                    addr: addr.ip(),
                    ident: holder.clone(),
                });
            }
        }
        if !self.universe.contains(addr.addr) {
            self.record(ident, addr, is_container);
            return Ok(Allocation::Done(addr));
        }
        if let Some(ring) = &self.ring
            && ring.owner(addr.addr) == Some(self.cfg.name)
        {
            if self.space.take(addr.addr) {
                self.record(ident, addr, is_container);
                return Ok(Allocation::Done(addr));
            }
            let peer = self
                .contested
                .get(&addr.addr)
                .copied()
                .unwrap_or(self.cfg.name);
            return Err(Error::OwnedByOtherPeer {
                addr: addr.ip(),
                peer,
            });
        }
        if no_error_on_unknown {
            // Already in use on this host: record it; the protocol re-claims
            // unowned live addresses from their owner until granted.
            self.record(ident, addr, is_container);
            self.ensure_ring(now);
            return Ok(Allocation::Done(addr));
        }
        let id = self.new_request();
        self.pending_claims.insert(
            id,
            PendingClaim {
                ident: ident.clone(),
                addr,
                is_container,
                attempts: 0,
            },
        );
        self.ensure_ring(now);
        self.retry(now);
        Ok(Allocation::Pending(id))
    }

    /// Cancels a pending request (client went away).
    pub fn cancel(&mut self, request: RequestId) -> bool {
        self.pending_allocs.remove(&request).is_some()
            || self.pending_claims.remove(&request).is_some()
    }

    /// Addresses `ident` holds inside `subnet` (all when `None`).
    pub fn lookup(&self, ident: &Ident, subnet: Option<Cidr>) -> Vec<Cidr> {
        let Some(o) = self.owned.get(ident) else {
            return Vec::new();
        };
        o.addrs
            .iter()
            .filter(|c| subnet.is_none_or(|s| s.contains(c.addr)))
            .copied()
            .collect()
    }

    /// Who holds `addr` here, if anyone (`GET /ipinfo/owner/{ip}`).
    pub fn holder(&self, addr: Ipv4Addr) -> Option<&Ident> {
        self.by_addr.get(&u32::from(addr))
    }

    /// Every owner and its addresses (`GET /ip`).
    pub fn owned(&self) -> &BTreeMap<Ident, Owned> {
        &self.owned
    }

    /// Frees one address of `ident`.
    pub fn free(&mut self, ident: &Ident, addr: Ipv4Addr) -> Result<(), Error> {
        let a = u32::from(addr);
        let found = self
            .owned
            .get(ident)
            .and_then(|o| o.addrs.iter().find(|c| c.addr == a).copied());
        let Some(c) = found else {
            return Err(Error::NotFound {
                addr,
                ident: ident.clone(),
            });
        };
        self.release(ident, &[c]);
        Ok(())
    }

    /// Frees every address of `ident`; returns them.
    pub fn free_all(&mut self, ident: &Ident) -> Result<Vec<Cidr>, Error> {
        let addrs: Vec<Cidr> = match self.owned.get(ident) {
            Some(o) if !o.addrs.is_empty() => o.addrs.iter().copied().collect(),
            _ => return Err(Error::NoAddresses(ident.clone())),
        };
        self.release(ident, &addrs);
        Ok(addrs)
    }

    fn release(&mut self, ident: &Ident, addrs: &[Cidr]) {
        let me = self.cfg.name;
        let mut unowned: BTreeMap<PeerName, Vec<u32>> = BTreeMap::new();
        for c in addrs {
            self.by_addr.remove(&c.addr);
            if let Some(o) = self.owned.get_mut(ident) {
                o.addrs.remove(c);
            }
            self.conflicts.remove(&c.addr);
            let owner = self.ring.as_ref().and_then(|r| r.owner(c.addr));
            match owner {
                // A contested address stays reserved for its other holder.
                Some(o) if o == me && !self.contested.contains_key(&c.addr) => {
                    self.space.give(c.addr)
                }
                Some(o) if o == me => {}
                Some(o) => unowned.entry(o).or_default().push(c.addr),
                None => {}
            }
        }
        if self.owned.get(ident).is_some_and(|o| o.addrs.is_empty()) {
            self.owned.remove(ident);
            self.dead.remove(ident);
        }
        for (peer, addrs) in unowned {
            self.send_release(peer, addrs);
        }
        self.dirty = true;
    }

    /// Docker `die`: the container's addresses are released after the grace
    /// period unless it starts again; its pending requests are cancelled.
    pub fn handle_container_died(&mut self, ident: &Ident, now: Instant) {
        if self.owned.get(ident).is_some_and(|o| o.is_container) {
            self.dead.insert(ident.clone(), now);
            self.arm(now);
        }
        let cancelled: Vec<RequestId> = self
            .pending_allocs
            .iter()
            .filter(|(_, p)| &p.ident == ident && p.is_container)
            .map(|(id, _)| *id)
            .chain(
                self.pending_claims
                    .iter()
                    .filter(|(_, p)| &p.ident == ident && p.is_container)
                    .map(|(id, _)| *id),
            )
            .collect();
        for request in cancelled {
            self.cancel(request);
            self.events.push_back(Event::Cancelled { request });
        }
    }

    /// Docker `start`: keeps the container's addresses.
    pub fn handle_container_started(&mut self, ident: &Ident) {
        self.dead.remove(ident);
    }

    /// Docker `destroy`: releases a container's addresses at once.
    pub fn handle_container_destroyed(&mut self, ident: &Ident) {
        if self.owned.get(ident).is_some_and(|o| o.is_container) {
            let _ = self.free_all(ident);
        }
    }

    /// The containers running now (at startup, and whenever the Docker
    /// watcher reconnects): every container whose addresses are held here
    /// and that is not in `running` is marked dead at `now` and released
    /// after the grace period unless it starts again (a container created
    /// but not yet started, or one restarting, keeps its address); running
    /// ones are alive again. Returns the containers newly marked dead.
    pub fn handle_containers_running(
        &mut self,
        running: &BTreeSet<Ident>,
        now: Instant,
    ) -> Vec<Ident> {
        let gone: Vec<Ident> = self
            .owned
            .iter()
            .filter(|(i, o)| o.is_container && !running.contains(*i) && !self.dead.contains_key(*i))
            .map(|(i, _)| i.clone())
            .collect();
        for i in running {
            self.dead.remove(i);
        }
        for i in &gone {
            self.dead.insert(i.clone(), now);
        }
        if !gone.is_empty() {
            self.arm(now);
        }
        gone
    }

    pub(crate) fn expire_dead(&mut self, now: Instant) {
        let grace = self.cfg.grace;
        let expired: Vec<Ident> = self
            .dead
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= grace)
            .map(|(i, _)| i.clone())
            .collect();
        for ident in expired {
            self.dead.remove(&ident);
            if let Ok(addrs) = self.free_all(&ident) {
                self.events.push_back(Event::Released { ident, addrs });
            }
        }
    }

    /// Triggers initialisation (`GET /ring`); true once the ring exists.
    pub fn prime(&mut self, now: Instant) -> bool {
        self.arm(now);
        self.ensure_ring(now);
        self.ring.is_some()
    }

    /// Resolves a peer name or nickname among ring owners and known peers.
    pub fn resolve_peer(&self, s: &str) -> Option<PeerName> {
        if let Ok(p) = s.parse::<PeerName>() {
            return Some(p);
        }
        self.nicknames
            .iter()
            .find(|(_, n)| n.as_str() == s)
            .map(|(p, _)| *p)
    }

    /// `rmpeer`: takes over every range of a (dead) peer; returns the number
    /// of addresses taken over (`"{n} IPs taken over from {name}"`).
    pub fn rmpeer(&mut self, peer: &str, now: Instant) -> Result<u64, Error> {
        let p = self
            .resolve_peer(peer)
            .ok_or_else(|| Error::UnknownPeer(peer.to_string()))?;
        if p == self.cfg.name {
            return Err(Error::IsSelf);
        }
        let me = self.cfg.name;
        let ring = self.ring.as_mut().ok_or(Error::NoRing)?;
        let moved = ring.transfer_peer(p, me, TAKEOVER_BUMP);
        self.unknown_since.remove(&p);
        // Even with nothing moved the ring changed: `p` is now recorded as
        // gone, which releases reservations held for it everywhere.
        self.on_ring_changed(now);
        self.broadcast_state();
        Ok(moved)
    }

    /// `reset`: hands all our space to an heir (a ring peer in `reachable`,
    /// else a peer in `reachable`, else any ring peer), broadcasts, and stops
    /// allocating. `reachable` is who the mesh reaches at this moment: a peer
    /// whose connections just closed is still known until garbage
    /// collection, and space handed to it would reach nobody. Returns the
    /// heir, `None` when there is nobody to hand to.
    pub fn leave(&mut self, reachable: &BTreeSet<PeerName>, now: Instant) -> Option<PeerName> {
        self.shut_down = true;
        let me = self.cfg.name;
        let ring = self.ring.as_mut()?;
        let ring_peers = ring.peers();
        let heir = ring_peers
            .iter()
            .find(|p| **p != me && reachable.contains(*p))
            .or_else(|| reachable.iter().find(|p| **p != me))
            .or_else(|| ring_peers.iter().find(|p| **p != me))
            .copied()?;
        ring.transfer_peer(me, heir, TAKEOVER_BUMP);
        self.owned.clear();
        self.by_addr.clear();
        self.pending_allocs.clear();
        self.pending_claims.clear();
        self.on_ring_changed(now);
        self.broadcast_state();
        Some(heir)
    }

    /// Rebuilds free space from the ring and local allocations.
    pub(crate) fn rebuild_space(&mut self) {
        let owned = match &self.ring {
            Some(r) => r.owned_by(self.cfg.name),
            None => Vec::new(),
        };
        let mut taken: BTreeSet<u32> = self.by_addr.keys().copied().collect();
        taken.extend(self.contested.keys().copied());
        self.space = Space::rebuild(&owned, &taken);
    }

    /// Local allocations inside the universe that the ring gives to
    /// another peer (after adopting a ring, an rmpeer of us, or a startup
    /// claim), grouped into runs per owner.
    pub(crate) fn unowned_runs(&self) -> Vec<(PeerName, AddrRange)> {
        let Some(ring) = &self.ring else {
            return Vec::new();
        };
        let me = self.cfg.name;
        let mut out: Vec<(PeerName, AddrRange)> = Vec::new();
        for a in self
            .by_addr
            .range(self.universe.start..self.universe.end)
            .map(|(a, _)| *a)
        {
            let Some(owner) = ring.owner(a) else { continue };
            if owner == me {
                continue;
            }
            match out.last_mut() {
                Some((p, r)) if *p == owner && r.end == a && r.size() < MAX_EXACT_RANGE => {
                    r.end = a + 1
                }
                _ => out.push((owner, AddrRange::new(a, a + 1))),
            }
        }
        out
    }

    /// Checks internal consistency (for tests and debug assertions in the
    /// router): free space lies inside owned space and never overlaps an
    /// allocation or a contested address; the reverse index matches.
    pub fn check_invariants(&self) -> Result<(), String> {
        let owned = match &self.ring {
            Some(r) => r.owned_by(self.cfg.name),
            None => Vec::new(),
        };
        for f in self.space.free_ranges_in(self.universe) {
            if !owned.iter().any(|o| o.start <= f.start && f.end <= o.end) {
                return Err(format!("free range {f} not owned"));
            }
            if let Some((a, _)) = self.by_addr.range(f.start..f.end).next() {
                return Err(format!("{} both free and allocated", Ipv4Addr::from(*a)));
            }
            if let Some((a, _)) = self.contested.range(f.start..f.end).next() {
                return Err(format!("{} both free and contested", Ipv4Addr::from(*a)));
            }
        }
        let mut n = 0;
        for (ident, o) in &self.owned {
            for c in &o.addrs {
                n += 1;
                if self.by_addr.get(&c.addr) != Some(ident) {
                    return Err(format!("index mismatch for {c} of {ident}"));
                }
            }
        }
        if n != self.by_addr.len() {
            return Err("reverse index has extra entries".into());
        }
        Ok(())
    }

    /// Local allocations whose space the ring gives to another peer (being
    /// re-claimed): `(address, owner)`.
    pub fn unowned(&self) -> Vec<(Ipv4Addr, PeerName)> {
        self.unowned_runs()
            .into_iter()
            .flat_map(|(p, r)| (r.start..r.end).map(move |a| (Ipv4Addr::from(a), p)))
            .collect()
    }

    /// Addresses allocated here.
    pub fn active(&self) -> usize {
        self.by_addr.len()
    }

    /// Live addresses that another peer also has live, both kinds: ones we
    /// hold in space another peer owns, and ones in our space that another
    /// peer says it holds.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out = Vec::new();
        for (a, peer) in self.conflicts.iter().chain(self.contested.iter()) {
            if let Some(ident) = self.by_addr.get(a) {
                out.push(Conflict {
                    addr: Ipv4Addr::from(*a),
                    ident: ident.clone(),
                    peer: *peer,
                });
            }
        }
        out.sort_by_key(|c| c.addr);
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::Init;

    /// Re-claims go out as exact ranges per owner: consecutive addresses join one run, a gap
    /// or [`MAX_EXACT_RANGE`] addresses start the next.
    #[test]
    fn addresses_in_another_peers_space_are_grouped_into_runs_of_at_most_max_exact_range() {
        let now = Instant::now();
        let (me, other) = (PeerName::new(1).unwrap(), PeerName::new(2).unwrap());
        let range: Cidr = "10.0.0.0/20".parse().unwrap();
        let mut ipam = Ipam::new(
            Config::new(me, range, Init::Seed(BTreeSet::from([me, other]))),
            1,
        );
        ipam.ensure_ring(now);
        let theirs = ipam
            .ring
            .as_ref()
            .expect("a seeded ring")
            .owned_by(other)
            .into_iter()
            .max_by_key(|r| r.size())
            .expect("the other peer owns space");
        let long = MAX_EXACT_RANGE + 6;
        assert!(
            theirs.size() > long + 8,
            "{theirs} is too small for the test"
        );
        let start = theirs.start;
        let claimed: Vec<u32> = (start..start + long)
            .chain(start + long + 2..start + long + 5)
            .collect();
        for (i, a) in claimed.iter().enumerate() {
            let c = Cidr {
                addr: *a,
                len: range.len,
            };
            let r = ipam.claim(&Ident::new(format!("c{i}")), c, true, true, now);
            assert!(matches!(r, Ok(Allocation::Done(_))), "{r:?}");
        }
        assert_eq!(
            ipam.unowned_runs(),
            vec![
                (other, AddrRange::new(start, start + MAX_EXACT_RANGE)),
                (other, AddrRange::new(start + MAX_EXACT_RANGE, start + long)),
                (other, AddrRange::new(start + long + 2, start + long + 5)),
            ]
        );
        ipam.check_invariants().expect("consistent");

        // Freeing one of them hands it back to its owner, never to our free space.
        while ipam.poll_transmit().is_some() {}
        ipam.free(&Ident::new("c0"), Ipv4Addr::from(start))
            .expect("frees its address");
        ipam.check_invariants()
            .expect("still consistent after the free");
        let mut to_owner = false;
        while let Some(t) = ipam.poll_transmit() {
            to_owner |= matches!(t, Transmit::Unicast(p, _) if p == other);
        }
        assert!(to_owner, "the release goes to the address's owner");
    }
}
