//! Real-kernel tests of `meshnet_router::datapath` (needs root).
//!
//! Every test builds its own "hosts" and "containers" as network namespaces
//! named `mnt-dp-<pid>-<n>-<role>`, which the [`Namespaces`] guard deletes
//! on drop, also when an assertion panics. Traffic stays inside those
//! namespaces: overlay 10.32.0.0/12 and underlay TEST-NET-1 192.0.2.0/24.
//! The guard, the underlay and [`ping`] live in [`common`].

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use common::{BRIDGE, MTU, Namespaces, attach_at, ip, net, ping, test_net_1_underlay};
use meshnet_router::datapath::{
    self, DatapathError, FdbDesired, FdbEntry, FdbOp, HOST_VETH_PREFIX, IfIndex, LinkKind, Mac,
    Netlink, Netns, VxlanSpec, plan_fdb,
};

/// Polls `ip neigh` in `ns` for up to a second until `addr` maps to `mac`.
async fn neighbour_becomes(names: &Namespaces, ns: &Netns, addr: &str, mac: Mac) -> bool {
    let name = names.name_of(ns);
    for _ in 0..20 {
        let out = Command::new("ip")
            .args(["-n", &name, "neigh", "show", addr, "dev", "ethwe"])
            .output()
            .expect("run ip neigh");
        if String::from_utf8_lossy(&out.stdout).contains(&mac.to_string()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn host_veths(nl: &Netlink) -> BTreeSet<String> {
    nl.links_with_prefix(HOST_VETH_PREFIX)
        .await
        .expect("list links")
        .into_iter()
        .map(|l| l.name)
        .collect()
}

/// Scenario 1: one host, two containers; attach/detach/ps semantics and
/// every error path leaves nothing behind.
#[tokio::test]
async fn attach_detach_on_one_host() {
    let mut ns = Namespaces::new("dp");
    let h = ns.add("h");
    let c1 = ns.add("c1");
    let c2 = ns.add("c2");
    let hnl = Netlink::connect(&h).await.unwrap();

    let br = hnl.ensure_bridge(BRIDGE, MTU).await.unwrap();
    assert_eq!(
        (br.kind.clone(), br.mtu, br.up),
        (LinkKind::Bridge, MTU, true)
    );
    let again = hnl.ensure_bridge(BRIDGE, MTU).await.unwrap();
    assert_eq!(again.index, br.index, "ensure_bridge is idempotent");

    let a1 = attach_at(&h, &c1, "10.32.0.1/12", true).await;
    let a2 = attach_at(&h, &c2, "10.32.0.2/12", true).await;
    assert!(a1.created && a2.created);
    assert!(
        a1.host_veth.starts_with(HOST_VETH_PREFIX) && a1.host_veth.len() <= 15,
        "{}",
        a1.host_veth
    );
    assert_ne!(a1.host_veth, a2.host_veth);
    assert_eq!(a1.addrs, vec![net("10.32.0.1/12")]);
    assert!(
        ping(&c1, ip("10.32.0.2")).await,
        "c1 -> c2 across the bridge"
    );

    // c1 now has c2's MAC cached. Re-attach c2 (a new veth, a new MAC): the
    // gratuitous ARP must update c1's entry without waiting for it to expire.
    assert!(
        datapath::detach(&h, &c2, BRIDGE, &[])
            .await
            .unwrap()
            .deleted
    );
    let a2 = attach_at(&h, &c2, "10.32.0.2/12", true).await;
    assert!(a2.created);
    assert!(
        neighbour_becomes(&ns, &c1, "10.32.0.2", a2.mac).await,
        "gratuitous ARP from the re-attached c2 must update c1's neighbour entry"
    );
    assert!(ping(&c1, ip("10.32.0.2")).await, "c1 -> re-attached c2");

    // The container side is as weave sets it up.
    let c1nl = Netlink::connect(&c1).await.unwrap();
    let ethwe = c1nl.link("ethwe").await.unwrap();
    assert_eq!(
        (ethwe.mtu, ethwe.up, ethwe.kind.clone()),
        (MTU, true, LinkKind::Veth)
    );
    assert_eq!(ethwe.mac, Some(a1.mac));
    assert!(
        c1nl.routes(ethwe.index)
            .await
            .unwrap()
            .contains(&net("224.0.0.0/4"))
    );
    assert!(
        datapath::tx_checksum(&c1, "ethwe").await.unwrap(),
        "TX checksum offload must stay on (the sleeve completes partial checksums)"
    );
    assert_eq!(
        datapath::net_sysctl(&c1, "ipv4/neigh/ethwe/ucast_solicit")
            .await
            .unwrap(),
        "1"
    );
    let hv = hnl.link(&a1.host_veth).await.unwrap();
    assert_eq!((hv.master, hv.mtu, hv.up), (Some(br.index), MTU, true));

    // Same address again: a no-op on the same interface.
    let same = attach_at(&h, &c1, "10.32.0.1/12", true).await;
    assert!(!same.created && same.added.is_empty());
    assert_eq!(
        (same.addrs.clone(), same.host_veth.clone()),
        (vec![net("10.32.0.1/12")], a1.host_veth.clone())
    );
    assert_eq!(c1nl.link("ethwe").await.unwrap().index, ethwe.index);

    // A second address adds to the same ethwe and is reachable.
    let more = attach_at(&h, &c1, "10.32.0.9/12", true).await;
    assert_eq!(more.added, vec![net("10.32.0.9/12")]);
    assert_eq!(c1nl.link("ethwe").await.unwrap().index, ethwe.index);
    assert!(
        ping(&c2, ip("10.32.0.9")).await,
        "c2 -> second address of c1"
    );

    let ps = datapath::container_addrs(&h, &c1, BRIDGE)
        .await
        .unwrap()
        .expect("c1 attached");
    assert_eq!(ps.mac, a1.mac);
    let got: BTreeSet<_> = ps.addrs.into_iter().collect();
    assert_eq!(
        got,
        [net("10.32.0.1/12"), net("10.32.0.9/12")]
            .into_iter()
            .collect()
    );

    // Detach one: the interface stays; detach the last: it goes, host side too.
    let d = datapath::detach(&h, &c1, BRIDGE, &[net("10.32.0.9/12")])
        .await
        .unwrap();
    assert_eq!(
        (d.removed, d.remaining.clone(), d.deleted),
        (vec![net("10.32.0.9/12")], vec![net("10.32.0.1/12")], false)
    );
    assert!(c1nl.link_by_name("ethwe").await.unwrap().is_some());
    let d = datapath::detach(&h, &c1, BRIDGE, &[net("10.32.0.1/12")])
        .await
        .unwrap();
    assert!(d.deleted && d.remaining.is_empty());
    assert!(c1nl.link_by_name("ethwe").await.unwrap().is_none());
    assert!(hnl.link_by_name(&a1.host_veth).await.unwrap().is_none());
    assert_eq!(
        datapath::container_addrs(&h, &c1, BRIDGE).await.unwrap(),
        None
    );
    let err = datapath::detach(&h, &c1, BRIDGE, &[]).await.unwrap_err();
    assert!(matches!(err, DatapathError::NotAttached { .. }), "{err}");

    // Errors leave nothing behind on the host bridge.
    let before = host_veths(&hnl).await;
    assert_eq!(before, [a2.host_veth.clone()].into_iter().collect());
    let err = Netns::named(&ns.missing_name()).unwrap_err();
    assert!(err.to_string().contains("ip netns add"), "{err}");
    let err = datapath::attach(&h, &c1, BRIDGE, &[net("10.32.0.1/12")], 70_000, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatapathError::Netlink { .. }),
        "MTU 70000 must fail after the veth exists: {err}"
    );
    assert_eq!(host_veths(&hnl).await, before, "failed attach rolled back");
    assert!(
        c1nl.links().await.unwrap().iter().all(|l| l.name == "lo"),
        "nothing left in the container"
    );
    let err = datapath::attach(&h, &h, BRIDGE, &[net("10.32.0.5/12")], MTU, true)
        .await
        .unwrap_err();
    assert!(matches!(err, DatapathError::HostNetns), "{err}");
    let err = datapath::attach(&h, &c1, "nosuchbr", &[net("10.32.0.5/12")], MTU, true)
        .await
        .unwrap_err();
    assert!(matches!(err, DatapathError::NoBridge { .. }), "{err}");
    let err = datapath::attach(&h, &c1, BRIDGE, &[net("10.32.0.0/12")], MTU, true)
        .await
        .unwrap_err();
    assert!(matches!(err, DatapathError::BadAddress { .. }), "{err}");
    // Somebody else's `ethwe` is refused, not reused.
    c1nl.create_veth("ethwe", "other0").await.unwrap();
    let err = datapath::attach(&h, &c1, BRIDGE, &[net("10.32.0.5/12")], MTU, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatapathError::ForeignInterface { .. }),
        "{err}"
    );
    assert_eq!(host_veths(&hnl).await, before);
}

/// Applies FDB operations computed by `plan_fdb`.
async fn apply_fdb(nl: &Netlink, dev: IfIndex, ops: &[FdbOp]) {
    for op in ops {
        match *op {
            FdbOp::Delete { mac, dst } => {
                assert!(nl.fdb_del(dev, mac, Some(dst)).await.unwrap(), "{op:?}")
            }
            FdbOp::Replace { mac, dst } => nl.fdb_replace(dev, mac, dst).await.unwrap(),
            FdbOp::Append { dst } => assert!(nl.fdb_append(dev, dst).await.unwrap(), "{op:?}"),
        }
    }
}

fn device_entries(entries: &[FdbEntry]) -> BTreeSet<(Mac, Ipv4Addr)> {
    entries
        .iter()
        .filter(|e| e.device)
        .filter_map(|e| e.dst.map(|d| (e.mac, d)))
        .collect()
}

/// One fastdp host: underlay address, bridge, VXLAN device.
struct Host {
    nl: Netlink,
    vx: IfIndex,
}

/// `underlay` is already addressed `addr` and up.
async fn fastdp_host(ns: &Netns, underlay: IfIndex, addr: &str) -> Host {
    let nl = Netlink::connect(ns).await.unwrap();
    let br = nl.ensure_bridge(BRIDGE, MTU).await.unwrap();
    let spec = VxlanSpec {
        name: "vxlan-6784".into(),
        vni: 0x4242,
        port: 6784,
        local: Some(net(addr).addr()),
        underlay: Some(underlay),
        learning: false,
        master: Some(br.index),
        mtu: None,
    };
    let vx = nl.ensure_vxlan(&spec).await.unwrap();
    let cfg = vx.vxlan.clone().expect("vxlan config");
    assert_eq!(
        (cfg.vni, cfg.port, cfg.learning, cfg.local),
        (0x4242, 6784, false, spec.local)
    );
    assert_eq!((vx.master, vx.up), (Some(br.index), true));
    let again = nl.ensure_vxlan(&spec).await.unwrap();
    assert_eq!(again.index, vx.index, "ensure_vxlan is idempotent");
    Host { nl, vx: vx.index }
}

/// Scenario 2: two hosts joined by an underlay veth, containers reach each
/// other over kernel VXLAN programmed only through our FDB calls.
#[tokio::test]
async fn fastdp_vxlan_between_two_hosts() {
    let mut ns = Namespaces::new("dp");
    let (h1, h2) = (ns.add("h1"), ns.add("h2"));
    let (c1, c2) = (ns.add("c1"), ns.add("c2"));
    let (ip1, ip2) = (ip("192.0.2.1"), ip("192.0.2.2"));

    let (u1, u2) = test_net_1_underlay(&h1, &h2).await;
    let a = fastdp_host(&h1, u1, "192.0.2.1/24").await;
    let b = fastdp_host(&h2, u2, "192.0.2.2/24").await;

    assert!(a.nl.fdb_append(a.vx, ip2).await.unwrap());
    assert!(
        !a.nl.fdb_append(a.vx, ip2).await.unwrap(),
        "second append of the same dst is 'already there'"
    );
    // The other side is programmed through plan_fdb, as the router will.
    let want_b = FdbDesired {
        flood: [ip1].into_iter().collect(),
        ..Default::default()
    };
    apply_fdb(
        &b.nl,
        b.vx,
        &plan_fdb(&b.nl.fdb_list(b.vx).await.unwrap(), &want_b),
    )
    .await;
    assert!(
        plan_fdb(&b.nl.fdb_list(b.vx).await.unwrap(), &want_b).is_empty(),
        "converged"
    );

    let a1 = attach_at(&h1, &c1, "10.32.0.1/12", true).await;
    let a2 = attach_at(&h2, &c2, "10.32.0.2/12", true).await;
    assert!(ping(&c1, ip("10.32.0.2")).await, "c1 -> c2 across VXLAN");
    assert!(ping(&c2, ip("10.32.0.1")).await, "c2 -> c1 across VXLAN");

    let listed = a.nl.fdb_list(a.vx).await.unwrap();
    assert!(
        listed.contains(&FdbEntry {
            mac: Mac::ZERO,
            dst: Some(ip2),
            permanent: true,
            device: true
        }),
        "{listed:?}"
    );
    assert_eq!(
        device_entries(&b.nl.fdb_list(b.vx).await.unwrap()),
        [(Mac::ZERO, ip1)].into_iter().collect()
    );

    // Without flood entries nothing crosses (ARP entries are still cached,
    // so this is the unicast path failing, not ARP).
    assert!(a.nl.fdb_del(a.vx, Mac::ZERO, Some(ip2)).await.unwrap());
    assert!(b.nl.fdb_del(b.vx, Mac::ZERO, Some(ip1)).await.unwrap());
    assert!(
        !a.nl.fdb_del(a.vx, Mac::ZERO, Some(ip2)).await.unwrap(),
        "deleting again is 'not there'"
    );
    assert!(device_entries(&a.nl.fdb_list(a.vx).await.unwrap()).is_empty());
    assert!(
        !ping(&c1, ip("10.32.0.2")).await,
        "no FDB entries: ping must fail"
    );

    // Unicast entries alone carry known MACs again.
    a.nl.fdb_replace(a.vx, a2.mac, ip2).await.unwrap();
    b.nl.fdb_replace(b.vx, a1.mac, ip1).await.unwrap();
    assert!(
        ping(&c1, ip("10.32.0.2")).await,
        "unicast FDB entries carry traffic"
    );
    assert_eq!(
        device_entries(&a.nl.fdb_list(a.vx).await.unwrap()),
        [(a2.mac, ip2)].into_iter().collect()
    );

    // And plan_fdb back to empty removes them; traffic stops.
    for h in [&a, &b] {
        apply_fdb(
            &h.nl,
            h.vx,
            &plan_fdb(&h.nl.fdb_list(h.vx).await.unwrap(), &FdbDesired::default()),
        )
        .await;
        assert!(device_entries(&h.nl.fdb_list(h.vx).await.unwrap()).is_empty());
    }
    assert!(
        !ping(&c1, ip("10.32.0.2")).await,
        "FDB emptied: ping must fail"
    );
}

/// Scenario 3: `reset` finds every host-side veth by prefix and deleting
/// them detaches the containers. Runs on a multi-threaded runtime, as the
/// router does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_with_prefix_sweeps_host_veths() {
    let mut ns = Namespaces::new("dp");
    let h = ns.add("h");
    let (c1, c2) = (ns.add("c1"), ns.add("c2"));
    let hnl = Netlink::connect(&h).await.unwrap();
    hnl.ensure_bridge(BRIDGE, MTU).await.unwrap();
    let a1 = attach_at(&h, &c1, "10.32.0.1/12", false).await;
    let a2 = attach_at(&h, &c2, "10.32.0.2/12", false).await;
    let c1nl = Netlink::connect(&c1).await.unwrap();
    let ethwe = c1nl.link("ethwe").await.unwrap();
    assert!(
        !c1nl
            .routes(ethwe.index)
            .await
            .unwrap()
            .contains(&net("224.0.0.0/4")),
        "multicast route disabled"
    );

    let found = hnl.links_with_prefix(HOST_VETH_PREFIX).await.unwrap();
    let names: BTreeSet<_> = found.iter().map(|l| l.name.clone()).collect();
    assert_eq!(
        names,
        [a1.host_veth.clone(), a2.host_veth.clone()]
            .into_iter()
            .collect()
    );
    assert!(
        hnl.links_with_prefix("vethwe").await.unwrap().len() == 2,
        "reset's `vethwe` sweep sees them too"
    );
    for l in found {
        assert!(hnl.delete_link(l.index).await.unwrap());
    }
    assert!(
        hnl.links_with_prefix(HOST_VETH_PREFIX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(c1nl.link_by_name("ethwe").await.unwrap().is_none());
    assert_eq!(
        datapath::container_addrs(&h, &c2, BRIDGE).await.unwrap(),
        None
    );
    assert!(
        hnl.link_by_name(BRIDGE).await.unwrap().is_some(),
        "the bridge itself is not a vethwe link"
    );
}
