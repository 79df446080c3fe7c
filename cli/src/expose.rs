//! `meshnet expose` and `hide` (weave §1.10): the host gets addresses on
//! the bridge, from IPAM under the pseudo-container `weave:expose`, and the
//! router crate's [`meshnet_router::expose`] puts them on the bridge with
//! their forwarding and masquerade rules. Prints the IPs without prefix
//! length, as weave does.

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow, bail};
use http::{Method, StatusCode};
use ipnet::Ipv4Net;
use meshnet_router::datapath::Netns;
use meshnet_router::dataplane::BRIDGE_NAME;
use meshnet_router::expose;

use crate::args::EnvArgs;
use crate::attach::{AddrArg, EXPOSE_IDENT, parse_addr};
use crate::client;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")
}

/// The IPAM request an expose argument stands for: (method, path).
fn ipam_request(a: AddrArg) -> (Method, String) {
    match a {
        AddrArg::Default => (Method::POST, format!("/ip/{EXPOSE_IDENT}")),
        AddrArg::Net(n) => (
            Method::POST,
            format!("/ip/{EXPOSE_IDENT}/{}/{}", n.addr(), n.prefix_len()),
        ),
        AddrArg::Ip(c) => (
            Method::PUT,
            format!("/ip/{EXPOSE_IDENT}/{}/{}", c.addr(), c.prefix_len()),
        ),
    }
}

/// Interprets IPAM's answer to [`ipam_request`]: the address to expose.
fn ipam_answer(a: AddrArg, status: StatusCode, body: &str) -> Result<Ipv4Net> {
    match (a, status) {
        // A claim with IPAM off (404) is the user's own address: fine.
        (AddrArg::Ip(c), s) if s.is_success() || s == StatusCode::NOT_FOUND => Ok(c),
        (AddrArg::Ip(c), _) => bail!("cannot claim {c} for the host: {}", body.trim()),
        (_, StatusCode::NOT_FOUND) => bail!(
            "IP address allocation is off (router launched without --ipalloc-range): give the address to expose, e.g. meshnet expose 10.32.0.1/12"
        ),
        (_, s) if s.is_success() => body
            .trim()
            .parse()
            .map_err(|_| anyhow!("the router answered {body:?} instead of an address")),
        _ => bail!("cannot allocate an address for the host: {}", body.trim()),
    }
}

fn print_ips(addrs: &[Ipv4Net]) {
    let ips: Vec<String> = addrs.iter().map(|a| a.addr().to_string()).collect();
    println!("{}", ips.join(" "));
}

/// `meshnet expose [ADDR...] [--without-masquerade]`.
pub fn expose(env: &EnvArgs, args: &[String], masquerade: bool) -> Result<()> {
    let mut addrs: Vec<AddrArg> = args.iter().map(|a| parse_addr(a)).collect::<Result<_>>()?;
    if addrs.is_empty() {
        addrs.push(AddrArg::Default);
    }
    runtime()?.block_on(async {
        let host = Netns::current()?;
        let mut exposed = Vec::new();
        for a in addrs {
            let (method, path) = ipam_request(a);
            let answer = client::call_async(env.http_addr, method, &path, &[]).await?;
            let cidr = ipam_answer(a, answer.status, &answer.body)?;
            expose::expose(&host, BRIDGE_NAME, cidr, masquerade)
                .await
                .with_context(|| format!("exposing {cidr}"))?;
            exposed.push(cidr);
        }
        print_ips(&exposed);
        Ok(())
    })
}

/// Parses a `hide` argument: an address (`CIDR` or `ip:CIDR`).
fn parse_hide(s: &str) -> Result<Ipv4Net> {
    match parse_addr(s)? {
        AddrArg::Ip(c) => Ok(c),
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
            if let Ok(a) = client::call_async(env.http_addr, Method::GET, &path, &[]).await
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
            if let Err(e) = client::call_async(env.http_addr, Method::DELETE, &path, &[]).await {
                eprintln!("meshnet: {cidr} stays allocated to the host in IPAM: {e:#}");
            }
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
    fn requests_follow_weave() {
        assert_eq!(
            ipam_request(AddrArg::Default),
            (Method::POST, "/ip/weave:expose".to_string())
        );
        assert_eq!(
            ipam_request(AddrArg::Net(net("10.2.0.0/16"))),
            (Method::POST, "/ip/weave:expose/10.2.0.0/16".to_string())
        );
        assert_eq!(
            ipam_request(AddrArg::Ip(net("10.32.0.9/12"))),
            (Method::PUT, "/ip/weave:expose/10.32.0.9/12".to_string())
        );
    }

    #[test]
    fn answers() {
        let d = AddrArg::Default;
        assert_eq!(
            ipam_answer(d, StatusCode::OK, "10.32.0.1/12\n").unwrap(),
            net("10.32.0.1/12")
        );
        let off = ipam_answer(d, StatusCode::NOT_FOUND, "").unwrap_err();
        assert!(
            off.to_string().contains("meshnet expose 10.32.0.1/12"),
            "{off}"
        );
        assert!(ipam_answer(d, StatusCode::OK, "garbage").is_err());
        assert!(ipam_answer(d, StatusCode::BAD_REQUEST, "range full").is_err());
        let ip = AddrArg::Ip(net("10.32.0.9/12"));
        assert_eq!(
            ipam_answer(ip, StatusCode::NOT_FOUND, "").unwrap(),
            net("10.32.0.9/12")
        );
        let taken = ipam_answer(ip, StatusCode::CONFLICT, "owned by c1").unwrap_err();
        assert!(taken.to_string().contains("owned by c1"), "{taken}");
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
