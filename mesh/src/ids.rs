//! Identifier newtypes: peer names, incarnation uids, short ids and connection handles.
//!
//! All of them serialise as their inner integer (postcard varint), and the bounded ones
//! ([`PeerName`]: 48 bits, [`ShortId`]: 12 bits) refuse out-of-range values when decoded, so
//! a value that decodes always re-encodes to something that decodes to the same value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest value a 48-bit peer name can hold.
const PEER_NAME_MAX: u64 = (1 << 48) - 1;

/// Largest 12-bit short id (weave uses it as part of the VXLAN VNI).
pub const SHORT_ID_MAX: u16 = (1 << 12) - 1;

/// A 48-bit peer name, printed like a MAC address (`8a:3e:3e:3e:3e:3e`), as weave does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(u64);

/// Why a string is not a peer name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerNameError {
    /// The string does not have the shape `aa:bb:cc:dd:ee:ff` or a `::` abbreviation of it.
    #[error(
        "invalid peer name {0:?}: expected six hex bytes like 8a:3e:3e:3e:3e:3e (or a :: abbreviation like ::1)"
    )]
    Malformed(String),
    /// The integer does not fit in 48 bits.
    #[error("peer name {0:#x} does not fit in 48 bits")]
    TooLarge(u64),
}

impl PeerName {
    /// Builds a name from an integer; `None` when it does not fit in 48 bits.
    pub fn new(value: u64) -> Option<PeerName> {
        (value <= PEER_NAME_MAX).then_some(PeerName(value))
    }

    /// The name as an integer (48 significant bits).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Turns the first six bytes of a digest into a name, clearing the multicast bit and
    /// setting the locally-administered bit, so the name is also a valid unicast bridge MAC.
    pub fn from_digest(bytes: [u8; 6]) -> PeerName {
        let mut b = bytes;
        b[0] = (b[0] & 0xFE) | 0x02;
        PeerName::from_bytes(b)
    }

    /// Builds a name from its six bytes (most significant first), unchanged.
    pub fn from_bytes(bytes: [u8; 6]) -> PeerName {
        let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        PeerName(v)
    }

    /// The six bytes of the name, most significant first (the MAC byte order).
    pub fn to_bytes(self) -> [u8; 6] {
        let be = self.0.to_be_bytes();
        [be[2], be[3], be[4], be[5], be[6], be[7]]
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerName({self})")
    }
}

fn parse_groups(part: &str, whole: &str) -> Result<Vec<u8>, PeerNameError> {
    if part.is_empty() {
        return Ok(Vec::new());
    }
    part.split(':')
        .map(|g| {
            if g.is_empty() || g.len() > 2 || !g.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(PeerNameError::Malformed(whole.to_owned()));
            }
            u8::from_str_radix(g, 16).map_err(|_| PeerNameError::Malformed(whole.to_owned()))
        })
        .collect()
}

impl FromStr for PeerName {
    type Err = PeerNameError;

    /// Accepts `aa:bb:cc:dd:ee:ff` (1 or 2 hex digits per group) and weave's abbreviations in
    /// which one `::` stands for one or more zero groups (`::1`, `8a::1`, `8a:3e::`).
    fn from_str(s: &str) -> Result<PeerName, PeerNameError> {
        let bad = || PeerNameError::Malformed(s.to_owned());
        let bytes: Vec<u8> = match s.split_once("::") {
            None => {
                let g = parse_groups(s, s)?;
                if g.len() != 6 {
                    return Err(bad());
                }
                g
            }
            Some((left, right)) => {
                if right.contains("::") {
                    return Err(bad());
                }
                let l = parse_groups(left, s)?;
                let r = parse_groups(right, s)?;
                if l.len() + r.len() > 5 {
                    return Err(bad());
                }
                let mut all = l;
                all.resize(6 - r.len(), 0);
                all.extend(r);
                all
            }
        };
        let mut six = [0u8; 6];
        for (dst, src) in six.iter_mut().zip(bytes) {
            *dst = src;
        }
        Ok(PeerName::from_bytes(six))
    }
}

/// Binary formats (postcard, the wire) carry the integer; human-readable ones (the JSON that
/// IPAM persists and reports) carry the `8a:3e:3e:3e:3e:3e` text.
impl Serialize for PeerName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for PeerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PeerName, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            return text.parse().map_err(serde::de::Error::custom);
        }
        let v = u64::deserialize(d)?;
        PeerName::new(v).ok_or_else(|| serde::de::Error::custom(PeerNameError::TooLarge(v)))
    }
}

/// Identifies one incarnation of a router: random and non-zero per start, so a restarted peer
/// (same name) is told apart from its previous life.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct PeerUid(pub u64);

impl fmt::Display for PeerUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 12-bit id per peer, short enough for the VXLAN VNI; collisions are resolved in gossip.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct ShortId(u16);

impl ShortId {
    /// Builds a short id; `None` above 4095.
    pub fn new(value: u16) -> Option<ShortId> {
        (value <= SHORT_ID_MAX).then_some(ShortId(value))
    }

    /// Builds a short id from any integer by keeping its low 12 bits.
    pub fn from_low_bits(value: u64) -> ShortId {
        ShortId((value & u64::from(SHORT_ID_MAX)) as u16)
    }

    /// The id as an integer (0..=4095).
    pub fn as_u16(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for ShortId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for ShortId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShortId, D::Error> {
        let v = u16::deserialize(d)?;
        ShortId::new(v).ok_or_else(|| serde::de::Error::custom("short id above 4095"))
    }
}

/// The router's handle for one TCP connection; allocated by the router, opaque to the mesh.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PeerName {
        s.parse().unwrap()
    }

    #[test]
    fn display_and_parse_full_form() {
        let p = PeerName::from_bytes([0x8a, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e]);
        assert_eq!(p.to_string(), "8a:3e:3e:3e:3e:3e");
        assert_eq!(n("8a:3e:3e:3e:3e:3e"), p);
        assert_eq!(n("8A:3E:3e:3e:3e:3e"), p);
        assert_eq!(p.as_u64(), 0x8a3e3e3e3e3e);
        assert_eq!(p.to_bytes(), [0x8a, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e]);
    }

    #[test]
    fn parse_abbreviations() {
        assert_eq!(n("::1").as_u64(), 1);
        assert_eq!(n("::1").to_string(), "00:00:00:00:00:01");
        assert_eq!(n("::").as_u64(), 0);
        assert_eq!(n("8a::").as_u64(), 0x8a00_0000_0000);
        assert_eq!(n("8a::1").as_u64(), 0x8a00_0000_0001);
        assert_eq!(n("1:2::3:4").as_u64(), 0x0102_0000_0304);
        assert_eq!(n("::1:2:3:4:5").as_u64(), 0x0001_0203_0405);
        assert_eq!(n("1:2:3:4:5::").as_u64(), 0x0102_0304_0500);
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in [
            "",
            ":",
            "1:2:3:4:5",
            "1:2:3:4:5:6:7",
            "::1::2",
            "1:2:3:4:5:6::",
            "1:2:3::4:5:6",
            "123:2:3:4:5:6",
            "g0:00:00:00:00:00",
            "1:2:3:4:5:",
            " ::1",
        ] {
            assert!(s.parse::<PeerName>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn digest_sets_local_clears_multicast() {
        let p = PeerName::from_digest([0xff, 1, 2, 3, 4, 5]);
        assert_eq!(p.to_bytes()[0], 0xfe);
        let p = PeerName::from_digest([0x00, 1, 2, 3, 4, 5]);
        assert_eq!(p.to_bytes(), [0x02, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn serde_as_integer_with_bounds() {
        let p = n("8a:3e:3e:3e:3e:3e");
        let bytes = postcard::to_stdvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<u64>(&bytes).unwrap(), p.as_u64());
        assert_eq!(postcard::from_bytes::<PeerName>(&bytes).unwrap(), p);
        let too_big = postcard::to_stdvec(&(1u64 << 48)).unwrap();
        assert!(postcard::from_bytes::<PeerName>(&too_big).is_err());
        let sid = postcard::to_stdvec(&4096u16).unwrap();
        assert!(postcard::from_bytes::<ShortId>(&sid).is_err());
        let sid = postcard::to_stdvec(&ShortId::new(4095).unwrap()).unwrap();
        assert_eq!(
            postcard::from_bytes::<ShortId>(&sid).unwrap().as_u16(),
            4095
        );
        assert_eq!(PeerUid(42).to_string(), "42");
    }

    #[test]
    fn serde_as_text_in_json() {
        let p = n("8a:3e:3e:3e:3e:3e");
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"8a:3e:3e:3e:3e:3e\"");
        assert_eq!(serde_json::from_str::<PeerName>(&json).unwrap(), p);
        assert!(serde_json::from_str::<PeerName>("\"8a:3e\"").is_err());
    }
}
