//! Sleeve UDP packets and SleeveHello: decoding never panics, opening garbage fails cleanly
//! (and never moves the replay window), and what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::sleeve::wire::{INNER_LEN, OUTER_LEN};
use meshnet_mesh::sleeve::{Control, Inner, Kind, Opener, Outer, SleeveHello};

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = SleeveHello::decode(data) {
        assert_eq!(hello.encode().as_slice(), data);
    }
    let Ok(outer) = Outer::parse(data) else {
        return;
    };
    assert_eq!(outer.to_bytes().as_slice(), &data[..OUTER_LEN]);
    // Both receiver modes: sealed (must fail authentication) and clear.
    let mut sealed = Opener::new(Some(&[0x42; 32]));
    let mut pkt = data.to_vec();
    assert!(
        sealed.open(&outer, &mut pkt).is_err(),
        "forged packet accepted"
    );
    let mut clear = Opener::new(None);
    let mut pkt = data.to_vec();
    if let Ok(range) = clear.open(&outer, &mut pkt) {
        let body = &pkt[range];
        if let Ok(inner) = Inner::parse(body) {
            assert_eq!(inner.to_bytes().as_slice(), &body[..INNER_LEN]);
            let payload = &body[INNER_LEN..];
            if let Some(c) = Control::parse(outer.kind, payload) {
                assert_ne!(outer.kind, Kind::Data);
                let mut out = vec![0u8; payload.len()];
                assert_eq!(c.emit(&mut out), Some(payload.len()));
                assert_eq!(Control::parse(outer.kind, &out), Some(c));
            }
        }
        // The same counter again is a replay.
        let mut again = data.to_vec();
        assert!(clear.open(&outer, &mut again).is_err());
    }
});
