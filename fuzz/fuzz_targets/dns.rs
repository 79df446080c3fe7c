//! Fuzz target `dns`: the `dns` channel decoder never panics, whatever it
//! accepts re-encodes to the same message, and feeding it to a live table
//! (as gossip and as broadcast) keeps the table answering.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::PeerName;
use meshnet_mesh::dns::{Dns, DnsMsg};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = DnsMsg::decode(data) {
        let again = DnsMsg::decode(&msg.encode()).expect("re-encoded message decodes");
        assert_eq!(again, msg, "round trip");
    }
    let me = PeerName::new(1).expect("name");
    let other = PeerName::new(2).expect("name");
    let mut dns = Dns::new(me);
    dns.handle_peers([other].into());
    let now = Instant::now();
    dns.add("c1", Ipv4Addr::new(10, 32, 0, 1), "web", now)
        .expect("valid registration");
    let _ = dns.handle_gossip(other, data, now);
    let _ = dns.handle_broadcast(other, data, now);
    // Our own live entry survives anything another peer says about it.
    assert_eq!(dns.lookup("web."), [Ipv4Addr::new(10, 32, 0, 1)]);
    while dns.poll_transmit().is_some() {}
    let _ = DnsMsg::decode(&dns.full_state()).expect("own state decodes");
});
