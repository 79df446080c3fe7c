//! The real Docker engine for scenarios: running the `docker` CLI against
//! the engine or a proxy socket, failing (never skipping) without an
//! engine, container names unique to a run that are removed even when
//! a test panics, and [`RootRouter`], a router in Docker's (the root)
//! network namespace on a lab veth.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use meshnet::lab::{Lab, SegmentId};

/// Runs `docker args` against `docker_host` (None: the engine itself).
pub fn docker_at(docker_host: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.args(args).stdin(Stdio::null());
    match docker_host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run docker {}: {e}; install the Docker CLI",
            args.join(" ")
        )
    })
}

/// `docker args` against `docker_host`, which must succeed; its stdout.
pub fn docker_ok_at(docker_host: Option<&str>, args: &[&str]) -> String {
    let out = docker_at(docker_host, args);
    assert!(
        out.status.success(),
        "docker {} (DOCKER_HOST={docker_host:?}) failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker args` against the engine itself.
pub fn docker(args: &[&str]) -> Output {
    docker_at(None, args)
}

/// `docker args` against the engine, which must succeed; its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    docker_ok_at(None, args)
}

/// Fails the test unless we are root and the engine answers, then builds
/// the local busybox image (scripts/busybox-image) if it is missing.
pub fn require_docker() {
    crate::require_root();
    let out = docker_at(None, &["version", "--format", "{{.Server.Version}}"]);
    assert!(
        out.status.success(),
        "these tests need a running Docker engine (unix:///var/run/docker.sock): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-image");
    let status = Command::new(&script)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
}

/// Names of this run's containers; `docker rm -f` on drop, panic or not.
#[derive(Debug)]
pub struct Containers {
    prefix: String,
    names: Vec<String>,
}

impl Containers {
    pub fn new(tag: &str) -> Containers {
        Containers {
            prefix: format!("meshnet-{tag}-{}", std::process::id()),
            names: Vec::new(),
        }
    }

    /// A unique name for `short`, removed at the end.
    pub fn name(&mut self, short: &str) -> String {
        let n = format!("{}-{short}", self.prefix);
        self.names.push(n.clone());
        n
    }

    /// Exactly `name` (a test whose names matter, such as a hostname
    /// derived from them; Docker tests run one at a time), removed at the
    /// end; a container of that name a killed run left is removed first.
    pub fn exact(&mut self, name: &str) -> String {
        let _ = docker_at(None, &["rm", "-f", name]);
        if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_string());
        }
        name.to_string()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(self.names.iter().map(String::as_str));
        let out = docker_at(None, &args);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            // Containers that were never created are fine.
            if !err.lines().all(|l| l.contains("No such container")) {
                eprintln!("docker rm -f failed: {err}");
            }
        }
    }
}

/// Where dockerd finds the plugin.
pub const PLUGIN_SOCKET: &str = "/run/docker/plugins/meshnet.sock";
/// The lab segment's bridge (cli/src/lab.rs).
const SEGMENT_BRIDGE: &str = "br0";
/// The root-namespace router's API: away from a real router's 6784.
pub const ROOT_HTTP_ADDR: &str = "127.0.0.1:16784";
/// Its underlay address on the lab's segment: 198.51.100.0/24, since this
/// machine's own uplink may sit in 192.0.2.0/24.
pub const ROOT_UNDERLAY: &str = "198.51.100.100";
/// How long a killed root router may take to go away.
const ROOT_KILL_WAIT: Duration = Duration::from_secs(10);

/// The root namespace has one `meshnet` bridge and one plugin socket: root
/// routers of tests in one process take turns (across processes the
/// callers hold `/tmp/meshnet-rootns.lock`).
static ROOT_TURN: Mutex<()> = Mutex::new(());
/// Makes each root router's underlay veth name unique in this process.
static ROOT_SERIAL: AtomicU32 = AtomicU32::new(0);

/// A router in the root network namespace (where dockerd lives and moves
/// plugin interfaces from), joined to a lab segment by a veth, with
/// `--no-discovery` and its own run dir, data dir and API port. Dropping it
/// stops the router (which removes the Docker network), sweeps its bridge,
/// veths and firewall rules (`meshnet reset`) and deletes the underlay veth,
/// also when the test panicked.
#[derive(Debug)]
pub struct RootRouter {
    dir: PathBuf,
    veth: String,
    _turn: MutexGuard<'static, ()>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl RootRouter {
    /// A `meshnet` command aimed at this router.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::meshnet_bin());
        cmd.args(args)
            .env("MESHNET_RUN_DIR", self.dir.join("run"))
            .env("MESHNET_DATA_DIR", self.dir.join("data"))
            .env("MESHNET_HTTP_ADDR", ROOT_HTTP_ADDR)
            .env_remove("MESHNET_PASSWORD")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null());
        cmd
    }

    /// `meshnet args` on this router.
    pub fn meshnet(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running meshnet")
    }

    /// `meshnet args`, which must succeed; its stdout.
    pub fn meshnet_ok(&self, args: &[&str]) -> String {
        let out = self.meshnet(args);
        assert!(
            out.status.success(),
            "meshnet {} (root namespace) failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The proxy's `DOCKER_HOST`.
    pub fn proxy(&self) -> String {
        format!("unix://{}", self.dir.join("run/meshnet.sock").display())
    }

    /// The root-only control socket (every API route).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/meshnet-api.sock")
    }

    /// The router's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run/router.log")).unwrap_or_default()
    }

    /// Connects a root-namespace veth to `segment` of `lab` (addressed
    /// [`ROOT_UNDERLAY`]) and launches a router on it with `extra` flags
    /// (IPAM init, proxy and plugin choices are the caller's).
    pub fn start(lab: &Lab, segment: SegmentId, extra: &[&str]) -> RootRouter {
        let turn = ROOT_TURN.lock().unwrap_or_else(|e| e.into_inner());
        let n = ROOT_SERIAL.fetch_add(1, Ordering::Relaxed);
        let veth = format!("mnr{}x{n}", std::process::id() % 100_000);
        let peer = format!("{veth}s");
        let seg = lab.segment(segment).netns().to_string();
        let router = RootRouter {
            dir: lab.dir().join(format!("root{n}")),
            veth: veth.clone(),
            _turn: turn,
        };
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", &peer, "netns", &seg,
        ]);
        ip(&[
            "-n",
            &seg,
            "link",
            "set",
            &peer,
            "master",
            SEGMENT_BRIDGE,
            "up",
        ]);
        ip(&["addr", "add", &format!("{ROOT_UNDERLAY}/24"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        router.launch(extra);
        router
    }

    /// `meshnet launch` (again) with the base flags and `extra`.
    pub fn launch(&self, extra: &[&str]) {
        let out = self
            .command(&[
                "launch",
                "--nickname",
                "root",
                "--host",
                ROOT_UNDERLAY,
                "--status-addr=",
                "--no-discovery",
            ])
            .args(extra)
            .output()
            .expect("running meshnet launch in the root namespace");
        assert!(
            out.status.success(),
            "launch in the root namespace failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The router's pid, from its pid file.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("run/router.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `kill -9` of the router; waits until the process is gone.
    pub fn kill9(&self) {
        let pid = self.pid().expect("the root router's pid file");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        crate::wait_for("the killed root router to be gone", ROOT_KILL_WAIT, || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie nobody reaps (its parent `launch` exited).
            (stat.is_empty() || stat.contains(") Z ")).then_some(())
        });
    }
}

impl Drop for RootRouter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- root-namespace router.log ----\n{}",
                crate::tail(&self.log(), 40)
            );
        }
        for args in [&["stop"][..], &["reset"][..]] {
            if let Ok(out) = self.command(args).output()
                && !out.status.success()
            {
                eprintln!(
                    "meshnet {} (root namespace): {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
    }
}
