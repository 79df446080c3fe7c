//! meshnet-mesh: the sans-IO control plane of meshnet.
//!
//! No sockets, no clock, no OS randomness: the router feeds inputs with `handle_*(.., now)`
//! and drains outputs with `poll_*`. Layout:
//! - [`ids`]: peer names, uids, short ids, connection handles.
//! - [`keys`]: static public keys, fingerprints, derived names, the authorized-keys format.
//! - [`admission`]: who may connect (identity checks, typed refusals, believing a refusal).
//! - [`wire`]: one file per wire format (header, hello, message, topology payloads, the
//!   control connection's framing).
//! - [`handshake`]: the control connection's handshake state machine (header, password flag,
//!   Noise XX, verdicts) and its encrypted transport (bytes in, bytes out).
//! - [`mesh`]: the [`Mesh`] state machine and its inputs/outputs; its behaviour is split
//!   over `gossip.rs` (message dispatch, channels), `maker.rs` (connection targets),
//!   `topology.rs` (records, deltas, merge, GC), `routes.rs` (BFS routes, broadcast trees,
//!   neighbour choice) and `targets.rs` (target parsing and backoff).
//! - [`dns`]: the service-discovery name table (a CRDT) of the `dns` gossip channel.
//! - [`overlay`]: which datapath (fastdp or sleeve) serves each peer, fastdp hellos and
//!   heartbeats.
//! - [`sleeve`]: the sleeve datapath's sans-IO [`sleeve::Endpoint`] (keys, forwarding, MAC
//!   table, ttl, health, PMTU, ICMP) and its wire format and crypto.
//! - [`status`]: the status snapshot (weave's JSON field names).
//! - `sim` (feature `sim`, and in tests): a deterministic N-peer simulator.

pub mod admission;
#[cfg(test)]
mod bounds_tests;
pub mod dns;
mod gossip;
pub mod handshake;
pub mod ids;
pub mod keys;
mod maker;
pub mod mesh;
#[cfg(test)]
mod mesh_tests;
pub mod overlay;
mod routes;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod sim_tests;
pub mod sleeve;
pub mod status;
mod targets;
mod topology;
pub mod wire;

pub use admission::check_identity;
pub use ids::{ConnId, PeerName, PeerNameError, PeerUid, ShortId};
pub use keys::{AuthorizedKeys, AuthorizedKeysError, PublicKey};
pub use mesh::{
    Action, Channels, CloseReason, Config, ConnError, ConnInfo, Event, Mesh, NoChannels, NoRoute,
    Transmit,
};
pub use status::{
    BroadcastRouteStatus, ConnState, LocalConnStatus, PeerConnStatus, PeerStatus, RouteStatus,
    Status, display_nickname,
};
pub use targets::check_peer;
pub use wire::{
    DecodeError, GossipMsg, GossipUnicastMsg, HEADER_LEN, Header, HeaderError, Hello,
    MAX_MESSAGE_LEN, Message, PROTOCOL_MAX, PROTOCOL_MIN, Refusal, RefusalCode, Verdict,
    VerdictFrame,
};
