//! Link dumps read into our own types: a `LinkMessage` becomes a [`LinkInfo`]
//! (kind, addresses, MTU, master, VXLAN settings).

use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    State,
};

use super::{IfIndex, LinkInfo, LinkKind, VxlanConfig};
use crate::datapath::Mac;

fn link_kind(kind: &InfoKind) -> LinkKind {
    match kind {
        InfoKind::Bridge => LinkKind::Bridge,
        InfoKind::Veth => LinkKind::Veth,
        InfoKind::Vxlan => LinkKind::Vxlan,
        InfoKind::Tun => LinkKind::Tun,
        other => LinkKind::Other(other.to_string()),
    }
}

fn vxlan_config(infos: &[InfoVxlan]) -> VxlanConfig {
    let mut c = VxlanConfig::default();
    for i in infos {
        match i {
            InfoVxlan::Id(v) => c.vni = *v,
            InfoVxlan::Port(p) => c.port = *p,
            InfoVxlan::Local(ip) => c.local = Some(*ip),
            InfoVxlan::Link(l) if *l != 0 => c.underlay = Some(IfIndex(*l)),
            InfoVxlan::Learning(l) => c.learning = *l,
            _ => {}
        }
    }
    c
}

pub(super) fn link_info(msg: LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: IfIndex(msg.header.index),
        name: String::new(),
        mac: None,
        mtu: 0,
        master: None,
        peer_index: None,
        kind: LinkKind::Other(String::new()),
        up: msg.header.flags.contains(LinkFlags::Up),
        running: false,
        vxlan: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n,
            LinkAttribute::Address(b) => info.mac = Mac::from_slice(&b),
            LinkAttribute::Mtu(m) => info.mtu = m,
            LinkAttribute::OperState(st) => info.running = st == State::Up,
            LinkAttribute::Controller(c) if c != 0 => info.master = Some(IfIndex(c)),
            LinkAttribute::Link(l) if l != 0 => info.peer_index = Some(IfIndex(l)),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => info.kind = link_kind(&k),
                        NlLinkInfo::Data(InfoData::Vxlan(v)) => info.vxlan = Some(vxlan_config(&v)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}
