//! [`Netlink`]: rtnetlink bound to one network namespace, in our own types.
//!
//! This file and its submodules (`parse`: link dumps into [`LinkInfo`];
//! `bridge_port`: port isolation, hairpin, port FDB, MAC) are the only ones
//! that name rtnetlink / netlink-packet-route types: those crates break their
//! API every few months, so a bump should touch these files and nothing else.
//! Operations are idempotent where callers need them to be (`ensure_*`:
//! "already there" is not an error).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteScope};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

mod bridge_port;
mod parse;

use parse::link_info;

use super::Mac;
use super::error::{DatapathError, Result};
use super::netns::Netns;
use super::plan::FdbEntry;
use super::plan::valid_ifname;

/// A kernel interface index (only meaningful within one namespace).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct IfIndex(pub u32);

/// The interface types meshnet cares about.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LinkKind {
    /// Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// VXLAN tunnel device.
    Vxlan,
    /// TUN/TAP.
    Tun,
    /// Anything else, by its kernel kind string (`""` for loopback etc.).
    Other(String),
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bridge => f.write_str("bridge"),
            Self::Veth => f.write_str("veth"),
            Self::Vxlan => f.write_str("vxlan"),
            Self::Tun => f.write_str("tun"),
            Self::Other(s) if s.is_empty() => f.write_str("device without a kind"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// VXLAN parameters as the kernel reports them.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct VxlanConfig {
    /// VNI.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Source address for outer packets.
    pub local: Option<Ipv4Addr>,
    /// Underlay device.
    pub underlay: Option<IfIndex>,
    /// Whether the device learns remote MACs from traffic.
    pub learning: bool,
}

/// What we read about one interface.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LinkInfo {
    /// Interface index.
    pub index: IfIndex,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it has an Ethernet one.
    pub mac: Option<Mac>,
    /// MTU.
    pub mtu: u32,
    /// Bridge (or other master) it is enslaved to.
    pub master: Option<IfIndex>,
    /// For a veth: the peer's index, in the peer's namespace.
    pub peer_index: Option<IfIndex>,
    /// Interface type.
    pub kind: LinkKind,
    /// Administratively up.
    pub up: bool,
    /// Operationally up (RFC 2863 `UP`): the kernel has processed the
    /// carrier change, so the device and its bridge port pass traffic.
    pub running: bool,
    /// VXLAN settings, for VXLAN devices.
    pub vxlan: Option<VxlanConfig>,
}

/// Desired VXLAN device (fast datapath).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VxlanSpec {
    /// Device name, e.g. `vxlan-6784`.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// UDP port (6784 for meshnet).
    pub port: u16,
    /// Outer source address; `None` lets the kernel pick by route.
    pub local: Option<Ipv4Addr>,
    /// Underlay device to bind to.
    pub underlay: Option<IfIndex>,
    /// MAC learning; meshnet programs the FDB itself, so normally false.
    pub learning: bool,
    /// Bridge to enslave it to.
    pub master: Option<IfIndex>,
    /// MTU; `None` keeps the kernel default (underlay MTU − 50).
    pub mtu: Option<u32>,
}

impl VxlanSpec {
    fn matches(&self, have: &VxlanConfig) -> bool {
        have.vni == self.vni
            && have.port == self.port
            && have.learning == self.learning
            && (self.local.is_none() || have.local == self.local)
            && (self.underlay.is_none() || have.underlay == self.underlay)
    }
}

/// A netlink route socket bound to one network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
    netns: String,
}

/// Converts an rtnetlink error, keeping the errno so callers can match on it.
fn nl_err(op: impl Into<String>, e: rtnetlink::Error) -> DatapathError {
    match e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(code) => DatapathError::netlink(op, -code.get()),
            None => DatapathError::Netlink {
                op: op.into(),
                source: io::Error::other("unexpected ACK"),
            },
        },
        other => DatapathError::Netlink {
            op: op.into(),
            source: io::Error::other(other.to_string()),
        },
    }
}

/// Maps an errno that means "the state is already as wanted" to `Ok(false)`.
fn tolerate<T>(r: Result<T>, errno: i32) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(errno) => Ok(false),
        Err(e) => Err(e),
    }
}

fn check_name(name: &str) -> Result<()> {
    if valid_ifname(name) {
        Ok(())
    } else {
        Err(DatapathError::BadLinkName { name: name.into() })
    }
}

impl Netlink {
    /// Opens a netlink socket inside `netns`: the socket is
    /// created on a thread that entered the namespace, with the current
    /// tokio runtime entered so it registers with the reactor, and the
    /// connection task is spawned on that runtime. The returned handle can
    /// be used from any task; the task ends when the last clone is dropped.
    pub async fn connect(netns: &Netns) -> Result<Self> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle) = netns
            .run("opening a netlink socket", move || {
                let _guard = rt.enter();
                rtnetlink::new_connection().map(|(conn, handle, _)| (conn, handle))
            })
            .await?
            .map_err(|e| DatapathError::io(format!("opening a netlink socket in {netns}"), e))?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            netns: netns.label().to_owned(),
        })
    }

    /// Every interface in the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing interfaces in {}", self.netns), e))?;
        Ok(msgs.into_iter().map(link_info).collect())
    }

    /// Interfaces whose name starts with `prefix` (for `meshnet reset`).
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<LinkInfo>> {
        let mut links = self.links().await?;
        links.retain(|l| l.name.starts_with(prefix));
        Ok(links)
    }

    /// The interface called `name`, if any.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        check_name(name)?;
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.next().await {
            None => Ok(None),
            Some(Ok(msg)) => Ok(Some(link_info(msg))),
            Some(Err(e)) => {
                let e = nl_err(format!("looking up {name} in {}", self.netns), e);
                if e.errno() == Some(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The interface called `name`; a missing one is an error.
    pub async fn link(&self, name: &str) -> Result<LinkInfo> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| DatapathError::NoSuchLink {
                name: name.into(),
                netns: self.netns.clone(),
            })
    }

    /// The interface with index `index`, if any.
    pub async fn link_by_index(&self, index: IfIndex) -> Result<Option<LinkInfo>> {
        let mut stream = self.handle.link().get().match_index(index.0).execute();
        match stream.next().await {
            None => Ok(None),
            Some(Ok(msg)) => Ok(Some(link_info(msg))),
            Some(Err(e)) => {
                let e = nl_err(
                    format!("looking up interface #{} in {}", index.0, self.netns),
                    e,
                );
                if e.errno() == Some(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates the bridge `name` with `mtu`, or adopts an existing one
    /// (fixing its MTU); either way it ends up up.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<LinkInfo> {
        check_name(name)?;
        if let Some(link) = self.link_by_name(name).await? {
            if link.kind != LinkKind::Bridge {
                return Err(DatapathError::WrongLinkKind {
                    name: name.into(),
                    found: link.kind.to_string(),
                    wanted: "bridge",
                });
            }
            if link.mtu != mtu {
                self.set_mtu(link.index, mtu).await?;
            }
            if !link.up {
                self.set_up(link.index).await?;
            }
        } else {
            let msg = LinkBridge::new(name).mtu(mtu).up().build();
            self.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| nl_err(format!("creating bridge {name} in {}", self.netns), e))?;
        }
        self.link(name).await
    }

    /// Creates a veth pair `a` ↔ `b`, both down, and returns (a, b).
    pub async fn create_veth(&self, a: &str, b: &str) -> Result<(LinkInfo, LinkInfo)> {
        check_name(a)?;
        check_name(b)?;
        self.handle
            .link()
            .add(LinkVeth::new(a, b).build())
            .execute()
            .await
            .map_err(|e| nl_err(format!("creating veth pair {a}/{b} in {}", self.netns), e))?;
        Ok((self.link(a).await?, self.link(b).await?))
    }

    async fn set(&self, op: String, msg: LinkMessage) -> Result<()> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| nl_err(op, e))
    }

    /// Moves `link` into `netns`; its index there may differ.
    pub async fn set_netns(&self, link: IfIndex, netns: &Netns) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.0)
            .setns_by_fd(netns.raw_fd())
            .build();
        self.set(
            format!(
                "moving interface #{} from {} to {netns}",
                link.0, self.netns
            ),
            msg,
        )
        .await
    }

    /// Renames `link` (it must be down).
    pub async fn rename(&self, link: IfIndex, name: &str) -> Result<()> {
        check_name(name)?;
        let msg = LinkUnspec::new_with_index(link.0).name(name).build();
        self.set(
            format!("renaming interface #{} to {name} in {}", link.0, self.netns),
            msg,
        )
        .await
    }

    /// Sets the MTU of `link`.
    pub async fn set_mtu(&self, link: IfIndex, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.0).mtu(mtu).build();
        self.set(
            format!(
                "setting MTU {mtu} on interface #{} in {}",
                link.0, self.netns
            ),
            msg,
        )
        .await
    }

    /// Brings `link` up.
    pub async fn set_up(&self, link: IfIndex) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.0).up().build();
        self.set(
            format!("bringing up interface #{} in {}", link.0, self.netns),
            msg,
        )
        .await
    }

    /// Enslaves `link` to bridge `master`.
    pub async fn set_master(&self, link: IfIndex, master: IfIndex) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.0)
            .controller(master.0)
            .build();
        self.set(
            format!(
                "adding interface #{} to bridge #{} in {}",
                link.0, master.0, self.netns
            ),
            msg,
        )
        .await
    }

    /// Deletes `link` (and a veth's peer with it). Returns false if it was
    /// already gone.
    pub async fn delete_link(&self, link: IfIndex) -> Result<bool> {
        let r = self.handle.link().del(link.0).execute().await.map_err(|e| {
            nl_err(
                format!("deleting interface #{} in {}", link.0, self.netns),
                e,
            )
        });
        tolerate(r, libc::ENODEV)
    }

    /// IPv4 addresses on `link`, with their prefix lengths.
    pub async fn addresses(&self, link: IfIndex) -> Result<Vec<Ipv4Net>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.0)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing addresses in {}", self.netns), e))?;
        let mut out = Vec::new();
        for msg in msgs {
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
            // peer on point-to-point links, so prefer LOCAL.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr
                && let Ok(net) = Ipv4Net::new(ip, msg.header.prefix_len)
            {
                out.push(net);
            }
        }
        Ok(out)
    }

    /// Adds `addr` to `link`. Returns false if it was already there.
    pub async fn add_address(&self, link: IfIndex, addr: Ipv4Net) -> Result<bool> {
        let r = self
            .handle
            .address()
            .add(link.0, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
            .map_err(|e| nl_err(format!("adding address {addr} in {}", self.netns), e));
        tolerate(r, libc::EEXIST)
    }

    /// Removes `addr` from `link`. Returns false if it was not there.
    pub async fn del_address(&self, link: IfIndex, addr: Ipv4Net) -> Result<bool> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(link.0)
            .address(addr.addr(), addr.prefix_len())
            .build();
        let r = self
            .handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| nl_err(format!("removing address {addr} in {}", self.netns), e));
        tolerate(r, libc::EADDRNOTAVAIL)
    }

    /// Adds a link-scope route `dst dev link` in the main table. Returns
    /// false if it already existed.
    pub async fn add_route(&self, dst: Ipv4Net, link: IfIndex) -> Result<bool> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .output_interface(link.0)
            .scope(RouteScope::Link)
            .build();
        let r = self
            .handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err(format!("adding route {dst} in {}", self.netns), e));
        tolerate(r, libc::EEXIST)
    }

    /// Adds `dst via gw dev link` in the main table (a pod's default
    /// route). Returns false if it already existed.
    pub async fn add_route_via(&self, dst: Ipv4Net, gw: Ipv4Addr, link: IfIndex) -> Result<bool> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(gw)
            .output_interface(link.0)
            .build();
        let r = self
            .handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err(format!("adding route {dst} via {gw} in {}", self.netns), e));
        tolerate(r, libc::EEXIST)
    }

    /// Destinations of main-table IPv4 routes through `link`.
    pub async fn routes(&self, link: IfIndex) -> Result<Vec<Ipv4Net>> {
        Ok(self
            .routes_via(link)
            .await?
            .into_iter()
            .map(|(dst, _)| dst)
            .collect())
    }

    /// Main-table IPv4 routes through `link`: destination and gateway.
    pub async fn routes_via(&self, link: IfIndex) -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>)>> {
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing routes in {}", self.netns), e))?;
        let mut out = Vec::new();
        for msg in msgs {
            if msg.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let oif = msg
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == link.0));
            if !oif {
                continue;
            }
            let dst = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            let gw = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            if let Ok(net) = Ipv4Net::new(dst, msg.header.destination_prefix_length) {
                out.push((net, gw));
            }
        }
        Ok(out)
    }

    /// Creates the VXLAN device described by `spec`, or adopts an existing
    /// one with the same VNI/port/learning (recreating it if those differ),
    /// enslaves it to `spec.master` and brings it up.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<LinkInfo> {
        check_name(&spec.name)?;
        let name = spec.name.as_str();
        if let Some(link) = self.link_by_name(name).await? {
            if link.kind != LinkKind::Vxlan {
                return Err(DatapathError::WrongLinkKind {
                    name: name.into(),
                    found: link.kind.to_string(),
                    wanted: "vxlan",
                });
            }
            if link.vxlan.as_ref().is_some_and(|have| spec.matches(have)) {
                if let Some(master) = spec.master.filter(|m| link.master != Some(*m)) {
                    self.set_master(link.index, master).await?;
                }
                if let Some(mtu) = spec.mtu.filter(|m| *m != link.mtu) {
                    self.set_mtu(link.index, mtu).await?;
                }
                if !link.up {
                    self.set_up(link.index).await?;
                }
                return self.link(name).await;
            }
            // Parameters of an existing VXLAN device cannot all be changed
            // in place; recreating it is simpler and what weave does.
            self.delete_link(link.index).await?;
        }
        let mut b = LinkVxlan::new(name, spec.vni)
            .port(spec.port)
            .learning(spec.learning);
        if let Some(ip) = spec.local {
            b = b.local(ip);
        }
        if let Some(dev) = spec.underlay {
            b = b.dev(dev.0);
        }
        if let Some(master) = spec.master {
            b = b.controller(master.0);
        }
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        self.handle
            .link()
            .add(b.up().build())
            .execute()
            .await
            .map_err(|e| {
                nl_err(
                    format!(
                        "creating vxlan {name} (vni {}, port {}) in {}",
                        spec.vni, spec.port, self.netns
                    ),
                    e,
                )
            })?;
        self.link(name).await
    }

    fn fdb_message(dev: IfIndex, mac: Mac, dst: Option<Ipv4Addr>) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = dev.0;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        if let Some(ip) = dst {
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        }
        msg
    }

    /// Points `mac` at VTEP `dst` on VXLAN device `dev`
    /// (`bridge fdb replace MAC dev DEV dst DST self permanent`).
    pub async fn fdb_replace(&self, dev: IfIndex, mac: Mac, dst: Ipv4Addr) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(dev.0, &mac.0)
            .destination(IpAddr::V4(dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(format!("setting fdb {mac} dst {dst} in {}", self.netns), e))
    }

    /// Adds VTEP `dst` to the all-zeros (flood) entry of `dev`
    /// (`bridge fdb append 00:00:00:00:00:00 dev DEV dst DST`). rtnetlink's
    /// builder cannot set NLM_F_APPEND (rust-netlink/rtnetlink#60), so the
    /// request is sent by hand. Returns false if `dst` was already there
    /// (the kernel answers a duplicate append with success, so we look first).
    pub async fn fdb_append(&self, dev: IfIndex, dst: Ipv4Addr) -> Result<bool> {
        let present = self
            .fdb_list(dev)
            .await?
            .iter()
            .any(|e| e.device && e.mac == Mac::ZERO && e.dst == Some(dst));
        if present {
            return Ok(false);
        }
        let op = format!("appending fdb flood entry dst {dst} in {}", self.netns);
        let msg = Self::fdb_message(dev, Mac::ZERO, Some(dst));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(|e| nl_err(op.clone(), e))?;
        let mut result = Ok(());
        while let Some(msg) = resp.next().await {
            if let NetlinkPayload::Error(err) = msg.payload
                && let Some(code) = err.code
            {
                result = Err(DatapathError::netlink(op.clone(), -code.get()));
            }
        }
        tolerate(result, libc::EEXIST)
    }

    /// Removes the (mac, dst) remote from `dev`'s FDB, or the whole entry
    /// for `mac` when `dst` is `None`. Returns false if it was not there.
    pub async fn fdb_del(&self, dev: IfIndex, mac: Mac, dst: Option<Ipv4Addr>) -> Result<bool> {
        let shown = dst.map(|d| format!(" dst {d}")).unwrap_or_default();
        let r = self
            .handle
            .neighbours()
            .del(Self::fdb_message(dev, mac, dst))
            .execute()
            .await
            .map_err(|e| nl_err(format!("deleting fdb {mac}{shown} in {}", self.netns), e));
        tolerate(r, libc::ENOENT)
    }

    /// The FDB entries of `dev`, its own (VXLAN) and its bridge's.
    pub async fn fdb_list(&self, dev: IfIndex) -> Result<Vec<FdbEntry>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing fdb in {}", self.netns), e))?;
        let mut out = Vec::new();
        for msg in msgs.into_iter().filter(|m| m.header.ifindex == dev.0) {
            let mut mac = None;
            let mut dst = None;
            for a in &msg.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) => mac = Mac::from_slice(b),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                    // In AF_BRIDGE dumps the parser cannot tell the address
                    // family of NDA_DST and hands us raw bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from);
                    }
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push(FdbEntry {
                    mac,
                    dst,
                    permanent: msg.header.state == NeighbourState::Permanent,
                    device: msg.header.flags.contains(NeighbourFlags::Own),
                });
            }
        }
        out.sort();
        Ok(out)
    }
}
