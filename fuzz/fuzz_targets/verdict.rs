//! Fuzz target: the post-handshake verdict frame and verdict decoders (typed refusals);
//! decoded values must round-trip, unknown refusal codes included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::{Verdict, VerdictFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Verdict::decode(data) {
        let again = Verdict::decode(&v.encode()).expect("re-encoded verdict must decode");
        assert_eq!(again, v);
    }
    if let Ok(VerdictFrame::Hint(v)) = VerdictFrame::decode(data) {
        let frame = VerdictFrame::hint(&v);
        assert_eq!(VerdictFrame::decode(&frame), Ok(VerdictFrame::Hint(v)));
    }
});
