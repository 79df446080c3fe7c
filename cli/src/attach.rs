//! `meshnet attach`, `detach` and `ps`: addresses come
//! from the router's IPAM (`net:default`, `net:CIDR`) or are claimed there
//! (`CIDR`, `ip:CIDR`); the interface is made over netlink by this process.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, anyhow, bail};
use http::{Method, StatusCode};
use ipnet::Ipv4Net;
use meshnet_router::addrspec::{AddrSpec, IpamAnswerError};
use meshnet_router::datapath::{self, Netlink, Netns};
use meshnet_router::dataplane::BRIDGE_NAME;

use crate::args::EnvArgs;
use crate::client;
use crate::container::{self, Container};

/// The identity weave uses for the bridge's own addresses.
pub const EXPOSE_IDENT: &str = "weave:expose";

/// Splits `[ADDR...] CONTAINER`.
fn split(args: &[String]) -> Result<(Vec<AddrSpec>, &str)> {
    let (container, addrs) = args
        .split_last()
        .ok_or_else(|| anyhow!("name a container: a Docker name or id, netns:NAME or pid:N"))?;
    let addrs = addrs
        .iter()
        .map(|a| a.parse::<AddrSpec>())
        .collect::<Result<_, _>>()?;
    Ok((addrs, container))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")
}

async fn api(
    env: &EnvArgs,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> Result<client::Answer> {
    client::call_async(env.api(), method, path, form).await
}

/// Asks IPAM for the address an argument stands for; the bool says whether
/// IPAM gave it out.
async fn allocate(env: &EnvArgs, c: &Container, a: AddrSpec) -> Result<(Ipv4Net, bool)> {
    let (method, path) = a.request(&c.ident, c.docker);
    let answer = api(env, method, &path, &[]).await?;
    a.answer(answer.status.as_u16(), &answer.body)
        .map_err(|e| match e {
            IpamAnswerError::Disabled => anyhow!(
                "IP address allocation must be enabled to use 'net:' (launch with --ipalloc-range)"
            ),
            e => anyhow!("cannot attach {a}: {e}"),
        })
}

async fn bridge_mtu() -> Result<u32> {
    let nl = Netlink::connect(&Netns::current()?).await?;
    let bridge = nl.link_by_name(BRIDGE_NAME).await?.ok_or_else(|| {
        anyhow!("there is no {BRIDGE_NAME} bridge here: launch the router first (meshnet launch)")
    })?;
    Ok(bridge.mtu)
}

fn print_ips(addrs: &[Ipv4Net]) {
    let ips: Vec<String> = addrs.iter().map(|a| a.addr().to_string()).collect();
    println!("{}", ips.join(" "));
}

/// `meshnet attach [ADDR...] CONTAINER`.
pub fn attach(env: &EnvArgs, args: &[String], multicast_route: bool) -> Result<()> {
    let (mut addrs, name) = split(args)?;
    if addrs.is_empty() {
        addrs.push(AddrSpec::Default);
    }
    runtime()?.block_on(async {
        let c = container::resolve(name).await?;
        let mtu = bridge_mtu().await?;
        let before = datapath::container_addrs(&Netns::current()?, &c.netns, BRIDGE_NAME)
            .await?
            .map(|a| a.addrs)
            .unwrap_or_default();
        let mut wanted = Vec::new();
        let mut allocated = Vec::new();
        for a in &addrs {
            match allocate(env, &c, *a).await {
                Ok((cidr, from_ipam)) => {
                    if from_ipam && !before.contains(&cidr) {
                        allocated.push(cidr);
                    }
                    wanted.push(cidr);
                }
                Err(e) => {
                    release(env, &c, &allocated).await;
                    return Err(e);
                }
            }
        }
        match datapath::attach(
            &Netns::current()?,
            &c.netns,
            BRIDGE_NAME,
            &wanted,
            mtu,
            multicast_route,
        )
        .await
        {
            Ok(_) => {
                if let Some(name) = &c.dns_name {
                    let ips: Vec<Ipv4Addr> = wanted.iter().map(|a| a.addr()).collect();
                    crate::dns::register(env, &c.ident, &ips, name).await;
                }
                print_ips(&wanted);
                Ok(())
            }
            Err(e) => {
                release(env, &c, &allocated).await;
                Err(anyhow!("cannot attach {}: {e}", c.arg))
            }
        }
    })
}

/// Gives back addresses this command allocated before it failed.
async fn release(env: &EnvArgs, c: &Container, addrs: &[Ipv4Net]) {
    for a in addrs {
        let _ = api(
            env,
            Method::DELETE,
            &format!("/ip/{}/{}", c.ident, a.addr()),
            &[],
        )
        .await;
    }
}

/// `meshnet detach [ADDR...] CONTAINER`.
pub fn detach(env: &EnvArgs, args: &[String]) -> Result<()> {
    let (addrs, name) = split(args)?;
    runtime()?.block_on(async {
        let c = container::resolve(name).await?;
        let host = Netns::current()?;
        let current = datapath::container_addrs(&host, &c.netns, BRIDGE_NAME)
            .await?
            .ok_or_else(|| anyhow!("{} is not attached to the {BRIDGE_NAME} bridge", c.arg))?
            .addrs;
        // Addresses to remove, and whether IPAM gave them (then they are freed).
        let mut remove: Vec<(Ipv4Net, bool)> = Vec::new();
        if addrs.is_empty() {
            remove.extend(current.iter().map(|a| (*a, true)));
        }
        for a in &addrs {
            match a {
                AddrSpec::Ip(c) => remove.push((*c, false)),
                AddrSpec::Default | AddrSpec::Net(_) => {
                    let path = match a {
                        AddrSpec::Net(n) => {
                            format!("/ip/{}/{}/{}", c.ident, n.addr(), n.prefix_len())
                        }
                        _ => format!("/ip/{}", c.ident),
                    };
                    let answer = api(env, Method::GET, &path, &[]).await?;
                    if answer.status == StatusCode::NOT_FOUND {
                        bail!("IP address allocation must be enabled to use 'net:'");
                    }
                    for word in answer.body.split_whitespace() {
                        if let Ok(cidr) = word.parse::<Ipv4Net>() {
                            remove.push((cidr, true));
                        }
                    }
                }
            }
        }
        let only: Vec<Ipv4Net> = remove
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| current.contains(a))
            .collect();
        if only.is_empty() {
            bail!("{} has none of those addresses", c.arg);
        }
        datapath::detach(&host, &c.netns, BRIDGE_NAME, &only).await?;
        // Every removed address IPAM holds for this container goes back,
        // explicit ones (claimed at attach) too.
        let held = api(env, Method::GET, &format!("/ip/{}", c.ident), &[]).await?;
        let held: Vec<Ipv4Addr> = if held.status.is_success() {
            held.body
                .split_whitespace()
                .filter_map(|w| w.parse::<Ipv4Net>().ok())
                .map(|n| n.addr())
                .collect()
        } else {
            Vec::new()
        };
        for ip in only
            .iter()
            .map(Ipv4Net::addr)
            .filter(|ip| held.contains(ip))
        {
            let answer = api(env, Method::DELETE, &format!("/ip/{}/{ip}", c.ident), &[]).await?;
            if !answer.status.is_success() {
                bail!(
                    "removed {ip} from {} but IPAM did not release it: {}",
                    c.arg,
                    answer.body.trim()
                );
            }
        }
        for a in &only {
            // DNS off answers 404; the names simply go.
            let path = format!("/name/{}/{}", c.ident, a.addr());
            let _ = api(env, Method::DELETE, &path, &[]).await;
        }
        print_ips(&only);
        Ok(())
    })
}

/// `meshnet ps [CONTAINER...]`: `<id> <mac> <cidr>...` per attached container.
pub fn ps(args: &[String]) -> Result<()> {
    runtime()?.block_on(async {
        let host = Netns::current()?;
        let nl = Netlink::connect(&host).await?;
        let show_all = args.is_empty();
        if (show_all || args.iter().any(|a| a == EXPOSE_IDENT))
            && let Some(bridge) = nl.link_by_name(BRIDGE_NAME).await?
        {
            let addrs = nl.addresses(bridge.index).await?;
            let mac = bridge.mac.map(|m| m.to_string()).unwrap_or_default();
            println!("{}", line(EXPOSE_IDENT, &mac, &addrs));
        }
        let containers = if show_all {
            container::all().await
        } else {
            let mut v = Vec::new();
            for a in args.iter().filter(|a| *a != EXPOSE_IDENT) {
                v.push(container::resolve(a).await?);
            }
            v
        };
        for c in containers {
            if let Ok(Some(found)) = datapath::container_addrs(&host, &c.netns, BRIDGE_NAME).await {
                let shown = if show_all {
                    short_id(&c.ident)
                } else {
                    c.arg.clone()
                };
                println!("{}", line(&shown, &found.mac.to_string(), &found.addrs));
            }
        }
        Ok(())
    })
}

fn short_id(ident: &str) -> String {
    if ident.len() == 64 && ident.bytes().all(|b| b.is_ascii_hexdigit()) {
        ident[..12].to_string()
    } else {
        ident.to_string()
    }
}

fn line(id: &str, mac: &str, addrs: &[Ipv4Net]) -> String {
    let mut s = format!("{id} {mac}");
    for a in addrs {
        s.push(' ');
        s.push_str(&a.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_lines_follow_weave() {
        let id = "b07565b06c53aaaabbbbccccddddeeeeffff0000111122223333444455556666";
        assert_eq!(short_id(id), "b07565b06c53");
        assert_eq!(short_id("netns:c1"), "netns:c1");
        let addrs = [
            "10.2.1.1/24".parse().unwrap(),
            "10.2.2.1/24".parse().unwrap(),
        ];
        assert_eq!(
            line("caa1d4ee2570", "ba:8c:b9:dc:e1:c9", &addrs),
            "caa1d4ee2570 ba:8c:b9:dc:e1:c9 10.2.1.1/24 10.2.2.1/24"
        );
    }
}
