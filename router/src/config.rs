//! Validated router configuration. The CLI builds it from flags and the
//! environment; nothing below reads either.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use meshnet_mesh::PeerName;

/// TCP control port and UDP sleeve port, as weave.
pub const DEFAULT_PORT: u16 = 6783;
/// Weave's default connection limit: enough for any real mesh, bounded
/// against runaway discovery.
pub const DEFAULT_CONN_LIMIT: usize = 200;
/// The HTTP API: loopback only, weave's address.
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6784);
/// The read-only status and metrics endpoint, weave's address.
pub const DEFAULT_STATUS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6782);
/// Weave's default allocation range.
pub const DEFAULT_IPALLOC_RANGE: &str = "10.32.0.0/12";
/// Where pid file, log and sockets live.
pub const DEFAULT_RUN_DIR: &str = "/run/meshnet";
/// Where identity, targets and IPAM state live.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/meshnet";

/// The mesh password. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Everything the router needs to start.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// `--name`; derived from the identity key when absent.
    pub name: Option<PeerName>,
    pub nickname: String,
    pub password: Option<Password>,
    /// Address to listen on for TCP control connections.
    pub host: IpAddr,
    pub port: u16,
    pub conn_limit: usize,
    pub discovery: bool,
    /// Peers from the command line (`host[:port]`); empty = resume the
    /// persisted target list.
    pub peers: Vec<String>,
    pub trusted_subnets: Vec<ipnet::IpNet>,
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    /// Read-only status + metrics; `None` disables it.
    pub status_addr: Option<SocketAddr>,
    /// Bridge and datapaths; `None` runs the control plane only.
    pub dataplane: Option<crate::dataplane::DataplaneConfig>,
    /// IP address management; `None` disables it (`--ipalloc-range ""`).
    pub ipam: Option<crate::ipam::IpamConfig>,
    /// Service discovery; `None` disables it (`--no-dns`).
    pub dns: Option<crate::dns::DnsConfig>,
    /// `--authorized-keys`: only keys listed there may connect (re-read on SIGHUP/reload).
    pub authorized_keys: Option<PathBuf>,
    /// Services the caller runs next to the router, for `status` and `report`.
    pub services: crate::report::Services,
}

impl RouterConfig {
    /// A configuration with weave's defaults, rooted at the given dirs.
    pub fn new(nickname: String, run_dir: PathBuf, data_dir: PathBuf) -> RouterConfig {
        RouterConfig {
            name: None,
            nickname,
            password: None,
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            conn_limit: DEFAULT_CONN_LIMIT,
            discovery: true,
            peers: Vec::new(),
            trusted_subnets: Vec::new(),
            run_dir,
            data_dir,
            http_addr: DEFAULT_HTTP_ADDR,
            status_addr: Some(DEFAULT_STATUS_ADDR),
            ipam: None,
            dns: Some(crate::dns::DnsConfig::new()),
            authorized_keys: None,
            services: crate::report::Services::default(),
            dataplane: Some(crate::dataplane::DataplaneConfig {
                mtu: crate::datapath::DEFAULT_MTU,
                fastdp: true,
                sleeve_port: DEFAULT_PORT,
                sleeve_rekey_after: meshnet_mesh::sleeve::REKEY_AFTER_TIME,
            }),
        }
    }
}
