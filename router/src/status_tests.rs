//! Golden tests of every `status` text form on hand-set snapshots: each
//! branch of a line (states, overlays, reasons, MTUs, retry times) has an
//! exact expected line, so a change in layout or content fails here.

use std::time::Duration;

use meshnet_mesh::overlay::{NoFastdp, Path};
use meshnet_mesh::{ConnState, LocalConnStatus, PeerConnStatus, PeerName, PeerStatus, PeerUid};

use super::*;
use crate::report::tests::{NAME, snapshot};
use crate::sleeve::SleevePeerStatus;

const B: &str = "8a:bb:bb:bb:bb:bb";
const C: &str = "8a:cc:cc:cc:cc:cc";
const D: &str = "8a:dd:dd:dd:dd:dd";

fn name(s: &str) -> PeerName {
    s.parse().unwrap()
}

fn conn(address: &str, outbound: bool, state: ConnState, peer: Option<&str>) -> LocalConnStatus {
    LocalConnStatus {
        address: address.into(),
        outbound,
        state,
        peer: peer.map(|p| (name(p), format!("nick-{}", &p[15..]))),
        error: None,
        retry_in: None,
        conn: None,
    }
}

fn peer(n: &str, nick: &str, key: Option<&str>, conns: Vec<PeerConnStatus>) -> PeerStatus {
    PeerStatus {
        name: name(n),
        nickname: nick.into(),
        uid: PeerUid(1),
        short_id: meshnet_mesh::ShortId::new(1).unwrap(),
        version: 1,
        key: key.map(str::to_owned),
        connections: conns,
    }
}

fn pconn(n: &str, nick: &str, address: &str, outbound: bool, established: bool) -> PeerConnStatus {
    PeerConnStatus {
        name: name(n),
        nickname: nick.into(),
        address: address.into(),
        outbound,
        established,
    }
}

fn sleeve(healthy: bool, mtu: Option<u16>) -> SleevePeerStatus {
    SleevePeerStatus {
        healthy,
        mtu,
        ..Default::default()
    }
}

/// A router with one of each kind of connection line.
fn busy() -> Snapshot {
    let mut snap = snapshot();
    let mut failed = conn("10.2.2.1:6783", true, ConnState::Failed, None);
    failed.error = Some("connect: connection refused".into());
    failed.retry_in = Some(Duration::from_secs(5));
    let mut given_up = conn("10.2.2.2:6783", true, ConnState::Failed, None);
    given_up.error = Some("peer is ourself".into());
    let mut bare_failure = conn("10.2.2.5:6783", true, ConnState::Failed, None);
    bare_failure.retry_in = Some(Duration::from_secs(61));
    let mut retrying = conn("10.2.2.3:6783", true, ConnState::Retrying, None);
    retrying.error = Some("dial timeout".into());
    snap.mesh.connections = vec![
        conn("192.0.2.2:6783", true, ConnState::Established, Some(B)),
        conn("192.0.2.3:41000", false, ConnState::Established, Some(C)),
        conn("192.0.2.4:6783", true, ConnState::Pending, Some(D)),
        failed,
        given_up,
        bare_failure,
        retrying,
        conn("10.2.2.4:6783", true, ConnState::Connecting, None),
        conn("10.2.2.6:6783", true, ConnState::Waiting, None),
    ];
    snap.paths = [
        (name(B), (Path::Sleeve, Some(NoFastdp::Encrypted))),
        (name(C), (Path::Fastdp, None)),
    ]
    .into();
    snap.sleeve = [
        (name(B), sleeve(false, Some(1400))),
        // A probed MTU for a fastdp peer is not its link MTU.
        (name(C), sleeve(true, Some(1300))),
    ]
    .into();
    snap
}

#[test]
fn connection_lines_are_weaves_columns_for_every_state() {
    let text = connections(&busy());
    let want = "\
-> 192.0.2.2:6783        established encrypted   sleeve 8a:bb:bb:bb:bb:bb(nick-bb) mtu=1400 (fastdp: encryption required; sleeve: no heartbeat yet)
<- 192.0.2.3:41000       established encrypted   fastdp 8a:cc:cc:cc:cc:cc(nick-cc) mtu=1376
-> 192.0.2.4:6783        pending     encrypted   none   8a:dd:dd:dd:dd:dd(nick-dd) mtu=1376
-> 10.2.2.1:6783         failed      connect: connection refused, retry: 1970-01-01T00:00:05Z
-> 10.2.2.2:6783         failed      peer is ourself, not retried
-> 10.2.2.5:6783         failed      failed, retry: 1970-01-01T00:01:01Z
-> 10.2.2.3:6783         retrying    dial timeout
-> 10.2.2.4:6783         connecting
-> 10.2.2.6:6783         waiting
";
    assert_eq!(text, want);
}

#[test]
fn connection_lines_without_encryption_mtu_or_reason() {
    let mut snap = busy();
    snap.encryption = false;
    snap.mtu = None;
    snap.sleeve = [(name(B), sleeve(true, None))].into();
    snap.paths = [(name(B), (Path::Sleeve, Some(NoFastdp::Disabled)))].into();
    let text = connections(&snap);
    let lines: Vec<&str> = text.lines().take(3).collect();
    assert_eq!(
        lines,
        [
            "-> 192.0.2.2:6783        established sleeve 8a:bb:bb:bb:bb:bb(nick-bb) (fastdp: disabled)",
            "<- 192.0.2.3:41000       established none   8a:cc:cc:cc:cc:cc(nick-cc)",
            "-> 192.0.2.4:6783        pending     none   8a:dd:dd:dd:dd:dd(nick-dd)",
        ]
    );
    // A healthy sleeve with no probed MTU shows the overlay MTU.
    snap.mtu = Some(1410);
    let text = connections(&snap);
    assert!(
        text.starts_with(
            "-> 192.0.2.2:6783        established sleeve 8a:bb:bb:bb:bb:bb(nick-bb) mtu=1410 (fastdp: disabled)\n"
        ),
        "{text}"
    );
    assert_eq!(
        connections(&{
            let mut s = snap.clone();
            s.mesh.connections.clear();
            s
        }),
        ""
    );
}

#[test]
fn overlay_and_link_mtu() {
    let snap = busy();
    assert_eq!(
        overlay_of(&snap, Some(name(B))),
        (
            "sleeve".to_string(),
            Some("fastdp: encryption required".to_string())
        )
    );
    assert_eq!(
        overlay_of(&snap, Some(name(C))),
        ("fastdp".to_string(), None)
    );
    assert_eq!(overlay_of(&snap, Some(name(D))), ("none".to_string(), None));
    assert_eq!(overlay_of(&snap, None), ("none".to_string(), None));
    assert_eq!(link_mtu(&snap, name(B), "sleeve"), Some(1400));
    assert_eq!(link_mtu(&snap, name(C), "fastdp"), Some(1376));
    assert_eq!(link_mtu(&snap, name(D), "sleeve"), Some(1376));
    assert_eq!(link_mtu(&snap, name(B), "none"), Some(1376));
}

#[test]
fn peers_lists_each_peer_and_its_connections() {
    let mut snap = snapshot();
    snap.mesh.peers = vec![
        peer(
            NAME,
            "nicknamington",
            Some("SHA256:abc"),
            vec![
                pconn(B, "bee", "192.0.2.2:6783", true, true),
                pconn(C, "", "192.0.2.3:41000", false, false),
            ],
        ),
        peer(B, "bee", None, vec![]),
    ];
    let want = "\
8a:3e:3e:3e:3e:3e(nicknamington)
   -> 192.0.2.2:6783        8a:bb:bb:bb:bb:bb(bee)                established
   <- 192.0.2.3:41000       8a:cc:cc:cc:cc:cc()                   pending
8a:bb:bb:bb:bb:bb(bee)
";
    assert_eq!(peers(&snap, false), want);
    let verbose = "\
8a:3e:3e:3e:3e:3e(nicknamington) key SHA256:abc
   -> 192.0.2.2:6783        8a:bb:bb:bb:bb:bb(bee)                established
   <- 192.0.2.3:41000       8a:cc:cc:cc:cc:cc()                   pending
8a:bb:bb:bb:bb:bb(bee) key unknown
";
    assert_eq!(peers(&snap, true), verbose);
}

#[test]
fn targets_one_per_line_in_order() {
    let mut snap = snapshot();
    snap.mesh.targets = vec!["192.0.2.9".into(), "host.example:7000".into()];
    assert_eq!(targets(&snap), "192.0.2.9\nhost.example:7000\n");
    snap.mesh.targets.clear();
    assert_eq!(targets(&snap), "");
}

#[test]
fn dns_lists_live_entries_without_the_domain() {
    let mut snap = snapshot();
    let dns = snap.dns.as_mut().unwrap();
    let mut dead = dns.entries[0].clone();
    dead.name = "gone.weave.local.".into();
    dead.tombstone = true;
    let mut other = dns.entries[0].clone();
    other.name = "elsewhere.example.".into();
    other.addr = "10.2.0.2".parse().unwrap();
    other.container = "abc".into();
    other.origin = name(B);
    dns.entries.push(dead);
    dns.entries.push(other);
    assert_eq!(
        super::dns(&snap),
        "test         10.2.0.1        3f2c9a1b7e55 8a:3e:3e:3e:3e:3e\n\
         elsewhere.example. 10.2.0.2                 abc 8a:bb:bb:bb:bb:bb\n"
    );
    let json = dns_entries_json(snap.dns.as_ref().unwrap());
    assert_eq!(json.as_array().unwrap().len(), 3, "tombstones included");
    assert_eq!(
        json[1],
        json!({
            "ContainerID": "3f2c9a1b7e55aa",
            "Origin": name(NAME).as_u64(),
            "Addr": "10.2.0.1",
            "Hostname": "gone.weave.local.",
            "Version": 1,
            "Tombstone": 1,
        })
    );
    assert_eq!(json[0]["Tombstone"], 0);
    snap.dns = None;
    assert_eq!(super::dns(&snap), "");
}

#[test]
fn ipam_lines_state_or_disabled() {
    let mut snap = snapshot();
    let lines = ipam(&snap);
    assert_eq!(
        lines,
        format!("{}\n", snap.ipam.as_ref().unwrap().lines.join("\n"))
    );
    assert!(
        lines.starts_with(NAME) && lines.contains("65536 IPs"),
        "one line for the only owner: {lines:?}"
    );
    let i = snap.ipam.as_mut().unwrap();
    i.lines.clear();
    i.status.status = "awaiting consensus (quorum: 2, known: 1)".into();
    assert_eq!(ipam(&snap), "awaiting consensus (quorum: 2, known: 1)\n");
    snap.ipam = None;
    assert_eq!(
        ipam(&snap),
        "IP address allocation is disabled (launch with --ipalloc-range CIDR)\n"
    );
}

#[test]
fn identity_is_an_authorized_keys_line() {
    assert_eq!(
        identity_line(&snapshot()),
        format!(
            "meshnet-x25519 {} 8a:3e:3e:3e:3e:3e(nicknamington)\n",
            meshnet_mesh::PublicKey([7; 32]).to_base64()
        )
    );
}

/// The `label: value` of `summary`'s line for `label`.
fn field(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{label:>15}: ")))
        .map(str::to_owned)
}

#[test]
fn summary_counts_connections_by_state_and_peers_by_link() {
    let mut snap = busy();
    snap.mesh.peers = vec![
        peer(
            NAME,
            "me",
            None,
            vec![
                pconn(B, "", "192.0.2.2:6783", true, true),
                pconn(C, "", "192.0.2.3:41000", false, true),
                pconn(D, "", "192.0.2.4:6783", true, false),
            ],
        ),
        peer(
            B,
            "",
            None,
            vec![pconn(NAME, "", "192.0.2.1:1", false, true)],
        ),
        peer(C, "", None, vec![]),
    ];
    let text = summary(&snap);
    assert_eq!(
        field(&text, "Connections").unwrap(),
        "9 (2 established, 1 pending, 1 retrying, 3 failed, 1 connecting, 1 waiting)"
    );
    assert_eq!(
        field(&text, "Peers").unwrap(),
        "3 (with 3 established, 1 pending connections)"
    );
    snap.mesh.peers[0].connections.pop();
    assert_eq!(
        field(&summary(&snap), "Peers").unwrap(),
        "3 (with 3 established connections)"
    );
    snap.mesh
        .peers
        .iter_mut()
        .for_each(|p| p.connections.clear());
    snap.mesh.connections.clear();
    let text = summary(&snap);
    assert_eq!(field(&text, "Peers").unwrap(), "3");
    assert_eq!(field(&text, "Connections").unwrap(), "0");
}

#[test]
fn summary_of_a_bare_router() {
    let mut snap = snapshot();
    snap.encryption = false;
    snap.mesh.discovery = false;
    snap.trusted_subnets.clear();
    snap.mesh.targets.clear();
    snap.trusted_subnets = vec![];
    snap.ipam = None;
    snap.dns = None;
    snap.services = crate::report::Services::default();
    let text = summary(&snap);
    let want = format!(
        "
        Version: meshnet {v} (version check update disabled)

        Service: router
       Protocol: {protocol}
           Name: 8a:3e:3e:3e:3e:3e(nicknamington)
     Encryption: disabled
  PeerDiscovery: disabled
        Targets: 0
    Connections: 1 (1 {state})
          Peers: 1
 TrustedSubnets: none

",
        v = env!("CARGO_PKG_VERSION"),
        protocol = protocol_range(meshnet_mesh::PROTOCOL_MIN, meshnet_mesh::PROTOCOL_MAX),
        state = snap.mesh.connections[0].state,
    );
    assert_eq!(text, want);
    assert_eq!(protocol_range(2, 2), "meshnet 2");
    assert_eq!(protocol_range(1, 3), "meshnet 1..3");
}

#[test]
fn summary_dns_block_when_it_could_not_listen_and_has_no_upstream() {
    let mut snap = snapshot();
    snap.trusted_subnets = vec!["10.0.0.0/8".into(), "192.0.2.0/24".into()];
    let dns = snap.dns.as_mut().unwrap();
    dns.address = Err("bind 172.17.0.1:53: address in use".into());
    dns.upstream.clear();
    let mut dead = dns.entries[0].clone();
    dead.tombstone = true;
    dns.entries.push(dead);
    let text = summary(&snap);
    assert_eq!(
        field(&text, "TrustedSubnets").unwrap(),
        "10.0.0.0/8, 192.0.2.0/24"
    );
    let dns_block: Vec<&str> = text
        .split("\n\n")
        .find(|b| b.contains("Service: dns"))
        .unwrap()
        .lines()
        .collect();
    assert_eq!(
        dns_block,
        [
            "        Service: dns",
            "         Domain: weave.local.",
            "        Address: bind 172.17.0.1:53: address in use",
            "       Upstream: none",
            "            TTL: 1",
            "        Entries: 1",
        ]
    );
    snap.services.proxy = Some(vec!["unix:///a.sock".into(), "tcp://127.0.0.1:2375".into()]);
    assert_eq!(
        field(&summary(&snap), "Address").as_deref(),
        Some("bind 172.17.0.1:53: address in use"),
        "the first Address is DNS's"
    );
    assert!(
        summary(&snap).contains(
            "        Service: proxy\n        Address: unix:///a.sock, tcp://127.0.0.1:2375\n"
        ),
        "{}",
        summary(&snap)
    );
}
