//! Putting a started container on the mesh: addresses from the router's
//! IPAM over its HTTP API (weave's IPAM routes, as `meshnet attach` uses
//! them), then `ethwe` through `meshnet_router::datapath::attach`; and
//! giving the addresses back when the container is gone.

use http::{Method, StatusCode};
use ipnet::Ipv4Net;
use meshnet_router::datapath::{self, Netlink, Netns};
use meshnet_router::dataplane::BRIDGE_NAME;

use meshnet_router::addrspec::{AddrSpec, IpamAnswerError};
use meshnet_router::api_client::Endpoint;

/// Why a container could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the meshnet router does not answer: {reason}")]
    Router { reason: String },
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
    api: &Endpoint,
    method: Method,
    path: &str,
) -> Result<(StatusCode, String), AttachError> {
    let answer = meshnet_router::api_client::call(api, method, path, &[])
        .await
        .map_err(|e| AttachError::Router {
            reason: e.to_string(),
        })?;
    Ok((answer.status, answer.body.trim().to_string()))
}

/// Asks IPAM for one address; the bool says whether IPAM gave it out (and
/// so must take it back if the attach fails).
async fn allocate(
    api: &Endpoint,
    ident: &str,
    spec: AddrSpec,
) -> Result<(Ipv4Net, bool), AttachError> {
    let (method, path) = spec.request(ident, true);
    let (status, body) = router_call(api, method, &path).await?;
    spec.answer(status.as_u16(), &body).map_err(attach_error)
}

/// What an IPAM answer that gave no address means for an attach.
fn attach_error(e: IpamAnswerError) -> AttachError {
    match e {
        IpamAnswerError::Disabled => AttachError::NoIpam,
        IpamAnswerError::Refused { spec, body } => AttachError::Refused { what: spec, body },
        e @ IpamAnswerError::NotAnAddress(_) => AttachError::Router {
            reason: e.to_string(),
        },
    }
}

/// Gives every address of `ident` back to IPAM.
pub async fn release(api: &Endpoint, ident: &str) -> Result<(), AttachError> {
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
/// returns its addresses. `before_link` sees the addresses once IPAM gave
/// them, before `ethwe` appears (while the container's program still waits).
pub async fn attach(
    api: &Endpoint,
    ident: &str,
    pid: u32,
    specs: &[AddrSpec],
    multicast_route: bool,
    before_link: impl FnOnce(&[Ipv4Net]),
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
    before_link(&wanted);
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

/// The router's DNS as containers use it; `None` when DNS is off (the
/// router answers 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The server's IP (for `HostConfig.Dns`); `None` when names are
    /// gossiped but not served here (no docker0, no --dns-listen-address).
    pub addr: Option<String>,
    /// The domain, FQDN (`weave.local.`).
    pub domain: String,
}

/// Asks the router for its DNS address and domain.
pub async fn dns_settings(api: &Endpoint) -> Option<DnsSettings> {
    let (s, domain) = router_call(api, Method::GET, "/domain").await.ok()?;
    if !s.is_success() {
        return None;
    }
    let addr = match router_call(api, Method::GET, "/dns-address").await {
        Ok((s, a)) if s.is_success() => Some(a),
        _ => None,
    };
    Some(DnsSettings { addr, domain })
}

/// Registers every name for every address of container `id` (DNS off, or
/// a name outside the domain, is skipped quietly).
pub async fn register_names(api: &Endpoint, id: &str, addrs: &[Ipv4Net], names: &[String]) {
    for a in addrs {
        for name in names {
            let path = format!("/name/{id}/{}", a.addr());
            match meshnet_router::api_client::call(api, Method::PUT, &path, &[("fqdn", name)]).await
            {
                Ok(r) if r.status.is_success() => {}
                Ok(r) => {
                    tracing::debug!(container = %id, %name, body = %r.body.trim(), "name not registered")
                }
                Err(e) => {
                    tracing::warn!(container = %id, %name, error = %e, "cannot register a DNS name")
                }
            }
        }
    }
}

/// Removes every DNS name of container `id` (it died).
pub async fn remove_names(api: &Endpoint, id: &str) {
    let path = format!("/name/{id}");
    if let Err(e) = meshnet_router::api_client::call(api, Method::DELETE, &path, &[]).await {
        tracing::warn!(container = %id, error = %e, "cannot remove the DNS names of a dead container");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_told_once_with_the_address_and_the_reason() {
        let spec: AddrSpec = "10.2.1.7/24".parse().expect("an address");
        let refused = spec
            .answer(
                409,
                "Unable to claim: address 10.2.1.7 is already owned by c1\n",
            )
            .expect_err("a conflict");
        assert_eq!(
            attach_error(refused).to_string(),
            "IPAM refused 10.2.1.7/24: Unable to claim: address 10.2.1.7 is already owned by c1"
        );
        let default = AddrSpec::Default;
        assert!(matches!(
            attach_error(default.answer(404, "").expect_err("disabled")),
            AttachError::NoIpam
        ));
        let garbage = attach_error(default.answer(200, "garbage").expect_err("no address"));
        assert!(garbage.to_string().contains("\"garbage\""), "{garbage}");
    }
}
