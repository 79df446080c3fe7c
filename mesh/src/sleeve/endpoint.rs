//! The sleeve endpoint: every decision of the sleeve datapath in one sans-IO object, as
//! boringtun's tunnel (`encapsulate`/`decapsulate` say what to do) and firezone's node (one
//! `handle_timeout(now)` drives the pieces inside).
//!
//! An [`Endpoint`] owns the keys (receive keys by generation, two kept per peer while one is
//! rotated; a send key per neighbour), the encryption check of a peer's hello, the path MTU
//! each neighbour starts from (the smaller of the two overlay MTUs), [`Health`] (heartbeats and
//! PMTU probing), the [`MacTable`], the [`Forwarding`] snapshot, the ttl a frame starts with and
//! loses per relay, the rule that control packets only travel between direct neighbours, and
//! what happens to a frame too big for a neighbour's path (ICMP frag-needed, fragments, or the
//! cut of a TSO super-frame). It reads no clock, opens no socket and draws no random number:
//! `now` and random bytes are parameters, and every effect is an [`Output`] handed to the
//! caller's closure.
//!
//! Call protocol (the I/O side, `meshnet_router::sleeve`, is a pump over this):
//! - Control plane: [`Endpoint::new_recv_key`] for every connection (its hello goes to the peer
//!   over TCP; a later call rotates the key), [`Endpoint::handle_hello`] with the hello the
//!   peer sends back, [`Endpoint::set_forwarding`] when routes change,
//!   [`Endpoint::forget_peer`] when the connection goes, [`Endpoint::keys_due`] to learn which
//!   receive keys must be rotated now.
//! - Receive: per batch of datagrams, [`Endpoint::rx`] (a view holding the receive keys), then
//!   [`Rx::handle_udp`] per datagram; it opens it in place and emits [`Output::Tap`] for a
//!   frame to deliver, [`Output::Udp`] for a relay or a control answer, [`Output::Discard`]
//!   for what it dropped.
//! - Send: per batch of frames from the TAP, [`Endpoint::tx`], then per frame [`Tx::route`]
//!   (where it goes, with its inner header), [`Tx::path_mtu`] (the size a TSO super-frame is
//!   cut to) and [`Tx::encapsulate`] per frame or segment: [`Output::Data`] per neighbour for
//!   the caller to seal into its send batch with [`Neighbour::seal_data`], or [`Output::Tap`]
//!   for an ICMP answer.
//! - Timers: [`Endpoint::handle_timeout`] when the time it returned has come (heartbeats,
//!   probes, MAC expiry); a probe the kernel refused as too big goes back through
//!   [`Endpoint::handle_probe_error`].
//!
//! Two threads may drive one endpoint at once (receive and send): methods take `&self`, the
//! snapshots are swapped atomically and the tables sit behind short-held locks.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::crypto::{Opener, Sealer};
use super::datapath::{Neighbour, Output, Payload, Rx, Tx, send_one};
use super::forward::{Forwarding, MacTable};
use super::health::{Health, LinkStatus};
use super::rekey::Rekey;
use super::wire::{Control, Destination, Inner, KeyId, SleeveHello};
use crate::ids::PeerName;

/// How often learned MACs are swept for age (lookups ignore aged entries in between, so this
/// only bounds the memory stale entries hold).
pub const MAC_SWEEP: Duration = Duration::from_secs(60);
/// Receive keys kept per peer: the newest, and the one before it for packets still in flight
/// while the peer switches over.
pub const KEYS_PER_PEER: usize = 2;

/// What the endpoint needs to know about this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// This host's peer name.
    pub local: PeerName,
    /// The overlay MTU (the TAP's and the bridge's).
    pub mtu: u32,
    /// Seal frames (a password is set); otherwise the inner part travels in clear.
    pub encrypt: bool,
    /// The UDP port our hellos announce.
    pub udp_port: u16,
    /// How long a receive key lives before [`Endpoint::keys_due`] names it (capped at
    /// [`super::REKEY_AFTER_TIME`]).
    pub rekey_after: Duration,
}

/// A peer's hello asks for a different encryption setting than ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "peer {peer} {} sleeve encryption and we {}: set the same password on both hosts",
    if *.theirs { "requires" } else { "does not use" },
    if *.ours { "require it" } else { "do not" }
)]
pub struct EncryptionMismatch {
    /// Which peer.
    pub peer: PeerName,
    /// Its setting.
    pub theirs: bool,
    /// Ours.
    pub ours: bool,
}

/// What an accepted hello did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloOutcome {
    /// A new send path: heartbeats and PMTU probing start.
    Up,
    /// A new key for the path we already had at that address: health and path MTU carry over.
    Rekeyed,
}

/// A fresh receive key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// The hello to send to the peer.
    pub hello: SleeveHello,
    /// True when it replaces an older key of the same peer (a rotation).
    pub replaced: bool,
}

pub(super) type Neighbours = BTreeMap<PeerName, Arc<Neighbour>>;

/// One of our receive keys.
#[derive(Debug)]
pub(super) struct RecvKey {
    pub(super) peer: PeerName,
    pub(super) opener: Opener,
    /// Newer keys have larger generations.
    generation: u64,
    pub(super) rx_packets: u64,
    pub(super) drops: u64,
}

/// The receive side's keys, behind one lock.
#[derive(Debug, Default)]
pub(super) struct Keys {
    pub(super) by_id: BTreeMap<KeyId, RecvKey>,
    next_generation: u64,
    /// When each peer's newest key is due for rotation.
    rotation: BTreeMap<PeerName, Rekey>,
}

impl Keys {
    /// Packets received under `peer`'s newest key.
    fn newest_packets(&self, peer: PeerName) -> u64 {
        self.by_id
            .values()
            .filter(|r| r.peer == peer)
            .max_by_key(|r| r.generation)
            .map_or(0, |r| r.rx_packets)
    }
}

/// What the sleeve shows for one peer in `status connections`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighbourStatus {
    /// Heartbeats are acknowledged (both directions work).
    pub healthy: bool,
    /// Verified path MTU (overlay MTU), once probing finished.
    pub mtu: Option<u16>,
    /// When we last got an authenticated packet from this peer.
    pub last_heard: Option<Instant>,
    /// UDP packets sent to it.
    pub tx_packets: u64,
    /// UDP packets accepted from it.
    pub rx_packets: u64,
    /// Packets from or to it that were dropped (bad tag, replay, send error).
    pub drops: u64,
    /// Where we send its packets.
    pub udp: Option<SocketAddr>,
}

/// Locks, ignoring poisoning: the data is counters and tables that stay consistent per call.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sans-IO sleeve endpoint; see the module doc for the call protocol.
pub struct Endpoint {
    pub(super) config: EndpointConfig,
    forwarding: ArcSwap<Forwarding>,
    neighbours: ArcSwap<Neighbours>,
    keys: Mutex<Keys>,
    pub(super) macs: Mutex<MacTable>,
    pub(super) health: Mutex<Health>,
    /// When the MAC table was last swept (`None` until the first timeout).
    mac_sweep: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with no neighbours and an empty routing snapshot.
    pub fn new(config: EndpointConfig) -> Endpoint {
        Endpoint {
            config,
            forwarding: ArcSwap::from_pointee(Forwarding {
                local: config.local,
                ..Forwarding::default()
            }),
            neighbours: ArcSwap::from_pointee(BTreeMap::new()),
            keys: Mutex::new(Keys::default()),
            macs: Mutex::new(MacTable::new()),
            health: Mutex::new(Health::new()),
            mac_sweep: Mutex::new(None),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Publishes a new routing snapshot (cheap for the datapath: one atomic swap).
    pub fn set_forwarding(&self, forwarding: Forwarding) {
        self.forwarding.store(Arc::new(forwarding));
    }

    /// Makes a fresh receive key for frames *from* `peer` and returns the hello to send it.
    /// `fill` supplies random bytes: the key (only when encrypting) and the key id, drawn
    /// again until it is one we do not use. Of `peer`'s keys the newest [`KEYS_PER_PEER`]
    /// stay valid, so packets in flight during a rotation are not lost; the rotation timer
    /// of [`Endpoint::keys_due`] restarts at `now`.
    pub fn new_recv_key<E>(
        &self,
        peer: PeerName,
        now: Instant,
        mut fill: impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<NewKey, E> {
        let encrypt = self.config.encrypt;
        let mut key = [0u8; 32];
        if encrypt {
            fill(&mut key)?;
        }
        let mut keys = lock(&self.keys);
        let key_id = loop {
            let mut b = [0u8; 4];
            fill(&mut b)?;
            let id = KeyId(u32::from_be_bytes(b));
            if !keys.by_id.contains_key(&id) {
                break id;
            }
        };
        keys.next_generation += 1;
        let generation = keys.next_generation;
        keys.by_id.insert(
            key_id,
            RecvKey {
                peer,
                opener: Opener::new(encrypt.then_some(&key)),
                generation,
                rx_packets: 0,
                drops: 0,
            },
        );
        let mut gens: Vec<(u64, KeyId)> = keys
            .by_id
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, r)| (r.generation, *id))
            .collect();
        gens.sort();
        let replaced = gens.len() > 1;
        let stale = gens.len().saturating_sub(KEYS_PER_PEER);
        for (_, old) in gens.into_iter().take(stale) {
            keys.by_id.remove(&old);
        }
        let after = self.config.rekey_after;
        keys.rotation
            .entry(peer)
            .and_modify(|r| r.rekeyed(now))
            .or_insert_with(|| Rekey::new(after, now));
        Ok(NewKey {
            hello: SleeveHello {
                key_id,
                key,
                udp_port: self.config.udp_port,
                mtu: self.config.mtu,
                encrypted: encrypt,
            },
            replaced,
        })
    }

    /// The peers whose newest receive key is old enough or used enough to be rotated now
    /// ([`Rekey::due`]); a fresh [`Endpoint::new_recv_key`] for each resets its timer.
    pub fn keys_due(&self, now: Instant) -> Vec<PeerName> {
        let keys = lock(&self.keys);
        keys.rotation
            .iter()
            .filter(|(peer, r)| r.due(now, keys.newest_packets(**peer)))
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// When the next receive key is due for rotation by age (the packet limit is checked at
    /// every [`Endpoint::keys_due`]).
    pub fn rotation_deadline(&self) -> Option<Instant> {
        lock(&self.keys)
            .rotation
            .values()
            .map(Rekey::deadline)
            .min()
    }

    /// Installs `peer`'s hello: from now on frames for it are sealed with its key and sent to
    /// `remote_ip`:`hello.udp_port`. A new path starts heartbeats and a PMTU search up to the
    /// smaller of the two overlay MTUs; a hello for a peer we already send to at that address
    /// is a re-key: only the key changes, its health, path MTU and counters carry over.
    pub fn handle_hello(
        &self,
        peer: PeerName,
        remote_ip: IpAddr,
        hello: &SleeveHello,
        now: Instant,
    ) -> Result<HelloOutcome, EncryptionMismatch> {
        let encrypt = self.config.encrypt;
        if hello.encrypted != encrypt {
            return Err(EncryptionMismatch {
                peer,
                theirs: hello.encrypted,
                ours: encrypt,
            });
        }
        let addr = SocketAddr::new(remote_ip, hello.udp_port);
        let old = self
            .neighbours
            .load()
            .get(&peer)
            .filter(|n| n.addr == addr)
            .cloned();
        let carried = |f: fn(&Neighbour) -> u64| old.as_deref().map_or(0, f);
        let path = Arc::new(Neighbour {
            peer,
            sealer: Sealer::new(hello.key_id, encrypt.then_some(&hello.key)),
            addr,
            pmtu: AtomicU16::new(old.as_ref().map_or(0, |o| o.pmtu.load(Ordering::Relaxed))),
            tx_packets: AtomicU64::new(carried(|o| o.tx_packets.load(Ordering::Relaxed))),
            drops: AtomicU64::new(carried(|o| o.drops.load(Ordering::Relaxed))),
        });
        self.neighbours.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.insert(peer, path.clone());
            m
        });
        if old.is_some() {
            return Ok(HelloOutcome::Rekeyed);
        }
        let mtu = u16::try_from(self.config.mtu.min(hello.mtu)).unwrap_or(u16::MAX);
        lock(&self.health).add_peer(peer, mtu, now);
        Ok(HelloOutcome::Up)
    }

    /// Drops everything about `peer`: send path, receive keys and their rotation, learned
    /// MACs, health.
    pub fn forget_peer(&self, peer: PeerName) {
        self.neighbours.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.remove(&peer);
            m
        });
        {
            let mut keys = lock(&self.keys);
            keys.by_id.retain(|_, r| r.peer != peer);
            keys.rotation.remove(&peer);
        }
        lock(&self.macs).forget_peer(peer);
        lock(&self.health).remove_peer(peer);
    }

    /// Source MACs not learned because the MAC table was at a limit.
    pub fn macs_refused(&self) -> u64 {
        lock(&self.macs).refused()
    }

    /// Per-peer status: every peer we can send to or receive from.
    pub fn status(&self, now: Instant) -> BTreeMap<PeerName, NeighbourStatus> {
        let mut out: BTreeMap<PeerName, NeighbourStatus> = BTreeMap::new();
        for (peer, n) in self.neighbours.load().iter() {
            let s = out.entry(*peer).or_default();
            s.tx_packets += n.tx_packets.load(Ordering::Relaxed);
            s.drops += n.drops.load(Ordering::Relaxed);
            s.udp = Some(n.addr);
        }
        for r in lock(&self.keys).by_id.values() {
            let s = out.entry(r.peer).or_default();
            s.rx_packets += r.rx_packets;
            s.drops += r.drops;
        }
        let health = lock(&self.health);
        for (peer, s) in &mut out {
            if let Some(LinkStatus {
                healthy,
                mtu,
                last_heard,
            }) = health.status(*peer, now)
            {
                s.healthy = healthy;
                s.mtu = mtu;
                s.last_heard = last_heard;
            }
        }
        out
    }

    /// Runs the timers: emits the heartbeats and PMTU probes due (sealed in `scratch`, which
    /// must hold the largest probe: overlay MTU + Ethernet + headers + tag), publishes each
    /// neighbour's verified path MTU to the send path, sweeps aged MACs every [`MAC_SWEEP`].
    /// Returns when to call again (`None`: nothing scheduled).
    pub fn handle_timeout(
        &self,
        now: Instant,
        scratch: &mut [u8],
        out: &mut impl FnMut(Output<'_>),
    ) -> Option<Instant> {
        {
            let mut sweep = lock(&self.mac_sweep);
            match *sweep {
                None => *sweep = Some(now),
                Some(t) if now.saturating_duration_since(t) >= MAC_SWEEP => {
                    lock(&self.macs).expire(now);
                    *sweep = Some(now);
                }
                Some(_) => {}
            }
        }
        let neighbours = self.neighbours.load();
        loop {
            let next = lock(&self.health).poll_transmit(now);
            let Some((peer, c)) = next else { break };
            self.send_control(&neighbours, peer, c, scratch, out);
        }
        let health = lock(&self.health);
        for (peer, n) in neighbours.iter() {
            let mtu = health.status(*peer, now).and_then(|s| s.mtu).unwrap_or(0);
            n.pmtu.store(mtu, Ordering::Relaxed);
        }
        health.poll_timeout()
    }

    /// Sending a PMTU probe of `size` to `peer` failed locally because it is bigger than the
    /// kernel's path MTU: it counts as lost at once.
    pub fn handle_probe_error(&self, peer: PeerName, size: u16, now: Instant) {
        lock(&self.health).handle_probe_error(peer, size, now);
    }

    /// The view one receive batch works with: the receive keys (locked while it lives, so
    /// keep it for one batch) and the current snapshots.
    pub fn rx(&self) -> Rx<'_> {
        Rx {
            ep: self,
            keys: lock(&self.keys),
            forwarding: self.forwarding.load(),
            neighbours: self.neighbours.load(),
            heard: None,
        }
    }

    /// The view one send batch works with: the current snapshots.
    pub fn tx(&self) -> Tx<'_> {
        Tx {
            ep: self,
            forwarding: self.forwarding.load(),
            neighbours: self.neighbours.load(),
        }
    }

    /// Seals a control packet for direct neighbour `to` (inner ttl 1: never relayed) into
    /// `buf` and emits it.
    pub(super) fn send_control(
        &self,
        neighbours: &Neighbours,
        to: PeerName,
        c: Control,
        buf: &mut [u8],
        out: &mut impl FnMut(Output<'_>),
    ) {
        let inner = Inner {
            originator: self.config.local,
            destination: Destination::Peer(to),
            ttl: 1,
        };
        let probe = match c {
            Control::PmtuProbe(size) => Some(size),
            _ => None,
        };
        send_one(neighbours, to, &inner, Payload::Control(c), probe, buf, out);
    }
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
