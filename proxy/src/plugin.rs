//! The Docker network and IPAM plugin `meshnet` (legacy plugin API v1, as
//! weave's): dockerd calls `/run/docker/plugins/meshnet.sock` with JSON POSTs.
//! Join creates a veth pair whose host end sits on the bridge; dockerd moves
//! the other end into the container and names it `ethwe0`. Addresses come
//! from the router's IPAM, each under an identity of its own
//! ([`PLUGIN_IDENT_PREFIX`] and a random part), which IPAM persists with
//! the address: ReleaseAddress after a router restart asks IPAM who holds
//! the address (`GET /ipinfo/owner/{ip}`) and frees it only when that is
//! one of the plugin's identities. Once the router answers, addresses the
//! plugin held before a restart that no endpoint of Docker's network uses
//! any more (their container went while the router was down, so Docker's
//! ReleaseAddress found nobody) are freed ([`reconcile`]). The router must
//! run in dockerd's network namespace (the root one), since dockerd moves
//! the veth from there.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::Ipv4Net;
use meshnet_router::datapath::{Netlink, Netns};
use meshnet_router::dataplane::BRIDGE_NAME;
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::attach::router_call;
use crate::upstream::{Body, DockerAddr, full};

/// Where dockerd looks for legacy plugins.
pub const PLUGIN_SOCKET: &str = "/run/docker/plugins/meshnet.sock";
/// The driver (network and IPAM) and network name.
pub const DRIVER: &str = "meshnet";
/// Docker's content type for plugin answers.
const PLUGIN_JSON: &str = "application/vnd.docker.plugins.v1+json";
/// Host-side veth prefix: `vethwe…` so `meshnet reset` sweeps them; `d` =
/// Docker plugin, `l`/`g` = local/guest end.
const HOST_PREFIX: &str = "vethwedl";
const GUEST_PREFIX: &str = "vethwedg";
/// IPAM identities of plugin addresses start with this; the rest is
/// random, so identities never repeat across router restarts.
pub const PLUGIN_IDENT_PREFIX: &str = "docker-plugin-";
/// Docker's option key for a gateway handed back from RequestPool.
const GATEWAY_KEY: &str = "com.docker.network.gateway";

/// Why the plugin could not start or register.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create Docker network {DRIVER}: {0}")]
    Network(String),
}

/// What the plugin needs.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub socket: PathBuf,
    pub router_api: meshnet_router::api_client::Endpoint,
    pub docker: DockerAddr,
}

#[derive(Debug)]
struct State {
    config: PluginConfig,
    /// IPAM identity of each address handed to Docker (Docker releases by
    /// address; IPAM frees by identity).
    idents: Mutex<BTreeMap<String, String>>,
    /// The container behind each joined endpoint (its DNS names go on Leave).
    joined: Mutex<BTreeMap<String, String>>,
    /// Identities handed out since this start, kept only until
    /// [`reconcile`] is done (it must never free one of those).
    issued: Mutex<Option<std::collections::BTreeSet<String>>>,
}

/// A fresh IPAM identity for one address (IPAM is idempotent per identity,
/// so each request needs its own).
pub fn new_ident() -> String {
    format!("{PLUGIN_IDENT_PREFIX}{:016x}", rand::random::<u64>())
}

/// How long after Join the plugin looks for the container in Docker's view
/// of the network, to register its names.
const JOIN_LOOKUP: std::time::Duration = std::time::Duration::from_secs(10);

/// After Join: once Docker lists the endpoint's container on the network,
/// registers its names (name, hostname.domainname, aliases) for its address.
async fn register_joined(state: Arc<State>, endpoint: String) {
    let deadline = tokio::time::Instant::now() + JOIN_LOOKUP;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let Ok(net) = state
            .config
            .docker
            .json(&format!("/networks/{DRIVER}"))
            .await
        else {
            continue;
        };
        let addr_of = |c: &Value| {
            c.get("IPv4Address")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<Ipv4Net>().ok())
        };
        let found = net
            .get("Containers")
            .and_then(Value::as_object)
            .and_then(|m| {
                m.iter()
                    .find(|(_, c)| {
                        c.get("EndpointID").and_then(Value::as_str) == Some(endpoint.as_str())
                    })
                    .map(|(id, c)| (id.clone(), addr_of(c)))
            });
        let Some((id, Some(addr))) = found else {
            continue;
        };
        let Ok(inspect) = state
            .config
            .docker
            .json(&format!("/containers/{id}/json"))
            .await
        else {
            return;
        };
        let names = crate::intercept::dns_names(&inspect);
        lock(&state.joined).insert(endpoint, id.clone());
        crate::attach::register_names(&state.config.router_api, &id, &[addr], &names).await;
        return;
    }
    debug!(%endpoint, "no container found for a joined endpoint; no DNS names");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds the plugin socket and serves until `shutdown` (then removes it).
pub async fn start(config: PluginConfig, shutdown: CancellationToken) -> Result<(), PluginError> {
    let path = config.socket.clone();
    let listen_err = |source| PluginError::Listen {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(listen_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(&path).map_err(listen_err)?;
    info!(socket = %path.display(), "Docker network plugin listening");
    let state = Arc::new(State {
        config,
        idents: Mutex::new(BTreeMap::new()),
        joined: Mutex::new(BTreeMap::new()),
        issued: Mutex::new(Some(Default::default())),
    });
    tokio::spawn(reconcile(state.clone(), shutdown.clone()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let state = state.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let state = state.clone();
                                async move { Ok::<_, Infallible>(handle(&state, req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "plugin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&state.config.socket);
    });
    Ok(())
}

fn answer(status: StatusCode, v: Value) -> Response<Body> {
    let mut resp = Response::new(full(v.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PLUGIN_JSON));
    resp
}

/// Docker shows `Err` to the user; ours say they are meshnet's.
fn plugin_error(e: impl std::fmt::Display) -> Response<Body> {
    answer(StatusCode::OK, json!({ "Err": format!("meshnet: {e}") }))
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plugin_error(format!("cannot read the request: {e}")),
    };
    let req: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return plugin_error(format!("request is not JSON: {e}")),
        }
    };
    debug!(call = %path, request = %req, "plugin call");
    let result = match path.as_str() {
        "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        "NetworkDriver.GetCapabilities" => {
            Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
        }
        "NetworkDriver.CreateNetwork"
        | "NetworkDriver.DeleteNetwork"
        | "NetworkDriver.CreateEndpoint"
        | "NetworkDriver.AllocateNetwork"
        | "NetworkDriver.FreeNetwork"
        | "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity"
        | "IpamDriver.ReleasePool" => Ok(json!({})),
        "NetworkDriver.EndpointOperInfo" => Ok(json!({ "Value": {} })),
        "NetworkDriver.Join" => {
            let r = join(&req).await;
            if r.is_ok() {
                let endpoint = field(&req, "EndpointID").to_string();
                tokio::spawn(register_joined(state.clone(), endpoint));
            }
            r
        }
        "NetworkDriver.Leave" | "NetworkDriver.DeleteEndpoint" => {
            let gone = lock(&state.joined).remove(field(&req, "EndpointID"));
            if let Some(id) = gone {
                crate::attach::remove_names(&state.config.router_api, &id).await;
            }
            leave(&req).await
        }
        "IpamDriver.GetCapabilities" => Ok(json!({ "RequiresMACAddress": false })),
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
            "LocalDefaultAddressSpace": "meshnetlocal",
            "GlobalDefaultAddressSpace": "meshnetglobal",
        })),
        "IpamDriver.RequestPool" => request_pool(state, &req).await,
        "IpamDriver.RequestAddress" => request_address(state, &req).await,
        "IpamDriver.ReleaseAddress" => release_address(state, &req).await,
        _ => {
            return answer(
                StatusCode::NOT_FOUND,
                json!({ "Err": format!("meshnet: plugin call {path} is not supported") }),
            );
        }
    };
    match result {
        Ok(v) => answer(StatusCode::OK, v),
        Err(e) => {
            warn!(call = %path, error = %e, "plugin call failed");
            plugin_error(e)
        }
    }
}

fn field<'a>(req: &'a Value, key: &str) -> &'a str {
    req.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Veth names for an endpoint id (15 characters, IFNAMSIZ − 1).
pub fn veth_names(endpoint: &str) -> Result<(String, String), String> {
    let short: String = endpoint.chars().take(7).collect();
    if short.len() < 7 || !short.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("invalid endpoint id {endpoint:?}"));
    }
    Ok((
        format!("{HOST_PREFIX}{short}"),
        format!("{GUEST_PREFIX}{short}"),
    ))
}

/// Join: a veth pair, host end on the bridge, the other end for dockerd.
async fn join(req: &Value) -> Result<Value, String> {
    let (host_if, guest_if) = veth_names(field(req, "EndpointID"))?;
    let nl = Netlink::connect(&Netns::current().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let bridge = nl
        .link_by_name(BRIDGE_NAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("there is no {BRIDGE_NAME} bridge here; is the router's data plane up?")
        })?;
    if let Ok(Some(old)) = nl.link_by_name(&host_if).await {
        let _ = nl.delete_link(old.index).await;
    }
    let (host, guest) = nl
        .create_veth(&host_if, &guest_if)
        .await
        .map_err(|e| e.to_string())?;
    let setup = async {
        nl.set_mtu(host.index, bridge.mtu).await?;
        nl.set_mtu(guest.index, bridge.mtu).await?;
        nl.set_master(host.index, bridge.index).await?;
        nl.set_up(host.index).await
    };
    if let Err(e) = setup.await {
        let _ = nl.delete_link(host.index).await;
        return Err(e.to_string());
    }
    Ok(json!({
        "InterfaceName": { "SrcName": guest_if, "DstPrefix": "ethwe" },
        // Multicast stays on the overlay, as with `meshnet attach`.
        "StaticRoutes": [{ "Destination": "224.0.0.0/4", "RouteType": 1 }],
        // No gateway on the mesh: the container needs no docker_gwbridge.
        "DisableGatewayService": true,
    }))
}

/// Leave / DeleteEndpoint: removes the host end (and so the pair).
async fn leave(req: &Value) -> Result<Value, String> {
    let Ok((host_if, _)) = veth_names(field(req, "EndpointID")) else {
        return Ok(json!({}));
    };
    let nl = Netlink::connect(&Netns::current().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(Some(link)) = nl.link_by_name(&host_if).await {
        nl.delete_link(link.index)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(json!({}))
}

/// The router's default subnet (`GET /ipinfo/defaultsubnet`).
async fn default_subnet(api: &meshnet_router::api_client::Endpoint) -> Result<Ipv4Net, String> {
    let (status, body) = router_call(api, Method::GET, "/ipinfo/defaultsubnet")
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "IP address allocation is not available ({status}): {body}"
        ));
    }
    body.parse()
        .map_err(|_| format!("the router's default subnet {body:?} is not a CIDR"))
}

/// RequestPool: the requested subnet, or IPAM's default one. The gateway
/// is the network address: containers on the mesh need none, and naming
/// one stops Docker from asking for (and wasting) an address.
async fn request_pool(state: &State, req: &Value) -> Result<Value, String> {
    if req.get("V6").and_then(Value::as_bool) == Some(true) {
        return Err("IPv6 is not supported".into());
    }
    let pool: Ipv4Net = match field(req, "Pool") {
        "" => default_subnet(&state.config.router_api).await?,
        p => p
            .parse()
            .map_err(|_| format!("invalid subnet {p:?}: use a CIDR such as 10.32.0.0/12"))?,
    };
    let pool = pool.trunc();
    let sub = field(req, "SubPool");
    Ok(json!({
        "PoolID": format!("{DRIVER}-{pool}-{sub}"),
        "Pool": pool.to_string(),
        "Data": { GATEWAY_KEY: format!("{}/{}", pool.network(), pool.prefix_len()) },
    }))
}

/// The subnet (or sub-range) a pool id stands for.
pub fn pool_subnet(pool_id: &str) -> Result<Ipv4Net, String> {
    let rest = pool_id
        .strip_prefix(DRIVER)
        .and_then(|r| r.strip_prefix('-'))
        .ok_or_else(|| format!("unknown pool {pool_id:?}"))?;
    let (pool, sub) = rest.split_once('-').unwrap_or((rest, ""));
    let chosen = if sub.is_empty() { pool } else { sub };
    chosen
        .parse()
        .map_err(|_| format!("unknown pool {pool_id:?}"))
}

/// RequestAddress: any free address of the pool, or the one asked for.
async fn request_address(state: &State, req: &Value) -> Result<Value, String> {
    let subnet = pool_subnet(field(req, "PoolID"))?;
    let api = &state.config.router_api;
    let ident = new_ident();
    if let Some(issued) = lock(&state.issued).as_mut() {
        issued.insert(ident.clone());
    }
    let wanted = field(req, "Address");
    let cidr: Ipv4Net = if wanted.is_empty() {
        let path = format!("/ip/{ident}/{}/{}", subnet.network(), subnet.prefix_len());
        let (status, body) = router_call(api, Method::POST, &path)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("IPAM cannot allocate in {subnet}: {body}"));
        }
        body.parse()
            .map_err(|_| format!("IPAM answered {body:?} instead of an address"))?
    } else {
        let ip: std::net::Ipv4Addr = wanted
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("invalid address {wanted:?}"))?;
        let cidr = Ipv4Net::new(ip, subnet.prefix_len()).map_err(|e| e.to_string())?;
        let path = format!("/ip/{ident}/{ip}/{}", subnet.prefix_len());
        let (status, body) = router_call(api, Method::PUT, &path)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("IPAM cannot give {cidr}: {body}"));
        }
        cidr
    };
    lock(&state.idents).insert(cidr.addr().to_string(), ident);
    Ok(json!({ "Address": cidr.to_string(), "Data": {} }))
}

/// ReleaseAddress: back to IPAM. The identity is the one this process
/// handed out, or (after a router restart) the one IPAM says holds the
/// address; an address held by anything but the plugin is left alone.
async fn release_address(state: &State, req: &Value) -> Result<Value, String> {
    let addr = field(req, "Address");
    let ip = addr.split('/').next().unwrap_or_default().to_string();
    let api = &state.config.router_api;
    let known = lock(&state.idents).remove(&ip);
    let ident = match known {
        Some(i) => Some(i),
        None => holder(api, &ip).await?,
    };
    let Some(ident) = ident.filter(|i| i.starts_with(PLUGIN_IDENT_PREFIX)) else {
        debug!(%ip, "ReleaseAddress of an address the plugin does not hold; nothing to do");
        return Ok(json!({}));
    };
    let path = format!("/ip/{ident}/{ip}");
    let (status, body) = router_call(api, Method::DELETE, &path)
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() && status != StatusCode::NOT_FOUND {
        return Err(format!("IPAM cannot release {ip}: {body}"));
    }
    Ok(json!({}))
}

/// Who holds `ip` in IPAM (`None`: nobody).
async fn holder(
    api: &meshnet_router::api_client::Endpoint,
    ip: &str,
) -> Result<Option<String>, String> {
    if ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!("invalid address {ip:?}"));
    }
    let (status, body) = router_call(api, Method::GET, &format!("/ipinfo/owner/{ip}"))
        .await
        .map_err(|e| e.to_string())?;
    match status {
        s if s.is_success() => Ok(Some(body)),
        StatusCode::NOT_FOUND => Ok(None),
        s => Err(format!("cannot ask IPAM who holds {ip} ({s}): {body}")),
    }
}

/// How long [`reconcile`] waits for the router's API and the Docker
/// network before giving up (it runs once per start).
const RECONCILE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often it looks meanwhile.
const RECONCILE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// After a start: frees addresses held under plugin identities from before
/// it (not handed out by this process) that no endpoint on Docker's
/// network `meshnet` has. Does nothing unless both IPAM's list and
/// Docker's network could be read.
async fn reconcile(state: Arc<State>, shutdown: CancellationToken) {
    reconcile_once(&state, &shutdown).await;
    *lock(&state.issued) = None;
}

async fn reconcile_once(state: &State, shutdown: &CancellationToken) {
    let deadline = tokio::time::Instant::now() + RECONCILE_WAIT;
    let api = &state.config.router_api;
    let path = format!("/ipinfo/held?prefix={PLUGIN_IDENT_PREFIX}");
    let (held, net) = loop {
        let held = router_call(api, Method::GET, &path).await;
        let net = state
            .config
            .docker
            .json(&format!("/networks/{DRIVER}"))
            .await;
        match (held, net) {
            (Ok((s, body)), Ok(net)) if s.is_success() => break (body, net),
            _ if tokio::time::Instant::now() >= deadline || shutdown.is_cancelled() => {
                debug!("cannot compare plugin addresses with Docker's network; none freed");
                return;
            }
            _ => tokio::time::sleep(RECONCILE_POLL).await,
        }
    };
    let in_use: std::collections::BTreeSet<std::net::Ipv4Addr> = net
        .get("Containers")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(|c| c.get("IPv4Address")?.as_str()?.parse::<Ipv4Net>().ok())
                .map(|n| n.addr())
                .collect()
        })
        .unwrap_or_default();
    for (ident, ip) in stale(&held, &in_use) {
        // Handed out since this start: Docker may not have joined it yet.
        if lock(&state.issued)
            .as_ref()
            .is_some_and(|i| i.contains(&ident))
        {
            continue;
        }
        match router_call(api, Method::DELETE, &format!("/ip/{ident}/{ip}")).await {
            Ok((s, _)) if s.is_success() => {
                info!(%ip, "freed a plugin address no Docker endpoint uses (its container went while the router was down)")
            }
            Ok((s, body)) => warn!(%ip, status = %s, %body, "cannot free a stale plugin address"),
            Err(e) => warn!(%ip, error = %e, "cannot free a stale plugin address"),
        }
    }
}

/// The `IDENT CIDR` lines of `GET /ipinfo/held` whose address is not in
/// `in_use`.
pub fn stale(
    held: &str,
    in_use: &std::collections::BTreeSet<std::net::Ipv4Addr>,
) -> Vec<(String, std::net::Ipv4Addr)> {
    held.lines()
        .filter_map(|l| {
            let (ident, cidr) = l.trim().split_once(' ')?;
            let ip = cidr.parse::<Ipv4Net>().ok()?.addr();
            (ident.starts_with(PLUGIN_IDENT_PREFIX) && !in_use.contains(&ip))
                .then(|| (ident.to_string(), ip))
        })
        .collect()
}

/// Creates the Docker network `meshnet` on the router's default subnet
/// (weave creates `weave` the same way), unless it exists.
pub async fn create_network(config: &PluginConfig) -> Result<(), PluginError> {
    let err = |e: String| PluginError::Network(e);
    let existing = config.docker.json(&format!("/networks/{DRIVER}")).await;
    if let Ok(v) = existing {
        return match v.get("Driver").and_then(Value::as_str) {
            Some(DRIVER) => Ok(()),
            other => Err(err(format!(
                "a network named {DRIVER} exists with driver {other:?}; remove it (docker network rm {DRIVER})"
            ))),
        };
    }
    let subnet = default_subnet(&config.router_api).await.map_err(err)?;
    let body = json!({
        "Name": DRIVER,
        "Driver": DRIVER,
        "CheckDuplicate": true,
        "IPAM": { "Driver": DRIVER, "Config": [{ "Subnet": subnet.to_string() }] },
    });
    let (status, answer) = config
        .docker
        .call(Method::POST, "/networks/create", Some(&body))
        .await
        .map_err(|e| err(e.to_string()))?;
    if !status.is_success() {
        return Err(err(crate::upstream::docker_message(&answer)));
    }
    info!(subnet = %subnet, "created Docker network {DRIVER}");
    Ok(())
}

/// Removes the Docker network `meshnet` (at `meshnet stop`).
pub async fn remove_network(docker: &DockerAddr) -> Result<(), String> {
    let (status, body) = docker
        .call(Method::DELETE, &format!("/networks/{DRIVER}"), None)
        .await
        .map_err(|e| e.to_string())?;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        Ok(())
    } else {
        Err(crate::upstream::docker_message(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_start_with_vethwe() {
        let (h, g) = veth_names("0123456789abcdef").unwrap();
        assert_eq!(h, "vethwedl0123456");
        assert_eq!(g, "vethwedg0123456");
        assert!(h.len() <= 15 && h.starts_with("vethwe"));
        assert!(veth_names("abc").is_err());
        assert!(veth_names("../../x/y").is_err());
    }

    #[test]
    fn identities_are_the_plugins_and_never_repeat() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| new_ident()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(
            |i| i.starts_with(PLUGIN_IDENT_PREFIX) && i.len() == PLUGIN_IDENT_PREFIX.len() + 16
        ));
    }

    #[test]
    fn only_plugin_addresses_no_endpoint_uses_are_stale() {
        let held = "docker-plugin-00000000000000aa 10.99.0.1/28\n\
                    docker-plugin-00000000000000bb 10.99.0.2/28\n\
                    somecontainer 10.99.0.3/28\n\
                    garbage\n";
        let in_use = ["10.99.0.2".parse().unwrap()].into();
        assert_eq!(
            stale(held, &in_use),
            vec![(
                "docker-plugin-00000000000000aa".to_string(),
                "10.99.0.1".parse().unwrap()
            )]
        );
    }

    #[test]
    fn pool_ids_round_trip() {
        assert_eq!(
            pool_subnet("meshnet-10.32.0.0/12-").unwrap(),
            "10.32.0.0/12".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(
            pool_subnet("meshnet-10.32.0.0/12-10.32.1.0/24").unwrap(),
            "10.32.1.0/24".parse::<Ipv4Net>().unwrap()
        );
        assert!(pool_subnet("weave-10.32.0.0/12-").is_err());
        assert!(pool_subnet("meshnet-bogus-").is_err());
    }
}
