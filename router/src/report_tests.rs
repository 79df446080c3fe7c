//! Golden tests of the report builder and the text status, on a snapshot of
//! a real mesh core and a real IPAM ring (the code `meshnet report` runs).

use std::time::{Instant, UNIX_EPOCH};

use meshnet_mesh::{Config, Mesh, PeerName, PeerUid, ShortId};
use serde_json::{Value, json};

use super::*;
use crate::driver::Snapshot;
use crate::ipam::IpamSnapshot;

pub(crate) const NAME: &str = "8a:3e:3e:3e:3e:3e";

/// The snapshot of a router like the one weave's test 700 launches:
/// `--ipalloc-range 10.2.0.0/16 --name 8a:3e:3e:3e:3e:3e --nickname
/// nicknamington`, then `connect 10.2.2.1` (unreachable), one container
/// allocated, a password and the proxy and plugin on.
pub(crate) fn snapshot() -> Snapshot {
    let now = Instant::now();
    let name: PeerName = NAME.parse().unwrap();
    let mut mesh = Mesh::new(
        Config {
            name,
            nickname: "nicknamington".into(),
            uid: PeerUid(1234567890123),
            short_id: ShortId::new(7).unwrap(),
            port: 6783,
            conn_limit: 200,
            discovery: true,
            seed: 1,
            key: meshnet_mesh::PublicKey([7; 32]),
        },
        now,
    );
    mesh.connect(&["10.2.2.1".into()], false, now).unwrap();
    let ipam_name: meshnet_ipam::PeerName = NAME.parse().unwrap();
    let range: meshnet_ipam::Cidr = "10.2.0.0/16".parse().unwrap();
    let mut ipam = meshnet_ipam::Ipam::new(
        meshnet_ipam::Config::new(
            ipam_name,
            range,
            meshnet_ipam::Init::Seed([ipam_name].into()),
        ),
        1,
    );
    ipam.allocate(&meshnet_ipam::Ident::new("c1"), None, true, now)
        .expect("a seeded ring allocates at once");
    Snapshot {
        mesh: mesh.status(now),
        public_key: meshnet_mesh::PublicKey([7; 32]),
        authorized_keys: Some(2),
        encryption: true,
        trusted_subnets: vec!["10.0.0.0/8".into()],
        trusted_conns: Default::default(),
        ipam: Some(IpamSnapshot {
            status: ipam.status(),
            lines: ipam.status_lines(),
            metrics: ipam.metrics(),
        }),
        dns: Some(crate::dns::DnsSnapshot {
            domain: "weave.local.".into(),
            address: Ok("172.17.0.1:53".parse().unwrap()),
            upstream: vec!["192.0.2.53:53".parse().unwrap()],
            ttl: 1,
            me: name,
            entries: vec![meshnet_mesh::dns::EntryView {
                name: "test.weave.local.".into(),
                addr: "10.2.0.1".parse().unwrap(),
                container: "3f2c9a1b7e55aa".into(),
                origin: name,
                version: 1,
                tombstone: false,
            }],
            table: Default::default(),
            queries: 0,
            forwarded: 0,
            upstream_failures: 0,
            rcodes: Vec::new(),
        }),
        paths: Default::default(),
        mtu: Some(1376),
        fastdp_admitted: vec!["192.0.2.2".parse().unwrap()],
        fastdp_fallbacks: Default::default(),
        sleeve_rekeys: (0, 0),
        sleeve: Default::default(),
        taken_at: UNIX_EPOCH,
        services: Services {
            proxy: Some(vec!["unix:///run/meshnet/meshnet.sock".into()]),
            plugin: Some("meshnet".into()),
        },
        limit_disconnects: Default::default(),
        limit_drops: Default::default(),
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort();
    v
}

#[test]
fn json_has_weaves_fields_and_values() {
    let text = to_json(&build(&snapshot()));
    // Top-level keys in weave's order.
    let order = [
        "\"Ready\"",
        "\"Version\"",
        "\"VersionCheck\"",
        "\"Router\"",
        "\"IPAM\"",
        "\"DNS\"",
        "\"Proxy\"",
        "\"Plugin\"",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|k| {
            text.find(k)
                .unwrap_or_else(|| panic!("{k} missing in {text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "order {at:?} in {text}");

    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        keys(&v),
        sorted(vec![
            "Ready",
            "Version",
            "VersionCheck",
            "Router",
            "IPAM",
            "DNS",
            "Proxy",
            "Plugin"
        ])
    );
    assert_eq!(v["Ready"], true);
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["VersionCheck"],
        json!({"Enabled": false, "Success": false, "NewVersion": "",
               "NextCheckAt": "0001-01-01T00:00:00Z"})
    );
    let r = &v["Router"];
    assert_eq!(
        keys(r),
        sorted(vec![
            "Protocol",
            "ProtocolMinVersion",
            "ProtocolMaxVersion",
            "Encryption",
            "PeerDiscovery",
            "Name",
            "NickName",
            "UID",
            "KeyFingerprint",
            "PublicKey",
            "AuthorizedKeys",
            "Port",
            "ConnLimit",
            "Peers",
            "UnicastRoutes",
            "BroadcastRoutes",
            "Connections",
            "TerminationCount",
            "Targets",
            "TrustedSubnets",
            "FastdpAdmitted",
        ])
    );
    assert_eq!(r["FastdpAdmitted"], json!(["192.0.2.2"]));
    assert_eq!(r["Protocol"], "meshnet");
    assert_eq!(r["Name"], NAME);
    assert_eq!(r["NickName"], "nicknamington");
    assert_eq!(r["UID"], 1234567890123u64, "a number, as weave's");
    assert_eq!(r["Port"], 6783);
    assert_eq!(
        r["KeyFingerprint"],
        meshnet_mesh::PublicKey([7; 32]).fingerprint()
    );
    assert_eq!(r["AuthorizedKeys"], 2);
    assert_eq!(r["Encryption"], true);
    assert_eq!(r["PeerDiscovery"], true);
    assert_eq!(r["Targets"], json!(["10.2.2.1"]));
    assert_eq!(r["TrustedSubnets"], json!(["10.0.0.0/8"]));
    let peers = r["Peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        keys(&peers[0]),
        sorted(vec![
            "Name",
            "NickName",
            "UID",
            "ShortID",
            "Version",
            "KeyFingerprint",
            "Connections"
        ])
    );
    assert_eq!(peers[0]["Name"], NAME);
    assert_eq!(peers[0]["UID"], 1234567890123u64);
    assert_eq!(peers[0]["ShortID"], 7);
    let conns = r["Connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "the target: {conns:?}");
    assert_eq!(
        keys(&conns[0]),
        sorted(vec![
            "Address", "Outbound", "State", "Info", "Attrs", "Peer"
        ])
    );
    assert_eq!(conns[0]["Address"], "10.2.2.1:6783");
    assert_eq!(conns[0]["Outbound"], true);

    let ipam = &v["IPAM"];
    for k in [
        "Paxos",
        "Range",
        "RangeNumIPs",
        "ActiveIPs",
        "DefaultSubnet",
        "Entries",
        "PendingClaims",
        "PendingAllocates",
    ] {
        assert!(ipam.get(k).is_some(), "IPAM.{k} missing: {ipam}");
    }
    assert_eq!(ipam["Range"], "10.2.0.0/16");
    assert_eq!(ipam["DefaultSubnet"], "10.2.0.0/16");
    assert_eq!(ipam["RangeNumIPs"], 65536);
    assert_eq!(ipam["ActiveIPs"], 1);
    let entry = &ipam["Entries"][0];
    for k in [
        "Token",
        "Size",
        "Peer",
        "Nickname",
        "IsKnownPeer",
        "Version",
    ] {
        assert!(
            entry.get(k).is_some(),
            "IPAM.Entries[0].{k} missing: {entry}"
        );
    }
    assert_eq!(entry["Peer"], NAME);
    assert_eq!(
        v["Proxy"],
        json!({"Addresses": ["unix:///run/meshnet/meshnet.sock"]})
    );
    assert_eq!(v["Plugin"], json!({"DriverName": "meshnet"}));
    assert_eq!(
        v["DNS"],
        json!({
            "Domain": "weave.local.",
            "Upstream": ["192.0.2.53"],
            "Address": "172.17.0.1:53",
            "TTL": 1,
            "Entries": [{
                "Hostname": "test.weave.local.",
                "Origin": NAME,
                "ContainerID": "3f2c9a1b7e55aa",
                "Address": "10.2.0.1",
                "Version": 1,
                "Tombstone": 0,
            }],
        })
    );
}

#[test]
fn services_that_are_off_are_absent() {
    let mut snap = snapshot();
    snap.ipam = None;
    snap.dns = None;
    snap.services = Services::default();
    let v: Value = serde_json::from_str(&to_json(&build(&snap))).unwrap();
    assert_eq!(
        keys(&v),
        sorted(vec!["Ready", "Version", "VersionCheck", "Router"])
    );
    let err = render(&build(&snap), "{{.IPAM.DefaultSubnet}}")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no field IPAM") && err.contains("Router"),
        "a missing service names what there is: {err}"
    );
}

fn t(template: &str) -> String {
    render(&build(&snapshot()), template).unwrap_or_else(|e| panic!("template {template:?}: {e}"))
}

#[test]
fn templates_see_weaves_field_names() {
    // The templates of weave's docs and test suite (700, 100, 175, ...).
    assert_eq!(
        t("{{.Router.Name}}({{.Router.NickName}})"),
        "8a:3e:3e:3e:3e:3e(nicknamington)"
    );
    assert_eq!(t("{{.Router.Name}}"), NAME);
    assert_eq!(t("{{len .Router.Peers}}"), "1");
    assert_eq!(t("{{.IPAM.DefaultSubnet}}"), "10.2.0.0/16");
    assert_eq!(t("{{.IPAM.Range}}"), "10.2.0.0/16");
    assert_eq!(t("{{len .IPAM.Entries}}"), "1");
    assert_eq!(t("{{.VersionCheck.Enabled}}"), "false");
    assert_eq!(t("{{.VersionCheck.Success}}"), "false");
    assert_eq!(t("{{.VersionCheck.NewVersion}}"), "");
    assert_eq!(t("{{.Version}}"), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        t("{{range .Router.Targets}}{{.}}{{\"\\n\"}}{{end}}"),
        "10.2.2.1\n"
    );
    assert_eq!(t("{{len .Router.Connections}}"), "1");
    assert_eq!(
        t("{{range .Router.Connections}}{{.Address}} {{.State}}{{end}}"),
        format!("10.2.2.1:6783 {}", snapshot().mesh.connections[0].state)
    );
    assert_eq!(
        t("{{range .Router.Peers}}{{.NickName}} {{.ShortID}}{{end}}"),
        "nicknamington 7"
    );
    assert_eq!(t("{{.Router.UID}}"), "1234567890123");
    assert_eq!(t("{{.Router.Encryption}}"), "true");
    assert_eq!(
        t("{{index .Proxy.Addresses 0}}"),
        "unix:///run/meshnet/meshnet.sock"
    );
    assert_eq!(t("{{.Plugin.DriverName}}"), "meshnet");
    assert_eq!(t("{{if .IPAM}}ipam on{{end}}"), "ipam on");
    assert_eq!(t("{{.DNS.Domain}}"), "weave.local.");
    assert_eq!(t("{{len .DNS.Entries}}"), "1");
    assert_eq!(
        t("{{range .DNS.Entries}}{{.Hostname}} {{.Address}} {{.ContainerID}}{{end}}"),
        "test.weave.local. 10.2.0.1 3f2c9a1b7e55aa"
    );
    assert_eq!(t("plain text"), "plain text");
}

#[test]
fn the_json_function_marshals_like_weaves() {
    assert_eq!(t("{{json .Router.Targets}}"), r#"["10.2.2.1"]"#);
    assert_eq!(t("{{json .Router.Name}}"), format!("\"{NAME}\""));
    assert_eq!(
        t("{{json .VersionCheck}}"),
        r#"{"Enabled":false,"NewVersion":"","NextCheckAt":"0001-01-01T00:00:00Z","Success":false}"#
    );
    // The whole IPAM object round-trips to what `report` prints for it.
    let ipam: Value = serde_json::from_str(&t("{{json .IPAM}}")).unwrap();
    let report: Value = serde_json::from_str(&to_json(&build(&snapshot()))).unwrap();
    assert_eq!(ipam, report["IPAM"]);
}

#[test]
fn bad_templates_say_what_and_where() {
    let report = build(&snapshot());
    for bad in [
        "line one\n{{if .Router}}two{{end}\nthree",
        "line one\n{{.Router.Name)}}\nthree",
        "line one\n{{range}}\nthree",
    ] {
        let err = render(&report, bad).unwrap_err();
        assert!(matches!(err, TemplateError::Parse(_)), "{bad:?}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("line 2: "),
            "{bad:?}: the position (line 2): {msg}"
        );
    }
    let msg = render(&report, "{{.Router.Name").unwrap_err().to_string();
    assert!(msg.contains("line 1: "), "{msg}");
    let long = "x".repeat(MAX_TEMPLATE_LEN + 1);
    let msg = render(&report, &long).unwrap_err().to_string();
    assert!(msg.contains("at most"), "{msg}");
    assert_eq!(render(&report, &long[1..]).unwrap().len(), MAX_TEMPLATE_LEN);

    let err = render(&report, "{{.Router.Nmae}}").unwrap_err();
    assert!(matches!(err, TemplateError::Exec(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("Nmae") && msg.contains("NickName"), "{msg}");
    assert!(msg.len() < 600, "short, not the whole object: {msg}");

    let err = render(&report, "{{nosuchfunc .Router}}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nosuchfunc"), "{err}");
}

#[test]
fn status_summary_is_weaves_layout() {
    let snap = snapshot();
    let text = crate::status::summary(&snap);
    let ipam_status = snap.ipam.as_ref().unwrap().status.status.clone();
    let conns = crate::status::connections(&snap);
    let state = snap.mesh.connections[0].state;
    let expected = format!(
        "
        Version: meshnet {v} (version check update disabled)

        Service: router
       Protocol: meshnet {protocol}
           Name: 8a:3e:3e:3e:3e:3e(nicknamington)
     Encryption: enabled
  PeerDiscovery: enabled
        Targets: 1
    Connections: 1 (1 {state})
          Peers: 1
 TrustedSubnets: 10.0.0.0/8

        Service: ipam
         Status: {ipam_status}
          Range: 10.2.0.0/16
  DefaultSubnet: 10.2.0.0/16

        Service: dns
         Domain: weave.local.
        Address: 172.17.0.1:53
       Upstream: 192.0.2.53
            TTL: 1
        Entries: 1

        Service: proxy
        Address: unix:///run/meshnet/meshnet.sock

        Service: plugin (legacy)
     DriverName: meshnet

",
        v = env!("CARGO_PKG_VERSION"),
        protocol = match (meshnet_mesh::PROTOCOL_MIN, meshnet_mesh::PROTOCOL_MAX) {
            (min, max) if min == max => max.to_string(),
            (min, max) => format!("{min}..{max}"),
        },
    );
    assert_eq!(text, expected, "connections: {conns}");
    assert_eq!(ipam_status, "ready");
    // weave's test 700: each status line equals the report template.
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{label:>15}: ")))
            .unwrap_or_else(|| panic!("no {label} in {text}"))
            .to_string()
    };
    assert_eq!(field("Name"), t("{{.Router.Name}}({{.Router.NickName}})"));
    assert_eq!(field("Peers"), t("{{len .Router.Peers}}"));
    assert_eq!(field("DefaultSubnet"), t("{{.IPAM.DefaultSubnet}}"));
    assert_eq!(field("Targets"), t("{{len .Router.Targets}}"));
    assert_eq!(field("Domain"), t("{{.DNS.Domain}}"));
}

#[test]
fn status_targets_and_peers() {
    let snap = snapshot();
    assert_eq!(crate::status::targets(&snap), "10.2.2.1\n");
    assert_eq!(
        crate::status::peers(&snap, false),
        "8a:3e:3e:3e:3e:3e(nicknamington)\n"
    );
    let conns = crate::status::connections(&snap);
    assert!(
        conns.starts_with("-> 10.2.2.1:6783 "),
        "weave's `status connections` columns: {conns:?}"
    );
    assert_eq!(
        conns.split_whitespace().nth(1),
        Some("10.2.2.1:6783"),
        "{conns}"
    );
}

/// weave 115: with a password, a connection whose ends trust each other is
/// `unencrypted` in `status connections`, in the report's attributes and in
/// `weave_connections`; one only one end trusts stays `encrypted`.
#[test]
fn trusted_connections_are_unencrypted_everywhere() {
    use meshnet_mesh::{ConnId, ConnState, LocalConnStatus};
    let mut snap = snapshot();
    let peer: PeerName = "e2:7e:49:7e:0f:1b".parse().unwrap();
    snap.mesh.connections.clear();
    for (id, addr) in [(1, "192.0.2.2:6783"), (2, "192.0.2.3:6783")] {
        snap.mesh.connections.push(LocalConnStatus {
            address: addr.into(),
            outbound: true,
            state: ConnState::Established,
            peer: Some((peer, "server1".into())),
            error: None,
            retry_in: None,
            conn: Some(ConnId(id)),
        });
    }
    snap.trusted_conns.insert(ConnId(2));
    let text = crate::status::connections(&snap);
    let column = |addr: &str| {
        let line = text.lines().find(|l| l.contains(addr)).unwrap();
        line.split_whitespace().nth(3).unwrap().to_string()
    };
    assert_eq!(column("192.0.2.2:6783"), "encrypted", "{text}");
    assert_eq!(column("192.0.2.3:6783"), "unencrypted", "{text}");
    let report = build(&snap);
    let encrypted: Vec<bool> = report
        .router
        .connections
        .iter()
        .map(|c| c.attrs.get("encrypted") == Some(&json!(true)))
        .collect();
    assert_eq!(encrypted, [true, false]);
    let metrics = crate::metrics::render(&snap);
    let count = |enc: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("weave_connections{") && l.contains("state=\"established\""))
            .filter(|l| l.contains(&format!("encryption=\"{enc}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(count("yes"), ["1"], "{metrics}");
    assert_eq!(count(""), ["1"], "{metrics}");
    // Without a password there is no encryption column at all.
    snap.encryption = false;
    let plain = crate::status::connections(&snap);
    assert!(!plain.contains("encrypted"), "{plain}");
}
