//! Micro-benchmarks of the IPAM core: allocations per second on one peer,
//! and the cost of merging, encoding and applying a ring at 1,000 peers.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshnet_ipam::ring::{Lineage, Ring};
use meshnet_ipam::wire::{GossipState, Message, Role};
use meshnet_ipam::{AddrRange, Cidr, Config, Ident, Init, Ipam, PeerName};

const PEERS: u64 = 1000;

fn range() -> Cidr {
    "10.32.0.0/12".parse().expect("range")
}

fn peer(i: u64) -> PeerName {
    PeerName::new(i).expect("bench peer names fit in 48 bits")
}

fn peers() -> BTreeSet<PeerName> {
    (1..=PEERS).map(peer).collect()
}

/// The ring of 1,000 peers, and a newer copy in which every peer donated
/// half of its space to its neighbour (3,000 tokens, every entry changed).
fn rings() -> (Ring, Ring) {
    let r = range().range();
    let base = Ring::split(AddrRange::new(r.start, r.end), &peers(), Lineage(1));
    let mut newer = base.clone();
    for p in 1..=PEERS {
        let me = peer(p);
        let to = peer(p % PEERS + 1);
        if let Some(own) = newer.owned_by(me).first().copied() {
            let half = AddrRange::new(own.start + own.size() / 2, own.end);
            newer.transfer(half, me, to).expect("own space");
        }
    }
    (base, newer)
}

fn allocate(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipam_allocate");
    let n: u64 = 10_000;
    g.throughput(Throughput::Elements(n));
    g.bench_function("10k_new_containers_one_peer", |b| {
        let idents: Vec<Ident> = (0..n)
            .map(|i| Ident::new(format!("container-{i:012}")))
            .collect();
        b.iter_batched(
            || {
                let seeds: BTreeSet<PeerName> = [peer(1)].into();
                Ipam::new(Config::new(peer(1), range(), Init::Seed(seeds)), 1)
            },
            |mut ipam| {
                let now = Instant::now();
                for id in &idents {
                    black_box(ipam.allocate(id, None, true, now).expect("allocate"));
                }
                ipam
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("10k_idempotent_repeats", |b| {
        let seeds: BTreeSet<PeerName> = [peer(1)].into();
        let mut ipam = Ipam::new(Config::new(peer(1), range(), Init::Seed(seeds)), 1);
        let now = Instant::now();
        let idents: Vec<Ident> = (0..n)
            .map(|i| Ident::new(format!("container-{i:012}")))
            .collect();
        for id in &idents {
            ipam.allocate(id, None, true, now).expect("allocate");
        }
        b.iter(|| {
            for id in &idents {
                black_box(ipam.allocate(id, None, true, now).expect("allocate"));
            }
        });
    });
    g.finish();
}

fn merge(c: &mut Criterion) {
    let (base, newer) = rings();
    let mut g = c.benchmark_group("ipam_ring_1000_peers");
    g.bench_function("merge_newer_into_older", |b| {
        b.iter_batched(
            || base.clone(),
            |mut r| {
                black_box(r.merge(&newer).expect("merge"));
                r
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("merge_unchanged", |b| {
        let mut r = newer.clone();
        b.iter(|| black_box(r.merge(&newer).expect("merge")));
    });
    let msg = Message::Gossip(GossipState {
        role: Role::Elector,
        wants_ring: false,
        paxos: None,
        ring: Some(newer.clone()),
    });
    let bytes = msg.encode();
    println!(
        "ring of {PEERS} peers, {} tokens: {} bytes on the wire",
        newer.len(),
        bytes.len()
    );
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| b.iter(|| black_box(msg.encode())));
    g.bench_function("decode_validate", |b| {
        b.iter(|| black_box(Message::decode(&bytes).expect("decode")))
    });
    g.bench_function("handle_gossip_on_peer_with_1k_containers", |b| {
        b.iter_batched(
            || {
                let mut ipam = Ipam::new(
                    Config::new(peer(1), range(), Init::Consensus { peers: 1 }),
                    1,
                );
                let now = Instant::now();
                let old = Message::Gossip(GossipState {
                    role: Role::Elector,
                    wants_ring: false,
                    paxos: None,
                    ring: Some(base.clone()),
                });
                ipam.handle_gossip(peer(2), &old.encode(), now)
                    .expect("ring");
                for i in 0..1000 {
                    let _ = ipam.allocate(&Ident::new(format!("c{i}")), None, true, now);
                }
                ipam
            },
            |mut ipam| {
                ipam.handle_gossip(peer(2), &bytes, Instant::now())
                    .expect("gossip");
                ipam
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    targets = allocate, merge
}
criterion_main!(benches);
