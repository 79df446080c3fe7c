//! The verdict each side sends once the Noise handshake has authenticated both ends:
//! accepted, or refused with a typed [`RefusalCode`] and a one-line detail.
//!
//! Encoding: one format byte ([`VERDICT_FORMAT`]), then `0` (accepted) or `1` (refused)
//! followed by the code byte and the detail as UTF-8 (the rest of the frame, at most
//! [`MAX_REFUSAL_DETAIL`] bytes). Codes this build does not know decode as
//! [`RefusalCode::Unknown`] and are treated as "retry later".
//!
//! On the connection a verdict travels in a [`VerdictFrame`]: a kind byte, then either the
//! verdict sealed with the Noise transport keys (nonce 0 of the sender's direction), or, only
//! when the refuser could not authenticate the dialler (wrong password), the plaintext
//! verdict as an unauthenticated hint that can never stop the dialler from retrying.

use super::DecodeError;

/// Format version of the verdict encoding.
pub const VERDICT_FORMAT: u8 = 1;
/// Longest refusal detail accepted, in bytes.
pub const MAX_REFUSAL_DETAIL: usize = 512;

const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// Kind byte of a [`VerdictFrame`] carrying a plaintext, unauthenticated hint.
const FRAME_HINT: u8 = 0;
/// Kind byte of a [`VerdictFrame`] carrying a sealed verdict.
const FRAME_SEALED: u8 = 1;

/// How a verdict travels (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictFrame<'a> {
    /// A verdict sealed with the transport keys: open it, then [`Verdict::decode`].
    Sealed(&'a [u8]),
    /// An unauthenticated plaintext verdict.
    Hint(Verdict),
}

impl<'a> VerdictFrame<'a> {
    /// A frame carrying `ciphertext` (the sealed encoding of a verdict).
    pub fn sealed(ciphertext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + ciphertext.len());
        out.push(FRAME_SEALED);
        out.extend_from_slice(ciphertext);
        out
    }

    /// A frame carrying a plaintext hint.
    pub fn hint(verdict: &Verdict) -> Vec<u8> {
        let mut out = vec![FRAME_HINT];
        out.extend(verdict.encode());
        out
    }

    /// Splits a frame.
    pub fn decode(b: &'a [u8]) -> Result<VerdictFrame<'a>, DecodeError> {
        match b.split_first() {
            None => Err(DecodeError::Empty),
            Some((&FRAME_SEALED, rest)) => Ok(VerdictFrame::Sealed(rest)),
            Some((&FRAME_HINT, rest)) => Verdict::decode(rest).map(VerdictFrame::Hint),
            Some((other, _)) => Err(DecodeError::Malformed {
                what: "verdict frame",
                detail: format!("unknown kind {other}"),
            }),
        }
    }
}

/// Why a connection was refused. Whether the dialler retries is decided by the code
/// ([`RefusalCode::is_permanent`]), never by the detail text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalCode {
    /// The dialler reached itself.
    ConnectToSelf,
    /// Another router with a different incarnation uses the refuser's name.
    NameCollision,
    /// The two ends speak incompatible protocol or payload versions.
    ProtocolMismatch,
    /// The handshake did not authenticate under the refuser's password (sent unauthenticated:
    /// the refuser could not check who it talks to).
    WrongPassword,
    /// The dialler's key is not in the refuser's `--authorized-keys`.
    UnknownKey,
    /// The mesh knows the claimed name under a different key.
    NameKeyMismatch,
    /// The claimed name is marked as derived from the key, but the key derives another name.
    NameNotDerived,
    /// The refuser is at its connection limit.
    ConnLimit,
    /// Another connection between the two already serves them.
    Duplicate,
    /// A discovered target answered with a name nobody mentioned.
    UnknownPeer,
    /// The handshake payload was malformed.
    BadHello,
    /// The refuser is shutting down.
    ShuttingDown,
    /// A code this build does not know (from a newer peer).
    Unknown(u8),
}

impl RefusalCode {
    /// The byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            RefusalCode::ConnectToSelf => 1,
            RefusalCode::NameCollision => 2,
            RefusalCode::ProtocolMismatch => 3,
            RefusalCode::WrongPassword => 4,
            RefusalCode::UnknownKey => 5,
            RefusalCode::NameKeyMismatch => 6,
            RefusalCode::NameNotDerived => 7,
            RefusalCode::ConnLimit => 8,
            RefusalCode::Duplicate => 9,
            RefusalCode::UnknownPeer => 10,
            RefusalCode::BadHello => 11,
            RefusalCode::ShuttingDown => 12,
            RefusalCode::Unknown(b) => b,
        }
    }

    /// The code for a byte; bytes without a meaning here become [`RefusalCode::Unknown`].
    pub fn from_u8(b: u8) -> RefusalCode {
        match b {
            1 => RefusalCode::ConnectToSelf,
            2 => RefusalCode::NameCollision,
            3 => RefusalCode::ProtocolMismatch,
            4 => RefusalCode::WrongPassword,
            5 => RefusalCode::UnknownKey,
            6 => RefusalCode::NameKeyMismatch,
            7 => RefusalCode::NameNotDerived,
            8 => RefusalCode::ConnLimit,
            9 => RefusalCode::Duplicate,
            10 => RefusalCode::UnknownPeer,
            11 => RefusalCode::BadHello,
            12 => RefusalCode::ShuttingDown,
            other => RefusalCode::Unknown(other),
        }
    }

    /// Whether a dialler refused with this code stops retrying until the user connects the
    /// target again: only for causes that no change on the far side can remove.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            RefusalCode::ConnectToSelf | RefusalCode::NameCollision | RefusalCode::ProtocolMismatch
        )
    }

    /// What the refused side should do, in one phrase.
    pub fn advice(self) -> &'static str {
        match self {
            RefusalCode::ConnectToSelf => {
                "this address is this router itself; remove it with `meshnet forget`"
            }
            RefusalCode::NameCollision => {
                "our peer name is taken by another router: give each host its own --name or identity"
            }
            RefusalCode::ProtocolMismatch => "upgrade meshnet so both hosts run the same version",
            RefusalCode::WrongPassword => "set the same --password on both hosts",
            RefusalCode::UnknownKey => {
                "add the line `meshnet identity` prints here to the peer's --authorized-keys file, then run `meshnet reload` there"
            }
            RefusalCode::NameKeyMismatch => {
                "if this host was reinstalled, run `meshnet rmpeer <name>` on a live peer once the old router is gone; otherwise launch this host with a different --name"
            }
            RefusalCode::NameNotDerived => {
                "launch with --name, or let the name derive from the key"
            }
            RefusalCode::ConnLimit => "will retry; raise --conn-limit on the peer if this persists",
            RefusalCode::Duplicate => "another connection to this peer is in use",
            RefusalCode::UnknownPeer => "will retry",
            RefusalCode::BadHello => "upgrade meshnet so both hosts run the same version",
            RefusalCode::ShuttingDown => "will retry",
            RefusalCode::Unknown(_) => "will retry; the peer runs a newer meshnet",
        }
    }
}

/// A refusal: its code and the refuser's one-line description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The typed reason.
    pub code: RefusalCode,
    /// What the refuser saw (for the log), at most [`MAX_REFUSAL_DETAIL`] bytes.
    pub detail: String,
}

impl Refusal {
    /// A refusal with a detail, cut to [`MAX_REFUSAL_DETAIL`] on a character boundary.
    pub fn new(code: RefusalCode, detail: impl Into<String>) -> Refusal {
        let mut detail: String = detail.into().replace('\n', " ");
        let mut end = detail.len().min(MAX_REFUSAL_DETAIL);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        Refusal { code, detail }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A side's answer after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The connection may be used.
    Accepted,
    /// It may not, and why.
    Refused(Refusal),
}

impl Verdict {
    /// The verdict's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Verdict::Accepted => vec![VERDICT_FORMAT, ACCEPTED],
            Verdict::Refused(r) => {
                let mut out = vec![VERDICT_FORMAT, REFUSED, r.code.to_u8()];
                out.extend_from_slice(r.detail.as_bytes());
                out
            }
        }
    }

    /// Parses a verdict.
    pub fn decode(b: &[u8]) -> Result<Verdict, DecodeError> {
        let (&format, body) = b.split_first().ok_or(DecodeError::Empty)?;
        if format != VERDICT_FORMAT {
            return Err(DecodeError::UnknownVersion {
                what: "verdict",
                version: format,
                supported: VERDICT_FORMAT,
            });
        }
        let malformed = |detail: &str| DecodeError::Malformed {
            what: "verdict",
            detail: detail.to_owned(),
        };
        match body.split_first() {
            Some((&ACCEPTED, [])) => Ok(Verdict::Accepted),
            Some((&ACCEPTED, rest)) => Err(DecodeError::Trailing {
                what: "verdict",
                count: rest.len(),
            }),
            Some((&REFUSED, rest)) => {
                let (&code, detail) = rest.split_first().ok_or_else(|| malformed("no code"))?;
                super::check_len("refusal detail", detail.len(), MAX_REFUSAL_DETAIL)?;
                let detail =
                    std::str::from_utf8(detail).map_err(|_| malformed("detail is not UTF-8"))?;
                Ok(Verdict::Refused(Refusal {
                    code: RefusalCode::from_u8(code),
                    detail: detail.to_owned(),
                }))
            }
            Some((other, _)) => Err(malformed(&format!("unknown kind {other}"))),
            None => Err(malformed("no kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes_round_trip() {
        assert_eq!(Verdict::Accepted.encode(), vec![1, 0]);
        let r = Verdict::Refused(Refusal::new(RefusalCode::UnknownKey, "no"));
        assert_eq!(r.encode(), vec![1, 1, 5, b'n', b'o']);
        for v in [Verdict::Accepted, r] {
            assert_eq!(Verdict::decode(&v.encode()), Ok(v));
        }
    }

    #[test]
    fn every_code_round_trips_and_unknown_codes_survive() {
        for b in 0..=u8::MAX {
            assert_eq!(RefusalCode::from_u8(b).to_u8(), b);
        }
        let v = Verdict::decode(&[1, 1, 200, b'x']).unwrap();
        assert_eq!(
            v,
            Verdict::Refused(Refusal {
                code: RefusalCode::Unknown(200),
                detail: "x".into()
            })
        );
        assert!(!RefusalCode::Unknown(200).is_permanent());
    }

    #[test]
    fn permanence_is_decided_by_the_code() {
        let permanent: Vec<u8> = (0..=u8::MAX)
            .filter(|b| RefusalCode::from_u8(*b).is_permanent())
            .collect();
        assert_eq!(permanent, vec![1, 2, 3]);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Verdict::decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            Verdict::decode(&[2, 0]),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        assert!(Verdict::decode(&[1]).is_err());
        assert!(Verdict::decode(&[1, 0, 0]).is_err());
        assert!(Verdict::decode(&[1, 1]).is_err());
        assert!(Verdict::decode(&[1, 2, 0]).is_err());
        assert!(Verdict::decode(&[1, 1, 5, 0xff]).is_err());
        let mut long = vec![1, 1, 5];
        long.extend(std::iter::repeat_n(b'x', MAX_REFUSAL_DETAIL + 1));
        assert!(matches!(
            Verdict::decode(&long),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn frames_tell_sealed_from_hints() {
        assert_eq!(VerdictFrame::sealed(&[9, 9]), vec![1, 9, 9]);
        assert_eq!(
            VerdictFrame::decode(&[1, 9, 9]),
            Ok(VerdictFrame::Sealed(&[9, 9]))
        );
        let v = Verdict::Refused(Refusal::new(RefusalCode::WrongPassword, "pw"));
        let hint = VerdictFrame::hint(&v);
        assert_eq!(hint, vec![0, 1, 1, 4, b'p', b'w']);
        assert_eq!(VerdictFrame::decode(&hint), Ok(VerdictFrame::Hint(v)));
        assert_eq!(VerdictFrame::decode(&[]), Err(DecodeError::Empty));
        assert!(VerdictFrame::decode(&[2, 0]).is_err());
        assert!(VerdictFrame::decode(&[0, 1]).is_err());
    }

    #[test]
    fn details_are_cut_to_one_bounded_line() {
        let r = Refusal::new(RefusalCode::BadHello, format!("a\nb{}", "é".repeat(400)));
        assert!(r.detail.len() <= MAX_REFUSAL_DETAIL && r.detail.starts_with("a b"));
        assert!(Verdict::decode(&Verdict::Refused(r).encode()).is_ok());
    }
}
