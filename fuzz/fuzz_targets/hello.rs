//! Fuzz target: the handshake payload decoder; decoded values must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::Hello;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Hello::decode(data) {
        let again = Hello::decode(&h.encode()).expect("re-encoded hello must decode");
        assert_eq!(again, h);
    }
});
