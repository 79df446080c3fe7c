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
