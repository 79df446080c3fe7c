//! Bridge-port settings the fast datapath needs: port isolation, hairpin,
//! the port's FDB entries, and a link's MAC address.

use netlink_packet_route::link::{InfoBridgePort, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::LinkUnspec;

use super::{IfIndex, Netlink, nl_err, tolerate};
use crate::datapath::Mac;
use crate::datapath::error::Result;

impl Netlink {
    /// Sets bridge-port isolation (`ip link set DEV type bridge_slave
    /// isolated on`): isolated ports never forward to each other, so frames
    /// arriving over VXLAN never leak into the sleeve's TAP and back out.
    pub async fn set_isolated(&self, port: IfIndex, on: bool) -> Result<()> {
        let msg = rtnetlink::LinkBridgePort::new(port.0)
            .append_info_data(InfoBridgePort::Isolated(on))
            .build();
        self.set_bridge_port(msg, || format!("setting isolation on port {}", port.0))
            .await
    }

    /// Sets hairpin mode on a bridge port (`bridge link set dev PORT
    /// hairpin on`): frames may leave by the port they came in, so a pod
    /// reaches itself through a service address that NAT sends back to it.
    pub async fn set_hairpin(&self, port: IfIndex, on: bool) -> Result<()> {
        let msg = rtnetlink::LinkBridgePort::new(port.0)
            .append_info_data(InfoBridgePort::HairpinMode(on))
            .build();
        self.set_bridge_port(msg, || format!("setting hairpin mode on port {}", port.0))
            .await
    }

    /// Forgets every MAC the bridge learned on `port` (`ip link set PORT type
    /// bridge_slave fdb_flush`), so they are learned again wherever their
    /// frames now arrive.
    pub async fn flush_port_fdb(&self, port: IfIndex) -> Result<()> {
        let msg = rtnetlink::LinkBridgePort::new(port.0).fdb_flush().build();
        self.set_bridge_port(msg, || format!("flushing the fdb of port {}", port.0))
            .await
    }

    /// Applies one bridge-port setting; `what` names it for the error, which
    /// adds the namespace.
    async fn set_bridge_port(&self, msg: LinkMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(|e| nl_err(format!("{} in {}", what(), self.netns), e))
    }

    /// Sets a link's hardware address. The bridge gets the peer name as its
    /// MAC (as weave does), so it stays the same whichever ports join.
    pub async fn set_mac(&self, link: IfIndex, mac: Mac) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.0)
                    .address(mac.0.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                nl_err(
                    format!("setting the MAC of link {} in {}", link.0, self.netns),
                    e,
                )
            })
    }

    /// Removes a learned entry for `mac` on bridge port `port` from the
    /// bridge's own FDB (`bridge fdb del MAC dev PORT master`). Returns false
    /// if it was not there.
    pub async fn bridge_fdb_del(&self, port: IfIndex, mac: Mac) -> Result<bool> {
        let mut msg = Self::fdb_message(port, mac, None);
        msg.header.flags = NeighbourFlags::Controller;
        msg.header.state = NeighbourState::Reachable;
        let r = self
            .handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(|e| nl_err(format!("deleting bridge fdb {mac} in {}", self.netns), e));
        tolerate(r, libc::ENOENT)
    }
}
