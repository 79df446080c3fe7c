//! A deterministic simulator of N IPAM peers: virtual clock, seeded RNG,
//! a mesh that delivers broadcasts and unicasts inside partitions, kills at
//! any point (only what was persisted survives), restarts, and a ground
//! truth of which container holds which acknowledged address.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meshnet_ipam::{
    Allocation, Cidr, Config, Event, Ident, Init, Ipam, PeerName, Persisted, RequestId, Transmit,
};

/// xorshift64*: the test's own seeded RNG.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

pub struct Node {
    pub name: PeerName,
    pub cfg: Config,
    pub ipam: Option<Ipam>,
    pub disk: Option<Persisted>,
    /// Acknowledged, running containers on this host.
    pub containers: BTreeMap<Ident, Cidr>,
    pub waiting: BTreeMap<RequestId, Ident>,
    pub removed: bool,
    pub group: u32,
    pub events: Vec<Event>,
}

pub struct Sim {
    pub base: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub nodes: Vec<Node>,
    pub queue: VecDeque<(usize, usize, Vec<u8>)>,
    /// Chance (percent) that a node is killed right after handling an input
    /// and before its state was persisted.
    pub crash_pct: u64,
    pub next_container: u64,
    pub seed: u64,
    pub log: Vec<String>,
    pub verbose: bool,
    /// Counters: acknowledged allocations/claims, crashes, messages.
    pub acks: u64,
    pub crashes: u64,
    pub messages: u64,
    /// Period of the mesh's full-state gossip, in seconds.
    pub gossip_every: u64,
    /// Addresses allowed live on two containers: ones both groups handed
    /// out before two separately initialised rings met.
    pub allowed_dups: BTreeSet<u32>,
}

pub fn name(i: usize) -> PeerName {
    PeerName::new(0x0a00_0000_0000 + i as u64 + 1).expect("test names fit in 48 bits")
}

impl Sim {
    pub fn new(seed: u64, range: &str, inits: Vec<Init>) -> Sim {
        let base = Instant::now();
        let mut sim = Sim {
            base,
            now: base,
            rng: Rng::new(seed),
            nodes: Vec::new(),
            queue: VecDeque::new(),
            crash_pct: 0,
            next_container: 1,
            seed,
            log: Vec::new(),
            verbose: false,
            acks: 0,
            crashes: 0,
            messages: 0,
            gossip_every: 5,
            allowed_dups: BTreeSet::new(),
        };
        let range: Cidr = range.parse().expect("test range");
        for init in inits {
            sim.add_node(range, init, None);
        }
        sim.peers_changed();
        sim
    }

    pub fn note(&mut self, s: String) {
        if self.verbose {
            eprintln!("[{:>6.1}s] {s}", (self.now - self.base).as_secs_f64());
        }
        self.log.push(s);
    }

    pub fn add_node(&mut self, range: Cidr, init: Init, disk: Option<Persisted>) -> usize {
        let i = self.nodes.len();
        let n = name(i);
        let cfg = Config::new(n, range, init);
        let seed = self.rng.next();
        let (mut ipam, err) = Ipam::restore_or_new(cfg.clone(), disk, seed);
        if let Some(e) = err {
            self.log.push(format!("node {i} start: {e}"));
        }
        ipam.set_nickname(&format!("host{i}"));
        let mut node = Node {
            name: n,
            cfg,
            ipam: Some(ipam),
            disk: None,
            containers: BTreeMap::new(),
            waiting: BTreeMap::new(),
            removed: false,
            group: 0,
            events: Vec::new(),
        };
        // The router persists whatever a fresh start produced.
        if let Some(p) = node.ipam.as_mut().and_then(|x| x.poll_persist()) {
            node.disk = Some(p);
        }
        self.nodes.push(node);
        i
    }

    pub fn up(&self, i: usize) -> bool {
        self.nodes[i].ipam.is_some()
    }

    pub fn reachable(&self, a: usize, b: usize) -> bool {
        a != b && self.up(a) && self.up(b) && self.nodes[a].group == self.nodes[b].group
    }

    pub fn peers_changed(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.up(i) {
                continue;
            }
            let known: BTreeMap<PeerName, String> = (0..self.nodes.len())
                .filter(|j| *j == i || self.reachable(i, *j))
                .map(|j| (self.nodes[j].name, format!("host{j}")))
                .collect();
            let now = self.now;
            self.with(i, |ipam| ipam.handle_peers_changed(known, now));
        }
    }

    /// Runs `f` on node `i` then drains it as the router does: persist
    /// first, then transmits, then events. May crash the node in between.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Ipam) -> R) -> Option<R> {
        let ipam = self.nodes[i].ipam.as_mut()?;
        let r = f(ipam);
        if self.crash_pct > 0 && self.rng.chance(self.crash_pct) {
            self.crashes += 1;
            self.note(format!("crash node {i} before persisting"));
            self.nodes[i].ipam = None;
            self.nodes[i].waiting.clear();
            self.peers_changed();
            return None;
        }
        self.drain(i);
        Some(r)
    }

    fn drain(&mut self, i: usize) {
        let Some(ipam) = self.nodes[i].ipam.as_mut() else {
            return;
        };
        if let Some(p) = ipam.poll_persist() {
            self.nodes[i].disk = Some(p);
        }
        let ipam = self.nodes[i].ipam.as_mut().expect("up");
        let mut out = Vec::new();
        while let Some(t) = ipam.poll_transmit() {
            out.push(t);
        }
        let mut evs = Vec::new();
        while let Some(e) = ipam.poll_event() {
            evs.push(e);
        }
        if self.verbose {
            for t in &out {
                let (to, b) = match t {
                    Transmit::Broadcast(b) => ("all".to_string(), b),
                    Transmit::Unicast(p, b) => (p.to_string(), b),
                };
                let m = meshnet_ipam::wire::Message::decode(b);
                eprintln!("    node {i} -> {to}: {m:?}");
            }
            for e in &evs {
                eprintln!("    node {i} event {e:?}");
            }
        }
        for t in out {
            match t {
                Transmit::Broadcast(b) => {
                    for j in 0..self.nodes.len() {
                        if self.reachable(i, j) {
                            self.queue.push_back((i, j, b.clone()));
                        }
                    }
                }
                Transmit::Unicast(to, b) => {
                    if let Some(j) = self.nodes.iter().position(|n| n.name == to)
                        && self.reachable(i, j)
                    {
                        self.queue.push_back((i, j, b));
                    }
                }
            }
        }
        for e in evs {
            match &e {
                Event::Allocated { request, addr } | Event::Claimed { request, addr } => {
                    if let Some(ident) = self.nodes[i].waiting.remove(request) {
                        self.acks += 1;
                        self.nodes[i].containers.insert(ident, *addr);
                    }
                }
                Event::Failed { request, .. } | Event::Cancelled { request } => {
                    self.nodes[i].waiting.remove(request);
                }
                _ => {}
            }
            self.nodes[i].events.push(e);
        }
    }

    /// Delivers queued messages until quiet (bounded).
    pub fn deliver_all(&mut self) {
        let mut budget = 20_000;
        while let Some((from, to, b)) = self.queue.pop_front() {
            budget -= 1;
            self.messages += 1;
            assert!(budget > 0, "message storm (seed {})", self.seed);
            if !self.reachable(from, to) {
                continue;
            }
            let src = self.nodes[from].name;
            let now = self.now;
            let r = self.with(to, |ipam| ipam.handle_gossip(src, &b, now));
            if let Some(Err(e)) = r {
                panic!("decode error {e} (seed {})", self.seed);
            }
        }
    }

    /// Periodic gossip of every node's full state to its neighbours.
    pub fn gossip_round(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(ipam) = self.nodes[i].ipam.as_ref() else {
                continue;
            };
            let b = ipam.full_state();
            for j in 0..self.nodes.len() {
                if self.reachable(i, j) {
                    self.queue.push_back((i, j, b.clone()));
                }
            }
        }
        self.deliver_all();
    }

    /// Advances the clock, firing timers, with a gossip round every 5 s.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = Duration::from_secs(1).min(end - self.now);
            self.now += step;
            for i in 0..self.nodes.len() {
                let due = self.nodes[i]
                    .ipam
                    .as_ref()
                    .and_then(|x| x.poll_timeout())
                    .is_some_and(|t| t <= self.now);
                if due {
                    let now = self.now;
                    self.with(i, |ipam| ipam.handle_timeout(now));
                }
            }
            self.deliver_all();
            if (self.now - self.base)
                .as_secs()
                .is_multiple_of(self.gossip_every)
            {
                self.gossip_round();
            }
        }
    }

    pub fn new_ident(&mut self) -> Ident {
        let n = self.next_container;
        self.next_container += 1;
        Ident::new(format!("c{n}"))
    }

    /// Allocates for `ident` on node `i`; acknowledges a `Done` only if the
    /// node survived to persist it.
    pub fn allocate(&mut self, i: usize, ident: &Ident) -> Option<Allocation> {
        let now = self.now;
        let id = ident.clone();
        let ipam = self.nodes[i].ipam.as_mut()?;
        let r = ipam.allocate(&id, None, true, now);
        let crash = self.crash_pct > 0 && self.rng.chance(self.crash_pct);
        if crash {
            self.crashes += 1;
            self.note(format!("crash node {i} mid-allocation of {ident}"));
            self.nodes[i].ipam = None;
            self.nodes[i].waiting.clear();
            self.peers_changed();
            return None;
        }
        match r {
            Ok(Allocation::Done(c)) => {
                self.drain(i);
                if let Some(prev) = self.nodes[i].containers.get(ident) {
                    assert_eq!(*prev, c, "allocation not idempotent (seed {})", self.seed);
                }
                self.acks += 1;
                self.nodes[i].containers.insert(ident.clone(), c);
            }
            Ok(Allocation::Pending(req)) => {
                self.nodes[i].waiting.insert(req, ident.clone());
                self.drain(i);
            }
            Err(e) => panic!("allocate failed: {e} (seed {})", self.seed),
        }
        r.ok()
    }

    pub fn kill(&mut self, i: usize) {
        self.note(format!("kill node {i}"));
        self.nodes[i].ipam = None;
        self.nodes[i].waiting.clear();
        self.peers_changed();
    }

    pub fn restart(&mut self, i: usize) {
        self.note(format!("restart node {i}"));
        let seed = self.rng.next();
        let cfg = self.nodes[i].cfg.clone();
        let disk = self.nodes[i].disk.clone();
        let (mut ipam, err) = Ipam::restore_or_new(cfg, disk, seed);
        assert!(
            err.is_none(),
            "own state refused: {err:?} (seed {})",
            self.seed
        );
        ipam.set_nickname(&format!("host{i}"));
        let running: BTreeSet<Ident> = self.nodes[i].containers.keys().cloned().collect();
        ipam.handle_containers_running(&running, self.now);
        self.nodes[i].ipam = Some(ipam);
        self.drain(i);
        self.peers_changed();
    }

    /// Every acknowledged running container, by address; panics on a
    /// duplicate.
    pub fn check_unique(&self) {
        let mut seen: BTreeMap<u32, (usize, Ident)> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.removed {
                continue;
            }
            for (ident, c) in &n.containers {
                if let Some((j, other)) = seen.insert(c.addr, (i, ident.clone()))
                    && !self.allowed_dups.contains(&c.addr)
                {
                    panic!(
                        "address {} live on {other} (node {j}) and {ident} (node {i}); seed {}\n{}",
                        Ipv4Addr::from(c.addr),
                        self.seed,
                        self.log.join("\n")
                    );
                }
            }
            if let Some(ipam) = &n.ipam {
                if let Err(e) = ipam.check_invariants() {
                    panic!("node {i} invariant: {e}; seed {}", self.seed);
                }
                for (ident, c) in &n.containers {
                    assert!(
                        ipam.lookup(ident, None).contains(c),
                        "node {i} forgot acknowledged {ident} {c}; seed {}",
                        self.seed
                    );
                }
            }
        }
    }

    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        self.peers_changed();
    }

    /// True when every running node has the same ring.
    pub fn converged(&self) -> bool {
        let rings: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.ipam.as_ref())
            .map(|x| x.ring().cloned())
            .collect();
        rings.windows(2).all(|w| w[0] == w[1]) && rings.first().is_some_and(|r| r.is_some())
    }
}
