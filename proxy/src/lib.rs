//! meshnet-proxy: the Docker API proxy behind `eval $(meshnet env)` (weave's
//! proxy). Clients talk Docker's API to
//! `$MESHNET_RUN_DIR/meshnet.sock`; everything is passed to the real engine
//! unchanged except that containers created through it get a tiny static
//! wait shim as their first process, and are attached to the mesh when they
//! start, so their program never runs without `ethwe`.
//!
//! Layout:
//! - [`intercept`]: pure decisions: routes, `MESHNET_CIDR`/`WEAVE_CIDR`,
//!   the create-body rewrite.
//! - [`upstream`]: the Docker engine address and one connection per request.
//! - `server`: the HTTP side, pass-through (streams, `101` hijacks) and the
//!   create/start interceptors.
//! - [`attach`]: IPAM over the router's API and `datapath::attach`.
//! - [`hosts`]: hostnames derived from names or labels, and the
//!   `/etc/hosts` naming a container's mesh addresses.
//! - `events`: attaches containers Docker restarts by itself.
//! - [`liveness`]: tells the router's IPAM and DNS when any container
//!   dies, starts or is removed (runs with or without the proxy).
//! - [`plugin`]: the Docker network + IPAM plugin `meshnet`.
//!
//! Proxy and plugin run inside the router process (`meshnet launch`), in the
//! host network namespace, which is where containers are attached from.

pub mod attach;
mod events;
pub mod hosts;
pub mod intercept;
pub mod liveness;
pub mod plugin;
mod server;
pub mod upstream;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use events::{Event, parse_event};
pub use upstream::{DEFAULT_DOCKER_API, DockerAddr};

/// The proxy socket's file name in the run dir.
pub const SOCKET_FILE: &str = "meshnet.sock";
/// The directory (in the run dir) holding the shim, mounted at `/w`.
pub const SHIM_DIR: &str = "meshnet-wait";

/// The wait shim (shim/wait.c), built static by build.rs.
static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/meshnet-wait"));

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the proxy needs to know.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The default socket (`$MESHNET_RUN_DIR/meshnet.sock`); it also names
    /// this proxy in [`intercept::PROXY_LABEL`], whatever it listens on.
    pub socket: PathBuf,
    /// Where clients reach it (weave's `-H`): unix sockets and TCP
    /// addresses; by default only [`Self::socket`].
    pub listen: Vec<DockerAddr>,
    /// The Docker engine.
    pub docker: DockerAddr,
    /// Host directory with the shim, bind-mounted read-only at `/w`.
    pub shim_dir: PathBuf,
    /// The router's API (IPAM).
    pub router_api: meshnet_router::api_client::Endpoint,
    /// Attach containers that do not say otherwise (`--no-default-ipalloc`
    /// turns this off).
    pub default_ipalloc: bool,
    /// Add the 224.0.0.0/4 route to `ethwe`.
    pub multicast_route: bool,
    /// Point created containers at meshnet's DNS (`--without-dns` turns
    /// this off).
    pub dns: bool,
    /// `--rewrite-inspect`: `docker inspect` shows the mesh address and
    /// MAC in `NetworkSettings` (weave's option).
    pub rewrite_inspect: bool,
    /// How a created container's hostname comes from its name
    /// (`--hostname-from-label`, `--hostname-match`, `--hostname-replacement`).
    pub hostname: hosts::HostnameRule,
    /// Write the mesh addresses into attached containers' `/etc/hosts`
    /// (`--no-rewrite-hosts` turns this off).
    pub rewrite_hosts: bool,
    /// One attach at a time: a start request and Docker's start event may
    /// both try to attach the same container.
    attach_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ProxyConfig {
    /// The value of [`intercept::PROXY_LABEL`] on containers this proxy made.
    pub fn owner(&self) -> String {
        self.socket.display().to_string()
    }

    /// The defaults for a router with this run dir and API address.
    pub fn new(
        run_dir: &Path,
        docker: DockerAddr,
        router_api: meshnet_router::api_client::Endpoint,
    ) -> ProxyConfig {
        let socket = run_dir.join(SOCKET_FILE);
        ProxyConfig {
            listen: vec![DockerAddr::Unix(socket.clone())],
            socket,
            docker,
            shim_dir: run_dir.join(SHIM_DIR),
            router_api,
            default_ipalloc: true,
            multicast_route: true,
            rewrite_inspect: false,
            hostname: hosts::HostnameRule::default(),
            rewrite_hosts: true,
            dns: true,
            attach_lock: Arc::default(),
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProxyError + use<> {
    let path = path.to_path_buf();
    move |source| ProxyError::Io { what, path, source }
}

/// One bound listen address.
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// Binds `addr`: a unix socket (a stale one replaced) with Docker's
/// socket's owner and mode, or a TCP address.
async fn bind(addr: &DockerAddr, docker: &DockerAddr) -> Result<Listener, ProxyError> {
    match addr {
        DockerAddr::Unix(socket) => {
            match std::fs::remove_file(socket) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove the stale socket", socket)(e)),
            }
            let listener = UnixListener::bind(socket).map_err(io("listen on", socket))?;
            secure_socket(socket, docker)?;
            Ok(Listener::Unix(listener, socket.clone()))
        }
        DockerAddr::Tcp(hp) => TcpListener::bind(hp.as_str())
            .await
            .map(Listener::Tcp)
            .map_err(io("listen on", Path::new(hp))),
    }
}

/// Writes the shim, binds every listen address and serves until
/// `shutdown`. Returns once listening; the work goes on in spawned tasks.
/// Unix sockets are removed at shutdown.
pub async fn start(config: ProxyConfig, shutdown: CancellationToken) -> Result<(), ProxyError> {
    install_shim(&config.shim_dir)?;
    let mut listeners = Vec::new();
    for addr in &config.listen {
        listeners.push(bind(addr, &config.docker).await?);
        info!(listen = %addr, docker = %config.docker, "Docker API proxy listening");
    }

    let config = Arc::new(config);
    tokio::spawn(events::watch(config.clone(), shutdown.clone()));
    tokio::spawn(events::reattach_all(config.clone(), shutdown.clone()));
    for listener in listeners {
        tokio::spawn(serve(listener, config.clone(), shutdown.clone()));
    }
    Ok(())
}

/// Accepts on one listener until `shutdown`.
async fn serve(listener: Listener, config: Arc<ProxyConfig>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(Stream::Unix(s)) => {
                tokio::spawn(server::serve_connection(config.clone(), s));
            }
            Ok(Stream::Tcp(s)) => {
                tokio::spawn(server::serve_connection(config.clone(), s));
            }
            Err(e) => {
                warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// An accepted client connection.
enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Stream> {
    match listener {
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
    }
}

/// Writes the shim as `<dir>/w` (mode 0755), replacing an older one.
fn install_shim(dir: &Path) -> Result<(), ProxyError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let path = dir.join("w");
    let tmp = dir.join(".w.tmp");
    std::fs::write(&tmp, SHIM).map_err(io("write", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(io("set the mode of", &tmp))?;
    // Rename, so a container starting now never sees a half-written shim.
    std::fs::rename(&tmp, &path).map_err(io("install", &path))?;
    Ok(())
}

/// Gives the socket the owner, group and mode of Docker's own socket, so it
/// is no more open than Docker (weave does the same); 0660 root:root when
/// Docker is reached over TCP or its socket cannot be read.
fn secure_socket(socket: &Path, docker: &DockerAddr) -> Result<(), ProxyError> {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid, mode) = match docker {
        DockerAddr::Unix(p) => match std::fs::metadata(p) {
            Ok(m) => (m.uid(), m.gid(), m.mode() & 0o777),
            Err(_) => (0, 0, 0o660),
        },
        DockerAddr::Tcp(_) => (0, 0, 0o660),
    };
    std::os::unix::fs::chown(socket, Some(uid), Some(gid)).map_err(io("chown", socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", socket))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_is_a_static_elf() {
        assert_eq!(SHIM.get(..4), Some(&b"\x7fELF"[..]));
        // A static binary has no PT_INTERP program header (type 3): it
        // must run in images without a dynamic loader.
        let u16_at = |o: usize| u16::from_le_bytes([SHIM[o], SHIM[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(SHIM[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        assert!(phnum > 0);
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            let p_type = u32::from_le_bytes(SHIM[at..at + 4].try_into().unwrap());
            assert_ne!(p_type, 3, "the shim has a PT_INTERP: it is not static");
        }
    }

    #[test]
    fn shim_install_is_atomic_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let shim_dir = dir.path().join(SHIM_DIR);
        install_shim(&shim_dir).unwrap();
        install_shim(&shim_dir).unwrap();
        let m = std::fs::metadata(shim_dir.join("w")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(m.len() as usize, SHIM.len());
        assert!(!shim_dir.join(".w.tmp").exists());
    }
}
