//! Wire formats, one file per format (smoltcp style): the 7-byte protocol header, the Noise
//! handshake payload ([`Hello`]), the post-handshake [`Verdict`], application messages ([`Message`]), the payloads of the
//! internal `topology` gossip channel and the stream framing of the control connection ([`frame`]). Every decoder returns `Result` and never panics;
//! `docs/protocol.md` describes every byte.

pub mod frame;
pub mod header;
pub mod hello;
pub mod message;
pub mod topology;
pub mod verdict;

pub use header::{HEADER_LEN, Header, HeaderError, PROTOCOL_MAX, PROTOCOL_MIN};
pub use hello::{HELLO_FORMAT, Hello, MAX_NICKNAME_LEN, MAX_RESERVED, MAX_RESERVED_LEN};
pub use message::{
    GossipMsg, GossipUnicastMsg, MAX_CHANNEL_LEN, MAX_MESSAGE_LEN, MESSAGE_FORMAT, Message, tag,
};
pub use topology::{ConnSummary, PeerDelta, PeerRecord, TOPOLOGY_FORMAT, TopologyMsg};
pub use verdict::{
    MAX_REFUSAL_DETAIL, Refusal, RefusalCode, VERDICT_FORMAT, Verdict, VerdictFrame,
};

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing to decode.
    #[error("empty message")]
    Empty,
    /// The format version byte is not one we understand.
    #[error(
        "unsupported {what} format version {version} (this build understands {supported}); upgrade meshnet on the older host"
    )]
    UnknownVersion {
        /// Which payload carried it.
        what: &'static str,
        /// The version received.
        version: u8,
        /// The version we speak.
        supported: u8,
    },
    /// The postcard body is malformed or truncated.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which payload.
        what: &'static str,
        /// postcard's complaint.
        detail: String,
    },
    /// Bytes left over after a complete value.
    #[error("{count} trailing bytes after {what}")]
    Trailing {
        /// Which payload.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A field exceeds its documented bound.
    #[error("{what} too long: {len} > {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
}

/// Decodes exactly one postcard value from `bytes`, refusing trailing bytes.
pub(crate) fn postcard_exact<'a, T: serde::Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed {
            what,
            detail: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing {
            what,
            count: rest.len(),
        });
    }
    Ok(value)
}

/// Encodes a value with postcard after a format byte. Encoding our own types into a `Vec`
/// cannot fail (no maps with non-string keys, no unsized sequences), so an error here is a bug.
pub(crate) fn postcard_with_prefix<T: serde::Serialize>(prefix: &[u8], value: &T) -> Vec<u8> {
    let out = prefix.to_vec();
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(e) => unreachable!("postcard encoding into a Vec failed: {e}"),
    }
}

/// Checks a length bound.
pub(crate) fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        Err(DecodeError::TooLong { what, len, max })
    } else {
        Ok(())
    }
}
