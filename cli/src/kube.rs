//! The Kubernetes side of the DaemonSet (weave-kube's kube-utils), through
//! kube-rs: `meshnet kube-peers` prints the other nodes' addresses for
//! `launch`, and `meshnet kube-reclaim` hands the IP space of peers whose
//! node was deleted to this router (`rmpeer`), one reclaimer per dead peer.
//!
//! Bookkeeping lives in annotations of one ConfigMap (default
//! `kube-system/meshnet`): [`PEERS_ANNOTATION`] lists `{peerName, nodeName}`
//! of every router that joined; [`LOCK_PREFIX`]`<peer>` names the node
//! reclaiming that peer. Every write is a replace carrying the
//! resourceVersion read, so two nodes racing see a conflict and re-read.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow, bail};
use http::Method;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

use crate::args::EnvArgs;
use crate::client;

/// The annotation holding the peer list (JSON).
pub const PEERS_ANNOTATION: &str = "meshnet.dev/peers";
/// Prefix of the per-peer reclaim locks; the peer name follows, `:` as `-`.
pub const LOCK_PREFIX: &str = "meshnet.dev/reclaim-";
/// How often a write that lost a race is retried before giving up.
pub const MAX_CONFLICT_RETRIES: usize = 10;

/// One router that joined the cluster's mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerEntry {
    pub peer_name: String,
    pub node_name: String,
}

/// A node's address for peering: InternalIP, else ExternalIP (as weave).
fn node_addr(node: &Node) -> Option<IpAddr> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
        addrs
            .iter()
            .filter(|a| a.type_ == *kind)
            .find_map(|a| a.address.parse().ok())
    })
}

/// The addresses of every node except `own_node`, sorted.
pub async fn peers(client: &Client, own_node: Option<&str>) -> Result<Vec<IpAddr>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .context("listing nodes (does the ServiceAccount may `list nodes`? see deploy/kubernetes/meshnet.yaml)")?;
    let mut out: Vec<IpAddr> = list
        .items
        .iter()
        .filter(|n| own_node.is_none() || n.metadata.name.as_deref() != own_node)
        .filter_map(node_addr)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn lock_key(peer: &str) -> String {
    format!("{LOCK_PREFIX}{}", peer.replace(':', "-"))
}

fn read_peers(cm: &ConfigMap) -> Result<Vec<PeerEntry>> {
    match cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PEERS_ANNOTATION))
    {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).with_context(|| {
            format!("the {PEERS_ANNOTATION} annotation is not a peer list: {text:?}")
        }),
    }
}

fn annotations(cm: &mut ConfigMap) -> &mut BTreeMap<String, String> {
    cm.metadata.annotations.get_or_insert_with(BTreeMap::new)
}

fn write_peers(cm: &mut ConfigMap, peers: &[PeerEntry]) {
    let text = serde_json::to_string(peers).unwrap_or_default();
    annotations(cm).insert(PEERS_ANNOTATION.into(), text);
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Reads the ConfigMap, creating it empty when there is none.
async fn get_or_create(api: &Api<ConfigMap>, name: &str) -> Result<ConfigMap> {
    if let Some(cm) = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading ConfigMap {name}"))?
    {
        return Ok(cm);
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &cm).await {
        Ok(cm) => Ok(cm),
        Err(e) if is_conflict(&e) => api
            .get(name)
            .await
            .with_context(|| format!("reading ConfigMap {name}")),
        Err(e) => Err(e).with_context(|| format!("creating ConfigMap {name}")),
    }
}

/// Applies `change` to the ConfigMap and replaces it, re-reading and
/// re-applying after a conflict. `change` returns false for "nothing to do".
async fn update(
    api: &Api<ConfigMap>,
    name: &str,
    mut change: impl FnMut(&mut ConfigMap) -> Result<bool>,
) -> Result<bool> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let mut cm = get_or_create(api, name).await?;
        if !change(&mut cm)? {
            return Ok(false);
        }
        match api.replace(name, &PostParams::default(), &cm).await {
            Ok(_) => return Ok(true),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e).with_context(|| format!("updating ConfigMap {name}")),
        }
    }
    bail!("ConfigMap {name} kept changing under us ({MAX_CONFLICT_RETRIES} conflicts); run again")
}

/// What [`reclaim`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Peers whose space this router took over.
    pub removed: Vec<String>,
    /// Dead peers another live node is reclaiming.
    pub left_to_others: Vec<String>,
}

/// Where the bookkeeping lives.
#[derive(Debug, Clone)]
pub struct Bookkeeping {
    pub namespace: String,
    pub configmap: String,
}

/// Registers this router (`peer_name` on `node`) in the peer list, then
/// reclaims every listed peer whose node no longer exists.
pub async fn reclaim(
    client: &Client,
    env: &EnvArgs,
    at: &Bookkeeping,
    node: &str,
    peer_name: &str,
) -> Result<Reclaimed> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &at.namespace);
    let name = at.configmap.as_str();
    let me = PeerEntry {
        peer_name: peer_name.into(),
        node_name: node.into(),
    };
    update(&api, name, |cm| {
        let mut list = read_peers(cm)?;
        if list.contains(&me) {
            return Ok(false);
        }
        list.push(me.clone());
        write_peers(cm, &list);
        Ok(true)
    })
    .await?;

    let nodes: Api<Node> = Api::all(client.clone());
    let live: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .context("listing nodes")?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let mut done = Reclaimed::default();
    let list = read_peers(&get_or_create(&api, name).await?)?;
    for gone in list
        .iter()
        .filter(|p| !live.contains(&p.node_name) && p.peer_name != peer_name)
    {
        let key = lock_key(&gone.peer_name);
        // Take the lock unless a live node holds it.
        let mut other = None;
        let took = update(&api, name, |cm| {
            let a = annotations(cm);
            match a.get(&key) {
                Some(holder) if holder == node => Ok(false),
                Some(holder) if live.contains(holder) => {
                    other = Some(holder.clone());
                    Ok(false)
                }
                _ => {
                    a.insert(key.clone(), node.into());
                    Ok(true)
                }
            }
        })
        .await?;
        if !took && other.is_some() {
            done.left_to_others.push(gone.peer_name.clone());
            continue;
        }
        rmpeer(env, &gone.peer_name).await?;
        update(&api, name, |cm| {
            let mut list = read_peers(cm)?;
            list.retain(|p| p != gone);
            write_peers(cm, &list);
            annotations(cm).remove(&key);
            Ok(true)
        })
        .await?;
        done.removed.push(gone.peer_name.clone());
    }
    Ok(done)
}

/// `DELETE /peer/<name>` on our router.
async fn rmpeer(env: &EnvArgs, peer: &str) -> Result<()> {
    let answer =
        client::call_async(env.api(), Method::DELETE, &format!("/peer/{peer}"), &[]).await?;
    if !answer.status.is_success() {
        bail!(
            "the router refused to take over {peer}'s space: {}",
            answer.body.trim()
        );
    }
    Ok(())
}

/// This router's peer name, from its report.
async fn own_peer_name(env: &EnvArgs) -> Result<String> {
    let answer = client::call_async(env.api(), Method::GET, "/report", &[]).await?;
    let report: serde_json::Value =
        serde_json::from_str(&answer.body).context("reading the router's report")?;
    report["Router"]["Name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the router's report names no peer"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")
}

async fn default_client() -> Result<Client> {
    Client::try_default()
        .await
        .context("no Kubernetes API: run inside a pod with a ServiceAccount, or set KUBECONFIG")
}

/// `meshnet kube-peers`.
pub fn kube_peers(own_node: Option<&str>) -> Result<()> {
    runtime()?.block_on(async {
        let client = default_client().await?;
        let addrs = peers(&client, own_node).await?;
        let words: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        println!("{}", words.join(" "));
        Ok(())
    })
}

/// `meshnet kube-reclaim`.
pub fn kube_reclaim(env: &EnvArgs, at: &Bookkeeping, node: &str) -> Result<()> {
    runtime()?.block_on(async {
        let client = default_client().await?;
        let me = own_peer_name(env).await?;
        let done = reclaim(&client, env, at, node, &me).await?;
        for p in &done.removed {
            println!("reclaimed the IP space of {p} (its node is gone)");
        }
        for p in &done.left_to_others {
            println!("{p}'s node is gone; another node is reclaiming it");
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
