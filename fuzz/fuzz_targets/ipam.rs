//! Fuzz target `ipam`: the IPAM message decoder never panics, whatever it
//! accepts re-encodes to the same message, and feeding it to a live
//! allocator keeps the allocator's invariants.
#![no_main]

use std::collections::BTreeSet;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshnet_ipam::wire::Message;
use meshnet_ipam::{Config, Ident, Init, Ipam, PeerName};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let again = Message::decode(&msg.encode()).expect("re-encoded message decodes");
    assert_eq!(again, msg, "round trip");

    let me = PeerName::new(1).expect("name");
    let other = PeerName::new(2).expect("name");
    let seeds: BTreeSet<PeerName> = [me, other].into();
    let range = "10.0.0.0/24".parse().expect("range");
    let mut ipam = Ipam::new(Config::new(me, range, Init::Seed(seeds)), 0);
    let now = Instant::now();
    let _ = ipam.allocate(&Ident::new("a"), None, true, now);
    let _ = ipam.handle_gossip(other, data, now);
    let _ = ipam.handle_unicast(other, data, now);
    ipam.check_invariants()
        .expect("invariants after hostile input");
    while ipam.poll_transmit().is_some() {}
    while ipam.poll_event().is_some() {}
});
