//! A deterministic N-peer simulator for the mesh (feature `sim`, always on in this crate's
//! tests): a virtual clock, a seeded RNG, links with latency, loss and partitions, and
//! in-order "TCP" streams between real [`Mesh`] instances. Dial actions become simulated
//! connects (or `handle_dial_failed`); Hellos are exchanged directly, as the router does
//! after its Noise handshake (initiator learns the responder's Hello one latency after the
//! SYN arrives, the responder the initiator's one latency later).
//!
//! ```text
//! let mut sim = Sim::new(3, seed);
//! sim.connect(0, 1); sim.connect(1, 2);
//! sim.run_for(secs(30));
//! assert!(sim.converged() && sim.full_mesh());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::ids::{ConnId, PeerName, PeerUid, ShortId};
use crate::mesh::{Action, Channels, Config, ConnInfo, DEFAULT_CONN_LIMIT, Event, Mesh};
use crate::wire::Hello;

/// Seconds as a [`Duration`].
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// How long a dial into a partition takes to fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Extra delay a lost segment costs an established stream (a retransmission).
const RETRANSMIT: Duration = Duration::from_millis(200);

/// A grow-only set of strings gossiped on channel `kv`, recording broadcasts and unicasts:
/// enough application to exercise every gossip path.
#[derive(Debug, Clone, Default)]
pub struct SimChannels {
    /// The set.
    pub items: BTreeSet<String>,
    /// Broadcasts received: (originator, payload).
    pub broadcasts: Vec<(PeerName, Vec<u8>)>,
    /// Unicasts received: (originator, payload).
    pub unicasts: Vec<(PeerName, Vec<u8>)>,
}

impl SimChannels {
    fn encode(items: &BTreeSet<String>) -> Vec<u8> {
        items
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    }
}

impl Channels for SimChannels {
    fn names(&self) -> Vec<String> {
        vec!["kv".into()]
    }
    fn full_state(&mut self, _channel: &str) -> Option<Vec<u8>> {
        (!self.items.is_empty()).then(|| Self::encode(&self.items))
    }
    fn on_gossip(
        &mut self,
        _: &str,
        _: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        let new: BTreeSet<String> = text
            .split('\n')
            .filter(|s| !s.is_empty() && !self.items.contains(*s))
            .map(str::to_owned)
            .collect();
        self.items.extend(new.iter().cloned());
        Ok((!new.is_empty()).then(|| Self::encode(&new)))
    }
    fn on_broadcast(&mut self, _: &str, src: PeerName, payload: &[u8]) -> Result<(), String> {
        self.broadcasts.push((src, payload.to_vec()));
        Ok(())
    }
    fn on_unicast(&mut self, _: &str, src: PeerName, payload: &[u8]) -> Result<(), String> {
        self.unicasts.push((src, payload.to_vec()));
        Ok(())
    }
}

/// One simulated router.
#[derive(Debug)]
pub struct SimPeer {
    /// The mesh under test.
    pub mesh: Mesh,
    /// Its application.
    pub channels: SimChannels,
    /// Every event it emitted.
    pub events: Vec<Event>,
    /// Its listen address.
    pub addr: SocketAddr,
    /// Its configuration (the uid changes on restart).
    pub config: Config,
    alive: bool,
    timer: Option<Instant>,
}

/// Both ends of a connection being handshaken.
#[derive(Debug, Clone)]
struct Pending {
    initiator: usize,
    ci: ConnId,
    info_i: ConnInfo,
    hello_i: Hello,
    responder: usize,
    cj: ConnId,
    info_j: ConnInfo,
    hello_j: Hello,
}

/// Handshake stages as the router runs them: the responder asks its mesh when message 3
/// arrives and answers with a verdict; the initiator asks its mesh after an accepting verdict.
#[derive(Debug, Clone)]
enum Ev {
    Syn {
        from: usize,
        to: usize,
        target: String,
    },
    DialFailed {
        at: usize,
        target: String,
        error: String,
    },
    Msg2 {
        at: usize,
        p: Box<Pending>,
    },
    Msg3 {
        at: usize,
        p: Box<Pending>,
    },
    Verdict {
        at: usize,
        p: Box<Pending>,
    },
    Refused {
        at: usize,
        p: Box<Pending>,
        refusal: crate::wire::Refusal,
    },
    Data {
        at: usize,
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Closed {
        at: usize,
        conn: ConnId,
        reason: String,
    },
}

impl Ev {
    fn target(&self) -> usize {
        match self {
            Ev::Syn { to, .. } => *to,
            Ev::DialFailed { at, .. }
            | Ev::Msg2 { at, .. }
            | Ev::Msg3 { at, .. }
            | Ev::Verdict { at, .. }
            | Ev::Refused { at, .. }
            | Ev::Data { at, .. }
            | Ev::Closed { at, .. } => *at,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sock {
    other: (usize, ConnId),
    open: bool,
    last_delivery: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    up: bool,
    latency: Duration,
    loss: f64,
}

/// The simulated network of peers.
#[derive(Debug)]
pub struct Sim {
    /// The peers, by index.
    pub peers: Vec<SimPeer>,
    now: Instant,
    start: Instant,
    rng: Xoshiro256PlusPlus,
    seed: u64,
    links: BTreeMap<(usize, usize), Link>,
    default_link: Link,
    queue: BTreeMap<(Instant, u64), (usize, Ev)>,
    blocked: BTreeMap<(usize, usize), Vec<(usize, Ev)>>,
    socks: BTreeMap<(usize, ConnId), Sock>,
    next_id: u64,
    seq: u64,
    /// Bytes sent per peer and message kind since the last [`Sim::reset_stats`].
    pub bytes: Vec<BTreeMap<&'static str, u64>>,
    /// Dial actions per peer so far.
    pub dials: Vec<u64>,
    /// Links without their own settings get a latency in this range (inclusive, in µs),
    /// fixed per link and drawn from the seed.
    latency_us: (u64, u64),
    /// Every live peer's next timer, so the earliest is found without a scan.
    timers: BTreeSet<(Instant, usize)>,
    /// Listen address → peer index (for dials).
    by_addr: BTreeMap<SocketAddr, usize>,
}

/// Most events the simulation handles at one instant per peer before it calls itself stuck:
/// a livelock never ends, while a burst (every peer's timer at one instant) is a few events
/// per peer and connection.
const SPINS_PER_PEER: u32 = 2_000;

/// Static key of simulated peer `i`.
pub fn peer_key(i: usize) -> crate::keys::PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    crate::keys::PublicKey(k)
}

/// Name of simulated peer `i`: `02:00:00:00:HH:LL` with HHLL = i + 1.
pub fn peer_name(i: usize) -> PeerName {
    let v = i as u64 + 1;
    PeerName::from_bytes([0x02, 0, 0, 0, (v >> 8) as u8, v as u8])
}

fn peer_addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1);
    SocketAddr::new(IpAddr::V4(ip), 6783)
}

/// Classifies an encoded message for the byte counters by peeking at a few bytes (decoding
/// every message twice would dominate large simulations). Layout: docs/protocol.md.
fn kind(bytes: &[u8]) -> &'static str {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let topo = |b: &[u8]| -> Option<&'static str> {
        let mut at = 2;
        let len = varint(b, &mut at)? as usize;
        let channel = b.get(at..at + len)?;
        at += len;
        if channel != b"topology" {
            return Some("gossip");
        }
        varint(b, &mut at)?; // src
        varint(b, &mut at)?; // payload length
        Some(match b.get(at + 1)? {
            0 => "topo-delta",
            1 => "topo-full",
            2 => "topo-request",
            3 => "topo-digest",
            _ => "topo-bad",
        })
    };
    match bytes.first() {
        Some(0) => "heartbeat",
        Some(4) => topo(bytes).unwrap_or("topo-bad"),
        Some(5) => "unicast",
        Some(6) => "broadcast",
        _ => "other",
    }
}

impl Sim {
    /// `n` peers with discovery on, 5 ms links, no loss.
    pub fn new(n: usize, seed: u64) -> Sim {
        Sim::with_config(n, seed, |_, _| {})
    }

    /// `n` peers, each config adjusted by `tweak(index, &mut config)`.
    pub fn with_config(n: usize, seed: u64, mut tweak: impl FnMut(usize, &mut Config)) -> Sim {
        let now = Instant::now();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let peers = (0..n)
            .map(|i| {
                let mut config = Config {
                    name: peer_name(i),
                    key: peer_key(i),
                    nickname: format!("p{i}"),
                    uid: PeerUid(rng.random_range(1..u64::MAX)),
                    short_id: ShortId::from_low_bits(rng.random::<u64>()),
                    port: 6783,
                    conn_limit: DEFAULT_CONN_LIMIT,
                    discovery: true,
                    seed: rng.random::<u64>(),
                };
                tweak(i, &mut config);
                SimPeer {
                    mesh: Mesh::new(config.clone(), now),
                    channels: SimChannels::default(),
                    events: Vec::new(),
                    addr: peer_addr(i),
                    config,
                    alive: true,
                    timer: None,
                }
            })
            .collect();
        let mut sim = Sim {
            peers,
            now,
            start: now,
            rng,
            seed,
            links: BTreeMap::new(),
            default_link: Link {
                up: true,
                latency: Duration::from_millis(5),
                loss: 0.0,
            },
            queue: BTreeMap::new(),
            blocked: BTreeMap::new(),
            socks: BTreeMap::new(),
            next_id: 1,
            seq: 0,
            bytes: vec![BTreeMap::new(); n],
            dials: vec![0; n],
            latency_us: (5_000, 5_000),
            timers: BTreeSet::new(),
            by_addr: BTreeMap::new(),
        };
        sim.by_addr = sim
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.addr, i))
            .collect();
        for i in 0..n {
            sim.pump(i);
        }
        sim
    }

    /// The seed this simulation was built from (print it when a scenario fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn link(&self, a: usize, b: usize) -> Link {
        self.links
            .get(&(a.min(b), a.max(b)))
            .copied()
            .unwrap_or_else(|| self.default_link_between(a, b))
    }

    fn link_mut(&mut self, a: usize, b: usize) -> &mut Link {
        let d = self.default_link_between(a, b);
        self.links.entry((a.min(b), a.max(b))).or_insert(d)
    }

    /// The default link between `a` and `b`: its latency drawn from the range set with
    /// [`Sim::set_latency_range`], the same for the same seed and pair.
    fn default_link_between(&self, a: usize, b: usize) -> Link {
        let (lo, hi) = self.latency_us;
        if lo >= hi {
            return Link {
                latency: Duration::from_micros(lo),
                ..self.default_link
            };
        }
        // splitmix64 of (seed, pair): stateless, so no table of N² links is needed.
        let mut z = self
            .seed
            .wrapping_add(((a.min(b) as u64) << 32) | a.max(b) as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Link {
            latency: Duration::from_micros(lo + z % (hi - lo + 1)),
            ..self.default_link
        }
    }

    /// Gives every link without its own settings a latency between `lo` and `hi`, fixed per
    /// link (e.g. 1–50 ms for a spread-out mesh). The default is 5 ms everywhere.
    pub fn set_latency_range(&mut self, lo: Duration, hi: Duration) {
        self.latency_us = (lo.as_micros() as u64, hi.as_micros() as u64);
    }

    /// Sets peer `i`'s timer, keeping the index of timers in step.
    fn set_timer(&mut self, i: usize, t: Option<Instant>) {
        let Some(p) = self.peers.get_mut(i) else {
            return;
        };
        if let Some(old) = p.timer {
            self.timers.remove(&(old, i));
        }
        p.timer = t;
        if let Some(t) = t {
            self.timers.insert((t, i));
        }
    }

    /// Sets latency and loss (0..1) of the link between `a` and `b`.
    pub fn set_link(&mut self, a: usize, b: usize, latency: Duration, loss: f64) {
        let l = self.link_mut(a, b);
        l.latency = latency;
        l.loss = loss;
    }

    /// Cuts the link: segments wait (as TCP retransmits would), dials time out.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.link_mut(a, b).up = false;
    }

    /// Cuts every link between the two groups.
    pub fn partition_groups(&mut self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.partition(a, b);
            }
        }
    }

    /// Restores the link and releases what waited on it, in order.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.link_mut(a, b).up = true;
        let key = (a.min(b), a.max(b));
        let latency = self.link(a, b).latency;
        for (_, ev) in self.blocked.remove(&key).unwrap_or_default() {
            let at = ev.target();
            self.schedule(self.now + latency, at, ev);
        }
    }

    /// Heals every link.
    pub fn heal_all(&mut self) {
        let keys: Vec<_> = self.links.keys().copied().collect();
        for (a, b) in keys {
            self.heal(a, b);
        }
    }

    fn schedule(&mut self, at_time: Instant, peer: usize, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at_time, self.seq), (peer, ev));
    }

    /// Sends `ev` from `from` to `to` over their link, keeping per-stream order.
    fn send_over(&mut self, from: usize, stream: Option<ConnId>, to: usize, ev: Ev) {
        let link = self.link(from, to);
        if !link.up {
            self.blocked
                .entry((from.min(to), from.max(to)))
                .or_default()
                .push((to, ev));
            return;
        }
        let mut at = self.now + link.latency;
        while link.loss > 0.0 && self.rng.random::<f64>() < link.loss {
            at += RETRANSMIT;
        }
        if let Some(conn) = stream
            && let Some(s) = self.socks.get_mut(&(from, conn))
        {
            at = at.max(s.last_delivery);
            s.last_delivery = at;
        }
        self.schedule(at, to, ev);
    }

    /// Call after driving `peers[i].mesh` directly (e.g. `gossip`): moves its outputs
    /// into the network.
    pub fn flush(&mut self, i: usize) {
        self.pump(i);
    }

    /// Drains a peer's outputs into the network and refreshes its timer.
    fn pump(&mut self, i: usize) {
        loop {
            let Some(p) = self.peers.get_mut(i) else {
                return;
            };
            if let Some(e) = p.mesh.poll_event() {
                p.events.push(e);
                continue;
            }
            if let Some(t) = p.mesh.poll_transmit() {
                let k = kind(&t.bytes);
                *self.bytes[i].entry(k).or_default() += t.bytes.len() as u64;
                if let Some(s) = self.socks.get(&(i, t.conn)).copied()
                    && s.open
                {
                    let (j, cj) = s.other;
                    self.send_over(
                        i,
                        Some(t.conn),
                        j,
                        Ev::Data {
                            at: j,
                            conn: cj,
                            bytes: t.bytes,
                        },
                    );
                }
                continue;
            }
            if let Some(a) = p.mesh.poll_action() {
                self.action(i, a);
                continue;
            }
            break;
        }
        if let Some(p) = self.peers.get(i) {
            let t = if p.alive { p.mesh.poll_timeout() } else { None };
            self.set_timer(i, t);
        }
    }

    fn action(&mut self, i: usize, a: Action) {
        match a {
            Action::Dial { target, addr } => {
                if let Some(d) = self.dials.get_mut(i) {
                    *d += 1;
                }
                let to = addr
                    .parse::<SocketAddr>()
                    .ok()
                    .and_then(|a| self.by_addr.get(&a).copied());
                let fail = |error: &str| Ev::DialFailed {
                    at: i,
                    target: target.clone(),
                    error: error.into(),
                };
                match to {
                    None => {
                        let ev = fail("dial tcp: no such host");
                        self.schedule(self.now + Duration::from_millis(1), i, ev);
                    }
                    Some(j) => {
                        let link = self.link(i, j);
                        if !link.up || (link.loss > 0.0 && self.rng.random::<f64>() < link.loss) {
                            let ev = fail("dial tcp: i/o timeout");
                            self.schedule(self.now + CONNECT_TIMEOUT, i, ev);
                        } else {
                            self.schedule(
                                self.now + link.latency,
                                j,
                                Ev::Syn {
                                    from: i,
                                    to: j,
                                    target,
                                },
                            );
                        }
                    }
                }
            }
            Action::Close { conn, reason } => {
                if let Some(s) = self.socks.get_mut(&(i, conn))
                    && s.open
                {
                    s.open = false;
                    let (j, cj) = s.other;
                    self.send_over(
                        i,
                        Some(conn),
                        j,
                        Ev::Closed {
                            at: j,
                            conn: cj,
                            reason: "connection reset by peer".into(),
                        },
                    );
                }
                let now = self.now;
                if let Some(p) = self.peers.get_mut(i) {
                    p.mesh.handle_closed(conn, &reason.to_string(), now);
                }
            }
        }
    }

    fn new_conn_id(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }

    fn deliver(&mut self, peer: usize, ev: Ev) {
        let now = self.now;
        if !self.peers.get(peer).is_some_and(|p| p.alive) {
            // A dead host: dials are refused, everything else vanishes.
            if let Ev::Syn { from, target, .. } = ev {
                let latency = self.link(from, peer).latency;
                let ev = Ev::DialFailed {
                    at: from,
                    target,
                    error: "connect: connection refused".into(),
                };
                self.schedule(now + latency, from, ev);
            }
            return;
        }
        match ev {
            Ev::Syn { from, to, target } => {
                if !self.peers[to].mesh.accept_allowed(now) {
                    let ev = Ev::DialFailed {
                        at: from,
                        target,
                        error: "handshake: connection closed by accept throttle".into(),
                    };
                    self.send_over(to, None, from, ev);
                    return;
                }
                let (ci, cj) = (self.new_conn_id(), self.new_conn_id());
                let (hi, hj) = (self.rng.random::<u64>(), self.rng.random::<u64>());
                let ephemeral = SocketAddr::new(
                    self.peers[from].addr.ip(),
                    40000 + (self.next_id % 20000) as u16,
                );
                self.socks.insert(
                    (from, ci),
                    Sock {
                        other: (to, cj),
                        open: true,
                        last_delivery: now,
                    },
                );
                self.socks.insert(
                    (to, cj),
                    Sock {
                        other: (from, ci),
                        open: true,
                        last_delivery: now,
                    },
                );
                let info_i = ConnInfo {
                    outbound: true,
                    remote_addr: self.peers[to].addr,
                    target: Some(target.clone()),
                    local_conn_half: hi,
                    remote_key: self.peers[to].config.key,
                };
                let info_j = ConnInfo {
                    outbound: false,
                    remote_addr: ephemeral,
                    target: None,
                    local_conn_half: hj,
                    remote_key: self.peers[from].config.key,
                };
                let hello_i = self.peers[from].mesh.hello(hi, false);
                let hello_j = self.peers[to].mesh.hello(hj, false);
                let p = Box::new(Pending {
                    initiator: from,
                    ci,
                    info_i,
                    hello_i,
                    responder: to,
                    cj,
                    info_j,
                    hello_j,
                });
                self.send_over(to, Some(cj), from, Ev::Msg2 { at: from, p });
            }
            Ev::DialFailed { at, target, error } => {
                self.peers[at].mesh.handle_dial_failed(&target, error, now);
            }
            Ev::Msg2 { at, p } => {
                if self.socks.get(&(at, p.ci)).is_some_and(|s| s.open) {
                    let (to, ci) = (p.responder, p.ci);
                    self.send_over(at, Some(ci), to, Ev::Msg3 { at: to, p });
                }
            }
            Ev::Msg3 { at, p } => {
                if !self.socks.get(&(at, p.cj)).is_some_and(|s| s.open) {
                    return;
                }
                let (from, cj) = (p.initiator, p.cj);
                let verdict = self.peers[at].mesh.handle_connection(
                    cj,
                    p.info_j.clone(),
                    p.hello_i.clone(),
                    now,
                );
                match verdict {
                    Ok(()) => self.send_over(at, Some(cj), from, Ev::Verdict { at: from, p }),
                    Err(e) => {
                        // Refused after the handshake: the initiator gets the typed refusal.
                        self.socks.remove(&(at, cj));
                        let refusal = e.refusal();
                        self.send_over(
                            at,
                            None,
                            from,
                            Ev::Refused {
                                at: from,
                                p,
                                refusal,
                            },
                        );
                    }
                }
            }
            Ev::Verdict { at, p } => {
                if !self.socks.get(&(at, p.ci)).is_some_and(|s| s.open) {
                    return;
                }
                let verdict = self.peers[at].mesh.handle_connection(
                    p.ci,
                    p.info_i.clone(),
                    p.hello_j.clone(),
                    now,
                );
                if let Err(e) = verdict
                    && let Some(s) = self.socks.get_mut(&(at, p.ci))
                {
                    s.open = false;
                    let ev = Ev::Closed {
                        at: p.responder,
                        conn: p.cj,
                        reason: e.to_string(),
                    };
                    self.send_over(at, Some(p.ci), p.responder, ev);
                }
            }
            Ev::Refused { at, p, refusal } => {
                self.socks.remove(&(at, p.ci));
                let _ = self.peers[at]
                    .mesh
                    .handle_refused(&p.info_i, &p.hello_j, &refusal, now);
            }
            Ev::Data { at, conn, bytes } => {
                if self.socks.get(&(at, conn)).is_some_and(|s| s.open) {
                    let p = &mut self.peers[at];
                    p.mesh.handle_message(conn, &bytes, now, &mut p.channels);
                }
            }
            Ev::Closed { at, conn, reason } => {
                if let Some(s) = self.socks.get_mut(&(at, conn))
                    && s.open
                {
                    s.open = false;
                    self.peers[at].mesh.handle_closed(conn, &reason, now);
                }
            }
        }
        self.pump(peer);
    }

    /// Runs the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let mut spins = 0u32;
        loop {
            let next_ev = self.queue.keys().next().map(|k| k.0);
            let next_timer = self.timers.first().map(|(t, _)| *t);
            let next = match (next_ev, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            if next <= self.now {
                spins += 1;
                let limit = SPINS_PER_PEER.saturating_mul(self.peers.len().max(50) as u32);
                assert!(
                    spins < limit,
                    "simulation made no progress (seed {})",
                    self.seed
                );
            } else {
                spins = 0;
                self.now = next;
            }
            if next_ev.is_some_and(|t| t <= next) {
                if let Some((_, (peer, ev))) = self.queue.pop_first() {
                    self.deliver(peer, ev);
                }
                continue;
            }
            let now = self.now;
            let due: Vec<usize> = self
                .timers
                .range(..=(now, usize::MAX))
                .map(|(_, i)| *i)
                .collect();
            for i in due {
                let p = &mut self.peers[i];
                p.mesh.handle_timeout(now, &mut p.channels);
                self.pump(i);
            }
        }
        self.now = until;
    }

    /// `a` runs `connect` for `b`'s address (IP only, so the default port is used).
    pub fn connect(&mut self, a: usize, b: usize) {
        let target = self.peers[b].addr.ip().to_string();
        let now = self.now;
        let _ = self.peers[a].mesh.connect(&[target], false, now);
        self.pump(a);
    }

    /// Kills peer `i` (its sockets reset, as after `kill -9`).
    pub fn stop(&mut self, i: usize) {
        let mine: Vec<(ConnId, Sock)> = self
            .socks
            .iter()
            .filter(|((p, _), s)| *p == i && s.open)
            .map(|((_, c), s)| (*c, *s))
            .collect();
        for (conn, s) in mine {
            let (j, cj) = s.other;
            self.send_over(
                i,
                Some(conn),
                j,
                Ev::Closed {
                    at: j,
                    conn: cj,
                    reason: "connection reset by peer".into(),
                },
            );
        }
        self.socks.retain(|(p, _), _| *p != i);
        self.peers[i].alive = false;
        self.set_timer(i, None);
    }

    /// Kills and restarts peer `i` with a new uid, same name and the same direct targets
    /// (the router persists them).
    pub fn restart(&mut self, i: usize) {
        let targets = self.peers[i].mesh.targets();
        self.stop(i);
        let now = self.now;
        let p = &mut self.peers[i];
        p.config.uid = PeerUid(self.rng.random_range(1..u64::MAX));
        p.config.seed = self.rng.random::<u64>();
        p.mesh = Mesh::new(p.config.clone(), now);
        p.channels = SimChannels::default();
        p.alive = true;
        let _ = p.mesh.connect(&targets, false, now);
        self.pump(i);
    }

    /// Whether peer `i` is running.
    pub fn alive(&self, i: usize) -> bool {
        self.peers.get(i).is_some_and(|p| p.alive)
    }

    /// True when `a` and `b` each have exactly one live connection to the other and both
    /// are the two ends of the same socket.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        let (Some(ca), Some(cb)) = (
            self.peers[a].mesh.conn_to(peer_name(b)),
            self.peers[b].mesh.conn_to(peer_name(a)),
        ) else {
            return false;
        };
        self.socks
            .get(&(a, ca))
            .is_some_and(|s| s.open && s.other == (b, cb))
    }

    /// Every pair of live peers is connected.
    pub fn full_mesh(&self) -> bool {
        let live: Vec<usize> = (0..self.peers.len()).filter(|i| self.alive(*i)).collect();
        live.iter()
            .all(|a| live.iter().all(|b| a >= b || self.connected(*a, *b)))
    }

    /// Number of live connections of peer `i`.
    pub fn conn_count(&self, i: usize) -> usize {
        self.peers[i]
            .mesh
            .conns
            .values()
            .filter(|c| !c.closing)
            .count()
    }

    /// Every live peer knows exactly the live peers reachable from it, each at the version
    /// and uid that peer itself holds.
    pub fn converged(&self) -> bool {
        self.divergence().is_none()
    }

    /// Why the topology views differ, if they do.
    pub fn divergence(&self) -> Option<String> {
        let truth: BTreeMap<PeerName, (PeerUid, u64)> = self
            .peers
            .iter()
            .filter(|p| p.alive)
            .map(|p| (p.config.name, (p.config.uid, p.mesh.topo.our_version())))
            .collect();
        for (i, p) in self.peers.iter().enumerate().filter(|(_, p)| p.alive) {
            let view = p.mesh.topo.peers();
            for (n, rec) in view {
                let v = (rec.uid, rec.version);
                if truth.get(n) != Some(&v) {
                    return Some(format!(
                        "peer {i} holds {n} at {v:?}, truth {:?}",
                        truth.get(n)
                    ));
                }
            }
            let reachable = p.mesh.topo.reachable();
            for n in truth.keys() {
                if reachable.contains(n) && !view.contains_key(n) {
                    return Some(format!("peer {i} misses {n}"));
                }
            }
        }
        None
    }

    /// Forgets the byte counters.
    pub fn reset_stats(&mut self) {
        for b in &mut self.bytes {
            b.clear();
        }
    }

    /// Bytes each peer sent (every kind) since the last reset.
    pub fn bytes_sent(&self) -> Vec<u64> {
        self.bytes.iter().map(|m| m.values().sum()).collect()
    }

    /// Bytes each peer sent of the given kinds since the last reset.
    pub fn bytes_of(&self, kinds: &[&str]) -> Vec<u64> {
        self.bytes
            .iter()
            .map(|m| kinds.iter().map(|k| m.get(k).copied().unwrap_or(0)).sum())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{GossipMsg, Message, PeerDelta, TopologyMsg};

    #[test]
    fn kind_peeks_like_a_full_decode() {
        let gossip = |channel: &str, payload: Vec<u8>| {
            Message::Gossip(GossipMsg {
                channel: channel.into(),
                src: peer_name(300),
                payload,
            })
            .encode()
        };
        let delta = TopologyMsg::Delta(vec![PeerDelta {
            name: peer_name(1),
            uid: PeerUid(u64::MAX),
            from_version: 1,
            to_version: 2,
            nickname: "n".into(),
            short_id: ShortId::default(),
            listen_port: 6783,
            upserts: vec![],
            removed: vec![],
        }]);
        assert_eq!(kind(&gossip("topology", delta.encode())), "topo-delta");
        assert_eq!(
            kind(&gossip("topology", TopologyMsg::Full(vec![]).encode())),
            "topo-full"
        );
        assert_eq!(
            kind(&gossip("topology", TopologyMsg::Request(vec![]).encode())),
            "topo-request"
        );
        assert_eq!(
            kind(&gossip("topology", TopologyMsg::Digest(vec![]).encode())),
            "topo-digest"
        );
        assert_eq!(kind(&gossip("ipam", vec![1; 300])), "gossip");
        assert_eq!(kind(&Message::Heartbeat.encode()), "heartbeat");
    }
}
