//! The handshake state machine fed arbitrary peer bytes, as initiator or responder, with or
//! without a password, optionally after a valid header and password flag so the fuzzer reaches
//! the Noise messages and verdicts: it never panics, ends with at most one final event, and
//! sends nothing after it failed.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::handshake::{
    Decision, Handshake, HandshakeConfig, HandshakeEvent, Psk, generate_keypair,
};
use meshnet_mesh::{Header, Hello, PeerUid, PublicKey, ShortId};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    // One key pair for every input: generating one per input costs a scalar
    // multiplication under the sanitizer and dominated the target's time.
    let (private, public) = KEYPAIR.with(|k| k.clone());
    let with_password = mode & 2 != 0;
    let hello = Hello {
        name: public.derived_name(),
        name_derived: true,
        nickname: "fuzz".into(),
        uid: PeerUid(1),
        conn_half: 1,
        short_id: ShortId::from_low_bits(1),
        listen_port: 6783,
        trusted: false,
    };
    let config = HandshakeConfig {
        private_key: private,
        // A fixed key: deriving one per input would make the target too slow to explore.
        psk: with_password.then(|| PSK.with(|p| p.clone())),
        hello,
        outbound: mode & 1 != 0,
        seed: [2; 32],
    };
    let now = Instant::now();
    let mut hs = Handshake::new(config, now);
    let mut prefix = Vec::new();
    if mode & 4 != 0 {
        prefix.extend_from_slice(&Header::OURS.encode());
        prefix.push(u8::from(with_password));
    }
    let piece = usize::from(mode >> 3) + 1;
    let mut ended = false;
    for bytes in [&prefix[..], input]
        .into_iter()
        .flat_map(|b| b.chunks(piece))
    {
        hs.handle_input(bytes, now);
        let _ = hs.poll_transmit();
        while let Some(event) = hs.poll_event() {
            match event {
                HandshakeEvent::Authenticated { .. } => hs.handle_decision(Decision::Accept, now),
                HandshakeEvent::Established(_) | HandshakeEvent::Failed { .. } => {
                    assert!(!ended, "two final events");
                    ended = true;
                }
            }
        }
        if ended {
            let _ = hs.poll_transmit();
            hs.handle_input(bytes, now);
            assert!(hs.poll_event().is_none(), "an event after the end");
            assert!(hs.poll_transmit().is_none(), "bytes sent after the end");
        }
    }
});

thread_local! {
    static PSK: Psk = Psk::derive("fuzz");
    static KEYPAIR: (Vec<u8>, PublicKey) =
        generate_keypair([1; 32]).expect("a key pair from a seed");
}
