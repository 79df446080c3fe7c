//! The per-packet half of the sleeve [`Endpoint`]: the views a receive batch ([`Rx`]) and a
//! send batch ([`Tx`]) work through, the [`Output`]s they emit, and the [`Neighbour`] send
//! paths the caller seals data packets with. The module doc of [`super::endpoint`] states the
//! call protocol.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use arc_swap::Guard;

use super::crypto::{CryptoError, Sealer};
use super::endpoint::{Endpoint, Keys, Neighbours, lock};
use super::forward::{DropReason, Forwarding, INITIAL_TTL, LocalOut, Relay};
use super::wire::{Control, Destination, ETH_LEN, INNER_LEN, Inner, Kind, OUTER_LEN, Outer};
use super::{frag, icmp};
use crate::ids::PeerName;

/// Why the endpoint dropped a datagram or frame; the caller counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// Undecodable header, payload or control message (or a control packet relayed from
    /// beyond a direct neighbour).
    Malformed,
    /// A key id we do not know (stale key, or not for us).
    UnknownKey,
    /// The tag did not verify.
    Auth,
    /// Replayed or older than the replay window.
    Replay,
    /// A frame for a neighbour we have no send key or address for.
    NoPath,
    /// The forwarding decision dropped it.
    Forward(DropReason),
    /// Too big for the neighbour's path and not fragmentable (answered with ICMP
    /// frag-needed when it had DF set), or too big for a packet buffer.
    TooBig,
}

/// One thing the caller must do.
#[derive(Debug)]
pub enum Output<'a> {
    /// Write this Ethernet frame to the TAP.
    Tap(&'a [u8]),
    /// Send this sealed datagram to the neighbour now (relays and control packets). A probe
    /// the kernel refuses as too big (EMSGSIZE) goes to [`Endpoint::handle_probe_error`].
    Udp {
        /// The neighbour (its address, its counters).
        to: &'a Neighbour,
        /// The datagram.
        packet: &'a [u8],
        /// The PMTU probe size when this is a probe.
        probe: Option<u16>,
    },
    /// Seal `frame` behind `inner` for `to` ([`Neighbour::seal_data`]) and send it; the
    /// caller may batch consecutive ones (UDP GSO).
    Data {
        /// The neighbour.
        to: &'a Arc<Neighbour>,
        /// The inner header.
        inner: &'a Inner,
        /// The frame (a whole frame, a segment or a fragment).
        frame: &'a [u8],
    },
    /// Dropped, and why.
    Discard(Discard),
}

/// How this host sends to one direct neighbour: its send key, its address, its verified path
/// MTU and its counters.
#[derive(Debug)]
pub struct Neighbour {
    pub(super) peer: PeerName,
    pub(super) sealer: Sealer,
    pub(super) addr: SocketAddr,
    /// Verified path MTU (overlay bytes), 0 until known; refreshed by `handle_timeout`.
    pub(super) pmtu: AtomicU16,
    pub(super) tx_packets: AtomicU64,
    pub(super) drops: AtomicU64,
}

impl Neighbour {
    /// Its peer name.
    #[inline]
    pub fn peer(&self) -> PeerName {
        self.peer
    }

    /// Where its packets go.
    #[inline]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its verified path MTU, once probing found one.
    #[inline]
    pub fn path_mtu(&self) -> Option<u16> {
        Some(self.pmtu.load(Ordering::Relaxed)).filter(|&m| m != 0)
    }

    /// `n` packets to it went out.
    #[inline]
    pub fn sent(&self, n: u64) {
        self.tx_packets.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` packets to it were lost locally (seal or send error).
    #[inline]
    pub fn dropped(&self, n: u64) {
        self.drops.fetch_add(n, Ordering::Relaxed);
    }

    /// The length of the datagram carrying a frame of `frame_len` bytes.
    #[inline]
    pub fn packet_len(&self, frame_len: usize) -> usize {
        OUTER_LEN + INNER_LEN + frame_len + self.sealer.tag_len()
    }

    /// Seals a data packet carrying `inner` and `frame` into the start of `dst` and returns
    /// its length ([`Neighbour::packet_len`]).
    #[inline]
    pub fn seal_data(
        &self,
        inner: &Inner,
        frame: &[u8],
        dst: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let plain = INNER_LEN + frame.len();
        let body = dst
            .get_mut(OUTER_LEN..OUTER_LEN + plain)
            .ok_or(CryptoError::BufferTooShort)?;
        body[..INNER_LEN].copy_from_slice(&inner.to_bytes());
        body[INNER_LEN..].copy_from_slice(frame);
        self.sealer.seal(Kind::Data, dst, plain)
    }
}

pub(super) enum Payload<'a> {
    Control(Control),
    Frame(&'a [u8]),
}

/// Seals one packet into `buf` and emits it at once (control packets and relays).
pub(super) fn send_one(
    neighbours: &Neighbours,
    to: PeerName,
    inner: &Inner,
    payload: Payload<'_>,
    probe: Option<u16>,
    buf: &mut [u8],
    out: &mut impl FnMut(Output<'_>),
) {
    let Some(n) = neighbours.get(&to) else {
        out(Output::Discard(Discard::NoPath));
        return;
    };
    let Some(head) = buf.get_mut(OUTER_LEN..OUTER_LEN + INNER_LEN) else {
        out(Output::Discard(Discard::TooBig));
        return;
    };
    head.copy_from_slice(&inner.to_bytes());
    let body = buf.get_mut(OUTER_LEN + INNER_LEN..).unwrap_or_default();
    let (kind, len) = match payload {
        Payload::Control(c) => (c.kind(), c.emit(body)),
        Payload::Frame(f) => (
            Kind::Data,
            body.get_mut(..f.len()).map(|b| {
                b.copy_from_slice(f);
                f.len()
            }),
        ),
    };
    let Some(len) = len else {
        out(Output::Discard(Discard::TooBig));
        return;
    };
    let Ok(total) = n.sealer.seal(kind, buf, INNER_LEN + len) else {
        n.dropped(1);
        return;
    };
    out(Output::Udp {
        to: n,
        packet: &buf[..total],
        probe,
    });
}

/// A receive batch's view of the endpoint ([`Endpoint::rx`]).
pub struct Rx<'e> {
    pub(super) ep: &'e Endpoint,
    pub(super) keys: MutexGuard<'e, Keys>,
    pub(super) forwarding: Guard<Arc<Forwarding>>,
    pub(super) neighbours: Guard<Arc<Neighbours>>,
    /// The neighbour last reported to health, so a run of its packets is reported once.
    pub(super) heard: Option<PeerName>,
}

impl std::fmt::Debug for Rx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rx")
            .field("heard", &self.heard)
            .finish_non_exhaustive()
    }
}

impl Rx<'_> {
    /// Opens the datagram `pkt` in place and decides it: a data frame is delivered
    /// ([`Output::Tap`]) and/or relayed with its ttl one lower ([`Output::Udp`], sealed in
    /// `scratch`, which must hold the largest packet); a control packet from a direct
    /// neighbour goes to [`super::Health`] and may be answered.
    pub fn handle_udp(
        &mut self,
        pkt: &mut [u8],
        scratch: &mut [u8],
        now: Instant,
        out: &mut impl FnMut(Output<'_>),
    ) {
        let Ok(outer) = Outer::parse(pkt) else {
            out(Output::Discard(Discard::Malformed));
            return;
        };
        let Some(key) = self.keys.by_id.get_mut(&outer.key_id) else {
            out(Output::Discard(Discard::UnknownKey));
            return;
        };
        let range = match key.opener.open(&outer, pkt) {
            Ok(r) => r,
            Err(e) => {
                key.drops += 1;
                out(Output::Discard(match e {
                    CryptoError::Replay(_) => Discard::Replay,
                    CryptoError::Auth => Discard::Auth,
                    _ => Discard::Malformed,
                }));
                return;
            }
        };
        key.rx_packets += 1;
        let peer = key.peer;
        if self.heard != Some(peer) {
            lock(&self.ep.health).handle_heard(peer, now);
            self.heard = Some(peer);
        }
        let body = pkt.get(range).unwrap_or_default();
        let Ok(inner) = Inner::parse(body) else {
            out(Output::Discard(Discard::Malformed));
            return;
        };
        let payload = body.get(INNER_LEN..).unwrap_or_default();
        match outer.kind {
            Kind::Data => {
                let decided = {
                    let mut macs = lock(&self.ep.macs);
                    self.forwarding.on_remote(&mut macs, &inner, payload, now)
                };
                if let Some(why) = decided.dropped {
                    out(Output::Discard(Discard::Forward(why)));
                }
                if decided.inject {
                    out(Output::Tap(payload));
                }
                let next = Inner {
                    ttl: inner.ttl.saturating_sub(1),
                    ..inner
                };
                for hop in decided.relay.hops(inner.originator, peer) {
                    let frame = Payload::Frame(payload);
                    send_one(&self.neighbours, hop, &next, frame, None, scratch, out);
                }
            }
            Kind::Unknown(_) => out(Output::Discard(Discard::Malformed)),
            kind => {
                // Control travels between direct neighbours only.
                let control = Control::parse(kind, payload).filter(|_| inner.originator == peer);
                let Some(control) = control else {
                    out(Output::Discard(Discard::Malformed));
                    return;
                };
                let reply = lock(&self.ep.health).handle_control(peer, control, now);
                if let Some(r) = reply {
                    self.ep
                        .send_control(&self.neighbours, peer, r, scratch, out);
                }
            }
        }
    }
}

/// Where a frame from the local bridge goes ([`Tx::route`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    /// The inner header it travels with (ttl [`INITIAL_TTL`]).
    pub inner: Inner,
    /// The neighbours it is sent to.
    pub hops: Relay<'a>,
}

/// A send batch's view of the endpoint ([`Endpoint::tx`]).
pub struct Tx<'e> {
    pub(super) ep: &'e Endpoint,
    pub(super) forwarding: Guard<Arc<Forwarding>>,
    pub(super) neighbours: Guard<Arc<Neighbours>>,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

impl Tx<'_> {
    /// Decides where a frame read from the TAP goes (every segment of a TSO super-frame has
    /// the same Ethernet header, so one decision serves them all).
    pub fn route(&self, frame: &[u8], now: Instant) -> Result<Route<'_>, DropReason> {
        let local = self.ep.config.local;
        let decided = {
            let macs = lock(&self.ep.macs);
            self.forwarding.on_local_frame(&macs, frame, now)
        };
        let (destination, hops) = match decided {
            LocalOut::Drop(why) => return Err(why),
            LocalOut::Unicast {
                destination,
                next_hop,
            } => (Destination::Peer(destination), Relay::One(next_hop)),
            LocalOut::Broadcast(hops) => (Destination::Broadcast, Relay::Tree(hops)),
        };
        Ok(Route {
            inner: Inner {
                originator: local,
                destination,
                ttl: INITIAL_TTL,
            },
            hops,
        })
    }

    /// The size a TSO super-frame for `route` is cut to: the smallest verified path MTU among
    /// its next hops (so a TCP stream fits a narrower path without ICMP round trips); `None`
    /// when no hop has one yet.
    pub fn path_mtu(&self, route: &Route<'_>) -> Option<u16> {
        let local = self.ep.config.local;
        route
            .hops
            .hops(local, local)
            .filter_map(|h| self.neighbours.get(&h))
            .filter_map(|n| n.path_mtu())
            .min()
    }

    /// Emits `frame` (a whole frame or one segment) for each next hop of `route`. A frame
    /// larger than a hop's verified path MTU is, when IPv4 with DF, answered with ICMP
    /// frag-needed carrying that MTU ([`Output::Tap`]) and dropped; other IPv4 is cut into
    /// fragments that fit; anything else is dropped.
    pub fn encapsulate(&self, route: &Route<'_>, frame: &[u8], out: &mut impl FnMut(Output<'_>)) {
        let local = self.ep.config.local;
        for hop in route.hops.hops(local, local) {
            let Some(n) = self.neighbours.get(&hop) else {
                out(Output::Discard(Discard::NoPath));
                continue;
            };
            let inner = &route.inner;
            match n.path_mtu() {
                Some(pmtu) if frame.len().saturating_sub(ETH_LEN) > usize::from(pmtu) => {
                    too_big(n, inner, frame, pmtu, out)
                }
                _ => out(Output::Data {
                    to: n,
                    inner,
                    frame,
                }),
            }
        }
    }
}

/// A frame larger than `to`'s path MTU: ICMP for DF packets, fragments for other IPv4.
fn too_big(
    to: &Arc<Neighbour>,
    inner: &Inner,
    frame: &[u8],
    pmtu: u16,
    out: &mut impl FnMut(Output<'_>),
) {
    let mut answer = [0u8; icmp::FRAG_NEEDED_MAX];
    if let Some(n) = icmp::frag_needed(frame, pmtu, &mut answer) {
        out(Output::Discard(Discard::TooBig));
        out(Output::Tap(&answer[..n]));
        return;
    }
    // Slow path (a path narrower than the overlay): one buffer per oversized frame.
    let mut buf = vec![0u8; ETH_LEN + usize::from(pmtu)];
    let r = frag::fragment(frame, pmtu, &mut buf, |f| {
        out(Output::Data {
            to,
            inner,
            frame: f,
        })
    });
    if r.is_err() {
        out(Output::Discard(Discard::TooBig));
    }
}
