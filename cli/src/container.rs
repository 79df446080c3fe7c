//! Naming containers on the command line: a Docker container (name or id,
//! looked up through the Docker API), `netns:NAME` (`/run/netns/NAME`) or
//! `pid:N` (`/proc/N/ns/net`).

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use meshnet_router::datapath::Netns;

/// A container resolved to its network namespace.
#[derive(Debug)]
pub struct Container {
    /// As the user wrote it (weave echoes it in `ps`).
    pub arg: String,
    /// The IPAM identity: the Docker container id, or the argument itself.
    pub ident: String,
    pub netns: Netns,
    /// A Docker container: IPAM releases its addresses when it dies
    /// (weave's `check-alive`); a netns or process is the user's to detach.
    pub docker: bool,
    /// The name DNS registers it under (see [`dns_name`]); none for
    /// `netns:` and `pid:` containers.
    pub dns_name: Option<String>,
}

/// Resolves a container argument.
pub async fn resolve(arg: &str) -> Result<Container> {
    let netns = if let Some(name) = arg.strip_prefix("netns:") {
        Netns::named(name)?
    } else if let Some(pid) = arg.strip_prefix("pid:") {
        let pid: u32 = pid
            .parse()
            .map_err(|_| anyhow!("invalid container {arg:?}: pid:N needs a process id"))?;
        Netns::of_pid(pid)?
    } else {
        return docker(arg).await;
    };
    Ok(Container {
        arg: arg.to_string(),
        ident: arg.to_string(),
        netns,
        docker: false,
        dns_name: None,
    })
}

fn connect() -> Result<Docker> {
    Docker::connect_with_local_defaults().context(
        "cannot reach the Docker engine; name the container as netns:NAME or pid:N, or start Docker",
    )
}

async fn docker(name: &str) -> Result<Container> {
    let d = connect()?;
    let info = d
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => {
                anyhow!("no such container: {name} (name a Docker container, netns:NAME or pid:N)")
            }
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                anyhow!("Docker says: {message}")
            }
            other => {
                anyhow!("cannot ask Docker about {name}: {other}; is the Docker engine running?")
            }
        })?;
    let state = info.state.unwrap_or_default();
    let pid = state.pid.unwrap_or(0);
    if state.running != Some(true) || pid <= 0 {
        bail!("container {name} is not running: start it first (docker start {name})");
    }
    let id = info.id.unwrap_or_else(|| name.to_string());
    let config = info.config.unwrap_or_default();
    let dns_name = dns_name(
        config.hostname.as_deref().unwrap_or(""),
        config.domainname.as_deref().unwrap_or(""),
        info.name.as_deref(),
    );
    Ok(Container {
        arg: name.to_string(),
        ident: id,
        netns: Netns::of_pid(u32::try_from(pid).unwrap_or(0))?,
        docker: true,
        dns_name,
    })
}

/// The name DNS registers a Docker container under: `hostname.domainname`
/// when it has a domain, its hostname when that is an FQDN already
/// (`docker run -h seetwo.weave.local`), else its name.
fn dns_name(hostname: &str, domainname: &str, name: Option<&str>) -> Option<String> {
    if !hostname.is_empty() && !domainname.is_empty() {
        Some(format!("{hostname}.{domainname}"))
    } else if hostname.contains('.') {
        Some(hostname.to_string())
    } else {
        name.map(|n| n.trim_start_matches('/').to_string())
    }
}

/// Every running Docker container, plus every named netns (for `ps`).
pub async fn all() -> Vec<Container> {
    let mut out = Vec::new();
    if let Ok(d) = connect()
        && let Ok(list) = d.list_containers(None::<ListContainersOptions>).await
    {
        for c in list {
            if let Some(id) = c.id
                && let Ok(found) = docker(&id).await
            {
                out.push(found);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            let arg = format!("netns:{n}");
            if let Ok(ns) = Netns::named(&n) {
                out.push(Container {
                    arg: arg.clone(),
                    ident: arg,
                    netns: ns,
                    docker: false,
                    dns_name: None,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_containers_dns_name() {
        assert_eq!(
            dns_name("web", "weave.local", Some("/c1")).as_deref(),
            Some("web.weave.local")
        );
        assert_eq!(
            dns_name("seetwo.weave.local", "", Some("/c2")).as_deref(),
            Some("seetwo.weave.local")
        );
        assert_eq!(dns_name("3f2c9a1b", "", Some("/c3")).as_deref(), Some("c3"));
        assert_eq!(dns_name("", "", None), None);
    }
}
