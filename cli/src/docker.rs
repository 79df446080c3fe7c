//! The Docker side of `meshnet launch` and `stop`: which Docker engine to
//! use, starting the API proxy and the container liveness watcher inside
//! the router process, and whether the network plugin runs.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use meshnet_proxy::plugin::{PLUGIN_SOCKET, PluginConfig};
use meshnet_proxy::{DEFAULT_DOCKER_API, DockerAddr, ProxyConfig};
use tokio_util::sync::CancellationToken;

use crate::args::{EnvArgs, LaunchArgs};
use crate::env::proxy_url;

/// Docker settings of one router, resolved once in the launching process
/// (which has the user's environment) and handed to the router as flags.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The engine, as a `unix://` or `tcp://` address.
    pub docker_api: String,
    pub proxy: bool,
    pub default_ipalloc: bool,
    pub rewrite_inspect: bool,
    pub without_dns: bool,
    pub multicast_route: bool,
    pub rewrite_hosts: bool,
    pub hostname_from_label: Option<String>,
    pub hostname_match: String,
    pub hostname_replacement: String,
    /// The proxy's listen addresses (`-H`); empty: the default socket.
    pub listen: Vec<String>,
    pub plugin: bool,
}

/// The engine to use: `--docker-api`, else `$DOCKER_HOST` — unless that is
/// this router's own proxy (after `eval $(meshnet env)`), which would loop,
/// then `$ORIG_DOCKER_HOST` — else Docker's default socket.
pub fn docker_api(
    flag: Option<&str>,
    docker_host: Option<&str>,
    orig: Option<&str>,
    run_dir: &Path,
) -> String {
    let own = proxy_url(run_dir);
    let usable = |s: &&str| !s.is_empty() && *s != own;
    flag.filter(|s| !s.is_empty())
        .or_else(|| docker_host.filter(usable))
        .or_else(|| orig.filter(usable))
        .unwrap_or(DEFAULT_DOCKER_API)
        .to_string()
}

impl Setup {
    /// Resolves the launch flags against the environment.
    pub fn resolve(env: &EnvArgs, args: &LaunchArgs) -> Result<Setup> {
        let docker_api = docker_api(
            args.docker_api.as_deref(),
            std::env::var("DOCKER_HOST").ok().as_deref(),
            std::env::var("ORIG_DOCKER_HOST").ok().as_deref(),
            &env.run_dir,
        );
        let addr: DockerAddr = docker_api
            .parse()
            .map_err(|e| anyhow!("--docker-api: {e}"))?;
        let plugin = match args.plugin {
            Some(true) if !in_docker_netns() => bail!(
                "--plugin needs the router in Docker's network namespace (dockerd moves each container's interface from there), and this is another one: containers on the network could not start. Run `meshnet launch` in the host's namespace, or leave --plugin off"
            ),
            Some(p) => p,
            None => in_docker_netns() && reachable(&addr),
        };
        for l in &args.listen {
            l.parse::<DockerAddr>()
                .map_err(|e| anyhow!("-H {l:?}: {e}; use unix:///PATH or tcp://HOST:PORT"))?;
        }
        // Checked here so a bad pattern fails `launch` itself.
        meshnet_proxy::hosts::HostnameRule::new(
            args.hostname_from_label.as_deref(),
            &args.hostname_match,
            &args.hostname_replacement,
        )?;
        Ok(Setup {
            docker_api,
            proxy: args.proxy,
            default_ipalloc: !args.no_default_ipalloc,
            rewrite_inspect: args.rewrite_inspect,
            without_dns: args.without_dns,
            multicast_route: !args.no_multicast_route,
            rewrite_hosts: !args.no_rewrite_hosts,
            hostname_from_label: args.hostname_from_label.clone(),
            hostname_match: args.hostname_match.clone(),
            hostname_replacement: args.hostname_replacement.clone(),
            listen: args.listen.clone(),
            plugin,
        })
    }

    /// What `status` and `report` list besides the router and IPAM.
    pub fn services(&self, env: &EnvArgs) -> meshnet_router::report::Services {
        meshnet_router::report::Services {
            proxy: self.proxy.then(|| {
                if self.listen.is_empty() {
                    vec![proxy_url(&env.run_dir)]
                } else {
                    self.listen.clone()
                }
            }),
            plugin: self
                .plugin
                .then(|| meshnet_proxy::plugin::DRIVER.to_string()),
        }
    }

    /// The flags that carry this setup to the detached router.
    pub fn child_args(&self) -> Vec<String> {
        let mut v = vec![
            format!("--proxy={}", self.proxy),
            format!("--docker-api={}", self.docker_api),
            format!("--plugin={}", self.plugin),
        ];
        if !self.default_ipalloc {
            v.push("--no-default-ipalloc".into());
        }
        if self.rewrite_inspect {
            v.push("--rewrite-inspect".into());
        }
        if self.without_dns {
            v.push("--without-dns".into());
        }
        if !self.multicast_route {
            v.push("--no-multicast-route".into());
        }
        if !self.rewrite_hosts {
            v.push("--no-rewrite-hosts".into());
        }
        if let Some(l) = &self.hostname_from_label {
            v.push(format!("--hostname-from-label={l}"));
        }
        for l in &self.listen {
            v.push(format!("-H{l}"));
        }
        v.push(format!("--hostname-match={}", self.hostname_match));
        v.push(format!(
            "--hostname-replacement={}",
            self.hostname_replacement
        ));
        v
    }

    /// Starts the proxy (when on) in the router's runtime.
    pub async fn start_proxy(&self, env: &EnvArgs, shutdown: CancellationToken) -> Result<()> {
        if !self.proxy {
            return Ok(());
        }
        let docker: DockerAddr = self
            .docker_api
            .parse()
            .map_err(|e| anyhow!("--docker-api: {e}"))?;
        let mut config = ProxyConfig::new(&env.run_dir, docker, env.api());
        config.default_ipalloc = self.default_ipalloc;
        config.rewrite_inspect = self.rewrite_inspect;
        config.dns = !self.without_dns;
        config.multicast_route = self.multicast_route;
        config.rewrite_hosts = self.rewrite_hosts;
        if !self.listen.is_empty() {
            config.listen = self
                .listen
                .iter()
                .map(|l| l.parse().map_err(|e| anyhow!("-H {l:?}: {e}")))
                .collect::<Result<_>>()?;
        }
        config.hostname = meshnet_proxy::hosts::HostnameRule::new(
            self.hostname_from_label.as_deref(),
            &self.hostname_match,
            &self.hostname_replacement,
        )?;
        meshnet_proxy::start(config, shutdown).await.map_err(|e| {
            anyhow!(
                "cannot start the Docker proxy: {e}; launch with --proxy=false to run without it"
            )
        })
    }
}

impl Setup {
    /// Follows container lives on the engine (always, proxy or not: the
    /// addresses of containers attached by hand go back when they die too).
    /// Without a reachable engine it waits for one quietly.
    pub fn start_liveness(&self, env: &EnvArgs, shutdown: CancellationToken) -> Result<()> {
        let docker: DockerAddr = self
            .docker_api
            .parse()
            .map_err(|e| anyhow!("--docker-api: {e}"))?;
        tokio::spawn(meshnet_proxy::liveness::watch(docker, env.api(), shutdown));
        Ok(())
    }

    /// Serves the network plugin (when on) and, once the router answers,
    /// creates the Docker network `meshnet`. Returns what `stop` removes.
    pub async fn start_plugin(
        &self,
        env: &EnvArgs,
        shutdown: CancellationToken,
    ) -> Result<Option<Plugin>> {
        if !self.plugin {
            return Ok(None);
        }
        let docker: DockerAddr = self
            .docker_api
            .parse()
            .map_err(|e| anyhow!("--docker-api: {e}"))?;
        let config = PluginConfig {
            socket: PLUGIN_SOCKET.into(),
            router_api: env.api(),
            docker,
        };
        meshnet_proxy::plugin::start(config.clone(), shutdown.clone())
            .await
            .map_err(|e| anyhow!("{e}; launch with --plugin=false to run without it"))?;
        let for_network = config.clone();
        tokio::spawn(async move {
            // The router's API (and IPAM) comes up right after this returns.
            for _ in 0..300 {
                if shutdown.is_cancelled() {
                    return;
                }
                match meshnet_proxy::plugin::create_network(&for_network).await {
                    Ok(()) => return,
                    Err(e) => tracing::debug!(error = %e, "Docker network not created yet"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if let Err(e) = meshnet_proxy::plugin::create_network(&for_network).await {
                tracing::warn!(error = %e, "cannot create the Docker network meshnet");
            }
        });
        Ok(Some(Plugin { config }))
    }
}

impl Setup {
    /// Waits until Docker lists the network `meshnet` (the router creates
    /// it once its API is up), until `deadline` or until `alive` says the
    /// router is gone; the error names what was waited for.
    pub fn wait_for_network(
        &self,
        deadline: std::time::Instant,
        mut alive: impl FnMut() -> bool,
    ) -> Result<()> {
        let docker: DockerAddr = self
            .docker_api
            .parse()
            .map_err(|e| anyhow!("--docker-api: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow!("starting the I/O runtime: {e}"))?;
        let started = std::time::Instant::now();
        let path = format!("/networks/{}", meshnet_proxy::plugin::DRIVER);
        loop {
            let seen = rt.block_on(async {
                tokio::time::timeout(NETWORK_POLL_TIMEOUT, docker.json(&path)).await
            });
            match seen {
                Ok(Ok(v))
                    if v.get("Driver").and_then(|d| d.as_str())
                        == Some(meshnet_proxy::plugin::DRIVER) =>
                {
                    return Ok(());
                }
                Ok(Ok(v)) => bail!(
                    "a Docker network named {0} exists with driver {1}; remove it (docker network rm {0})",
                    meshnet_proxy::plugin::DRIVER,
                    v.get("Driver").unwrap_or(&serde_json::Value::Null)
                ),
                _ => {}
            }
            if !alive() {
                bail!(
                    "the router exited while waiting for the Docker network {}",
                    meshnet_proxy::plugin::DRIVER
                );
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "waiting for the Docker network {} (docker network ls on {}): not there after {:?}",
                    meshnet_proxy::plugin::DRIVER,
                    self.docker_api,
                    started.elapsed()
                );
            }
            std::thread::sleep(NETWORK_POLL);
        }
    }
}

/// How often `launch` looks for the Docker network.
const NETWORK_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long one look may take (an engine that accepts but never answers).
const NETWORK_POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The plugin's registration with Docker, undone at stop.
#[derive(Debug)]
pub struct Plugin {
    config: PluginConfig,
}

impl Plugin {
    /// Removes the Docker network `meshnet` while the plugin still answers
    /// (Docker calls it to delete the network).
    pub async fn unregister(self) {
        if let Err(e) = meshnet_proxy::plugin::remove_network(&self.config.docker).await {
            tracing::warn!(error = %e, "cannot remove the Docker network meshnet; remove it with `docker network rm meshnet`");
        }
    }
}

/// Where dockerd writes its pid.
const DOCKER_PID_FILES: [&str; 2] = ["/var/run/docker.pid", "/run/docker.pid"];

/// True in dockerd's network namespace (read through its pid file), where
/// it moves plugin interfaces from; without a readable pid file, the
/// machine's own namespace (that of pid 1).
pub fn in_docker_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    let dockerd = DOCKER_PID_FILES.iter().find_map(|f| {
        let pid: u32 = std::fs::read_to_string(f).ok()?.trim().parse().ok()?;
        std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()
    });
    match (dockerd, std::fs::metadata("/proc/self/ns/net")) {
        (Some(d), Ok(own)) => d.ino() == own.ino() && d.dev() == own.dev(),
        _ => in_root_netns(),
    }
}

/// True in the machine's own network namespace (that of pid 1).
pub fn in_root_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    /// The kernel's fixed inode number of the initial network namespace
    /// (`PROC_NET_INIT_INO`), for when pid 1's namespace cannot be read.
    const INIT_NET_INO: u64 = 0xEFFF_FFF9;
    let Ok(own) = std::fs::metadata("/proc/self/ns/net") else {
        return false;
    };
    match std::fs::metadata("/proc/1/ns/net") {
        Ok(init) => own.ino() == init.ino() && own.dev() == init.dev(),
        Err(_) => own.ino() == INIT_NET_INO,
    }
}

fn reachable(addr: &DockerAddr) -> bool {
    match addr {
        DockerAddr::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
        DockerAddr::Tcp(hp) => std::net::TcpStream::connect(hp.as_str()).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_is_never_our_own_proxy() {
        let run = Path::new("/run/meshnet");
        let own = "unix:///run/meshnet/meshnet.sock";
        assert_eq!(docker_api(None, None, None, run), DEFAULT_DOCKER_API);
        assert_eq!(
            docker_api(Some("tcp://h:2375"), Some("unix:///x"), None, run),
            "tcp://h:2375"
        );
        assert_eq!(docker_api(None, Some("unix:///x"), None, run), "unix:///x");
        assert_eq!(
            docker_api(None, Some(own), Some("unix:///orig"), run),
            "unix:///orig"
        );
        assert_eq!(
            docker_api(None, Some(own), Some(""), run),
            DEFAULT_DOCKER_API
        );
        assert_eq!(docker_api(None, Some(""), None, run), DEFAULT_DOCKER_API);
    }
}
