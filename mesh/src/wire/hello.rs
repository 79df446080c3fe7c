//! The handshake payload each side sends inside the Noise handshake (message 2 from the
//! responder, message 3 from the initiator): who we are and what we offer. Encoding: one
//! format byte ([`HELLO_FORMAT`]), then the postcard encoding of the fields in declaration
//! order. Strings and lists are bounded so a hostile peer cannot make us allocate much.

use serde::{Deserialize, Serialize};

use super::{DecodeError, check_len, postcard_exact, postcard_with_prefix};
use crate::ids::{PeerName, PeerUid, ShortId};

/// Format version of the [`Hello`] encoding.
pub const HELLO_FORMAT: u8 = 1;
/// Longest nickname accepted, in bytes.
pub const MAX_NICKNAME_LEN: usize = 255;
/// Most overlay names a peer may offer.
pub const MAX_OVERLAYS: usize = 8;
/// Longest overlay name, in bytes.
pub const MAX_OVERLAY_NAME_LEN: usize = 32;

/// What a peer says about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Overlays it offers, in preference order (e.g. `["fastdp", "sleeve"]`).
    pub overlays: Vec<String>,
    /// Whether it trusts our address (trusted subnets).
    pub trusted: bool,
}

impl Hello {
    /// The bytes carried in the Noise handshake message.
    pub fn encode(&self) -> Vec<u8> {
        postcard_with_prefix(&[HELLO_FORMAT], self)
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
        let hello: Hello = postcard_exact("hello", body)?;
        hello.validate()?;
        Ok(hello)
    }

    /// Checks the documented bounds (also used before sending, by tests).
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_len("nickname", self.nickname.len(), MAX_NICKNAME_LEN)?;
        check_len("overlay list", self.overlays.len(), MAX_OVERLAYS)?;
        for o in &self.overlays {
            check_len("overlay name", o.len(), MAX_OVERLAY_NAME_LEN)?;
        }
        Ok(())
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
            overlays: vec!["fastdp".into(), "sleeve".into()],
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
            &[2, 6],
            b"fastdp",
            &[6],
            b"sleeve",
            &[0], // trusted
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(Hello::decode(&bytes), Ok(h));
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
        let mut many = sample();
        many.overlays = vec!["a".into(); 9];
        assert!(Hello::decode(&many.encode()).is_err());
        let mut wide = sample();
        wide.overlays = vec!["a".repeat(33)];
        assert!(Hello::decode(&wide.encode()).is_err());
    }
}
