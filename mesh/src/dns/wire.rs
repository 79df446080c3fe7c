//! The `dns` gossip channel's payload: one version byte, then a
//! postcard-encoded [`DnsMsg`] (a list of entries with their stamps).
//!
//! The same message carries a delta (broadcast of what changed) and a full
//! state (sent to new neighbours and every 30 s). Decoding is bounded and
//! validates every name, so hostile input yields a [`WireError`], never a
//! panic.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::dns::entries::{EntrySet, Key, Stamp};
use crate::ids::PeerName;

/// Version byte leading every message. Bump on any incompatible change.
pub const WIRE_VERSION: u8 = 1;
/// Largest payload accepted before decoding: room for a full table of
/// worst-case entries, under the mesh's message limit, so a peer cannot make
/// us allocate without bound.
pub const MAX_MESSAGE_BYTES: usize = 7 << 20;
/// Most entries in one message (a full table).
pub const MAX_MESSAGE_ENTRIES: usize = crate::dns::MAX_TABLE_ENTRIES;
// A full state plus the gossip envelope fits one mesh message.
const _: () = assert!(MAX_MESSAGE_BYTES + 1024 < crate::wire::MAX_MESSAGE_LEN);

/// Longest name (RFC 1035: 253 characters without the trailing dot).
pub const MAX_NAME_LEN: usize = 254;
/// Longest DNS label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest container id (Docker's are 64 hex digits; room for `netns:NAME`).
pub const MAX_CONTAINER_LEN: usize = 128;

/// One entry on the wire.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WireEntry {
    /// Lowercase FQDN with the trailing dot.
    pub name: String,
    /// The registering peer.
    pub origin: PeerName,
    /// Container id.
    pub container: String,
    /// Address.
    pub addr: Ipv4Addr,
    /// Raised by the origin on every change.
    pub version: u64,
    /// Deleted.
    pub tombstone: bool,
}

/// Every message on the `dns` channel.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DnsMsg {
    /// Entries, in key order when we send them.
    pub entries: Vec<WireEntry>,
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty payload.
    #[error("empty DNS message")]
    Empty,
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("DNS message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// Unknown version byte.
    #[error(
        "DNS message version {0} not supported (this peer speaks {WIRE_VERSION}); upgrade the older peer"
    )]
    Version(u8),
    /// postcard refused it.
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    /// Decoded but violates a bound.
    #[error("invalid DNS message: {0}")]
    Invalid(String),
}

/// Checks that `name` is a lowercase FQDN we can serve: labels of 1..=63
/// characters from `[a-z0-9_-]` (and `*`-free), at most [`MAX_NAME_LEN`]
/// long, ending in a dot.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name of {} characters is too long", name.len()));
    }
    let Some(body) = name.strip_suffix('.') else {
        return Err(format!("name {name:?} lacks the trailing dot"));
    };
    if body.is_empty() {
        return Err("empty name".into());
    }
    for label in body.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "name {name:?} has a label of {} characters",
                label.len()
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "name {name:?} has characters other than a-z, 0-9, '-' and '_'"
            ));
        }
    }
    Ok(())
}

impl WireEntry {
    fn validate(&self) -> Result<(), WireError> {
        valid_name(&self.name).map_err(WireError::Invalid)?;
        if self.container.is_empty() || self.container.len() > MAX_CONTAINER_LEN {
            return Err(WireError::Invalid(format!(
                "container id of {} characters",
                self.container.len()
            )));
        }
        Ok(())
    }

    /// The entry as a set member.
    pub fn into_pair(self) -> (Key, Stamp) {
        (
            Key {
                name: self.name,
                origin: self.origin,
                container: self.container,
                addr: self.addr,
            },
            Stamp {
                version: self.version,
                tombstone: self.tombstone,
            },
        )
    }

    /// A set member on the wire.
    pub fn from_pair(k: &Key, s: Stamp) -> WireEntry {
        WireEntry {
            name: k.name.clone(),
            origin: k.origin,
            container: k.container.clone(),
            addr: k.addr,
            version: s.version,
            tombstone: s.tombstone,
        }
    }
}

impl DnsMsg {
    /// The message carrying every entry of `set`.
    pub fn from_set(set: &EntrySet) -> DnsMsg {
        DnsMsg {
            entries: set
                .iter()
                .map(|(k, s)| WireEntry::from_pair(k, s))
                .collect(),
        }
    }

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
    pub fn decode(bytes: &[u8]) -> Result<DnsMsg, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let (v, body) = bytes.split_first().ok_or(WireError::Empty)?;
        if *v != WIRE_VERSION {
            return Err(WireError::Version(*v));
        }
        let (msg, rest): (DnsMsg, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if msg.entries.len() > MAX_MESSAGE_ENTRIES {
            return Err(WireError::Invalid(format!(
                "{} entries in one message (limit {MAX_MESSAGE_ENTRIES})",
                msg.entries.len()
            )));
        }
        for e in &msg.entries {
            e.validate()?;
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> WireEntry {
        WireEntry {
            name: "web.weave.local.".into(),
            origin: PeerName::new(0x81).expect("name"),
            container: "c1".into(),
            addr: Ipv4Addr::new(10, 32, 0, 1),
            version: 2,
            tombstone: true,
        }
    }

    #[test]
    fn bytes_round_trip() {
        let msg = DnsMsg {
            entries: vec![entry()],
        };
        let bytes = msg.encode();
        let mut want = vec![0x01, 0x01, 0x10];
        want.extend_from_slice(b"web.weave.local.");
        want.extend_from_slice(&[0x81, 0x01, 0x02]);
        want.extend_from_slice(b"c1");
        want.extend_from_slice(&[10, 32, 0, 1, 0x02, 0x01]);
        assert_eq!(bytes, want);
        assert_eq!(DnsMsg::decode(&bytes), Ok(msg));
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(DnsMsg::decode(&[]), Err(WireError::Empty));
        assert_eq!(DnsMsg::decode(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(
            DnsMsg::decode(&[1, 5]),
            Err(WireError::Malformed(_))
        ));
        let mut trailing = DnsMsg::default().encode();
        trailing.push(0);
        assert!(matches!(
            DnsMsg::decode(&trailing),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            DnsMsg::decode(&vec![1; MAX_MESSAGE_BYTES + 1]),
            Err(WireError::TooLarge(_))
        ));
        for name in [
            "Web.weave.local.",
            "web",
            "a..b.",
            ".",
            "a b.",
            &"a".repeat(64),
        ] {
            let mut e = entry();
            e.name = name.to_string();
            let bytes = DnsMsg { entries: vec![e] }.encode();
            assert!(
                matches!(DnsMsg::decode(&bytes), Err(WireError::Invalid(_))),
                "{name:?}"
            );
        }
        let mut e = entry();
        e.container = "x".repeat(MAX_CONTAINER_LEN + 1);
        let bytes = DnsMsg { entries: vec![e] }.encode();
        assert!(matches!(DnsMsg::decode(&bytes), Err(WireError::Invalid(_))));
    }

    #[test]
    fn name_limits() {
        let long = format!("{}.", vec!["a".repeat(63); 4].join("."));
        assert_eq!(long.len(), 256);
        assert!(valid_name(&long).is_err());
        let ok = format!(
            "{}.",
            [
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ]
            .join(".")
        );
        assert_eq!(ok.len(), MAX_NAME_LEN);
        assert_eq!(valid_name(&ok), Ok(()));
        assert!(valid_name("my_host-1.weave.local.").is_ok());
    }

    #[test]
    fn too_many_entries_refused() {
        let msg = DnsMsg {
            entries: vec![entry(); MAX_MESSAGE_ENTRIES + 1],
        };
        assert!(matches!(
            DnsMsg::decode(&msg.encode()),
            Err(WireError::Invalid(_))
        ));
    }
}
