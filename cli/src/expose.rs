//! `meshnet expose` and `hide`: the host gets addresses on
//! the bridge, from IPAM under the pseudo-container `weave:expose`, and the
//! router crate's [`meshnet_router::expose`] puts them on the bridge with
//! their forwarding and masquerade rules. Prints the IPs without prefix
//! length, as weave does.

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow, bail};
use http::Method;
use ipnet::Ipv4Net;
use meshnet_router::addrspec::{AddrSpec, IpamAnswerError};
use meshnet_router::datapath::Netns;
use meshnet_router::dataplane::BRIDGE_NAME;
use meshnet_router::expose;

use crate::args::EnvArgs;
use crate::attach::EXPOSE_IDENT;
use crate::client;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")
}

/// Asks IPAM for the address an expose argument stands for (weave sends no
/// `check-alive` for the bridge's own addresses).
async fn allocate(env: &EnvArgs, a: AddrSpec) -> Result<Ipv4Net> {
    let (method, path) = a.request(EXPOSE_IDENT, false);
    let answer = client::call_async(env.api(), method, &path, &[]).await?;
    a.answer(answer.status.as_u16(), &answer.body)
        .map(|(cidr, _)| cidr)
        .map_err(|e| match e {
            IpamAnswerError::Disabled => anyhow!(
                "IP address allocation is off (router launched without --ipalloc-range): give the address to expose, e.g. meshnet expose 10.32.0.1/12"
            ),
            e => anyhow!("cannot expose {a}: {e}"),
        })
}

fn print_ips(addrs: &[Ipv4Net]) {
    let ips: Vec<String> = addrs.iter().map(|a| a.addr().to_string()).collect();
    println!("{}", ips.join(" "));
}

/// `meshnet expose [ADDR...] [--without-masquerade]`.
pub fn expose(env: &EnvArgs, args: &[String], masquerade: bool, fqdn: Option<&str>) -> Result<()> {
    let mut addrs: Vec<AddrSpec> = args
        .iter()
        .map(|a| a.parse::<AddrSpec>())
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        addrs.push(AddrSpec::Default);
    }
    runtime()?.block_on(async {
        let host = Netns::current()?;
        let mut exposed = Vec::new();
        for a in addrs {
            let cidr = allocate(env, a).await?;
            expose::expose(&host, BRIDGE_NAME, cidr, masquerade)
                .await
                .with_context(|| format!("exposing {cidr}"))?;
            exposed.push(cidr);
        }
        if let Some(fqdn) = fqdn {
            let ips: Vec<_> = exposed.iter().map(Ipv4Net::addr).collect();
            crate::dns::name_addrs(env, EXPOSE_IDENT, &ips, fqdn).await?;
        }
        print_ips(&exposed);
        Ok(())
    })
}

/// Parses a `hide` argument: an address (`CIDR` or `ip:CIDR`).
fn parse_hide(s: &str) -> Result<Ipv4Net> {
    match s.parse::<AddrSpec>()? {
        AddrSpec::Ip(c) => Ok(c),
        _ => bail!("hide takes the exposed addresses (CIDR, e.g. 10.32.0.1/12), not {s:?}"),
    }
}

/// `meshnet hide [ADDR...]`: without addresses, everything exposed (on the
/// bridge or held by `weave:expose` in IPAM).
pub fn hide(env: &EnvArgs, args: &[String]) -> Result<()> {
    let given: Vec<Ipv4Net> = args.iter().map(|a| parse_hide(a)).collect::<Result<_>>()?;
    runtime()?.block_on(async {
        let host = Netns::current()?;
        let targets: BTreeSet<Ipv4Net> = if given.is_empty() {
            let mut all: BTreeSet<Ipv4Net> = expose::exposed_addrs(&host, BRIDGE_NAME)
                .await?
                .into_iter()
                .collect();
            // IPAM may hold addresses that never made it onto the bridge;
            // a stopped router or IPAM off just means there are none.
            let path = format!("/ip/{EXPOSE_IDENT}");
            if let Ok(a) = client::call_async(env.api(), Method::GET, &path, &[]).await
                && a.status.is_success()
            {
                all.extend(
                    a.body
                        .split_whitespace()
                        .filter_map(|c| c.parse::<Ipv4Net>().ok()),
                );
            }
            all
        } else {
            given.into_iter().collect()
        };
        let mut hidden = Vec::new();
        for cidr in targets {
            expose::hide(&host, BRIDGE_NAME, cidr)
                .await
                .with_context(|| format!("hiding {cidr}"))?;
            let path = format!("/ip/{EXPOSE_IDENT}/{}", cidr.addr());
            if let Err(e) = client::call_async(env.api(), Method::DELETE, &path, &[]).await {
                eprintln!("meshnet: {cidr} stays allocated to the host in IPAM: {e:#}");
            }
            // Its names go with it (DNS off answers 404: nothing to remove).
            let names = format!("/name/{EXPOSE_IDENT}/{}", cidr.addr());
            let _ = client::call_async(env.api(), Method::DELETE, &names, &[]).await;
            hidden.push(cidr);
        }
        print_ips(&hidden);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn hide_takes_addresses_only() {
        assert_eq!(parse_hide("10.32.0.1/12").unwrap(), net("10.32.0.1/12"));
        assert_eq!(parse_hide("ip:10.32.0.1/12").unwrap(), net("10.32.0.1/12"));
        assert!(parse_hide("net:default").is_err());
        assert!(parse_hide("net:10.32.0.0/12").is_err());
        assert!(parse_hide("nonsense").is_err());
    }
}
