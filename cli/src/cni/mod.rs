//! The CNI plugin (spec 1.1.0): the same `meshnet` binary, run by a
//! container runtime as `meshnet` or `weave-net` (the network plugin) or as
//! `meshnet-ipam` / `weave-ipam` (an IPAM plugin others can delegate to).
//!
//! Layout: this file (who we are, the environment contract, errors and
//! output); [`types`] (the spec's JSON objects); `net` (ADD, DEL, CHECK,
//! GC, STATUS of the network plugin); `ipam` (addresses from the router, or
//! from a delegated IPAM plugin); `store` (the attachments this host made,
//! for GC).
//!
//! The plugin finds its router as the CLI does: `MESHNET_HTTP_ADDR`,
//! `MESHNET_RUN_DIR`, `MESHNET_DATA_DIR` from the environment, overridden
//! by the same keys in the network configuration, so routers in different
//! network namespaces each serve their own pods.

mod ipam;
mod net;
mod store;
pub mod types;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use meshnet_router::datapath::plan::valid_ifname;

use crate::args::EnvArgs;
use types::{CURRENT_VERSION, ErrorResult, NetConf, SUPPORTED_VERSIONS, VersionResult};

/// Names under which the binary is the network plugin (besides `meshnet`
/// with `CNI_COMMAND` set and no arguments).
pub const NET_PLUGIN_NAMES: &[&str] = &["weave-net", "meshnet-cni"];
/// Names under which the binary is the IPAM plugin.
pub const IPAM_PLUGIN_NAMES: &[&str] = &["meshnet-ipam", "weave-ipam"];

/// Largest network configuration read from stdin; a config list of a few
/// plugins with a `prevResult` is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Well-known error codes (spec §5 "Error").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or gone.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid or missing environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (reading stdin).
    pub const IO: u32 = 5;
    /// Could not decode the configuration.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition: try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: cannot serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// meshnet: the router or its IPAM refused.
    pub const ROUTER: u32 = 100;
    /// meshnet: a kernel (netlink) operation failed.
    pub const DATAPATH: u32 = 101;
    /// meshnet: CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
    /// meshnet: a delegated plugin could not be run or failed.
    pub const DELEGATE: u32 = 103;
}

/// Which plugin the binary is acting as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The network plugin (`type: meshnet` / `weave-net`).
    Net,
    /// The IPAM plugin (`ipam.type: meshnet-ipam`).
    Ipam,
}

/// Decides from argv whether this process is a CNI plugin. `meshnet` run
/// normally (with arguments, or without `CNI_COMMAND`) is the CLI.
pub fn role(argv0: &OsStr, nargs: usize, cni_command_set: bool) -> Option<Role> {
    let base = Path::new(argv0).file_name()?.to_str()?;
    if IPAM_PLUGIN_NAMES.contains(&base) {
        Some(Role::Ipam)
    } else if NET_PLUGIN_NAMES.contains(&base) || (cni_command_set && nargs == 1) {
        Some(Role::Net)
    } else {
        None
    }
}

/// A failed command: printed as the spec's error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }
}

/// Result alias for plugin commands.
pub type CniResultOf<T> = std::result::Result<T, CniError>;

/// The CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// The environment half of an invocation (spec §2 "Parameters").
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// `CNI_ARGS` split into pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH` split into directories.
    pub path: Vec<PathBuf>,
}

impl Invocation {
    /// Reads the `CNI_*` variables through `get`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Invocation {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        Invocation {
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname: nonempty("CNI_IFNAME"),
            args: nonempty("CNI_ARGS")
                .map(|a| {
                    a.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            path: nonempty("CNI_PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// A `CNI_ARGS` value (e.g. `K8S_POD_NAME`).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `CNI_CONTAINERID`, checked against the spec's syntax.
    pub fn container_id(&self) -> CniResultOf<&str> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        let mut bytes = id.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            return Err(CniError::new(code::INVALID_ENV, "invalid CNI_CONTAINERID").details(
                format!("CNI_CONTAINERID={id:?}: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"),
            ));
        }
        Ok(id)
    }

    /// `CNI_IFNAME`, checked as the kernel would.
    pub fn ifname(&self) -> CniResultOf<&str> {
        let name = self
            .ifname
            .as_deref()
            .ok_or_else(|| missing("CNI_IFNAME"))?;
        if !valid_ifname(name) {
            return Err(
                CniError::new(code::INVALID_ENV, "invalid CNI_IFNAME").details(format!(
                    "CNI_IFNAME={name:?} is not an interface name: at most 15 bytes, no '/', ':' or whitespace"
                )),
            );
        }
        Ok(name)
    }

    /// `CNI_NETNS`.
    pub fn netns(&self) -> CniResultOf<&Path> {
        self.netns.as_deref().ok_or_else(|| missing("CNI_NETNS"))
    }
}

fn missing(var: &str) -> CniError {
    CniError::new(code::INVALID_ENV, format!("{var} is not set")).details(format!(
        "the runtime must set {var} for this command (CNI spec, section 2); when running the plugin by hand, export it"
    ))
}

/// The router this invocation talks to: configuration keys first, then
/// the environment, then the CLI's defaults.
pub fn router_env(conf: &NetConf, get: impl Fn(&str) -> Option<String>) -> CniResultOf<EnvArgs> {
    let pick = |from_conf: Option<String>, var: &str, default: &str| {
        from_conf
            .or_else(|| get(var).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| default.to_owned())
    };
    let http = pick(
        conf.http_addr.clone(),
        "MESHNET_HTTP_ADDR",
        "127.0.0.1:6784",
    );
    let http_addr: SocketAddr = http.parse().map_err(|_| {
        CniError::new(code::INVALID_CONFIG, "invalid MESHNET_HTTP_ADDR").details(format!(
            "{http:?} is not an address:port such as 127.0.0.1:6784"
        ))
    })?;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    Ok(EnvArgs {
        run_dir: pick(
            path(&conf.run_dir),
            "MESHNET_RUN_DIR",
            meshnet_router::config::DEFAULT_RUN_DIR,
        )
        .into(),
        data_dir: pick(
            path(&conf.data_dir),
            "MESHNET_DATA_DIR",
            meshnet_router::config::DEFAULT_DATA_DIR,
        )
        .into(),
        http_addr,
    })
}

/// Runs one plugin invocation: reads the environment and stdin, writes the
/// result (or the error object) to stdout.
pub fn main(role: Role) -> ExitCode {
    let get = |k: &str| std::env::var(k).ok();
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut stdin);
    let (version, outcome) = match read {
        Err(e) => (
            CURRENT_VERSION.to_owned(),
            Err(
                CniError::new(code::IO, "cannot read the network configuration from stdin")
                    .details(e.to_string()),
            ),
        ),
        Ok(_) => run(role, get, &stdin),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(json)) => {
            let _ = writeln!(out, "{json}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let obj = ErrorResult {
                cni_version: version,
                code: e.code,
                msg: e.msg.clone(),
                details: e.details.clone(),
            };
            let _ = writeln!(out, "{}", serde_json::to_string(&obj).unwrap_or_default());
            eprintln!(
                "meshnet CNI: {}{}",
                e.msg,
                e.details.map(|d| format!(": {d}")).unwrap_or_default()
            );
            ExitCode::FAILURE
        }
    }
}

/// One invocation, without the process around it: returns the version the
/// answer is in, and the JSON to print (none for DEL, CHECK, GC, STATUS).
pub fn run(
    role: Role,
    get: impl Fn(&str) -> Option<String> + Copy,
    stdin: &[u8],
) -> (String, CniResultOf<Option<String>>) {
    let mut version = CURRENT_VERSION.to_owned();
    let outcome = (|| {
        let command = get("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?;
        let command = Command::parse(&command).ok_or_else(|| {
            CniError::new(code::INVALID_ENV, "invalid CNI_COMMAND").details(format!(
                "CNI_COMMAND={command:?}: use ADD, DEL, CHECK, STATUS, GC or VERSION"
            ))
        })?;
        if stdin.len() as u64 > MAX_CONFIG_BYTES {
            return Err(CniError::new(code::IO, "network configuration too large")
                .details(format!("more than {MAX_CONFIG_BYTES} bytes on stdin")));
        }
        if command == Command::Version {
            return Ok(Some(version_answer(stdin, &mut version)));
        }
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode the network configuration").details(format!(
                "stdin must hold one plugin configuration object (JSON): {e}"
            ))
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(
                CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI version").details(
                    format!(
                        "the configuration says cniVersion {:?}; meshnet speaks {}",
                        conf.cni_version,
                        SUPPORTED_VERSIONS.join(", ")
                    ),
                ),
            );
        }
        version = conf.cni_version.clone();
        let inv = Invocation::from_env(get);
        let env = router_env(&conf, get)?;
        match role {
            Role::Net => net::run(command, &conf, &inv, &env),
            Role::Ipam => ipam::run_plugin(command, &conf, &inv, &env),
        }
    })();
    (version, outcome)
}

/// VERSION: answers in the version asked with (or the newest).
fn version_answer(stdin: &[u8], version: &mut String) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Asked {
        cni_version: String,
    }
    if let Ok(a) = serde_json::from_slice::<Asked>(stdin) {
        *version = a.cni_version;
    }
    let answer = VersionResult {
        cni_version: version.clone(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

/// A tokio runtime for one invocation.
fn runtime() -> CniResultOf<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO, "cannot start the I/O runtime").details(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + Copy + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn argv0_decides_the_role() {
        assert_eq!(
            role(OsStr::new("/opt/cni/bin/weave-net"), 1, false),
            Some(Role::Net)
        );
        assert_eq!(role(OsStr::new("meshnet-ipam"), 1, false), Some(Role::Ipam));
        assert_eq!(
            role(OsStr::new("/opt/cni/bin/meshnet"), 1, true),
            Some(Role::Net)
        );
        // The CLI stays the CLI: with arguments, or without CNI_COMMAND.
        assert_eq!(role(OsStr::new("meshnet"), 2, true), None);
        assert_eq!(role(OsStr::new("/usr/bin/meshnet"), 1, false), None);
    }

    #[test]
    fn version_lists_what_we_speak() {
        let (v, out) = run(
            Role::Net,
            env(&[("CNI_COMMAND", "VERSION")]),
            br#"{"cniVersion":"0.4.0"}"#,
        );
        assert_eq!(v, "0.4.0");
        let r: VersionResult = serde_json::from_str(&out.unwrap().unwrap()).unwrap();
        assert_eq!(r.cni_version, "0.4.0");
        assert_eq!(r.supported_versions, SUPPORTED_VERSIONS);
        let (_, out) = run(Role::Ipam, env(&[("CNI_COMMAND", "VERSION")]), b"");
        let r: VersionResult = serde_json::from_str(&out.unwrap().unwrap()).unwrap();
        assert_eq!(r.cni_version, CURRENT_VERSION);
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        let (_, out) = run(Role::Net, env(&add), b"{not json");
        assert_eq!(out.unwrap_err().code, code::DECODE);
        let (v, out) = run(
            Role::Net,
            env(&add),
            br#"{"cniVersion":"9.9.9","name":"n","type":"meshnet"}"#,
        );
        let e = out.unwrap_err();
        assert_eq!(
            (e.code, v.as_str()),
            (code::INCOMPATIBLE_VERSION, CURRENT_VERSION)
        );
        assert!(e.details.unwrap().contains("9.9.9"));
        let (_, out) = run(Role::Net, env(&[("CNI_COMMAND", "FROB")]), b"{}");
        assert_eq!(out.unwrap_err().code, code::INVALID_ENV);
        let (_, out) = run(Role::Net, env(&[]), b"{}");
        assert!(out.unwrap_err().msg.contains("CNI_COMMAND"));
    }

    #[test]
    fn container_id_and_ifname_are_checked() {
        let inv = |id: &str, ifn: &str| Invocation {
            container_id: Some(id.into()),
            ifname: Some(ifn.into()),
            ..Default::default()
        };
        assert!(inv("abc-1.2_3", "eth0").container_id().is_ok());
        assert_eq!(
            inv("-abc", "eth0").container_id().unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(
            inv("a/b", "eth0").container_id().unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(
            inv("a", "eth0/x").ifname().unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(
            inv("a", "0123456789abcdef").ifname().unwrap_err().code,
            code::INVALID_ENV
        );
        let e = Invocation::default().netns().unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"), "{e:?}");
    }

    #[test]
    fn cni_args_split() {
        let inv = Invocation::from_env(env(&[(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        )]));
        assert_eq!(inv.arg("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(inv.arg("K8S_POD_NAMESPACE"), Some("default"));
        assert_eq!(inv.arg("nope"), None);
    }

    #[test]
    fn config_keys_override_the_environment() {
        let mut conf = NetConf::default();
        let e = router_env(&conf, env(&[("MESHNET_HTTP_ADDR", "127.0.0.1:7000")])).unwrap();
        assert_eq!(e.http_addr.port(), 7000);
        conf.http_addr = Some("127.0.0.1:7001".into());
        conf.run_dir = Some("/tmp/r".into());
        let e = router_env(&conf, env(&[("MESHNET_HTTP_ADDR", "127.0.0.1:7000")])).unwrap();
        assert_eq!(
            (e.http_addr.port(), e.run_dir),
            (7001, PathBuf::from("/tmp/r"))
        );
        conf.http_addr = Some("nonsense".into());
        assert_eq!(
            router_env(&conf, env(&[])).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }
}
