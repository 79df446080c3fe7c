//! Two groups of peers initialise separately, allocate, then meet (weave
//! issues #1720, #3908, #3651, #2797, #3003). Without a live address in
//! both groups the rings merge automatically and identically everywhere;
//! with some, both sides name exactly those addresses and keep working.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{Sim, name};
use meshnet_ipam::{Event, Ident, Init};

fn split_sim(seed: u64, init_a: Init, init_b: Init) -> Sim {
    let mut sim = Sim::new(
        seed,
        "10.32.0.0/12",
        vec![init_a.clone(), init_a, init_b.clone(), init_b],
    );
    sim.nodes[2].group = 1;
    sim.nodes[3].group = 1;
    sim.peers_changed();
    sim
}

fn alloc_n(sim: &mut Sim, node: usize, n: usize) -> Vec<Ident> {
    let mut out = Vec::new();
    for _ in 0..n {
        let id = sim.new_ident();
        sim.allocate(node, &id);
        out.push(id);
        sim.advance(Duration::from_secs(1));
    }
    out
}

/// Every running container's address is owned by its own node in the ring
/// all nodes agree on.
fn assert_owned_by_holders(sim: &Sim) {
    for (i, n) in sim.nodes.iter().enumerate() {
        let ipam = n.ipam().unwrap();
        let ring = ipam.ring().unwrap();
        for (ident, c) in &n.containers {
            assert_eq!(
                ring.owner(c.addr),
                Some(n.name),
                "node {i} {ident} {c} not owned by its holder"
            );
        }
        assert!(
            ipam.conflicts().is_empty(),
            "node {i}: {:?}",
            ipam.conflicts()
        );
        assert!(ipam.unowned().is_empty(), "node {i}: {:?}", ipam.unowned());
    }
}

#[test]
fn disjoint_groups_merge_automatically() {
    for seed in 0..20 {
        let a: BTreeSet<_> = [name(0), name(1)].into();
        let b: BTreeSet<_> = [name(2), name(3)].into();
        let mut sim = split_sim(seed, Init::Seed(a), Init::Seed(b));
        // Node 0 uses the lower half, node 3 the upper half: no overlap.
        alloc_n(&mut sim, 0, 3);
        alloc_n(&mut sim, 3, 3);
        let lineages: BTreeSet<_> = sim
            .nodes
            .iter()
            .map(|n| n.ipam().unwrap().ring().unwrap().lineage())
            .collect();
        assert_eq!(lineages.len(), 2, "two separately initialised rings");
        sim.check_unique();
        sim.heal();
        sim.advance(Duration::from_secs(30));
        assert!(sim.converged(), "seed {seed}");
        assert_owned_by_holders(&sim);
        sim.check_unique();
        // Still usable everywhere, still unique.
        for i in 0..4 {
            alloc_n(&mut sim, i, 2);
        }
        sim.advance(Duration::from_secs(30));
        sim.check_unique();
        assert!(
            sim.nodes.iter().all(|n| n.waiting.is_empty()),
            "seed {seed}"
        );
        assert_owned_by_holders(&sim);
    }
}

#[test]
fn overlapping_groups_report_exact_conflicts_and_stay_usable() {
    for seed in 0..20 {
        // Each pair reaches consensus on its own.
        let mut sim = split_sim(
            seed,
            Init::Consensus { peers: 2 },
            Init::Consensus { peers: 2 },
        );
        let on0 = alloc_n(&mut sim, 0, 3);
        let on2 = alloc_n(&mut sim, 2, 2);
        sim.advance(Duration::from_secs(10));
        let ring0 = sim.nodes[0].ipam().unwrap().ring().unwrap().clone();
        let ring2 = sim.nodes[2].ipam().unwrap().ring().unwrap().clone();
        assert_ne!(ring0.lineage(), ring2.lineage());
        // Which addresses are live in both groups?
        let addrs = |node: usize, ids: &[Ident]| -> BTreeMap<u32, Ident> {
            ids.iter()
                .map(|i| (sim.nodes[node].containers[i].addr, i.clone()))
                .collect()
        };
        let a0 = addrs(0, &on0);
        let a2 = addrs(2, &on2);
        let both: BTreeSet<u32> = a0.keys().filter(|a| a2.contains_key(a)).copied().collect();
        // Both pairs split the range the same way, so node 0 and node 2
        // handed out the same lowest addresses.
        assert_eq!(both.len(), 2, "seed {seed}");
        sim.heal();
        sim.advance(Duration::from_secs(30));
        assert!(sim.converged(), "seed {seed}");
        // Both sides name exactly the shared addresses, with the other peer.
        let reported = |sim: &Sim, node: usize| -> BTreeSet<(Ipv4Addr, String)> {
            sim.nodes[node]
                .ipam()
                .unwrap()
                .conflicts()
                .into_iter()
                .map(|c| (c.addr, c.peer.to_string()))
                .collect()
        };
        let expect0: BTreeSet<_> = both
            .iter()
            .map(|a| (Ipv4Addr::from(*a), name(2).to_string()))
            .collect();
        let expect2: BTreeSet<_> = both
            .iter()
            .map(|a| (Ipv4Addr::from(*a), name(0).to_string()))
            .collect();
        assert_eq!(reported(&sim, 0), expect0, "seed {seed}");
        assert_eq!(reported(&sim, 2), expect2, "seed {seed}");
        assert!(reported(&sim, 1).is_empty() && reported(&sim, 3).is_empty());
        if !both.is_empty() {
            let ev = sim.nodes[0]
                .events
                .iter()
                .chain(&sim.nodes[2].events)
                .any(|e| matches!(e, Event::Conflict(_)));
            assert!(ev, "conflict events emitted");
        }
        // Everything else keeps working: new allocations avoid every live
        // address, including the conflicting ones.
        let live_before: BTreeSet<u32> = sim
            .nodes
            .iter()
            .flat_map(|n| n.containers.values().map(|c| c.addr))
            .collect();
        let mut fresh = Vec::new();
        for i in 0..4 {
            for id in alloc_n(&mut sim, i, 2) {
                fresh.push((i, id));
            }
        }
        sim.advance(Duration::from_secs(30));
        let mut seen = live_before.clone();
        for (i, id) in fresh {
            let c = sim.nodes[i]
                .containers
                .get(&id)
                .unwrap_or_else(|| panic!("seed {seed}: {id} on {i} never allocated"));
            assert!(seen.insert(c.addr), "seed {seed}: {c} handed out twice");
        }
        // When one side's conflicting container goes away, the other side
        // ends up owning the address and the conflict clears.
        for a in &both {
            let id = a2[a].clone();
            sim.with(2, |x| x.free_all(&id)).unwrap().unwrap();
            sim.nodes[2].containers.remove(&id);
        }
        sim.advance(Duration::from_secs(30));
        assert!(
            reported(&sim, 0).is_empty(),
            "seed {seed}: {:?}",
            reported(&sim, 0)
        );
        sim.check_unique();
    }
}
