//! Putting a started container on the mesh: addresses from the router's
//! IPAM over its HTTP API (weave §2.3 routes, as `meshnet attach` uses
//! them), then `ethwe` through `meshnet_router::datapath::attach`; and
//! giving the addresses back when the container is gone.

use std::net::SocketAddr;

use http::{Method, StatusCode};
use ipnet::Ipv4Net;
use meshnet_router::datapath::{self, Netlink, Netns};
use meshnet_router::dataplane::BRIDGE_NAME;

use meshnet_router::addrspec::{AddrSpec, IpamAnswerError};

/// Why a container could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the meshnet router does not answer on {addr}: {reason}")]
    Router { addr: SocketAddr, reason: String },
    #[error(
        "IP address allocation is disabled: launch meshnet with --ipalloc-range, or give the container explicit addresses in MESHNET_CIDR"
    )]
    NoIpam,
    #[error("IPAM refused {what}: {body}")]
    Refused { what: String, body: String },
    #[error("there is no {BRIDGE_NAME} bridge on this host; is the router's data plane up?")]
    NoBridge,
    #[error(transparent)]
    Datapath(#[from] datapath::DatapathError),
}

/// One call to the router's API: status and (trimmed) body.
pub async fn router_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<(StatusCode, String), AttachError> {
    let answer = meshnet_router::api_client::call(addr, method, path, &[])
        .await
        .map_err(|e| AttachError::Router {
            addr,
            reason: e.to_string(),
        })?;
    Ok((answer.status, answer.body.trim().to_string()))
}

/// Asks IPAM for one address; the bool says whether IPAM gave it out (and
/// so must take it back if the attach fails).
async fn allocate(
    api: SocketAddr,
    ident: &str,
    spec: AddrSpec,
) -> Result<(Ipv4Net, bool), AttachError> {
    let (method, path) = spec.request(ident, true);
    let (status, body) = router_call(api, method, &path).await?;
    spec.answer(status.as_u16(), &body).map_err(|e| match e {
        IpamAnswerError::Disabled => AttachError::NoIpam,
        e => AttachError::Refused {
            what: spec.to_string(),
            body: e.to_string(),
        },
    })
}

/// Gives every address of `ident` back to IPAM.
pub async fn release(api: SocketAddr, ident: &str) -> Result<(), AttachError> {
    let (status, body) = router_call(api, Method::DELETE, &format!("/ip/{ident}")).await?;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        Ok(())
    } else {
        Err(AttachError::Refused {
            what: format!("releasing {ident}"),
            body,
        })
    }
}

/// True when the process `pid` already has `ethwe` on our bridge.
pub async fn is_attached(pid: u32) -> bool {
    let (Ok(host), Ok(container)) = (Netns::current(), Netns::of_pid(pid)) else {
        return false;
    };
    matches!(
        datapath::container_addrs(&host, &container, BRIDGE_NAME).await,
        Ok(Some(_))
    )
}

/// Attaches the process `pid` (a container's first process) as `ident`;
/// returns its addresses.
pub async fn attach(
    api: SocketAddr,
    ident: &str,
    pid: u32,
    specs: &[AddrSpec],
    multicast_route: bool,
) -> Result<Vec<Ipv4Net>, AttachError> {
    let host = Netns::current()?;
    let container = Netns::of_pid(pid)?;
    let mtu = Netlink::connect(&host)
        .await?
        .link_by_name(BRIDGE_NAME)
        .await?
        .ok_or(AttachError::NoBridge)?
        .mtu;
    let mut wanted = Vec::new();
    let mut from_ipam = false;
    for spec in specs {
        match allocate(api, ident, *spec).await {
            Ok((cidr, ipam)) => {
                from_ipam |= ipam;
                wanted.push(cidr);
            }
            Err(e) => {
                if from_ipam {
                    let _ = release(api, ident).await;
                }
                return Err(e);
            }
        }
    }
    match datapath::attach(
        &host,
        &container,
        BRIDGE_NAME,
        &wanted,
        mtu,
        multicast_route,
    )
    .await
    {
        Ok(a) => Ok(a.addrs),
        Err(e) => {
            if from_ipam {
                let _ = release(api, ident).await;
            }
            Err(e.into())
        }
    }
}
