//! Tests of the forwarding decisions: chain, star and full-mesh topologies, and a seeded sweep
//! of random small topologies checking that every host injects every broadcast exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::*;
use crate::sleeve::wire::{Destination, Inner};

fn p(v: u64) -> PeerName {
    PeerName::new(v).unwrap()
}

/// A frame from `src` MAC to `dst` MAC.
fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0u8; 46]);
    f
}

fn mac(host: u64, n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, host as u8, n]
}

/// Undirected graph over hosts 1..=n.
type Graph = BTreeMap<PeerName, BTreeSet<PeerName>>;

fn graph(n: u64, edges: &[(u64, u64)]) -> Graph {
    let mut g: Graph = (1..=n).map(|i| (p(i), BTreeSet::new())).collect();
    for &(a, b) in edges {
        g.get_mut(&p(a)).unwrap().insert(p(b));
        g.get_mut(&p(b)).unwrap().insert(p(a));
    }
    g
}

/// The topology host `me` knows for graph `g`: every edge an established connection that
/// both ends report, as the mesh's gossip would leave it.
fn topology(g: &Graph, me: PeerName) -> crate::topology::Topology {
    use crate::wire::{ConnSummary, PeerRecord};
    let key = |n: PeerName| crate::keys::PublicKey([n.as_u64() as u8; 32]);
    let mut t = crate::topology::Topology::new(
        me,
        key(me),
        String::new(),
        crate::PeerUid(me.as_u64()),
        crate::ShortId::default(),
        1,
    );
    let conn = || ConnSummary {
        remote_addr: String::new(),
        outbound: true,
        established: true,
    };
    for (&peer, neighbours) in g {
        if peer == me {
            for &n in neighbours {
                t.set_local_conn(n, Some(conn()));
            }
            continue;
        }
        t.apply_full(&PeerRecord {
            name: peer,
            key: key(peer),
            nickname: String::new(),
            uid: crate::PeerUid(peer.as_u64()),
            version: 1,
            short_id: crate::ShortId::default(),
            listen_port: 1,
            conns: neighbours.iter().map(|&n| (n, conn())).collect(),
        });
    }
    t
}

/// The snapshot host `me` gets for graph `g`: the routes the mesh computes
/// (`crate::routes`, the code the router ships), the fastdp paths as given.
fn forwarding(g: &Graph, me: PeerName, fastdp: &BTreeSet<(PeerName, PeerName)>) -> Forwarding {
    let mut f = Forwarding {
        local: me,
        ..Forwarding::default()
    };
    for &other in g.keys().filter(|&&o| o != me) {
        f.peers.insert(
            other,
            PeerPath {
                udp: None,
                fastdp: fastdp.contains(&(me, other)),
            },
        );
    }
    let t = topology(g, me);
    f.unicast = crate::routes::unicast(&t, me, true);
    for &src in g.keys() {
        f.broadcast
            .insert(src, crate::routes::broadcast(&t, me, src, true));
    }
    f
}

struct Net {
    fwd: BTreeMap<PeerName, Forwarding>,
    macs: BTreeMap<PeerName, MacTable>,
}

impl Net {
    fn new(g: &Graph, fastdp: &BTreeSet<(PeerName, PeerName)>) -> Net {
        Net {
            fwd: g.keys().map(|&h| (h, forwarding(g, h, fastdp))).collect(),
            macs: g.keys().map(|&h| (h, MacTable::new())).collect(),
        }
    }

    /// Sends `frame` from host `src`'s bridge; returns how often each host injected it and how
    /// often each host received it over the sleeve.
    fn send(
        &mut self,
        src: PeerName,
        frame: &[u8],
        now: Instant,
    ) -> (BTreeMap<PeerName, u32>, BTreeMap<PeerName, u32>) {
        let mut injected = BTreeMap::new();
        let mut received = BTreeMap::new();
        let mut q = VecDeque::new();
        match self.fwd[&src].on_local_frame(&self.macs[&src], frame, now) {
            LocalOut::Drop(_) => {}
            LocalOut::Unicast {
                destination,
                next_hop,
            } => q.push_back((
                src,
                next_hop,
                Inner {
                    originator: src,
                    destination: Destination::Peer(destination),
                    ttl: INITIAL_TTL,
                },
            )),
            LocalOut::Broadcast(hops) => {
                for &h in hops {
                    q.push_back((
                        src,
                        h,
                        Inner {
                            originator: src,
                            destination: Destination::Broadcast,
                            ttl: INITIAL_TTL,
                        },
                    ));
                }
            }
        }
        let mut steps = 0;
        while let Some((from, at, inner)) = q.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "forwarding loop");
            *received.entry(at).or_insert(0) += 1;
            let out = self.fwd[&at].on_remote(self.macs.get_mut(&at).unwrap(), &inner, frame, now);
            if out.inject {
                *injected.entry(at).or_insert(0) += 1;
            }
            for hop in out.relay.hops(inner.originator, from) {
                q.push_back((
                    at,
                    hop,
                    Inner {
                        ttl: inner.ttl - 1,
                        ..inner
                    },
                ));
            }
        }
        (injected, received)
    }
}

fn all_once_except(g: &Graph, src: PeerName) -> BTreeMap<PeerName, u32> {
    g.keys().filter(|&&h| h != src).map(|&h| (h, 1)).collect()
}

#[test]
fn chain_broadcast_then_learned_unicast_goes_hop_by_hop() {
    let g = graph(4, &[(1, 2), (2, 3), (3, 4)]);
    let mut net = Net::new(&g, &BTreeSet::new());
    let now = Instant::now();
    // ARP-like broadcast from a container on host 1: everyone gets it once.
    let (inj, rx) = net.send(p(1), &frame([0xff; 6], mac(1, 1)), now);
    assert_eq!(inj, all_once_except(&g, p(1)));
    assert_eq!(rx, all_once_except(&g, p(1)));
    // Host 4 learned mac(1,1) → host 1; its reply is unicast 4→3→2→1, injected only at 1.
    assert_eq!(net.macs[&p(4)].lookup(mac(1, 1), now), Some(p(1)));
    assert_eq!(
        net.fwd[&p(4)].on_local_frame(&net.macs[&p(4)], &frame(mac(1, 1), mac(4, 1)), now),
        LocalOut::Unicast {
            destination: p(1),
            next_hop: p(3)
        }
    );
    let (inj, rx) = net.send(p(4), &frame(mac(1, 1), mac(4, 1)), now);
    assert_eq!(inj, BTreeMap::from([(p(1), 1)]));
    assert_eq!(rx, BTreeMap::from([(p(3), 1), (p(2), 1), (p(1), 1)]));
    // Relays did not learn the unicast's source; the destination did.
    assert_eq!(net.macs[&p(2)].lookup(mac(4, 1), now), None);
    assert_eq!(net.macs[&p(1)].lookup(mac(4, 1), now), Some(p(4)));
}

#[test]
fn star_and_full_mesh_flood_each_host_once() {
    for g in [
        graph(5, &[(1, 2), (1, 3), (1, 4), (1, 5)]),
        graph(4, &[(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]),
    ] {
        for &src in g.keys() {
            let mut net = Net::new(&g, &BTreeSet::new());
            let (inj, rx) = net.send(src, &frame([0xff; 6], mac(9, 9)), Instant::now());
            assert_eq!(inj, all_once_except(&g, src), "source {src}");
            assert_eq!(rx, all_once_except(&g, src), "source {src}");
        }
    }
}

#[test]
fn fastdp_originators_are_not_injected_but_still_relayed() {
    // Chain 1-2-3 where 1 and 2 are fastdp neighbours: 2 relays 1's broadcast to 3 but does not
    // inject it (VXLAN already delivered it).
    let g = graph(3, &[(1, 2), (2, 3)]);
    let fastdp = BTreeSet::from([(p(1), p(2)), (p(2), p(1))]);
    let mut net = Net::new(&g, &fastdp);
    let now = Instant::now();
    let (inj, rx) = net.send(p(1), &frame([0xff; 6], mac(1, 1)), now);
    assert_eq!(inj, BTreeMap::from([(p(3), 1)]));
    assert_eq!(rx, BTreeMap::from([(p(2), 1), (p(3), 1)]));
    // 2 knows mac(1,1) is at fastdp peer 1: unicast to it is left to the kernel.
    assert_eq!(
        net.fwd[&p(2)].on_local_frame(&net.macs[&p(2)], &frame(mac(1, 1), mac(2, 1)), now),
        LocalOut::Drop(DropReason::FastdpServed)
    );
    // 3 unicasts to 1 through 2, which relays without injecting.
    let (inj, rx) = net.send(p(3), &frame(mac(1, 1), mac(3, 1)), now);
    assert_eq!(inj, BTreeMap::from([(p(1), 1)]));
    assert_eq!(rx, BTreeMap::from([(p(2), 1), (p(1), 1)]));
}

#[test]
fn special_frames_and_ttl() {
    let g = graph(3, &[(1, 2), (2, 3)]);
    let net = Net::new(&g, &BTreeSet::new());
    let f2 = &net.fwd[&p(2)];
    let mut macs = MacTable::new();
    let now = Instant::now();
    assert_eq!(
        f2.on_local_frame(&macs, &[0xff; 13], now),
        LocalOut::Drop(DropReason::Runt)
    );
    assert_eq!(
        f2.on_local_frame(&macs, &frame([0x01, 0x80, 0xc2, 0, 0, 0], mac(2, 1)), now),
        LocalOut::Drop(DropReason::LinkLocal)
    );
    // A fastdp heartbeat (ethertype 0x88b5) never rides the sleeve.
    let mut hb = frame([0xff; 6], mac(2, 1));
    hb[12..14].copy_from_slice(&crate::overlay::HEARTBEAT_ETHERTYPE.to_be_bytes());
    assert_eq!(
        f2.on_local_frame(&macs, &hb, now),
        LocalOut::Drop(DropReason::LinkLocal)
    );
    // Multicast (IPv4 mDNS MAC) floods like broadcast.
    assert_eq!(
        f2.on_local_frame(&macs, &frame([0x01, 0, 0x5e, 0, 0, 0xfb], mac(2, 1)), now),
        LocalOut::Broadcast(&[p(1), p(3)])
    );
    let bc = |ttl| Inner {
        originator: p(1),
        destination: Destination::Broadcast,
        ttl,
    };
    let f = frame([0xff; 6], mac(1, 1));
    let out = f2.on_remote(&mut macs, &bc(2), &f, now);
    assert!(out.inject);
    assert_eq!(out.relay, Relay::Tree(&[p(3)]));
    // ttl 1: delivered here, relayed no further.
    let out = f2.on_remote(&mut macs, &bc(1), &f, now);
    assert!(out.inject);
    assert_eq!(out.relay, Relay::None);
    // Unicast for 3 with ttl 1 is dropped.
    let uni = Inner {
        originator: p(1),
        destination: Destination::Peer(p(3)),
        ttl: 1,
    };
    let out = f2.on_remote(&mut macs, &uni, &f, now);
    assert_eq!(out.dropped, Some(DropReason::Ttl));
    assert!(!out.inject);
    // Unicast towards an unknown host.
    let lost = Inner {
        destination: Destination::Peer(p(77)),
        ttl: 9,
        ..uni
    };
    assert_eq!(
        f2.on_remote(&mut macs, &lost, &f, now).dropped,
        Some(DropReason::NoRoute)
    );
    // Our own frame coming back.
    let looped = Inner {
        originator: p(2),
        ..bc(5)
    };
    assert_eq!(
        f2.on_remote(&mut macs, &looped, &f, now).dropped,
        Some(DropReason::Looped)
    );
}

#[test]
fn mac_learning_moves_and_ages() {
    let mut t = MacTable::new();
    let t0 = Instant::now();
    assert_eq!(t.learn(mac(1, 1), p(1), t0), None);
    assert_eq!(t.learn(mac(1, 1), p(1), t0), None);
    assert_eq!(t.lookup(mac(1, 1), t0), Some(p(1)));
    // The container moved to host 2.
    assert_eq!(t.learn(mac(1, 1), p(2), t0), Some(p(1)));
    assert_eq!(t.lookup(mac(1, 1), t0), Some(p(2)));
    t.learn(mac(3, 1), p(3), t0 + Duration::from_secs(300));
    let late = t0 + MAC_MAX_AGE;
    assert_eq!(t.lookup(mac(1, 1), late), None, "aged out");
    assert_eq!(t.lookup(mac(3, 1), late), Some(p(3)));
    assert_eq!(t.expire(late), 1);
    assert_eq!(t.len(), 1);
    t.forget_peer(p(3));
    assert!(t.is_empty());
    // An unknown unicast (aged MAC) floods.
    let g = graph(2, &[(1, 2)]);
    let f = forwarding(&g, p(1), &BTreeSet::new());
    assert_eq!(
        f.on_local_frame(&t, &frame(mac(2, 1), mac(1, 1)), late),
        LocalOut::Broadcast(&[p(2)])
    );
}

/// xorshift: a seeded, dependency-free generator for the sweep.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn random_topologies_inject_each_broadcast_exactly_once() {
    for case in 0..300u64 {
        let seed0 = 0x9e37_79b9_7f4a_7c15 ^ case;
        let mut seed = seed0;
        let n = 2 + rng(&mut seed) % 7;
        // A random spanning tree (connected), then random extra links.
        let mut edges = Vec::new();
        for i in 2..=n {
            edges.push((i, 1 + rng(&mut seed) % (i - 1)));
        }
        for _ in 0..rng(&mut seed) % (n * 2) {
            let a = 1 + rng(&mut seed) % n;
            let b = 1 + rng(&mut seed) % n;
            if a != b {
                edges.push((a, b));
            }
        }
        let g = graph(n, &edges);
        // Random symmetric fastdp between some direct neighbours.
        let mut fastdp = BTreeSet::new();
        for &(a, b) in &edges {
            if a != b && rng(&mut seed).is_multiple_of(3) {
                fastdp.insert((p(a), p(b)));
                fastdp.insert((p(b), p(a)));
            }
        }
        for src in 1..=n {
            let mut net = Net::new(&g, &fastdp);
            let (inj, rx) = net.send(p(src), &frame([0xff; 6], mac(src, 1)), Instant::now());
            let want_rx = all_once_except(&g, p(src));
            let want_inj: BTreeMap<PeerName, u32> = want_rx
                .keys()
                .filter(|h| !fastdp.contains(&(**h, p(src))))
                .map(|&h| (h, 1))
                .collect();
            assert_eq!(
                rx, want_rx,
                "seed {seed0:#x} n {n} edges {edges:?} src {src}: each host receives once"
            );
            assert_eq!(
                inj, want_inj,
                "seed {seed0:#x} n {n} edges {edges:?} fastdp {fastdp:?} src {src}"
            );
        }
    }
}

/// A frame from a distinct source MAC for each `i`.
fn spoofed_mac(i: u64) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x06, b[3], b[4], b[5], b[6], b[7]]
}

#[test]
fn a_peer_sending_from_random_source_macs_fills_only_its_own_share() {
    let g = graph(3, &[(1, 2), (1, 3)]);
    let f = forwarding(&g, p(1), &BTreeSet::new());
    let mut t = MacTable::new();
    let t0 = Instant::now();
    // Peer 3 is honest: one container.
    let honest = mac(3, 1);
    let from = |host| Inner {
        originator: p(host),
        destination: Destination::Broadcast,
        ttl: INITIAL_TTL,
    };
    f.on_remote(&mut t, &from(3), &frame([0xff; 6], honest), t0);
    // Peer 2 floods broadcasts, each from a fresh source MAC.
    let flood = MAX_MACS_PER_PEER as u64 + 1000;
    for i in 0..flood {
        let out = f.on_remote(&mut t, &from(2), &frame([0xff; 6], spoofed_mac(i)), t0);
        assert!(out.inject, "the frames themselves are still delivered");
    }
    assert_eq!(t.len(), MAX_MACS_PER_PEER + 1, "bounded by peer 2's share");
    assert_eq!(t.refused(), 1000);
    assert_eq!(t.lookup(honest, t0), Some(p(3)), "the honest MAC stays");
    // A MAC past the share is not learned: frames to it flood instead of going to peer 2.
    let past = spoofed_mac(flood - 1);
    assert_eq!(t.lookup(past, t0), None);
    // Peer 3 can still learn new MACs.
    f.on_remote(&mut t, &from(3), &frame([0xff; 6], mac(3, 2)), t0);
    assert_eq!(t.lookup(mac(3, 2), t0), Some(p(3)));
    // Once peer 2's MACs age out its share is free again.
    let late = t0 + MAC_MAX_AGE;
    t.expire(late);
    f.on_remote(&mut t, &from(2), &frame([0xff; 6], past), late);
    assert_eq!(t.lookup(past, late), Some(p(2)));
}

#[test]
fn the_whole_table_is_bounded_across_many_peers() {
    let mut t = MacTable::new();
    let t0 = Instant::now();
    let peers = (MAX_MAC_ENTRIES / MAX_MACS_PER_PEER) as u64 + 2;
    let mut i = 0;
    for host in 1..=peers {
        for _ in 0..MAX_MACS_PER_PEER {
            t.learn(spoofed_mac(i), p(host), t0);
            i += 1;
        }
    }
    assert_eq!(t.len(), MAX_MAC_ENTRIES);
    assert_eq!(t.refused(), 2 * MAX_MACS_PER_PEER as u64);
    // Moving a MAC to a peer at its share unbinds it rather than keeping a stale owner.
    assert_eq!(t.learn(spoofed_mac(0), p(2), t0), Some(p(1)));
    assert_eq!(t.lookup(spoofed_mac(0), t0), None);
    t.forget_peer(p(1));
    assert_eq!(t.len(), MAX_MAC_ENTRIES - MAX_MACS_PER_PEER);
    assert_eq!(t.learn(spoofed_mac(0), p(1), t0), None);
    assert_eq!(t.lookup(spoofed_mac(0), t0), Some(p(1)));
}
