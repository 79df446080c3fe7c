//! Micro-benchmarks of the control-plane wire formats.
//!
//! Each group has a `baseline` (copying the same number of bytes) so that
//! results read as ratios taken in the same run, not as absolute numbers on a
//! shared, noisy machine.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshnet_mesh::wire::topology::{ConnSummary, PeerRecord, TopologyMsg};
use meshnet_mesh::{GossipMsg, Message, PeerName, PeerUid, ShortId};

fn name(i: u64) -> PeerName {
    PeerName::from_digest([0x8a, 0, 0, 0, (i >> 8) as u8, i as u8])
}

/// A full topology record set: `peers` peers with `conns` connections each.
fn topology(peers: u64, conns: u64) -> TopologyMsg {
    TopologyMsg::Full(
        (0..peers)
            .map(|p| PeerRecord {
                name: name(p),
                key: meshnet_mesh::PublicKey([p as u8; 32]),
                nickname: format!("host{p}"),
                uid: PeerUid(p * 7919 + 1),
                version: p + 3,
                short_id: ShortId::from_low_bits(p),
                listen_port: 6783,
                conns: (0..conns)
                    .map(|c| {
                        (
                            name((p + c + 1) % peers),
                            ConnSummary {
                                remote_addr: format!("192.0.2.{}:6783", (p + c) % 250),
                                outbound: c % 2 == 0,
                                established: true,
                            },
                        )
                    })
                    .collect(),
            })
            .collect(),
    )
}

fn bench_topology(c: &mut Criterion) {
    let msg = topology(100, 10);
    let bytes = msg.encode();
    let mut g = c.benchmark_group("topology_full_100x10");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("baseline_copy", |b| b.iter(|| black_box(bytes.clone())));
    g.bench_function("encode", |b| b.iter(|| black_box(msg.encode())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(TopologyMsg::decode(black_box(&bytes))))
    });
    g.finish();
}

fn bench_gossip_message(c: &mut Criterion) {
    let msg = Message::Gossip(GossipMsg {
        channel: "ipam".into(),
        src: name(1),
        payload: vec![7u8; 1024],
    });
    let bytes = msg.encode();
    let mut g = c.benchmark_group("gossip_message_1k");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("baseline_copy", |b| b.iter(|| black_box(bytes.clone())));
    g.bench_function("encode", |b| b.iter(|| black_box(msg.encode())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(Message::decode(black_box(&bytes))))
    });
    g.finish();
}

criterion_group!(benches, bench_topology, bench_gossip_message);
criterion_main!(benches);
