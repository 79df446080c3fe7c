//! Receive-side coalescing: consecutive in-order segments of one IPv4 TCP flow received in a
//! batch are merged into one TSO super-frame and written to the TAP with a virtio GSO header,
//! so the local stack handles one 64 KiB frame instead of ~45 (the mirror of what the kernel
//! does for us on the sending side).
//!
//! Only the plain case coalesces: Ethernet + IPv4 without options, not fragmented, TCP with
//! flags ACK or ACK|PSH (PSH ends a run), equal headers apart from sequence number, IP id and
//! checksums, each segment starting where the last ended, all segments the size of the first
//! except a shorter last one. Everything else is written as it came, in order.

use std::io::{self, IoSlice};

use tun_rs::VirtioNetHdr;

use super::offload::VNET_LEN;

const ETH: usize = 14;
const IP: usize = 20;
const TCP_MIN: usize = 20;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
/// Segments per super-frame; keeps one write's latency bounded.
const MAX_SEGMENTS: usize = 64;
const ZERO_HDR: [u8; VNET_LEN] = [0; VNET_LEN];

/// Where coalesced frames go: one vectored write per frame (virtio header included).
pub trait FrameSink {
    /// Writes one frame given as slices.
    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl FrameSink for &tun_rs::SyncDevice {
    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(bufs)
    }
}

/// The fields of a coalescing candidate.
#[derive(Clone, Copy)]
struct Seg {
    thl: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

fn parse(frame: &[u8]) -> Option<Seg> {
    if frame.len() < ETH + IP + TCP_MIN || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    // Version 4, no options, protocol TCP, not a fragment (MF clear, offset 0).
    if ip[0] != 0x45 || ip[9] != 6 || (u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff) != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total != frame.len() - ETH {
        return None;
    }
    let tcp = &ip[IP..];
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < TCP_MIN || IP + thl > total {
        return None;
    }
    let flags = tcp[13];
    if flags & !PSH != ACK {
        return None;
    }
    Some(Seg {
        thl,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags,
        payload: total - IP - thl,
    })
}

/// True when `b`'s headers match the run's first headers `a` (same length), ignoring the
/// IP total length, id and checksum and the TCP sequence number, flags and checksum.
fn same_flow(a: &[u8], b: &[u8]) -> bool {
    let ip = ETH;
    let tcp = ETH + IP;
    a.len() == b.len()
        && a[..ip + 2] == b[..ip + 2]
        && a[ip + 6..ip + 10] == b[ip + 6..ip + 10]
        && a[ip + 12..tcp + 4] == b[ip + 12..tcp + 4]
        && a[tcp + 8..tcp + 13] == b[tcp + 8..tcp + 13]
        && a[tcp + 14..tcp + 16] == b[tcp + 14..tcp + 16]
        && a[tcp + 18..] == b[tcp + 18..]
}

/// Merges segments into one super-frame buffer.
#[derive(Debug)]
pub struct Coalescer {
    buf: Vec<u8>,
    /// Bytes used in `buf` (virtio header included); 0 when empty.
    len: usize,
    hdr_len: usize,
    gso_size: usize,
    next_seq: u32,
    count: usize,
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            // Header + Ethernet + the largest IPv4 datagram: `fits` bounds runs by the IP
            // total length, and one received frame is at most a 64 KiB UDP payload.
            buf: vec![0; VNET_LEN + ETH + 65_536],
            len: 0,
            hdr_len: 0,
            gso_size: 0,
            next_seq: 0,
            count: 0,
            closed: false,
        }
    }
}

impl Coalescer {
    /// Takes one frame to inject; earlier frames are written first whenever this one cannot
    /// join them, so order is kept. Returns the number of TAP writes made.
    pub fn push(&mut self, frame: &[u8], sink: &mut impl FrameSink) -> io::Result<usize> {
        let Some(seg) = parse(frame) else {
            let n = self.flush(sink)?;
            sink.write_frame(&[IoSlice::new(&ZERO_HDR), IoSlice::new(frame)])?;
            return Ok(n + 1);
        };
        if self.count > 0 && self.fits(frame, &seg) {
            let at = self.len;
            let payload = &frame[frame.len() - seg.payload..];
            self.buf[at..at + seg.payload].copy_from_slice(payload);
            self.len += seg.payload;
            self.count += 1;
            self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
            if seg.flags & PSH != 0 {
                self.buf[VNET_LEN + ETH + IP + 13] |= PSH;
            }
            self.closed = seg.payload < self.gso_size || seg.flags & PSH != 0;
            return Ok(0);
        }
        let n = self.flush(sink)?;
        let Some(dst) = self.buf.get_mut(VNET_LEN..VNET_LEN + frame.len()) else {
            sink.write_frame(&[IoSlice::new(&ZERO_HDR), IoSlice::new(frame)])?;
            return Ok(n + 1);
        };
        dst.copy_from_slice(frame);
        self.len = VNET_LEN + frame.len();
        self.hdr_len = ETH + IP + seg.thl;
        self.gso_size = seg.payload;
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        self.count = 1;
        self.closed = seg.payload == 0 || seg.flags & PSH != 0;
        Ok(n)
    }

    fn fits(&self, frame: &[u8], seg: &Seg) -> bool {
        !self.closed
            && seg.seq == self.next_seq
            && seg.payload > 0
            && seg.payload <= self.gso_size
            && ETH + IP + seg.thl == self.hdr_len
            && self.count < MAX_SEGMENTS
            && self.len - VNET_LEN - ETH + seg.payload <= usize::from(u16::MAX)
            && same_flow(
                &self.buf[VNET_LEN..VNET_LEN + self.hdr_len],
                &frame[..self.hdr_len],
            )
    }

    /// Writes what is pending (call at the end of every receive batch). Returns writes made.
    pub fn flush(&mut self, sink: &mut impl FrameSink) -> io::Result<usize> {
        if self.count == 0 {
            return Ok(0);
        }
        let count = self.count;
        self.count = 0;
        let len = std::mem::take(&mut self.len);
        if count == 1 {
            self.buf[..VNET_LEN].fill(0);
        } else {
            let ip_at = VNET_LEN + ETH;
            let tcp_at = ip_at + IP;
            let total = len - ip_at;
            let total16 = u16::try_from(total).unwrap_or(u16::MAX);
            self.buf[ip_at + 2..ip_at + 4].copy_from_slice(&total16.to_be_bytes());
            self.buf[ip_at + 10..ip_at + 12].fill(0);
            let ip_sum = !tun_rs::checksum(&self.buf[ip_at..ip_at + IP], 0);
            self.buf[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
            // NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum, not complemented.
            let mut pseudo = [0u8; 12];
            pseudo[..8].copy_from_slice(&self.buf[ip_at + 12..ip_at + 20]);
            pseudo[9] = 6;
            pseudo[10..].copy_from_slice(&((total - IP) as u16).to_be_bytes());
            let seed = tun_rs::checksum(&pseudo, 0);
            self.buf[tcp_at + 16..tcp_at + 18].copy_from_slice(&seed.to_be_bytes());
            let hdr = VirtioNetHdr {
                flags: NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: self.hdr_len as u16,
                gso_size: self.gso_size as u16,
                csum_start: (ETH + IP) as u16,
                csum_offset: 16,
            };
            hdr.encode(&mut self.buf[..VNET_LEN])?;
        }
        sink.write_frame(&[IoSlice::new(&self.buf[..len])])?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(Vec<Vec<u8>>);

    impl FrameSink for Sink {
        fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let v: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = v.len();
            self.0.push(v);
            Ok(n)
        }
    }

    fn seg(seq: u32, payload: usize, flags: u8, port: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (IP + 32 + payload) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, 6, 0, 0, 10, 32, 0, 1, 10, 32, 0, 2,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let s = !tun_rs::checksum(&ip, 0);
        ip[10..12].copy_from_slice(&s.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 32];
        tcp[0..2].copy_from_slice(&port.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&77u32.to_be_bytes());
        tcp[12] = 8 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
        tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        f.extend_from_slice(&tcp);
        f.extend((0..payload).map(|i| (seq as usize + i) as u8));
        f
    }

    #[test]
    fn a_run_of_segments_becomes_one_tso_frame() {
        let mut c = Coalescer::default();
        let mut sink = Sink::default();
        let mut writes = 0;
        for (i, len) in [1000usize, 1000, 1000, 400].iter().enumerate() {
            let flags = if i == 3 { ACK | PSH } else { ACK };
            writes += c
                .push(&seg(1000 + 1000 * i as u32, *len, flags, 40000), &mut sink)
                .unwrap();
        }
        writes += c.flush(&mut sink).unwrap();
        assert_eq!(writes, 1);
        let f = &sink.0[0];
        let hdr = VirtioNetHdr::decode(f).unwrap();
        assert_eq!(
            (
                hdr.flags,
                hdr.gso_type,
                hdr.hdr_len,
                hdr.gso_size,
                hdr.csum_start,
                hdr.csum_offset
            ),
            (NEEDS_CSUM, GSO_TCPV4, 66, 1000, 34, 16)
        );
        let frame = &f[VNET_LEN..];
        assert_eq!(frame.len(), 66 + 3400);
        assert_eq!(
            u16::from_be_bytes([frame[16], frame[17]]) as usize,
            20 + 32 + 3400
        );
        assert_eq!(tun_rs::checksum(&frame[14..34], 0), 0xffff, "IP checksum");
        assert_eq!(
            frame[14 + 20 + 13],
            ACK | PSH,
            "PSH of the last segment kept"
        );
        let want: Vec<u8> = (0..4)
            .flat_map(|i: u32| {
                let len = if i == 3 { 400 } else { 1000 };
                (0..len).map(move |j| (1000 + 1000 * i as usize + j) as u8)
            })
            .collect();
        assert_eq!(&frame[66..], want.as_slice());
    }

    #[test]
    fn gaps_other_flows_and_non_tcp_break_runs_in_order() {
        let mut c = Coalescer::default();
        let mut sink = Sink::default();
        c.push(&seg(1, 100, ACK, 1), &mut sink).unwrap();
        c.push(&seg(101, 100, ACK, 1), &mut sink).unwrap();
        // A gap in sequence.
        c.push(&seg(301, 100, ACK, 1), &mut sink).unwrap();
        // Another flow.
        c.push(&seg(401, 100, ACK, 2), &mut sink).unwrap();
        // An ARP-sized non-IP frame.
        let arp = [0xffu8; 60];
        c.push(&arp, &mut sink).unwrap();
        // A SYN is never coalesced.
        c.push(&seg(1, 0, 0x02, 3), &mut sink).unwrap();
        c.flush(&mut sink).unwrap();
        let sizes: Vec<usize> = sink.0.iter().map(|f| f.len() - VNET_LEN).collect();
        assert_eq!(sizes, vec![66 + 200, 66 + 100, 66 + 100, 60, 66]);
        // Single frames go out untouched, with an all-zero virtio header.
        assert_eq!(&sink.0[1][..VNET_LEN], &ZERO_HDR);
        assert_eq!(&sink.0[1][VNET_LEN..], seg(301, 100, ACK, 1).as_slice());
        assert_eq!(&sink.0[3][VNET_LEN..], &arp[..]);
        assert_eq!(VirtioNetHdr::decode(&sink.0[0]).unwrap().gso_size, 100);
    }
}
