//! Host access to the overlay and the kernel side of `meshnet reset`:
//! `expose`/`hide`, forwarding for the bridge in a namespace
//! whose firewall drops forwarded traffic, and the
//! sweep of everything meshnet created (what weave's `destroy_bridge` does).
//!
//! Every function takes the namespace it acts on, so tests run them in
//! namespaces they own. Addresses live on the bridge (netlink); rules live
//! in nftables ([`crate::nft`]); nothing here talks to IPAM, which is the
//! CLI's business.
//!
//! Why not the bridge option `nf_call_iptables 0`: the kernel ORs it with
//! the namespace's `net.bridge.bridge-nf-call-iptables`, so with the sysctl
//! at 1 (as Docker leaves it) turning the per-bridge option off changes
//! nothing (measured on this kernel, see `router/tests/expose.rs`). And
//! turning the sysctl off would disable Docker's own bridge filtering.

use std::io;

use ipnet::Ipv4Net;

use crate::datapath::{DatapathError, LinkInfo, LinkKind, Netlink, Netns};
use crate::nft::{self, Desired, NftError};

/// Every netdev meshnet creates starts with this (the VXLAN device, the
/// sleeve TAP, host-side container veths), so `reset` can sweep them, as
/// weave does with `vethwe*`.
pub const LINK_PREFIX: &str = "vethwe";

/// Errors from expose, hide, forwarding setup and cleanup.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    /// Netlink or namespace failure (EPERM is reported as "needs root").
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// nftables failure.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The bridge is not there.
    #[error("there is no bridge {bridge} in {netns}: launch the router first (meshnet launch)")]
    NoBridge {
        /// The bridge name.
        bridge: String,
        /// Where we looked.
        netns: String,
    },
    /// `net.ipv4.ip_forward` could not be set.
    #[error("cannot enable IPv4 forwarding (net.ipv4.ip_forward) in {netns}: {source}")]
    Forwarding {
        /// Where.
        netns: String,
        /// Why.
        source: io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = ExposeError> = std::result::Result<T, E>;

async fn bridge_link(nl: &Netlink, netns: &Netns, bridge: &str) -> Result<LinkInfo> {
    match nl.link_by_name(bridge).await? {
        Some(l) if l.kind == LinkKind::Bridge => Ok(l),
        Some(l) => Err(DatapathError::WrongLinkKind {
            name: bridge.into(),
            found: l.kind.to_string(),
            wanted: "bridge",
        }
        .into()),
        None => Err(ExposeError::NoBridge {
            bridge: bridge.into(),
            netns: netns.label().into(),
        }),
    }
}

/// Makes frames bridged on `bridge` survive the namespace's firewall: in
/// every forward base chain of another table whose policy is drop
/// (Docker's `ip filter FORWARD`), inserts weave's accepts for the bridge
/// (and for exposed subnets); also (re)creates our own table. Idempotent
/// and cheap when nothing changed, so the router may call it again later
/// (Docker can start after us). Returns whether anything changed.
pub async fn ensure_bridge_forwarding(netns: &Netns, bridge: &str) -> Result<bool> {
    let current = nft::list(netns).await?;
    let desired = Desired {
        bridge: bridge.into(),
        exposed: current.exposed(),
    };
    apply_plan(netns, &current, &desired).await
}

async fn apply_plan(netns: &Netns, current: &nft::Ruleset, desired: &Desired) -> Result<bool> {
    match nft::plan(current, desired) {
        Some(batch) => {
            nft::apply(netns, &batch).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Turns on IPv4 forwarding in `netns` (needed to route between the
/// overlay and the host's other networks).
pub async fn enable_ip_forward(netns: &Netns) -> Result<()> {
    let r = netns
        .run("enabling IPv4 forwarding", || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })
        .await?;
    r.map_err(|source| match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS) => DatapathError::NotRoot {
            op: format!("enabling IPv4 forwarding in {netns}"),
        }
        .into(),
        _ => ExposeError::Forwarding {
            netns: netns.label().into(),
            source,
        },
    })
}

/// `expose`: puts `addr` on `bridge` (already there is fine), enables
/// forwarding and installs the rules for its subnet, masqueraded unless
/// `masquerade` is false (the latest call decides for a subnet). Returns
/// whether the address was newly added.
pub async fn expose(netns: &Netns, bridge: &str, addr: Ipv4Net, masquerade: bool) -> Result<bool> {
    let nl = Netlink::connect(netns).await?;
    let link = bridge_link(&nl, netns, bridge).await?;
    let added = nl.add_address(link.index, addr).await?;
    enable_ip_forward(netns).await?;
    let current = nft::list(netns).await?;
    let mut exposed = current.exposed();
    exposed.insert(addr.trunc(), masquerade);
    let desired = Desired {
        bridge: bridge.into(),
        exposed,
    };
    apply_plan(netns, &current, &desired).await?;
    Ok(added)
}

/// `hide`: removes `addr` from `bridge`, and its subnet's rules once no
/// other address of that subnet is left on the bridge. Returns whether the
/// address was there. A missing bridge means nothing is exposed.
pub async fn hide(netns: &Netns, bridge: &str, addr: Ipv4Net) -> Result<bool> {
    let nl = Netlink::connect(netns).await?;
    let (removed, remaining) = match nl.link_by_name(bridge).await? {
        Some(link) => {
            let removed = nl.del_address(link.index, addr).await?;
            (removed, nl.addresses(link.index).await?)
        }
        None => (false, Vec::new()),
    };
    let current = nft::list(netns).await?;
    let mut exposed = current.exposed();
    if !remaining.iter().any(|a| a.trunc() == addr.trunc()) {
        exposed.remove(&addr.trunc());
    }
    let desired = Desired {
        bridge: bridge.into(),
        exposed,
    };
    apply_plan(netns, &current, &desired).await?;
    Ok(removed)
}

/// The addresses on `bridge` (what `hide` without arguments removes);
/// empty when there is no bridge.
pub async fn exposed_addrs(netns: &Netns, bridge: &str) -> Result<Vec<Ipv4Net>> {
    let nl = Netlink::connect(netns).await?;
    match nl.link_by_name(bridge).await? {
        Some(link) => Ok(nl.addresses(link.index).await?),
        None => Ok(Vec::new()),
    }
}

/// What [`cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Interfaces deleted (the bridge first).
    pub links: Vec<String>,
    /// Whether any nftables state of ours was removed.
    pub firewall: bool,
}

/// The kernel half of `meshnet reset`, run after the router stopped:
/// deletes `bridge`, every link whose name starts with [`LINK_PREFIX`], our
/// nftables table and the rules we inserted into other tables. Idempotent:
/// a second call finds nothing and succeeds.
pub async fn cleanup(netns: &Netns, bridge: &str) -> Result<Cleanup> {
    let nl = Netlink::connect(netns).await?;
    let mut out = Cleanup::default();
    if let Some(link) = nl.link_by_name(bridge).await?
        && nl.delete_link(link.index).await?
    {
        out.links.push(link.name);
    }
    for link in nl.links_with_prefix(LINK_PREFIX).await? {
        // Deleting one end of a veth deletes the other too, so a later entry
        // may already be gone; delete_link treats that as done.
        if nl.delete_link(link.index).await? {
            out.links.push(link.name);
        }
    }
    out.firewall = nft::remove_all(netns).await?;
    Ok(out)
}
