//! ICMP "fragmentation needed" for frames the path cannot carry (weave §5.4): when a
//! neighbour's verified path MTU is below the overlay MTU, an IPv4 packet with DF set that does
//! not fit is answered locally with ICMP type 3 code 4 carrying the usable MTU, so the sender's
//! stack lowers its path MTU (and TCP its MSS) instead of losing packets silently.

/// Bytes of an answer: Ethernet 14 + IPv4 20 + ICMP 8 + quoted IPv4 header (≤ 60) + 8.
pub const FRAG_NEEDED_MAX: usize = 14 + 20 + 8 + 60 + 8;

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// True when `frame` is an IPv4 packet with DF set whose IP length exceeds `mtu`.
pub fn needs_frag_needed(frame: &[u8], mtu: u16) -> bool {
    frame.len() >= 14 + 20
        && frame[12..14] == [0x08, 0x00]
        && frame[14] >> 4 == 4
        && frame[20] & 0x40 != 0
        && u16::from_be_bytes([frame[16], frame[17]]) > mtu
}

/// Writes into `out` the Ethernet frame answering `frame` (too big for `mtu`) with ICMP
/// "fragmentation needed, next-hop MTU `mtu`", addressed back to its sender and sent from
/// its destination address. Returns its length; `None` when `frame` does not qualify (not IPv4
/// with DF, itself ICMP, malformed) or `out` is too short.
pub fn frag_needed(frame: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    if !needs_frag_needed(frame, mtu) {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 || ip.len() < ihl + 8 {
        return None;
    }
    // Never answer ICMP errors with ICMP errors (RFC 1122 3.2.2).
    if ip[9] == 1 && ip.get(ihl).is_some_and(|t| ![0u8, 8].contains(t)) {
        return None;
    }
    let quoted = ihl + 8;
    let len = 14 + 20 + 8 + quoted;
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + quoted) as u16;
    {
        let h = &mut out[14..34];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6] = 0x40;
        h[8] = 64;
        h[9] = 1;
        h[12..16].copy_from_slice(&ip[16..20]);
        h[16..20].copy_from_slice(&ip[12..16]);
        let c = checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    {
        let icmp = &mut out[34..];
        icmp[0] = 3;
        icmp[1] = 4;
        icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
        icmp[8..].copy_from_slice(&ip[..quoted]);
        let c = checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

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
