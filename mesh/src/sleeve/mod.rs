//! The sans-IO half of the sleeve datapath: the userspace overlay that carries
//! Ethernet frames between hosts over UDP 6783, encrypted, relayed over multi-hop routes.
//!
//! Layout:
//! - [`endpoint`]: the [`Endpoint`], which composes the pieces below and makes every
//!   decision of the sleeve (keys and their rotation, the encryption check of a hello, the
//!   path MTU a neighbour starts from, timers, status); its module doc states the call
//!   protocol.
//! - [`datapath`]: the endpoint's per-packet half: the receive and send views ([`Rx`],
//!   [`Tx`]) and the [`Output`]s they emit (ttl, relays, control only between neighbours,
//!   ICMP or fragments for a frame too big for the path, the TSO cut), and the [`Neighbour`]
//!   send paths.
//! - [`wire`]: the UDP packet format and [`SleeveHello`] (documented byte by byte there).
//! - [`crypto`]: AES-256-GCM seal/open in place with the counter as nonce, replay window.
//! - [`forward`]: the [`Forwarding`] snapshot, MAC learning, per-frame decisions.
//! - [`health`]: heartbeats and path-MTU discovery per direct neighbour.
//! - [`rekey`]: when a receive key is rotated ([`REKEY_AFTER_TIME`], [`REKEY_AFTER_PACKETS`]).
//! - [`icmp`], [`frag`]: what happens to a frame larger than a neighbour's path MTU (ICMP
//!   frag-needed for DF packets, IPv4 fragmentation for the rest).
//!
//! The router (`meshnet_router::sleeve`) owns the TAP, the UDP sockets and the threads: it
//! feeds the endpoint datagrams, frames and timer ticks, does what the outputs say, batches
//! (UDP GSO/GRO, TSO split, TCP coalescing into the TAP) and counts.

pub mod crypto;
pub mod datapath;
pub mod endpoint;
pub mod forward;
pub mod frag;
pub mod health;
pub mod icmp;
pub mod rekey;
pub mod wire;

pub use crypto::{CryptoError, Opener, ReplayWindow, Sealer};
pub use datapath::{Discard, Neighbour, Output, Route, Rx, Tx};
pub use endpoint::{
    EncryptionMismatch, Endpoint, EndpointConfig, HelloOutcome, NeighbourStatus, NewKey,
};
pub use forward::{
    DropReason, Forwarding, INITIAL_TTL, LocalOut, MAX_MAC_ENTRIES, MAX_MACS_PER_PEER, MacTable,
    PeerPath, Relay, RemoteOut,
};
pub use health::{Health, LinkStatus};
pub use rekey::{REKEY_AFTER_PACKETS, REKEY_AFTER_TIME, Rekey};
pub use wire::{Control, Destination, Inner, KeyId, Kind, Outer, SleeveHello, WireError};
