//! IPAM messages on the `ipam` gossip channel: one version byte, then a
//! postcard-encoded [`Message`]. Decoding is bounded (message size, ring
//! tokens, Paxos entries, conflict lists) and validates every ring, so a
//! hostile or corrupt payload yields a [`WireError`], never a panic.
//!
//! | message | sent as | meaning |
//! |---|---|---|
//! | `Gossip` | broadcast, periodic gossip, unicast reply | ring (once it exists) or Paxos claims (before) |
//! | `SpaceRequest` | unicast to an owner | donate space in `range`, or hand over exactly `range` (a claim, or a re-claim of addresses the sender has live) |
//! | `RingUpdate` | unicast reply | the donor's ring after a grant |
//! | `SpaceDenied` | unicast reply | nothing free; `conflicts` lists addresses live on both peers |
//! | `Release` | unicast to an owner | the sender no longer holds these contested addresses |
//! | `Verify` | unicast from an owner | "do you still hold these?", answered by `Release` |

use serde::{Deserialize, Serialize};

use crate::addr::AddrRange;
use crate::consensus::PaxosState;
use crate::ring::Ring;

/// Version byte leading every message. Bump on any incompatible change.
pub const WIRE_VERSION: u8 = 1;
/// Largest message accepted (a ring of ~300k tokens); bigger is refused
/// before decoding so a peer cannot make us allocate without bound.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// Largest ring accepted or held, in tokens (a merge that would grow ours past it is
/// refused): 2^18 tokens at the longest entry encoding (25 bytes: token, peer, version,
/// free) is 6.5 MB, so our full state always fits in [`MAX_MESSAGE_BYTES`] with room for
/// the rest of the message; a real ring has a few tokens per peer.
pub const MAX_RING_TOKENS: usize = 1 << 18;
/// Longest postcard encoding of one ring token and its entry.
const MAX_TOKEN_BYTES: usize = 5 + 10 + 5 + 5;
const _: () = assert!(MAX_RING_TOKENS * MAX_TOKEN_BYTES + (1 << 20) < MAX_MESSAGE_BYTES);
/// Largest Paxos map accepted, in electors.
pub const MAX_ELECTORS: usize = 1 << 14;
/// Largest conflict / release list in one message.
pub const MAX_ADDR_LIST: usize = 1 << 16;
/// Largest range of an exact (claim / re-claim) request: these name
/// addresses that are live, so a bigger one is a bug or an attack that
/// would strip the owner of its free space.
pub const MAX_EXACT_RANGE: u32 = 1024;

/// Whether the sender takes part in consensus.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Role {
    /// Votes in consensus.
    Elector,
    /// Never votes; owns space only once given it.
    Observer,
}

/// The gossiped state of one peer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GossipState {
    /// Sender's role.
    pub role: Role,
    /// The sender needs a ring (observer priming): electors answer with
    /// theirs or start consensus.
    pub wants_ring: bool,
    /// Paxos claims, sent only while the sender has no ring.
    pub paxos: Option<PaxosState>,
    /// The ring, once it exists.
    pub ring: Option<Ring>,
}

/// What a [`Message::SpaceRequest`] asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SpaceKind {
    /// Some free space inside the range (a donation).
    Donate,
    /// Exactly the range, for a claim not yet live anywhere: taken
    /// addresses are simply refused.
    Claim,
    /// Exactly the range, whose addresses the sender already has live
    /// (after adopting another lineage, an rmpeer of the sender, or a
    /// startup claim): taken addresses are conflicts, free ones are handed
    /// over, and refused ones stay reserved for the sender.
    Reclaim,
}

/// Every IPAM message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// See [`GossipState`].
    Gossip(GossipState),
    /// Ask an owner for space.
    SpaceRequest {
        /// Correlates the denial.
        id: u64,
        /// Where the space is wanted.
        range: AddrRange,
        /// What is asked for.
        kind: SpaceKind,
    },
    /// The owner's ring after a grant.
    RingUpdate(Ring),
    /// Nothing (more) can be granted.
    SpaceDenied {
        /// From the request.
        id: u64,
        /// From the request.
        range: AddrRange,
        /// Addresses in `range` that the owner also has live.
        conflicts: Vec<u32>,
    },
    /// The sender dropped these contested addresses.
    Release {
        /// Addresses.
        addrs: Vec<u32>,
    },
    /// The owner asks whether the receiver still holds these addresses it
    /// once re-claimed; answered with `Release` for those it no longer
    /// holds. Owner-driven and stateless on the holder, so a lost `Release`
    /// cannot leave an address reserved forever.
    Verify {
        /// Addresses.
        addrs: Vec<u32>,
    },
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty payload.
    #[error("empty IPAM message")]
    Empty,
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("IPAM message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Unknown version byte.
    #[error(
        "IPAM message version {0} not supported (this peer speaks {WIRE_VERSION}); upgrade the older peer"
    )]
    Version(u8),
    /// postcard refused it.
    #[error("malformed IPAM message: {0}")]
    Malformed(String),
    /// Decoded but violates a bound or an invariant.
    #[error("invalid IPAM message: {0}")]
    Invalid(String),
}

impl Message {
    /// Encodes with the version byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        // Serialising these plain data types into a Vec cannot fail.
        if let Ok(body) = postcard::to_allocvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Decodes and validates.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let (v, body) = bytes.split_first().ok_or(WireError::Empty)?;
        if *v != WIRE_VERSION {
            return Err(WireError::Version(*v));
        }
        let (msg, rest): (Message, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        msg.validate()?;
        Ok(msg)
    }

    fn validate(&self) -> Result<(), WireError> {
        let ring_ok = |r: &Ring| -> Result<(), WireError> {
            if r.len() > MAX_RING_TOKENS {
                return Err(WireError::Invalid(format!("ring of {} tokens", r.len())));
            }
            r.validate().map_err(|e| WireError::Invalid(e.to_string()))
        };
        match self {
            Message::Gossip(g) => {
                if let Some(r) = &g.ring {
                    ring_ok(r)?;
                }
                if let Some(p) = &g.paxos
                    && (p.len() > MAX_ELECTORS || p.values().any(|c| c.value.len() > MAX_ELECTORS))
                {
                    return Err(WireError::Invalid("too many electors".into()));
                }
            }
            Message::RingUpdate(r) => ring_ok(r)?,
            Message::SpaceRequest { range, .. } | Message::SpaceDenied { range, .. }
                if range.is_empty() =>
            {
                return Err(WireError::Invalid("empty range".into()));
            }
            Message::SpaceRequest { range, kind, .. }
                if *kind != SpaceKind::Donate && range.size() > MAX_EXACT_RANGE =>
            {
                return Err(WireError::Invalid("exact request range too large".into()));
            }
            Message::SpaceDenied { conflicts, .. } if conflicts.len() > MAX_ADDR_LIST => {
                return Err(WireError::Invalid("conflict list too long".into()));
            }
            Message::Release { addrs } | Message::Verify { addrs }
                if addrs.len() > MAX_ADDR_LIST =>
            {
                return Err(WireError::Invalid("address list too long".into()));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::addr::PeerName;
    use crate::consensus::Claims;
    use crate::ring::Lineage;

    fn samples() -> Vec<Message> {
        let peers: BTreeSet<_> = [PeerName::new(1).unwrap(), PeerName::new(2).unwrap()].into();
        let ring = Ring::split(AddrRange::new(100, 164), &peers, Lineage(3));
        let mut paxos = PaxosState::new();
        paxos.insert(PeerName::new(1).unwrap(), Claims::default());
        vec![
            Message::Gossip(GossipState {
                role: Role::Elector,
                wants_ring: false,
                paxos: None,
                ring: Some(ring.clone()),
            }),
            Message::Gossip(GossipState {
                role: Role::Observer,
                wants_ring: true,
                paxos: Some(paxos),
                ring: None,
            }),
            Message::SpaceRequest {
                id: 7,
                range: AddrRange::new(1, 9),
                kind: SpaceKind::Reclaim,
            },
            Message::RingUpdate(ring),
            Message::SpaceDenied {
                id: 7,
                range: AddrRange::new(1, 9),
                conflicts: vec![3, 4],
            },
            Message::Release { addrs: vec![5] },
            Message::Verify { addrs: vec![6, 7] },
        ]
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            let b = m.encode();
            assert_eq!(b[0], WIRE_VERSION);
            assert_eq!(Message::decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn exact_bytes_of_a_small_message() {
        let m = Message::Release {
            addrs: vec![5, 300],
        };
        // version 1, variant 4, len 2, varint 5, varint 300 = 0xac 0x02.
        assert_eq!(m.encode(), vec![1, 4, 2, 5, 0xac, 0x02]);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        assert_eq!(Message::decode(&[9, 0]), Err(WireError::Version(9)));
        assert!(Message::decode(&[1, 200]).is_err());
        assert!(Message::decode(&[1, 4, 2, 5]).is_err());
        let mut b = Message::Release { addrs: vec![5] }.encode();
        b.push(0);
        assert!(Message::decode(&b).is_err());
        // A ring without a token at its start is refused.
        let bad = Message::SpaceRequest {
            id: 1,
            range: AddrRange::new(5, 5),
            kind: SpaceKind::Donate,
        };
        assert!(Message::decode(&bad.encode()).is_err());
    }

    #[test]
    fn exact_requests_are_bounded() {
        let m = |kind, size| Message::SpaceRequest {
            id: 1,
            range: AddrRange::new(0, size),
            kind,
        };
        assert!(Message::decode(&m(SpaceKind::Reclaim, MAX_EXACT_RANGE).encode()).is_ok());
        assert!(Message::decode(&m(SpaceKind::Reclaim, MAX_EXACT_RANGE + 1).encode()).is_err());
        assert!(Message::decode(&m(SpaceKind::Claim, MAX_EXACT_RANGE + 1).encode()).is_err());
        assert!(Message::decode(&m(SpaceKind::Donate, 1 << 20).encode()).is_ok());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in samples() {
            let b = m.encode();
            for n in 0..b.len() {
                assert!(Message::decode(&b[..n]).is_err(), "prefix {n} of {m:?}");
            }
        }
    }
}
