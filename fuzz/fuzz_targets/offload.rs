//! The TAP offload splitter fed arbitrary virtio-header frames and path limits: it never
//! panics, and every segment it cuts from a GSO super-frame fits a sleeve segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_router::sleeve::offload::Splitter;

/// Largest frame a split segment may be (the splitter's segment room).
const SEGMENT_ROOM: usize = 1536;

fuzz_target!(|data: &[u8]| {
    let Some((limit, frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = u16::from_be_bytes(*limit);
    let limit = (limit != 0).then_some(limit);
    let mut buf = frame.to_vec();
    let gso = buf.get(1).copied().unwrap_or(0) != 0;
    let mut sizes = Vec::new();
    let _ = SPLITTER.with_borrow_mut(|s| s.split(&mut buf, limit, |f| sizes.push(f.len())));
    if gso {
        for &n in &sizes {
            assert!(n <= SEGMENT_ROOM, "segment of {n} bytes");
        }
    }
});

thread_local! {
    // Reused as the sleeve reuses it (a fresh one allocates 384 KiB per input).
    static SPLITTER: std::cell::RefCell<Splitter> = std::cell::RefCell::new(Splitter::default());
}
