//! Host-side cleanup for `meshnet reset` (what weave's `destroy_bridge` does) and
//! the root check `launch` makes before touching the kernel.

use anyhow::{Context, Result, bail};
use meshnet_router::datapath::Netns;
use meshnet_router::dataplane::BRIDGE_NAME;
use meshnet_router::expose;

/// Removes the bridge, every `vethwe*` link and meshnet's nftables state
/// from this network namespace. Run after the router stopped; safe to run
/// when nothing is there.
pub fn sweep() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let swept = rt
        .block_on(async { expose::cleanup(&Netns::current()?, BRIDGE_NAME).await })
        .context("removing meshnet's interfaces and firewall rules")?;
    if !swept.links.is_empty() {
        tracing::info!(links = ?swept.links, "removed interfaces");
    }
    if swept.firewall {
        tracing::info!("removed meshnet's nftables rules");
    }
    Ok(())
}

/// Refuses to go on without root: creating the bridge, VXLAN device and
/// firewall rules needs CAP_NET_ADMIN, and the netlink EPERM that follows
/// otherwise is less clear than saying so up front.
pub fn require_root(command: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "`meshnet {command}` must run as root (it creates network interfaces and firewall rules): run it with sudo"
        );
    }
    Ok(())
}
