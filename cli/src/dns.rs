//! The DNS commands: `dns-add`, `dns-remove`, `dns-lookup`,
//! `dns-args`, and the registration `attach` does.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use http::{Method, StatusCode};
use meshnet_mesh::dns::EXTERN_CONTAINER;

use crate::args::EnvArgs;
use crate::client;
use crate::container;

/// How long `dns-lookup` waits for the router's DNS server.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers `name` for each address of container `ident`; DNS being off
/// is fine, other failures are reported on stderr (the attach worked).
pub async fn register(env: &EnvArgs, ident: &str, ips: &[Ipv4Addr], name: &str) {
    for ip in ips {
        let path = format!("/name/{ident}/{ip}");
        match client::call_async(env.api(), Method::PUT, &path, &[("fqdn", name)]).await {
            Ok(a) if a.status.is_success() || a.status == StatusCode::NOT_FOUND => {}
            Ok(a) => eprintln!(
                "meshnet: not registering {name} in DNS: {}",
                a.body.trim_end()
            ),
            Err(e) => eprintln!("meshnet: not registering {name} in DNS: {e}"),
        }
    }
}

/// Splits `[IP...] [CONTAINER]`.
fn split(args: &[String]) -> (Vec<Ipv4Addr>, Option<&str>) {
    let mut ips = Vec::new();
    let mut container = None;
    for a in args {
        let bare = a.split('/').next().unwrap_or(a);
        match bare.parse::<Ipv4Addr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => container = Some(a.as_str()),
        }
    }
    (ips, container)
}

/// What `dns-add`/`dns-remove` act on: ident, addresses, name.
async fn target(
    args: &[String],
    fqdn: Option<&str>,
    need_ips: bool,
) -> Result<(String, Vec<Ipv4Addr>, Option<String>)> {
    let (mut ips, container) = split(args);
    let Some(name) = container else {
        if fqdn.is_none() {
            bail!("name a container, or give the name with -h FQDN (dns-add IP... -h FQDN)");
        }
        if ips.is_empty() {
            bail!("give the addresses to register: dns-add IP... -h FQDN");
        }
        return Ok((EXTERN_CONTAINER.into(), ips, fqdn.map(str::to_string)));
    };
    let c = container::resolve(name).await?;
    if ips.is_empty() && need_ips {
        let host = meshnet_router::datapath::Netns::current()?;
        ips = meshnet_router::datapath::container_addrs(
            &host,
            &c.netns,
            meshnet_router::dataplane::BRIDGE_NAME,
        )
        .await?
        .map(|a| a.addrs.iter().map(|n| n.addr()).collect())
        .unwrap_or_default();
        if ips.is_empty() {
            bail!("{name} has no mesh address: attach it first, or give the IPs");
        }
    }
    let fqdn = fqdn.map(str::to_string).or(c.dns_name);
    Ok((c.ident, ips, fqdn))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")
}

fn check(answer: client::Answer) -> Result<()> {
    match answer.status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => bail!("{}", answer.body.trim_end()),
        s => bail!("router answered {s}: {}", answer.body.trim_end()),
    }
}

/// Names `ips` of `ident` `fqdn` in DNS (`expose -h`); the router's refusal
/// (DNS off, a name outside the domain) is the error.
pub async fn name_addrs(env: &EnvArgs, ident: &str, ips: &[Ipv4Addr], fqdn: &str) -> Result<()> {
    for ip in ips {
        let path = format!("/name/{ident}/{ip}");
        check(client::call_async(env.api(), Method::PUT, &path, &[("fqdn", fqdn)]).await?)
            .with_context(|| format!("naming {ip} {fqdn} in DNS"))?;
    }
    Ok(())
}

/// `meshnet dns-add [IP...] CONTAINER [-h FQDN]` / `dns-add IP... -h FQDN`.
pub fn add(env: &EnvArgs, args: &[String], fqdn: Option<&str>) -> Result<()> {
    runtime()?.block_on(async {
        let (ident, ips, name) = target(args, fqdn, true).await?;
        let name = name.ok_or_else(|| anyhow!("no name to register: give -h FQDN"))?;
        for ip in ips {
            let path = format!("/name/{ident}/{ip}");
            check(client::call_async(env.api(), Method::PUT, &path, &[("fqdn", &name)]).await?)?;
        }
        Ok(())
    })
}

/// `meshnet dns-remove [IP...] CONTAINER [-h FQDN]` / `dns-remove IP... -h FQDN`.
pub fn remove(env: &EnvArgs, args: &[String], fqdn: Option<&str>) -> Result<()> {
    runtime()?.block_on(async {
        let (ident, ips, _) = target(args, fqdn, false).await?;
        let form: Vec<(&str, &str)> = fqdn.map(|f| ("fqdn", f)).into_iter().collect();
        let paths: Vec<String> = if ips.is_empty() {
            vec![format!("/name/{ident}")]
        } else {
            ips.iter().map(|ip| format!("/name/{ident}/{ip}")).collect()
        };
        for path in paths {
            check(client::call_async(env.api(), Method::DELETE, &path, &form).await?)?;
        }
        Ok(())
    })
}

/// The router's DNS server address (`GET /dns-address-port`).
fn server(env: &EnvArgs) -> Result<SocketAddr> {
    let a = client::call(env.api(), Method::GET, "/dns-address-port", &[])?;
    if !a.status.is_success() {
        bail!("{}", a.body.trim_end());
    }
    a.body
        .trim()
        .parse()
        .map_err(|e| anyhow!("the router gave a bad DNS address {:?}: {e}", a.body))
}

/// `meshnet dns-lookup NAME`: the addresses, one per line (as `dig +short`).
pub fn lookup(env: &EnvArgs, name: &str) -> Result<()> {
    let server = server(env)?;
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let id = rand::random::<u16>();
    let query = meshnet_router::dns::answer::query(&fqdn, RecordType::A, id);
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).context("opening a UDP socket")?;
    sock.set_read_timeout(Some(LOOKUP_TIMEOUT))?;
    sock.send_to(&query, server)
        .with_context(|| format!("asking the DNS server on {server}"))?;
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .with_context(|| format!("no answer from the DNS server on {server}"))?;
    let reply = Message::from_vec(&buf[..n]).map_err(|e| anyhow!("bad DNS reply: {e}"))?;
    if reply.metadata.id != id {
        bail!("the DNS server on {server} answered another query");
    }
    if reply.metadata.response_code != ResponseCode::NoError {
        // As `dig +short`: nothing printed, but say why on stderr.
        eprintln!("{name}: {}", reply.metadata.response_code);
        return Ok(());
    }
    for r in &reply.answers {
        if let RData::A(a) = &r.data {
            println!("{}", a.0);
        }
    }
    Ok(())
}

/// `meshnet dns-args`: `--dns=IP --dns-search=DOMAIN`, nothing when DNS is off.
pub fn args(env: &EnvArgs) -> Result<()> {
    let domain = client::call(env.api(), Method::GET, "/domain", &[])?;
    let addr = client::call(env.api(), Method::GET, "/dns-address", &[])?;
    if domain.status.is_success() && addr.status.is_success() {
        println!(
            "--dns={} --dns-search={}",
            addr.body.trim(),
            domain.body.trim()
        );
    }
    Ok(())
}
