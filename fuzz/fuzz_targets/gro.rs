//! Receive-side coalescing fed arbitrary frames (as the sleeve receives them from the network):
//! it never panics, never writes more frames than it was given, never invents bytes (the
//! written frames are no longer than the input), keeps every written frame's IPv4 length
//! consistent, and, when nothing coalesced, writes exactly the frames it was given, those of
//! one IPv4 host pair in the order they came and every frame that is not IPv4 after all that
//! came before it.
#![no_main]

use std::io::{self, IoSlice};

use libfuzzer_sys::fuzz_target;
use meshnet_router::sleeve::gro::{Coalescer, FrameSink};
use meshnet_router::sleeve::offload::VNET_LEN;

#[derive(Default)]
struct Sink(Vec<Vec<u8>>);

impl FrameSink for Sink {
    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let frame: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let n = frame.len();
        self.0.push(frame);
        Ok(n)
    }
}

/// Cuts the input into frames: a 2-byte length, then that many bytes (the rest when short).
fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (frame, rest) = rest.split_at(len);
        out.push(frame);
        data = rest;
    }
    out
}

/// The IPv4 source and destination of a frame that says it is IPv4, if it is long enough.
fn hosts(frame: &[u8]) -> Option<&[u8]> {
    (frame.get(12..14) == Some(&[0x08, 0x00][..]))
        .then(|| frame.get(26..34))
        .flatten()
}

fuzz_target!(|data: &[u8]| {
    let input = frames(data);
    let mut coalescer = Coalescer::default();
    let mut sink = Sink::default();
    let mut writes = 0;
    for frame in &input {
        writes += coalescer
            .push(frame, &mut sink)
            .expect("the sink never fails");
    }
    writes += coalescer.flush(&mut sink).expect("the sink never fails");
    assert_eq!(
        writes,
        sink.0.len(),
        "the write count it returns is the truth"
    );
    assert!(sink.0.len() <= input.len(), "more frames out than in");
    let bytes_in: usize = input.iter().map(|f| f.len()).sum();
    let bytes_out: usize = sink.0.iter().map(|f| f.len() - VNET_LEN).sum();
    assert!(
        bytes_out <= bytes_in,
        "{bytes_out} bytes out of {bytes_in} in"
    );
    let mut coalesced = false;
    for out in &sink.0 {
        let (hdr, frame) = out.split_at(VNET_LEN);
        if hdr.iter().all(|&b| b == 0) {
            continue;
        }
        coalesced = true;
        let ip_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        assert_eq!(
            ip_len,
            frame.len() - 14,
            "IPv4 total length of a super-frame"
        );
    }
    if !coalesced {
        let written: Vec<&[u8]> = sink.0.iter().map(|f| &f[VNET_LEN..]).collect();
        assert_eq!(written.len(), input.len(), "every frame written once");
        // Where each written frame came from: the first unused input frame equal to it.
        let mut used = vec![false; input.len()];
        let mut from = Vec::new();
        for w in &written {
            let i = (0..input.len())
                .find(|&i| !used[i] && input[i] == *w)
                .expect("a written frame that was not given");
            used[i] = true;
            from.push(i);
        }
        for (a, &i) in from.iter().enumerate() {
            for &j in &from[a + 1..] {
                if j > i {
                    continue;
                }
                // Frame j came before frame i but was written after it: only frames of
                // different host pairs, both IPv4, may overtake each other.
                let (hi, hj) = (hosts(input[i]), hosts(input[j]));
                assert!(
                    hi.is_some() && hj.is_some() && hi != hj,
                    "frame {j} overtaken by frame {i}"
                );
            }
        }
    }
});
