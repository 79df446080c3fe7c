//! Property tests: the ring merge is a CRDT join (commutative, associative,
//! idempotent), every address has exactly one owner after any merge
//! sequence, allocations stay inside owned space, and every ring survives
//! the wire.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use meshnet_ipam::ring::{Lineage, Ring};
use meshnet_ipam::wire::{GossipState, Message, Role, SpaceKind};
use meshnet_ipam::{AddrRange, Cidr, Config, Ident, Init, Ipam, PeerName};
use proptest::prelude::*;

const UNIVERSE: AddrRange = AddrRange {
    start: 0x0a00_0000,
    end: 0x0a00_0100,
};

fn peer(i: u8) -> PeerName {
    PeerName::new(u64::from(i) + 1).unwrap()
}

/// One owner-side change: `peer` moves a slice of its space to `to`,
/// refreshes a free count, or (admin) takes over another peer.
#[derive(Clone, Debug)]
enum Op {
    Transfer { peer: u8, to: u8, at: u16, len: u16 },
    Free { peer: u8, value: u16 },
    Rmpeer { dead: u8, by: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, 0u8..5, any::<u16>(), 1u16..64).prop_map(|(peer, to, at, len)| Op::Transfer { peer, to, at, len }),
        1 => (0u8..5, any::<u16>()).prop_map(|(peer, value)| Op::Free { peer, value }),
        1 => (0u8..5, 0u8..5).prop_map(|(dead, by)| Op::Rmpeer { dead, by }),
    ]
}

fn apply(ring: &mut Ring, op: &Op) {
    match *op {
        Op::Transfer {
            peer: p,
            to,
            at,
            len,
        } => {
            let owned = ring.owned_by(peer(p));
            if owned.is_empty() {
                return;
            }
            let r = owned[usize::from(at) % owned.len()];
            let start = r.start + u32::from(at) % r.size();
            let end = (start + u32::from(len)).min(r.end);
            ring.transfer(AddrRange::new(start, end), peer(p), peer(to))
                .expect("owner transfers its own space");
        }
        Op::Free { peer: p, value } => {
            ring.refresh_free(peer(p), |r| u32::from(value) % (r.size() + 1));
        }
        Op::Rmpeer { dead, by } => {
            if dead != by {
                ring.transfer_peer(peer(dead), peer(by), 100);
            }
        }
    }
}

fn base(n: u8) -> Ring {
    let peers: BTreeSet<PeerName> = (0..n).map(peer).collect();
    Ring::split(UNIVERSE, &peers, Lineage(42))
}

/// Replicas that diverged from one base by independent histories, the way
/// peers' views do.
fn replicas() -> impl Strategy<Value = (Ring, Ring, Ring)> {
    (
        1u8..6,
        prop::collection::vec(op(), 0..12),
        prop::collection::vec(op(), 0..12),
        prop::collection::vec(op(), 0..12),
    )
        .prop_map(|(n, a, b, c)| {
            let mk = |ops: &[Op]| {
                let mut r = base(n);
                for o in ops {
                    apply(&mut r, o);
                }
                r
            };
            (mk(&a), mk(&b), mk(&c))
        })
}

fn join(a: &Ring, b: &Ring) -> Ring {
    let mut x = a.clone();
    x.merge(b).expect("same lineage and range");
    x
}

fn assert_partition(r: &Ring) {
    r.validate().expect("valid ring");
    let mut next = UNIVERSE.start;
    for (range, _) in r.iter() {
        assert_eq!(range.start, next, "ranges must tile the universe");
        assert!(range.end > range.start);
        next = range.end;
    }
    assert_eq!(next, UNIVERSE.end);
    let total: u64 = r.sizes().values().sum();
    assert_eq!(total, u64::from(UNIVERSE.size()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative((a, b, _c) in replicas()) {
        prop_assert_eq!(join(&a, &b), join(&b, &a));
    }

    #[test]
    fn merge_is_associative((a, b, c) in replicas()) {
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent((a, b, _c) in replicas()) {
        prop_assert_eq!(join(&a, &a), a.clone());
        let ab = join(&a, &b);
        prop_assert_eq!(join(&ab, &b), ab.clone());
        prop_assert!(!ab.clone().merge(&a).unwrap(), "re-merging a part changes nothing");
    }

    #[test]
    fn one_owner_per_address_after_any_merge_sequence(
        (a, b, c) in replicas(),
        order in prop::collection::vec(0usize..3, 2..8),
        probes in prop::collection::vec(any::<u8>(), 8),
    ) {
        let all = [a, b, c];
        let mut acc = all[order[0]].clone();
        assert_partition(&acc);
        // At least one merge: `order` has two or more entries.
        for i in &order[1..] {
            acc.merge(&all[*i]).unwrap();
            assert_partition(&acc);
        }
        for p in probes {
            prop_assert!(acc.owner(UNIVERSE.start + u32::from(p)).is_some());
        }
    }

    #[test]
    fn rings_round_trip_on_the_wire((a, _b, _c) in replicas()) {
        let m = Message::Gossip(GossipState { role: Role::Elector, wants_ring: false, paxos: None, ring: Some(a) });
        prop_assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }
}

/// Fuzzer find: a donation request for a range outside the universe
/// clipped to an inverted range and panicked inside `BTreeMap::range`.
#[test]
fn fuzz_regression_request_outside_universe() {
    let range: Cidr = "10.0.0.0/24".parse().unwrap();
    let seeds: BTreeSet<PeerName> = [peer(0), peer(1)].into();
    let mut ipam = Ipam::new(Config::new(peer(0), range, Init::Seed(seeds)), 0);
    let now = Instant::now();
    let _ = ipam.allocate(&Ident::new("a"), None, true, now);
    for kind in [SpaceKind::Donate, SpaceKind::Claim, SpaceKind::Reclaim] {
        let m = Message::SpaceRequest {
            id: 0,
            range: AddrRange::new(4, 6),
            kind,
        };
        ipam.handle_unicast(peer(1), &m.encode(), now).unwrap();
    }
    ipam.handle_unicast(peer(1), &[1, 1, 0, 4, 6, 0], now)
        .unwrap();
    ipam.check_invariants().unwrap();
}

/// Random local requests and requests from a peer against one allocator:
/// every address it holds is inside its owned space (or reported as being
/// re-claimed), and its internal bookkeeping stays consistent.
#[derive(Clone, Debug)]
enum Req {
    Alloc(u8),
    Claim(u8, u8),
    Free(u8),
    Died(u8),
    Tick(u8),
    Donate,
    PeerClaim(u8, u8, bool),
    Rmpeered,
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        6 => (0u8..40).prop_map(Req::Alloc),
        2 => (0u8..40, any::<u8>()).prop_map(|(i, a)| Req::Claim(i, a)),
        3 => (0u8..40).prop_map(Req::Free),
        1 => (0u8..40).prop_map(Req::Died),
        2 => (1u8..40).prop_map(Req::Tick),
        1 => Just(Req::Donate),
        2 => (any::<u8>(), 1u8..16, any::<bool>()).prop_map(|(a, n, live)| Req::PeerClaim(a, n, live)),
        1 => Just(Req::Rmpeered),
    ]
}

/// Cases of [`allocations_stay_inside_owned_space`].
const ALLOC_CASES: u32 = 128;

/// Runs the request sequence; returns how many held addresses it checked.
fn check_allocations(reqs: &[Req]) -> Result<usize, TestCaseError> {
    let mut checked = 0;
    let range: Cidr = "10.0.0.0/24".parse().unwrap();
    let seeds: BTreeSet<PeerName> = [peer(0), peer(1)].into();
    let mut ipam = Ipam::new(Config::new(peer(0), range, Init::Seed(seeds)), 7);
    let other = peer(1);
    let known = [(peer(0), "a".to_string()), (other, "b".to_string())].into();
    let base = Instant::now();
    let mut now = base;
    ipam.handle_peers_changed(known, now);
    for r in reqs {
        match *r {
            Req::Alloc(i) => {
                let _ = ipam.allocate(&Ident::new(format!("c{i}")), None, true, now);
            }
            Req::Claim(i, a) => {
                let c = Cidr {
                    addr: range.addr + u32::from(a),
                    len: 24,
                };
                let _ = ipam.claim(&Ident::new(format!("c{i}")), c, true, false, now);
            }
            Req::Free(i) => {
                let _ = ipam.free_all(&Ident::new(format!("c{i}")));
            }
            Req::Died(i) => ipam.handle_container_died(&Ident::new(format!("c{i}")), now),
            Req::Tick(s) => {
                now += Duration::from_secs(u64::from(s));
                ipam.handle_timeout(now);
            }
            Req::Donate => {
                let m = Message::SpaceRequest {
                    id: 1,
                    range: range.host_range(),
                    kind: SpaceKind::Donate,
                };
                ipam.handle_unicast(other, &m.encode(), now).unwrap();
            }
            Req::PeerClaim(a, n, live) => {
                let start = range.addr + u32::from(a);
                let kind = if live {
                    SpaceKind::Reclaim
                } else {
                    SpaceKind::Claim
                };
                let m = Message::SpaceRequest {
                    id: 2,
                    range: AddrRange::new(start, start + u32::from(n)),
                    kind,
                };
                ipam.handle_unicast(other, &m.encode(), now).unwrap();
            }
            Req::Rmpeered => {
                // The other peer (wrongly) took over our space: our live
                // addresses become unowned and must be re-claimed.
                if let Some(ring) = ipam.ring() {
                    let mut theirs = ring.clone();
                    theirs.transfer_peer(peer(0), other, 100);
                    let m = Message::RingUpdate(theirs);
                    ipam.handle_unicast(other, &m.encode(), now).unwrap();
                }
            }
        }
        while ipam.poll_transmit().is_some() {}
        while ipam.poll_event().is_some() {}
        let _ = ipam.poll_persist();
        prop_assert_eq!(ipam.check_invariants(), Ok(()));
        let unowned: BTreeSet<_> = ipam
            .unowned()
            .into_iter()
            .map(|(a, _)| u32::from(a))
            .collect();
        let Some(ring) = ipam.ring() else { continue };
        for o in ipam.owned().values() {
            for c in &o.addrs {
                prop_assert!(
                    ring.owner(c.addr) == Some(peer(0)) || unowned.contains(&c.addr),
                    "{} held but not owned",
                    c
                );
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// Random local requests and requests from a peer against one allocator:
/// every address it holds is inside its owned space (or re-claimed). The
/// inner loop checks each held address after each request; across all
/// cases it must have checked many (an allocator that never held an
/// address, or a loop that never ran, would pass each case vacuously).
#[test]
fn allocations_stay_inside_owned_space() {
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(ALLOC_CASES));
    let checked = std::cell::Cell::new(0usize);
    runner
        .run(&prop::collection::vec(req(), 1..60), |reqs| {
            checked.set(checked.get() + check_allocations(&reqs)?);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{} held addresses checked in {ALLOC_CASES} cases",
        checked.get()
    );
    assert!(
        checked.get() >= 10 * ALLOC_CASES as usize,
        "only {} held addresses checked in {ALLOC_CASES} cases",
        checked.get()
    );
}
