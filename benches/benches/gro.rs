//! Micro-benchmark of the sleeve's receive-side coalescing (`meshnet_router::sleeve::gro`):
//! one batch of 64 full-size TCP segments of one flow, and the same number split over two
//! and eight flows interleaved segment by segment, written to a sink that only counts, against
//! a memcpy of the same bytes. Read the results as ratios within one run: the machine is shared
//! and noisy.

use std::hint::black_box;
use std::io::{self, IoSlice};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshnet_router::sleeve::gro::{Coalescer, FrameSink};

/// Segments per batch (the sleeve receives up to this many per system call batch).
const SEGMENTS: usize = 64;
/// TCP payload per segment (an overlay MTU of 1376 less IPv4, TCP and timestamp headers).
const PAYLOAD: usize = 1324;

/// Counts the frames and bytes written.
#[derive(Default)]
struct Count(usize, usize);

impl FrameSink for Count {
    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = bufs.iter().map(|b| b.len()).sum();
        self.0 += 1;
        self.1 += n;
        Ok(n)
    }
}

/// An Ethernet + IPv4 + TCP (with the timestamp option) segment of flow `port`.
fn segment(port: u16, seq: u32) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 32 + PAYLOAD) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, 6, 0, 0, 10, 32, 0, 1, 10, 32, 0, 2,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 32];
    tcp[0..2].copy_from_slice(&port.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 8 << 4;
    tcp[13] = 0x10;
    tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend_from_slice(&tcp);
    f.resize(f.len() + PAYLOAD, 0x5a);
    f
}

/// One batch of `SEGMENTS` segments over `flows` flows, interleaved.
fn batch(flows: u16) -> Vec<Vec<u8>> {
    (0..SEGMENTS)
        .map(|i| {
            let flow = (i % usize::from(flows)) as u16;
            let nth = (i / usize::from(flows)) as u32;
            segment(40_000 + flow, 1 + nth * PAYLOAD as u32)
        })
        .collect()
}

fn gro(c: &mut Criterion) {
    let mut g = c.benchmark_group("gro_batch_64x1324");
    g.throughput(Throughput::Bytes((SEGMENTS * PAYLOAD) as u64));
    let one = batch(1);
    let mut copy = vec![0u8; 70_000 * 2];
    g.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            let mut at = 0;
            for f in black_box(&one) {
                copy[at..at + f.len()].copy_from_slice(f);
                at = (at + f.len()) % 70_000;
            }
            black_box(&copy);
        })
    });
    for flows in [1u16, 2, 8] {
        let frames = batch(flows);
        let mut coalescer = Coalescer::default();
        let mut sink = Count::default();
        g.bench_function(format!("coalesce_{flows}_flows"), |b| {
            b.iter(|| {
                for f in black_box(&frames) {
                    coalescer.push(f, &mut sink).expect("counting sink");
                }
                coalescer.flush(&mut sink).expect("counting sink");
            })
        });
        let (mut c2, mut s2) = (Coalescer::default(), Count::default());
        for f in &frames {
            c2.push(f, &mut s2).expect("counting sink");
        }
        c2.flush(&mut s2).expect("counting sink");
        println!("gro: {flows} flows -> {} TAP writes per batch", s2.0);
    }
    g.finish();
}

criterion_group!(benches, gro);
criterion_main!(benches);
