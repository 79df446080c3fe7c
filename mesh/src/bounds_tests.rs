//! Tests of the topology bounds: what one hostile or buggy neighbour can make this peer do.
//! Each scenario is the attack itself; each must be refused with bounded work and must not
//! reach the rest of the mesh.

use std::time::Instant;

use crate::ids::{ConnId, PeerName, PeerUid, ShortId};
use crate::keys::PublicKey;
use crate::mesh::{
    Action, CloseReason, Config, ConnInfo, Event, MAX_BROADCAST_ROUTES, MAX_PEERS,
    MAX_SURROGATE_SEEN, MAX_TOPOLOGY_ENTRIES, Mesh, NoChannels, SURROGATE_TTL,
};
use crate::wire::{ConnSummary, GossipMsg, Hello, Message, PeerRecord, TopologyMsg};

fn name(v: u64) -> PeerName {
    PeerName::new(v).unwrap()
}

fn key(n: u64) -> PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    PublicKey(k)
}

fn hello(n: u64) -> Hello {
    Hello {
        name: name(n),
        name_derived: false,
        nickname: format!("p{n}"),
        uid: PeerUid(n * 11),
        conn_half: n,
        short_id: ShortId::new(n as u16).unwrap(),
        listen_port: 6783,
        trusted: false,
    }
}

fn info(n: u64) -> ConnInfo {
    ConnInfo {
        outbound: false,
        remote_addr: format!("192.0.2.{n}:6783").parse().unwrap(),
        target: None,
        local_conn_half: 1000 + n,
        remote_key: key(n),
    }
}

fn summary() -> ConnSummary {
    ConnSummary {
        remote_addr: String::new(),
        outbound: true,
        established: true,
    }
}

fn record(n: u64, conns: Vec<u64>) -> PeerRecord {
    PeerRecord {
        name: name(n),
        key: key(n),
        nickname: String::new(),
        uid: PeerUid(n * 11),
        version: 5,
        short_id: ShortId::default(),
        listen_port: 6783,
        conns: conns.into_iter().map(|c| (name(c), summary())).collect(),
    }
}

fn topo_from(src: u64, msg: &TopologyMsg) -> Vec<u8> {
    Message::Gossip(GossipMsg {
        channel: "topology".into(),
        src: name(src),
        payload: msg.encode(),
    })
    .encode()
}

/// Peer 1 with neighbours 2 (on conn 2) and 3 (on conn 3), every output drained.
fn peer_with_two_neighbours(now: Instant) -> Mesh {
    let mut m = Mesh::new(
        Config {
            name: name(1),
            key: key(1),
            nickname: "one".into(),
            uid: PeerUid(11),
            short_id: ShortId::new(1).unwrap(),
            port: 6783,
            conn_limit: 0,
            discovery: false,
            seed: 1,
        },
        now,
    );
    for n in [2, 3] {
        m.handle_connection(ConnId(n), info(n), hello(n), now)
            .unwrap();
    }
    drain(&mut m);
    m
}

fn drain(m: &mut Mesh) -> (Vec<Action>, Vec<crate::Transmit>, Vec<Event>) {
    (
        std::iter::from_fn(|| m.poll_action()).collect(),
        std::iter::from_fn(|| m.poll_transmit()).collect(),
        std::iter::from_fn(|| m.poll_event()).collect(),
    )
}

fn closed_for_limit(actions: &[Action], conn: ConnId) -> bool {
    actions.iter().any(|a| {
        matches!(a, Action::Close { conn: c, reason: CloseReason::LimitExceeded { .. } } if *c == conn)
    })
}

fn topology_payloads(transmits: &[crate::Transmit], conn: ConnId) -> Vec<TopologyMsg> {
    transmits
        .iter()
        .filter(|t| t.conn == conn)
        .filter_map(|t| match Message::decode(&t.bytes) {
            Ok(Message::Gossip(g)) if g.channel == "topology" => {
                TopologyMsg::decode(&g.payload).ok()
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_record_naming_300k_fake_peers_is_refused_before_it_is_merged_or_relayed() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let known = m.topo.peers().len();
    let fake = TopologyMsg::Full(vec![record(2, (1_000..301_000).collect())]);
    let bytes = topo_from(2, &fake);
    assert!(
        bytes.len() < crate::wire::MAX_MESSAGE_LEN,
        "a valid-sized message"
    );
    m.handle_message(ConnId(2), &bytes, t0, &mut NoChannels);
    let (actions, transmits, events) = drain(&mut m);
    assert!(closed_for_limit(&actions, ConnId(2)), "{actions:?}");
    assert_eq!(m.topo.peers().len(), known, "nothing merged");
    assert!(
        transmits.iter().all(|t| t.conn != ConnId(3)),
        "nothing relayed to the other neighbour"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::PeerAdded(_))));
}

#[test]
fn a_message_with_more_entries_than_the_limit_is_refused_whole() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let known = m.topo.peers().len();
    let records = (10..10 + MAX_TOPOLOGY_ENTRIES as u64 + 1)
        .map(|n| record(n, vec![]))
        .collect();
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Full(records)),
        t0,
        &mut NoChannels,
    );
    let (actions, transmits, _) = drain(&mut m);
    assert!(closed_for_limit(&actions, ConnId(2)), "{actions:?}");
    assert_eq!(m.topo.peers().len(), known);
    assert!(transmits.iter().all(|t| t.conn != ConnId(3)));
}

#[test]
fn peers_known_are_capped_across_messages() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let mut next = 10;
    // Fill up to the cap in messages that are each within the per-message limit.
    while m.topo.peers().len() < MAX_PEERS {
        let room = (MAX_PEERS - m.topo.peers().len()).min(MAX_TOPOLOGY_ENTRIES);
        let records = (next..next + room as u64)
            .map(|n| record(n, vec![]))
            .collect();
        next += room as u64;
        m.handle_message(
            ConnId(2),
            &topo_from(2, &TopologyMsg::Full(records)),
            t0,
            &mut NoChannels,
        );
        let (actions, _, _) = drain(&mut m);
        assert!(actions.is_empty(), "within the cap: {actions:?}");
    }
    // One more peer, from the other neighbour: refused whole, that connection closed.
    let one_more = TopologyMsg::Full(vec![record(next, vec![])]);
    m.handle_message(ConnId(3), &topo_from(3, &one_more), t0, &mut NoChannels);
    let (actions, _, _) = drain(&mut m);
    assert!(closed_for_limit(&actions, ConnId(3)), "{actions:?}");
    assert_eq!(m.topo.peers().len(), MAX_PEERS);
    assert!(m.topo.peer(name(next)).is_none());
}

#[test]
fn a_request_naming_one_peer_many_times_is_answered_once() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let req = TopologyMsg::Request(vec![name(1); MAX_TOPOLOGY_ENTRIES]);
    m.handle_message(ConnId(2), &topo_from(2, &req), t0, &mut NoChannels);
    let (actions, transmits, _) = drain(&mut m);
    assert!(actions.is_empty(), "{actions:?}");
    let answers = topology_payloads(&transmits, ConnId(2));
    let records: usize = answers
        .iter()
        .map(|a| match a {
            TopologyMsg::Full(r) => r.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(records, 1, "one record per distinct peer: {answers:?}");
}

#[test]
fn a_request_naming_one_peer_a_million_times_is_refused_unanswered() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let req = TopologyMsg::Request(vec![name(1); 1_000_000]);
    m.handle_message(ConnId(2), &topo_from(2, &req), t0, &mut NoChannels);
    let (actions, transmits, _) = drain(&mut m);
    assert!(closed_for_limit(&actions, ConnId(2)), "{actions:?}");
    assert!(topology_payloads(&transmits, ConnId(2)).is_empty());
}

#[test]
fn an_answer_larger_than_one_message_is_split() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    // 420 dense records, each naming the same 3,500 peers: about 9 MB in all, more than one
    // message may carry.
    let shared: Vec<u64> = (100_000..103_500).collect();
    let names: Vec<u64> = (10..430).collect();
    for batch in names.chunks(100) {
        let records = batch.iter().map(|n| record(*n, shared.clone())).collect();
        m.handle_message(
            ConnId(2),
            &topo_from(2, &TopologyMsg::Full(records)),
            t0,
            &mut NoChannels,
        );
        let (actions, _, _) = drain(&mut m);
        assert!(actions.is_empty(), "{actions:?}");
    }
    let req = TopologyMsg::Request(names.iter().map(|n| name(*n)).collect());
    m.handle_message(ConnId(3), &topo_from(3, &req), t0, &mut NoChannels);
    let (_, transmits, _) = drain(&mut m);
    let answers: Vec<_> = transmits.iter().filter(|t| t.conn == ConnId(3)).collect();
    assert!(answers.len() > 1, "split into several messages");
    let mut got = 0;
    for a in answers {
        assert!(a.bytes.len() <= crate::gossip::MAX_TOPOLOGY_CHUNK_BYTES + 64 * 1024);
        if let Ok(Message::Gossip(g)) = Message::decode(&a.bytes)
            && let Ok(TopologyMsg::Full(r)) = TopologyMsg::decode(&g.payload)
        {
            got += r.len();
        }
    }
    assert_eq!(got, names.len(), "every record once");
}

/// `n` peers 10.. in a ring with chords (each linked to the next and the 7th next), every
/// link reported by both ends and established, the first also linked to us (peer 1) and to
/// neighbour 2.
fn ring_records(n: u64) -> Vec<PeerRecord> {
    let first = 10;
    let last = first + n - 1;
    let wrap = |v: u64| first + (v - first) % n;
    (first..=last)
        .map(|p| {
            let mut links: std::collections::BTreeSet<u64> =
                [wrap(p + 1), wrap(p + 7), wrap(p + n - 1), wrap(p + n - 7)].into();
            if p == first {
                links.insert(2);
            }
            record(p, links.into_iter().collect())
        })
        .collect()
}

#[test]
fn status_does_its_route_searches_once_per_topology_version() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    // Neighbour 2 reports the link to the ring, then the whole ring arrives at once.
    let mut two = record(2, vec![1, 10]);
    two.version = 9;
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Full(vec![two])),
        t0,
        &mut NoChannels,
    );
    drain(&mut m);
    let ring = TopologyMsg::Full(ring_records(300));
    m.handle_message(ConnId(2), &topo_from(2, &ring), t0, &mut NoChannels);
    let (_, _, events) = drain(&mut m);
    let added = events
        .iter()
        .filter(|e| matches!(e, Event::PeerAdded(_)))
        .count();
    assert_eq!(added, 299, "peer 10 was known from 2's record");
    // The router asks for a status on every PeerAdded (three times: IPAM, DNS, datapath).
    let before = m.route_searches();
    let mut last = None;
    for _ in 0..added * 3 {
        last = Some(m.status(t0));
    }
    let spent = m.route_searches() - before;
    let peers = m.topo.peers().len() as u64;
    assert!(spent <= peers + 1, "{spent} searches for {peers} peers");
    let st = last.unwrap();
    // 3 has not reported its side of our link yet, so data routes go to 2 and the ring.
    assert_eq!(st.unicast_routes.len(), 301);
    // Nothing changes: no search at all.
    let before = m.route_searches();
    m.handle_message(ConnId(3), &Message::Heartbeat.encode(), t0, &mut NoChannels);
    assert_eq!(m.status(t0), st);
    assert_eq!(m.route_searches(), before);
    // A change is seen at once.
    m.handle_closed(ConnId(2), "test", t0);
    assert!(m.status(t0).unicast_routes.is_empty());
}

/// The routes a fresh search finds, as a status shows them.
fn fresh_routes(m: &Mesh) -> Vec<crate::RouteStatus> {
    crate::routes::unicast(&m.topo, m.name(), true)
        .into_iter()
        .map(|(dest, via)| crate::RouteStatus { dest, via })
        .collect()
}

#[test]
fn cached_status_routes_follow_every_kind_of_change() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let check = |m: &mut Mesh, step: &str| {
        drain(m);
        assert_eq!(m.status(t0).unicast_routes, fresh_routes(m), "after {step}");
    };
    check(&mut m, "connect");
    let mut two = record(2, vec![1, 10]);
    two.version = 9;
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Full(vec![two])),
        t0,
        &mut NoChannels,
    );
    check(&mut m, "a full record");
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Full(ring_records(20))),
        t0,
        &mut NoChannels,
    );
    check(&mut m, "the ring");
    let delta = crate::wire::PeerDelta {
        name: name(10),
        uid: PeerUid(110),
        from_version: 5,
        to_version: 6,
        nickname: String::new(),
        short_id: ShortId::default(),
        listen_port: 6783,
        upserts: vec![],
        removed: vec![name(2)],
    };
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Delta(vec![delta])),
        t0,
        &mut NoChannels,
    );
    check(&mut m, "a delta cutting the ring off");
    m.handle_closed(ConnId(2), "test", t0);
    check(&mut m, "our connection closed");
    m.handle_timeout(t0 + crate::mesh::GC_DELAY, &mut NoChannels);
    check(&mut m, "garbage collection");
    m.handle_connection(ConnId(4), info(4), hello(4), t0)
        .unwrap();
    check(&mut m, "a new connection");
}

/// Records what reaches the application's `ipam` channel.
#[derive(Default)]
struct Recorder {
    unicasts: Vec<PeerName>,
    broadcasts: Vec<PeerName>,
}

impl crate::Channels for Recorder {
    fn names(&self) -> Vec<String> {
        vec!["ipam".into()]
    }
    fn full_state(&mut self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn on_gossip(&mut self, _: &str, _: PeerName, _: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn on_broadcast(&mut self, _: &str, src: PeerName, _: &[u8]) -> Result<(), String> {
        self.broadcasts.push(src);
        Ok(())
    }
    fn on_unicast(&mut self, _: &str, src: PeerName, _: &[u8]) -> Result<(), String> {
        self.unicasts.push(src);
        Ok(())
    }
}

#[test]
fn relayed_messages_cannot_claim_to_come_from_a_neighbour_or_a_phantom() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    // Peer 4 is known: neighbour 3 reports a link to it.
    let mut three = record(3, vec![1, 4]);
    three.version = 9;
    m.handle_message(
        ConnId(3),
        &topo_from(3, &TopologyMsg::Full(vec![three])),
        t0,
        &mut NoChannels,
    );
    m.handle_message(
        ConnId(3),
        &topo_from(3, &TopologyMsg::Full(vec![record(4, vec![3])])),
        t0,
        &mut NoChannels,
    );
    drain(&mut m);
    let unicast = |src: u64| {
        Message::GossipUnicast(crate::GossipUnicastMsg {
            channel: "ipam".into(),
            src: name(src),
            dst: name(1),
            payload: vec![1],
        })
        .encode()
    };
    let broadcast = |src: u64| {
        Message::GossipBroadcast(GossipMsg {
            channel: "ipam".into(),
            src: name(src),
            payload: vec![1],
        })
        .encode()
    };
    let mut rec = Recorder::default();
    // Neighbour 3 forges a release "from" neighbour 2, and one from a phantom.
    for forged in [2, 99] {
        m.handle_message(ConnId(3), &unicast(forged), t0, &mut rec);
        m.handle_message(ConnId(3), &broadcast(forged), t0, &mut rec);
    }
    assert!(rec.unicasts.is_empty() && rec.broadcasts.is_empty());
    // What 3 sends as itself, and relays for 4 (not our neighbour), is delivered.
    for src in [3, 4] {
        m.handle_message(ConnId(3), &unicast(src), t0, &mut rec);
        m.handle_message(ConnId(3), &broadcast(src), t0, &mut rec);
    }
    assert_eq!(rec.unicasts, vec![name(3), name(4)]);
    assert_eq!(rec.broadcasts, vec![name(3), name(4)]);
    assert_eq!(m.forged_dropped(), 4);
}

#[test]
fn nicknames_from_the_wire_are_shown_escaped() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let evil = "ok\u{1b}[2J\u{7}\r\nroot\u{202e}txt.exe\\";
    let shown = "ok\\u{1b}[2J\\u{7}\\u{d}\\u{a}root\\u{202e}txt.exe\\\\";
    let mut h = hello(4);
    h.nickname = evil.into();
    m.handle_connection(ConnId(4), info(4), h, t0).unwrap();
    let mut r = record(5, vec![4]);
    r.nickname = evil.into();
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Full(vec![r])),
        t0,
        &mut NoChannels,
    );
    let st = m.status(t0);
    let peer = |n: u64| st.peers.iter().find(|p| p.name == name(n)).unwrap();
    assert_eq!(peer(4).nickname, shown, "from the handshake");
    assert_eq!(peer(5).nickname, shown, "from gossip");
    assert_eq!(peer(5).connections[0].nickname, shown);
    let conn = st
        .connections
        .iter()
        .find(|c| c.conn == Some(ConnId(4)))
        .unwrap();
    assert_eq!(conn.peer.as_ref().unwrap().1, shown);
    let json = serde_json::to_string(&st).unwrap();
    assert!(!json.contains('\u{1b}') && !json.contains('\u{202e}'));
    // Ordinary names, accents and all, are untouched.
    assert_eq!(
        crate::status::display_nickname("hôte-1.example"),
        "hôte-1.example"
    );
}

fn unknown_channel(src: u64, i: u64) -> Vec<u8> {
    Message::Gossip(GossipMsg {
        channel: "not-a-channel-we-run".into(),
        src: name(src),
        payload: i.to_le_bytes().to_vec(),
    })
    .encode()
}

#[test]
fn a_flood_of_unknown_channel_gossip_is_remembered_and_relayed_only_up_to_the_limit() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let flood = MAX_SURROGATE_SEEN as u64 + 500;
    let mut relayed = 0;
    for i in 0..flood {
        m.handle_message(ConnId(2), &unknown_channel(2, i), t0, &mut NoChannels);
        let (_, transmits, _) = drain(&mut m);
        relayed += transmits.iter().filter(|t| t.conn == ConnId(3)).count();
    }
    assert!(m.surrogate_seen.len() <= MAX_SURROGATE_SEEN);
    assert!(relayed <= MAX_SURROGATE_SEEN, "relayed {relayed}");
    assert!(
        relayed > 0,
        "unknown channels are still relayed below the limit"
    );
    assert_eq!(m.surrogate_dropped(), 500);
    // Once the remembered ones expire, unknown channels are relayed again.
    let later = t0 + SURROGATE_TTL + std::time::Duration::from_secs(1);
    m.handle_timeout(later, &mut NoChannels);
    drain(&mut m);
    m.handle_message(
        ConnId(2),
        &unknown_channel(2, flood),
        later,
        &mut NoChannels,
    );
    assert_eq!(m.surrogate_dropped(), 500);
    assert_eq!(m.surrogate_seen.len(), 1);
}

#[test]
fn broadcasts_from_many_claimed_sources_cache_routes_for_known_peers_only() {
    let t0 = Instant::now();
    let mut m = peer_with_two_neighbours(t0);
    let broadcast = |src: u64| {
        Message::GossipBroadcast(GossipMsg {
            channel: "ipam".into(),
            src: name(src),
            payload: vec![1],
        })
        .encode()
    };
    for src in 10..10 + 2 * MAX_BROADCAST_ROUTES as u64 {
        m.handle_message(ConnId(2), &broadcast(src), t0, &mut NoChannels);
    }
    drain(&mut m);
    assert!(m.broadcast_all.is_empty(), "phantom sources cached");
    m.handle_message(ConnId(2), &broadcast(2), t0, &mut NoChannels);
    assert!(m.broadcast_all.len() <= m.topo.peers().len());
    assert!(m.broadcast_all.len() <= MAX_BROADCAST_ROUTES);
}

/// A record of `n` reporting outbound connections to each `(peer, address)`.
fn record_dialled(n: u64, conns: &[(u64, String)]) -> PeerRecord {
    let mut r = record(n, vec![]);
    r.conns = conns
        .iter()
        .map(|(c, addr)| {
            let s = ConnSummary {
                remote_addr: addr.clone(),
                outbound: true,
                established: true,
            };
            (name(*c), s)
        })
        .collect();
    r
}

/// Peer 1 with discovery on and neighbours 2 and 3.
fn discovering_peer(now: Instant) -> Mesh {
    let mut m = Mesh::new(
        Config {
            name: name(1),
            key: key(1),
            nickname: "one".into(),
            uid: PeerUid(11),
            short_id: ShortId::new(1).unwrap(),
            port: 6783,
            conn_limit: 0,
            discovery: true,
            seed: 1,
        },
        now,
    );
    for n in [2, 3] {
        m.handle_connection(ConnId(n), info(n), hello(n), now)
            .unwrap();
    }
    drain(&mut m);
    m
}

fn dials(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Dial { .. }))
        .count()
}

#[test]
fn invented_connections_to_a_real_peer_do_not_make_us_dial_them_all() {
    let t0 = Instant::now();
    let mut m = discovering_peer(t0);
    let real = "192.0.2.4:6783".to_string();
    // Neighbours 2 and 3 both really dialled peer 4 there.
    let mut full = vec![
        record_dialled(2, &[(1, String::new()), (4, real.clone())]),
        record_dialled(3, &[(1, String::new()), (4, real.clone())]),
    ];
    // Neighbour 2 also relays 500 invented peers, each "connected" to peer 4 elsewhere.
    full.extend((100..600).map(|n| record_dialled(n, &[(4, format!("203.0.113.1:{n}"))])));
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Full(full)),
        t0,
        &mut NoChannels,
    );
    let mut actions = drain(&mut m).0;
    m.handle_timeout(t0 + std::time::Duration::from_secs(1), &mut NoChannels);
    actions.extend(drain(&mut m).0);
    let for_4: Vec<&String> = m
        .targets
        .iter()
        .filter(|(_, t)| t.expected == Some(name(4)))
        .map(|(k, _)| k)
        .collect();
    assert!(
        for_4.len() <= crate::targets::MAX_DISCOVERED_ADDRS_PER_PEER,
        "{for_4:?}"
    );
    assert!(
        for_4.contains(&&real),
        "the address two peers report wins: {for_4:?}"
    );
    assert!(
        dials(&actions) <= crate::targets::MAX_DISCOVERED_ADDRS_PER_PEER,
        "{actions:?}"
    );
}

#[test]
fn discovered_targets_are_bounded_in_all() {
    let t0 = Instant::now();
    let mut m = discovering_peer(t0);
    // Two invented peers each report the same 2100 invented peers at different addresses.
    let remotes = 10_000..12_100u64;
    let conns = |port: u16| -> Vec<(u64, String)> {
        let mut c: Vec<(u64, String)> = remotes
            .clone()
            .map(|r| (r, format!("203.0.113.{port}:{}", r - 9000)))
            .collect();
        c.push((2, String::new()));
        c
    };
    // Both are neighbours of neighbour 2, so they stay reachable (not garbage-collected).
    let two = record_dialled(
        2,
        &[
            (1, String::new()),
            (100, String::new()),
            (101, String::new()),
        ],
    );
    let full = vec![
        two,
        record_dialled(100, &conns(1)),
        record_dialled(101, &conns(2)),
    ];
    m.handle_message(
        ConnId(2),
        &topo_from(2, &TopologyMsg::Full(full)),
        t0,
        &mut NoChannels,
    );
    let mut actions = drain(&mut m).0;
    m.handle_timeout(t0 + std::time::Duration::from_secs(1), &mut NoChannels);
    actions.extend(drain(&mut m).0);
    assert!(
        m.topo.peers().len() < MAX_PEERS,
        "within the limit on peers"
    );
    assert_eq!(m.targets.len(), crate::targets::MAX_DISCOVERED_TARGETS);
    assert_eq!(dials(&actions), crate::targets::MAX_DISCOVERED_TARGETS);
}

#[test]
fn the_direct_target_list_is_bounded() {
    let t0 = Instant::now();
    let mut m = discovering_peer(t0);
    let many: Vec<String> = (0..crate::targets::MAX_DIRECT_TARGETS + 10)
        .map(|i| format!("198.51.100.{}:{}", i % 250, 7000 + i / 250))
        .collect();
    let errors = m.connect(&many, false, t0).unwrap_err();
    assert_eq!(errors.len(), 10, "{:?}", &errors[..1]);
    assert!(errors[0].contains("forget"), "{}", errors[0]);
    assert_eq!(
        m.targets.values().filter(|t| t.direct).count(),
        crate::targets::MAX_DIRECT_TARGETS
    );
    // Replacing the list still works.
    m.connect(&["198.51.100.1".to_string()], true, t0).unwrap();
    assert_eq!(m.targets.values().filter(|t| t.direct).count(), 1);
}
