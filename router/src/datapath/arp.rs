//! The gratuitous ARP frame sent after an address is added.
//!
//! Other hosts may have a stale ARP entry for a reused address; a broadcast
//! ARP request whose sender and target are both the new address makes every
//! listener update its cache. The frame is 42 bytes and fixed-format, so it
//! is built by hand rather than pulling in a packet crate.

use std::net::Ipv4Addr;

use super::Mac;

/// Length of an Ethernet + ARP-for-IPv4 frame without padding.
pub(crate) const GARP_LEN: usize = 42;

/// EtherType of ARP.
pub(crate) const ETH_P_ARP: u16 = 0x0806;

/// Builds a broadcast gratuitous ARP request announcing `ip` at `mac`.
pub(crate) fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> [u8; GARP_LEN] {
    let mut f = [0u8; GARP_LEN];
    let (eth, arp) = f.split_at_mut(14);
    eth[0..6].copy_from_slice(&[0xff; 6]);
    eth[6..12].copy_from_slice(&mac.0);
    eth[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    arp[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    arp[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    arp[4] = 6; // hardware address length
    arp[5] = 4; // protocol address length
    arp[6..8].copy_from_slice(&1u16.to_be_bytes()); // op: request
    arp[8..14].copy_from_slice(&mac.0); // sender MAC
    arp[14..18].copy_from_slice(&ip.octets()); // sender IP
    // target MAC stays zero, as in `arping -U`
    arp[24..28].copy_from_slice(&ip.octets()); // target IP = sender IP
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_bytes() {
        let f = gratuitous_arp(
            Mac([0x02, 0x42, 0x0a, 0x20, 0x00, 0x01]),
            Ipv4Addr::new(10, 32, 0, 1),
        );
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
            0x02, 0x42, 0x0a, 0x20, 0x00, 0x01, // src
            0x08, 0x06,                         // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,       // Ethernet/IPv4
            0x00, 0x01,                         // request
            0x02, 0x42, 0x0a, 0x20, 0x00, 0x01, 10, 32, 0, 1, // sender
            0, 0, 0, 0, 0, 0,                   10, 32, 0, 1, // target
        ];
        assert_eq!(f, want);
    }
}
