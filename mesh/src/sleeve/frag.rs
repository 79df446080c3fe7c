//! IPv4 fragmentation of frames a neighbour's path cannot carry whole, as a router on that path
//! would do: an IPv4 packet without DF that is longer than the path MTU is cut into fragments
//! that fit, and the receiving container's stack reassembles them. (Packets with DF get ICMP
//! "fragmentation needed" instead, see [`super::icmp`]; TCP segments from TSO super-frames are
//! already cut to the path MTU when they are split.) A fragment can be fragmented again: the
//! offsets stay relative to the original datagram and the last piece keeps its MF flag.
//!
//! Headers are parsed and built with etherparse. Packets carrying IPv4 options are refused
//! rather than fragmented (which options to copy into later fragments is per option); they
//! are rare in container traffic.

use etherparse::{IpFragOffset, Ipv4Header};

use super::wire::ETH_LEN;

/// Why a frame was not fragmented (nothing was emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    /// Not an Ethernet frame carrying IPv4 (IPv6 is never fragmented on the way).
    #[error("not an IPv4 frame")]
    NotIpv4,
    /// The IPv4 header or its lengths are inconsistent with the frame.
    #[error("malformed IPv4 packet")]
    Malformed,
    /// The sender forbade fragmentation; it must be told the MTU instead.
    #[error("DF is set")]
    DontFragment,
    /// The header carries options.
    #[error("IPv4 options are not fragmented")]
    Options,
    /// The MTU leaves no room for a header and 8 bytes of payload.
    #[error("path MTU {0} is too small to fragment into")]
    MtuTooSmall(u16),
    /// The scratch buffer cannot hold one fragment.
    #[error("fragment buffer too small")]
    Buffer,
}

/// Cuts the IPv4 packet in Ethernet `frame` into fragments of at most `mtu` IP bytes and hands
/// each (an Ethernet frame built in `buf`, same Ethernet header) to `each`, in order. Returns
/// how many were emitted. A packet that already fits is handed over unchanged. On error
/// nothing is emitted.
pub fn fragment(
    frame: &[u8],
    mtu: u16,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> Result<usize, FragError> {
    let (eth, ip) = frame.split_at_checked(ETH_LEN).ok_or(FragError::NotIpv4)?;
    if eth[12..14] != [0x08, 0x00] {
        return Err(FragError::NotIpv4);
    }
    let (header, _) = Ipv4Header::from_slice(ip).map_err(|_| FragError::Malformed)?;
    let hl = header.header_len();
    let total = usize::from(header.total_len);
    let payload = ip.get(hl..total).ok_or(FragError::Malformed)?;
    if total <= usize::from(mtu) {
        each(&frame[..ETH_LEN + total]);
        return Ok(1);
    }
    if header.dont_fragment {
        return Err(FragError::DontFragment);
    }
    if !header.options.is_empty() {
        return Err(FragError::Options);
    }
    // Every fragment but the last carries a multiple of 8 payload bytes.
    let step = usize::from(mtu).saturating_sub(hl) / 8 * 8;
    if step == 0 {
        return Err(FragError::MtuTooSmall(mtu));
    }
    let base = header.fragment_offset.value();
    let last_offset = (payload.len() - 1) / step * step / 8;
    let last_offset = u16::try_from(last_offset).map_err(|_| FragError::Malformed)?;
    if IpFragOffset::try_new(base.saturating_add(last_offset)).is_err() {
        return Err(FragError::Malformed);
    }
    if buf.len() < ETH_LEN + hl + step.min(payload.len()) {
        return Err(FragError::Buffer);
    }
    let mut n = 0;
    for (i, chunk) in payload.chunks(step).enumerate() {
        let offset = (i * step / 8) as u16;
        let last = (i + 1) * step >= payload.len();
        let mut h = header.clone();
        h.total_len = (hl + chunk.len()) as u16;
        h.fragment_offset =
            IpFragOffset::try_new(base + offset).map_err(|_| FragError::Malformed)?;
        h.more_fragments = header.more_fragments || !last;
        h.header_checksum = h.calc_header_checksum();
        let bytes = h.to_bytes();
        let len = ETH_LEN + bytes.len() + chunk.len();
        let out = &mut buf[..len];
        out[..ETH_LEN].copy_from_slice(eth);
        out[ETH_LEN..ETH_LEN + bytes.len()].copy_from_slice(&bytes);
        out[ETH_LEN + bytes.len()..].copy_from_slice(chunk);
        each(out);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv4HeaderSlice};

    /// An Ethernet frame with an IPv4/UDP-numbered packet of `len` IP bytes.
    fn packet(len: u16, df: bool, mf: bool, offset: u16) -> Vec<u8> {
        let mut h =
            Ipv4Header::new(len - 20, 64, IpNumber::UDP, [10, 2, 1, 1], [10, 2, 1, 2]).unwrap();
        h.identification = 0x1234;
        h.dont_fragment = df;
        h.more_fragments = mf;
        h.fragment_offset = IpFragOffset::try_new(offset).unwrap();
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        h.write(&mut f).unwrap();
        f.extend((0..usize::from(len) - 20).map(|i| (i * 7) as u8));
        f
    }

    fn fragments(frame: &[u8], mtu: u16) -> Result<Vec<Vec<u8>>, FragError> {
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::new();
        let n = fragment(frame, mtu, &mut buf, |f| out.push(f.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    #[test]
    fn a_big_packet_becomes_fragments_that_fit_and_reassemble() {
        let p = packet(1376, false, false, 0);
        let frags = fragments(&p, 616).unwrap();
        // 1356 payload bytes, 592 per fragment.
        assert_eq!(frags.len(), 3);
        let mut reassembled = vec![0u8; 1356];
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(&f[..14], &p[..14], "same Ethernet header");
            let h = Ipv4HeaderSlice::from_slice(&f[14..]).unwrap();
            assert!(
                usize::from(h.total_len()) <= 616 && f.len() == 14 + usize::from(h.total_len())
            );
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
            assert_eq!(h.identification(), 0x1234);
            assert_eq!(h.more_fragments(), i < 2);
            assert!(!h.dont_fragment());
            let at = usize::from(h.fragments_offset().byte_offset());
            assert_eq!(at, i * 592);
            reassembled[at..at + f.len() - 34].copy_from_slice(&f[34..]);
        }
        assert_eq!(&reassembled[..], &p[34..]);
    }

    #[test]
    fn a_fragment_is_fragmented_again_relative_to_its_datagram() {
        // The middle fragment of a bigger datagram: offset 1352 bytes, MF set.
        let p = packet(1372, false, true, 169);
        let frags = fragments(&p, 700).unwrap();
        let hs: Vec<Ipv4Header> = frags
            .iter()
            .map(|f| Ipv4Header::from_slice(&f[14..]).unwrap().0)
            .collect();
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].fragment_offset.value(), 169);
        assert_eq!(hs[1].fragment_offset.value(), 169 + 680 / 8);
        assert!(
            hs.iter().all(|h| h.more_fragments),
            "MF stays on the last piece"
        );
        assert_eq!(
            hs.iter()
                .map(|h| usize::from(h.total_len) - 20)
                .sum::<usize>(),
            1352
        );
    }

    #[test]
    fn refuses_what_must_not_or_cannot_be_fragmented_and_emits_nothing() {
        assert_eq!(
            fragments(&packet(1376, true, false, 0), 616),
            Err(FragError::DontFragment)
        );
        let mut arp = packet(1376, false, false, 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(fragments(&arp, 616), Err(FragError::NotIpv4));
        assert_eq!(fragments(&arp[..10], 616), Err(FragError::NotIpv4));
        let p = packet(1376, false, false, 0);
        assert_eq!(
            fragments(&p[..600], 552),
            Err(FragError::Malformed),
            "truncated"
        );
        assert_eq!(fragments(&p, 27), Err(FragError::MtuTooSmall(27)));
        // Offsets that would run past 13 bits.
        let far = packet(1376, false, true, 0x1fff - 10);
        assert_eq!(fragments(&far, 616), Err(FragError::Malformed));
        let mut buf = [0u8; 100];
        assert_eq!(
            fragment(&p, 616, &mut buf, |_| panic!("emitted")),
            Err(FragError::Buffer)
        );
        // With options.
        let mut h = Ipv4Header::new(1000, 64, IpNumber::UDP, [10, 2, 1, 1], [10, 2, 1, 2]).unwrap();
        h.dont_fragment = false;
        h.options = [1, 1, 1, 0].into();
        let mut f = p[..14].to_vec();
        h.write(&mut f).unwrap();
        f.resize(14 + 1024, 0);
        assert_eq!(fragments(&f, 616), Err(FragError::Options));
    }

    #[test]
    fn a_packet_that_fits_passes_unchanged_without_its_ethernet_padding() {
        let mut p = packet(500, true, false, 0);
        let want = p.clone();
        p.extend([0u8; 6]);
        assert_eq!(fragments(&p, 616).unwrap(), vec![want]);
    }
}
