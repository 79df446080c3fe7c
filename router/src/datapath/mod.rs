//! Kernel datapath building blocks: namespaces, netlink, container attach.
//!
//! Layout:
//! - [`netns`]: [`Netns`], an fd on a network namespace, and `Netns::run` to
//!   execute code inside one from a dedicated thread.
//! - [`netlink`]: [`Netlink`], a thin wrapper over an rtnetlink handle bound
//!   to one namespace; it and its two submodules (link dumps, bridge-port
//!   settings) are the only files that name rtnetlink types, so the frequent
//!   breaking bumps of that crate touch one module.
//! - [`attach`]: `attach`, `detach` and `container_addrs`, as weave has them.
//! - [`plan`]: desired-state diffs as pure functions (addresses, FDB, names).
//! - `arp` and `sys`: the gratuitous ARP frame, and the few non-netlink
//!   kernel calls (AF_PACKET send, SIOCETHTOOL, per-netns sysctls).
//!
//! Everything that touches the kernel is async and takes the namespace it
//! acts on explicitly; nothing here reads the environment or decides policy.

mod arp;
pub mod attach;
mod error;
pub mod netlink;
pub mod netns;
pub mod plan;
mod sys;

use std::fmt;
use std::str::FromStr;

pub use attach::{
    AttachSpec, Attached, CONTAINER_IFNAME, ContainerAddrs, Detached, HOST_VETH_PREFIX,
    PEER_VETH_PREFIX, attach, attach_with, container_addrs, container_addrs_named, detach,
    multicast_net, net_sysctl, tx_checksum,
};
pub use error::{DatapathError, Result};
pub use netlink::{IfIndex, LinkInfo, LinkKind, Netlink, VxlanConfig, VxlanSpec};
pub use netns::Netns;
pub use plan::{
    AddressPlan, DetachPlan, FdbDesired, FdbEntry, FdbOp, plan_addresses, plan_detach, plan_fdb,
};

/// Default overlay MTU: 1500 minus VXLAN and a margin for
/// encrypted sleeve, the same value weave uses for fastdp.
pub const DEFAULT_MTU: u32 = 1376;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The all-zeros address: in a VXLAN FDB, the default (flood) entry.
    pub const ZERO: Mac = Mac([0; 6]);

    /// Parses from a byte slice as netlink delivers it; `None` unless 6 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex pairs like 02:42:0a:20:00:01")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacParseError(s.into()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.into()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.into()));
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let m: Mac = "02:42:0a:20:00:01".parse().unwrap();
        assert_eq!(m.0, [0x02, 0x42, 0x0a, 0x20, 0x00, 0x01]);
        assert_eq!(m.to_string(), "02:42:0a:20:00:01");
        assert!("02:42:0a:20:00".parse::<Mac>().is_err());
        assert!("02:42:0a:20:00:01:02".parse::<Mac>().is_err());
        assert!("02:42:0a:20:00:zz".parse::<Mac>().is_err());
        assert!("2:42:0a:20:00:01".parse::<Mac>().is_err());
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
        assert_eq!(Mac::from_slice(&[0; 6]), Some(Mac::ZERO));
    }
}
