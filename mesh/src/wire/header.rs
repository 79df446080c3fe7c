//! The 7-byte protocol header each side writes first on a TCP connection: ASCII `weave`, then
//! the minimum and maximum protocol versions it speaks. Weave speaks 1..2;
//! meshnet speaks 3..3 (a Noise handshake follows), so a weave router is told plainly why the
//! two cannot talk.

/// Length of the header in bytes.
pub const HEADER_LEN: usize = 7;
/// Lowest protocol version meshnet speaks (3 = Noise, see docs/protocol.md).
pub const PROTOCOL_MIN: u8 = 3;
/// Highest protocol version meshnet speaks.
pub const PROTOCOL_MAX: u8 = 3;

const MAGIC: &[u8; 5] = b"weave";

/// A decoded header: the version range a peer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Lowest version offered.
    pub min: u8,
    /// Highest version offered.
    pub max: u8,
}

/// Why the header exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than 7 bytes or a prefix other than `weave`.
    #[error("remote protocol header not recognised")]
    NotRecognised,
    /// A weave router (versions 1..2) answered.
    #[error(
        "peer speaks weave protocol {theirs_min}..{theirs_max}; meshnet speaks protocol {ours_min}..{ours_max} (Noise) and cannot talk to weave routers: run meshnet on every host"
    )]
    Weave {
        /// Their minimum.
        theirs_min: u8,
        /// Their maximum.
        theirs_max: u8,
        /// Our minimum.
        ours_min: u8,
        /// Our maximum.
        ours_max: u8,
    },
    /// Any other non-overlapping range.
    #[error(
        "remote version range [{theirs_min},{theirs_max}] is incompatible with ours [{ours_min},{ours_max}]"
    )]
    Incompatible {
        /// Their minimum.
        theirs_min: u8,
        /// Their maximum.
        theirs_max: u8,
        /// Our minimum.
        ours_min: u8,
        /// Our maximum.
        ours_max: u8,
    },
}

impl Header {
    /// The header meshnet sends.
    pub const OURS: Header = Header {
        min: PROTOCOL_MIN,
        max: PROTOCOL_MAX,
    };

    /// The 7 bytes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        [
            MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], MAGIC[4], self.min, self.max,
        ]
    }

    /// Parses the first 7 bytes of `bytes` (extra bytes are not looked at).
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        match bytes.get(..HEADER_LEN) {
            Some([w, e, a, v, e2, min, max]) if [*w, *e, *a, *v, *e2] == *MAGIC => Ok(Header {
                min: *min,
                max: *max,
            }),
            _ => Err(HeaderError::NotRecognised),
        }
    }

    /// Picks the highest version both sides speak, as weave does:
    /// `min(ours.max, theirs.max)` provided it is ≥ both minimums.
    pub fn negotiate(ours: Header, theirs: Header) -> Result<u8, HeaderError> {
        let version = ours.max.min(theirs.max);
        if ours.min.max(theirs.min) <= version && theirs.min <= theirs.max {
            return Ok(version);
        }
        if theirs.max <= 2 && theirs.min >= 1 && theirs.min <= theirs.max && ours.min >= 3 {
            return Err(HeaderError::Weave {
                theirs_min: theirs.min,
                theirs_max: theirs.max,
                ours_min: ours.min,
                ours_max: ours.max,
            });
        }
        Err(HeaderError::Incompatible {
            theirs_min: theirs.min,
            theirs_max: theirs.max,
            ours_min: ours.min,
            ours_max: ours.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_exact_bytes() {
        let bytes = Header::OURS.encode();
        assert_eq!(bytes, [0x77, 0x65, 0x61, 0x76, 0x65, 0x03, 0x03]);
        assert_eq!(Header::decode(&bytes), Ok(Header::OURS));
        assert_eq!(Header::negotiate(Header::OURS, Header::OURS), Ok(3));
    }

    #[test]
    fn weave_header_refused_plainly() {
        let weave = [0x77, 0x65, 0x61, 0x76, 0x65, 0x01, 0x02];
        let theirs = Header::decode(&weave).unwrap();
        assert_eq!(theirs, Header { min: 1, max: 2 });
        let err = Header::negotiate(Header::OURS, theirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer speaks weave protocol 1..2; meshnet speaks protocol 3..3 (Noise) and cannot talk to weave routers: run meshnet on every host"
        );
    }

    #[test]
    fn generic_mismatch_and_garbage() {
        let err = Header::negotiate(Header::OURS, Header { min: 4, max: 9 }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remote version range [4,9] is incompatible with ours [3,3]"
        );
        assert_eq!(
            Header::negotiate(Header::OURS, Header { min: 1, max: 5 }),
            Ok(3)
        );
        assert!(Header::negotiate(Header::OURS, Header { min: 3, max: 2 }).is_err());
        assert_eq!(Header::decode(b"weav"), Err(HeaderError::NotRecognised));
        assert_eq!(
            Header::decode(b"WEAVE\x03\x03").unwrap_err().to_string(),
            "remote protocol header not recognised"
        );
    }
}
