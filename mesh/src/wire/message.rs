//! One application message after the handshake (the plaintext the router reassembles from
//! Noise transport chunks): one tag byte using weave's numbers, then for gossip tags a
//! format byte ([`MESSAGE_FORMAT`]) and the postcard encoding of the envelope. Unknown tags
//! decode to [`Message::Unknown`] so the mesh can log and ignore them as weave does.

use serde::{Deserialize, Serialize};

use super::{DecodeError, check_len, postcard_exact, postcard_with_prefix};
use crate::ids::PeerName;

/// Largest reassembled message the router accepts (8 MiB; weave allowed 10 MiB).
pub const MAX_MESSAGE_LEN: usize = 8 << 20;
/// Format version of the gossip envelopes.
pub const MESSAGE_FORMAT: u8 = 1;
/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 64;

/// Weave's message tags (mesh: protocol.go).
pub mod tag {
    /// Heartbeat, empty.
    pub const HEARTBEAT: u8 = 0;
    /// Gossip to a neighbour subset.
    pub const GOSSIP: u8 = 4;
    /// Gossip routed hop by hop to one peer.
    pub const GOSSIP_UNICAST: u8 = 5;
    /// Gossip along the originator's broadcast tree.
    pub const GOSSIP_BROADCAST: u8 = 6;
    /// Overlay (datapath) control.
    pub const OVERLAY_CONTROL: u8 = 7;
}

/// Envelope of tags 4 and 6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipMsg {
    /// Channel name (`topology`, `ipam`, `dns`, ...).
    pub channel: String,
    /// For tag 4 the sender; for tag 6 the originator.
    pub src: PeerName,
    /// Channel-specific bytes.
    pub payload: Vec<u8>,
}

/// Envelope of tag 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipUnicastMsg {
    /// Channel name.
    pub channel: String,
    /// Originator.
    pub src: PeerName,
    /// Final destination.
    pub dst: PeerName,
    /// Channel-specific bytes.
    pub payload: Vec<u8>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Tag 0: keeps the connection alive; any payload is ignored.
    Heartbeat,
    /// Tag 4.
    Gossip(GossipMsg),
    /// Tag 5.
    GossipUnicast(GossipUnicastMsg),
    /// Tag 6.
    GossipBroadcast(GossipMsg),
    /// Tag 7: opaque to the mesh, interpreted by the datapath.
    OverlayControl(Vec<u8>),
    /// Any other tag (weave's 1–3 included): logged and ignored.
    Unknown {
        /// The tag byte.
        tag: u8,
    },
}

impl Message {
    /// The tag byte of this message.
    pub fn tag(&self) -> u8 {
        match self {
            Message::Heartbeat => tag::HEARTBEAT,
            Message::Gossip(_) => tag::GOSSIP,
            Message::GossipUnicast(_) => tag::GOSSIP_UNICAST,
            Message::GossipBroadcast(_) => tag::GOSSIP_BROADCAST,
            Message::OverlayControl(_) => tag::OVERLAY_CONTROL,
            Message::Unknown { tag } => *tag,
        }
    }

    /// The plaintext bytes of this message.
    pub fn encode(&self) -> Vec<u8> {
        let head = [self.tag(), MESSAGE_FORMAT];
        match self {
            Message::Heartbeat | Message::Unknown { .. } => vec![self.tag()],
            Message::Gossip(g) | Message::GossipBroadcast(g) => postcard_with_prefix(&head, g),
            Message::GossipUnicast(g) => postcard_with_prefix(&head, g),
            Message::OverlayControl(data) => {
                let mut v = Vec::with_capacity(1 + data.len());
                v.push(tag::OVERLAY_CONTROL);
                v.extend_from_slice(data);
                v
            }
        }
    }

    /// Parses one message. Empty input is an error (weave silently skipped empty bodies; the
    /// mesh does the same by ignoring [`DecodeError::Empty`]).
    pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
        let (&t, rest) = b.split_first().ok_or(DecodeError::Empty)?;
        if b.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong {
                what: "message",
                len: b.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        match t {
            tag::HEARTBEAT => Ok(Message::Heartbeat),
            tag::GOSSIP | tag::GOSSIP_BROADCAST => {
                let body = versioned(rest)?;
                let g: GossipMsg = postcard_exact("gossip envelope", body)?;
                check_len("channel name", g.channel.len(), MAX_CHANNEL_LEN)?;
                Ok(if t == tag::GOSSIP {
                    Message::Gossip(g)
                } else {
                    Message::GossipBroadcast(g)
                })
            }
            tag::GOSSIP_UNICAST => {
                let body = versioned(rest)?;
                let g: GossipUnicastMsg = postcard_exact("gossip unicast envelope", body)?;
                check_len("channel name", g.channel.len(), MAX_CHANNEL_LEN)?;
                Ok(Message::GossipUnicast(g))
            }
            tag::OVERLAY_CONTROL => Ok(Message::OverlayControl(rest.to_vec())),
            other => Ok(Message::Unknown { tag: other }),
        }
    }
}

fn versioned(rest: &[u8]) -> Result<&[u8], DecodeError> {
    let (&format, body) = rest.split_first().ok_or(DecodeError::Malformed {
        what: "gossip envelope",
        detail: "missing format byte".into(),
    })?;
    if format != MESSAGE_FORMAT {
        return Err(DecodeError::UnknownVersion {
            what: "gossip envelope",
            version: format,
            supported: MESSAGE_FORMAT,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(v: u64) -> PeerName {
        PeerName::new(v).unwrap()
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(Message::Heartbeat.encode(), vec![0]);
        let g = Message::Gossip(GossipMsg {
            channel: "ipam".into(),
            src: name(0x81),
            payload: vec![9, 8],
        });
        assert_eq!(
            g.encode(),
            vec![4, 1, 4, b'i', b'p', b'a', b'm', 0x81, 0x01, 2, 9, 8]
        );
        let u = Message::GossipUnicast(GossipUnicastMsg {
            channel: "dns".into(),
            src: name(1),
            dst: name(2),
            payload: vec![],
        });
        assert_eq!(u.encode(), vec![5, 1, 3, b'd', b'n', b's', 1, 2, 0]);
        let b = Message::GossipBroadcast(GossipMsg {
            channel: "x".into(),
            src: name(3),
            payload: vec![7],
        });
        assert_eq!(b.encode(), vec![6, 1, 1, b'x', 3, 1, 7]);
        assert_eq!(Message::OverlayControl(vec![1, 2]).encode(), vec![7, 1, 2]);
        assert_eq!(Message::Unknown { tag: 2 }.encode(), vec![2]);
        for m in [
            Message::Heartbeat,
            g,
            u,
            b,
            Message::OverlayControl(vec![1, 2]),
            Message::Unknown { tag: 200 },
        ] {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            Message::decode(&[4, 2, 0, 0, 0]),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        assert!(Message::decode(&[4]).is_err());
        assert!(Message::decode(&[5, 1, 1, b'x', 1]).is_err());
        assert!(matches!(
            Message::decode(&[6, 1, 1, b'x', 3, 1, 7, 0]),
            Err(DecodeError::Trailing { .. })
        ));
        let mut long = vec![4, 1, 65];
        long.extend(std::iter::repeat_n(b'a', 65));
        long.extend([1, 0]);
        assert!(matches!(
            Message::decode(&long),
            Err(DecodeError::TooLong { .. })
        ));
        // A 49-bit source name is refused.
        assert!(
            Message::decode(&[
                4, 1, 1, b'x', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0
            ])
            .is_err()
        );
    }
}
