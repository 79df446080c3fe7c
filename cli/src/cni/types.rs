//! The CNI data model (spec 1.1.0, §1 and §5): the plugin configuration a
//! runtime feeds on stdin, the ADD result, the error and VERSION objects.
//!
//! Every object keeps the keys it does not know (`other`), because a plugin
//! in a chain must hand on what it was given, and a `prevResult` written by
//! another plugin may carry fields of a later spec.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The spec versions this plugin speaks, oldest first. 0.1.0 and 0.2.0 had
/// a different result shape that no runtime of this decade sends.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version: what VERSION answers with when asked nothing.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Whether results of this version carry `ips[].version` (before 1.0.0).
pub fn has_ip_version_field(cni_version: &str) -> bool {
    cni_version.starts_with("0.")
}

/// A plugin configuration object as a runtime passes it (spec §3, "Deriving
/// request configuration"), with meshnet's own keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of this configuration.
    pub cni_version: String,
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// The plugin's executable name.
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// IPAM settings; absent or without `type`: the router's own IPAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    /// DNS settings, passed through to the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// The result of the previous plugin in the chain (or the previous ADD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<CniResult>,
    /// Capability arguments injected by the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Value>,
    /// GC only: the attachments still in use.
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<AttachmentRef>>,
    /// Bridge the pods join (weave: `bridge`, default `weave`); meshnet has
    /// one bridge, so any other value is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// MTU of the pod interface; default: the bridge's (the router's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Hairpin mode on the pod's bridge port (default true, as weave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hairpin_mode: Option<bool>,
    /// Refused when true (the bridge plugin's gateway mode; weave refuses it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_gateway: Option<bool>,
    /// Refused when true: masquerading is the router's (`expose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    /// The router's API address (overrides the environment's).
    #[serde(
        rename = "MESHNET_HTTP_ADDR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_addr: Option<String>,
    /// The router's run directory (overrides the environment's).
    #[serde(
        rename = "MESHNET_RUN_DIR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub run_dir: Option<PathBuf>,
    /// Where the plugin records attachments for GC (overrides the environment's).
    #[serde(
        rename = "MESHNET_DATA_DIR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub data_dir: Option<PathBuf>,
    /// Everything else, kept as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The `ipam` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamConf {
    /// The IPAM plugin; empty, `meshnet-ipam` or `weave-ipam`: the router's IPAM.
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// Allocate in this subnet instead of the router's default subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Gateway to report (and route via) instead of the bridge's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Routes to install instead of the default route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Everything else, kept as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRef {
    /// `CNI_CONTAINERID` of the ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of the ADD.
    pub ifname: String,
}

/// The ADD success result (spec §5), also what IPAM plugins return (without
/// `interfaces`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Spec version; absent inside `prevResult` in the spec's examples.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    /// Interfaces created, host ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Everything else, kept as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its MTU (1.0.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// A socket for this interface (vhost-user and the like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// A PCI device identifier.
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    /// Everything else, kept as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// `"4"` or `"6"`: required before 1.0.0, gone since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length.
    pub address: IpNet,
    /// Gateway of its subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Everything else, kept as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One route of a result (or of `ipam.routes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent: the address's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Path MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// MSS to advertise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Route priority (lower wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (0 global, 253 link, 254 host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
    /// Everything else, kept as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// DNS settings (in configuration and result alike).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The VERSION result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    /// The version asked with.
    pub cni_version: String,
    /// [`SUPPORTED_VERSIONS`].
    pub supported_versions: Vec<String>,
}

/// The error result (spec §5 "Error").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResult {
    /// The version in use.
    pub cni_version: String,
    /// A well-known code (below 100) or one of ours.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl CniResult {
    /// Re-encodes for `cni_version`: sets it, and adds or drops the
    /// `ips[].version` field that only results before 1.0.0 carry.
    pub fn for_version(mut self, cni_version: &str) -> CniResult {
        self.cni_version = cni_version.to_owned();
        let old = has_ip_version_field(cni_version);
        for ip in &mut self.ips {
            ip.version = old.then(|| {
                if ip.address.addr().is_ipv4() {
                    "4".into()
                } else {
                    "6".into()
                }
            });
        }
        if old {
            for i in &mut self.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's own documents (SPEC.md 1.1.0, §1 and the appendix), kept
    /// byte-for-byte in `cli/src/cni/golden/`.
    fn golden(name: &str) -> Value {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cni/golden/");
        let text = std::fs::read_to_string(format!("{dir}{name}"))
            .unwrap_or_else(|e| panic!("reading golden file {name}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
    }

    fn round_trip<T: serde::de::DeserializeOwned + Serialize>(name: &str) -> T {
        let want = golden(name);
        let typed: T = serde_json::from_value(want.clone())
            .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(back, want, "{name} changed in a round trip");
        typed
    }

    #[test]
    fn spec_results_round_trip() {
        let r: CniResult = round_trip("add-result-bridge.json");
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/16");
        assert_eq!(
            r.interfaces[2].sandbox.as_deref(),
            Some("/var/run/netns/blue")
        );
        let ipam: CniResult = round_trip("add-result-host-local.json");
        assert!(ipam.interfaces.is_empty());
        assert_eq!(ipam.ips[0].interface, None);
        assert_eq!(ipam.dns.unwrap().nameservers, ["10.1.0.1"]);
    }

    #[test]
    fn spec_requests_round_trip() {
        let add: NetConf = round_trip("add-request-bridge.json");
        assert_eq!(add.ipam.unwrap().plugin_type, "host-local");
        assert!(!add.other.contains_key("bridge"), "bridge is a typed key");
        assert_eq!(add.bridge.as_deref(), Some("cni0"));
        assert!(add.other.contains_key("keyA"), "unknown keys are kept");
        let portmap: NetConf = round_trip("add-request-portmap.json");
        let prev = portmap.prev_result.unwrap();
        assert_eq!(prev.interfaces[2].mac.as_deref(), Some("00:11:22:33:44:66"));
        assert!(portmap.runtime_config.unwrap()["portMappings"].is_array());
        let check: NetConf = round_trip("check-request-bridge.json");
        assert!(check.prev_result.is_some());
        let list: Value = golden("network-config-list.json");
        assert_eq!(list["cniVersions"][3], "1.1.0");
        for plugin in list["plugins"].as_array().unwrap() {
            let mut p = plugin.clone();
            p["cniVersion"] = "1.1.0".into();
            p["name"] = "dbnet".into();
            let typed: NetConf = serde_json::from_value(p.clone()).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), p);
        }
    }

    #[test]
    fn spec_version_and_error_round_trip() {
        let v: VersionResult = round_trip("version-result.json");
        assert_eq!(
            v.supported_versions.last().map(String::as_str),
            Some("1.1.0")
        );
        let e: ErrorResult = round_trip("error-result.json");
        assert_eq!(e.code, 7);
    }

    #[test]
    fn gc_attachments_decode() {
        let gc: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.1.0","name":"n","type":"meshnet",
               "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            gc.valid_attachments.unwrap(),
            [AttachmentRef {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn old_versions_carry_ip_version() {
        let r: CniResult = serde_json::from_value(golden("add-result-bridge.json")).unwrap();
        let old = serde_json::to_value(r.clone().for_version("0.3.1")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.3.1");
        let new = serde_json::to_value(r.for_version("1.1.0")).unwrap();
        assert!(new["ips"][0].get("version").is_none());
    }
}
