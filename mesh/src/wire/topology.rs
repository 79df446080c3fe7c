//! Payloads of the internal `topology` gossip channel (carried in a [`super::GossipMsg`] with
//! channel `topology`): one format byte ([`TOPOLOGY_FORMAT`]) then a postcard [`TopologyMsg`].
//!
//! Weave sent every changed peer's whole connection list in each update and the whole
//! topology every 30 s, which is O(N²) bytes per change in a full mesh. meshnet sends a
//! [`PeerDelta`] (only the connections that changed, applicable on top of exactly one
//! version), answers a delta it cannot apply with a [`TopologyMsg::Request`], and runs the
//! periodic anti-entropy with a [`TopologyMsg::Digest`] of `(name, uid, version)` triples.

use serde::{Deserialize, Serialize};

use super::{DecodeError, check_len, postcard_exact, postcard_with_prefix};
use crate::ids::{PeerName, PeerUid, ShortId};
use crate::keys::PublicKey;
use crate::wire::hello::MAX_NICKNAME_LEN;

/// Most entries (records, deltas, names, digest triples) in one message and most
/// connections in one record or delta; the mesh uses the same bound for peers it knows.
pub const MAX_ENTRIES: usize = crate::mesh::MAX_TOPOLOGY_ENTRIES;

/// One LEB128 varint (postcard's integer encoding) and the bytes after it.
fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// The entry count a body announces (its variant index, then the sequence length), read
/// before anything is deserialised, so an over-long message costs nothing to refuse.
fn announced_entries(body: &[u8]) -> Option<u64> {
    let (_variant, rest) = varint(body)?;
    Some(varint(rest)?.0)
}

/// Format version of topology payloads.
pub const TOPOLOGY_FORMAT: u8 = 2;
/// Longest remote address string accepted (`[v6]:port` fits).
pub const MAX_ADDR_LEN: usize = 64;

/// One connection as its owner reports it (weave's `connectionSummary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSummary {
    /// Remote TCP address as the owner sees it (`ip:port`).
    pub remote_addr: String,
    /// True when the owner dialled.
    pub outbound: bool,
    /// True once the connection is established.
    pub established: bool,
}

/// A full record of one peer (weave's `peerSummary` plus its connections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer.
    pub name: PeerName,
    /// Its static Noise public key: the mesh binds the name to it, and refuses a connection
    /// that claims the name with another key.
    pub key: PublicKey,
    /// Its nickname.
    pub nickname: String,
    /// Its incarnation.
    pub uid: PeerUid,
    /// Its version; bumped by the owner on every change.
    pub version: u64,
    /// Its short id.
    pub short_id: ShortId,
    /// Its TCP listen port (for discovery of inbound-only peers).
    pub listen_port: u16,
    /// Its connections, sorted by remote name.
    pub conns: Vec<(PeerName, ConnSummary)>,
}

impl PeerRecord {
    /// Its encoded size in a [`TopologyMsg::Full`] (for splitting answers into messages).
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// The change of one peer's record from `from_version` to `to_version` (same `uid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDelta {
    /// The peer.
    pub name: PeerName,
    /// Its incarnation; a delta only applies to a record with the same uid.
    pub uid: PeerUid,
    /// The version the delta applies on top of.
    pub from_version: u64,
    /// The version after applying it.
    pub to_version: u64,
    /// Nickname at `to_version` (small; sent whole).
    pub nickname: String,
    /// Short id at `to_version`.
    pub short_id: ShortId,
    /// Listen port at `to_version`.
    pub listen_port: u16,
    /// Connections added or changed.
    pub upserts: Vec<(PeerName, ConnSummary)>,
    /// Connections removed.
    pub removed: Vec<PeerName>,
}

/// A `topology` channel payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopologyMsg {
    /// Incremental changes, relayed by whoever they improved.
    Delta(Vec<PeerDelta>),
    /// Full records (to a new neighbour, in answer to a request, or to repair a digest gap).
    Full(Vec<PeerRecord>),
    /// "Send me full records of these peers" (a delta did not apply).
    Request(Vec<PeerName>),
    /// Periodic anti-entropy: what the sender knows, as `(name, uid, version)`.
    Digest(Vec<(PeerName, PeerUid, u64)>),
}

impl TopologyMsg {
    /// The channel payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard_with_prefix(&[TOPOLOGY_FORMAT], self)
    }

    /// Parses and bounds-checks a channel payload.
    pub fn decode(b: &[u8]) -> Result<TopologyMsg, DecodeError> {
        let (&format, body) = b.split_first().ok_or(DecodeError::Empty)?;
        if format != TOPOLOGY_FORMAT {
            return Err(DecodeError::UnknownVersion {
                what: "topology",
                version: format,
                supported: TOPOLOGY_FORMAT,
            });
        }
        if let Some(n) = announced_entries(body) {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            check_len("topology message entries", n, MAX_ENTRIES)?;
        }
        let msg: TopologyMsg = postcard_exact("topology", body)?;
        msg.validate()?;
        Ok(msg)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        let conns = |c: &[(PeerName, ConnSummary)]| {
            check_len("connections in one record", c.len(), MAX_ENTRIES)?;
            c.iter().try_for_each(|(_, s)| {
                check_len("remote address", s.remote_addr.len(), MAX_ADDR_LEN)
            })
        };
        match self {
            TopologyMsg::Delta(ds) => ds.iter().try_for_each(|d| {
                check_len("nickname", d.nickname.len(), MAX_NICKNAME_LEN)?;
                check_len(
                    "connections removed in one delta",
                    d.removed.len(),
                    MAX_ENTRIES,
                )?;
                conns(&d.upserts)
            }),
            TopologyMsg::Full(rs) => rs.iter().try_for_each(|r| {
                check_len("nickname", r.nickname.len(), MAX_NICKNAME_LEN)?;
                conns(&r.conns)
            }),
            TopologyMsg::Request(_) | TopologyMsg::Digest(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(v: u64) -> PeerName {
        PeerName::new(v).unwrap()
    }

    fn summary() -> ConnSummary {
        ConnSummary {
            remote_addr: "1.2.3.4:5".into(),
            outbound: true,
            established: false,
        }
    }

    #[test]
    fn exact_bytes() {
        let req = TopologyMsg::Request(vec![name(1), name(2)]);
        assert_eq!(req.encode(), vec![2, 2, 2, 1, 2]);
        let dig = TopologyMsg::Digest(vec![(name(1), PeerUid(7), 3)]);
        assert_eq!(dig.encode(), vec![2, 3, 1, 1, 7, 3]);
        let delta = TopologyMsg::Delta(vec![PeerDelta {
            name: name(1),
            uid: PeerUid(2),
            from_version: 3,
            to_version: 4,
            nickname: "a".into(),
            short_id: ShortId::new(5).unwrap(),
            listen_port: 6,
            upserts: vec![(name(9), summary())],
            removed: vec![name(8)],
        }]);
        let mut expected = vec![2, 0, 1, 1, 2, 3, 4, 1, b'a', 5, 6, 1, 9, 9];
        expected.extend_from_slice(b"1.2.3.4:5");
        expected.extend([1, 0, 1, 8]);
        assert_eq!(delta.encode(), expected);
        let full = TopologyMsg::Full(vec![PeerRecord {
            name: name(1),
            key: PublicKey([0xab; 32]),
            nickname: String::new(),
            uid: PeerUid(2),
            version: 3,
            short_id: ShortId::new(4).unwrap(),
            listen_port: 5,
            conns: vec![],
        }]);
        // The key is 32 raw bytes after the name.
        let mut expected = vec![2, 1, 1, 1];
        expected.extend([0xab; 32]);
        expected.extend([0, 2, 3, 4, 5, 0]);
        assert_eq!(full.encode(), expected);
        for m in [req, dig, delta, full] {
            assert_eq!(TopologyMsg::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(TopologyMsg::decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            TopologyMsg::decode(&[1, 2, 0]),
            Err(DecodeError::UnknownVersion { version: 1, .. })
        ));
        assert!(TopologyMsg::decode(&[2, 9, 0]).is_err());
        assert!(TopologyMsg::decode(&[2, 2, 3, 1]).is_err());
        assert!(TopologyMsg::decode(&[2, 2, 0, 0]).is_err());
        // A request announcing 2^34 names is refused before anything is allocated.
        assert_eq!(
            TopologyMsg::decode(&[2, 2, 0x80, 0x80, 0x80, 0x80, 0x40]),
            Err(DecodeError::TooLong {
                what: "topology message entries",
                len: 1 << 34,
                max: MAX_ENTRIES
            })
        );
        let at_limit = TopologyMsg::Request(vec![name(1); MAX_ENTRIES]);
        assert_eq!(TopologyMsg::decode(&at_limit.encode()), Ok(at_limit));
        let over = TopologyMsg::Digest(vec![(name(1), PeerUid(1), 1); MAX_ENTRIES + 1]);
        assert!(matches!(
            TopologyMsg::decode(&over.encode()),
            Err(DecodeError::TooLong { len, .. }) if len == MAX_ENTRIES + 1
        ));
        // A full record cut inside its key.
        assert!(TopologyMsg::decode(&[2, 1, 1, 1, 0xab, 0xab]).is_err());
        let mut long = summary();
        long.remote_addr = "x".repeat(65);
        let r = TopologyMsg::Delta(vec![PeerDelta {
            name: name(1),
            uid: PeerUid(2),
            from_version: 3,
            to_version: 4,
            nickname: "a".into(),
            short_id: ShortId::new(5).unwrap(),
            listen_port: 6,
            upserts: vec![(name(9), long)],
            removed: vec![],
        }]);
        assert!(matches!(
            TopologyMsg::decode(&r.encode()),
            Err(DecodeError::TooLong { .. })
        ));
    }
}
