//! The control connection's stream framing and chunk reassembly: stream bytes in arbitrary
//! pieces yield the same frames as the whole stream, never more bytes than arrived, and
//! reassembly never returns a message over its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::wire::frame::{FrameDecoder, Reassembly};

/// The reassembly limit under fuzz: small, so inputs reach it.
const MAX: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut whole = FrameDecoder::new();
    whole.push(stream);
    let mut frames = Vec::new();
    while let Some(f) = whole.frame() {
        frames.push(f.to_vec());
    }
    let consumed: usize = frames.iter().map(|f| f.len() + 2).sum();
    assert_eq!(consumed + whole.buffered().len(), stream.len());

    let mut pieces = FrameDecoder::new();
    let mut again = Vec::new();
    for piece in stream.chunks(usize::from(cut) + 1) {
        pieces.push(piece);
        while let Some(f) = pieces.frame() {
            again.push(f.to_vec());
        }
    }
    assert_eq!(frames, again, "splitting the stream changed its frames");

    let mut r = Reassembly::new(MAX);
    for f in &frames {
        match r.push(f) {
            Ok(Some(m)) => assert!(m.len() <= MAX),
            Ok(None) => {}
            Err(_) => break,
        }
    }
});
