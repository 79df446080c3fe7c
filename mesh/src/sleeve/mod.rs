//! The sans-IO half of the sleeve datapath: the userspace overlay that carries
//! Ethernet frames between hosts over UDP 6783, encrypted, relayed over multi-hop routes.
//!
//! Layout:
//! - [`wire`]: the UDP packet format and [`SleeveHello`] (documented byte by byte there).
//! - [`crypto`]: AES-256-GCM seal/open in place with the counter as nonce, replay window.
//! - [`forward`]: the [`Forwarding`] snapshot, MAC learning, per-frame decisions.
//! - [`health`]: heartbeats and path-MTU discovery per direct neighbour.
//! - [`rekey`]: when a receive key is rotated ([`REKEY_AFTER_TIME`], [`REKEY_AFTER_PACKETS`]).
//! - [`icmp`], [`frag`]: what happens to a frame larger than a neighbour's path MTU (ICMP
//!   frag-needed for DF packets, IPv4 fragmentation for the rest).
//!
//! The router (`meshnet_router::sleeve`) owns the TAP, the UDP sockets and the threads, and
//! calls into these pieces per packet.

pub mod crypto;
pub mod forward;
pub mod frag;
pub mod health;
pub mod icmp;
pub mod rekey;
pub mod wire;

pub use crypto::{CryptoError, Opener, ReplayWindow, Sealer};
pub use forward::{
    DropReason, Forwarding, INITIAL_TTL, LocalOut, MAX_MAC_ENTRIES, MAX_MACS_PER_PEER, MacTable,
    PeerPath, Relay, RemoteOut,
};
pub use health::{Health, LinkStatus};
pub use rekey::{REKEY_AFTER_PACKETS, REKEY_AFTER_TIME, Rekey};
pub use wire::{Control, Destination, Inner, KeyId, Kind, Outer, SleeveHello, WireError};
