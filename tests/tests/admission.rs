//! Fast datapath admission, tried as an attacker would: a host with no
//! meshnet at all, only a kernel VXLAN device it made by hand (`ip link add
//! vx type vxlan id <VNI> remote <host> dstport 6784`), must not reach a
//! container on a meshnet host, and the host must never send it plaintext
//! VXLAN. Checked with a password (no plaintext VXLAN accepted at all) and
//! without one (only established fastdp peers are admitted), while a real
//! fastdp peer keeps working.
//!
//! Needs root, `ping`, `tcpdump`, `nft`, `bridge` (iproute2) and a built
//! binary. Each scenario owns its lab, which removes everything on failure.

// Shared with the datapath scenarios; this file uses only part of it.
#[allow(dead_code)]
#[path = "datapath/traffic.rs"]
mod traffic;

use std::net::Ipv4Addr;
use std::time::Duration;

use meshnet_tests::{
    Host, TestLab, control_addr, lab_on_one_segment, launch, meshnet_ok, report, require_root,
    status_connections, wait_for,
};
use traffic::*;

/// The VNI of `vethwe-vxlan` ("mn"); scenario (b) reads it from the device
/// and checks it matches, so the attacker always uses the real one.
const MESH_VNI: u32 = 0x6d6e;
/// The attacker's overlay address, in the container's subnet.
const ATTACKER_IP: &str = "10.2.1.99";
/// The container's address.
const VICTIM_IP: &str = "10.2.1.1";
/// Bound on a small mesh converging on fastdp.
const CONVERGE: Duration = Duration::from_secs(60);
/// How many pings the attacker sends (each waits a second for an answer).
const ATTACK_PINGS: &str = "6";

fn attach(lab: &mut TestLab, host: &str, name: &str, addr: &str) -> Container {
    let netns = lab
        .add_container(host, name)
        .unwrap_or_else(|e| panic!("adding container {name}: {e:#}"));
    let out = meshnet_ok(lab.host(host), &["attach", addr, &format!("netns:{netns}")]);
    Container {
        netns,
        ip: out.trim().parse().expect("attach prints the address"),
    }
}

fn exec_ok(host: &Host, argv: &[&str]) -> String {
    let out = host.exec(argv).expect("exec");
    assert!(
        out.status.success(),
        "{} on {}: {}",
        argv.join(" "),
        host.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The hand-made attacker tunnel: a kernel VXLAN device aimed at `victim`
/// with the mesh's VNI and an overlay address; ARP runs through it as on any
/// LAN.
fn attacker_tunnel(atk: &Host, victim: &Host) {
    let vni = MESH_VNI.to_string();
    let remote = victim.addr().to_string();
    let local = atk.addr().to_string();
    exec_ok(
        atk,
        &[
            "ip", "link", "add", "vx", "type", "vxlan", "id", &vni, "remote", &remote, "local",
            &local, "dstport", "6784",
        ],
    );
    exec_ok(
        atk,
        &[
            "ip",
            "addr",
            "add",
            &format!("{ATTACKER_IP}/24"),
            "dev",
            "vx",
        ],
    );
    exec_ok(atk, &["ip", "link", "set", "vx", "up"]);
}

fn attacker_mac(atk: &Host) -> String {
    exec_ok(atk, &["cat", "/sys/class/net/vx/address"])
        .trim()
        .to_owned()
}

/// Counts the IPv4/UDP packets in `pcap` from `src` to `dst` port `port`.
fn udp_between(pcap: &[u8], src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> usize {
    const FILE_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    let mut count = 0;
    let mut at = FILE_HEADER;
    while let Some(h) = pcap.get(at..at + RECORD_HEADER) {
        let caplen = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let Some(f) = pcap.get(at + RECORD_HEADER..at + RECORD_HEADER + caplen) else {
            break;
        };
        at += RECORD_HEADER + caplen;
        if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
            continue;
        }
        let udp = 14 + usize::from(f[14] & 0x0f) * 4;
        if f[26..30] == src.octets()
            && f[30..34] == dst.octets()
            && f.get(udp + 2..udp + 4) == Some(&port.to_be_bytes()[..])
        {
            count += 1;
        }
    }
    count
}

/// The attack and everything it must not achieve: no echo reply, no
/// plaintext VXLAN from the victim host to the attacker on the underlay
/// (while the capture does see the attacker's own VXLAN, so it proves
/// something), the container never hears of the attacker, and the victim's
/// bridge learns nothing about it.
fn assert_attack_fails(
    victim: &Host,
    atk: &Host,
    container: &Container,
    lab_dir: &std::path::Path,
) {
    attacker_tunnel(atk, victim);
    let capture = Capture::start(victim, lab_dir);
    let out = atk
        .exec(&[
            "ping",
            "-n",
            "-c",
            ATTACK_PINGS,
            "-i",
            "0.5",
            "-W",
            "1",
            VICTIM_IP,
        ])
        .expect("attacker ping");
    let pcap = capture.finish();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains(" 0 received"),
        "the attacker's hand-made VXLAN reached the container:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_atk = udp_between(&pcap, atk.addr(), victim.addr(), 6784);
    assert!(
        from_atk > 0,
        "the capture holds no VXLAN from the attacker, so it proves nothing"
    );
    let to_atk = udp_between(&pcap, victim.addr(), atk.addr(), 6784);
    assert_eq!(
        to_atk,
        0,
        "{} sent {to_atk} plaintext VXLAN packets to the attacker",
        victim.name()
    );
    let neigh = ns_exec(&container.netns, &["ip", "neigh", "show", ATTACKER_IP]);
    assert!(
        String::from_utf8_lossy(&neigh.stdout).trim().is_empty(),
        "the container heard the attacker: {}",
        String::from_utf8_lossy(&neigh.stdout)
    );
    let fdb = exec_ok(victim, &["bridge", "fdb", "show"]);
    let mac = attacker_mac(atk);
    assert!(
        !fdb.contains(&mac),
        "the victim's FDB learned the attacker's MAC {mac}:\n{fdb}"
    );
}

fn wait_for_fastdp(host: &Host, n: usize) {
    wait_for(
        &format!("{} to have {n} fastdp connections", host.name()),
        CONVERGE,
        || {
            let lines = status_connections(host);
            let fast = lines
                .iter()
                .filter(|l| l.state == "established" && l.overlay.as_deref() == Some("fastdp"))
                .count();
            (fast == n).then_some(()).ok_or(lines)
        },
    );
}

/// The `FastdpAdmitted` addresses `meshnet report` lists.
fn admitted(host: &Host) -> Vec<String> {
    report(host)["Router"]["FastdpAdmitted"]
        .as_array()
        .unwrap_or_else(|| panic!("report of {} has no Router.FastdpAdmitted", host.name()))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn attacker_vxlan_cannot_reach_a_container_on_a_password_router() {
    require_root();
    let mut lab = lab_on_one_segment("admpass", &["h1", "atk"]);
    let mut cmd = lab.host("h1").command(&["launch"]);
    cmd.env("MESHNET_PASSWORD", "correct horse battery staple");
    meshnet_tests::launch_with(lab.host("h1"), &mut cmd);
    let c1 = attach(&mut lab, "h1", "c1", &format!("{VICTIM_IP}/24"));
    assert_attack_fails(lab.host("h1"), lab.host("atk"), &c1, lab.dir());
    assert!(
        admitted(lab.host("h1")).is_empty(),
        "a password router without trusted subnets admits VXLAN"
    );
}

#[test]
fn attacker_vxlan_cannot_reach_a_container_when_it_is_not_a_peer() {
    require_root();
    let mut lab = lab_on_one_segment("admpeer", &["h1", "h2", "atk"]);
    launch(lab.host("h1"), &["--nickname", "h1"]);
    let h1_addr = control_addr(lab.host("h1"));
    launch(lab.host("h2"), &["--nickname", "h2", &h1_addr]);
    for h in ["h1", "h2"] {
        wait_for_fastdp(lab.host(h), 1);
    }
    let c1 = attach(&mut lab, "h1", "c1", &format!("{VICTIM_IP}/24"));
    let c2 = attach(&mut lab, "h2", "c2", "10.2.1.2/24");
    // The legitimate fastdp peer works before and after the attack.
    assert_pings(&c2, &c1);
    let vx = exec_ok(
        lab.host("h1"),
        &["ip", "-d", "link", "show", "vethwe-vxlan"],
    );
    assert!(
        vx.contains(&format!("vxlan id {MESH_VNI} ")),
        "the attacker must use the mesh's real VNI: {vx}"
    );
    assert_attack_fails(lab.host("h1"), lab.host("atk"), &c1, lab.dir());
    assert_eq!(
        admitted(lab.host("h1")),
        vec![lab.host("h2").addr().to_string()]
    );
    assert_pings(&c2, &c1);
    wait_for_fastdp(lab.host("h1"), 1);
}

#[test]
fn attacker_inside_a_trusted_subnet_is_still_not_a_peer() {
    require_root();
    let mut lab = lab_on_one_segment("admtrust", &["h1", "h2", "atk"]);
    let trust = "--trusted-subnets=192.0.2.0/24";
    for (h, extra) in [("h1", None), ("h2", Some(control_addr(lab.host("h1"))))] {
        let mut args = vec!["launch", "--nickname", h, trust];
        args.extend(extra.as_deref());
        let mut cmd = lab.host(h).command(&args);
        cmd.env("MESHNET_PASSWORD", "correct horse battery staple");
        meshnet_tests::launch_with(lab.host(h), &mut cmd);
    }
    // Both ends trust each other's subnet: plaintext fastdp between them.
    for h in ["h1", "h2"] {
        wait_for_fastdp(lab.host(h), 1);
    }
    let c1 = attach(&mut lab, "h1", "c1", &format!("{VICTIM_IP}/24"));
    let c2 = attach(&mut lab, "h2", "c2", "10.2.1.2/24");
    assert_pings(&c2, &c1);
    assert_attack_fails(lab.host("h1"), lab.host("atk"), &c1, lab.dir());
    assert_eq!(
        admitted(lab.host("h1")),
        vec![lab.host("h2").addr().to_string()]
    );
    assert_pings(&c2, &c1);
}
