//! The handshake payload each side sends inside the Noise handshake (message 2 from the
//! responder, message 3 from the initiator): who we are. Encoding: one format byte
//! ([`HELLO_FORMAT`]), then the postcard encoding of the fields in declaration order, with a
//! reserved list of strings between `listen_port` and `trusted`: always sent empty, accepted
//! within its bounds and ignored (the overlays are negotiated later, per peer, with overlay
//! control messages, so a list fixed at handshake time would say nothing true). Strings and
//! lists are bounded so a hostile peer cannot make us allocate much.

use serde::{Deserialize, Serialize};

use super::{DecodeError, check_len, postcard_exact, postcard_with_prefix};
use crate::ids::{PeerName, PeerUid, ShortId};

/// Format version of the [`Hello`] encoding.
pub const HELLO_FORMAT: u8 = 1;
/// Longest nickname accepted, in bytes.
pub const MAX_NICKNAME_LEN: usize = 255;
/// Most entries accepted in the reserved list.
pub const MAX_RESERVED: usize = 8;
/// Longest entry accepted in the reserved list, in bytes.
pub const MAX_RESERVED_LEN: usize = 32;

/// What a peer says about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Its peer name.
    pub name: PeerName,
    /// True when `name` is derived from its static Noise key (the router checks this).
    pub name_derived: bool,
    /// Free-text nickname (hostname by default).
    pub nickname: String,
    /// Its incarnation uid.
    pub uid: PeerUid,
    /// Its random half of the connection uid; both ends use `ours XOR theirs`.
    pub conn_half: u64,
    /// Its 12-bit short id.
    pub short_id: ShortId,
    /// Its TCP listen port, so peers of peers can dial it back.
    pub listen_port: u16,
    /// Whether it trusts our address (trusted subnets).
    pub trusted: bool,
}

/// The encoded layout of a [`Hello`], with the reserved list in its place.
#[derive(Serialize, Deserialize)]
struct HelloWire {
    name: PeerName,
    name_derived: bool,
    nickname: String,
    uid: PeerUid,
    conn_half: u64,
    short_id: ShortId,
    listen_port: u16,
    reserved: Vec<String>,
    trusted: bool,
}

impl Hello {
    /// The bytes carried in the Noise handshake message.
    pub fn encode(&self) -> Vec<u8> {
        let wire = HelloWire {
            name: self.name,
            name_derived: self.name_derived,
            nickname: self.nickname.clone(),
            uid: self.uid,
            conn_half: self.conn_half,
            short_id: self.short_id,
            listen_port: self.listen_port,
            reserved: Vec::new(),
            trusted: self.trusted,
        };
        postcard_with_prefix(&[HELLO_FORMAT], &wire)
    }

    /// Parses and bounds-checks a handshake payload.
    pub fn decode(b: &[u8]) -> Result<Hello, DecodeError> {
        let (&format, body) = b.split_first().ok_or(DecodeError::Empty)?;
        if format != HELLO_FORMAT {
            return Err(DecodeError::UnknownVersion {
                what: "hello",
                version: format,
                supported: HELLO_FORMAT,
            });
        }
        let w: HelloWire = postcard_exact("hello", body)?;
        check_len("reserved list", w.reserved.len(), MAX_RESERVED)?;
        for r in &w.reserved {
            check_len("reserved entry", r.len(), MAX_RESERVED_LEN)?;
        }
        let hello = Hello {
            name: w.name,
            name_derived: w.name_derived,
            nickname: w.nickname,
            uid: w.uid,
            conn_half: w.conn_half,
            short_id: w.short_id,
            listen_port: w.listen_port,
            trusted: w.trusted,
        };
        hello.validate()?;
        Ok(hello)
    }

    /// Checks the documented bounds (also used before sending, by tests).
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_len("nickname", self.nickname.len(), MAX_NICKNAME_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Hello {
        Hello {
            name: "8a:3e:3e:3e:3e:3e".parse().unwrap(),
            name_derived: true,
            nickname: "host1".into(),
            uid: PeerUid(300),
            conn_half: 1,
            short_id: ShortId::new(0x123).unwrap(),
            listen_port: 6783,
            trusted: false,
        }
    }

    #[test]
    fn exact_bytes_round_trip() {
        let h = sample();
        let bytes = h.encode();
        let expected: Vec<u8> = [
            &[1u8][..],                                  // format
            &[0xbe, 0xfc, 0xf8, 0xf1, 0xe3, 0xc7, 0x22], // name varint 0x8a3e3e3e3e3e
            &[1],                                        // name_derived
            &[5],
            b"host1",
            &[0xac, 0x02], // uid 300
            &[1],          // conn_half
            &[0xa3, 0x02], // short id 0x123
            &[0xff, 0x34], // port 6783
            &[0],          // reserved list, empty
            &[0],          // trusted
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(Hello::decode(&bytes), Ok(h));
    }

    /// Routers that filled the reserved slot (with their overlay names) are still understood.
    #[test]
    fn a_filled_reserved_list_is_accepted_and_ignored() {
        let filled: Vec<u8> = [
            &[1u8][..],
            &[0xbe, 0xfc, 0xf8, 0xf1, 0xe3, 0xc7, 0x22],
            &[1],
            &[5],
            b"host1",
            &[0xac, 0x02],
            &[1],
            &[0xa3, 0x02],
            &[0xff, 0x34],
            &[2, 6],
            b"fastdp",
            &[6],
            b"sleeve",
            &[0],
        ]
        .concat();
        assert_eq!(Hello::decode(&filled), Ok(sample()));
    }

    #[test]
    fn rejects_bad_input() {
        let bytes = sample().encode();
        assert_eq!(Hello::decode(&[]), Err(DecodeError::Empty));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            Hello::decode(&v2),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        for cut in 1..bytes.len() {
            assert!(Hello::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            Hello::decode(&extra),
            Err(DecodeError::Trailing { count: 1, .. })
        ));
        let mut long = sample();
        long.nickname = "x".repeat(256);
        assert!(matches!(
            Hello::decode(&long.encode()),
            Err(DecodeError::TooLong { .. })
        ));
        let with_reserved = |list: &[u8]| {
            let mut b = bytes[..bytes.len() - 2].to_vec();
            b.extend_from_slice(list);
            b.push(0);
            b
        };
        let mut many = vec![(MAX_RESERVED + 1) as u8];
        for _ in 0..=MAX_RESERVED {
            many.extend_from_slice(&[1, b'a']);
        }
        assert!(matches!(
            Hello::decode(&with_reserved(&many)),
            Err(DecodeError::TooLong { .. })
        ));
        let mut wide = vec![1, (MAX_RESERVED_LEN + 1) as u8];
        wide.extend(std::iter::repeat_n(b'a', MAX_RESERVED_LEN + 1));
        assert!(matches!(
            Hello::decode(&with_reserved(&wide)),
            Err(DecodeError::TooLong { .. })
        ));
        let mut edge = vec![MAX_RESERVED as u8];
        for _ in 0..MAX_RESERVED {
            edge.push(MAX_RESERVED_LEN as u8);
            edge.extend(std::iter::repeat_n(b'a', MAX_RESERVED_LEN));
        }
        assert_eq!(Hello::decode(&with_reserved(&edge)), Ok(sample()));
    }
}
