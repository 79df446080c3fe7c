//! Edges of the allocator that the scenarios pass through without looking:
//! persisted state that hands one address to two containers is refused on
//! load, a reloaded allocator
//! is the peer it was saved as, and allocations waiting for a ring each get
//! their own request id.

use std::collections::BTreeSet;
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
