//! Shared pieces of the cross-crate scenario tests: finding the `meshnet`
//! binary, building labs of network-namespace hosts ([`meshnet::lab`]),
//! bounded waits, and readers for what the CLI prints (`report` JSON,
//! `status connections` / `status peers` lines) so scenarios read as
//! scenarios.
//!
//! Layout: this file (environment, waits, CLI helpers); [`status`] (parsers
//! for the `status` text formats, each checking the exact column layout);
//! [`docker`] (the real engine: CLI calls, cleanup of containers); [`scale`] (many
//! routers at once: links, memory and CPU per router).

pub mod docker;
pub mod scale;
pub mod status;

use std::fmt::Debug;
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use meshnet::lab::{Host, Lab, SegmentId};
use serde_json::Value;

/// How often [`wait_for`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How much of each router log a failing scenario prints.
const LOG_TAIL_LINES: usize = 40;

/// The `meshnet` executable under test: `$MESHNET_BIN`, else
/// `$CARGO_TARGET_DIR/debug/meshnet`, else `<workspace>/target/debug/meshnet`.
pub fn meshnet_bin() -> PathBuf {
    let bin = match std::env::var_os("MESHNET_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("..")
                        .join("target")
                });
            target.join("debug").join("meshnet")
        }
    };
    assert!(
        bin.is_file(),
        "meshnet binary not found at {}: run `cargo build -p meshnet` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// Panics unless we are root: these tests create network namespaces, and
/// a skipped test must never look like a passing one.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (network namespaces): run as root"
    );
}

/// What a polled closure saw: either the value waited for, or an observation
/// to show if the wait times out.
pub trait Observation {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

impl<T, E: Debug> Observation for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Polls `f` every 50 ms until it yields a value (`Some`/`Ok`), for at most
/// `timeout`. On timeout panics with `what` and the last observation (the
/// `Err` of the last poll). A bounded wait for something that must happen,
/// not a timing assertion: generous timeouts are fine.
pub fn wait_for<O: Observation>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + timeout;
    loop {
        match f().into_result() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last observation: {last}")
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// A [`Lab`] for one scenario. On a panic (a failed assertion) it prints the
/// tail of every host's router log before the lab is removed, because the
/// logs live in the lab's temp dir and would be lost with it.
#[derive(Debug)]
pub struct TestLab(Lab);

impl Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.0
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for host in self.0.hosts() {
                eprintln!(
                    "---- {} router.log (last {LOG_TAIL_LINES} lines) ----\n{}",
                    host.name(),
                    tail(&router_log(host), LOG_TAIL_LINES)
                );
            }
        }
    }
}

/// Sweeps leftovers of dead labs, then starts a new lab running [`meshnet_bin`].
pub fn lab(tag: &str) -> TestLab {
    lab_with(tag, meshnet_bin())
}

/// Sweeps leftovers of dead labs, then starts a new lab whose hosts run `bin`.
pub fn lab_with(tag: &str, bin: PathBuf) -> TestLab {
    Lab::sweep_stale();
    TestLab(Lab::new(tag, bin).expect("creating lab"))
}

/// A lab with one segment 192.0.2.0/24 and `hosts` on it at 192.0.2.1, .2, ...
pub fn lab_on_one_segment(tag: &str, hosts: &[&str]) -> TestLab {
    let mut lab = lab(tag);
    let seg = lab.add_segment("192.0.2.0/24").expect("adding segment");
    for (i, name) in (1u8..).zip(hosts) {
        lab.add_host(name, &[(seg, Ipv4Addr::new(192, 0, 2, i))])
            .unwrap_or_else(|e| panic!("adding host {name}: {e:#}"));
    }
    lab
}

/// `<addr>:6783`, what a host's peers dial and what `status connections` shows.
pub fn control_addr(host: &Host) -> String {
    format!("{}:6783", host.addr())
}

/// `meshnet launch args` on `host`; asserts it succeeded and returns the peer
/// name it printed.
pub fn launch<S: AsRef<str>>(host: &Host, args: &[S]) -> String {
    let args: Vec<&str> = std::iter::once("launch")
        .chain(args.iter().map(AsRef::as_ref))
        .collect();
    let mut cmd = host.command(&args);
    launch_with(host, &mut cmd)
}

/// Like [`launch`] but for a command built by the caller (e.g. with `MESHNET_PASSWORD` set).
pub fn launch_with(host: &Host, cmd: &mut std::process::Command) -> String {
    let out = host.run(cmd).expect("running meshnet launch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "launch on {} failed ({}):\nstdout: {stdout}\nstderr: {}\nrouter.log tail:\n{}",
        host.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&router_log(host), LOG_TAIL_LINES)
    );
    let name = stdout.lines().last().unwrap_or("").trim().to_owned();
    assert!(
        status::is_peer_name(&name),
        "launch on {} printed {stdout:?}, not a peer name",
        host.name()
    );
    name
}

/// `meshnet report` parsed, or why not.
pub fn try_report(host: &Host) -> anyhow::Result<Value> {
    let out = host.meshnet(&["report"])?;
    anyhow::ensure!(
        out.status.success(),
        "meshnet report on {} failed ({}): {}",
        host.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `meshnet report` parsed; panics if the command fails or prints no JSON.
pub fn report(host: &Host) -> Value {
    try_report(host).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `meshnet <args>` on `host`; panics unless it succeeds, returns stdout.
pub fn meshnet_ok(host: &Host, args: &[&str]) -> String {
    let out = host.meshnet(args).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        out.status.success(),
        "meshnet {} on {} failed ({}): {}",
        args.join(" "),
        host.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `meshnet status connections`, every line checked against weave's layout.
pub fn status_connections(host: &Host) -> Vec<status::ConnectionLine> {
    let text = meshnet_ok(host, &["status", "connections"]);
    status::parse_connections(&text).unwrap_or_else(|e| {
        panic!(
            "{} printed a malformed line: {e}\nwhole output:\n{text}",
            host.name()
        )
    })
}

/// `meshnet status peers`, every line checked against weave's layout.
pub fn status_peers(host: &Host) -> Vec<status::PeerBlock> {
    let text = meshnet_ok(host, &["status", "peers"]);
    status::parse_peers(&text).unwrap_or_else(|e| {
        panic!(
            "{} printed a malformed line: {e}\nwhole output:\n{text}",
            host.name()
        )
    })
}

/// Runs `f` on a fresh thread that has joined `host`'s network namespace, so
/// sockets it opens live there (a raw client "on another host"). The test's
/// own threads never change namespace.
pub fn in_netns<T: Send + 'static>(host: &Host, f: impl FnOnce() -> T + Send + 'static) -> T {
    join(spawn_in(host.netns(), f))
}

/// Spawns `f` on a thread that joined namespace `netns` first.
pub fn spawn_in<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("joining {path}: {e}"));
        f()
    })
}

/// Joins a thread, passing its panic on.
pub fn join<T>(handle: std::thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `argv` inside namespace `netns` (bounded by the program's own options).
pub fn ns_exec(netns: &str, argv: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?} in {netns}: {e}"))
}

/// Names of every link in `host`'s namespace.
pub fn links(host: &Host) -> Vec<String> {
    let out = host.exec(&["ip", "-o", "link", "show"]).expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// The router log of `host` (empty if there is none yet).
pub fn router_log(host: &Host) -> String {
    std::fs::read_to_string(host.run_dir().join("router.log")).unwrap_or_default()
}

/// The router's command line, NUL separators turned into spaces.
pub fn router_cmdline(host: &Host) -> String {
    let pid = host
        .router_pid()
        .unwrap_or_else(|| panic!("no router.pid on {}", host.name()));
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|e| panic!("reading cmdline of router {pid} on {}: {e}", host.name()));
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Views into the `report` JSON, named after weave's fields.
pub mod view {
    use serde_json::Value;

    fn array<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
        let mut v = v;
        for key in path {
            v = &v[*key];
        }
        v.as_array().map(Vec::as_slice).unwrap_or(&[])
    }

    /// `Router.Name` of the reporting router.
    pub fn own_name(report: &Value) -> &str {
        report["Router"]["Name"].as_str().unwrap_or("")
    }

    /// Names of every known peer, self included (`Router.Peers[].Name`).
    pub fn peer_names(report: &Value) -> Vec<&str> {
        array(report, &["Router", "Peers"])
            .iter()
            .filter_map(|p| p["Name"].as_str())
            .collect()
    }

    /// The `Router.Peers` entry named `name`.
    pub fn peer<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
        array(report, &["Router", "Peers"])
            .iter()
            .find(|p| p["Name"] == name)
    }

    /// `UID` of peer `name` as the reporting router knows it: a JSON number,
    /// as weave's (a string or anything else is `None`, so a test waiting
    /// for it fails).
    pub fn peer_uid(report: &Value, name: &str) -> Option<u64> {
        peer(report, name)?["UID"].as_u64()
    }

    /// The local connections (`Router.Connections`) in state `state`.
    pub fn connections_in<'a>(report: &'a Value, state: &str) -> Vec<&'a Value> {
        array(report, &["Router", "Connections"])
            .iter()
            .filter(|c| c["State"] == state)
            .collect()
    }

    /// The local connection entry whose `Address` is `addr`.
    pub fn connection<'a>(report: &'a Value, addr: &str) -> Option<&'a Value> {
        array(report, &["Router", "Connections"])
            .iter()
            .find(|c| c["Address"] == addr)
    }

    /// Whether the reporting router's own peer entry lists an established
    /// connection to peer `name`.
    pub fn established_with(report: &Value, name: &str) -> bool {
        peer(report, own_name(report)).is_some_and(|me| {
            array(me, &["Connections"])
                .iter()
                .any(|c| c["Name"] == name && c["Established"] == true)
        })
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
