//! `meshnet launch` and `meshnet stop`/`reset`: starting the router detached
//! (its own session, logging to `$MESHNET_RUN_DIR/router.log`), running it in
//! the foreground, and stopping it through its pid file.
//!
//! One router per run dir: the foreground process holds an exclusive lock on
//! `router.lock` for its whole life, so a stale pid file can never make a
//! second router think one is running, nor the reverse.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use http::Method;
use meshnet_ipam::{Cidr, Init};
use meshnet_router::RouterConfig;
use meshnet_router::config::Password;
use meshnet_router::ipam::IpamConfig;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use crate::args::{EnvArgs, LaunchArgs};
use crate::client;

/// Pid file of the running router.
pub const PID_FILE: &str = "router.pid";
/// Lock held by the running router.
pub const LOCK_FILE: &str = "router.lock";
/// The detached router's log.
pub const LOG_FILE: &str = "router.log";
/// How long `launch` waits for the API to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Names the inherited pipe the router process reads its password from.
/// `launch` starts the router (detached, or re-executing itself in the
/// foreground) with the password in this pipe, so it is in neither the
/// router's environment (`/proc/PID/environ`, inherited by every child such
/// as `nft`) nor its argv.
pub const PASSWORD_FD_ENV: &str = "MESHNET_PASSWORD_FD";
/// Longest password accepted, in bytes (it must fit in a pipe's buffer).
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// `meshnet launch`.
pub fn launch(env: &EnvArgs, mut args: LaunchArgs) -> Result<()> {
    let piped = take_piped_password()?;
    if piped.is_some() {
        args.password = piped.clone();
    }
    if let Some(p) = &args.password
        && p.len() > MAX_PASSWORD_BYTES
    {
        bail!("the password is longer than {MAX_PASSWORD_BYTES} bytes; use a shorter one");
    }
    let config = router_config(env, &args)?;
    let docker = crate::docker::Setup::resolve(env, &args)?;
    let log_filter = args.log_level.as_deref().map(log_filter).transpose()?;
    if args.token.is_some() {
        eprintln!("{TOKEN_WARNING}");
    }
    if args.foreground {
        if piped.is_none() && args.password.is_some() {
            // Came from MESHNET_PASSWORD or --password: start again with it
            // in a pipe, so this process's environment and argv never hold it.
            let mut cmd = router_command(env, &args, &docker)?;
            return Err(anyhow!(cmd.exec()).context("re-executing the router"));
        }
        return run_foreground(config, env, docker, log_filter);
    }
    if let Some(pid) = running_pid(&env.run_dir)? {
        bail!("meshnet is already running (pid {pid}); stop it with `meshnet stop`");
    }
    std::fs::create_dir_all(&env.run_dir)
        .with_context(|| format!("creating {}", env.run_dir.display()))?;
    let log_path = env.run_dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);

    let mut cmd = router_command(env, &args, &docker)?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log);
    // SAFETY: setsid() is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let made = Leftovers::before_launch();
    let mut child = cmd.spawn().context("starting the router process")?;

    let deadline = Instant::now() + READY_TIMEOUT;
    let failure = loop {
        if let Some(status) = child.try_wait().context("watching the router process")? {
            break anyhow!(
                "the router exited ({status}) before it was ready: {}",
                log_error(&log_path, log_start)
            );
        }
        if let Err(e) = api_reachable(env.http_addr) {
            break e;
        }
        if let Ok(answer) = client::call(env.api(), Method::GET, "/report", &[])
            && answer.status.is_success()
        {
            let report: serde_json::Value =
                serde_json::from_str(&answer.body).context("parsing the router's report")?;
            let name = report["Router"]["Name"].as_str().unwrap_or_default();
            // With the plugin, `docker run --network meshnet` must work the
            // moment launch returns.
            if docker.plugin
                && let Err(e) =
                    docker.wait_for_network(deadline, || child.try_wait().ok().flatten().is_none())
            {
                break anyhow!("{e}; {}", log_error(&log_path, log_start));
            }
            println!("{name}");
            return Ok(());
        }
        if Instant::now() > deadline {
            break anyhow!(
                "the router did not answer on {} within {READY_TIMEOUT:?}; {}",
                env.http_addr,
                log_error(&log_path, log_start)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    end_child(&mut child);
    made.remove(&env.run_dir);
    Err(failure)
}

/// How long a failed launch waits for its router to exit after SIGTERM
/// before it kills it.
const FAILED_STOP_WAIT: Duration = Duration::from_secs(5);

/// Stops a router that did not become ready: SIGTERM (it cleans up its
/// sockets), then SIGKILL; waits until it is gone.
fn end_child(child: &mut std::process::Child) {
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + FAILED_STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// What a launch may create, noted before it starts, so a failed launch
/// removes only what it made.
struct Leftovers {
    /// The bridge existed before (a stopped router's, with containers on it).
    had_bridge: bool,
}

impl Leftovers {
    fn before_launch() -> Leftovers {
        Leftovers {
            had_bridge: bridge_exists(),
        }
    }

    /// After the failed router is gone: its pid file, its proxy socket and,
    /// unless they were there before, the bridge, VXLAN device and nft table.
    fn remove(&self, run_dir: &Path) {
        if matches!(running_pid(run_dir), Ok(Some(_))) {
            return;
        }
        for f in [PID_FILE, meshnet_proxy::SOCKET_FILE] {
            let _ = std::fs::remove_file(run_dir.join(f));
        }
        if !self.had_bridge
            && let Err(e) = crate::cleanup::sweep()
        {
            eprintln!("meshnet: cannot remove what the failed launch made: {e:#}");
        }
    }
}

fn bridge_exists() -> bool {
    std::path::Path::new("/sys/class/net")
        .join(meshnet_router::dataplane::BRIDGE_NAME)
        .exists()
}

/// Fails at once when the API address cannot be reached at all (as opposed
/// to nothing listening yet): a loopback interface that is down.
fn api_reachable(addr: std::net::SocketAddr) -> Result<()> {
    /// `IFF_UP` in `/sys/class/net/lo/flags`.
    const IFF_UP: u32 = 0x1;
    let lo_up = || {
        std::fs::read_to_string("/sys/class/net/lo/flags")
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .is_none_or(|f| f & IFF_UP != 0)
    };
    if addr.ip().is_loopback() && !lo_up() {
        bail!(
            "cannot reach the router's API address {addr}: the loopback interface is down; bring it up with `ip link set lo up`"
        );
    }
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            ) || e.raw_os_error() == Some(libc::ENETUNREACH) =>
        {
            let hint = if addr.ip().is_loopback() {
                "; is the loopback interface down? (bring it up with `ip link set lo up`)"
            } else {
                ""
            };
            bail!("cannot reach the router's API address {addr}: {e}{hint}")
        }
        _ => Ok(()),
    }
}

/// The command that runs the router in the foreground with `args`; the
/// password, if any, goes in a pipe named by [`PASSWORD_FD_ENV`].
fn router_command(
    env: &EnvArgs,
    args: &LaunchArgs,
    docker: &crate::docker::Setup,
) -> Result<Command> {
    let exe = std::env::current_exe().context("finding the meshnet executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("launch")
        .arg("--foreground")
        .args(docker.child_args())
        .args(child_args(args))
        .env("MESHNET_RUN_DIR", &env.run_dir)
        .env("MESHNET_DATA_DIR", &env.data_dir)
        .env("MESHNET_HTTP_ADDR", env.http_addr.to_string())
        .env_remove(PASSWORD_FD_ENV);
    // Everything the settings read from the environment was resolved here
    // and goes as flags; weave's names must not come back in the child (the
    // password least of all, nor WEAVE_NO_FASTDP, which has no "off" flag).
    for s in crate::settings::LAUNCH {
        cmd.env_remove(s.ours).env_remove(s.weave);
    }
    cmd.env_remove(crate::settings::HTTP_ADDR.weave);
    if let Some(p) = args.password.as_deref().filter(|p| !p.is_empty()) {
        let (read, write) = nix::unistd::pipe().context("making a pipe for the password")?;
        std::fs::File::from(write)
            .write_all(p.as_bytes())
            .context("writing the password to its pipe")?;
        // Not close-on-exec (pipe(2) without O_CLOEXEC): the router inherits
        // it. It stays open here until this process exits or execs.
        let fd = std::os::fd::IntoRawFd::into_raw_fd(read);
        cmd.env(PASSWORD_FD_ENV, fd.to_string());
    }
    Ok(cmd)
}

/// Reads the password from the pipe [`PASSWORD_FD_ENV`] names, if it is set.
fn take_piped_password() -> Result<Option<String>> {
    let Ok(value) = std::env::var(PASSWORD_FD_ENV) else {
        return Ok(None);
    };
    let fd: std::os::fd::RawFd =
        value.parse().ok().filter(|fd| *fd > 2).ok_or_else(|| {
            anyhow!("{PASSWORD_FD_ENV}={value:?} is not a file descriptor number")
        })?;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!(
            "{PASSWORD_FD_ENV}={fd} is not an open file descriptor: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the descriptor is open (checked above) and was handed to us
    // by `launch` for this purpose alone; we own it from here on.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    std::io::Read::take(file, MAX_PASSWORD_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the password from its pipe")?;
    if bytes.len() > MAX_PASSWORD_BYTES {
        bail!("the password is longer than {MAX_PASSWORD_BYTES} bytes; use a shorter one");
    }
    let password = String::from_utf8(bytes).context("the password is not UTF-8")?;
    Ok(Some(password))
}

/// The arguments the detached child gets (everything but the password).
fn child_args(a: &LaunchArgs) -> Vec<String> {
    let mut v = vec![
        format!("--host={}", a.host),
        format!("--port={}", a.port),
        format!("--conn-limit={}", a.conn_limit),
        format!("--status-addr={}", a.status_addr),
    ];
    if let Some(n) = &a.name {
        v.push(format!("--name={n}"));
    }
    if let Some(n) = &a.nickname {
        v.push(format!("--nickname={n}"));
    }
    if a.no_discovery {
        v.push("--no-discovery".into());
    }
    v.push(format!("--mtu={}", a.mtu));
    if a.no_fastdp {
        v.push("--no-fastdp".into());
    }
    if let Some(x) = a.sleeve_rekey_interval {
        v.push(format!("--sleeve-rekey-interval={x}"));
    }
    v.push(format!("--ipalloc-range={}", a.ipalloc_range));
    if let Some(x) = &a.ipalloc_default_subnet {
        v.push(format!("--ipalloc-default-subnet={x}"));
    }
    if let Some(x) = &a.ipalloc_init {
        v.push(format!("--ipalloc-init={x}"));
    }
    if let Some(x) = &a.ipalloc_reclaim_after {
        v.push(format!("--ipalloc-reclaim-after={x}"));
    }
    if let Some(path) = &a.authorized_keys {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        v.push(format!("--authorized-keys={}", path.display()));
    }
    if !a.trusted_subnets.is_empty() {
        v.push(format!("--trusted-subnets={}", a.trusted_subnets.join(",")));
    }
    if a.no_dns {
        v.push("--no-dns".into());
    }
    v.push(format!("--dns-domain={}", a.dns_domain));
    if let Some(x) = &a.dns_listen_address {
        v.push(format!("--dns-listen-address={x}"));
    }
    v.push(format!("--dns-ttl={}", a.dns_ttl));
    v.push(format!("--dns-fallback-timeout={}", a.dns_fallback_timeout));
    v.push(format!("--resolv-conf={}", a.resolv_conf.display()));
    if let Some(l) = &a.log_level {
        v.push(format!("--log-level={l}"));
    }
    v.push("--".into());
    v.extend(a.peers.iter().cloned());
    v
}

/// The router's last error since `from` (its fatal `meshnet: ...` line,
/// else its last ERROR, else its last WARN line), and where the log is.
fn log_error(path: &Path, from: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let _ = f.seek(SeekFrom::Start(from));
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    let last = |pred: &dyn Fn(&str) -> bool| lines.iter().rev().find(|l| pred(l)).cloned();
    let found = last(&|l| l.starts_with("meshnet: "))
        .map(|l| l["meshnet: ".len()..].to_string())
        .or_else(|| last(&|l| l.contains(" ERROR ")))
        .or_else(|| last(&|l| l.contains(" WARN ")));
    match found {
        Some(e) => format!("{e}\n(full log: {})", path.display()),
        None => format!("its log ({}) shows no error", path.display()),
    }
}

/// What `launch --token` says: weave's cloud discovery is gone.
const TOKEN_WARNING: &str = "meshnet: warning: --token (Weave Cloud peer discovery) is not supported: that service no longer exists and meshnet never calls it; give the peers to `launch` or `connect` instead";

/// The `tracing` filter for weave's `--log-level` values.
pub fn log_filter(level: &str) -> Result<&'static str> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" => "error",
        _ => bail!("invalid --log-level {level:?}: use debug, info, warning or error"),
    })
}

/// Validates flags into a router configuration.
pub fn router_config(env: &EnvArgs, a: &LaunchArgs) -> Result<RouterConfig> {
    let nickname = match &a.nickname {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "meshnet".into()),
    };
    let mut c = RouterConfig::new(nickname, env.run_dir.clone(), env.data_dir.clone());
    c.name = a
        .name
        .as_deref()
        .map(|n| {
            n.parse().map_err(|e| {
                anyhow!("invalid --name {n:?}: {e}; use a MAC-style name such as 8a:3e:3e:3e:3e:3e")
            })
        })
        .transpose()?;
    c.password = a.password.clone().filter(|p| !p.is_empty()).map(Password);
    c.host = a.host;
    c.port = a.port;
    c.conn_limit = a.conn_limit;
    c.discovery = !a.no_discovery;
    for p in &a.peers {
        meshnet_mesh::check_peer(p).map_err(|e| anyhow!("{e}"))?;
    }
    c.peers = a.peers.clone();
    c.http_addr = env.http_addr;
    c.status_addr = match a.status_addr.as_str() {
        "" => None,
        s => Some(s.parse().map_err(|e| {
            anyhow!("invalid --status-addr {s:?}: {e}; use IP:PORT, or \"\" to disable")
        })?),
    };
    c.trusted_subnets = a
        .trusted_subnets
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|e| {
                anyhow!("invalid --trusted-subnets entry {s:?}: {e}; use CIDRs like 192.0.2.0/24")
            })
        })
        .collect::<Result<_>>()?;
    if let Some(path) = &a.authorized_keys {
        // Checked here so a bad line fails `launch` itself, with its line number.
        meshnet_router::authorized::load(path).map_err(|e| anyhow!("{e}"))?;
        c.authorized_keys = Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()));
    }
    c.ipam = ipam_config(a)?;
    c.dns = dns_config(a)?;
    if !(576..=65535).contains(&a.mtu) {
        bail!(
            "invalid --mtu {}: use a value from 576 to 65535 (default 1376)",
            a.mtu
        );
    }
    let max = meshnet_mesh::sleeve::REKEY_AFTER_TIME.as_secs();
    let sleeve_rekey_after = match a.sleeve_rekey_interval {
        None => meshnet_mesh::sleeve::REKEY_AFTER_TIME,
        Some(s) if (1..=max).contains(&s) => std::time::Duration::from_secs(s),
        Some(s) => bail!("invalid --sleeve-rekey-interval {s}: use 1 to {max} seconds"),
    };
    c.dataplane = Some(meshnet_router::dataplane::DataplaneConfig {
        mtu: a.mtu,
        fastdp: !a.no_fastdp,
        sleeve_port: a.port,
        sleeve_rekey_after,
    });
    Ok(c)
}

/// Validates the `--dns-*` flags.
fn dns_config(a: &LaunchArgs) -> Result<Option<meshnet_router::dns::DnsConfig>> {
    use meshnet_router::dns::{DNS_PORT, DnsConfig, parse_domain};
    if a.no_dns {
        return Ok(None);
    }
    let mut c = DnsConfig::new();
    c.domain = parse_domain(&a.dns_domain)
        .map_err(|e| anyhow!("{e}; use a domain such as weave.local."))?;
    c.listen = a
        .dns_listen_address
        .as_deref()
        .map(|s| {
            s.parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, DNS_PORT))
                })
                .map_err(|_| anyhow!("invalid --dns-listen-address {s:?}: use IP or IP:PORT"))
        })
        .transpose()?;
    c.ttl = a.dns_ttl;
    c.fallback_timeout = humantime::parse_duration(&a.dns_fallback_timeout).map_err(|e| {
        anyhow!(
            "invalid --dns-fallback-timeout {:?}: {e}; use a duration such as 5s",
            a.dns_fallback_timeout
        )
    })?;
    c.resolv_conf = a.resolv_conf.clone();
    Ok(Some(c))
}

/// Validates the `--ipalloc-*` flags.
fn ipam_config(a: &LaunchArgs) -> Result<Option<IpamConfig>> {
    if a.ipalloc_range.is_empty() {
        if a.ipalloc_default_subnet.is_some() || a.ipalloc_init.is_some() {
            bail!("--ipalloc-default-subnet and --ipalloc-init need an --ipalloc-range");
        }
        return Ok(None);
    }
    let cidr = |flag: &str, s: &str| -> Result<Cidr> {
        let c: Cidr = s
            .parse()
            .map_err(|e| anyhow!("invalid {flag} {s:?}: {e}; use a CIDR such as 10.32.0.0/12"))?;
        if !c.is_network() {
            bail!(
                "invalid {flag} {s}: host bits are set; did you mean {}?",
                c.network()
            );
        }
        Ok(c)
    };
    let range = cidr("--ipalloc-range", &a.ipalloc_range)?;
    let default_subnet = a
        .ipalloc_default_subnet
        .as_deref()
        .map(|s| cidr("--ipalloc-default-subnet", s))
        .transpose()?;
    if let Some(d) = default_subnet
        && !d.range().overlaps(&range.range())
    {
        bail!("--ipalloc-default-subnet {d} lies outside --ipalloc-range {range}");
    }
    let default_quorum = u32::try_from(a.peers.len() + 1).unwrap_or(u32::MAX);
    let init = match a.ipalloc_init.as_deref() {
        None | Some("consensus") => Init::Consensus {
            peers: default_quorum,
        },
        Some("observer") => Init::Observer,
        Some(s) if s.starts_with("consensus=") => {
            let n: u32 = s["consensus=".len()..]
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    anyhow!(
                        "invalid --ipalloc-init {s:?}: consensus=N needs a positive number of peers"
                    )
                })?;
            Init::Consensus { peers: n }
        }
        Some(s) if s.starts_with("seed=") => {
            let names = s["seed=".len()..]
                .split(',')
                .map(|n| {
                    n.parse::<meshnet_ipam::PeerName>()
                        .map_err(|e| anyhow!("invalid peer name {n:?} in --ipalloc-init: {e}"))
                })
                .collect::<Result<_>>()?;
            Init::Seed(names)
        }
        Some(s) => {
            bail!("invalid --ipalloc-init {s:?}: use consensus[=N], seed=NAME,NAME,... or observer")
        }
    };
    let reclaim_after = a
        .ipalloc_reclaim_after
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| anyhow!("invalid --ipalloc-reclaim-after {s:?}: {e}; use e.g. 24h"))
        })
        .transpose()?;
    Ok(Some(IpamConfig {
        range,
        default_subnet,
        init,
        reclaim_after,
    }))
}

/// Runs the router in this process until SIGTERM/SIGINT.
fn run_foreground(
    config: RouterConfig,
    env: &EnvArgs,
    docker: crate::docker::Setup,
    log_filter: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(&config.run_dir)
        .with_context(|| format!("creating {}", config.run_dir.display()))?;
    let lock_path = config.run_dir.join(LOCK_FILE);
    let lock_file =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow!(
            "meshnet is already running with run dir {}; stop it with `meshnet stop`",
            config.run_dir.display()
        )
    })?;
    let pid_path = config.run_dir.join(PID_FILE);
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_path.display()))?;
    crate::init_logging(log_filter);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        docker.start_proxy(env, shutdown.clone()).await?;
        docker.start_liveness(env, shutdown.clone())?;
        let plugin = docker.start_plugin(env, shutdown.clone()).await?;
        let mut config = config;
        config.services = docker.services(env);
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            if let Some(p) = plugin {
                p.unregister().await;
            }
            on_signal.cancel();
        });
        meshnet_router::run(config, shutdown, |_| {})
            .await
            .map_err(|e| anyhow!("{e}"))
    });
    let _ = std::fs::remove_file(&pid_path);
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The pid of the router using `run_dir`, if one is running.
pub fn running_pid(run_dir: &Path) -> Result<Option<i32>> {
    let lock_path = run_dir.join(LOCK_FILE);
    let Ok(file) = File::open(&lock_path) else {
        return Ok(None);
    };
    // If we can take the lock, nobody holds it: no router.
    if Flock::lock(file, FlockArg::LockSharedNonblock).is_ok() {
        return Ok(None);
    }
    let pid: Option<i32> = std::fs::read_to_string(run_dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    // A router killed with SIGKILL still holds the lock until its last
    // thread has torn down (it may show as a zombie, be exiting, or not yet
    // have taken the signal); give it time to let go rather than call it
    // running. A router gone without a trace (no pid) is waited for too.
    if pid.is_none_or(dying) {
        let deadline = Instant::now() + DEAD_ROUTER_WAIT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let Ok(file) = File::open(&lock_path) else {
                return Ok(None);
            };
            if Flock::lock(file, FlockArg::LockSharedNonblock).is_ok() {
                return Ok(None);
            }
        }
    }
    Ok(Some(pid.unwrap_or(0)))
}

/// How long `launch` and `stop` wait for a dying router to let go of its lock.
const DEAD_ROUTER_WAIT: Duration = Duration::from_secs(10);

/// True when `pid` is gone, a zombie, exiting, or has SIGKILL pending.
fn dying(pid: i32) -> bool {
    if !crate::lab::process_alive(pid) {
        return true;
    }
    /// `PF_EXITING` in `/proc/PID/stat`'s flags field.
    const PF_EXITING: u64 = 0x4;
    let sigkill = 1u64 << (libc::SIGKILL - 1);
    let exiting = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(')')?;
            // After `(comm)`: state, ppid, pgrp, session, tty, tpgid, flags.
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|f| f & PF_EXITING != 0);
    let pending = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .is_some_and(|s| {
            s.lines().any(|l| {
                let mut kv = l.splitn(2, ':');
                matches!(kv.next(), Some("SigPnd" | "ShdPnd"))
                    && kv
                        .next()
                        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                        .is_some_and(|m| m & sigkill != 0)
            })
        });
    exiting || pending
}

/// `meshnet stop`: SIGTERM the router and wait for it to exit.
pub fn stop(env: &EnvArgs) -> Result<bool> {
    let Some(pid) = running_pid(&env.run_dir)? else {
        eprintln!("meshnet is not running.");
        return Ok(false);
    };
    if pid > 0 {
        kill(Pid::from_raw(pid), Signal::SIGTERM)
            .with_context(|| format!("signalling the router (pid {pid})"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while running_pid(&env.run_dir)?.is_some() {
        if Instant::now() > deadline {
            bail!("the router (pid {pid}) did not stop within 10 s; kill it with `kill -9 {pid}`");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// `meshnet reset`: hand our IP space to the others, stop, then remove
/// persisted state.
pub fn reset(env: &EnvArgs) -> Result<()> {
    if running_pid(&env.run_dir)?.is_some()
        && let Err(e) = client::call(env.api(), Method::DELETE, "/peer", &[])
    {
        eprintln!("meshnet: could not hand IP space to other peers: {e:#}");
    }
    stop(env)?;
    for file in [
        meshnet_router::identity::KEY_FILE,
        meshnet_router::TARGETS_FILE,
        meshnet_router::ipam::STATE_FILE,
    ] {
        remove_if_present(&env.data_dir.join(file))?;
    }
    for file in [PID_FILE, LOCK_FILE] {
        remove_if_present(&env.run_dir.join(file))?;
    }
    Ok(())
}

fn remove_if_present(path: &PathBuf) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weaves_log_levels_map_to_tracing_filters() {
        for (weave, ours) in [
            ("debug", "debug"),
            ("info", "info"),
            ("warning", "warn"),
            ("warn", "warn"),
            ("ERROR", "error"),
        ] {
            assert_eq!(log_filter(weave).unwrap(), ours, "{weave}");
        }
        let e = log_filter("loud").unwrap_err().to_string();
        assert!(e.contains("debug, info, warning or error"), "{e}");
    }
}
