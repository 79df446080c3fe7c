//! The network plugin's commands (weave's `weave-net` plugin, brought to
//! spec 1.1.0).
//!
//! ADD: an address from IPAM; a veth `CNI_IFNAME` into the pod (the attach
//! code of `meshnet attach`, with hairpin mode and without the multicast
//! route); a gateway on the bridge in the pod's subnet (weave's trick: the
//! bridge gets an address for `weave:expose`, exposed with masquerading);
//! the default route via it; the result, chained onto `prevResult`.
//! The pod's name (`K8S_POD_NAME`) goes into the router's DNS.
//! DEL undoes that and succeeds when there is nothing left to undo. CHECK
//! compares the pod with `prevResult`; GC collects attachments the runtime
//! no longer lists; STATUS asks the router.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use http::Method;
use ipnet::{IpNet, Ipv4Net};
use meshnet_router::datapath::{self, AttachSpec, Netlink, Netns};
use meshnet_router::dataplane::BRIDGE_NAME;
use meshnet_router::expose;

use super::ipam;
use super::store::{self, Record};
use super::types::{CniResult, Interface, IpConfig, NetConf, Route};
use super::{CniError, CniResultOf, Command, Invocation, code, runtime};
use crate::args::EnvArgs;
use crate::attach::EXPOSE_IDENT;
use crate::client;

/// Bridge names accepted in `bridge` (meshnet has exactly one bridge).
const BRIDGE_ALIASES: &[&str] = &[BRIDGE_NAME, "weave"];

fn datapath_err(what: &str) -> impl Fn(datapath::DatapathError) -> CniError + '_ {
    move |e| CniError::new(code::DATAPATH, what.to_owned()).details(e.to_string())
}

pub fn no_prev_result() -> CniError {
    CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult")
        .details("the runtime must pass the result of the ADD as prevResult (CNI spec, CHECK)")
}

/// Refuses what meshnet cannot do, naming the key and value (spec code 2).
fn validate(conf: &NetConf) -> CniResultOf<()> {
    let unsupported = |key: &str, value: &str, why: &str| {
        Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            format!("unsupported field {key}: {value}"),
        )
        .details(why.to_owned()))
    };
    if conf.is_gateway == Some(true) {
        return unsupported(
            "isGateway",
            "true",
            "the bridge's address is the pods' gateway already; remove isGateway",
        );
    }
    if conf.ip_masq == Some(true) {
        return unsupported(
            "ipMasq",
            "true",
            "meshnet masquerades traffic leaving the mesh itself; remove ipMasq",
        );
    }
    if let Some(b) = &conf.bridge
        && !BRIDGE_ALIASES.contains(&b.as_str())
    {
        return unsupported(
            "bridge",
            b,
            "meshnet pods join the router's bridge; remove the key or set it to \"weave\"",
        );
    }
    if !store::valid_network_name(&conf.name) {
        return Err(
            CniError::new(code::INVALID_CONFIG, "invalid network name").details(format!(
                "name {:?}: start with a letter or digit, then letters, digits, '_', '.', '-'",
                conf.name
            )),
        );
    }
    Ok(())
}

/// Runs one command of the network plugin.
pub fn run(
    command: Command,
    conf: &NetConf,
    inv: &Invocation,
    env: &EnvArgs,
) -> CniResultOf<Option<String>> {
    validate(conf)?;
    let rt = runtime()?;
    rt.block_on(async {
        match command {
            Command::Add => add(conf, inv, env).await.map(Some),
            Command::Del => del(conf, inv, env).await.map(|_| None),
            Command::Check => check(conf, inv, env).await.map(|_| None),
            Command::Status => {
                status_of_router(env, ipam::is_ours(conf)).await?;
                if !ipam::is_ours(conf) {
                    ipam::delegate(Command::Status, conf, inv)?;
                }
                Ok(None)
            }
            Command::Gc => gc_records(conf, env, Some(inv)).await.map(|_| None),
            Command::Version => Ok(None),
        }
    })
}

fn pod_netns(path: &Path) -> CniResultOf<Netns> {
    Netns::from_path(path).map_err(|e| {
        CniError::new(code::INVALID_ENV, "CNI_NETNS is not a network namespace")
            .details(format!("CNI_NETNS={}: {e}", path.display()))
    })
}

async fn add(conf: &NetConf, inv: &Invocation, env: &EnvArgs) -> CniResultOf<String> {
    let id = inv.container_id()?;
    let ifname = inv.ifname()?;
    let netns_path = inv.netns()?;
    let pod = pod_netns(netns_path)?;
    let host = Netns::current().map_err(datapath_err("opening the host's network namespace"))?;
    let hnl = Netlink::connect(&host)
        .await
        .map_err(datapath_err("netlink"))?;
    let bridge = hnl.link_by_name(BRIDGE_NAME).await.map_err(datapath_err("netlink"))?.ok_or_else(|| {
        CniError::new(code::TRY_AGAIN, format!("there is no {BRIDGE_NAME} bridge on this host"))
            .details("the meshnet router is not running here (yet): start it (meshnet launch, or the meshnet DaemonSet)")
    })?;
    let pnl = Netlink::connect(&pod)
        .await
        .map_err(datapath_err("netlink"))?;
    if pnl
        .link_by_name(ifname)
        .await
        .map_err(datapath_err("netlink"))?
        .is_some()
    {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("interface {ifname} already exists in the pod"),
        )
        .details(format!(
            "{} already has {ifname}: DEL it first, or use another CNI_IFNAME",
            netns_path.display()
        )));
    }

    let delegated = !ipam::is_ours(conf);
    let got = if delegated {
        ipam::delegate(Command::Add, conf, inv)?.unwrap_or_default()
    } else {
        ipam::allocate(conf, id, env).await?
    };
    let undo_ipam = || async {
        if delegated {
            let _ = ipam::delegate(Command::Del, conf, inv);
        } else {
            let _ = ipam::release(env, id).await;
        }
    };
    match plumb(conf, inv, env, &pod, &host, bridge.mtu, &got).await {
        Ok(result) => {
            let ips = if delegated { Vec::new() } else { v4s(&got) };
            store::record(
                env,
                &Record {
                    network: conf.name.clone(),
                    container_id: id.into(),
                    ifname: ifname.into(),
                    netns: netns_path.to_string_lossy().into_owned(),
                    netns_inode: pod.inode(),
                    ips,
                    delegated,
                },
            );
            register_dns(env, inv, id, &v4s(&got)).await;
            Ok(serde_json::to_string(&result.for_version(&conf.cni_version)).unwrap_or_default())
        }
        Err(e) => {
            undo_ipam().await;
            Err(e)
        }
    }
}

fn v4s(r: &CniResult) -> Vec<Ipv4Net> {
    r.ips
        .iter()
        .filter_map(|i| match i.address {
            IpNet::V4(a) => Some(a),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// The kernel half of ADD; on failure removes the interface again.
async fn plumb(
    conf: &NetConf,
    inv: &Invocation,
    env: &EnvArgs,
    pod: &Netns,
    host: &Netns,
    bridge_mtu: u32,
    got: &CniResult,
) -> CniResultOf<CniResult> {
    let ifname = inv.ifname()?;
    let addrs = v4s(got);
    if addrs.is_empty() || addrs.len() != got.ips.len() {
        return Err(
            CniError::new(code::INVALID_CONFIG, "meshnet carries IPv4 only").details(format!(
                "IPAM gave {:?}; configure an IPv4 range",
                got.ips
                    .iter()
                    .map(|i| i.address.to_string())
                    .collect::<Vec<_>>()
            )),
        );
    }
    // The gateway: IPAM's, else the bridge's address in the pod's subnet.
    let mut gateway = got.ips.iter().find_map(|i| match i.gateway {
        Some(IpAddr::V4(g)) => Some(g),
        _ => None,
    });
    match gateway {
        // A gateway IPAM named (`ipam.gateway`, host-local's default) must
        // exist: the bridge gets it.
        Some(gw) => {
            ensure_on_bridge(
                env,
                host,
                Ipv4Net::new(gw, addrs[0].prefix_len()).unwrap_or_default(),
            )
            .await?
        }
        None if got.routes.is_empty() => gateway = Some(bridge_gateway(env, host, addrs[0]).await?),
        None => {}
    }
    let spec = AttachSpec {
        bridge: BRIDGE_NAME,
        ifname,
        mtu: conf.mtu.unwrap_or(bridge_mtu),
        multicast_route: false,
        hairpin: conf.hairpin_mode.unwrap_or(true),
    };
    let attached = datapath::attach_with(host, pod, &spec, &addrs)
        .await
        .map_err(datapath_err("cannot attach the pod"))?;
    let routes = match routes(pod, ifname, &addrs, gateway, &got.routes).await {
        Ok(r) => r,
        Err(e) => {
            let _ = delete_iface(pod, ifname).await;
            return Err(e);
        }
    };
    let hnl = Netlink::connect(host)
        .await
        .map_err(datapath_err("netlink"))?;
    let host_mac = hnl
        .link_by_name(&attached.host_veth)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.mac)
        .map(|m| m.to_string());
    let mut result = conf.prev_result.clone().unwrap_or_default();
    let base = result.interfaces.len();
    result.interfaces.push(Interface {
        name: attached.host_veth.clone(),
        mac: host_mac,
        mtu: Some(spec.mtu),
        ..Default::default()
    });
    result.interfaces.push(Interface {
        name: ifname.into(),
        mac: Some(attached.mac.to_string()),
        mtu: Some(spec.mtu),
        sandbox: inv.netns.as_ref().map(|p| p.to_string_lossy().into_owned()),
        ..Default::default()
    });
    for a in &addrs {
        result.ips.push(IpConfig {
            version: None,
            address: IpNet::V4(*a),
            gateway: gateway.map(IpAddr::V4),
            interface: Some(base + 1),
            other: Default::default(),
        });
    }
    result.routes.extend(routes);
    if result.dns.is_none() {
        result.dns = got.dns.clone().or_else(|| conf.dns.clone());
    }
    Ok(result)
}

/// The bridge's address in the pod's subnet; when it has none, one is
/// allocated for `weave:expose` and exposed (with masquerading, so pods
/// reach beyond the mesh), under a lock so concurrent ADDs make one.
async fn bridge_gateway(env: &EnvArgs, host: &Netns, pod: Ipv4Net) -> CniResultOf<Ipv4Addr> {
    let subnet = pod.trunc();
    let find = || async {
        expose::exposed_addrs(host, BRIDGE_NAME)
            .await
            .map(|v| {
                v.into_iter()
                    .find(|a| a.trunc() == subnet)
                    .map(|a| a.addr())
            })
            .map_err(|e| {
                CniError::new(code::DATAPATH, "reading the bridge's addresses")
                    .details(e.to_string())
            })
    };
    if let Some(gw) = find().await? {
        return Ok(gw);
    }
    let _lock = lock(env)?;
    if let Some(gw) = find().await? {
        return Ok(gw);
    }
    let spec = meshnet_router::addrspec::AddrSpec::Net(subnet);
    let (method, path) = spec.request(EXPOSE_IDENT, false);
    let answer = client::call_async(env.api(), method, &path, &[])
        .await
        .map_err(ipam::call_error)?;
    let (cidr, _) = spec
        .answer(answer.status.as_u16(), &answer.body)
        .map_err(|e| {
            CniError::new(
                code::ROUTER,
                format!("IPAM could not give the bridge an address in {subnet}"),
            )
            .details(e.to_string())
        })?;
    expose::expose(host, BRIDGE_NAME, cidr, true)
        .await
        .map_err(|e| {
            CniError::new(
                code::DATAPATH,
                format!("exposing {cidr} as the pods' gateway"),
            )
            .details(e.to_string())
        })?;
    Ok(cidr.addr())
}

/// Puts `gw` on the bridge (exposed) unless it is there already.
async fn ensure_on_bridge(env: &EnvArgs, host: &Netns, gw: Ipv4Net) -> CniResultOf<()> {
    let there = || async {
        expose::exposed_addrs(host, BRIDGE_NAME)
            .await
            .map(|v| v.iter().any(|a| a.addr() == gw.addr()))
            .map_err(|e| {
                CniError::new(code::DATAPATH, "reading the bridge's addresses")
                    .details(e.to_string())
            })
    };
    if there().await? {
        return Ok(());
    }
    let _lock = lock(env)?;
    if !there().await? {
        expose::expose(host, BRIDGE_NAME, gw, true)
            .await
            .map_err(|e| {
                CniError::new(
                    code::DATAPATH,
                    format!("putting the gateway {gw} on the bridge"),
                )
                .details(e.to_string())
            })?;
    }
    Ok(())
}

/// An exclusive lock on `<run dir>/cni.lock` while held.
fn lock(env: &EnvArgs) -> CniResultOf<nix::fcntl::Flock<std::fs::File>> {
    let path = env.run_dir.join("cni.lock");
    let io = |e: std::io::Error| {
        CniError::new(code::IO, format!("cannot lock {}", path.display())).details(e.to_string())
    };
    std::fs::create_dir_all(&env.run_dir).map_err(io)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io(std::io::Error::from(e)))
}

/// Installs the pod's routes: IPAM's (via their own gateway or the
/// address's), else the default route; a gateway outside the pod's subnet
/// first gets a link route of its own. Returns what the result lists.
async fn routes(
    pod: &Netns,
    ifname: &str,
    addrs: &[Ipv4Net],
    gateway: Option<Ipv4Addr>,
    given: &[Route],
) -> CniResultOf<Vec<Route>> {
    let nl = Netlink::connect(pod)
        .await
        .map_err(datapath_err("netlink"))?;
    let link = nl
        .link(ifname)
        .await
        .map_err(datapath_err("netlink"))?
        .index;
    if let Some(gw) = gateway
        && !addrs.iter().any(|a| a.contains(&gw))
    {
        let host_route = Ipv4Net::new(gw, 32).unwrap_or_default();
        nl.add_route(host_route, link)
            .await
            .map_err(datapath_err("adding the gateway's route"))?;
    }
    let wanted: Vec<Route> = if given.is_empty() {
        gateway
            .map(|_| Route {
                dst: IpNet::V4(Ipv4Net::default()),
                gw: None,
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
                other: Default::default(),
            })
            .into_iter()
            .collect()
    } else {
        given.to_vec()
    };
    for r in &wanted {
        let IpNet::V4(dst) = r.dst else {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("route {} is not IPv4", r.dst),
            ));
        };
        let via = match r.gw {
            Some(IpAddr::V4(g)) => Some(g),
            Some(IpAddr::V6(g)) => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("route gateway {g} is not IPv4"),
                ));
            }
            None => gateway,
        };
        let added = match via {
            Some(g) => nl.add_route_via(dst, g, link).await,
            None => nl.add_route(dst, link).await,
        };
        added.map_err(datapath_err("adding a route in the pod"))?;
    }
    Ok(wanted)
}

/// Deletes the pod's interface if it is ours; true when one was deleted.
async fn delete_iface(pod: &Netns, ifname: &str) -> CniResultOf<bool> {
    let host = Netns::current().map_err(datapath_err("opening the host's network namespace"))?;
    let ours = datapath::container_addrs_named(&host, pod, BRIDGE_NAME, ifname)
        .await
        .map_err(datapath_err("reading the pod's interface"))?;
    if ours.is_none() {
        return Ok(false);
    }
    let nl = Netlink::connect(pod)
        .await
        .map_err(datapath_err("netlink"))?;
    match nl
        .link_by_name(ifname)
        .await
        .map_err(datapath_err("netlink"))?
    {
        Some(l) => nl
            .delete_link(l.index)
            .await
            .map_err(datapath_err("deleting the pod's interface")),
        None => Ok(false),
    }
}

async fn del(conf: &NetConf, inv: &Invocation, env: &EnvArgs) -> CniResultOf<()> {
    let id = inv.container_id()?;
    let ifname = inv.ifname()?;
    // The namespace may be gone already: then so is the interface.
    if let Some(path) = &inv.netns
        && let Ok(pod) = Netns::from_path(path)
    {
        delete_iface(&pod, ifname).await?;
    }
    if ipam::is_ours(conf) {
        ipam::release(env, id).await?;
    } else {
        ipam::delegate(Command::Del, conf, inv)?;
    }
    unregister_dns(env, id).await;
    store::forget(env, &conf.name, id, ifname);
    Ok(())
}

async fn check(conf: &NetConf, inv: &Invocation, env: &EnvArgs) -> CniResultOf<()> {
    let id = inv.container_id()?;
    let ifname = inv.ifname()?;
    let netns_path = inv.netns()?;
    let prev = conf.prev_result.as_ref().ok_or_else(no_prev_result)?;
    let sandbox = netns_path.to_string_lossy();
    let (index, want) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == ifname && i.sandbox.as_deref() == Some(&*sandbox))
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("prevResult lists no interface {ifname} in {sandbox}"),
            )
        })?;
    let pod = Netns::from_path(netns_path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            "the pod's network namespace is gone",
        )
        .details(e.to_string())
    })?;
    let host = Netns::current().map_err(datapath_err("opening the host's network namespace"))?;
    let failed = |what: String| Err(CniError::new(code::CHECK_FAILED, what));
    let Some(have) = datapath::container_addrs_named(&host, &pod, BRIDGE_NAME, ifname)
        .await
        .map_err(datapath_err("reading the pod's interface"))?
    else {
        return failed(format!(
            "interface {ifname} is missing from {sandbox} (or is not on the {BRIDGE_NAME} bridge)"
        ));
    };
    if let Some(mac) = &want.mac
        && mac.to_lowercase() != have.mac.to_string()
    {
        return failed(format!("{ifname} has MAC {} instead of {mac}", have.mac));
    }
    let mine: Vec<Ipv4Net> = prev
        .ips
        .iter()
        .filter(|i| i.interface == Some(index))
        .filter_map(|i| match i.address {
            IpNet::V4(a) => Some(a),
            IpNet::V6(_) => None,
        })
        .collect();
    for a in &mine {
        if !have.addrs.contains(a) {
            return failed(format!("{ifname} lost its address {a}"));
        }
    }
    let nl = Netlink::connect(&pod)
        .await
        .map_err(datapath_err("netlink"))?;
    let link = nl
        .link(ifname)
        .await
        .map_err(datapath_err("netlink"))?
        .index;
    let present = nl
        .routes(link)
        .await
        .map_err(datapath_err("listing the pod's routes"))?;
    for r in &prev.routes {
        if let IpNet::V4(dst) = r.dst
            && !present.contains(&dst)
        {
            return failed(format!("the route to {dst} via {ifname} is missing"));
        }
    }
    if ipam::is_ours(conf) {
        let held = ipam::held(env, id).await?;
        for a in &mine {
            if !held.contains(a) {
                return failed(format!("IPAM no longer holds {a} for {id}"));
            }
        }
    } else {
        ipam::delegate(Command::Check, conf, inv)?;
    }
    Ok(())
}

/// STATUS: the router answers, and (when `need_ipam`) its IPAM can give
/// out addresses.
pub async fn status_of_router(env: &EnvArgs, need_ipam: bool) -> CniResultOf<()> {
    let unavailable =
        |msg: &str, d: String| Err(CniError::new(code::NOT_AVAILABLE, msg.to_owned()).details(d));
    let answer = match client::call_async(env.api(), Method::GET, "/report", &[]).await {
        Ok(a) if a.status.is_success() => a,
        Ok(a) => {
            return unavailable(
                "the meshnet router is not ready",
                format!("{}: {}", a.status, a.body.trim()),
            );
        }
        Err(e) => return unavailable("the meshnet router is not running", format!("{e:#}")),
    };
    if !need_ipam {
        return Ok(());
    }
    let report: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
    let ipam = &report["IPAM"];
    if ipam.is_null() {
        return unavailable(
            "the router's IPAM is off",
            "the router runs with --ipalloc-range \"\": relaunch it with a range, or name another IPAM plugin in ipam.type".into(),
        );
    }
    let paxos = &ipam["Paxos"];
    if let (Some(known), Some(quorum)) = (paxos["KnownNodes"].as_u64(), paxos["Quorum"].as_u64())
        && known < quorum
    {
        return unavailable(
            "IPAM is waiting for consensus",
            format!(
                "heard from {known} of the {quorum} peers needed to split the address range; start the routers on the other nodes"
            ),
        );
    }
    Ok(())
}

/// GC: every recorded attachment of this network that the runtime no
/// longer lists loses its addresses (and its interface, if its namespace is
/// still there); then the GC goes on to a delegated IPAM plugin. Errors are
/// collected, not stopped at.
pub async fn gc_records(
    conf: &NetConf,
    env: &EnvArgs,
    inv: Option<&Invocation>,
) -> CniResultOf<()> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let mut errors = Vec::new();
    for r in store::list(env, &conf.name) {
        if valid
            .iter()
            .any(|v| v.container_id == r.container_id && v.ifname == r.ifname)
        {
            continue;
        }
        if !r.netns.is_empty()
            && let Ok(pod) = Netns::from_path(&r.netns)
            && pod.inode() == r.netns_inode
            && let Err(e) = delete_iface(&pod, &r.ifname).await
        {
            errors.push(format!("{}/{}: {}", r.container_id, r.ifname, e.msg));
        }
        if !r.delegated
            && let Err(e) = ipam::release(env, &r.container_id).await
        {
            errors.push(format!("{}: {}", r.container_id, e.msg));
            continue;
        }
        unregister_dns(env, &r.container_id).await;
        store::forget(env, &conf.name, &r.container_id, &r.ifname);
    }
    if let Some(inv) = inv
        && !ipam::is_ours(conf)
        && let Err(e) = ipam::delegate(Command::Gc, conf, inv)
    {
        errors.push(e.msg);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(
            CniError::new(code::ROUTER, "GC could not remove everything")
                .details(errors.join("; ")),
        )
    }
}

/// Registers the pod's name (`K8S_POD_NAME` in `CNI_ARGS`, a single label
/// the router puts in its DNS domain) for its addresses, under the
/// container ID; DNS being off is fine.
async fn register_dns(env: &EnvArgs, inv: &Invocation, id: &str, addrs: &[Ipv4Net]) {
    if let Some(name) = inv.arg("K8S_POD_NAME").filter(|n| !n.is_empty()) {
        let ips: Vec<Ipv4Addr> = addrs.iter().map(|a| a.addr()).collect();
        crate::dns::register(env, id, &ips, name).await;
    }
}

/// Removes every DNS name of the container (404 when DNS is off is fine).
async fn unregister_dns(env: &EnvArgs, id: &str) {
    let _ = client::call_async(env.api(), Method::DELETE, &format!("/name/{id}"), &[]).await;
}
