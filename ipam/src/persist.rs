//! The persisted IPAM state: a serde type the router writes crash-safely
//! (JSON via write-temp, fsync, rename, fsync-dir) *before* it releases any
//! transmit or acknowledgement produced by the same input (see
//! [`crate::Ipam::poll_persist`]). It is the whole durable state: ring,
//! Paxos claims (an acceptor must not forget promises), allocations, and
//! contested addresses (reserved for a peer that has them live).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::addr::{Cidr, Ident, PeerName};
use crate::consensus::PaxosState;
use crate::ring::Ring;

/// Current on-disk format. A file with another value is refused, never
/// half-read.
pub const PERSIST_FORMAT: u32 = 1;

/// One owner's allocations.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Owned {
    /// Released automatically when the container dies (weave's
    /// `IsContainer`, set by `check-alive`).
    pub is_container: bool,
    /// Addresses, each with the prefix of the subnet it came from.
    pub addrs: BTreeSet<Cidr>,
}

/// Everything that must survive a restart.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Persisted {
    /// [`PERSIST_FORMAT`].
    pub format: u32,
    /// The peer this state belongs to. A different peer (a cloned disk, a
    /// relaunch under another `--name`) must not reuse it.
    pub peer: PeerName,
    /// The universe it was made for.
    pub range: Cidr,
    /// Increases with every write; lets the router skip stale writes.
    pub seq: u64,
    /// The ring, once initialised.
    pub ring: Option<Ring>,
    /// Paxos claims while initialising.
    pub paxos: PaxosState,
    /// Allocations by owner.
    pub owned: BTreeMap<Ident, Owned>,
    /// Addresses in our space that another peer has live: never handed out.
    pub contested: BTreeMap<u32, PeerName>,
}

/// Why persisted state cannot be used (the router then starts fresh and
/// logs this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// Unknown format.
    #[error(
        "persisted IPAM state has format {found}, this build reads {PERSIST_FORMAT}; move the file aside to start fresh"
    )]
    Format {
        /// Found in the file.
        found: u32,
    },
    /// Someone else's state.
    #[error(
        "persisted IPAM state belongs to peer {persisted}, not {me} (cloned or renamed host): not reusing it"
    )]
    OtherPeer {
        /// In the file.
        persisted: PeerName,
        /// Us.
        me: PeerName,
    },
    /// Another universe.
    #[error(
        "persisted IPAM state is for range {persisted}, configured range is {configured}: not reusing it"
    )]
    OtherRange {
        /// In the file.
        persisted: Cidr,
        /// Configured.
        configured: Cidr,
    },
    /// Structurally broken.
    #[error("persisted IPAM state is corrupt: {0}")]
    Corrupt(String),
}
