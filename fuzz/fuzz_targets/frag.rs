//! Frames too big for a path, at arbitrary path MTUs: IPv4 fragmentation never panics, emits
//! nothing on error, and what it emits fits the MTU and carries exactly the original payload;
//! the ICMP frag-needed answer never panics and always names the MTU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::sleeve::frag::fragment;
use meshnet_mesh::sleeve::icmp::{FRAG_NEEDED_MAX, frag_needed};

fuzz_target!(|data: &[u8]| {
    let Some((mtu, frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mtu = u16::from_be_bytes(*mtu);
    let mut answer = [0u8; FRAG_NEEDED_MAX];
    if let Some(n) = frag_needed(frame, mtu, &mut answer) {
        assert!(n <= FRAG_NEEDED_MAX);
        assert_eq!(
            &answer[40..42],
            &mtu.to_be_bytes(),
            "the answer names the MTU"
        );
    }
    let mut buf = vec![0u8; 2048];
    let mut sizes = Vec::new();
    let mut payload = 0usize;
    let r = fragment(frame, mtu, &mut buf, |f| {
        sizes.push(f.len());
        let ihl = usize::from(f[14] & 0x0f) * 4;
        payload += f.len() - 14 - ihl;
    });
    match r {
        Ok(n) => {
            assert_eq!(n, sizes.len());
            if n > 1 {
                assert!(sizes.iter().all(|&s| s <= 14 + usize::from(mtu)));
                let ihl = usize::from(frame[14] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
                assert_eq!(payload, total - ihl, "payload lost or duplicated");
            }
        }
        Err(_) => assert!(sizes.is_empty(), "emitted before failing"),
    }
});
