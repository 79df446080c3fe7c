//! meshnet-ipam: sans-IO IP address management for meshnet, weave's model
//! (reference §6) made safe where weave hurt its users.
//!
//! The universe (default `10.32.0.0/12`) is a [`ring::Ring`] of tokens owned
//! by peers, a CRDT merged by version and gossiped on the `ipam` channel.
//! It is initialised lazily by Paxos consensus, a seed list, or (observers)
//! by receiving it. Each peer allocates only from space it owns, asks
//! owners for donations, and re-claims exactly the addresses it holds when
//! ownership moved under it (separately initialised rings meeting, rmpeer).
//! Nothing here does I/O: time and seeds are parameters, outputs are polled.
//!
//! Layout:
//! - [`addr`]: `PeerName`, `Ident`, `Cidr`, `AddrRange`.
//! - [`ring`]: the ring CRDT and lineage.
//! - [`space`]: local free intervals.
//! - [`consensus`]: gossip Paxos for the initial ring.
//! - `types.rs`: [`Config`], [`Init`], [`Allocation`], [`Event`], [`Transmit`], [`Error`].
//! - `allocator.rs`: [`Ipam`] and its request API.
//! - `protocol.rs`: messages, donation, adoption, conflicts, timers.
//! - [`wire`]: message encoding (version byte + postcard, bounded).
//! - [`persist`]: the durable state the router writes.
//! - [`status`]: weave-format status, report and metrics.

pub mod addr;
mod allocator;
pub mod consensus;
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
