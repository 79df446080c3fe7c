//! ICMP "fragmentation needed" for frames the path cannot carry: when a
//! neighbour's verified path MTU is below the overlay MTU, an IPv4 packet with DF set that does
//! not fit is answered locally with ICMP type 3 code 4 carrying the usable MTU, so the sender's
//! stack lowers its path MTU (and TCP its MSS) instead of losing packets silently.
//!
//! Headers are parsed and built with etherparse (checksums included).

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, Ipv4HeaderSlice};

/// Bytes of an answer: Ethernet 14 + IPv4 20 + ICMP 8 + quoted IPv4 header (≤ 60) + 8.
pub const FRAG_NEEDED_MAX: usize = 14 + 20 + 8 + 60 + 8;
const ETH: usize = 14;
/// TTL of the answers (Linux's default).
const TTL: u8 = 64;

/// The IPv4 header of `frame` when it is an IPv4 packet with DF set whose IP length exceeds
/// `mtu`.
fn too_big_df(frame: &[u8], mtu: u16) -> Option<Ipv4HeaderSlice<'_>> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = Ipv4HeaderSlice::from_slice(frame.get(ETH..)?).ok()?;
    (ip.dont_fragment() && ip.total_len() > mtu).then_some(ip)
}

/// True when `frame` is an IPv4 packet with DF set whose IP length exceeds `mtu`.
pub fn needs_frag_needed(frame: &[u8], mtu: u16) -> bool {
    too_big_df(frame, mtu).is_some()
}

/// Writes into `out` the Ethernet frame answering `frame` (too big for `mtu`) with ICMP
/// "fragmentation needed, next-hop MTU `mtu`", addressed back to its sender and sent from
/// its destination address. Returns its length; `None` when `frame` does not qualify (not IPv4
/// with DF, itself ICMP, malformed) or `out` is too short.
pub fn frag_needed(frame: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let ip = too_big_df(frame, mtu)?;
    let ihl = ip.slice().len();
    // The IP header and the first 8 bytes of its payload are quoted (RFC 792).
    let quoted = frame.get(ETH..ETH + ihl + 8)?;
    // Never answer ICMP errors with ICMP errors (RFC 1122 3.2.2).
    if ip.protocol() == IpNumber::ICMP && ![0u8, 8].contains(&quoted[ihl]) {
        return None;
    }
    let icmp = Icmpv4Header::with_checksum(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu,
        }),
        quoted,
    );
    let icmp_len = icmp.header_len() + quoted.len();
    let mut reply = Ipv4Header::new(
        u16::try_from(icmp_len).ok()?,
        TTL,
        IpNumber::ICMP,
        ip.destination(),
        ip.source(),
    )
    .ok()?;
    reply.dont_fragment = true;
    reply.header_checksum = reply.calc_header_checksum();
    let ip_bytes = reply.to_bytes();
    let icmp_bytes = icmp.to_bytes();
    let len = ETH + ip_bytes.len() + icmp_len;
    let out = out.get_mut(..len)?;
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let (ip_out, rest) = out[ETH..].split_at_mut(ip_bytes.len());
    ip_out.copy_from_slice(&ip_bytes);
    let (icmp_out, quote_out) = rest.split_at_mut(icmp_bytes.len());
    icmp_out.copy_from_slice(&icmp_bytes);
    quote_out.copy_from_slice(quoted);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Internet checksum (RFC 1071): 0 over a block whose checksum field is right.
    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn packet(len: u16, df: bool, proto: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = vec![
            0x45,
            0,
            0,
            0,
            0,
            9,
            if df { 0x40 } else { 0 },
            0,
            64,
            proto,
            0,
            0,
        ];
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        ip.extend_from_slice(&[10, 32, 0, 1, 10, 32, 0, 2]);
        f.extend_from_slice(&ip);
        f.extend((0..usize::from(len) - 20).map(|i| i as u8));
        f
    }

    #[test]
    fn answers_a_too_big_df_packet() {
        let p = packet(1376, true, 6);
        let mut out = [0u8; FRAG_NEEDED_MAX];
        let n = frag_needed(&p, 1116, &mut out).unwrap();
        let a = &out[..n];
        assert_eq!(n, 14 + 20 + 8 + 28);
        assert_eq!(&a[..6], &p[6..12], "back to the sender's MAC");
        assert_eq!(&a[6..12], &p[..6]);
        assert_eq!(&a[26..30], &[10, 32, 0, 2], "from the original destination");
        assert_eq!(&a[30..34], &[10, 32, 0, 1], "to the original source");
        assert_eq!((a[34], a[35]), (3, 4));
        assert_eq!(u16::from_be_bytes([a[40], a[41]]), 1116);
        assert_eq!(&a[42..], &p[14..14 + 28], "quotes the IP header + 8 bytes");
        assert_eq!(checksum(&a[14..34]), 0, "IP checksum verifies");
        assert_eq!(checksum(&a[34..]), 0, "ICMP checksum verifies");
    }

    #[test]
    fn leaves_other_packets_alone() {
        let mut out = [0u8; FRAG_NEEDED_MAX];
        assert_eq!(
            frag_needed(&packet(1376, false, 6), 1116, &mut out),
            None,
            "no DF"
        );
        assert_eq!(
            frag_needed(&packet(1000, true, 6), 1116, &mut out),
            None,
            "fits"
        );
        let mut icmp_err = packet(1376, true, 1);
        icmp_err[34] = 3;
        assert_eq!(frag_needed(&icmp_err, 1116, &mut out), None, "ICMP error");
        let mut echo = packet(1376, true, 1);
        echo[34] = 8;
        assert!(frag_needed(&echo, 1116, &mut out).is_some(), "echo request");
        assert_eq!(frag_needed(&[0u8; 20], 1116, &mut out), None);
        assert_eq!(
            frag_needed(&packet(1376, true, 6), 1116, &mut out[..40]),
            None
        );
    }
}
