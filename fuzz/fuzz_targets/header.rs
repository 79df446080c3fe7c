//! Fuzz target: the 7-byte protocol header decoder and version negotiation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        assert_eq!(&bytes[..], &data[..7]);
        // Negotiation must never panic, whatever the peer offers.
        let _ = Header::negotiate(Header::OURS, h).map_err(|e| e.to_string());
    }
});
