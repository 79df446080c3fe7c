//! Property tests: the DNS entry join is a CRDT join (commutative,
//! associative, idempotent), every set survives the wire, and peers that
//! exchange payloads in any order and any number of times converge.

use std::net::Ipv4Addr;
use std::time::Instant;

use meshnet_mesh::PeerName;
use meshnet_mesh::dns::{Dns, DnsMsg, EntrySet, Key, Stamp};
use proptest::prelude::*;

fn peer(i: u8) -> PeerName {
    PeerName::new(u64::from(i) + 1).expect("peer name")
}

fn key() -> impl Strategy<Value = Key> {
    (0u8..4, 0u8..3, 0u8..3, 0u8..3).prop_map(|(n, o, c, a)| Key {
        name: format!("n{n}.weave.local."),
        origin: peer(o),
        container: format!("c{c}"),
        addr: Ipv4Addr::new(10, 0, 0, a),
    })
}

fn stamp() -> impl Strategy<Value = Stamp> {
    (0u64..5, any::<bool>()).prop_map(|(version, tombstone)| Stamp { version, tombstone })
}

fn set() -> impl Strategy<Value = EntrySet> {
    prop::collection::vec((key(), stamp()), 0..12).prop_map(|v| v.into_iter().collect())
}

fn joined(a: &EntrySet, b: &EntrySet) -> EntrySet {
    let mut out = a.clone();
    out.join(b);
    out
}

/// One origin-side change on peer `at`.
#[derive(Clone, Debug)]
enum Op {
    Add {
        at: u8,
        name: u8,
        container: u8,
        addr: u8,
    },
    Remove {
        at: u8,
        container: u8,
    },
    /// Peer `from` sends its full state to `to`.
    Gossip {
        from: u8,
        to: u8,
    },
    /// Peer `from` broadcasts its pending delta to everyone in `mask`.
    Deliver {
        from: u8,
        mask: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0u8..3, 0u8..3, 0u8..3).prop_map(|(at, name, container, addr)| Op::Add { at, name, container, addr }),
        2 => (0u8..3, 0u8..3).prop_map(|(at, container)| Op::Remove { at, container }),
        2 => (0u8..3, 0u8..3).prop_map(|(from, to)| Op::Gossip { from, to }),
        2 => (0u8..3, 0u8..8).prop_map(|(from, mask)| Op::Deliver { from, mask }),
    ]
}

proptest! {
    #[test]
    fn join_is_commutative(a in set(), b in set()) {
        prop_assert_eq!(joined(&a, &b), joined(&b, &a));
    }

    #[test]
    fn join_is_associative(a in set(), b in set(), c in set()) {
        prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
    }

    #[test]
    fn join_is_idempotent(a in set(), b in set()) {
        prop_assert_eq!(joined(&a, &a), a.clone());
        let ab = joined(&a, &b);
        prop_assert_eq!(joined(&ab, &b), ab.clone());
        // What join reports as changed is exactly what it added.
        let mut x = a.clone();
        let changed = x.join(&b);
        prop_assert_eq!(joined(&a, &changed), x);
    }

    #[test]
    fn sets_survive_the_wire(a in set()) {
        let msg = DnsMsg::from_set(&a);
        let back = DnsMsg::decode(&msg.encode()).expect("decodes");
        let set: EntrySet = back.entries.into_iter().map(|e| e.into_pair()).collect();
        prop_assert_eq!(set, a);
    }

    /// Any schedule of changes, deltas (delivered to any subset) and full
    /// gossip ends, after one final round of full gossip, with all three
    /// tables equal and each origin's live entries exactly what it holds.
    #[test]
    fn peers_converge(ops in prop::collection::vec(op(), 0..40)) {
        let now = Instant::now();
        let mut peers: Vec<Dns> = (0..3).map(|i| {
            let mut d = Dns::new(peer(i));
            d.handle_peers((0..3).filter(|&j| j != i).map(peer).collect());
            d
        }).collect();
        let name = |n: u8| format!("n{n}.weave.local.");
        for op in &ops {
            match *op {
                Op::Add { at, name: n, container, addr } => {
                    peers[usize::from(at)]
                        .add(&format!("c{container}"), Ipv4Addr::new(10, 0, at, addr), &name(n), now)
                        .expect("valid registration");
                }
                Op::Remove { at, container } => {
                    peers[usize::from(at)].remove(Some(&format!("c{container}")), None, None, now);
                }
                Op::Gossip { from, to } => {
                    let state = peers[usize::from(from)].full_state();
                    peers[usize::from(to)]
                        .handle_gossip(peer(from), &state, now)
                        .expect("decodes");
                }
                Op::Deliver { from, mask } => {
                    while let Some(delta) = peers[usize::from(from)].poll_transmit() {
                        for to in 0..3u8 {
                            if to != from && mask & (1 << to) != 0 {
                                peers[usize::from(to)]
                                    .handle_broadcast(peer(from), &delta, now)
                                    .expect("decodes");
                            }
                        }
                    }
                }
            }
        }
        // Anti-entropy until quiet: every peer gossips to every other.
        for _ in 0..3 {
            for from in 0..3u8 {
                let state = peers[usize::from(from)].full_state();
                for to in 0..3u8 {
                    if to != from {
                        peers[usize::from(to)].handle_gossip(peer(from), &state, now).expect("decodes");
                    }
                }
            }
        }
        prop_assert_eq!(peers[0].entries(), peers[1].entries());
        prop_assert_eq!(peers[1].entries(), peers[2].entries());
        // Nobody holds a live entry its origin does not.
        for e in peers[0].entries() {
            let own = &peers[usize::from(e.origin.as_u64() as u8 - 1)];
            let ours = own.entries().into_iter().find(|o| o.name == e.name && o.container == e.container && o.addr == e.addr);
            prop_assert_eq!(ours.map(|o| o.tombstone), Some(e.tombstone));
        }
    }
}
