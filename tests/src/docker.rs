//! The real Docker engine for scenarios: running the `docker` CLI against
//! the engine or a proxy socket, failing (never skipping) without an
//! engine, and container names unique to a run that are removed even when
//! a test panics.

use std::path::Path;
use std::process::{Command, Output, Stdio};

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
