//! Fuzz target: the application message decoder (tag + gossip envelopes); decoded values
//! must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("re-encoded message must decode");
        assert_eq!(again, m);
    }
});
