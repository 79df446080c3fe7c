//! The request/response vocabulary of [`crate::Ipam`]: configuration,
//! request results, events for the application, transmits for the wire,
//! and errors, with the named defaults weave uses.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::addr::{Cidr, Ident, PeerName};

/// Default universe, as weave.
pub const DEFAULT_RANGE: &str = "10.32.0.0/12";
/// How long a dead container keeps its address: a `docker restart` gets the
/// same address back (weave tests 100, 310).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Retry period for pending requests, re-proposals and free-count refresh,
/// as weave.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Version bump of rmpeer/reset transfers, as weave, so the takeover wins
/// over any update the old owner made since.
pub const TAKEOVER_BUMP: u32 = 100;
/// Claims sent to an unreachable owner fail after this many attempts.
pub const MAX_CLAIM_ATTEMPTS: u32 = 5;

/// How the ring is initialised when there is no persisted one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// Paxos among `peers` electors (quorum `peers / 2 + 1`).
    Consensus {
        /// Weave's `consensus=N`; default = launch-line peers + 1.
        peers: u32,
    },
    /// Deterministic split among these peers, no consensus.
    Seed(BTreeSet<PeerName>),
    /// Never votes; waits for a ring and asks for space.
    Observer,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This peer.
    pub name: PeerName,
    /// The universe (`--ipalloc-range`).
    pub range: Cidr,
    /// `--ipalloc-default-subnet` (defaults to `range`).
    pub default_subnet: Cidr,
    /// Initialisation mode.
    pub init: Init,
    /// Grace period after a container dies.
    pub grace: Duration,
    /// Reclaim space of peers unknown for this long (off by default: a
    /// peer that is merely partitioned would lose its space).
    pub reclaim_unreachable_after: Option<Duration>,
}

impl Config {
    /// Weave's defaults for `name`.
    pub fn new(name: PeerName, range: Cidr, init: Init) -> Config {
        Config {
            name,
            range,
            default_subnet: range,
            init,
            grace: DEFAULT_GRACE,
            reclaim_unreachable_after: None,
        }
    }
}

/// Correlates a pending request with its [`Event`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

/// Result of a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Allocation {
    /// Done now. Acknowledge only after draining [`crate::Ipam::poll_persist`].
    Done(Cidr),
    /// Completes later with an [`Event`].
    Pending(RequestId),
}

/// An address live here that another peer also has live.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Conflict {
    /// The address.
    pub addr: Ipv4Addr,
    /// Our holder.
    pub ident: Ident,
    /// The other peer holding it.
    pub peer: PeerName,
}

/// Output for the application.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// A pending allocation completed.
    Allocated {
        /// Request.
        request: RequestId,
        /// Address with subnet prefix.
        addr: Cidr,
    },
    /// A pending claim completed.
    Claimed {
        /// Request.
        request: RequestId,
        /// Address.
        addr: Cidr,
    },
    /// A pending request failed.
    Failed {
        /// Request.
        request: RequestId,
        /// Why.
        error: Error,
    },
    /// A pending request was cancelled (its container died).
    Cancelled {
        /// Request.
        request: RequestId,
    },
    /// The ring became available (answers `GET /ring`).
    RingReady,
    /// We gave up our ring for another lineage; our live addresses are
    /// being re-claimed from their new owners.
    RingAdopted {
        /// The peer whose ring we adopted.
        from: PeerName,
    },
    /// A new conflicting address.
    Conflict(Conflict),
    /// A container's addresses were released after its grace period.
    Released {
        /// Owner.
        ident: Ident,
        /// Addresses.
        addrs: Vec<Cidr>,
    },
    /// A peer sent something we cannot use; an operator must look.
    PeerProblem {
        /// Sender.
        peer: PeerName,
        /// What.
        problem: String,
    },
}

/// Output for the wire (the `ipam` gossip channel).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Transmit {
    /// Push to every peer (GossipBroadcast).
    Broadcast(Vec<u8>),
    /// To one peer (GossipUnicast).
    Unicast(PeerName, Vec<u8>),
}

/// Request errors; every message says what to do next where it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Host bits set.
    #[error("invalid subnet {0} - bits after network prefix are not all zero")]
    NotNetwork(Cidr),
    /// Fewer than 4 addresses.
    #[error("invalid subnet {0} - smaller than minimum size 4")]
    TooSmall(Cidr),
    /// Outside the universe.
    #[error("range {subnet} out of bounds: {range}")]
    OutOfBounds {
        /// Asked.
        subnet: Cidr,
        /// Universe.
        range: Cidr,
    },
    /// Claim of an address another ident holds here.
    #[error("address {addr} is already owned by {ident}")]
    AlreadyOwned {
        /// Address.
        addr: Ipv4Addr,
        /// Holder.
        ident: Ident,
    },
    /// Claim of an address another peer owns and will not give.
    #[error("address {addr} is owned by other peer {peer}")]
    OwnedByOtherPeer {
        /// Address.
        addr: Ipv4Addr,
        /// Owner.
        peer: PeerName,
    },
    /// Free of an address the ident does not hold.
    #[error("Free: address {addr} not found for {ident}")]
    NotFound {
        /// Address.
        addr: Ipv4Addr,
        /// Ident.
        ident: Ident,
    },
    /// Free-all of an ident without addresses.
    #[error("Delete: no addresses for {0}")]
    NoAddresses(Ident),
    /// rmpeer of an unknown name.
    #[error("peer {0} is not in the IP allocation ring")]
    UnknownPeer(String),
    /// rmpeer of ourselves.
    #[error("cannot remove this peer's own space; run `reset` on it instead")]
    IsSelf,
    /// No ring yet.
    #[error("IP allocation ring not initialised yet; run `prime` or allocate first")]
    NoRing,
    /// No free address in the subnet here, and no reachable peer has any
    /// to give.
    #[error("no free address in {subnet}: {used} of {size} in use{}", unreachable_note(*.unreachable))]
    Full {
        /// Asked.
        subnet: Cidr,
        /// Addresses in use.
        used: u64,
        /// Host addresses in the subnet.
        size: u64,
        /// Free addresses that peers which cannot be reached hold.
        unreachable: u64,
    },
    /// After `leave`.
    #[error("IPAM is shutting down")]
    ShuttingDown,
}

/// The tail of [`Error::Full`]'s message when unreachable peers hold free space.
fn unreachable_note(unreachable: u64) -> String {
    if unreachable == 0 {
        String::new()
    } else {
        format!(
            ", {unreachable} free ones held by peers that cannot be reached: bring them back or remove them with `rmpeer`"
        )
    }
}
