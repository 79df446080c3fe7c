//! Network-namespace lab: "hosts" as network namespaces, each running its own
//! router, joined by "segments" (a namespace holding a Linux bridge).
//!
//! Used by `meshnet demo` and by the scenario tests in `tests/`. Everything a
//! lab creates lives inside namespaces it owns (`mnl-<tag>-<pid>-<n>-<name>`)
//! plus one temp dir; the root namespace never gets a link, address or route.
//! Underlay addresses are TEST-NET only (192.0.2.0/24, 198.51.100.0/24), so a
//! mistake can never leak traffic onto a real network.
//!
//! Veth pairs are created *inside* the namespaces (`ip -n SEG link add ... peer
//! ... netns HOST`), so their names only need to be unique per namespace and
//! two labs running at once (other test binaries, other engineers) never
//! collide. Cleanup kills every process in each namespace, deletes the
//! namespaces (which destroys their veths and bridges) and removes the temp
//! dir; it runs on `Drop`, so a panicking test still cleans up, and
//! [`Lab::sweep_stale`] removes what a killed test process left behind.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// Prefix of every namespace and temp dir a lab creates; `sweep_stale` keys on it.
const NETNS_PREFIX: &str = "mnl";
/// Prefix of the per-lab temp dir under `std::env::temp_dir()`.
const DIR_PREFIX: &str = "meshnet-lab";
/// Longest tag kept in names, so namespace names stay readable in `ip netns`.
const MAX_TAG_LEN: usize = 10;
/// Longest host/container name; long enough for `h1`, `alice`, `c1_web`.
const MAX_NAME_LEN: usize = 16;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;
/// Name of the bridge inside each segment namespace.
const SEGMENT_BRIDGE: &str = "br0";
/// The router API address inside every host (each netns has its own loopback).
const HOST_HTTP_ADDR: &str = "127.0.0.1:6784";
/// Bound on waiting for killed processes to go away during cleanup.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// TEST-NET ranges we allow as underlay (RFC 5737): never routed on the internet.
const TEST_NETS: [(Ipv4Addr, u8); 2] = [
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
];

/// Bound on one command run in a host (`launch` waits for the router's API).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Names the per-command output files of [`Host::run`].
static OUTPUT_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Distinguishes labs created by the same process (tests run in parallel threads).
static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Index of a segment within its lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(usize);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seg{}", self.0)
    }
}

/// An IPv4 subnet inside TEST-NET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len`; the subnet must lie inside a TEST-NET range.
    pub fn parse(s: &str) -> anyhow::Result<Subnet> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("subnet {s:?} must be written as a.b.c.d/len"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("subnet {s:?}: bad address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| anyhow!("subnet {s:?}: prefix length must be 0..=32"))?;
        let subnet = Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        };
        let inside_test_net = TEST_NETS.iter().any(|&(net, len)| {
            prefix_len >= len && u32::from(subnet.network) & mask(len) == u32::from(net)
        });
        if !inside_test_net {
            bail!(
                "subnet {s}: lab underlays must lie in 192.0.2.0/24 or 198.51.100.0/24 (TEST-NET)"
            );
        }
        Ok(subnet)
    }

    /// Whether `addr` is a usable host address of this subnet.
    pub fn contains_host(&self, addr: Ipv4Addr) -> bool {
        let m = mask(self.prefix_len);
        let a = u32::from(addr);
        let host_bits = a & !m;
        a & m == u32::from(self.network)
            && (self.prefix_len >= 31 || (host_bits != 0 && host_bits != !m))
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl std::str::FromStr for Subnet {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Subnet> {
        Subnet::parse(s)
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// A broadcast domain: a namespace holding bridge `br0`.
#[derive(Debug)]
pub struct Segment {
    id: SegmentId,
    netns: String,
    subnet: Subnet,
}

impl Segment {
    pub fn id(&self) -> SegmentId {
        self.id
    }
    /// The namespace holding the bridge (e.g. to cut a host off: `ip -n NS link set X down`).
    pub fn netns(&self) -> &str {
        &self.netns
    }
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }
}

/// A simulated machine: a namespace with underlay veths, running its own router.
#[derive(Debug)]
pub struct Host {
    name: String,
    netns: String,
    /// Underlay addresses, in the order the links were given.
    links: Vec<(SegmentId, Ipv4Addr)>,
    /// Holds `run/`, `data/` and command output files.
    dir: PathBuf,
    run_dir: PathBuf,
    data_dir: PathBuf,
    bin: PathBuf,
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn netns(&self) -> &str {
        &self.netns
    }
    /// The first underlay address.
    pub fn addr(&self) -> Ipv4Addr {
        // add_host refuses a host without links, so there is always one.
        self.links
            .first()
            .map(|(_, a)| *a)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
    /// Every underlay address with the segment it is on.
    pub fn links(&self) -> &[(SegmentId, Ipv4Addr)] {
        &self.links
    }
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `ip netns exec <ns> <meshnet> args` with this host's run/data dirs and
    /// API address. The launch settings' variables (`MESHNET_PASSWORD`,
    /// `WEAVE_PASSWORD`, `WEAVE_MTU`, ...) are removed so what is set in the
    /// caller's environment never leaks into a host by accident; `RUST_LOG`
    /// passes through.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(&self.bin)
            .args(args)
            .env("MESHNET_RUN_DIR", &self.run_dir)
            .env("MESHNET_DATA_DIR", &self.data_dir)
            .env("MESHNET_HTTP_ADDR", HOST_HTTP_ADDR)
            .env_remove(crate::settings::HTTP_ADDR.weave);
        for s in crate::settings::LAUNCH {
            cmd.env_remove(s.ours).env_remove(s.weave);
        }
        cmd
    }

    /// Runs `meshnet args` in this host and returns its output, whatever the exit status.
    pub fn meshnet(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run(&mut self.command(args))
            .with_context(|| format!("running meshnet {} on host {}", args.join(" "), self.name))
    }

    /// Runs any program inside this host's namespace; output is returned unchecked.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        let (prog, rest) = argv
            .split_first()
            .ok_or_else(|| anyhow!("exec on host {} needs a program", self.name))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, prog]).args(rest);
        self.run(&mut cmd)
            .with_context(|| format!("running {} on host {}", argv.join(" "), self.name))
    }

    /// Runs `cmd` (typically from [`Host::command`], with extra env) to
    /// completion, bounded by [`COMMAND_TIMEOUT`].
    ///
    /// Output goes to files, not pipes: a detached child (the router that
    /// `launch` starts) that kept an inherited pipe open would make
    /// `Command::output` wait forever, and a lab must fail, not hang.
    pub fn run(&self, cmd: &mut Command) -> anyhow::Result<Output> {
        let n = OUTPUT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.join(format!("cmd-{n}.out"));
        let err_path = self.dir.join(format!("cmd-{n}.err"));
        let result = run_to_files(cmd, &out_path, &err_path);
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        result
    }

    /// The router's pid from `<run_dir>/router.pid`, if the file exists and parses.
    pub fn router_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.run_dir.join("router.pid")).ok()?;
        text.trim().parse().ok().filter(|p| *p > 0)
    }

    /// Whether the process named by `router.pid` is alive (not gone, not a zombie).
    pub fn router_running(&self) -> bool {
        self.router_pid().is_some_and(process_alive)
    }

    /// Sends `signal` to the router. For SIGKILL it also waits (bounded) until
    /// the process is gone, so a relaunch right after cannot race the old one.
    pub fn kill_router(&self, signal: i32) {
        let Some(pid) = self.router_pid() else {
            return;
        };
        send_signal(pid, signal);
        if signal == libc::SIGKILL {
            wait_dead(&[pid], KILL_WAIT);
        }
    }
}

/// A set of hosts, segments and containers, removed again on drop.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    /// `mnl-<tag>-<pid>-<lab#>`: the common prefix of this lab's namespaces.
    prefix: String,
    dir: PathBuf,
    bin: PathBuf,
    segments: Vec<Segment>,
    hosts: Vec<Host>,
    containers: Vec<(String, String)>,
    /// Every namespace created, in creation order (cleanup deletes all of them).
    namespaces: Vec<String>,
    cleaned: bool,
}

impl Lab {
    /// Starts an empty lab; `bin` is the meshnet executable hosts run.
    pub fn new(tag: &str, bin: PathBuf) -> anyhow::Result<Lab> {
        let tag = sanitize_tag(tag);
        let pid = std::process::id();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}-{tag}-{pid}-{n}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating lab dir {}", dir.display()))?;
        Ok(Lab {
            prefix: format!("{NETNS_PREFIX}-{tag}-{pid}-{n}"),
            tag,
            dir,
            bin,
            segments: Vec::new(),
            hosts: Vec::new(),
            containers: Vec::new(),
            namespaces: Vec::new(),
            cleaned: false,
        })
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
    /// The lab's temp dir (hosts' run/data dirs live below it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a segment (a bridge in its own namespace) for `subnet`, which must be TEST-NET.
    pub fn add_segment(&mut self, subnet: &str) -> anyhow::Result<SegmentId> {
        let subnet = Subnet::parse(subnet)?;
        let id = SegmentId(self.segments.len());
        let netns = netns_name(&self.prefix, &format!("s{}", id.0));
        self.create_netns(&netns)?;
        ip(&[
            "-n",
            &netns,
            "link",
            "add",
            SEGMENT_BRIDGE,
            "type",
            "bridge",
        ])?;
        ip(&["-n", &netns, "link", "set", SEGMENT_BRIDGE, "up"])?;
        self.segments.push(Segment { id, netns, subnet });
        Ok(id)
    }

    /// Adds a host with one veth per `(segment, address)` link.
    pub fn add_host(
        &mut self,
        name: &str,
        links: &[(SegmentId, Ipv4Addr)],
    ) -> anyhow::Result<&Host> {
        check_name(name)?;
        if self.hosts.iter().any(|h| h.name == name) {
            bail!("lab {}: host {name} already exists", self.tag);
        }
        if links.is_empty() {
            bail!("host {name} needs at least one link");
        }
        for (i, (seg, addr)) in links.iter().enumerate() {
            let segment = self
                .segments
                .get(seg.0)
                .ok_or_else(|| anyhow!("host {name}: unknown segment {seg}"))?;
            if !segment.subnet.contains_host(*addr) {
                bail!(
                    "host {name}: {addr} is not a host address of {seg} ({})",
                    segment.subnet
                );
            }
            if links[..i].iter().any(|(s, _)| s == seg) {
                bail!("host {name}: two links to {seg}");
            }
            if self
                .hosts
                .iter()
                .flat_map(|h| &h.links)
                .any(|(_, a)| a == addr)
            {
                bail!("host {name}: address {addr} is already in use in this lab");
            }
        }
        let host_idx = self.hosts.len();
        let netns = netns_name(&self.prefix, name);
        let host_dir = self.dir.join(name);
        let run_dir = host_dir.join("run");
        let data_dir = host_dir.join("data");
        for d in [&run_dir, &data_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.create_netns(&netns)?;
        for (seg, addr) in links {
            let segment = &self.segments[seg.0];
            let (host_if, seg_if) = veth_names(host_idx, seg.0);
            ip(&[
                "-n",
                &segment.netns,
                "link",
                "add",
                &seg_if,
                "type",
                "veth",
                "peer",
                "name",
                &host_if,
                "netns",
                &netns,
            ])?;
            ip(&[
                "-n",
                &segment.netns,
                "link",
                "set",
                &seg_if,
                "master",
                SEGMENT_BRIDGE,
                "up",
            ])?;
            let cidr = format!("{addr}/{}", segment.subnet.prefix_len);
            ip(&["-n", &netns, "addr", "add", &cidr, "dev", &host_if])?;
            ip(&["-n", &netns, "link", "set", &host_if, "up"])?;
        }
        self.hosts.push(Host {
            name: name.to_owned(),
            netns,
            links: links.to_vec(),
            dir: host_dir,
            run_dir,
            data_dir,
            bin: self.bin.clone(),
        });
        Ok(&self.hosts[host_idx])
    }

    /// The host called `name`; panics if there is none (a bug in the test itself).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("lab {}: no host named {name:?}", self.tag))
    }

    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// The segment `id`; panics if it is not from this lab.
    pub fn segment(&self, id: SegmentId) -> &Segment {
        self.segments
            .get(id.0)
            .unwrap_or_else(|| panic!("lab {}: no segment {id}", self.tag))
    }

    /// Creates an empty namespace (only `lo`, up) standing for a container
    /// on `host`, and returns its name; attaching it is the router's job.
    pub fn add_container(&mut self, host: &str, name: &str) -> anyhow::Result<String> {
        check_name(name)?;
        if !self.hosts.iter().any(|h| h.name == host) {
            bail!("lab {}: no host named {host:?}", self.tag);
        }
        if self.containers.iter().any(|(_, c)| c == name) {
            bail!("lab {}: container {name} already exists", self.tag);
        }
        let netns = netns_name(&self.prefix, &format!("{host}.{name}"));
        self.create_netns(&netns)?;
        self.containers.push((host.to_owned(), name.to_owned()));
        Ok(netns)
    }

    /// Kills every process in the lab's namespaces, deletes them and the temp
    /// dir. Idempotent; errors are reported on stderr, never panicked on (this
    /// runs from `Drop`, possibly during an unwind).
    pub fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = remove_netns(ns) {
                eprintln!("lab {}: {e:#}", self.tag);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("lab {}: removing {}: {e}", self.tag, self.dir.display());
        }
    }

    /// Removes namespaces and temp dirs left by labs whose owning process is
    /// gone (a test killed before its `Drop` ran). Labs of live processes,
    /// including other test binaries running right now, are left alone.
    pub fn sweep_stale() {
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // `ip netns list` prints `name (id: N)` for namespaces with an id.
                let ns = line.split_whitespace().next().unwrap_or("");
                if owner_pid(ns).is_some_and(|pid| !process_alive(pid))
                    && let Err(e) = remove_netns(ns)
                {
                    eprintln!("sweeping stale lab namespace: {e:#}");
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
                    continue;
                };
                // Directory names are `meshnet-lab-<tag>-<pid>-<n>`: same shape as netns names.
                if owner_pid(&format!("{NETNS_PREFIX}{rest}"))
                    .is_some_and(|pid| !process_alive(pid))
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    fn create_netns(&mut self, netns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", netns])?;
        // Recorded before configuring, so a failure below is still cleaned up.
        self.namespaces.push(netns.to_owned());
        ip(&["-n", netns, "link", "set", "lo", "up"])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Runs `ip args`; a failure carries `ip`'s stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Spawns `cmd` with stdout/stderr redirected to files and waits at most
/// [`COMMAND_TIMEOUT`] for it to exit (killing it on timeout).
fn run_to_files(cmd: &mut Command, out_path: &Path, err_path: &Path) -> anyhow::Result<Output> {
    let create =
        |p: &Path| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(create(out_path)?)
        .stderr(create(err_path)?)
        .spawn()
        .context("spawning")?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {COMMAND_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(Output {
        status,
        stdout: read(out_path)?,
        stderr: read(err_path)?,
    })
}

/// Kills everything inside `ns` (bounded wait), then deletes it.
fn remove_netns(ns: &str) -> anyhow::Result<()> {
    let pids = netns_pids(ns);
    for &pid in &pids {
        send_signal(pid, libc::SIGKILL);
    }
    if !wait_dead(&pids, KILL_WAIT) {
        eprintln!(
            "lab: processes in {ns} still alive after SIGKILL: {:?}",
            netns_pids(ns)
        );
    }
    ip(&["netns", "del", ns])
}

fn netns_pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn send_signal(pid: i32, signal: i32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Ok(sig) = Signal::try_from(signal) {
        // ESRCH (already gone) is the outcome we want anyway.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Waits until none of `pids` is alive; returns false on timeout.
fn wait_dead(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&p| process_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alive = exists and is not a zombie (an unreaped zombie holds no namespace or socket).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the `(comm)` field, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Keeps `[a-z0-9]` of a tag (so `-` stays a field separator), at most 10 chars.
fn sanitize_tag(tag: &str) -> String {
    let t: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(MAX_TAG_LEN)
        .collect();
    if t.is_empty() { "lab".to_owned() } else { t }
}

/// Host and container names: `[A-Za-z0-9_]`, 1..=16 chars (they become namespace and dir names).
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("lab name {name:?}: use 1 to {MAX_NAME_LEN} characters from [A-Za-z0-9_]");
    }
    Ok(())
}

fn netns_name(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}")
}

/// The pid of the process owning a lab namespace `mnl-<tag>-<pid>-<n>-...`, or
/// None if `ns` is not a lab name.
fn owner_pid(ns: &str) -> Option<i32> {
    let mut parts = ns.split('-');
    if parts.next()? != NETNS_PREFIX {
        return None;
    }
    let _tag = parts.next()?;
    let pid = parts.next()?.parse().ok().filter(|p: &i32| *p > 0)?;
    parts.next()?.parse::<usize>().ok()?;
    Some(pid)
}

/// Veth names for host `host_idx` on segment `seg_idx`: (host end, segment end).
/// Each end lives only in its own namespace, so uniqueness per namespace is
/// enough: a host has one link per segment, a segment one per host.
fn veth_names(host_idx: usize, seg_idx: usize) -> (String, String) {
    let host_end = format!("{NETNS_PREFIX}{seg_idx}h");
    let seg_end = format!("{NETNS_PREFIX}{host_idx}s");
    debug_assert!(host_end.len() <= MAX_IFNAME_LEN && seg_end.len() <= MAX_IFNAME_LEN);
    (host_end, seg_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_round_trip_to_owner_pid() {
        let prefix = format!(
            "{NETNS_PREFIX}-{}-{}-{}",
            sanitize_tag("Control-Plane!"),
            4242,
            7
        );
        assert_eq!(prefix, "mnl-controlpla-4242-7");
        assert_eq!(owner_pid(&netns_name(&prefix, "h1")), Some(4242));
        assert_eq!(owner_pid(&netns_name(&prefix, "h1.c1")), Some(4242));
        assert_eq!(owner_pid("mnl-x-4242-7"), Some(4242));
    }

    #[test]
    fn foreign_namespaces_are_not_ours() {
        for ns in [
            "",
            "weave",
            "mnl",
            "mnl-x",
            "mnl-x-abc-1-h",
            "mnl-x-0-1-h",
            "mnlx-a-12-1-h",
            "mnl-x-12-h",
        ] {
            assert_eq!(owner_pid(ns), None, "{ns}");
        }
    }

    #[test]
    fn tags_are_sanitized() {
        assert_eq!(sanitize_tag(""), "lab");
        assert_eq!(sanitize_tag("---"), "lab");
        assert_eq!(sanitize_tag("a-b_c"), "abc");
        assert_eq!(sanitize_tag("averyveryverylongtag"), "averyveryv");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("h1").is_ok());
        assert!(check_name("web_1").is_ok());
        for bad in ["", "h-1", "h.1", "h 1", "a/b", "abcdefghijklmnopq"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn veth_names_fit_ifnamsiz_and_differ_per_namespace() {
        let (h, s) = veth_names(9999, 9999);
        assert!(h.len() <= MAX_IFNAME_LEN && s.len() <= MAX_IFNAME_LEN);
        // host ends on one host differ per segment; segment ends on one segment differ per host
        assert_ne!(veth_names(0, 0).0, veth_names(0, 1).0);
        assert_ne!(veth_names(0, 0).1, veth_names(1, 0).1);
        assert_eq!(veth_names(3, 1), ("mnl1h".to_owned(), "mnl3s".to_owned()));
    }

    #[test]
    fn worst_case_netns_name_is_short() {
        let prefix = format!(
            "{NETNS_PREFIX}-{}-{}-{}",
            "a".repeat(MAX_TAG_LEN),
            4_194_304,
            9999
        );
        let name = netns_name(&prefix, &format!("{}.{}", "h".repeat(16), "c".repeat(16)));
        assert!(name.len() < 80, "{name}");
    }

    #[test]
    fn only_test_net_subnets_are_accepted() {
        let s = Subnet::parse("192.0.2.0/24").unwrap();
        assert_eq!(s.to_string(), "192.0.2.0/24");
        assert_eq!(
            Subnet::parse("198.51.100.77/25").unwrap().to_string(),
            "198.51.100.0/25"
        );
        for bad in [
            "10.0.0.0/8",
            "192.0.0.0/16",
            "192.0.2.0",
            "192.0.2.0/33",
            "x/24",
            "198.51.101.0/24",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_addresses_exclude_network_and_broadcast() {
        let s = Subnet::parse("192.0.2.0/24").unwrap();
        assert!(s.contains_host(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(s.contains_host(Ipv4Addr::new(192, 0, 2, 254)));
        assert!(!s.contains_host(Ipv4Addr::new(192, 0, 2, 0)));
        assert!(!s.contains_host(Ipv4Addr::new(192, 0, 2, 255)));
        assert!(!s.contains_host(Ipv4Addr::new(198, 51, 100, 1)));
    }
}
