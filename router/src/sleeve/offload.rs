//! TAP offloads: with IFF_VNET_HDR and TSO/USO/CSUM enabled the kernel hands
//! the TAP reader one 64 KiB super-frame instead of ~45 MTU-sized ones, and may leave
//! checksums partial. [`Splitter`] turns what was read into MTU-sized frames with complete
//! checksums, which is what the sleeve carries.
//!
//! tun-rs's `gso_split` is written for L3 (TUN) packets: it takes the IP header at offset 0.
//! For a TAP we strip the 14-byte Ethernet header (subtracting 14 from `csum_start` and
//! `hdr_len`), split the IP packet into segments that leave 14 bytes of room in front, and
//! copy the Ethernet header into each.

use std::io;

use tun_rs::{VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

/// Length of the virtio-net header in front of every frame on an offload TAP.
pub const VNET_LEN: usize = VIRTIO_NET_HDR_LEN;
const ETH: usize = 14;
const NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
/// Segments one super-frame may become: 64 KiB at the smallest MSS we accept (~256 bytes).
const MAX_SEGMENTS: usize = 256;
/// Room per segment: the largest MTU the sleeve allows plus Ethernet, rounded up.
const SEGMENT_ROOM: usize = 1536;

/// Why a frame read from the TAP could not be turned into frames.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The virtio header or offsets are inconsistent with the frame.
    #[error("malformed offload frame: {0}")]
    Malformed(&'static str),
    /// tun-rs refused to split it.
    #[error("cannot split offload frame: {0}")]
    Split(io::Error),
}

/// Reusable output buffers for splitting.
#[derive(Debug)]
pub struct Splitter {
    segs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            segs: vec![vec![0u8; SEGMENT_ROOM]; MAX_SEGMENTS],
            sizes: vec![0; MAX_SEGMENTS],
        }
    }
}

impl Splitter {
    /// Hands every plain frame contained in `buf` (virtio header + Ethernet frame, as read
    /// from the TAP) to `each`, with checksums completed.
    pub fn split(
        &mut self,
        buf: &mut [u8],
        max_ip_len: Option<u16>,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), SplitError> {
        let hdr =
            VirtioNetHdr::decode(buf).map_err(|_| SplitError::Malformed("short virtio header"))?;
        let frame = buf
            .get_mut(VNET_LEN..)
            .ok_or(SplitError::Malformed("no frame"))?;
        if hdr.gso_type == GSO_NONE {
            if hdr.flags & NEEDS_CSUM != 0 {
                complete_checksum(frame, hdr.csum_start, hdr.csum_offset)?;
            }
            each(frame);
            return Ok(());
        }
        if frame.len() < ETH {
            return Err(SplitError::Malformed("runt super-frame"));
        }
        let is_v6 = match [frame[12], frame[13]] {
            [0x08, 0x00] => false,
            [0x86, 0xdd] => true,
            _ => return Err(SplitError::Malformed("GSO frame that is not IPv4/IPv6")),
        };
        let mut l3hdr = hdr;
        l3hdr.csum_start = hdr
            .csum_start
            .checked_sub(ETH as u16)
            .ok_or(SplitError::Malformed(
                "csum_start inside the Ethernet header",
            ))?;
        l3hdr.hdr_len = hdr
            .hdr_len
            .checked_sub(ETH as u16)
            .ok_or(SplitError::Malformed("hdr_len inside the Ethernet header"))?;
        if let Some(limit) = max_ip_len {
            // Segments of at most `limit` IP bytes: headers plus a smaller gso_size.
            let headers = l3hdr.hdr_len;
            if limit > headers {
                l3hdr.gso_size = l3hdr.gso_size.min(limit - headers);
            }
        }
        let (eth, l3) = frame.split_at_mut(ETH);
        let n = gso_split(l3, l3hdr, &mut self.segs, &mut self.sizes, ETH, is_v6)
            .map_err(SplitError::Split)?;
        for (seg, &size) in self.segs.iter_mut().zip(&self.sizes).take(n) {
            let Some(out) = seg.get_mut(..ETH + size) else {
                continue;
            };
            out[..ETH].copy_from_slice(eth);
            each(out);
        }
        Ok(())
    }
}

/// Completes a partial checksum: the field holds the pseudo-header sum; fold the rest in.
fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> Result<(), SplitError> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > frame.len() || start > frame.len() {
        return Err(SplitError::Malformed("checksum offsets beyond the frame"));
    }
    let initial = u16::from_be_bytes([frame[at], frame[at + 1]]);
    frame[at] = 0;
    frame[at + 1] = 0;
    let sum = tun_rs::checksum(&frame[start..], u64::from(initial));
    frame[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP super-frame of `payload` bytes as the kernel would hand it
    /// over with TSO (pseudo-header sum in the TCP checksum field).
    fn super_frame(payload: usize, mss: u16) -> Vec<u8> {
        let mut f = vec![0u8; VNET_LEN];
        let hdr = VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: 1, // TCPV4
            hdr_len: (ETH + 20 + 20) as u16,
            gso_size: mss,
            csum_start: (ETH + 20) as u16,
            csum_offset: 16,
        };
        hdr.encode(&mut f).unwrap();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = (20 + 20 + payload) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 32, 0, 1, 10, 32, 0, 2,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&6000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18;
        f.extend_from_slice(&tcp);
        f.extend((0..payload).map(|i| (i % 251) as u8));
        f
    }

    #[test]
    fn tso_super_frame_splits_into_mss_segments_with_headers() {
        let mut sp = Splitter::default();
        let mut buf = super_frame(3000, 1336);
        let mut out: Vec<Vec<u8>> = Vec::new();
        sp.split(&mut buf, None, |f| out.push(f.to_vec())).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![54 + 1336, 54 + 1336, 54 + 328]
        );
        let mut seq = 1000u32;
        let mut data = Vec::new();
        for f in &out {
            assert_eq!(
                &f[..14],
                &buf[VNET_LEN..VNET_LEN + 14],
                "Ethernet header copied"
            );
            let ip_len = u16::from_be_bytes([f[16], f[17]]) as usize;
            assert_eq!(ip_len, f.len() - 14);
            assert_eq!(u32::from_be_bytes([f[38], f[39], f[40], f[41]]), seq);
            seq += (f.len() - 54) as u32;
            data.extend_from_slice(&f[54..]);
            // The IPv4 header checksum verifies (sums to 0xffff).
            assert_eq!(tun_rs::checksum(&f[14..34], 0), 0xffff);
        }
        assert_eq!(data, (0..3000).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    }

    #[test]
    fn a_path_mtu_limit_makes_smaller_segments() {
        let mut sp = Splitter::default();
        let mut buf = super_frame(3000, 1336);
        let mut sizes = Vec::new();
        sp.split(&mut buf, Some(1000), |f| sizes.push(f.len() - 14))
            .unwrap();
        assert_eq!(sizes, vec![1000, 1000, 1000, 40 + 120]);
    }

    #[test]
    fn plain_frame_with_partial_checksum_is_completed() {
        let mut sp = Splitter::default();
        let mut buf = vec![0u8; VNET_LEN];
        VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 34,
            csum_offset: 6,
        }
        .encode(&mut buf)
        .unwrap();
        buf.extend_from_slice(&[0u8; 34]);
        buf.extend_from_slice(&[0, 1, 0, 2, 0, 12, 0x12, 0x34, 1, 2, 3, 4]);
        let mut got = Vec::new();
        sp.split(&mut buf, None, |f| got = f.to_vec()).unwrap();
        assert_eq!(got.len(), 46);
        // The UDP part plus the pseudo-header sum (the seed that was in the field) now
        // verifies: it folds to all ones.
        assert_ne!(&got[40..42], &[0x12, 0x34]);
        assert_eq!(tun_rs::checksum(&got[34..], 0x1234), 0xffff);
        let mut bad = buf.clone();
        VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 40,
            csum_offset: 6,
        }
        .encode(&mut bad)
        .unwrap();
        assert!(sp.split(&mut bad, None, |_| {}).is_err());
        assert!(sp.split(&mut [0u8; 4], None, |_| {}).is_err());
    }
}
