//! Identity and address value types: [`PeerName`] (re-exported from the mesh crate), [`Ident`],
//! [`Cidr`] and
//! the half-open [`AddrRange`] the ring does its arithmetic on (u32, never
//! `Ipv4Addr`, because the ring is integer intervals).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Peer names are the mesh crate's (one type, one parser, for the whole workspace).
pub use meshnet_mesh::PeerName;

/// Error parsing a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not `a.b.c.d/len`.
    #[error("invalid CIDR {0:?}: expected a.b.c.d/len with len <= 32")]
    Cidr(String),
}

/// The owner of an allocation: a container id, `weave:expose`-style special
/// names, or an address string for anonymous claims (weave's `_`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ident(pub String);

impl Ident {
    /// Wraps a string.
    pub fn new(s: impl Into<String>) -> Self {
        Ident(s.into())
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An IPv4 address with a prefix length. As a *subnet* its host bits are
/// zero (see [`Cidr::is_network`]); as an *allocation* it is `addr/len` of
/// the subnet it came from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// Address as a host-order integer.
    pub addr: u32,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Cidr {
    /// Builds a CIDR; `None` if `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then_some(Cidr {
            addr: u32::from(addr),
            len,
        })
    }

    /// The address part.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// Number of addresses covered (2^(32-len)), as u64 so /0 fits.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len.min(32)))
    }

    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len.min(32)))
        }
    }

    /// The network (host bits cleared).
    pub fn network(&self) -> Cidr {
        Cidr {
            addr: self.addr & self.mask(),
            len: self.len,
        }
    }

    /// True when the host bits are zero.
    pub fn is_network(&self) -> bool {
        self.addr & !self.mask() == 0
    }

    /// The whole block as a range (a /0 is clamped to end at 255.255.255.255
    /// exclusive, which never matters for IPAM ranges).
    pub fn range(&self) -> AddrRange {
        let start = self.addr & self.mask();
        let end = (u64::from(start) + self.size()).min(u64::from(u32::MAX)) as u32;
        AddrRange { start, end }
    }

    /// The addresses a container may get: the block without its network and
    /// broadcast addresses (for blocks of 4 or more, as weave).
    pub fn host_range(&self) -> AddrRange {
        let r = self.range();
        if self.size() >= 4 {
            AddrRange {
                start: r.start + 1,
                end: r.end - 1,
            }
        } else {
            r
        }
    }

    /// True if `addr` is inside the block.
    pub fn contains(&self, addr: u32) -> bool {
        self.range().contains(addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(), self.len)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Cidr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::Cidr(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(err)?;
        let ip: Ipv4Addr = a.parse().map_err(|_| err())?;
        let len: u8 = l.parse().map_err(|_| err())?;
        Cidr::new(ip, len).ok_or_else(err)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            (self.addr, self.len).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let (addr, len) = <(u32, u8)>::deserialize(d)?;
            if len > 32 {
                return Err(serde::de::Error::custom("prefix length > 32"));
            }
            Ok(Cidr { addr, len })
        }
    }
}

/// A half-open interval `[start, end)` of addresses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct AddrRange {
    /// First address.
    pub start: u32,
    /// One past the last address.
    pub end: u32,
}

impl AddrRange {
    /// `[start, end)`.
    pub fn new(start: u32, end: u32) -> Self {
        AddrRange { start, end }
    }

    /// Number of addresses.
    pub fn size(&self) -> u32 {
        self.end.saturating_sub(self.start)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// True if `a` is inside.
    pub fn contains(&self, a: u32) -> bool {
        self.start <= a && a < self.end
    }

    /// Intersection (possibly empty).
    pub fn intersect(&self, o: &AddrRange) -> AddrRange {
        AddrRange {
            start: self.start.max(o.start),
            end: self.end.min(o.end),
        }
    }

    /// True if the two share an address.
    pub fn overlaps(&self, o: &AddrRange) -> bool {
        !self.intersect(o).is_empty()
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            Ipv4Addr::from(self.start),
            Ipv4Addr::from(self.end.wrapping_sub(1))
        )
    }
}

/// 64-bit FNV-1a: a stable, dependency-free hash for ring lineage ids (the
/// value must be identical on every peer and every build, so no `std` hasher).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A small seeded PRNG (SplitMix64): the crate takes seeds, never reads the
/// OS RNG, and needs only a few draws (donor choice, jitter).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_ranges() {
        let c: Cidr = "10.32.0.0/12".parse().unwrap();
        assert!(c.is_network());
        assert_eq!(c.size(), 1 << 20);
        assert_eq!(c.to_string(), "10.32.0.0/12");
        let h = c.host_range();
        assert_eq!(Ipv4Addr::from(h.start).to_string(), "10.32.0.1");
        assert_eq!(Ipv4Addr::from(h.end - 1).to_string(), "10.47.255.254");
        let x: Cidr = "10.32.0.5/12".parse().unwrap();
        assert!(!x.is_network());
        assert_eq!(x.network(), c);
        assert!("10.32.0.0/33".parse::<Cidr>().is_err());
        assert!("10.32.0.0".parse::<Cidr>().is_err());
        let z: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(z.size(), 1 << 32);
    }
}
