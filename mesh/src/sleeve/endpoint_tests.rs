//! Tests of the sleeve endpoint's policies, driving real endpoints against each other over a
//! virtual network in virtual time (the packets are the bytes the router would send).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use etherparse::{IpNumber, Ipv4Header, Ipv4HeaderSlice};

use super::*;
use crate::sleeve::datapath::{Discard, Output};
use crate::sleeve::forward::{DropReason, INITIAL_TTL, MAC_MAX_AGE, PeerPath};
use crate::sleeve::health::HEARTBEAT_FAST;
use crate::sleeve::rekey::{REKEY_AFTER_PACKETS, REKEY_AFTER_TIME};
use crate::sleeve::wire::{ETH_LEN, INNER_LEN, Kind, OUTER_LEN, Outer};

const MTU: u32 = 1376;
const SCRATCH: usize = 2048;

fn p(v: u64) -> PeerName {
    PeerName::new(v).unwrap()
}

fn ip_of(peer: PeerName) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, peer.as_u64() as u8))
}

fn config(local: PeerName, mtu: u32, encrypt: bool) -> EndpointConfig {
    EndpointConfig {
        local,
        mtu,
        encrypt,
        udp_port: 6783,
        rekey_after: Duration::from_secs(30),
    }
}

/// Deterministic "random" bytes: a counter, so key ids never collide.
fn rng() -> impl FnMut(&mut [u8]) -> Result<(), ()> {
    let mut next = 0u8;
    move |b: &mut [u8]| {
        for x in b {
            next = next.wrapping_add(1);
            *x = next;
        }
        Ok(())
    }
}

/// A frame to `dst` MAC from `src` MAC carrying an IPv4/UDP packet of `ip_len` bytes.
fn ipv4_frame(dst: [u8; 6], src: [u8; 6], ip_len: u16, df: bool) -> Vec<u8> {
    let mut h =
        Ipv4Header::new(ip_len - 20, 64, IpNumber::UDP, [10, 2, 1, 1], [10, 2, 1, 2]).unwrap();
    h.dont_fragment = df;
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    h.write(&mut f).unwrap();
    f.extend((0..usize::from(ip_len) - 20).map(|i| (i * 7) as u8));
    f
}

fn mac(host: u64, n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, host as u8, n]
}

const BCAST: [u8; 6] = [0xff; 6];

/// An output, owned. `Data` is sealed here as the router's send batch would seal it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Tap(Vec<u8>),
    Udp {
        to: PeerName,
        packet: Vec<u8>,
        probe: Option<u16>,
    },
    Data {
        to: PeerName,
        inner: Inner,
        frame: Vec<u8>,
        packet: Vec<u8>,
    },
    Discard(Discard),
}

fn own(o: Output<'_>) -> Out {
    match o {
        Output::Tap(f) => Out::Tap(f.to_vec()),
        Output::Udp { to, packet, probe } => Out::Udp {
            to: to.peer(),
            packet: packet.to_vec(),
            probe,
        },
        Output::Data { to, inner, frame } => {
            let mut packet = vec![0u8; to.packet_len(frame.len())];
            let n = to.seal_data(inner, frame, &mut packet).unwrap();
            assert_eq!(n, packet.len());
            Out::Data {
                to: to.peer(),
                inner: *inner,
                frame: frame.to_vec(),
                packet,
            }
        }
        Output::Discard(d) => Out::Discard(d),
    }
}

fn receive(ep: &Endpoint, packet: &[u8], now: Instant) -> Vec<Out> {
    let mut pkt = packet.to_vec();
    let mut scratch = vec![0u8; SCRATCH];
    let mut outs = Vec::new();
    ep.rx()
        .handle_udp(&mut pkt, &mut scratch, now, &mut |o: Output<'_>| {
            outs.push(own(o))
        });
    outs
}

fn send(ep: &Endpoint, frame: &[u8], now: Instant) -> Result<Vec<Out>, DropReason> {
    let tx = ep.tx();
    let route = tx.route(frame, now)?;
    let mut outs = Vec::new();
    tx.encapsulate(&route, frame, &mut |o: Output<'_>| outs.push(own(o)));
    Ok(outs)
}

fn timeout(ep: &Endpoint, now: Instant) -> (Vec<Out>, Option<Instant>) {
    let mut scratch = vec![0u8; SCRATCH];
    let mut outs = Vec::new();
    let next = ep.handle_timeout(now, &mut scratch, &mut |o: Output<'_>| outs.push(own(o)));
    (outs, next)
}

/// `receiver` makes a key for `sender`, which installs its hello.
fn key(receiver: &Endpoint, sender: &Endpoint, now: Instant) -> Result<NewKey, EncryptionMismatch> {
    let k = receiver
        .new_recv_key(sender.config.local, now, rng())
        .unwrap();
    sender.handle_hello(
        receiver.config.local,
        ip_of(receiver.config.local),
        &k.hello,
        now,
    )?;
    Ok(k)
}

/// A virtual network of endpoints. Links are the pairs keyed with [`Net::link`]; a datagram
/// that is a probe larger than `path_mtu` is lost on the way (a path that drops big packets
/// silently).
struct Net {
    eps: BTreeMap<PeerName, Endpoint>,
    path_mtu: u16,
    taps: BTreeMap<PeerName, Vec<Vec<u8>>>,
    discards: BTreeMap<PeerName, Vec<Discard>>,
    largest_probe: u16,
    now: Instant,
}

impl Net {
    fn new(hosts: &[(u64, u32)], encrypt: bool) -> Net {
        Net {
            eps: hosts
                .iter()
                .map(|&(h, mtu)| (p(h), Endpoint::new(config(p(h), mtu, encrypt))))
                .collect(),
            path_mtu: u16::MAX,
            taps: BTreeMap::new(),
            discards: BTreeMap::new(),
            largest_probe: 0,
            now: Instant::now(),
        }
    }

    fn ep(&self, h: u64) -> &Endpoint {
        &self.eps[&p(h)]
    }

    fn link(&self, a: u64, b: u64) {
        key(self.ep(a), self.ep(b), self.now).unwrap();
        key(self.ep(b), self.ep(a), self.now).unwrap();
    }

    /// Handles what `from` emitted: datagrams are delivered (and what they cause, in turn).
    fn run(&mut self, from: PeerName, outs: Vec<Out>) {
        let mut queue: VecDeque<(PeerName, Out)> = outs.into_iter().map(|o| (from, o)).collect();
        while let Some((at, o)) = queue.pop_front() {
            let (to, packet, probe) = match o {
                Out::Tap(f) => {
                    self.taps.entry(at).or_default().push(f);
                    continue;
                }
                Out::Discard(d) => {
                    self.discards.entry(at).or_default().push(d);
                    continue;
                }
                Out::Udp { to, packet, probe } => (to, packet, probe),
                Out::Data { to, packet, .. } => (to, packet, None),
            };
            if let Some(size) = probe {
                self.largest_probe = self.largest_probe.max(size);
                if size > self.path_mtu {
                    continue;
                }
            }
            let caused = receive(&self.eps[&to], &packet, self.now);
            queue.extend(caused.into_iter().map(|o| (to, o)));
        }
    }

    /// Runs every endpoint's timers in 10 ms steps for `d`.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(10);
            let names: Vec<PeerName> = self.eps.keys().copied().collect();
            for n in names {
                let (outs, _) = timeout(&self.eps[&n], self.now);
                self.run(n, outs);
            }
        }
    }

    fn mtu(&self, at: u64, of: u64) -> Option<u16> {
        self.ep(at).status(self.now).get(&p(of)).and_then(|s| s.mtu)
    }
}

/// Routes of a chain 1 - 2 - ... as host `me` sees them: unicast via the neighbour towards the
/// destination, broadcast trees along the chain.
fn chain_forwarding(me: u64, n: u64) -> Forwarding {
    let mut f = Forwarding {
        local: p(me),
        ..Forwarding::default()
    };
    for other in (1..=n).filter(|&o| o != me) {
        f.peers.insert(p(other), PeerPath::default());
        let via = if other > me { me + 1 } else { me - 1 };
        f.unicast.insert(p(other), p(via));
    }
    for src in 1..=n {
        let mut hops = Vec::new();
        if src <= me && me < n {
            hops.push(p(me + 1));
        }
        if src >= me && me > 1 {
            hops.push(p(me - 1));
        }
        f.broadcast.insert(p(src), hops);
    }
    f
}

fn chain(n: u64, encrypt: bool) -> Net {
    let hosts: Vec<(u64, u32)> = (1..=n).map(|h| (h, MTU)).collect();
    let net = Net::new(&hosts, encrypt);
    for h in 1..n {
        net.link(h, h + 1);
    }
    for h in 1..=n {
        net.ep(h).set_forwarding(chain_forwarding(h, n));
    }
    net
}

fn data(outs: &[Out]) -> Vec<(PeerName, Inner, Vec<u8>)> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Data {
                to, inner, frame, ..
            } => Some((*to, *inner, frame.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_hello_with_the_other_encryption_setting_is_refused_and_installs_nothing() {
    let now = Instant::now();
    for (ours, theirs, words) in [
        (
            true,
            false,
            "does not use sleeve encryption and we require it",
        ),
        (false, true, "requires sleeve encryption and we do not"),
    ] {
        let a = Endpoint::new(config(p(1), MTU, ours));
        let b = Endpoint::new(config(p(2), MTU, theirs));
        let err = key(&b, &a, now).unwrap_err();
        assert_eq!(
            err,
            EncryptionMismatch {
                peer: p(2),
                theirs,
                ours
            }
        );
        let text = err.to_string();
        assert!(text.contains(words), "{text}");
        assert!(
            text.contains("set the same password on both hosts"),
            "{text}"
        );
        assert_eq!(a.status(now).get(&p(2)), None, "no send path");
        assert_eq!(timeout(&a, now).0, vec![], "no heartbeats to it");
    }
}

#[test]
fn a_frame_crosses_sealed_and_arrives_whole_with_and_without_encryption() {
    for encrypt in [false, true] {
        let mut net = chain(2, encrypt);
        let frame = ipv4_frame(BCAST, mac(1, 1), 100, true);
        let outs = send(net.ep(1), &frame, net.now).unwrap();
        let sent = data(&outs);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, p(2));
        let Out::Data { packet, .. } = &outs[0] else {
            panic!("{outs:?}")
        };
        let clear = packet.windows(frame.len()).any(|w| w == frame.as_slice());
        assert_eq!(
            clear, !encrypt,
            "the frame is visible on the wire iff not encrypted"
        );
        assert_eq!(
            packet.len(),
            OUTER_LEN + INNER_LEN + frame.len() + usize::from(encrypt) * 16
        );
        net.run(p(1), outs);
        assert_eq!(net.taps[&p(2)], vec![frame]);
        assert_eq!(net.ep(2).status(net.now)[&p(1)].rx_packets, 1);
    }
}

#[test]
fn frames_start_with_the_initial_ttl_and_each_relay_takes_one() {
    let mut net = chain(3, false);
    let frame = ipv4_frame(BCAST, mac(1, 1), 100, true);
    let outs = send(net.ep(1), &frame, net.now).unwrap();
    let sent = data(&outs);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.ttl, INITIAL_TTL);
    assert_eq!(sent[0].1.originator, p(1));
    assert_eq!(sent[0].1.destination, Destination::Broadcast);
    let Out::Data { packet, .. } = &outs[0] else {
        panic!()
    };
    // Host 2 delivers it and relays it to 3 with one less ttl, originator kept.
    let at2 = receive(net.ep(2), packet, net.now);
    assert!(at2.contains(&Out::Tap(frame.clone())), "{at2:?}");
    let relayed: Vec<&Vec<u8>> = at2
        .iter()
        .filter_map(|o| match o {
            Out::Udp { to, packet, .. } if *to == p(3) => Some(packet),
            _ => None,
        })
        .collect();
    assert_eq!(relayed.len(), 1, "{at2:?}");
    let inner = Inner::parse(&relayed[0][OUTER_LEN..]).unwrap();
    assert_eq!(inner.ttl, INITIAL_TTL - 1);
    assert_eq!(inner.originator, p(1));
    net.run(p(2), at2);
    assert_eq!(net.taps[&p(3)], vec![frame.clone()]);

    // A frame arriving with its last hop of ttl is delivered but goes no further.
    let outs = send(net.ep(1), &frame, net.now).unwrap();
    let Some(Out::Data { packet, .. }) = outs.into_iter().next() else {
        panic!()
    };
    let mut last = packet.clone();
    last[OUTER_LEN + INNER_LEN - 1] = 1;
    let at2 = receive(net.ep(2), &last, net.now);
    assert_eq!(at2, vec![Out::Tap(frame)]);
}

#[test]
fn control_packets_only_count_from_a_direct_neighbour() {
    let net = chain(3, false);
    let (outs, _) = timeout(net.ep(1), net.now);
    let beat = outs
        .iter()
        .find_map(|o| match o {
            Out::Udp { to, packet, .. } if *to == p(2) => Some(packet.clone()),
            _ => None,
        })
        .expect("a heartbeat to 2");
    assert_eq!(Outer::parse(&beat).unwrap().kind, Kind::Heartbeat);
    let inner = Inner::parse(&beat[OUTER_LEN..]).unwrap();
    assert_eq!(inner.ttl, 1, "control is never relayed");

    // Claiming to come from host 3 (two hops away) through 1's key: dropped, not answered.
    let mut forged = beat.clone();
    forged[OUTER_LEN..OUTER_LEN + 6].copy_from_slice(&p(3).to_bytes());
    forged[5..13].copy_from_slice(&1000u64.to_be_bytes());
    assert_eq!(
        receive(net.ep(2), &forged, net.now),
        vec![Out::Discard(Discard::Malformed)]
    );
    // The real one is answered to 1.
    let answer = receive(net.ep(2), &beat, net.now);
    assert!(
        matches!(&answer[..], [Out::Udp { to, packet, probe: None }]
            if *to == p(1) && Outer::parse(packet).unwrap().kind == Kind::HeartbeatAck),
        "{answer:?}"
    );
}

#[test]
fn the_path_mtu_search_is_bounded_by_the_smaller_overlay_mtu() {
    let mut net = Net::new(&[(1, MTU), (2, 1000)], true);
    net.link(1, 2);
    assert_eq!(net.mtu(1, 2), None, "unknown until probed");
    net.advance(Duration::from_secs(3));
    assert_eq!(net.mtu(1, 2), Some(1000));
    assert_eq!(net.mtu(2, 1), Some(1000));
    assert_eq!(
        net.largest_probe, 1000,
        "never probes above the smaller MTU"
    );
    assert!(net.ep(1).status(net.now)[&p(2)].healthy);
}

#[test]
fn a_narrow_path_is_found_and_big_frames_meet_icmp_fragments_and_a_tso_cut() {
    let mut net = chain(2, true);
    net.path_mtu = 1200;
    net.advance(Duration::from_secs(10));
    assert_eq!(net.mtu(1, 2), Some(1200));
    let tx = net.ep(1).tx();
    let frame = ipv4_frame(BCAST, mac(1, 1), 1376, true);
    let route = tx.route(&frame, net.now).unwrap();
    assert_eq!(
        tx.path_mtu(&route),
        Some(1200),
        "TSO segments are cut to the path"
    );
    drop(tx);

    // DF: answered on the TAP with frag-needed carrying the path MTU, nothing sent.
    let outs = send(net.ep(1), &frame, net.now).unwrap();
    assert_eq!(data(&outs), vec![]);
    let answer = outs
        .iter()
        .find_map(|o| match o {
            Out::Tap(f) => Some(f.clone()),
            _ => None,
        })
        .expect("an ICMP answer");
    assert!(outs.contains(&Out::Discard(Discard::TooBig)));
    assert_eq!((answer[34], answer[35]), (3, 4), "ICMP frag-needed");
    assert_eq!(u16::from_be_bytes([answer[40], answer[41]]), 1200);

    // No DF: fragments that fit the path, all to the neighbour.
    let frame = ipv4_frame(BCAST, mac(1, 1), 1376, false);
    let outs = send(net.ep(1), &frame, net.now).unwrap();
    let frags = data(&outs);
    assert_eq!(frags.len(), 2, "{outs:?}");
    for (to, inner, f) in &frags {
        assert_eq!(*to, p(2));
        assert_eq!(inner.ttl, INITIAL_TTL);
        let ip = Ipv4HeaderSlice::from_slice(&f[ETH_LEN..]).unwrap();
        assert!(ip.total_len() <= 1200);
    }

    // A frame that fits goes as it is.
    let small = ipv4_frame(BCAST, mac(1, 1), 1200, true);
    let outs = send(net.ep(1), &small, net.now).unwrap();
    assert_eq!(data(&outs).len(), 1);
    assert_eq!(data(&outs)[0].2, small);
}

#[test]
fn before_a_path_mtu_is_known_frames_go_whole_and_tso_is_not_cut() {
    let net = chain(2, false);
    let frame = ipv4_frame(BCAST, mac(1, 1), 1376, true);
    let tx = net.ep(1).tx();
    let route = tx.route(&frame, net.now).unwrap();
    assert_eq!(tx.path_mtu(&route), None);
    drop(tx);
    assert_eq!(data(&send(net.ep(1), &frame, net.now).unwrap()).len(), 1);
}

#[test]
fn receive_keys_rotate_and_the_newest_two_per_peer_stay_valid() {
    let net = Net::new(&[(1, MTU), (2, MTU)], true);
    let (a, b) = (net.ep(1), net.ep(2));
    key(a, b, net.now).unwrap();
    net.ep(2).set_forwarding(chain_forwarding(2, 2));
    let frame = ipv4_frame(BCAST, mac(2, 1), 100, true);
    let mut packets = Vec::new();
    let mut replaced = Vec::new();
    for _ in 0..3 {
        let k = key(a, b, net.now).unwrap();
        replaced.push(k.replaced);
        let outs = send(b, &frame, net.now).unwrap();
        let Some(Out::Data { packet, .. }) = outs.into_iter().next() else {
            panic!()
        };
        packets.push(packet);
    }
    assert_eq!(
        replaced,
        vec![true, true, true],
        "the first key came before the loop"
    );
    // Four keys were made; the last two are valid.
    assert_eq!(
        receive(a, &packets[2], net.now),
        vec![Out::Tap(frame.clone())]
    );
    assert_eq!(
        receive(a, &packets[1], net.now),
        vec![Out::Tap(frame.clone())]
    );
    assert_eq!(
        receive(a, &packets[0], net.now),
        vec![Out::Discard(Discard::UnknownKey)]
    );
    assert_eq!(KEYS_PER_PEER, 2);
}

#[test]
fn the_first_key_of_a_peer_replaces_nothing() {
    let net = Net::new(&[(1, MTU), (2, MTU)], false);
    assert!(!key(net.ep(1), net.ep(2), net.now).unwrap().replaced);
    assert!(key(net.ep(1), net.ep(2), net.now).unwrap().replaced);
}

#[test]
fn a_rekey_hello_keeps_health_and_path_mtu_but_a_new_address_starts_over() {
    let mut net = chain(2, true);
    net.advance(Duration::from_secs(3));
    assert_eq!(net.mtu(1, 2), Some(MTU as u16));
    let before = net.ep(1).status(net.now)[&p(2)].clone();
    let k = net.ep(2).new_recv_key(p(1), net.now, rng()).unwrap();
    let outcome = net
        .ep(1)
        .handle_hello(p(2), ip_of(p(2)), &k.hello, net.now)
        .unwrap();
    assert_eq!(outcome, HelloOutcome::Rekeyed);
    let after = net.ep(1).status(net.now)[&p(2)].clone();
    assert_eq!(after.mtu, before.mtu);
    assert_eq!(after.tx_packets, before.tx_packets, "counters carry over");
    assert!(after.healthy);

    let moved = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
    let outcome = net
        .ep(1)
        .handle_hello(p(2), moved, &k.hello, net.now)
        .unwrap();
    assert_eq!(outcome, HelloOutcome::Up);
    let s = &net.ep(1).status(net.now)[&p(2)];
    assert_eq!(s.mtu, None, "probing starts again");
    assert_eq!(s.udp, Some(SocketAddr::new(moved, 6783)));
}

#[test]
fn bad_datagrams_are_discarded_by_reason_and_counted_per_peer() {
    let net = chain(2, true);
    let frame = ipv4_frame(BCAST, mac(1, 1), 100, true);
    let Some(Out::Data { packet, .. }) = send(net.ep(1), &frame, net.now).unwrap().pop() else {
        panic!()
    };
    let b = net.ep(2);
    assert_eq!(receive(b, &packet, net.now), vec![Out::Tap(frame)]);
    assert_eq!(
        receive(b, &packet, net.now),
        vec![Out::Discard(Discard::Replay)]
    );
    let mut tampered = packet.clone();
    tampered[5..13].copy_from_slice(&99u64.to_be_bytes());
    assert_eq!(
        receive(b, &tampered, net.now),
        vec![Out::Discard(Discard::Auth)]
    );
    let mut unknown = packet.clone();
    unknown[1..5].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(
        receive(b, &unknown, net.now),
        vec![Out::Discard(Discard::UnknownKey)]
    );
    assert_eq!(
        receive(b, &packet[..5], net.now),
        vec![Out::Discard(Discard::Malformed)]
    );
    let s = &b.status(net.now)[&p(1)];
    assert_eq!(
        (s.rx_packets, s.drops),
        (1, 2),
        "replay and bad tag count against 1"
    );
}

#[test]
fn a_frame_for_a_neighbour_without_a_send_path_is_discarded() {
    let net = Net::new(&[(1, MTU), (2, MTU)], false);
    net.ep(1).set_forwarding(chain_forwarding(1, 2));
    let frame = ipv4_frame(BCAST, mac(1, 1), 100, true);
    assert_eq!(
        send(net.ep(1), &frame, net.now).unwrap(),
        vec![Out::Discard(Discard::NoPath)]
    );
    let link_local = ipv4_frame([0x01, 0x80, 0xc2, 0, 0, 0], mac(1, 1), 100, true);
    assert_eq!(
        send(net.ep(1), &link_local, net.now),
        Err(DropReason::LinkLocal)
    );
}

#[test]
fn keys_are_due_after_the_interval_or_the_packet_limit_and_a_new_key_resets_the_timer() {
    let net = chain(2, false);
    let a = net.ep(1);
    let t0 = net.now;
    assert_eq!(a.keys_due(t0), vec![]);
    let interval = config(p(1), MTU, false).rekey_after;
    assert_eq!(a.rotation_deadline(), Some(t0 + interval));
    assert_eq!(a.keys_due(t0 + interval), vec![p(2)]);
    key(a, net.ep(2), t0 + interval).unwrap();
    assert_eq!(a.keys_due(t0 + interval), vec![]);
    assert_eq!(a.rotation_deadline(), Some(t0 + interval * 2));
    assert_eq!(a.keys_due(t0 + interval * 2), vec![p(2)]);
    // The packet limit, counted under the newest key.
    for k in lock(&a.keys).by_id.values_mut() {
        k.rx_packets = REKEY_AFTER_PACKETS;
    }
    assert_eq!(a.keys_due(t0 + interval), vec![p(2)]);

    let long = Endpoint::new(EndpointConfig {
        rekey_after: Duration::from_secs(3600),
        ..config(p(3), MTU, false)
    });
    key(&long, a, t0).unwrap();
    assert_eq!(long.keys_due(t0 + REKEY_AFTER_TIME), vec![p(1)], "capped");
}

#[test]
fn forgetting_a_peer_drops_its_keys_macs_rotation_and_heartbeats() {
    let net = chain(2, false);
    let frame = ipv4_frame(BCAST, mac(1, 7), 100, true);
    let Some(Out::Data { packet, .. }) = send(net.ep(1), &frame, net.now).unwrap().pop() else {
        panic!()
    };
    assert_eq!(receive(net.ep(2), &packet, net.now).len(), 1);
    assert_eq!(lock(&net.ep(2).macs).len(), 1, "learned 1's MAC");
    net.ep(2).forget_peer(p(1));
    assert_eq!(lock(&net.ep(2).macs).len(), 0);
    assert_eq!(
        receive(net.ep(2), &packet, net.now),
        vec![Out::Discard(Discard::UnknownKey)]
    );
    assert_eq!(net.ep(2).keys_due(net.now + REKEY_AFTER_TIME), vec![]);
    assert_eq!(net.ep(2).rotation_deadline(), None);
    assert_eq!(net.ep(2).status(net.now).get(&p(1)), None);
    let (outs, _) = timeout(net.ep(2), net.now + HEARTBEAT_FAST);
    assert_eq!(outs, vec![], "no heartbeats to 1 any more");
}

#[test]
fn learned_macs_are_swept_at_most_once_per_mac_sweep() {
    let net = chain(2, false);
    let frame = ipv4_frame(BCAST, mac(1, 7), 100, true);
    let Some(Out::Data { packet, .. }) = send(net.ep(1), &frame, net.now).unwrap().pop() else {
        panic!()
    };
    let b = net.ep(2);
    let t0 = net.now;
    timeout(b, t0);
    receive(b, &packet, t0);
    assert_eq!(lock(&b.macs).len(), 1);
    assert!(MAC_SWEEP < MAC_MAX_AGE);
    let just_before = t0 + MAC_MAX_AGE - Duration::from_secs(1);
    timeout(b, just_before);
    assert_eq!(lock(&b.macs).len(), 1, "swept, not aged yet");
    timeout(b, t0 + MAC_MAX_AGE);
    assert_eq!(
        lock(&b.macs).len(),
        1,
        "aged, but the last sweep was 1 s ago"
    );
    timeout(b, just_before + MAC_SWEEP - Duration::from_millis(1));
    assert_eq!(
        lock(&b.macs).len(),
        1,
        "still within MAC_SWEEP of the last sweep"
    );
    timeout(b, just_before + MAC_SWEEP);
    assert_eq!(lock(&b.macs).len(), 0, "swept");
}

#[test]
fn timers_return_the_next_deadline_and_heartbeats_are_fast_until_answered() {
    let net = chain(2, false);
    let (outs, next) = timeout(net.ep(1), net.now);
    assert_eq!(outs.len(), 1, "one heartbeat: {outs:?}");
    assert_eq!(next, Some(net.now + HEARTBEAT_FAST));
}
