//! meshnet-ipam: sans-IO IP address management for meshnet, weave's model
//! made safe where weave hurt its users.
//!
//! The universe (default `10.32.0.0/12`) is a [`ring::Ring`] of tokens owned
//! by peers, a CRDT merged by version and gossiped on the `ipam` channel.
//! It is initialised lazily by Paxos consensus, a seed list, or (observers)
//! by receiving it. Each peer allocates only from space it owns, asks
//! owners for donations, and re-claims exactly the addresses it holds when
//! ownership moved under it (separately initialised rings meeting, rmpeer).
//! Nothing here does I/O: time and seeds are parameters, outputs are polled
//! in the crash-safe order by [`node::Node`], the one driver of the call
//! protocol (persist, acknowledged, then transmit and events, then replies).
//!
//! Guarantees, and what they rest on:
//! - An address is handed out only by the peer owning it in the ring, from
//!   space it has not given away; giving space away is persisted before the
//!   grant leaves, so a kill -9 at any point cannot make two peers own one
//!   address, and an acknowledged address is always on disk.
//! - The initial ring is chosen by Paxos with quorum `N/2 + 1` (only
//!   `consensus` peers vote), or derived from a seed list.
//! - Rings initialised separately meet deterministically: the greater
//!   [`ring::Lineage`] is kept everywhere; peers of the other re-claim
//!   exactly the addresses they hold from the new owners. Free ones are
//!   handed over; ones live on both sides are reported by both peers
//!   ([`Ipam::conflicts`]) and reserved until one side lets go.
//! - `rmpeer` is safe when the removed peer is really gone and the remover
//!   has the converged ring (as weave's); it records the peer as removed so
//!   reservations for it are dropped everywhere.
//!
//! - A merge never takes space from the receiver (refused like weave's
//!   `ErrEntryInMyRange`) and never grows its ring past
//!   [`ring::MAX_RING_TOKENS`]; space requests from peers the mesh does not
//!   know are refused. Without signed gossip, a member with the password can
//!   still forge messages in the name of a peer that is not the receiver's
//!   neighbour (docs/protocol.md, "Originator checks").
//!
//! Layout:
//! - [`addr`]: `Ident`, `Cidr`, `AddrRange`, and the mesh crate's `PeerName` re-exported.
//! - [`ring`]: the ring CRDT and lineage.
//! - [`space`]: local free intervals.
//! - [`consensus`]: gossip Paxos for the initial ring.
//! - `types.rs`: [`Config`], [`Init`], [`Allocation`], [`Event`], [`Transmit`], [`Error`].
//! - `allocator.rs`: [`Ipam`] and its request API.
//! - `protocol.rs`: messages, donation, adoption, conflicts, timers.
//! - [`node`]: [`Ipam`] with its call protocol, the type the router pumps and
//!   the simulators drive: requests in, persist / transmit / event / reply out.
//! - [`wire`]: message encoding (version byte + postcard, bounded).
//! - [`persist`]: the durable state the router writes.
//! - [`status`]: weave-format status, report and metrics.

pub mod addr;
mod allocator;
pub mod consensus;
pub mod node;
pub mod persist;
mod protocol;
pub mod ring;
pub mod space;
pub mod status;
mod types;
pub mod wire;

pub use addr::{AddrRange, Cidr, Ident, ParseError, PeerName};
pub use allocator::Ipam;
pub use persist::{Owned, PERSIST_FORMAT, PersistError, Persisted};
pub use status::{Metrics, Status, rmpeer_message};
pub use types::{
    Allocation, Config, Conflict, DEFAULT_GRACE, DEFAULT_RANGE, Error, Event, Init,
    MAX_CLAIM_ATTEMPTS, RETRY_INTERVAL, RequestId, TAKEOVER_BUMP, Transmit,
};
