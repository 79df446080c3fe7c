//! Overlay control messages and fastdp heartbeat frames: decoding never
//! panics, and what decodes re-encodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::overlay::{FastdpHello, Heartbeat};

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = FastdpHello::decode(data) {
        assert_eq!(FastdpHello::decode(&hello.encode()), Ok(hello));
    }
    if let Some(hb) = Heartbeat::decode(data) {
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&data[0..6]);
        src.copy_from_slice(&data[6..12]);
        assert_eq!(Heartbeat::decode(&hb.encode(dst, src)), Some(hb));
    }
});
