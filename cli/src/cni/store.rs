//! The attachments this host's plugin made, one JSON file each under
//! `<data dir>/cni/<network>/<container id>.<ifname>.json` (the spec's key:
//! network name, `CNI_CONTAINERID`, `CNI_IFNAME`). ADD writes one, DEL
//! removes it, GC removes the addresses and interfaces of those the runtime
//! no longer lists. Kept in the data dir, next to IPAM's own state, so
//! allocations made before a reboot can still be collected after it.

use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::types::NetConf;
use crate::args::EnvArgs;

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS` of the ADD (empty for the IPAM plugin).
    pub netns: String,
    /// Inode of that namespace, so GC never touches a namespace that
    /// reuses the path.
    pub netns_inode: u64,
    /// Addresses IPAM gave (empty when another IPAM plugin did).
    pub ips: Vec<Ipv4Net>,
    /// Whether `ipam.type` named another plugin.
    pub delegated: bool,
}

impl Record {
    /// What the `meshnet-ipam` plugin records.
    pub fn ipam(conf: &NetConf, container_id: &str, ifname: &str, ips: Vec<Ipv4Net>) -> Record {
        Record {
            network: conf.name.clone(),
            container_id: container_id.into(),
            ifname: ifname.into(),
            netns: String::new(),
            netns_inode: 0,
            ips,
            delegated: false,
        }
    }
}

/// Whether a network name can be a directory name (spec §1 rules).
pub fn valid_network_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

fn dir(env: &EnvArgs, network: &str) -> PathBuf {
    env.data_dir.join("cni").join(network)
}

fn file(env: &EnvArgs, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir(env, network).join(format!("{container_id}.{ifname}.json"))
}

/// Writes the record (atomically); a failure is reported on stderr and
/// only costs GC its knowledge of this attachment.
pub fn record(env: &EnvArgs, r: &Record) {
    if !valid_network_name(&r.network) {
        return;
    }
    let path = file(env, &r.network, &r.container_id, &r.ifname);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir(env, &r.network))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        eprintln!(
            "meshnet CNI: cannot record the attachment in {} ({e}); GC will not know about it",
            path.display()
        );
    }
}

/// Removes the record, if any.
pub fn forget(env: &EnvArgs, network: &str, container_id: &str, ifname: &str) {
    if valid_network_name(network) {
        let _ = std::fs::remove_file(file(env, network, container_id, ifname));
    }
}

/// Every record of `network`; unreadable files are skipped.
pub fn list(env: &EnvArgs, network: &str) -> Vec<Record> {
    if !valid_network_name(network) {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir(env, network)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_per_network() {
        let tmp = tempfile::tempdir().unwrap();
        let env = EnvArgs {
            run_dir: tmp.path().join("run"),
            data_dir: tmp.path().join("data"),
            http_addr: "127.0.0.1:6784".parse().unwrap(),
        };
        let conf = NetConf {
            name: "meshnet".into(),
            ..Default::default()
        };
        let r = Record::ipam(&conf, "c1", "eth0", vec!["10.32.0.1/12".parse().unwrap()]);
        record(&env, &r);
        assert_eq!(list(&env, "meshnet"), [r]);
        assert!(list(&env, "other").is_empty());
        forget(&env, "meshnet", "c1", "eth0");
        assert!(list(&env, "meshnet").is_empty());
        assert!(!valid_network_name("../etc"));
        assert!(!valid_network_name(""));
        assert!(valid_network_name("k8s-pod-network"));
    }
}
