//! Receive-side coalescing: in-order segments of IPv4 TCP flows received in one batch are
//! merged into TSO super-frames and written to the TAP with a virtio GSO header, so the local
//! stack handles one 64 KiB frame instead of ~45 (the mirror of what the kernel does for us on
//! the sending side). Up to [`MAX_FLOWS`] flows are coalesced side by side, so flows whose
//! segments arrive interleaved do not cut each other's runs.
//!
//! Only the plain case coalesces: Ethernet + IPv4 without options, not fragmented, TCP with
//! flags ACK or ACK|PSH (PSH ends a run), equal headers apart from sequence number, IP id and
//! checksums, each segment starting where the last ended, all segments the size of the first
//! except a shorter last one. Everything else is written as it came.
//!
//! Order: each flow's segments keep their order; a frame that does not coalesce is written
//! after the pending runs of its two IPv4 hosts (after everything pending when it is not IPv4);
//! different flows may overtake each other within one batch, as with the kernel's own GRO.
//! Headers are read with etherparse and checksums computed with it.

use std::io::{self, IoSlice};

use etherparse::checksum::Sum16BitWords;
use etherparse::{EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, TcpHeaderSlice};
use tun_rs::VirtioNetHdr;

use super::offload::VNET_LEN;

const ETH: usize = 14;
const IP: usize = 20;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
/// Segments per super-frame; keeps one write's latency bounded.
const MAX_SEGMENTS: usize = 64;
/// Flows coalesced at once; a segment of one more flow first writes out the oldest run.
pub const MAX_FLOWS: usize = 8;
/// One run's buffer: the virtio header, Ethernet and the largest IPv4 datagram (`fits` bounds
/// runs by the IP total length, and one received frame is at most a 64 KiB UDP payload).
const RUN_BUF: usize = VNET_LEN + ETH + 65_536;
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

/// The two hosts of an IPv4 packet: source then destination address.
type Hosts = [u8; 8];

/// A TCP flow: its hosts and its ports, in the direction of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    hosts: Hosts,
    ports: [u16; 2],
}

/// The fields of a coalescing candidate.
#[derive(Clone, Copy)]
struct Seg {
    key: FlowKey,
    thl: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// What a frame is, for coalescing.
enum Kind {
    /// A TCP segment that may join a run.
    Seg(Seg),
    /// Another IPv4 packet: it must follow what is pending between its two hosts.
    Ipv4(Hosts),
    /// Not IPv4 (or not readable as such): it must follow everything pending.
    Other,
}

fn classify(frame: &[u8]) -> Kind {
    match Ethernet2HeaderSlice::from_slice(frame) {
        Ok(eth) if eth.ether_type() == EtherType::IPV4 => {}
        _ => return Kind::Other,
    }
    let Ok(ip) = Ipv4HeaderSlice::from_slice(&frame[ETH..]) else {
        return Kind::Other;
    };
    let mut hosts = [0u8; 8];
    hosts[..4].copy_from_slice(&ip.source());
    hosts[4..].copy_from_slice(&ip.destination());
    let total = usize::from(ip.total_len());
    // No options, TCP, not a fragment, no padding after the datagram.
    if ip.ihl() != 5
        || ip.protocol() != IpNumber::TCP
        || ip.is_fragmenting_payload()
        || total != frame.len() - ETH
    {
        return Kind::Ipv4(hosts);
    }
    let Ok(tcp) = TcpHeaderSlice::from_slice(&frame[ETH + IP..]) else {
        return Kind::Ipv4(hosts);
    };
    let thl = tcp.slice().len();
    let flags = tcp.slice()[13];
    if flags & !PSH != ACK || IP + thl >= total {
        // Not plain data (SYN, FIN, RST, URG, ECN flags) or no payload (a pure ACK).
        return Kind::Ipv4(hosts);
    }
    Kind::Seg(Seg {
        key: FlowKey {
            hosts,
            ports: [tcp.source_port(), tcp.destination_port()],
        },
        thl,
        seq: tcp.sequence_number(),
        flags,
        payload: total - IP - thl,
    })
}

/// True when `b`'s headers match the run's first headers `a` (same length), ignoring the
/// IP total length, id and checksum and the TCP sequence number, flags and checksum.
fn same_headers(a: &[u8], b: &[u8]) -> bool {
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

/// One flow's pending segments, merged into one super-frame buffer.
#[derive(Debug)]
struct Run {
    key: FlowKey,
    buf: Vec<u8>,
    /// Bytes used in `buf` (virtio header included).
    len: usize,
    hdr_len: usize,
    gso_size: usize,
    next_seq: u32,
    count: usize,
    closed: bool,
}

impl Run {
    fn fits(&self, frame: &[u8], seg: &Seg) -> bool {
        !self.closed
            && seg.seq == self.next_seq
            && seg.payload <= self.gso_size
            && ETH + IP + seg.thl == self.hdr_len
            && self.count < MAX_SEGMENTS
            && self.len - VNET_LEN - ETH + seg.payload <= usize::from(u16::MAX)
            && same_headers(
                &self.buf[VNET_LEN..VNET_LEN + self.hdr_len],
                &frame[..self.hdr_len],
            )
    }

    fn append(&mut self, frame: &[u8], seg: &Seg) {
        let at = self.len;
        self.buf[at..at + seg.payload].copy_from_slice(&frame[frame.len() - seg.payload..]);
        self.len += seg.payload;
        self.count += 1;
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        if seg.flags & PSH != 0 {
            self.buf[VNET_LEN + ETH + IP + 13] |= PSH;
        }
        self.closed = seg.payload < self.gso_size || seg.flags & PSH != 0;
    }

    /// Writes the run: the frame as it came when it holds one segment, else a super-frame.
    fn write(&mut self, sink: &mut impl FrameSink) -> io::Result<()> {
        if self.count == 1 {
            self.buf[..VNET_LEN].fill(0);
        } else {
            let ip_at = VNET_LEN + ETH;
            let tcp_at = ip_at + IP;
            let total = self.len - ip_at;
            let total16 = u16::try_from(total).unwrap_or(u16::MAX);
            self.buf[ip_at + 2..ip_at + 4].copy_from_slice(&total16.to_be_bytes());
            self.buf[ip_at + 10..ip_at + 12].fill(0);
            let ip_sum = Sum16BitWords::new()
                .add_slice(&self.buf[ip_at..ip_at + IP])
                .ones_complement()
                .to_be();
            self.buf[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
            // NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum, not complemented.
            // (etherparse sums in native byte order: `to_be` gives the value.)
            let seed = (!Sum16BitWords::new()
                .add_slice(&self.buf[ip_at + 12..ip_at + 20])
                .add_2bytes([0, 6])
                .add_2bytes(((total - IP) as u16).to_be_bytes())
                .ones_complement())
            .to_be();
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
        sink.write_frame(&[IoSlice::new(&self.buf[..self.len])])?;
        Ok(())
    }
}

/// Merges segments into super-frames, one run per flow.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// Pending runs, oldest first.
    runs: Vec<Run>,
    /// Buffers of written runs, kept for the next ones.
    spare: Vec<Vec<u8>>,
}

impl Coalescer {
    /// Takes one frame to inject; pending frames it must follow are written first (see the
    /// module doc). Returns the number of TAP writes made.
    pub fn push(&mut self, frame: &[u8], sink: &mut impl FrameSink) -> io::Result<usize> {
        let seg = match classify(frame) {
            Kind::Seg(seg) => seg,
            Kind::Ipv4(hosts) => {
                let n = self.flush_where(sink, |r| r.key.hosts == hosts)?;
                return Ok(n + write_raw(frame, sink)?);
            }
            Kind::Other => {
                let n = self.flush(sink)?;
                return Ok(n + write_raw(frame, sink)?);
            }
        };
        let mut n = 0;
        if let Some(i) = self.runs.iter().position(|r| r.key == seg.key) {
            if self.runs[i].fits(frame, &seg) {
                self.runs[i].append(frame, &seg);
                return Ok(0);
            }
            n += self.write_at(i, sink)?;
        }
        if self.runs.len() == MAX_FLOWS {
            n += self.write_at(0, sink)?;
        }
        let mut buf = self.spare.pop().unwrap_or_else(|| vec![0; RUN_BUF]);
        buf[VNET_LEN..VNET_LEN + frame.len()].copy_from_slice(frame);
        self.runs.push(Run {
            key: seg.key,
            buf,
            len: VNET_LEN + frame.len(),
            hdr_len: ETH + IP + seg.thl,
            gso_size: seg.payload,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            count: 1,
            closed: seg.flags & PSH != 0,
        });
        Ok(n)
    }

    /// Writes what is pending, oldest run first (call at the end of every receive batch).
    /// Returns writes made.
    pub fn flush(&mut self, sink: &mut impl FrameSink) -> io::Result<usize> {
        self.flush_where(sink, |_| true)
    }

    /// Writes the pending runs that `pick` selects, oldest first.
    fn flush_where(
        &mut self,
        sink: &mut impl FrameSink,
        pick: impl Fn(&Run) -> bool,
    ) -> io::Result<usize> {
        let mut n = 0;
        let mut i = 0;
        while i < self.runs.len() {
            if pick(&self.runs[i]) {
                n += self.write_at(i, sink)?;
            } else {
                i += 1;
            }
        }
        Ok(n)
    }

    /// Writes and retires run `i`; its buffer is kept even when the write fails.
    fn write_at(&mut self, i: usize, sink: &mut impl FrameSink) -> io::Result<usize> {
        let mut run = self.runs.remove(i);
        let written = run.write(sink);
        self.spare.push(run.buf);
        written.map(|()| 1)
    }
}

/// Writes `frame` as it came, with an all-zero virtio header.
fn write_raw(frame: &[u8], sink: &mut impl FrameSink) -> io::Result<usize> {
    sink.write_frame(&[IoSlice::new(&ZERO_HDR), IoSlice::new(frame)])?;
    Ok(1)
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
        // Finish the TCP checksum as the kernel does from the seed (one's complement of the sum
        // from csum_start), then verify it over the pseudo-header and the whole segment.
        let mut tcp = frame[34..].to_vec();
        let done = !tun_rs::checksum(&tcp, 0);
        tcp[16..18].copy_from_slice(&done.to_be_bytes());
        let mut pseudo = frame[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        let pseudo_sum = u64::from(tun_rs::checksum(&pseudo, 0));
        assert_eq!(tun_rs::checksum(&tcp, pseudo_sum), 0xffff, "TCP checksum");
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

    /// The payload bytes `seg` carries for `seq..seq+len`.
    fn bytes(seq: u32, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize + i) as u8).collect()
    }

    /// The virtio GSO size and the TCP payload of a written frame.
    fn parts(written: &[u8]) -> (u16, &[u8]) {
        let hdr = VirtioNetHdr::decode(written).unwrap();
        (hdr.gso_size, &written[VNET_LEN + 66..])
    }

    #[test]
    fn interleaved_flows_each_become_one_tso_frame() {
        let mut c = Coalescer::default();
        let mut sink = Sink::default();
        let mut writes = 0;
        for i in 0..4u32 {
            for port in [1, 2] {
                writes += c
                    .push(&seg(1 + 100 * i, 100, ACK, port), &mut sink)
                    .unwrap();
            }
        }
        assert_eq!(writes, 0, "nothing is written before the batch ends");
        writes += c.flush(&mut sink).unwrap();
        assert_eq!(writes, 2, "one super-frame per flow");
        for (i, port) in [1u16, 2].iter().enumerate() {
            let f = &sink.0[i];
            assert_eq!(
                &f[VNET_LEN + 34..VNET_LEN + 36],
                &port.to_be_bytes(),
                "oldest first"
            );
            assert_eq!(parts(f), (100, bytes(1, 400).as_slice()));
        }
    }

    #[test]
    fn a_flow_beyond_max_flows_writes_out_the_oldest_run() {
        let mut c = Coalescer::default();
        let mut sink = Sink::default();
        let flows = MAX_FLOWS as u16 + 1;
        for i in 0..2u32 {
            for port in 1..=flows {
                c.push(&seg(1 + 100 * i, 100, ACK, port), &mut sink)
                    .unwrap();
            }
        }
        c.flush(&mut sink).unwrap();
        // The last flow's first segment evicts flow 1 (one segment); flow 1's second segment
        // then evicts flow 2, and so on: every flow keeps its bytes in order.
        let mut per_flow: std::collections::BTreeMap<u16, Vec<u8>> = Default::default();
        for f in &sink.0 {
            let port = u16::from_be_bytes([f[VNET_LEN + 34], f[VNET_LEN + 35]]);
            per_flow
                .entry(port)
                .or_default()
                .extend_from_slice(&f[VNET_LEN + 66..]);
        }
        assert_eq!(per_flow.len(), usize::from(flows));
        for (port, data) in per_flow {
            assert_eq!(data, bytes(1, 200), "flow {port}");
        }
        assert!(
            sink.0.len() > usize::from(flows),
            "an eviction cut some run"
        );
        assert!(c.runs.is_empty());
    }

    #[test]
    fn a_frame_that_does_not_coalesce_follows_its_hosts_runs_only() {
        let mut c = Coalescer::default();
        let mut sink = Sink::default();
        c.push(&seg(1, 100, ACK, 1), &mut sink).unwrap();
        c.push(&seg(101, 100, ACK, 1), &mut sink).unwrap();
        // A FIN between the same hosts writes their pending run first, then itself.
        let fin = seg(201, 0, ACK | 0x01, 1);
        assert_eq!(c.push(&fin, &mut sink).unwrap(), 2);
        assert_eq!(parts(&sink.0[0]), (100, bytes(1, 200).as_slice()));
        assert_eq!(&sink.0[1][VNET_LEN..], fin.as_slice());
        // Between other hosts it overtakes the pending run.
        c.push(&seg(1, 100, ACK, 2), &mut sink).unwrap();
        c.push(&seg(101, 100, ACK, 2), &mut sink).unwrap();
        let mut other = seg(1, 0, 0x02, 3);
        other[ETH + 12] = 192;
        assert_eq!(c.push(&other, &mut sink).unwrap(), 1);
        assert_eq!(&sink.0[2][VNET_LEN..], other.as_slice());
        assert_eq!(c.flush(&mut sink).unwrap(), 1);
        assert_eq!(parts(&sink.0[3]), (100, bytes(1, 200).as_slice()));
    }
}
