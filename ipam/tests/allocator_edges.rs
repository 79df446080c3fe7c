//! Edges of the allocator that the scenarios pass through without looking,
//! each pinned because a mutation of it survived the other tests: persisted
//! state that hands one address to two containers is refused on load, a
//! reloaded allocator is the peer it was saved as, waiting allocations get
//! distinct request ids, the smallest subnet, per-subnet answers, `cancel`'s
//! result, a freed address given again, a death cancelling only that
//! container's requests, and a destroyed container's release.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Instant;

use meshnet_ipam::{Allocation, Cidr, Config, Ident, Init, Ipam, PeerName, PersistError};

fn peer(i: u64) -> PeerName {
    PeerName::new(i + 1).unwrap()
}

fn config(init: Init) -> Config {
    let range: Cidr = "10.0.0.0/24".parse().unwrap();
    Config::new(peer(0), range, init)
}

fn seeded() -> Config {
    config(Init::Seed(BTreeSet::from([peer(0)])))
}

#[test]
fn persisted_state_with_one_address_for_two_containers_is_refused() {
    let now = Instant::now();
    let mut ipam = Ipam::new(seeded(), 1);
    let a = Ident::new("a");
    let Ok(Allocation::Done(addr)) = ipam.allocate(&a, None, true, now) else {
        panic!("a seeded ring allocates at once");
    };
    let good = ipam.persisted();

    let again = Ipam::from_persisted(seeded(), good.clone(), 2).expect("its own state loads");
    assert_eq!(
        again.name(),
        peer(0),
        "the reloaded allocator is the saved peer"
    );
    assert_eq!(again.persisted().owned, good.owned);

    // Two containers holding it: corrupt, and the error names both.
    let mut shared = good;
    let o = shared.owned[&a].clone();
    shared.owned.insert(Ident::new("b"), o);
    let err = Ipam::from_persisted(seeded(), shared, 4).unwrap_err();
    assert!(
        matches!(&err, PersistError::Corrupt(m) if m.contains(&addr.ip().to_string())
            && m.contains('a') && m.contains('b')),
        "{err:?}"
    );
}

#[test]
fn allocations_waiting_for_a_ring_get_distinct_request_ids() {
    let now = Instant::now();
    // Two electors, only one here: no ring, every allocation waits.
    let mut ipam = Ipam::new(config(Init::Consensus { peers: 2 }), 1);
    let ids: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|c| match ipam.allocate(&Ident::new(*c), None, true, now) {
            Ok(Allocation::Pending(id)) => id,
            other => panic!("{c}: {other:?}, not pending"),
        })
        .collect();
    let distinct: BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 3, "request ids {ids:?}");
    assert_eq!(
        ipam.status().pending_allocates.len(),
        3,
        "{:?}",
        ipam.status()
    );
}

#[test]
fn a_slash_30_is_the_smallest_subnet_allocated_from() {
    let now = Instant::now();
    let mut ipam = Ipam::new(seeded(), 1);
    let smallest: Cidr = "10.0.0.0/30".parse().unwrap();
    match ipam.allocate(&Ident::new("a"), Some(smallest), true, now) {
        Ok(Allocation::Done(c)) => {
            assert!(smallest.contains(c.addr), "{c} outside {smallest}");
            assert_eq!(c.len, 30, "{c}");
        }
        other => panic!("a /30 allocates: {other:?}"),
    }
    let too_small: Cidr = "10.0.0.8/31".parse().unwrap();
    assert!(
        matches!(
            ipam.allocate(&Ident::new("b"), Some(too_small), true, now),
            Err(meshnet_ipam::Error::TooSmall(_))
        ),
        "a /31 has no host addresses to give"
    );
}

#[test]
fn an_address_held_in_one_subnet_is_not_the_answer_for_another_of_the_same_size() {
    let now = Instant::now();
    let mut ipam = Ipam::new(seeded(), 1);
    let a = Ident::new("a");
    let first: Cidr = "10.0.0.0/26".parse().unwrap();
    let second: Cidr = "10.0.0.64/26".parse().unwrap();
    let Ok(Allocation::Done(in_first)) = ipam.allocate(&a, Some(first), true, now) else {
        panic!("allocates in {first}");
    };
    // Asking again in the same subnet gives the address it holds there.
    assert!(matches!(
        ipam.allocate(&a, Some(first), true, now),
        Ok(Allocation::Done(c)) if c == in_first
    ));
    match ipam.allocate(&a, Some(second), true, now) {
        Ok(Allocation::Done(c)) => assert!(second.contains(c.addr), "{c} outside {second}"),
        other => panic!("allocates in {second}: {other:?}"),
    }
    assert_eq!(ipam.lookup(&a, None).len(), 2, "one address in each subnet");
}

#[test]
fn cancel_says_whether_a_waiting_request_was_dropped() {
    let now = Instant::now();
    let mut ipam = Ipam::new(config(Init::Consensus { peers: 2 }), 1);
    let Ok(Allocation::Pending(alloc)) = ipam.allocate(&Ident::new("a"), None, true, now) else {
        panic!("no ring: the allocation waits");
    };
    let addr: Cidr = "10.0.0.9/24".parse().unwrap();
    let Ok(Allocation::Pending(claim)) = ipam.claim(&Ident::new("b"), addr, true, false, now)
    else {
        panic!("no ring: the claim waits");
    };
    assert!(ipam.cancel(alloc), "the waiting allocation is cancelled");
    assert!(!ipam.cancel(alloc), "nothing left to cancel");
    assert!(ipam.cancel(claim), "the waiting claim is cancelled");
    assert!(!ipam.cancel(claim), "nothing left to cancel");
    let status = ipam.status();
    assert!(status.pending_allocates.is_empty(), "{status:?}");
}

/// A seeded single-peer allocator over a /29: six host addresses.
fn tiny() -> Ipam {
    let range: Cidr = "10.0.0.0/29".parse().unwrap();
    Ipam::new(
        Config::new(peer(0), range, Init::Seed(BTreeSet::from([peer(0)]))),
        1,
    )
}

#[test]
fn a_freed_address_is_ours_to_give_again_and_its_holder_is_gone() {
    let now = Instant::now();
    let mut ipam = tiny();
    let mut held = Vec::new();
    for i in 0.. {
        let ident = Ident::new(format!("c{i}"));
        match ipam.allocate(&ident, None, true, now) {
            Ok(Allocation::Done(c)) => held.push((ident, c)),
            _ => break,
        }
        assert!(i < 8, "a /29 gave more than 8 addresses");
    }
    assert_eq!(held.len(), 6, "a /29 has six host addresses");
    let (ident, c) = held[2].clone();
    assert_eq!(ipam.holder(c.ip()), Some(&ident));
    ipam.free(&ident, c.ip()).expect("frees its address");
    assert_eq!(ipam.holder(c.ip()), None, "nobody holds a freed address");
    assert!(
        matches!(
            ipam.allocate(&Ident::new("late"), None, true, now),
            Ok(Allocation::Done(again)) if again == c
        ),
        "the freed address is given again"
    );
}

#[test]
fn a_death_cancels_only_that_containers_waiting_requests() {
    let now = Instant::now();
    let mut ipam = Ipam::new(config(Init::Consensus { peers: 2 }), 1);
    let (a, b) = (Ident::new("a"), Ident::new("b"));
    let Ok(Allocation::Pending(a_alloc)) = ipam.allocate(&a, None, true, now) else {
        panic!("no ring: waits");
    };
    let Ok(Allocation::Pending(b_alloc)) = ipam.allocate(&b, None, true, now) else {
        panic!("no ring: waits");
    };
    let addr = |s: &str| s.parse::<Cidr>().unwrap();
    let Ok(Allocation::Pending(a_claim)) = ipam.claim(&a, addr("10.0.0.9/24"), true, false, now)
    else {
        panic!("no ring: waits");
    };
    let Ok(Allocation::Pending(b_claim)) = ipam.claim(&b, addr("10.0.0.10/24"), true, false, now)
    else {
        panic!("no ring: waits");
    };
    while ipam.poll_event().is_some() {}
    ipam.handle_container_died(&a, now);
    let mut cancelled = BTreeSet::new();
    while let Some(e) = ipam.poll_event() {
        if let meshnet_ipam::Event::Cancelled { request } = e {
            cancelled.insert(request);
        }
    }
    assert_eq!(
        cancelled,
        BTreeSet::from([a_alloc, a_claim]),
        "a's requests only"
    );
    assert!(
        ipam.cancel(b_alloc) && ipam.cancel(b_claim),
        "b's still wait"
    );
}

#[test]
fn a_destroyed_container_gives_its_addresses_back_at_once() {
    let now = Instant::now();
    let mut ipam = tiny();
    let (c, other) = (Ident::new("c"), Ident::new("other"));
    let Ok(Allocation::Done(addr)) = ipam.allocate(&c, None, true, now) else {
        panic!("allocates");
    };
    let Ok(Allocation::Done(kept)) = ipam.allocate(&other, None, true, now) else {
        panic!("allocates");
    };
    ipam.handle_container_destroyed(&c);
    assert!(ipam.lookup(&c, None).is_empty(), "released without a grace");
    assert_eq!(ipam.holder(addr.ip()), None);
    assert_eq!(
        ipam.holder(kept.ip()),
        Some(&other),
        "another container keeps its own"
    );
}

/// Two seeded peers share 10.0.0.0/24; we are peer 0.
fn pair() -> Ipam {
    config_pair(1)
}

fn config_pair(seed: u64) -> Ipam {
    Ipam::new(config(Init::Seed(BTreeSet::from([peer(0), peer(1)]))), seed)
}

/// The addresses the ring gives to us: a twin allocates until its space is used up.
fn our_addresses() -> BTreeSet<Ipv4Addr> {
    let now = Instant::now();
    let mut twin = config_pair(9);
    let mut ours = BTreeSet::new();
    for i in 0..256 {
        match twin.allocate(&Ident::new(format!("t{i}")), None, true, now) {
            Ok(Allocation::Done(c)) => ours.insert(c.ip()),
            _ => break,
        };
    }
    ours
}

#[test]
fn addresses_in_use_in_another_peers_space_are_listed_with_that_owner() {
    let now = Instant::now();
    let ours = our_addresses();
    assert!(
        (100..=160).contains(&ours.len()),
        "about half of a /24 is ours: {}",
        ours.len()
    );
    let mut ipam = pair();
    // Every other address is already in use here at startup (weave's
    // "no error on unknown" claims), in both halves of the ring.
    let claimed: BTreeSet<Ipv4Addr> = (2..255u8)
        .step_by(2)
        .map(|i| Ipv4Addr::new(10, 0, 0, i))
        .collect();
    for (i, a) in claimed.iter().enumerate() {
        let c: Cidr = format!("{a}/24").parse().unwrap();
        assert!(
            matches!(
                ipam.claim(&Ident::new(format!("c{i}")), c, true, true, now),
                Ok(Allocation::Done(_))
            ),
            "{a} in use at startup is recorded"
        );
    }
    assert_eq!(ipam.active(), claimed.len());
    let unowned = ipam.unowned();
    let expected: BTreeSet<Ipv4Addr> = claimed.difference(&ours).copied().collect();
    assert!(
        !expected.is_empty(),
        "some claimed addresses lie in peer 1's space"
    );
    assert_eq!(
        unowned.iter().map(|(a, _)| *a).collect::<BTreeSet<_>>(),
        expected,
        "exactly the claimed addresses outside our space, none between them"
    );
    assert_eq!(unowned.len(), expected.len(), "each once");
    assert!(
        unowned.iter().all(|(_, owner)| *owner == peer(1)),
        "owned by peer 1: {unowned:?}"
    );
}

#[test]
fn leaving_hands_our_space_to_the_other_peer() {
    let now = Instant::now();
    let mut ipam = pair();
    let Ok(Allocation::Done(_)) = ipam.allocate(&Ident::new("a"), None, true, now) else {
        panic!("a seeded ring allocates at once");
    };
    assert_eq!(
        ipam.leave(&BTreeSet::from([peer(0), peer(1)]), now),
        Some(peer(1)),
        "the heir is the other peer, not us"
    );
}

/// A reset never hands our space to a ring peer we cannot reach now (the
/// previous incarnation of a peer that just reset, still known until the
/// mesh's garbage collection) when another peer is reachable.
#[test]
fn leaving_passes_over_a_ring_peer_that_is_not_reachable() {
    let now = Instant::now();
    let mut ipam = Ipam::new(
        config(Init::Seed(BTreeSet::from([peer(0), peer(1), peer(2)]))),
        1,
    );
    let Ok(Allocation::Done(_)) = ipam.allocate(&Ident::new("a"), None, true, now) else {
        panic!("a seeded ring allocates at once");
    };
    assert_eq!(
        ipam.leave(&BTreeSet::from([peer(0), peer(2)]), now),
        Some(peer(2)),
        "peer 1 owns ring space but is unreachable"
    );
}

#[test]
fn only_containers_missing_from_the_running_set_are_marked_dead() {
    let now = Instant::now();
    let mut ipam = tiny();
    let (up, gone) = (Ident::new("up"), Ident::new("gone"));
    for c in [&up, &gone] {
        let Ok(Allocation::Done(_)) = ipam.allocate(c, None, true, now) else {
            panic!("allocates");
        };
    }
    let running = BTreeSet::from([up.clone()]);
    assert_eq!(ipam.handle_containers_running(&running, now), vec![gone]);
    assert!(
        ipam.handle_containers_running(&running, now).is_empty(),
        "already marked"
    );
}

#[test]
fn a_full_range_says_whether_unreachable_peers_hold_the_free_space() {
    let subnet: Cidr = "10.99.0.0/29".parse().unwrap();
    let full = meshnet_ipam::Error::Full {
        subnet,
        used: 6,
        size: 6,
        unreachable: 0,
    };
    assert_eq!(
        full.to_string(),
        "no free address in 10.99.0.0/29: 6 of 6 in use"
    );
    let stranded = meshnet_ipam::Error::Full {
        subnet,
        used: 0,
        size: 6,
        unreachable: 6,
    };
    assert_eq!(
        stranded.to_string(),
        "no free address in 10.99.0.0/29: 0 of 6 in use, 6 free ones held by peers that cannot be reached: bring them back or remove them with `rmpeer`"
    );
}

#[test]
fn a_range_whose_free_half_is_on_an_unreachable_peer_says_so() {
    let now = Instant::now();
    // Peer 1 owns half the ring but has never been reachable.
    let mut ipam = pair();
    let mut outcome = None;
    for i in 0..256 {
        match ipam.allocate(&Ident::new(format!("c{i}")), None, true, now) {
            Ok(Allocation::Done(_)) => continue,
            other => {
                outcome = Some(format!("{other:?}"));
                break;
            }
        }
    }
    let mut failed = None;
    while let Some(e) = ipam.poll_event() {
        if let meshnet_ipam::Event::Failed { error, .. } = e {
            failed = Some(error.to_string());
        }
    }
    let text = failed.unwrap_or_else(|| panic!("no failure event; allocate gave {outcome:?}"));
    assert!(
        text.contains("held by peers that cannot be reached") && text.contains("rmpeer"),
        "{text}"
    );
}
