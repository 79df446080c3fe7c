//! Simulator scenarios (weave §4.6–4.11 behaviour, plus the O(delta·log N) gossip bound).
//! Randomized scenarios run several seeds and name the failing one.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::PeerName;
use crate::mesh::{CloseReason, Event};
use crate::sim::{Sim, peer_name, secs};
use crate::status::ConnState;
use crate::wire::TopologyMsg;

const SEEDS: [u64; 5] = [1, 2, 3, 0xfeed, 0x5eed_1234];

fn check(seed: u64, ok: bool, what: &str, sim: &Sim) {
    assert!(
        ok,
        "{what} (seed {seed}); divergence: {:?}",
        sim.divergence()
    );
}

#[test]
fn chain_discovers_full_mesh() {
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed);
        sim.connect(0, 1);
        sim.connect(1, 2);
        sim.run_for(secs(10));
        check(seed, sim.full_mesh(), "full mesh", &sim);
        check(seed, sim.converged(), "converged", &sim);
        for i in 0..3 {
            assert_eq!(sim.conn_count(i), 2, "peer {i} (seed {seed})");
        }
    }
}

#[test]
fn no_discovery_keeps_the_chain() {
    let mut sim = Sim::with_config(3, 7, |_, c| c.discovery = false);
    sim.connect(0, 1);
    sim.connect(1, 2);
    sim.run_for(secs(60));
    assert!(sim.connected(0, 1) && sim.connected(1, 2));
    assert!(!sim.connected(0, 2));
    assert!(sim.converged(), "{:?}", sim.divergence());
    let st = sim.peers[0].mesh.status(sim.now());
    assert_eq!(st.peers.len(), 3, "0 still knows 2 through 1");
    let route = st
        .unicast_routes
        .iter()
        .find(|r| r.dest == peer_name(2))
        .unwrap();
    assert_eq!(route.via, peer_name(1));
}

#[test]
fn simultaneous_dials_leave_one_connection_at_once() {
    for seed in 0..20u64 {
        let mut sim = Sim::new(2, seed);
        sim.connect(0, 1);
        sim.connect(1, 0);
        // Both handshakes finish within a few latencies; nobody waits for a heartbeat.
        sim.run_for(Duration::from_millis(200));
        assert!(sim.connected(0, 1), "not connected (seed {seed})");
        assert_eq!(
            (sim.conn_count(0), sim.conn_count(1)),
            (1, 1),
            "seed {seed}"
        );
        sim.run_for(secs(120));
        assert!(sim.connected(0, 1), "lost the survivor (seed {seed})");
        for p in &sim.peers {
            let timeouts = p
                .events
                .iter()
                .filter(|e| matches!(e, Event::ConnectionDown { reason, .. } if reason.contains("heartbeat")))
                .count();
            assert_eq!(timeouts, 0, "seed {seed}");
        }
        let dials: u64 = sim.dials.iter().sum();
        assert!(
            dials <= 4,
            "dial churn after the tie-break: {dials} (seed {seed})"
        );
    }
}

#[test]
fn duplicate_tie_break_is_the_same_on_both_ends() {
    // Ten peers all dialling each other at once, as in the chain launched at one moment.
    for seed in SEEDS {
        let mut sim = Sim::new(10, seed);
        for a in 0..10 {
            for b in 0..10 {
                if a != b {
                    sim.connect(a, b);
                }
            }
        }
        sim.run_for(secs(5));
        check(seed, sim.full_mesh(), "full mesh within 5 s", &sim);
        check(seed, sim.converged(), "converged", &sim);
    }
}

#[test]
fn partition_and_heal() {
    for seed in SEEDS {
        let mut sim = Sim::new(4, seed);
        sim.connect(0, 1);
        sim.connect(1, 2);
        sim.connect(2, 3);
        sim.run_for(secs(10));
        check(seed, sim.full_mesh(), "initial full mesh", &sim);
        sim.partition_groups(&[0, 1], &[2, 3]);
        // The last message crossed before the cut, so the 60 s timeout ends the links
        // between 50 and 60 s after it; not earlier.
        sim.run_for(secs(49));
        assert!(
            sim.connected(0, 2),
            "closed before the heartbeat timeout (seed {seed})"
        );
        sim.run_for(secs(41));
        assert!(!sim.connected(0, 2) && !sim.connected(1, 3), "seed {seed}");
        assert!(sim.connected(0, 1) && sim.connected(2, 3), "seed {seed}");
        let down = sim.peers[0].events.iter().any(|e| {
            matches!(e, Event::ConnectionDown { reason, .. }
                if *reason == CloseReason::HeartbeatTimeout(60).to_string())
        });
        assert!(down, "heartbeat timeout reason (seed {seed})");
        check(seed, sim.converged(), "each side converged", &sim);
        let known = sim.peers[0].mesh.status(sim.now()).peers.len();
        assert_eq!(known, 2, "the far side was garbage-collected (seed {seed})");
        sim.heal_all();
        sim.run_for(secs(600));
        check(seed, sim.full_mesh(), "full mesh after heal", &sim);
        check(seed, sim.converged(), "converged after heal", &sim);
    }
}

#[test]
fn restarted_peer_recognised_and_reconverged() {
    for seed in SEEDS {
        let mut sim = Sim::new(3, seed);
        sim.connect(0, 1);
        sim.connect(1, 2);
        sim.run_for(secs(10));
        let old_version = sim.peers[1].mesh.status(sim.now()).version;
        let old_uid = sim.peers[1].config.uid;
        sim.restart(1);
        sim.run_for(secs(30));
        // Peer 1 redials 2 at once (its persisted target), before 2's GC forgets it.
        let restarted = sim.peers[2]
            .events
            .iter()
            .any(|e| *e == Event::PeerRestarted(peer_name(1)));
        assert!(restarted, "PeerRestarted (seed {seed})");
        check(seed, sim.full_mesh(), "full mesh after restart", &sim);
        check(seed, sim.converged(), "converged after restart", &sim);
        let st = sim.peers[0].mesh.status(sim.now());
        let p1 = st.peers.iter().find(|p| p.name == peer_name(1)).unwrap();
        assert_eq!(p1.uid, sim.peers[1].config.uid);
        assert_ne!(
            p1.uid, old_uid,
            "a restart is a new incarnation (seed {seed})"
        );
        // Peer 0 holds the new incarnation's current record (it counts its versions from
        // scratch), not the one it had before the restart.
        let own = sim.peers[1].mesh.status(sim.now()).version;
        assert_eq!(
            p1.version, own,
            "peer 0's copy of the restarted record (seed {seed}; version {old_version} before)"
        );
    }
}

#[test]
fn connect_to_self_and_name_collision_are_not_retried() {
    // Peer 1 wrongly uses peer 0's name.
    let mut sim = Sim::with_config(3, 11, |i, c| {
        if i == 1 {
            // Cloned state: the same key, hence the same name, in another incarnation.
            c.name = peer_name(0);
            c.key = crate::sim::peer_key(0);
        }
    });
    sim.connect(0, 0);
    sim.connect(2, 1);
    sim.connect(0, 2);
    sim.run_for(secs(600));
    let st0 = sim.peers[0].mesh.status(sim.now());
    let own = st0
        .connections
        .iter()
        .find(|c| c.address == "10.1.0.1:6783")
        .unwrap();
    assert_eq!(own.state, ConnState::Failed);
    assert_eq!(own.retry_in, None);
    assert!(
        own.error
            .as_deref()
            .unwrap()
            .contains("cannot connect to ourself")
    );
    // 0's own target was dialled once; 2→1 reached a name 2 already knows from 0 with
    // another uid? No: 1 and 0 share a name, so whoever learns of the other sees a collision.
    assert_eq!(sim.dials[0], 1 + 1, "self once, 2 once (seed 11)");
    let st1 = sim.peers[1].mesh.status(sim.now());
    assert!(
        st1.connections
            .iter()
            .all(|c| c.conn.is_none() || c.peer.is_some())
    );
    assert!(
        sim.dials[2] <= 3,
        "2 keeps dialling the colliding peers: {}",
        sim.dials[2]
    );
}

#[test]
fn gc_removes_unreachable_peers() {
    let mut sim = Sim::with_config(3, 5, |_, c| c.discovery = false);
    sim.connect(0, 1);
    sim.connect(1, 2);
    sim.run_for(secs(10));
    sim.stop(2);
    sim.run_for(secs(5));
    assert!(
        sim.peers[0]
            .events
            .contains(&Event::PeerRemoved(peer_name(2)))
    );
    assert!(sim.converged(), "{:?}", sim.divergence());
}

/// A peer whose connections are gone is not reachable at once, though
/// its record stays until garbage collection: IPAM must not pick it as the
/// heir of a `reset` in that window.
#[test]
fn a_peer_is_unreachable_as_soon_as_its_connection_closes() {
    let mut sim = Sim::with_config(3, 7, |_, c| c.discovery = false);
    sim.connect(0, 1);
    sim.connect(1, 2);
    sim.run_for(secs(10));
    let reachable = |sim: &Sim| -> BTreeSet<PeerName> {
        sim.peers[0].mesh.reachable_peers().into_keys().collect()
    };
    let all: BTreeSet<PeerName> = (0..3).map(peer_name).collect();
    assert_eq!(reachable(&sim), all);
    sim.stop(1);
    sim.run_for(crate::mesh::GC_DELAY / 4);
    let listed: Vec<PeerName> = sim.peers[0]
        .mesh
        .status(sim.now())
        .peers
        .iter()
        .map(|p| p.name)
        .collect();
    assert!(
        listed.contains(&peer_name(1)),
        "the record is kept until GC: {listed:?}"
    );
    assert_eq!(reachable(&sim), BTreeSet::from([peer_name(0)]));
}

#[test]
fn short_id_collision_lowest_name_keeps_it() {
    let mut sim = Sim::with_config(2, 9, |_, c| {
        c.short_id = crate::ids::ShortId::new(77).unwrap()
    });
    sim.connect(0, 1);
    sim.run_for(secs(10));
    let id = |i: usize| sim.peers[i].mesh.status(sim.now()).short_id.as_u16();
    assert_eq!(id(0), 77);
    assert_ne!(id(1), 77);
    assert!(sim.converged(), "{:?}", sim.divergence());
}

#[test]
fn gossip_broadcast_and_unicast_reach_everyone_once() {
    let mut sim = Sim::with_config(6, 21, |_, c| c.discovery = false);
    for i in 0..5 {
        sim.connect(i, i + 1);
    }
    sim.connect(5, 0);
    sim.connect(0, 3);
    sim.run_for(secs(10));
    // Grow-only set gossip from 0 reaches all.
    sim.peers[0].channels.items.insert("x".into());
    sim.peers[0].mesh.gossip("kv", b"x".to_vec());
    sim.flush(0);
    sim.run_for(secs(2));
    for p in &sim.peers {
        assert!(
            p.channels.items.contains("x"),
            "{} missed gossip",
            p.config.name
        );
    }
    sim.peers[2].mesh.gossip_broadcast("kv", b"hello".to_vec());
    sim.flush(2);
    sim.run_for(secs(2));
    for (i, p) in sim.peers.iter().enumerate() {
        let n = p
            .channels
            .broadcasts
            .iter()
            .filter(|(s, _)| *s == peer_name(2))
            .count();
        assert_eq!(
            n,
            usize::from(i != 2),
            "peer {i} got the broadcast {n} times"
        );
    }
    sim.peers[1]
        .mesh
        .gossip_unicast("kv", peer_name(4), b"u".to_vec())
        .unwrap();
    sim.flush(1);
    sim.run_for(secs(2));
    assert_eq!(
        sim.peers[4].channels.unicasts,
        vec![(peer_name(1), b"u".to_vec())]
    );
    // A peer that joins later gets the channel state with the new connection.
    let mut late = Sim::with_config(2, 3, |_, c| c.discovery = false);
    late.peers[0].channels.items.insert("y".into());
    late.connect(1, 0);
    late.run_for(secs(2));
    assert!(late.peers[1].channels.items.contains("y"));
}

#[test]
fn randomized_partitions_loss_and_restarts_converge() {
    for seed in 100..106u64 {
        let n = 6;
        let mut sim = Sim::new(n, seed);
        let mut rng = seed;
        let mut next = move |m: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % m
        };
        for i in 1..n {
            sim.connect(i, next(i as u64) as usize);
        }
        for a in 0..n {
            for b in a + 1..n {
                let lat = Duration::from_millis(1 + next(50));
                sim.set_link(a, b, lat, next(30) as f64 / 100.0);
            }
        }
        for _ in 0..10 {
            let (a, b) = (next(n as u64) as usize, next(n as u64) as usize);
            match next(4) {
                0 if a != b => sim.partition(a, b),
                1 => sim.heal(a, b),
                2 => sim.restart(a),
                _ => {}
            }
            sim.run_for(secs(next(90)));
        }
        sim.heal_all();
        for a in 0..n {
            for b in a + 1..n {
                sim.set_link(a, b, Duration::from_millis(5), 0.0);
            }
        }
        sim.run_for(secs(900));
        check(seed, sim.full_mesh(), "full mesh at the end", &sim);
        check(seed, sim.converged(), "converged at the end", &sim);
    }
}

/// Builds `n` peers without discovery in a sparse random graph (a random tree plus a ring),
/// runs it to convergence, then adds one connection and counts topology bytes per peer.
fn bytes_per_change(n: usize, seed: u64) -> Cost {
    let mut sim = Sim::with_config(n, seed, |_, c| c.discovery = false);
    let mut x = seed | 1;
    let mut edges = BTreeSet::new();
    for i in 1..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        edges.insert((j, i));
        edges.insert((i - 1, i));
    }
    for (a, b) in &edges {
        sim.connect(*b, *a);
    }
    let mut rounds = 0;
    while !sim.converged() {
        rounds += 1;
        assert!(
            rounds < 20,
            "{n} peers did not converge (seed {seed}): {:?}",
            sim.divergence()
        );
        sim.run_for(secs(15));
    }
    sim.run_for(secs(5));
    assert!(sim.converged(), "{:?}", sim.divergence());
    let full_state = TopologyMsg::Full(sim.peers[0].mesh.topo.all_records())
        .encode()
        .len();
    let (a, b) = (0, n / 2);
    assert!(!edges.contains(&(a, b)));
    // Every peer's periodic digest fires at multiples of 30 s of virtual time: measure in
    // the quiet stretch after one, so the window holds this change's traffic only.
    let into = sim.elapsed().as_millis() % 30_000;
    sim.run_for(Duration::from_millis((30_000 - into) as u64) + secs(2));
    sim.reset_stats();
    sim.connect(a, b);
    sim.run_for(secs(10));
    assert!(sim.connected(a, b));
    assert!(sim.converged(), "{:?}", sim.divergence());
    let kinds = ["topo-delta", "topo-request", "topo-full", "topo-digest"];
    for k in kinds {
        let v = sim.bytes_of(&[k]);
        let total: u64 = v.iter().sum();
        eprintln!(
            "  {n} peers, {k}: total {total}, busiest peer {}",
            v.iter().max().unwrap()
        );
    }
    let per_peer = sim.bytes_of(&kinds);
    let total: u64 = per_peer.iter().sum();
    assert!(total > 0, "the change produced no counted topology traffic");
    let others = per_peer
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != a && *i != b)
        .map(|(_, v)| *v)
        .max()
        .unwrap_or(0);
    let ends = per_peer[a].max(per_peer[b]);
    Cost {
        total,
        avg: total / n as u64,
        others,
        ends,
        full_state,
    }
}

/// Topology bytes caused by one new connection.
struct Cost {
    total: u64,
    avg: u64,
    /// Busiest peer other than the two ends of the new connection.
    others: u64,
    /// Busiest end (it also sends its digest to the new neighbour: O(N) once).
    ends: u64,
    /// Size of a full-state message, for comparison.
    full_state: usize,
}

#[test]
fn two_hundred_peers_converge_with_bounded_bytes_per_change() {
    eprintln!(
        "peers | bytes/peer/change avg | busiest other peer | busiest end | total | full state"
    );
    let mut rows = Vec::new();
    for n in [50usize, 200] {
        let c = bytes_per_change(n, 42);
        eprintln!(
            "{n:5} | {:21} | {:18} | {:11} | {:5} | {}",
            c.avg, c.others, c.ends, c.total, c.full_state
        );
        rows.push((n, c));
    }
    for (n, c) in &rows {
        // Full-state flooding would cost every peer at least one full state (O(N): 5.6 kB
        // at 50 peers, 24 kB at 200); deltas cost every peer a few hundred bytes whatever N
        // is, and the two ends one digest (~14 bytes per peer) on top.
        assert!(
            c.avg < 1024,
            "{n} peers: {} bytes per peer per change",
            c.avg
        );
        assert!(
            c.others < 2048,
            "{n} peers: a relaying peer sent {} bytes",
            c.others
        );
        assert!(
            c.ends * 2 < c.full_state as u64,
            "{n} peers: an end sent {} bytes",
            c.ends
        );
    }
    let (small, large) = (&rows[0].1, &rows[1].1);
    assert!(
        large.avg < small.avg * 2,
        "per-peer cost grows with N: {} → {}",
        small.avg,
        large.avg
    );
}

#[test]
fn unknown_channels_are_relayed_once_by_surrogates() {
    let mut sim = Sim::with_config(6, 4, |_, c| c.discovery = false);
    for i in 0..6 {
        sim.connect(i, (i + 1) % 6);
    }
    sim.run_for(secs(10));
    sim.reset_stats();
    sim.peers[0].mesh.gossip("zz", b"opaque".to_vec());
    sim.flush(0);
    sim.run_for(secs(5));
    let sent = sim.bytes_of(&["gossip"]);
    let one = crate::wire::Message::Gossip(crate::wire::GossipMsg {
        channel: "zz".into(),
        src: peer_name(0),
        payload: b"opaque".to_vec(),
    })
    .encode()
    .len() as u64;
    // On a ring every peer relays the unknown payload to its other neighbour once at most
    // (dedup by hash), so nobody sends more than two copies and the flood stops.
    for (i, b) in sent.iter().enumerate() {
        assert!(*b <= 2 * one, "peer {i} sent {b} bytes of surrogate gossip");
    }
    assert!(sent.iter().filter(|b| **b > 0).count() >= 4, "{sent:?}");
    for p in &sim.peers {
        assert!(p.channels.items.is_empty(), "unknown channel delivered");
    }
}

#[test]
fn chain_of_ten_launched_at_once_meshes_without_a_heartbeat_stall() {
    // weave 2.8.1 stalled 63 s in 3 of 8 such runs when measured; here every seed must reach
    // the full mesh within a few virtual seconds.
    for seed in 0..8u64 {
        let mut sim = Sim::new(10, seed);
        for i in 0..9 {
            sim.connect(i, i + 1);
        }
        let mut waited = 0;
        while !(sim.full_mesh() && sim.converged()) {
            waited += 1;
            assert!(
                waited <= 20,
                "no full mesh after {waited}×0.5 s (seed {seed}): {:?}",
                sim.divergence()
            );
            sim.run_for(Duration::from_millis(500));
        }
        eprintln!(
            "chain of 10, seed {seed}: full mesh after {:.1} s",
            f64::from(waited) * 0.5
        );
    }
}

#[test]
fn twenty_peer_chain_with_discovery_meshes_fast_and_idles_quietly() {
    let mut sim = Sim::new(20, 77);
    for i in 1..20 {
        sim.connect(i, i - 1);
    }
    let mut waited = 0;
    while !(sim.full_mesh() && sim.converged()) {
        waited += 1;
        assert!(
            waited <= 20,
            "no full mesh after {waited} s: {:?}",
            sim.divergence()
        );
        sim.run_for(secs(1));
    }
    sim.run_for(secs(60));
    sim.reset_stats();
    sim.run_for(secs(60));
    let per_peer = sim.bytes_of(&[
        "topo-digest",
        "topo-request",
        "topo-full",
        "topo-delta",
        "heartbeat",
    ]);
    let total: u64 = per_peer.iter().sum();
    let max = per_peer.iter().copied().max().unwrap_or(0);
    eprintln!(
        "20-peer full mesh: formed in {waited} s; idle control bytes per minute: {total} total, {max} busiest peer"
    );
    // weave measured ~425 kB/min for 10 peers because every 30 s round carried the whole
    // topology; here a round is one digest per peer plus heartbeats.
    assert!(
        max < 2048,
        "busiest peer sent {max} bytes in an idle minute"
    );
    assert!(sim.converged(), "{:?}", sim.divergence());
}

#[test]
fn a_second_key_claiming_a_name_never_displaces_its_holder() {
    // 2 is launched with --name of 1 but holds its own key.
    let mut sim = Sim::with_config(3, 23, |i, c| {
        c.discovery = false;
        if i == 2 {
            c.name = peer_name(1);
        }
    });
    sim.connect(0, 1);
    sim.run_for(secs(5));
    let holder = Some(crate::sim::peer_key(1).fingerprint());
    let key_at_0 = |sim: &Sim| {
        let st = sim.peers[0].mesh.status(sim.now());
        st.peers
            .into_iter()
            .find(|p| p.name == peer_name(1))
            .and_then(|p| p.key)
    };
    assert_eq!(key_at_0(&sim), holder);
    let conn = sim.peers[0].mesh.conn_to(peer_name(1));
    assert!(conn.is_some());
    for _ in 0..20 {
        sim.connect(2, 0);
        sim.run_for(secs(3));
        assert_eq!(key_at_0(&sim), holder);
        assert_eq!(sim.peers[0].mesh.conn_to(peer_name(1)), conn);
    }
    let st2 = sim.peers[2].mesh.status(sim.now());
    let refused = st2.connections.iter().find_map(|c| c.error.clone());
    let refused = refused.expect("2 records why it was refused");
    assert!(refused.contains("under key"), "{refused}");
}
