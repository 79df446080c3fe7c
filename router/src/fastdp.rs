//! The fast datapath's kernel side: a VXLAN device on the bridge, its FDB
//! kept in step with the overlay selection, and the heartbeat socket whose
//! frames really cross the VXLAN device.
//!
//! Decisions (which peer is on fastdp) are made by
//! [`meshnet_mesh::overlay::Overlay`]; this module only applies them:
//! - a peer that offered fastdp gets a static FDB entry for its bridge MAC
//!   (so heartbeats reach it through VXLAN even while it is on the sleeve);
//! - a peer on fastdp is added to the all-zeros flood entry: the VXLAN
//!   device never learns (VXLAN is unauthenticated, so it sends only to the
//!   VTEPs programmed here), and only admitted peers' packets reach it at
//!   all ([`crate::admission`]); the bridge learns which MACs are behind
//!   the VXLAN port from those packets;
//! - a peer leaving fastdp is removed from the flood entry, and every MAC the
//!   kernel learned behind it is flushed from the VXLAN and bridge FDBs, so
//!   its frames go to the sleeve at once instead of into a dead tunnel.
//!
//! Heartbeats are Ethernet frames of type [`HEARTBEAT_ETHERTYPE`], sent into
//! the VXLAN device and received on the bridge device, with an AF_PACKET
//! socket.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use meshnet_mesh::overlay::{FastdpHello, HEARTBEAT_ETHERTYPE, Heartbeat, Path};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::datapath::{IfIndex, LinkInfo, Mac, Netlink, VxlanSpec};

/// Name of the VXLAN device (`vethwe` prefix: `reset` sweeps it).
pub const VXLAN_NAME: &str = "vethwe-vxlan";
/// VXLAN network identifier of the mesh ("mn").
pub const VNI: u32 = 0x6d6e;
/// UDP port of the fast datapath, as weave.
pub const VXLAN_PORT: u16 = 6784;

/// Changes to kernel state, applied in order by [`run_kernel`].
#[derive(Debug)]
pub enum KernelCmd {
    /// The peer at `ip` offered fastdp; its bridge answers heartbeats at `mac`.
    AddPeer { ip: Ipv4Addr, mac: Mac },
    /// The peer's connection went away.
    RemovePeer { ip: Ipv4Addr, mac: Mac },
    /// The overlay moved the peer at `ip` to `path`.
    SetPath { ip: Ipv4Addr, path: Path },
}

/// The fast datapath of one router.
#[derive(Debug)]
pub struct Fastdp {
    pub hello: FastdpHello,
    pub vxlan: LinkInfo,
    pub heartbeats: Arc<HeartbeatSocket>,
}

impl Fastdp {
    /// Creates (or adopts) the VXLAN device on `bridge` and opens the
    /// heartbeat socket on the bridge device.
    pub async fn setup(
        nl: &Netlink,
        bridge: &LinkInfo,
        mtu: u32,
    ) -> crate::datapath::Result<Fastdp> {
        let vxlan = nl
            .ensure_vxlan(&VxlanSpec {
                name: VXLAN_NAME.into(),
                vni: VNI,
                port: VXLAN_PORT,
                local: None,
                underlay: None,
                // Never learn a remote from a packet: VXLAN is unauthenticated,
                // so the kernel sends only to the VTEPs we program.
                learning: false,
                master: Some(bridge.index),
                mtu: Some(mtu),
            })
            .await?;
        nl.set_isolated(vxlan.index, true).await?;
        let bridge_mac = bridge.mac.unwrap_or_default();
        let heartbeats =
            HeartbeatSocket::open(bridge.index, vxlan.index, bridge_mac).map_err(|e| {
                crate::datapath::DatapathError::io("opening the fastdp heartbeat socket", e)
            })?;
        Ok(Fastdp {
            hello: FastdpHello {
                bridge_mac: bridge_mac.0,
                vni: VNI,
                port: VXLAN_PORT,
            },
            vxlan,
            heartbeats: Arc::new(heartbeats),
        })
    }
}

/// Applies [`KernelCmd`]s to the VXLAN device's and bridge's FDBs, in order.
pub async fn run_kernel(nl: Netlink, vxlan: IfIndex, mut cmds: mpsc::UnboundedReceiver<KernelCmd>) {
    // MAC of each fastdp peer's bridge, by underlay address: kept when flushing.
    let mut beacons: BTreeMap<Ipv4Addr, Mac> = BTreeMap::new();
    while let Some(cmd) = cmds.recv().await {
        let r = match cmd {
            KernelCmd::AddPeer { ip, mac } => {
                beacons.insert(ip, mac);
                nl.fdb_replace(vxlan, mac, ip).await
            }
            KernelCmd::RemovePeer { ip, mac } => {
                beacons.remove(&ip);
                let r = leave_fastdp(&nl, vxlan, ip, None).await;
                let _ = nl.fdb_del(vxlan, mac, Some(ip)).await;
                r
            }
            KernelCmd::SetPath {
                ip,
                path: Path::Fastdp,
            } => {
                let r = nl.fdb_append(vxlan, ip).await.map(drop);
                // The bridge learned that peer's MACs on the sleeve's TAP while
                // it was on the sleeve; the sleeve now refuses them (the peer is
                // fastdp-served), so they must be learned again from VXLAN.
                if let Ok(Some(tap)) = nl.link_by_name(crate::sleeve::TAP_NAME).await {
                    let _ = nl.flush_port_fdb(tap.index).await;
                }
                r
            }
            KernelCmd::SetPath {
                ip,
                path: Path::Sleeve,
            } => leave_fastdp(&nl, vxlan, ip, beacons.get(&ip).copied()).await,
        };
        if let Err(e) = r {
            warn!(error = %e, "cannot update the fast datapath FDB");
        }
    }
}

/// Takes `ip` out of the flood list and flushes the MACs learned behind it
/// (except its heartbeat MAC `keep`), from the VXLAN FDB and the bridge FDB.
async fn leave_fastdp(
    nl: &Netlink,
    vxlan: IfIndex,
    ip: Ipv4Addr,
    keep: Option<Mac>,
) -> crate::datapath::Result<()> {
    nl.fdb_del(vxlan, Mac::ZERO, Some(ip)).await?;
    let entries = nl.fdb_list(vxlan).await?;
    let behind: Vec<Mac> = entries
        .iter()
        .filter(|e| e.device && e.dst == Some(ip) && e.mac != Mac::ZERO && Some(e.mac) != keep)
        .map(|e| e.mac)
        .collect();
    for mac in &behind {
        nl.fdb_del(vxlan, *mac, Some(ip)).await?;
    }
    // The bridge learned the same MACs on the VXLAN port; forget them too,
    // or it keeps sending their frames into the tunnel.
    for e in entries
        .iter()
        .filter(|e| !e.device && behind.contains(&e.mac))
    {
        nl.bridge_fdb_del(vxlan, e.mac).await?;
    }
    debug!(%ip, flushed = behind.len(), "peer left the fast datapath");
    Ok(())
}

/// Receive buffer of the heartbeat socket: an Ethernet frame at the largest overlay MTU
/// (`--mtu` allows up to 65535), so a full-size heartbeat is never truncated.
const HEARTBEAT_BUF: usize = 14 + 65_535;

/// An AF_PACKET socket for heartbeat frames: it receives on the bridge
/// device (a heartbeat is addressed to the bridge's MAC) and sends straight
/// into the VXLAN device, so a heartbeat never depends on what the local
/// bridge has learned (a bridge MAC learned on the sleeve's port while a
/// peer was on the sleeve would otherwise swallow every ping and pong).
#[derive(Debug)]
pub struct HeartbeatSocket {
    fd: AsyncFd<OwnedFd>,
    tx_ifindex: IfIndex,
    mac: Mac,
}

impl HeartbeatSocket {
    fn open(ifindex: IfIndex, tx_ifindex: IfIndex, mac: Mac) -> io::Result<HeartbeatSocket> {
        let proto = HEARTBEAT_ETHERTYPE.to_be();
        // SAFETY: plain syscall; the result is checked and then owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::c_int::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr(ifindex, proto, [0; 6])?;
        // SAFETY: `addr` is a valid sockaddr_ll that outlives the call.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: we own `fd` exclusively; it is deregistered when dropped.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(HeartbeatSocket {
            fd,
            tx_ifindex,
            mac,
        })
    }

    /// Sends a heartbeat to the bridge whose MAC is `to`.
    pub fn send(&self, hb: &Heartbeat, to: [u8; 6]) -> io::Result<()> {
        let frame = hb.encode(to, self.mac.0);
        let addr = sockaddr(self.tx_ifindex, HEARTBEAT_ETHERTYPE.to_be(), to)?;
        // SAFETY: `frame` and `addr` outlive the call; lengths match.
        let n = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives heartbeats until the channel closes; each comes with the
    /// MAC of the bridge that sent it.
    pub async fn receive(self: Arc<Self>, out: mpsc::UnboundedSender<(Heartbeat, [u8; 6])>) {
        // Full-size heartbeats are as long as the largest frame the bridge carries.
        let mut buf = vec![0u8; HEARTBEAT_BUF];
        loop {
            let n = match self.fd.readable().await {
                Ok(mut guard) => match guard.try_io(|fd| {
                    // SAFETY: `buf` is valid for `buf.len()` bytes.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                }) {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        warn!(error = %e, "heartbeat socket receive failed");
                        continue;
                    }
                    Err(_would_block) => continue,
                },
                Err(e) => {
                    warn!(error = %e, "heartbeat socket failed");
                    return;
                }
            };
            let frame = &buf[..n];
            // Our own frames are looped back to the socket; ignore them.
            if frame.len() >= 12 && frame[6..12] == self.mac.0 {
                continue;
            }
            if let Some(hb) = Heartbeat::decode(frame) {
                let mut src = [0u8; 6];
                src.copy_from_slice(&frame[6..12]);
                if out.send((hb, src)).is_err() {
                    return;
                }
            }
        }
    }
}

fn sockaddr(ifindex: IfIndex, proto: u16, dst: [u8; 6]) -> io::Result<libc::sockaddr_ll> {
    // SAFETY: sockaddr_ll is plain old data; all-zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::sa_family_t;
    addr.sll_protocol = proto;
    addr.sll_ifindex =
        i32::try_from(ifindex.0).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst);
    Ok(addr)
}
