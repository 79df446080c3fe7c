//! Fuzz target: the `topology` channel payload decoder (delta, full, request, digest);
//! decoded values must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::wire::TopologyMsg;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = TopologyMsg::decode(data) {
        let again = TopologyMsg::decode(&t.encode()).expect("re-encoded topology must decode");
        assert_eq!(again, t);
    }
});
