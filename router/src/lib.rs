//! meshnet-router: the daemon shell around the sans-IO core.
//!
//! It moves bytes, timers and kernel state in and out of `meshnet-mesh` and
//! `meshnet-ipam`, which hold the protocol rules (the sleeve's per-packet
//! policy is `meshnet_mesh::sleeve::Endpoint`; [`sleeve`] pumps it). Where a
//! rule is still applied here (the fastdp heartbeat schedule in
//! [`dataplane`]), the module doc says so.
//!
//! Layout:
//! - [`config`]: the validated configuration the CLI hands over.
//! - [`identity`]: the persistent Noise static key and the peer name derived from it.
//! - [`control`]: TCP/6783 connections: the socket side of `meshnet_mesh::handshake`.
//! - [`driver`]: the task that owns the `Mesh` and drains its outputs.
//! - [`api`], [`status`], [`metrics`]: the HTTP API and weave-format renderings;
//!   [`api_client`]: its client side, for the CLI and the proxy.
//! - [`addrspec`]: the address arguments (`net:default`, `net:CIDR`, `ip:CIDR`)
//!   and their IPAM requests, shared by the CLI and the Docker proxy.
//! - [`ipam`]: a pump over `meshnet_ipam::node::Node`: the state file, gossip and the API.
//! - [`dns`]: service discovery (weaveDNS): the name table on the `dns`
//!   gossip channel and the DNS server answering from it.
//! - [`persist`]: crash-safe state files.
//! - [`datapath`]: kernel state over netlink (bridge, veth, vxlan, FDB).
//! - [`dataplane`], [`fastdp`], [`sleeve`]: the bridge, the kernel fast
//!   datapath, the userspace sleeve, and per-peer overlay selection, driven
//!   by connection events.
//! - [`admission`]: the nftables set of underlay addresses allowed to send
//!   us VXLAN, kept in step with the connections.
//! - [`expose`], [`nft`]: host addresses on the bridge, masquerading and
//!   forwarding rules (nftables), and `reset`'s cleanup.

pub mod addrspec;
pub mod admission;
pub mod api;
pub mod api_client;
pub mod authorized;
pub mod config;
pub mod control;
pub mod datapath;
pub mod dataplane;
pub mod dns;
pub mod driver;
pub mod expose;
pub mod fastdp;
pub mod identity;
pub mod ipam;
pub mod metrics;
pub mod nft;
pub mod persist;
pub mod report;
pub mod sleeve;
pub mod status;

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use meshnet_mesh::{Mesh, PeerName, PeerUid, ShortId};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::RouterConfig;

/// File (in the data dir) holding the persisted direct-peer list.
pub const TARGETS_FILE: &str = "targets.json";

/// Why the router could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error("{0}")]
    AuthorizedKeys(String),
    #[error("cannot set up the data plane: {0}")]
    Dataplane(#[from] dataplane::DataplaneError),
    #[error(
        "cannot listen on {addr}: {source} (is another router running here? `meshnet stop` stops it; or choose another address)"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the control socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Runs the router until `shutdown` fires. `on_ready` is called with the
/// peer name once every listener is bound.
pub async fn run(
    config: RouterConfig,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(PeerName),
) -> Result<(), RouterError> {
    for dir in [&config.run_dir, &config.data_dir] {
        std::fs::create_dir_all(dir).map_err(|source| RouterError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    // The identity key and the IPAM state are nobody else's business.
    std::fs::set_permissions(&config.data_dir, Permissions::from_mode(DATA_DIR_MODE)).map_err(
        |source| RouterError::Dir {
            path: config.data_dir.clone(),
            source,
        },
    )?;
    let identity = identity::Identity::load_or_create(&config.data_dir)?;
    let derived = identity.peer_name();
    let name = config.name.unwrap_or(derived);
    let psk = match config.password.clone() {
        Some(p) => Some(
            tokio::task::spawn_blocking(move || meshnet_mesh::handshake::Psk::derive(&p.0))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        ),
        None => None,
    };
    let encryption = psk.is_some();

    let listen_addr = std::net::SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(listen_addr)
        .await
        .map_err(|source| RouterError::Listen {
            addr: listen_addr,
            source,
        })?;
    let socket_path = config.run_dir.join(api_client::API_SOCKET);
    let control_socket = bind_control_socket(&socket_path)?;
    let http = bind(config.http_addr).await?;
    let status_http = match config.status_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };

    let now = Instant::now();
    let (api_tx, api_rx) = mpsc::channel(64);
    let authorized_keys = match &config.authorized_keys {
        Some(path) => Some(authorized::load(path).map_err(RouterError::AuthorizedKeys)?),
        None => None,
    };
    let mut mesh = Mesh::new(
        meshnet_mesh::Config {
            name,
            key: identity.public,
            nickname: config.nickname.clone(),
            uid: PeerUid(rand::random::<u64>() | 1),
            short_id: ShortId::from_low_bits(rand::random::<u64>()),
            port: config.port,
            conn_limit: config.conn_limit,
            discovery: config.discovery,
            seed: rand::random(),
        },
        now,
    );
    if let Some(keys) = authorized_keys {
        info!(
            keys = keys.len(),
            "only keys in --authorized-keys may connect"
        );
        mesh.set_authorized_keys(Some(keys), now);
        reload_on_sighup(api_tx.clone(), shutdown.clone());
    }
    let targets_file = config.data_dir.join(TARGETS_FILE);
    let peers = if config.peers.is_empty() {
        persist::read_json::<Vec<String>>(&targets_file)?.unwrap_or_default()
    } else {
        config.peers.clone()
    };
    if let Err(errors) = mesh.connect(&peers, true, now) {
        for e in errors {
            warn!(error = %e, "ignoring invalid peer");
        }
    }
    persist::write_json(&targets_file, &mesh.targets())?;

    let ipam = match config.ipam.clone() {
        Some(c) => Some(ipam::IpamService::start(
            c,
            name,
            &config.nickname,
            &config.data_dir,
            rand::random(),
            now,
        )?),
        None => None,
    };

    let dns = config
        .dns
        .clone()
        .map(|c| dns::DnsService::start(c, name, shutdown.clone(), now));

    let dataplane = match config.dataplane.clone() {
        Some(c) => Some(
            dataplane::Dataplane::setup(c, name, encryption, !config.trusted_subnets.is_empty())
                .await?,
        ),
        None => None,
    };

    let api = api::Api { driver: api_tx };
    let guard = |addr: std::net::SocketAddr| api::Guard {
        local: addr.ip(),
        socket: socket_path.display().to_string().into(),
    };
    serve(control_socket, api::control(api.clone()), shutdown.clone());
    serve(
        http,
        api::tcp(api.clone(), guard(config.http_addr)),
        shutdown.clone(),
    );
    if let (Some(l), Some(addr)) = (status_http, config.status_addr) {
        serve(l, api::status(api, guard(addr)), shutdown.clone());
    }

    let local = Arc::new(control::conn::Local {
        private_key: identity.private.clone(),
        psk,
        trusted_subnets: config.trusted_subnets.clone(),
    });
    info!(
        peer = %name,
        nickname = %config.nickname,
        port = config.port,
        encryption,
        "router started"
    );
    on_ready(name);
    driver::run(
        driver::DriverParts {
            mesh,
            local,
            name_derived: config.name.is_none() || config.name == Some(derived),
            authorized_keys_file: config.authorized_keys.clone(),
            encryption,
            trusted_subnets: config.trusted_subnets,
            targets_file,
            ipam,
            dns,
            dataplane,
            services: config.services,
        },
        listener,
        api_rx,
        shutdown,
    )
    .await;
    Ok(())
}

/// SIGHUP re-reads `--authorized-keys` (as `meshnet reload` does).
fn reload_on_sighup(driver: mpsc::Sender<driver::ApiRequest>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; use `meshnet reload` to re-read --authorized-keys");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = hup.recv() => {
                    if driver.send(driver::ApiRequest::Reload(None)).await.is_err() {
                        break;
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
    });
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, RouterError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RouterError::Listen { addr, source })
}

/// Mode of the data dir (identity key, IPAM state).
pub const DATA_DIR_MODE: u32 = 0o700;
/// Mode of the control socket: root only...
pub const SOCKET_MODE: u32 = 0o600;
/// ...or root and the group [`SOCKET_GROUP`], when that group exists.
pub const SOCKET_GROUP_MODE: u32 = 0o660;
/// The group allowed on the control socket, if the host has it.
pub const SOCKET_GROUP: &str = "meshnet";

/// Binds the control socket at `path` (replacing a stale one: the run dir's
/// lock says no other router uses it) and restricts it to root, or to root
/// and the `meshnet` group.
fn bind_control_socket(path: &Path) -> Result<UnixListener, RouterError> {
    let err = |source| RouterError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let group = nix::unistd::Group::from_name(SOCKET_GROUP).ok().flatten();
    let mode = match group {
        Some(g) => {
            nix::unistd::chown(path, None, Some(g.gid)).map_err(|e| err(e.into()))?;
            SOCKET_GROUP_MODE
        }
        None => SOCKET_MODE,
    };
    std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

fn serve<L>(listener: L, app: axum::Router, shutdown: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            warn!(error = %e, "HTTP server failed");
        }
    });
}
