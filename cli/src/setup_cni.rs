//! `meshnet setup-cni`: installs this binary as the CNI plugins `meshnet`,
//! `weave-net` and `meshnet-ipam`, and writes `10-meshnet.conflist`
//! (meshnet chained with `portmap` for hostPorts, as weave's
//! `10-weave.conflist` does). The DaemonSet's init container runs it
//! against the node's `/etc/cni/net.d` and `/opt/cni/bin`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::args::EnvArgs;

/// The file name of the configuration list (sorted first among weave-era names).
pub const CONFLIST_NAME: &str = "10-meshnet.conflist";
/// The network name in it.
pub const NETWORK_NAME: &str = "meshnet";
/// Spec version written: the newest that Debian's portmap (1.1.x) and
/// containerd 1.6 both speak. Runtimes that speak 1.1.0 still get GC and
/// STATUS from the plugin, which answers every version up to 1.1.0.
pub const CONFLIST_VERSION: &str = "1.0.0";
/// Names the binary is installed under in the bin dir.
pub const PLUGIN_NAMES: &[&str] = &["meshnet", "weave-net", "meshnet-ipam"];

/// The configuration list; router keys are written only when they differ
/// from the defaults the plugin would use anyway.
pub fn conflist(env: &EnvArgs, hairpin: bool) -> Value {
    let mut meshnet = json!({"name": NETWORK_NAME, "type": "meshnet", "hairpinMode": hairpin});
    if env.http_addr.to_string() != "127.0.0.1:6784" {
        meshnet["MESHNET_HTTP_ADDR"] = json!(env.http_addr.to_string());
    }
    if env.run_dir != Path::new(meshnet_router::config::DEFAULT_RUN_DIR) {
        meshnet["MESHNET_RUN_DIR"] = json!(env.run_dir);
    }
    if env.data_dir != Path::new(meshnet_router::config::DEFAULT_DATA_DIR) {
        meshnet["MESHNET_DATA_DIR"] = json!(env.data_dir);
    }
    json!({
        "cniVersion": CONFLIST_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            meshnet,
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ],
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// runtime never reads half a file and a running plugin binary is replaced
/// rather than overwritten ("text file busy").
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("meshnet-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving {} into place", path.display()))
}

/// What `setup-cni` installed.
#[derive(Debug)]
pub struct Installed {
    pub conflist: PathBuf,
    pub binaries: Vec<PathBuf>,
}

/// Installs `exe` into `bin_dir` and the conflist into `conf_dir`.
pub fn install(
    env: &EnvArgs,
    exe: &Path,
    conf_dir: &Path,
    bin_dir: &Path,
    hairpin: bool,
) -> Result<Installed> {
    for d in [conf_dir, bin_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let bin =
        std::fs::read(exe).with_context(|| format!("reading this program ({})", exe.display()))?;
    let main = bin_dir.join(PLUGIN_NAMES[0]);
    write_atomic(&main, &bin, 0o755)?;
    let mut binaries = vec![main];
    for alias in &PLUGIN_NAMES[1..] {
        let link = bin_dir.join(alias);
        let tmp = link.with_extension("meshnet-tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(PLUGIN_NAMES[0], &tmp)
            .with_context(|| format!("linking {}", tmp.display()))?;
        std::fs::rename(&tmp, &link)
            .with_context(|| format!("moving {} into place", link.display()))?;
        binaries.push(link);
    }
    let path = conf_dir.join(CONFLIST_NAME);
    let text = serde_json::to_string_pretty(&conflist(env, hairpin))? + "\n";
    write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(Installed {
        conflist: path,
        binaries,
    })
}

/// `meshnet setup-cni`.
pub fn run(env: &EnvArgs, conf_dir: &Path, bin_dir: &Path, hairpin: bool) -> Result<()> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let done = install(env, &exe, conf_dir, bin_dir, hairpin)?;
    for b in &done.binaries {
        println!("installed {}", b.display());
    }
    println!("wrote {}", done.conflist.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::types::NetConf;

    fn env(dir: &Path) -> EnvArgs {
        EnvArgs {
            run_dir: meshnet_router::config::DEFAULT_RUN_DIR.into(),
            data_dir: dir.join("data"),
            http_addr: "127.0.0.1:6784".parse().unwrap(),
        }
    }

    #[test]
    fn installs_plugins_and_a_chained_conflist_into_temp_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = tmp.path().join("fake-meshnet");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        let (conf, bins) = (tmp.path().join("net.d"), tmp.path().join("bin"));
        let e = env(tmp.path());
        let done = install(&e, &exe, &conf, &bins, true).unwrap();
        // Twice: an upgrade replaces what is there.
        install(&e, &exe, &conf, &bins, true).unwrap();
        for name in PLUGIN_NAMES {
            assert_eq!(
                std::fs::read(bins.join(name)).unwrap(),
                b"#!/bin/sh\n",
                "{name}"
            );
        }
        assert_eq!(done.conflist, conf.join(CONFLIST_NAME));
        let list: Value = serde_json::from_slice(&std::fs::read(&done.conflist).unwrap()).unwrap();
        assert_eq!(list["name"], NETWORK_NAME);
        assert_eq!(list["plugins"][0]["type"], "meshnet");
        assert_eq!(list["plugins"][0]["hairpinMode"], true);
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
        // Only the non-default data dir is spelled out.
        assert!(list["plugins"][0].get("MESHNET_HTTP_ADDR").is_none());
        assert!(list["plugins"][0]["MESHNET_DATA_DIR"].is_string());
        // What a runtime would hand the plugin decodes as its configuration.
        let mut plugin = list["plugins"][0].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        let typed: NetConf = serde_json::from_value(plugin).unwrap();
        assert_eq!(typed.data_dir, Some(tmp.path().join("data")));
        assert!(crate::cni::types::SUPPORTED_VERSIONS.contains(&typed.cni_version.as_str()));
    }
}
