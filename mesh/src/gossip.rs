//! Message dispatch and gossip for [`Mesh`]: the `topology`
//! channel (deltas, full records, requests, digests), application channels through
//! [`Channels`], surrogate relaying of unknown channels, and hop-by-hop unicast and
//! per-source broadcast trees.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::ids::{ConnId, PeerName};
use crate::mesh::{
    Channels, CloseReason, Event, MAX_BROADCAST_ROUTES, MAX_PEERS, MAX_SURROGATE_SEEN, Mesh,
    NoRoute, SURROGATE_TTL, TOPOLOGY_CHANNEL,
};
use crate::routes;
use crate::topology::{DeltaOutcome, FullOutcome};
use crate::wire::{DecodeError, GossipMsg, GossipUnicastMsg, Message, PeerRecord, TopologyMsg};

/// Byte budget of one `Full` answer: a quarter of [`crate::wire::MAX_MESSAGE_LEN`], so a
/// chunk is far from the limit at which the receiver drops the connection, yet large enough
/// that a 1,000-peer answer takes a handful of messages.
pub const MAX_TOPOLOGY_CHUNK_BYTES: usize = crate::wire::MAX_MESSAGE_LEN / 4;

/// FNV-1a 64 over channel and payload (weave dedupes surrogate gossip the same way).
fn fnv64a(channel: &str, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes().chain([0]).chain(payload.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Mesh {
    /// Whether a gossiped record gives a directly connected peer another key than the one it
    /// proved it holds in our handshake: such a record is an impostor's and is dropped, so a
    /// second key claiming a name never displaces the peer that holds it.
    fn contradicts_neighbour(&self, r: &crate::wire::PeerRecord) -> bool {
        self.by_peer
            .get(&r.name)
            .and_then(|c| self.conns.get(c))
            .is_some_and(|c| c.info.remote_key != r.key)
    }

    /// One decoded-and-decrypted message arrived on `conn`. Undecodable input or a protocol
    /// violation closes the connection with a typed reason.
    pub fn handle_message(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        now: Instant,
        channels: &mut dyn Channels,
    ) {
        if now > self.now {
            self.now = now;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        c.last_recv = now;
        let from = c.peer;
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(DecodeError::Empty) => return,
            Err(e) => return self.close_conn(conn, CloseReason::Decode(e.to_string())),
        };
        match msg {
            Message::Heartbeat | Message::Unknown { .. } => {}
            Message::Gossip(g) => {
                if g.src != from {
                    let why = format!("gossip from {from} claims to come from {}", g.src);
                    return self.close_conn(conn, CloseReason::Protocol(why));
                }
                if g.channel == TOPOLOGY_CHANNEL {
                    self.handle_topology(conn, from, &g.payload);
                } else {
                    self.handle_gossip(from, g, channels);
                }
            }
            Message::GossipUnicast(u) if self.forged_src(from, u.src) => {}
            Message::GossipBroadcast(b) if self.forged_src(from, b.src) => {}
            Message::GossipUnicast(u) => self.handle_unicast(u, channels),
            Message::GossipBroadcast(b) => self.handle_broadcast(from, b, channels),
            Message::OverlayControl(bytes) => {
                self.events.push_back(Event::OverlayControl {
                    conn,
                    peer: from,
                    bytes,
                });
            }
        }
        self.refresh_targets();
    }

    fn handle_topology(&mut self, conn: ConnId, from: PeerName, payload: &[u8]) {
        let msg = match TopologyMsg::decode(payload) {
            Ok(m) => m,
            Err(DecodeError::TooLong { what, len, max }) => {
                let reason = CloseReason::LimitExceeded {
                    what,
                    count: len,
                    limit: max,
                };
                return self.close_conn(conn, reason);
            }
            Err(e) => return self.close_conn(conn, CloseReason::Decode(format!("topology: {e}"))),
        };
        if let Some(count) = self.peers_after(&msg)
            && count > MAX_PEERS
        {
            let reason = CloseReason::LimitExceeded {
                what: "known peers",
                count,
                limit: MAX_PEERS,
            };
            return self.close_conn(conn, reason);
        }
        let mut changed = false;
        match msg {
            TopologyMsg::Delta(deltas) => {
                let mut relay = Vec::new();
                let mut want = BTreeSet::new();
                for d in deltas {
                    match self.topo.apply_delta(&d) {
                        DeltaOutcome::Applied => relay.push(d),
                        DeltaOutcome::Stale => {}
                        DeltaOutcome::NeedFull => {
                            want.insert(d.name);
                        }
                    }
                }
                if !want.is_empty() {
                    self.send_topology(conn, &TopologyMsg::Request(want.into_iter().collect()));
                }
                if !relay.is_empty() {
                    changed = true;
                    self.topology_changed();
                    self.gossip_topology(&TopologyMsg::Delta(relay), Some(from));
                }
            }
            TopologyMsg::Full(records) => {
                // Relay what improved: as a delta when we held an older version of the same
                // incarnation (cheap), whole only for peers new to us.
                let mut deltas = Vec::new();
                let mut fulls = Vec::new();
                for r in records {
                    if self.contradicts_neighbour(&r) {
                        continue;
                    }
                    match self.topo.apply_full(&r) {
                        FullOutcome::NotBetter => {}
                        FullOutcome::Replaced(Some(d)) => deltas.push(d),
                        FullOutcome::Replaced(None) => fulls.push(r),
                    }
                }
                if !deltas.is_empty() || !fulls.is_empty() {
                    changed = true;
                    self.topology_changed();
                }
                if !deltas.is_empty() {
                    self.gossip_topology(&TopologyMsg::Delta(deltas), Some(from));
                }
                if !fulls.is_empty() {
                    self.gossip_topology(&TopologyMsg::Full(fulls), Some(from));
                }
            }
            TopologyMsg::Request(names) => {
                // Once per distinct peer, however often the request names it.
                let names: BTreeSet<PeerName> = names.into_iter().collect();
                let records: Vec<_> = names
                    .into_iter()
                    .filter_map(|n| self.topo.record(n))
                    .collect();
                self.send_records(conn, records);
            }
            TopologyMsg::Digest(entries) => {
                // Pull only: request what the sender holds newer. The sender learns what we
                // hold newer from our own digests (on connect, and every 30 s).
                let want: Vec<_> = entries
                    .into_iter()
                    .filter(|(name, uid, version)| self.topo.digest_wants(*name, *uid, *version))
                    .map(|(name, _, _)| name)
                    .collect();
                if !want.is_empty() {
                    self.send_topology(conn, &TopologyMsg::Request(want));
                }
            }
        }
        // A delta or record can name a peer we hold no record of (its own
        // record may have raced ahead, been judged unreachable and collected);
        // ask the neighbour that mentioned it rather than wait for the next
        // periodic digest.
        if changed {
            let unknown = self.topo.placeholders();
            if !unknown.is_empty() {
                self.send_topology(conn, &TopologyMsg::Request(unknown));
            }
        }
        if changed || self.topo.has_pending() {
            self.topology_changed();
        }
    }

    /// Sends `records` as as many `Full` messages as it takes to keep each under
    /// [`MAX_TOPOLOGY_CHUNK_BYTES`]: the answer to a request for every record of a dense mesh
    /// is larger than one message may be.
    fn send_records(&mut self, conn: ConnId, records: Vec<PeerRecord>) {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for r in records {
            let size = r.encoded_len();
            if !chunk.is_empty() && bytes + size > MAX_TOPOLOGY_CHUNK_BYTES {
                self.send_topology(conn, &TopologyMsg::Full(std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += size;
            chunk.push(r);
        }
        if !chunk.is_empty() {
            self.send_topology(conn, &TopologyMsg::Full(chunk));
        }
    }

    /// How many peers we would know after merging `msg` (an upper bound: every name it
    /// mentions that we do not know counts), or `None` when it cannot add peers.
    fn peers_after(&self, msg: &TopologyMsg) -> Option<usize> {
        let mut new = BTreeSet::new();
        let mut note = |n: &PeerName| {
            if self.topo.peer(*n).is_none() {
                new.insert(*n);
            }
        };
        match msg {
            TopologyMsg::Full(records) => records.iter().for_each(|r| {
                note(&r.name);
                r.conns.iter().for_each(|(n, _)| note(n));
            }),
            TopologyMsg::Delta(deltas) => deltas
                .iter()
                .for_each(|d| d.upserts.iter().for_each(|(n, _)| note(n))),
            TopologyMsg::Request(_) | TopologyMsg::Digest(_) => return None,
        }
        Some(self.topo.peers().len() + new.len())
    }

    fn handle_gossip(&mut self, from: PeerName, g: GossipMsg, channels: &mut dyn Channels) {
        if channels.names().contains(&g.channel) {
            match channels.on_gossip(&g.channel, g.src, &g.payload) {
                Ok(Some(delta)) => self.gossip_except(&g.channel, delta, Some(from)),
                Ok(None) => {}
                Err(_e) => {} // the channel rejected it; weave logs and carries on
            }
        } else {
            // Surrogate: relay unknown channels unchanged, once per 30 s per content.
            let h = fnv64a(&g.channel, &g.payload);
            if self.surrogate_seen.contains_key(&h) {
                return;
            }
            if self.surrogate_seen.len() >= MAX_SURROGATE_SEEN {
                self.surrogate_seen.retain(|_, until| *until > self.now);
            }
            if self.surrogate_seen.len() >= MAX_SURROGATE_SEEN {
                self.surrogate_dropped += 1;
                return;
            }
            self.surrogate_seen.insert(h, self.now + SURROGATE_TTL);
            self.gossip_except(&g.channel, g.payload, Some(from));
        }
    }

    /// Whether a relayed message's claimed originator `src` is certainly forged, as far as
    /// can be told without signatures: it names us, a peer no one reported (a phantom), or
    /// one of our neighbours while arriving from another neighbour (a neighbour's own
    /// unicasts and broadcasts reach us directly: we are its first hop and on the first
    /// layer of its broadcast tree). A relay can still forge any other peer's `src`.
    /// Dropped messages are counted in [`Mesh::forged_dropped`].
    fn forged_src(&mut self, from: PeerName, src: PeerName) -> bool {
        let forged = src == self.config.name
            || self.topo.peer(src).is_none()
            || (src != from && self.by_peer.contains_key(&src));
        if forged {
            self.forged_dropped += 1;
        }
        forged
    }

    /// Unknown-channel gossip dropped, not relayed, because [`MAX_SURROGATE_SEEN`] distinct
    /// messages were already remembered.
    pub fn surrogate_dropped(&self) -> u64 {
        self.surrogate_dropped
    }

    /// Relayed messages dropped because their claimed originator was forged.
    pub fn forged_dropped(&self) -> u64 {
        self.forged_dropped
    }

    fn handle_unicast(&mut self, u: GossipUnicastMsg, channels: &mut dyn Channels) {
        if u.dst == self.config.name {
            if channels.names().contains(&u.channel) {
                let _ = channels.on_unicast(&u.channel, u.src, &u.payload);
            }
            return;
        }
        self.ensure_routes();
        if let Some(conn) = self
            .unicast_all
            .get(&u.dst)
            .and_then(|hop| self.by_peer.get(hop))
            .copied()
        {
            self.send(conn, &Message::GossipUnicast(u));
        }
    }

    fn handle_broadcast(&mut self, from: PeerName, b: GossipMsg, channels: &mut dyn Channels) {
        if b.src == self.config.name {
            return;
        }
        if channels.names().contains(&b.channel) {
            let _ = channels.on_broadcast(&b.channel, b.src, &b.payload);
        }
        let src = b.src;
        let msg = Message::GossipBroadcast(b);
        for hop in self.broadcast_hops(src) {
            if hop == from {
                continue;
            }
            if let Some(conn) = self.by_peer.get(&hop).copied() {
                self.send(conn, &msg);
            }
        }
    }

    fn broadcast_hops(&mut self, src: PeerName) -> Vec<PeerName> {
        self.ensure_routes();
        if let Some(h) = self.broadcast_all.get(&src) {
            return h.clone();
        }
        let hops = routes::broadcast(&self.topo, self.config.name, src, false);
        if self.broadcast_all.len() < MAX_BROADCAST_ROUTES {
            self.broadcast_all.insert(src, hops.clone());
        }
        hops
    }

    fn neighbour_conns(&mut self, except: Option<PeerName>) -> Vec<ConnId> {
        self.ensure_routes();
        routes::random_neighbours(&self.unicast_all, except, &mut self.rng)
            .into_iter()
            .filter_map(|p| self.by_peer.get(&p).copied())
            .collect()
    }

    pub(crate) fn gossip_topology(&mut self, msg: &TopologyMsg, except: Option<PeerName>) {
        for conn in self.neighbour_conns(except) {
            self.send_topology(conn, msg);
        }
    }

    fn gossip_except(&mut self, channel: &str, payload: Vec<u8>, except: Option<PeerName>) {
        let msg = Message::Gossip(GossipMsg {
            channel: channel.to_owned(),
            src: self.config.name,
            payload,
        });
        for conn in self.neighbour_conns(except) {
            self.send(conn, &msg);
        }
    }

    /// Gossips `payload` on `channel` to a random neighbour subset; receivers merge it and
    /// relay what was new to them.
    pub fn gossip(&mut self, channel: &str, payload: Vec<u8>) {
        self.gossip_except(channel, payload, None);
    }

    /// Broadcasts `payload` along our broadcast tree; every peer gets it once when the
    /// topology is stable.
    pub fn gossip_broadcast(&mut self, channel: &str, payload: Vec<u8>) {
        let msg = Message::GossipBroadcast(GossipMsg {
            channel: channel.to_owned(),
            src: self.config.name,
            payload,
        });
        for hop in self.broadcast_hops(self.config.name) {
            if let Some(conn) = self.by_peer.get(&hop).copied() {
                self.send(conn, &msg);
            }
        }
    }

    /// Sends `payload` to `dst`, routed hop by hop over all known connections.
    pub fn gossip_unicast(
        &mut self,
        channel: &str,
        dst: PeerName,
        payload: Vec<u8>,
    ) -> Result<(), NoRoute> {
        self.ensure_routes();
        let conn = self
            .unicast_all
            .get(&dst)
            .and_then(|hop| self.by_peer.get(hop))
            .copied()
            .ok_or(NoRoute(dst))?;
        let msg = Message::GossipUnicast(GossipUnicastMsg {
            channel: channel.to_owned(),
            src: self.config.name,
            dst,
            payload,
        });
        self.send(conn, &msg);
        Ok(())
    }

    /// Every 30 s: a topology digest to one neighbour and each channel's full state to a
    /// neighbour subset.
    pub(crate) fn periodic_gossip(&mut self, channels: &mut dyn Channels) {
        // Anti-entropy only repairs what the delta flood missed, so one (weighted) random
        // neighbour per round is enough; every peer does it, so every peer is asked often.
        let digest = TopologyMsg::Digest(self.topo.digest());
        if let Some(conn) = self.neighbour_conns(None).first().copied() {
            self.send_topology(conn, &digest);
        }
        for name in channels.names() {
            if let Some(state) = channels.full_state(&name) {
                self.gossip(&name, state);
            }
        }
    }

    /// Channel states owed to a new connection.
    pub(crate) fn send_channel_states(&mut self, conn: ConnId, channels: &mut dyn Channels) {
        if self.conns.get(&conn).is_none_or(|c| c.closing) {
            return;
        }
        for name in channels.names() {
            if let Some(state) = channels.full_state(&name) {
                let msg = Message::Gossip(GossipMsg {
                    channel: name,
                    src: self.config.name,
                    payload: state,
                });
                self.send(conn, &msg);
            }
        }
    }
}
