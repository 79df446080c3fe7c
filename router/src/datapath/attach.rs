//! Attaching containers to the bridge: the `ethwe` veth, its
//! addresses, the multicast route, gratuitous ARP; detaching; reading back.
//!
//! "Ours" means: the container has a veth named `ethwe` whose peer sits in
//! the host namespace, is enslaved to our bridge, and points back at it.
//! Anything else called `ethwe` is refused rather than reused.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::Mac;
use super::error::{DatapathError, Result};
use super::netlink::{IfIndex, LinkInfo, LinkKind, Netlink};
use super::netns::Netns;
use super::plan::{plan_addresses, plan_detach, veth_names};
use super::sys;

/// The container-side interface name; weave users and tools grep for it.
pub const CONTAINER_IFNAME: &str = "ethwe";
/// Host-side veth prefix (host veths start with `vethwe`, so
/// `reset` can sweep them; `pl` = "peer local", as weave names them).
pub const HOST_VETH_PREFIX: &str = "vethwepl";
/// Temporary name of the container end before it moves and becomes `ethwe`.
pub const PEER_VETH_PREFIX: &str = "vethwepg";

/// The IPv4 multicast range routed out of `ethwe` so that multicast
/// reaches the overlay rather than the container's default route.
pub fn multicast_net() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4).unwrap_or_default()
}

/// ARP tuning applied to `ethwe`: containers come and go and
/// addresses get reused, so stale neighbour entries must expire quickly.
const ARP_SYSCTLS: [(&str, &str); 3] = [
    ("base_reachable_time", "5"),
    ("delay_first_probe_time", "2"),
    ("ucast_solicit", "1"),
];

/// The result of [`attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// MAC of `ethwe`.
    pub mac: Mac,
    /// Every address `ethwe` now has.
    pub addrs: Vec<Ipv4Net>,
    /// The addresses this call added (empty when all were already there).
    pub added: Vec<Ipv4Net>,
    /// Host-side veth name.
    pub host_veth: String,
    /// True when this call created the interface.
    pub created: bool,
}

/// The result of [`detach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// Addresses removed.
    pub removed: Vec<Ipv4Net>,
    /// Addresses left on `ethwe`.
    pub remaining: Vec<Ipv4Net>,
    /// True when no address was left and the interface was deleted.
    pub deleted: bool,
}

/// What `meshnet ps` shows for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerAddrs {
    /// MAC of `ethwe`.
    pub mac: Mac,
    /// Its IPv4 addresses.
    pub addrs: Vec<Ipv4Net>,
}

/// How [`attach_with`] builds a container's interface.
#[derive(Debug, Clone, Copy)]
pub struct AttachSpec<'a> {
    /// The host bridge the host end joins.
    pub bridge: &'a str,
    /// The container-side name ([`CONTAINER_IFNAME`], or `CNI_IFNAME`).
    pub ifname: &'a str,
    /// MTU of both ends.
    pub mtu: u32,
    /// Whether to add `224.0.0.0/4 dev IFNAME` last.
    pub multicast_route: bool,
    /// Hairpin mode on the bridge port (a pod reaching itself through NAT).
    pub hairpin: bool,
}

/// Our interface pair, found by [`find_ours`].
struct Ours {
    ethwe: LinkInfo,
    host: LinkInfo,
}

/// Finds `ifname` in the container if its peer is on `bridge`.
/// Errors if an `ifname` exists that is not ours.
async fn find_ours(
    host: &Netlink,
    ct: &Netlink,
    bridge: &LinkInfo,
    container: &Netns,
    ifname: &str,
) -> Result<Option<Ours>> {
    // Interface indexes are per namespace: two hosts built alike have the
    // same numbers, so the peer index alone could point at another host's
    // veth. Our host-side name encodes the container's netns inode.
    let (expected, _) = veth_names(HOST_VETH_PREFIX, PEER_VETH_PREFIX, container.inode());
    let Some(ethwe) = ct.link_by_name(ifname).await? else {
        return Ok(None);
    };
    let foreign = || DatapathError::ForeignInterface {
        name: ifname.into(),
        bridge: bridge.name.clone(),
    };
    let peer = match (ethwe.kind == LinkKind::Veth, ethwe.peer_index) {
        (true, Some(peer)) => peer,
        _ => return Err(foreign()),
    };
    match host.link_by_index(peer).await? {
        Some(h)
            if h.kind == LinkKind::Veth
                && h.master == Some(bridge.index)
                && h.peer_index == Some(ethwe.index)
                && h.name == expected =>
        {
            Ok(Some(Ours { ethwe, host: h }))
        }
        _ => Err(foreign()),
    }
}

async fn bridge_of(host: &Netlink, bridge: &str) -> Result<Option<LinkInfo>> {
    match host.link_by_name(bridge).await? {
        None => Ok(None),
        Some(l) if l.kind == LinkKind::Bridge => Ok(Some(l)),
        Some(l) => Err(DatapathError::WrongLinkKind {
            name: bridge.into(),
            found: l.kind.to_string(),
            wanted: "bridge",
        }),
    }
}

fn check_addrs(addrs: &[Ipv4Net]) -> Result<()> {
    for a in addrs {
        let ip = a.addr();
        let why = if ip.is_unspecified() {
            Some("it is the unspecified address")
        } else if ip.is_loopback() {
            Some("it is a loopback address")
        } else if ip.is_multicast() {
            Some("it is a multicast address")
        } else if ip.is_broadcast() {
            Some("it is the broadcast address")
        } else if a.prefix_len() < 31 && (ip == a.network() || ip == a.broadcast()) {
            Some("it is the network or broadcast address of its subnet")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(DatapathError::BadAddress {
                addr: a.to_string(),
                why,
            });
        }
    }
    Ok(())
}

/// Attaches the container in `container` to `bridge` in `host`.
///
/// If the container already has our `ethwe`, only missing addresses are
/// added (an address it already has is a no-op). Otherwise a veth pair is
/// created, the host end enslaved to the bridge, the other end moved in and
/// renamed `ethwe`, MTU and addresses set, TX checksum offload turned off
/// (the sleeve reads frames in userspace), both ends brought up,
/// gratuitous ARP sent, and `224.0.0.0/4 dev ethwe` added last unless
/// `multicast_route` is false. On any failure, what this call created is
/// removed again.
pub async fn attach(
    host: &Netns,
    container: &Netns,
    bridge: &str,
    addrs: &[Ipv4Net],
    mtu: u32,
    multicast_route: bool,
) -> Result<Attached> {
    let spec = AttachSpec {
        bridge,
        ifname: CONTAINER_IFNAME,
        mtu,
        multicast_route,
        hairpin: false,
    };
    attach_with(host, container, &spec, addrs).await
}

/// [`attach`] with the container-side name and bridge-port settings given
/// (the CNI plugin: `CNI_IFNAME`, hairpin mode, no multicast route).
pub async fn attach_with(
    host: &Netns,
    container: &Netns,
    spec: &AttachSpec<'_>,
    addrs: &[Ipv4Net],
) -> Result<Attached> {
    let AttachSpec {
        bridge,
        ifname,
        mtu,
        multicast_route,
        ..
    } = *spec;
    if !super::plan::valid_ifname(ifname) {
        return Err(DatapathError::BadLinkName {
            name: ifname.into(),
        });
    }
    if host.same_as(container) {
        return Err(DatapathError::HostNetns);
    }
    if mtu < 68 {
        return Err(DatapathError::BadMtu { mtu });
    }
    check_addrs(addrs)?;
    let hnl = Netlink::connect(host).await?;
    let cnl = Netlink::connect(container).await?;
    let br = bridge_of(&hnl, bridge)
        .await?
        .ok_or_else(|| DatapathError::NoBridge {
            bridge: bridge.into(),
            netns: host.label().into(),
        })?;

    if let Some(ours) = find_ours(&hnl, &cnl, &br, container, ifname).await? {
        let existing = cnl.addresses(ours.ethwe.index).await?;
        let plan = plan_addresses(&existing, addrs);
        let added = add_addresses(&cnl, ours.ethwe.index, &plan.add).await?;
        let mac = ours.ethwe.mac.unwrap_or_default();
        announce(container, ours.ethwe.index, mac, &added).await;
        if multicast_route {
            cnl.add_route(multicast_net(), ours.ethwe.index).await?;
        }
        return Ok(Attached {
            mac,
            addrs: cnl.addresses(ours.ethwe.index).await?,
            added,
            host_veth: ours.host.name,
            created: false,
        });
    }

    let (host_name, peer_name) = veth_names(HOST_VETH_PREFIX, PEER_VETH_PREFIX, container.inode());
    // Leftovers of a crashed attach for this same namespace would make the
    // create fail with EEXIST; they are ours by name, so remove them.
    for stale in [&host_name, &peer_name] {
        if let Some(l) = hnl.link_by_name(stale).await? {
            hnl.delete_link(l.index).await?;
        }
    }
    let (hveth, pveth) = hnl.create_veth(&host_name, &peer_name).await?;
    match setup_new(&hnl, &cnl, container, &br, &hveth, &pveth, addrs, spec).await {
        Ok((mac, added)) => Ok(Attached {
            mac,
            addrs: cnl.addresses(cnl.link(ifname).await?.index).await?,
            added,
            host_veth: host_name,
            created: true,
        }),
        Err(e) => {
            // Deleting the host end deletes the peer wherever it now is.
            if let Err(cleanup) = hnl.delete_link(hveth.index).await {
                tracing::warn!(veth = %host_name, error = %cleanup, "could not remove veth after failed attach");
            }
            Err(e)
        }
    }
}

/// The steps after the veth pair exists; any error is rolled back by the caller.
#[allow(clippy::too_many_arguments)]
async fn setup_new(
    hnl: &Netlink,
    cnl: &Netlink,
    container: &Netns,
    br: &LinkInfo,
    hveth: &LinkInfo,
    pveth: &LinkInfo,
    addrs: &[Ipv4Net],
    spec: &AttachSpec<'_>,
) -> Result<(Mac, Vec<Ipv4Net>)> {
    let ifname = spec.ifname;
    hnl.set_mtu(hveth.index, spec.mtu).await?;
    hnl.set_mtu(pveth.index, spec.mtu).await?;
    hnl.set_master(hveth.index, br.index).await?;
    if spec.hairpin {
        hnl.set_hairpin(hveth.index, true).await?;
    }
    hnl.set_netns(pveth.index, container).await?;
    let moved = cnl.link(&pveth.name).await?;
    cnl.rename(moved.index, ifname).await?;
    let name = ifname.to_owned();
    container
        .run(
            "configuring the container interface",
            move || -> std::io::Result<()> {
                // TX checksum offload stays on (weave turned it off for its
                // pcap sleeve): our sleeve reads the TAP with a virtio-net header
                // and completes partial checksums itself, and with offload on the
                // container hands over 64 KiB TSO frames instead of MTU-sized ones.
                for (key, value) in ARP_SYSCTLS {
                    sys::write_net_sysctl(&format!("ipv4/neigh/{name}/{key}"), value)?;
                }
                Ok(())
            },
        )
        .await?
        .map_err(|e| DatapathError::io(format!("configuring {ifname} in {container}"), e))?;
    let ethwe = cnl.link(ifname).await?;
    let mac = ethwe.mac.unwrap_or_default();
    let plan = plan_addresses(&[], addrs);
    let added = add_addresses(cnl, ethwe.index, &plan.add).await?;
    hnl.set_up(hveth.index).await?;
    cnl.set_up(ethwe.index).await?;
    wait_running(hnl, hveth.index, cnl, ethwe.index).await?;
    announce(container, ethwe.index, mac, &added).await;
    if spec.multicast_route {
        // Last, as in weave: tools that wait for the interface key on it.
        cnl.add_route(multicast_net(), ethwe.index).await?;
    }
    Ok((mac, added))
}

/// How long to wait for a new veth pair to become operational before
/// sending gratuitous ARP anyway.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until both ends of a new veth pair are operationally up.
///
/// The kernel activates a device's queue and enables its bridge port from
/// the link-watch work queue, shortly *after* `set_up` returns; a frame sent
/// before that is silently dropped, and so would our gratuitous ARP be.
async fn wait_running(hnl: &Netlink, host: IfIndex, cnl: &Netlink, ethwe: IfIndex) -> Result<()> {
    let start = tokio::time::Instant::now();
    loop {
        let h = hnl.link_by_index(host).await?.is_some_and(|l| l.running);
        let c = cnl.link_by_index(ethwe).await?.is_some_and(|l| l.running);
        if h && c {
            return Ok(());
        }
        if start.elapsed() > RUNNING_TIMEOUT {
            tracing::warn!(
                host_running = h,
                ethwe_running = c,
                "veth not operational yet; sending ARP anyway"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Adds `addrs`; if one fails, removes the ones this call added first.
async fn add_addresses(cnl: &Netlink, link: IfIndex, addrs: &[Ipv4Net]) -> Result<Vec<Ipv4Net>> {
    let mut added = Vec::new();
    for &a in addrs {
        match cnl.add_address(link, a).await {
            Ok(true) => added.push(a),
            Ok(false) => {}
            Err(e) => {
                for &undo in &added {
                    if let Err(cleanup) = cnl.del_address(link, undo).await {
                        tracing::warn!(addr = %undo, error = %cleanup, "could not undo address after failed attach");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(added)
}

/// Gratuitous ARP for each new address. Best effort, as in weave: a peer
/// with a stale entry recovers anyway once it expires, so a failure is
/// logged and does not fail the attach.
async fn announce(container: &Netns, link: IfIndex, mac: Mac, addrs: &[Ipv4Net]) {
    if addrs.is_empty() {
        return;
    }
    let ips: Vec<Ipv4Addr> = addrs.iter().map(|a| a.addr()).collect();
    let r = container
        .run("sending gratuitous ARP", move || {
            sys::send_gratuitous_arps(link.0, mac, &ips)
        })
        .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(netns = %container, error = %e, "gratuitous ARP failed"),
        Err(e) => tracing::warn!(netns = %container, error = %e, "gratuitous ARP failed"),
    }
}

/// Removes `addrs` from the container's `ethwe` (all of them when `addrs`
/// is empty) and deletes the interface when none are left. Removing an
/// address it does not have is a no-op.
pub async fn detach(
    host: &Netns,
    container: &Netns,
    bridge: &str,
    addrs: &[Ipv4Net],
) -> Result<Detached> {
    let hnl = Netlink::connect(host).await?;
    let cnl = Netlink::connect(container).await?;
    let not_attached = || DatapathError::NotAttached {
        bridge: bridge.into(),
    };
    let br = bridge_of(&hnl, bridge).await?.ok_or_else(not_attached)?;
    let ours = find_ours(&hnl, &cnl, &br, container, CONTAINER_IFNAME)
        .await?
        .ok_or_else(not_attached)?;
    let existing = cnl.addresses(ours.ethwe.index).await?;
    let plan = if addrs.is_empty() {
        plan_detach(&existing, &existing)
    } else {
        plan_detach(&existing, addrs)
    };
    for &a in &plan.remove {
        cnl.del_address(ours.ethwe.index, a).await?;
    }
    let deleted = plan.remaining.is_empty();
    if deleted {
        cnl.delete_link(ours.ethwe.index).await?;
    }
    Ok(Detached {
        removed: plan.remove,
        remaining: plan.remaining,
        deleted,
    })
}

/// MAC and addresses of the container's `ethwe` if it is attached to
/// `bridge` (`meshnet ps`); `None` when it is not attached.
pub async fn container_addrs(
    host: &Netns,
    container: &Netns,
    bridge: &str,
) -> Result<Option<ContainerAddrs>> {
    container_addrs_named(host, container, bridge, CONTAINER_IFNAME).await
}

/// [`container_addrs`] for an interface called `ifname` (a CNI attachment).
pub async fn container_addrs_named(
    host: &Netns,
    container: &Netns,
    bridge: &str,
    ifname: &str,
) -> Result<Option<ContainerAddrs>> {
    let hnl = Netlink::connect(host).await?;
    let cnl = Netlink::connect(container).await?;
    let Some(br) = bridge_of(&hnl, bridge).await? else {
        return Ok(None);
    };
    let ours = match find_ours(&hnl, &cnl, &br, container, ifname).await {
        Ok(Some(o)) => o,
        Ok(None) | Err(DatapathError::ForeignInterface { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let addrs = cnl.addresses(ours.ethwe.index).await?;
    Ok(Some(ContainerAddrs {
        mac: ours.ethwe.mac.unwrap_or_default(),
        addrs,
    }))
}

/// Whether TX checksum offload is on for `ifname` in `netns`.
pub async fn tx_checksum(netns: &Netns, ifname: &str) -> Result<bool> {
    let name = ifname.to_owned();
    netns
        .run("reading checksum offload", move || sys::tx_checksum(&name))
        .await?
        .map_err(|e| {
            DatapathError::io(
                format!("reading TX checksum offload of {ifname} in {netns}"),
                e,
            )
        })
}

/// Reads a `/proc/sys/net/` value inside `netns` (e.g.
/// `ipv4/neigh/ethwe/ucast_solicit`).
pub async fn net_sysctl(netns: &Netns, rel: &str) -> Result<String> {
    let path = rel.to_owned();
    netns
        .run("reading a sysctl", move || sys::read_net_sysctl(&path))
        .await?
        .map_err(|e| DatapathError::io(format!("reading net/{rel} in {netns}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicast_net_is_224_slash_4() {
        assert_eq!(multicast_net().to_string(), "224.0.0.0/4");
    }

    #[test]
    fn address_sanity() {
        let ok: Vec<Ipv4Net> = vec![
            "10.32.0.1/12".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ];
        assert!(check_addrs(&ok).is_ok());
        for bad in [
            "0.0.0.0/8",
            "127.0.0.1/8",
            "239.1.1.1/8",
            "10.32.0.0/12",
            "10.47.255.255/12",
        ] {
            let net: Ipv4Net = bad.parse().unwrap();
            let err = check_addrs(&[net]).unwrap_err();
            assert!(
                matches!(err, DatapathError::BadAddress { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn host_veth_names_sweepable_by_reset() {
        // `reset` deletes every link starting with `vethwe`.
        assert!(HOST_VETH_PREFIX.starts_with("vethwe"));
        assert!(PEER_VETH_PREFIX.starts_with("vethwe"));
    }
}
