//! A deterministic simulator of N IPAM peers running the production
//! [`Node`] (the type the router pumps): virtual clock, seeded RNG, a mesh
//! that delivers broadcasts and unicasts inside partitions, and [`Faults`]:
//! kills before a write and between a write and what depends on it (only
//! what was persisted survives), failing writes, lost, duplicated and
//! reordered messages; restarts, and a ground truth of which container
//! holds which acknowledged address (one whose answer came out).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meshnet_ipam::node::{Answer, Node, Output, Request, Ticket};
use meshnet_ipam::{Cidr, Config, Event, Ident, Init, Ipam, PeerName, Persisted, Transmit};

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

/// Faults the simulated hosts and network inject, each a chance in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// A node is killed right after handling an input, before any of its
    /// outputs (the write included) happened.
    pub crash: u64,
    /// A write of the node's state fails (the disk is full, say).
    pub persist_fail: u64,
    /// A node is killed right after a write (landed or failed), before
    /// anything that depends on it was sent or answered.
    pub crash_after_persist: u64,
    /// A message is lost on the way.
    pub loss: u64,
    /// A message arrives twice.
    pub duplicate: u64,
    /// A message overtakes the ones queued before it.
    pub reorder: u64,
}

/// What a schedule exercised.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Allocations and claims acknowledged to their caller.
    pub acks: u64,
    /// Kills before a write (random, not `kill`).
    pub crashes: u64,
    /// Kills right after a write (landed or failed), before what depends on it.
    pub crashes_after_persist: u64,
    /// Writes that failed.
    pub failed_persists: u64,
    /// Answers that said a write failed.
    pub persist_failed_replies: u64,
    /// Messages delivered (duplicates included).
    pub messages: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// How a request was answered, as far as the simulator saw at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// Acknowledged with this address.
    Done(Cidr),
    /// Not answered yet: the answer will carry this ticket.
    Pending(Ticket),
    /// Answered otherwise (refused, or the write failed).
    Other(Answer),
}

pub struct Host {
    pub name: PeerName,
    pub cfg: Config,
    /// The node as the router runs it; `None` while the host is down.
    pub node: Option<Node>,
    pub disk: Option<Persisted>,
    /// Acknowledged, running containers on this host.
    pub containers: BTreeMap<Ident, Cidr>,
    /// Unanswered allocations and claims: the container each is for.
    pub waiting: BTreeMap<Ticket, Ident>,
    /// Every answer this host gave.
    pub answers: BTreeMap<Ticket, Answer>,
    pub removed: bool,
    pub group: u32,
    pub events: Vec<Event>,
}

impl Host {
    /// The state machine, while the host is up.
    pub fn ipam(&self) -> Option<&Ipam> {
        self.node.as_ref().map(Node::ipam)
    }

    /// The state machine for a raw input (no drain: use [`Sim::with`] for
    /// inputs whose outputs matter).
    pub fn ipam_mut(&mut self) -> Option<&mut Ipam> {
        self.node.as_mut().map(Node::ipam_mut)
    }
}

pub struct Sim {
    pub base: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub nodes: Vec<Host>,
    pub queue: VecDeque<(usize, usize, Vec<u8>)>,
    pub faults: Faults,
    pub next_container: u64,
    pub next_ticket: u64,
    pub seed: u64,
    pub log: Vec<String>,
    pub verbose: bool,
    pub stats: Stats,
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
            faults: Faults::default(),
            next_container: 1,
            next_ticket: 1,
            seed,
            log: Vec::new(),
            verbose: false,
            stats: Stats::default(),
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
        self.nodes.push(Host {
            name: n,
            cfg,
            node: Some(Node::new(ipam)),
            disk: None,
            containers: BTreeMap::new(),
            waiting: BTreeMap::new(),
            answers: BTreeMap::new(),
            removed: false,
            group: 0,
            events: Vec::new(),
        });
        // The router persists whatever a fresh start produced.
        self.drain(i);
        i
    }

    pub fn up(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
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
            self.input(i, |n| n.handle_peers_changed(known, now));
        }
    }

    /// Feeds node `i` one input, then pumps it as the router does (through
    /// [`Node::poll_output`], with the disk and network faults). May kill
    /// the node before anything leaves.
    pub fn input<R>(&mut self, i: usize, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        let node = self.nodes[i].node.as_mut()?;
        let r = f(node);
        if self.faults.crash > 0 && self.rng.chance(self.faults.crash) {
            self.stats.crashes += 1;
            self.note(format!("crash node {i} before persisting"));
            self.down(i);
            return None;
        }
        self.drain(i);
        Some(r)
    }

    /// [`Sim::input`] of a raw call on the state machine (one the node has
    /// no request for); its outputs still leave through the node.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Ipam) -> R) -> Option<R> {
        self.input(i, |n| f(n.ipam_mut()))
    }

    /// Sends `req` to node `i` with a fresh ticket; `None` if the node is
    /// down or crashed on it. Its answer lands in `answers` (and, for an
    /// address, in `containers`: acknowledged).
    pub fn request(&mut self, i: usize, req: Request, container: Option<&Ident>) -> Option<Ticket> {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        if !self.up(i) {
            return None;
        }
        if let Some(id) = container {
            self.nodes[i].waiting.insert(ticket, id.clone());
        }
        let now = self.now;
        self.input(i, |n| n.handle_request(ticket, req, now))?;
        Some(ticket)
    }

    fn down(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].waiting.clear();
        self.peers_changed();
    }

    /// Queues `b` from `from` to `to`, maybe losing or duplicating it.
    fn send(&mut self, from: usize, to: usize, b: Vec<u8>) {
        if self.faults.loss > 0 && self.rng.chance(self.faults.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.faults.duplicate > 0 && self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            self.queue.push_back((from, to, b.clone()));
        }
        self.queue.push_back((from, to, b));
    }

    /// Pumps node `i`'s outputs as the router does: the write (which may
    /// fail, or be the last thing before a crash), then sends, events, answers.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return;
            };
            let Some(out) = node.poll_output() else {
                return;
            };
            match out {
                Output::Persist(state) => {
                    let fails =
                        self.faults.persist_fail > 0 && self.rng.chance(self.faults.persist_fail);
                    if fails {
                        self.stats.failed_persists += 1;
                        self.note(format!("node {i}: write failed"));
                    } else {
                        self.nodes[i].disk = Some(state);
                    }
                    if self.faults.crash_after_persist > 0
                        && self.rng.chance(self.faults.crash_after_persist)
                    {
                        self.stats.crashes_after_persist += 1;
                        self.note(format!(
                            "crash node {i} right after a write, before sending"
                        ));
                        self.down(i);
                        return;
                    }
                    let now = self.now;
                    if let Some(n) = self.nodes[i].node.as_mut() {
                        if fails {
                            n.persist_failed("injected write failure", now);
                        } else {
                            n.persist_done();
                        }
                    }
                }
                Output::Transmit(t) => {
                    if self.verbose {
                        let (to, b) = match &t {
                            Transmit::Broadcast(b) => ("all".to_string(), b),
                            Transmit::Unicast(p, b) => (p.to_string(), b),
                        };
                        let m = meshnet_ipam::wire::Message::decode(b);
                        eprintln!("    node {i} -> {to}: {m:?}");
                    }
                    match t {
                        Transmit::Broadcast(b) => {
                            for j in 0..self.nodes.len() {
                                if self.reachable(i, j) {
                                    self.send(i, j, b.clone());
                                }
                            }
                        }
                        Transmit::Unicast(to, b) => {
                            if let Some(j) = self.nodes.iter().position(|n| n.name == to)
                                && self.reachable(i, j)
                            {
                                self.send(i, j, b);
                            }
                        }
                    }
                }
                Output::Event(e) => {
                    if self.verbose {
                        eprintln!("    node {i} event {e:?}");
                    }
                    self.nodes[i].events.push(e);
                }
                Output::Reply(ticket, answer) => {
                    if self.verbose {
                        eprintln!("    node {i} answers {ticket:?}: {answer:?}");
                    }
                    self.on_answer(i, ticket, answer);
                }
            }
        }
    }

    fn on_answer(&mut self, i: usize, ticket: Ticket, answer: Answer) {
        if matches!(answer, Answer::PersistFailed(_)) {
            self.stats.persist_failed_replies += 1;
        }
        if let Some(ident) = self.nodes[i].waiting.remove(&ticket)
            && let Answer::Allocated(c) | Answer::Claimed(c) = answer
        {
            if let Some(prev) = self.nodes[i].containers.get(&ident) {
                assert_eq!(
                    *prev, c,
                    "{ident} acknowledged twice with different addresses (seed {})",
                    self.seed
                );
            }
            self.stats.acks += 1;
            self.nodes[i].containers.insert(ident, c);
        }
        self.nodes[i].answers.insert(ticket, answer);
    }

    /// Delivers queued messages until quiet (bounded), some out of order.
    pub fn deliver_all(&mut self) {
        let mut budget = 20_000;
        while !self.queue.is_empty() {
            let at = if self.faults.reorder > 0 && self.rng.chance(self.faults.reorder) {
                self.rng.below(self.queue.len() as u64) as usize
            } else {
                0
            };
            if at > 0 {
                self.stats.reordered += 1;
            }
            let Some((from, to, b)) = self.queue.remove(at) else {
                break;
            };
            budget -= 1;
            self.stats.messages += 1;
            assert!(budget > 0, "message storm (seed {})", self.seed);
            if !self.reachable(from, to) {
                continue;
            }
            let src = self.nodes[from].name;
            let now = self.now;
            let r = self.input(to, |n| n.handle_gossip(src, &b, now));
            if let Some(Err(e)) = r {
                panic!("decode error {e} (seed {})", self.seed);
            }
        }
    }

    /// Periodic gossip of every node's full state to its neighbours.
    pub fn gossip_round(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(node) = self.nodes[i].node.as_ref() else {
                continue;
            };
            let b = node.full_state();
            for j in 0..self.nodes.len() {
                if self.reachable(i, j) {
                    self.send(i, j, b.clone());
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
                    .node
                    .as_ref()
                    .and_then(Node::poll_timeout)
                    .is_some_and(|t| t <= self.now);
                if due {
                    let now = self.now;
                    self.input(i, |n| n.handle_timeout(now));
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

    /// What the simulator saw of `ticket` once the request was handled.
    fn asked(&self, i: usize, ticket: Option<Ticket>) -> Option<Asked> {
        let ticket = ticket?;
        if !self.up(i) {
            return None;
        }
        Some(match self.nodes[i].answers.get(&ticket) {
            Some(Answer::Allocated(c) | Answer::Claimed(c)) => Asked::Done(*c),
            Some(a) => Asked::Other(a.clone()),
            None => Asked::Pending(ticket),
        })
    }

    /// Allocates for container `ident` on node `i` through the node's
    /// request path; acknowledged (in `containers`) only once answered.
    pub fn allocate(&mut self, i: usize, ident: &Ident) -> Option<Asked> {
        let req = Request::Allocate {
            ident: ident.clone(),
            subnet: None,
            check_alive: true,
        };
        let t = self.request(i, req, Some(ident));
        self.asked(i, t)
    }

    /// Claims `addr` for container `ident` on node `i`.
    pub fn claim(&mut self, i: usize, ident: &Ident, addr: Cidr) -> Option<Asked> {
        let req = Request::Claim {
            ident: ident.clone(),
            addr,
            no_error_on_unknown: false,
            check_alive: true,
        };
        let t = self.request(i, req, Some(ident));
        self.asked(i, t)
    }

    pub fn kill(&mut self, i: usize) {
        self.note(format!("kill node {i}"));
        self.down(i);
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
        self.nodes[i].node = Some(Node::new(ipam));
        // What the Docker watcher tells a restarted router.
        let running: BTreeSet<Ident> = self.nodes[i].containers.keys().cloned().collect();
        self.request(i, Request::ContainersRunning(running), None);
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
            if let Some(ipam) = n.ipam() {
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
            .filter_map(Host::ipam)
            .map(|x| x.ring().cloned())
            .collect();
        rings.windows(2).all(|w| w[0] == w[1]) && rings.first().is_some_and(|r| r.is_some())
    }
}
