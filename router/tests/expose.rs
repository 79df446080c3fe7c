//! Real-kernel tests of `meshnet_router::expose` and `meshnet_router::nft`
//! (needs root and the `nft` binary).
//!
//! Each test builds a "host" network namespace (standing in for the root
//! namespace), "containers" and an "outside" network as namespaces named
//! `mnt-ex-<pid>-<n>-<role>`, which [`Namespaces`] deletes on drop, also when
//! an assertion panics; deleting a namespace takes its interfaces and its
//! nftables tables with it. Addresses: overlay 10.32.0.0/12, outside
//! TEST-NET-1 192.0.2.0/24. The guard, the veth set-up and the ICMP echo
//! live in [`common`]; here a missing route counts as a failed ping.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BRIDGE, Namespaces, bridged_container, ip, net, ping_or_no_route as ping, underlay};
use meshnet_router::datapath::{self, Netlink, Netns};
use meshnet_router::expose::{self, LINK_PREFIX};
use meshnet_router::nft::{self, ChainRef};
use socket2::{Domain, Protocol, Socket, Type};

/// Runs `ip ARGS` (test setup only) and insists it succeeds.
fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `nft ARGS` inside namespace `name` (test setup only).
fn nft_in(name: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", name, "nft"])
        .args(args)
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Listens in `ns` for the first ICMP echo request and returns its source
/// address (what the outside world sees), or `None` after three seconds.
/// The socket is open when this returns, so start it before pinging.
async fn first_echo_source(ns: &Netns) -> tokio::task::JoinHandle<Option<Ipv4Addr>> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let ns = ns.try_clone().expect("clone netns");
    let handle = tokio::spawn(async move {
        ns.run("capture", move || -> std::io::Result<Option<Ipv4Addr>> {
            let sock: UdpSocket =
                Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?.into();
            let _ = ready_tx.send(());
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut buf = [0u8; 1500];
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                let Ok(n) = sock.recv(&mut buf) else {
                    return Ok(None);
                };
                let pkt = &buf[..n];
                let ihl = usize::from(pkt[0] & 0x0f) * 4;
                if pkt.len() > ihl && pkt[ihl] == 8 {
                    return Ok(Some(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])));
                }
            }
            Ok(None)
        })
        .await
        .expect("capture thread")
        .expect("capture socket")
    });
    ready_rx.await.expect("capture socket opened");
    handle
}

/// Rules with our comments in `chain`.
fn ours_in(rules: &nft::Ruleset, chain: &ChainRef) -> Vec<String> {
    rules
        .rules
        .iter()
        .filter(|r| &r.chain == chain)
        .filter_map(|r| r.comment.clone())
        .filter(|c| c.starts_with("meshnet"))
        .collect()
}

fn our_table_rules(rules: &nft::Ruleset) -> usize {
    rules
        .rules
        .iter()
        .filter(|r| r.chain.family == "ip" && r.chain.table == nft::TABLE)
        .count()
}

/// A host with the bridge and one attached container at 10.32.0.2/12.
async fn host_with_container(names: &mut Namespaces) -> (Netns, String, Netns, String, Netlink) {
    let host = names.add("host");
    let c = names.add("c");
    let (nl, _) = bridged_container(&host, &c, "10.32.0.2/12", true).await;
    let (host_name, c_name) = (names.name_of(&host), names.name_of(&c));
    (host, host_name, c, c_name, nl)
}

/// Outside network: host 192.0.2.1/24 (`mntout0`) <-> outside 192.0.2.2/24
/// (`mntout1`). The outside has no route to 10.32.0.0/12, so only
/// masqueraded traffic can be answered.
async fn outside_network(host: &Netns, outside: &Netns) {
    underlay(
        host,
        outside,
        ("mntout0", "mntout1"),
        "192.0.2.1/24",
        "192.0.2.2/24",
    )
    .await;
}

/// Scenario: expose gives the host a path into the overlay and the overlay
/// a masqueraded path out; hide undoes it; reset's cleanup sweeps it all.
#[tokio::test]
async fn expose_masquerade_hide_and_cleanup() {
    let mut names = Namespaces::new("ex");
    let (host, host_name, c, c_name, nl) = host_with_container(&mut names).await;
    let outside = names.add("out");
    outside_network(&host, &outside).await;

    assert!(!ping(&host, ip("10.32.0.2")).await, "not exposed yet");

    let cidr = net("10.32.0.1/12");
    assert!(
        expose::expose(&host, BRIDGE, cidr, true)
            .await
            .expect("expose")
    );
    assert!(
        !expose::expose(&host, BRIDGE, cidr, true)
            .await
            .expect("expose again"),
        "second expose finds the address already there"
    );
    // What we generate reads back as what we want: nothing left to change.
    assert!(
        !expose::ensure_bridge_forwarding(&host, BRIDGE)
            .await
            .expect("ensure after expose"),
        "the kernel's listing matches the plan"
    );
    assert_eq!(
        datapath::net_sysctl(&host, "ipv4/ip_forward")
            .await
            .unwrap(),
        "1"
    );
    let rules = nft::list(&host).await.expect("nft list");
    assert_eq!(
        rules.exposed(),
        [(net("10.32.0.0/12"), true)].into_iter().collect()
    );
    // docker0 drop + expose marker + 3 NAT rules: one copy after two calls.
    assert_eq!(our_table_rules(&rules), 5, "{rules:?}");
    let post = ChainRef {
        family: "ip".into(),
        table: nft::TABLE.into(),
        name: nft::POSTROUTING.into(),
    };
    assert_eq!(ours_in(&rules, &post).len(), 3);

    assert!(
        ping(&host, ip("10.32.0.2")).await,
        "host -> exposed container"
    );

    ip_cmd(&["-n", &c_name, "route", "add", "default", "via", "10.32.0.1"]);
    let seen = first_echo_source(&outside).await;
    assert!(
        ping(&c, ip("192.0.2.2")).await,
        "container -> outside through the host (masquerade)"
    );
    assert_eq!(
        seen.await.expect("capture task"),
        Some(ip("192.0.2.1")),
        "the outside sees the host's address, not the container's"
    );

    // --without-masquerade on the same subnet replaces the NAT rules.
    expose::expose(&host, BRIDGE, cidr, false)
        .await
        .expect("expose without masquerade");
    let rules = nft::list(&host).await.unwrap();
    assert_eq!(
        rules.exposed(),
        [(net("10.32.0.0/12"), false)].into_iter().collect()
    );
    assert_eq!(ours_in(&rules, &post).len(), 0);
    assert!(!ping(&c, ip("192.0.2.2")).await, "no masquerade: no answer");
    expose::expose(&host, BRIDGE, cidr, true)
        .await
        .expect("masquerade again");

    assert_eq!(
        expose::exposed_addrs(&host, BRIDGE).await.unwrap(),
        vec![cidr]
    );
    assert!(expose::hide(&host, BRIDGE, cidr).await.expect("hide"));
    assert!(!expose::hide(&host, BRIDGE, cidr).await.expect("hide again"));
    assert!(
        expose::exposed_addrs(&host, BRIDGE)
            .await
            .unwrap()
            .is_empty()
    );
    let rules = nft::list(&host).await.unwrap();
    assert!(rules.exposed().is_empty());
    assert_eq!(our_table_rules(&rules), 1, "only the docker0 drop is left");
    assert!(!ping(&host, ip("10.32.0.2")).await, "hidden again");

    // Reset: the VXLAN device and the sleeve TAP are swept by prefix too;
    // a veth pair stands in for them (no driver differences matter here).
    ip_cmd(&[
        "-n",
        &host_name,
        "link",
        "add",
        "vethwe-sleeve",
        "type",
        "veth",
        "peer",
        "name",
        "vethwe-x",
    ]);
    let swept = expose::cleanup(&host, BRIDGE).await.expect("cleanup");
    assert_eq!(swept.links.first().map(String::as_str), Some(BRIDGE));
    assert!(
        swept.links.iter().any(|l| l.starts_with("vethwepl")),
        "{swept:?}"
    );
    assert!(
        swept
            .links
            .iter()
            .any(|l| l == "vethwe-sleeve" || l == "vethwe-x"),
        "{swept:?}"
    );
    assert!(swept.firewall);
    assert!(nl.link_by_name(BRIDGE).await.unwrap().is_none());
    assert!(nl.links_with_prefix(LINK_PREFIX).await.unwrap().is_empty());
    assert!(
        nl.link_by_name("mntout0").await.unwrap().is_some(),
        "not ours: kept"
    );
    assert!(!nft::list(&host).await.unwrap().has_table());
    let again = expose::cleanup(&host, BRIDGE).await.expect("cleanup again");
    assert_eq!(again, expose::Cleanup::default());
}

/// Scenario: a namespace whose firewall looks like a running Docker engine
/// (iptables-nft `ip filter FORWARD`, policy drop; br_netfilter on) drops
/// frames bridged between two containers until `ensure_bridge_forwarding`.
#[tokio::test]
async fn bridge_forwarding_survives_a_docker_like_drop_policy() {
    let mut names = Namespaces::new("ex");
    let (host, host_name, c1, c1_name, _nl) = host_with_container(&mut names).await;
    let outside = names.add("out");
    let c2 = names.add("c2");
    common::attach_at(&host, &c2, "10.32.0.3/12", true).await;
    assert!(
        ping(&c1, ip("10.32.0.3")).await,
        "bridged before any firewall"
    );

    // br_netfilter's switch is per namespace and on by default: the state
    // Docker leaves the root namespace in.
    assert_eq!(
        datapath::net_sysctl(&host, "bridge/bridge-nf-call-iptables")
            .await
            .expect("br_netfilter sysctl present"),
        "1"
    );
    nft_in(&host_name, &["add table ip filter"]);
    nft_in(
        &host_name,
        &["add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }"],
    );
    assert!(
        !ping(&c1, ip("10.32.0.3")).await,
        "the drop policy eats bridged frames"
    );

    // The per-bridge switch is ORed with the sysctl: turning it off does
    // not help, which is why we insert accept rules instead.
    ip_cmd(&[
        "-n",
        &host_name,
        "link",
        "set",
        BRIDGE,
        "type",
        "bridge",
        "nf_call_iptables",
        "0",
    ]);
    assert!(
        !ping(&c1, ip("10.32.0.3")).await,
        "nf_call_iptables 0 is not enough"
    );

    assert!(
        expose::ensure_bridge_forwarding(&host, BRIDGE)
            .await
            .expect("ensure")
    );
    assert!(
        ping(&c1, ip("10.32.0.3")).await,
        "accepted after ensure_bridge_forwarding"
    );
    assert!(
        !expose::ensure_bridge_forwarding(&host, BRIDGE)
            .await
            .expect("ensure again"),
        "idempotent"
    );
    let docker = ChainRef {
        family: "ip".into(),
        table: "filter".into(),
        name: "FORWARD".into(),
    };
    let rules = nft::list(&host).await.unwrap();
    assert_eq!(ours_in(&rules, &docker), vec!["meshnet"; 2]);
    assert_eq!(
        rules.dropping_forward_chains(),
        vec![docker.clone()],
        "policy untouched"
    );

    // Exposing adds weave's WEAVE-EXPOSE accept there too; hiding removes it.
    let cidr = net("10.32.0.1/12");
    expose::expose(&host, BRIDGE, cidr, true)
        .await
        .expect("expose");
    let rules = nft::list(&host).await.unwrap();
    assert_eq!(ours_in(&rules, &docker).len(), 3);
    assert!(
        ping(&host, ip("10.32.0.2")).await,
        "host -> exposed container"
    );
    // Masquerading out through Docker's drop policy: the request leaves
    // through `iifname meshnet oifname != meshnet`, the un-NATed reply comes
    // back through the exposed subnet's accept.
    outside_network(&host, &outside).await;
    ip_cmd(&[
        "-n",
        &c1_name,
        "route",
        "add",
        "default",
        "via",
        "10.32.0.1",
    ]);
    assert!(
        ping(&c1, ip("192.0.2.2")).await,
        "container -> outside through a drop policy"
    );
    // iptables-nft (what Docker drives) can still read the chain with our
    // rules in it; a native `ct state` match would make it refuse.
    let listed = Command::new("ip")
        .args(["netns", "exec", &host_name, "iptables-nft", "-S", "FORWARD"])
        .output()
        .expect("run iptables-nft (installed with Docker; needed to check compatibility)");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "iptables-nft cannot list the chain: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        text.contains("-A FORWARD -i meshnet -o meshnet -m comment --comment meshnet -j ACCEPT"),
        "{text}"
    );
    expose::hide(&host, BRIDGE, cidr).await.expect("hide");
    let rules = nft::list(&host).await.unwrap();
    assert_eq!(ours_in(&rules, &docker), vec!["meshnet"; 2]);

    // Reset removes our rules from Docker's chain and leaves the chain.
    expose::cleanup(&host, BRIDGE).await.expect("cleanup");
    let rules = nft::list(&host).await.unwrap();
    assert!(ours_in(&rules, &docker).is_empty());
    assert_eq!(rules.dropping_forward_chains(), vec![docker]);
}
