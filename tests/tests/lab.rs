//! The lab harness itself: hosts reach each other only over segments they
//! share, commands run inside the right namespace with the right env, and
//! cleanup leaves nothing behind — after a normal drop, after a panic, and
//! (via `sweep_stale`) after the owning process died. Uses `/bin/sh` as the
//! "meshnet binary", so it needs root but not a built meshnet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshnet::lab::process_alive;
use meshnet_tests::{Lab, require_root, wait_for};

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Whether `from` gets an answer (a TCP RST counts) from `to`: "refused" means
/// the packet arrived; a timeout means there is no path.
fn reaches(lab: &Lab, from: &str, to: Ipv4Addr) -> bool {
    let probe = format!("echo > /dev/tcp/{to}/9");
    let out = lab
        .host(from)
        .exec(&["timeout", "3", "bash", "-c", &probe])
        .expect("running probe");
    String::from_utf8_lossy(&out.stderr).contains("refused")
}

/// Starts a long sleep inside `host`, detached like a router; returns its pid
/// (also written to `router.pid`).
fn start_sleeper(lab: &Lab, host: &str) -> i32 {
    let h = lab.host(host);
    // Stdout stays inherited on purpose: `run` must not wait for it to close.
    let out = h
        .meshnet(&[
            "-c",
            "setsid sleep 1000 & echo $! > \"$MESHNET_RUN_DIR/router.pid\"",
        ])
        .expect("starting sleeper");
    assert!(out.status.success(), "{out:?}");
    h.router_pid().expect("sleeper pid")
}

#[test]
fn hosts_reach_each_other_only_over_shared_segments() {
    require_root();
    let mut lab = Lab::new("reach", PathBuf::from("/bin/sh")).expect("lab");
    let a = lab.add_segment("192.0.2.0/24").expect("segment a");
    let b = lab.add_segment("198.51.100.0/24").expect("segment b");
    let (h1_a, h1_b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 1));
    let h2_a = Ipv4Addr::new(192, 0, 2, 2);
    lab.add_host("h1", &[(a, h1_a), (b, h1_b)]).expect("h1");
    lab.add_host("h2", &[(a, h2_a)]).expect("h2");
    lab.add_host("h3", &[(b, Ipv4Addr::new(198, 51, 100, 3))])
        .expect("h3");

    assert_eq!(lab.host("h1").addr(), h1_a);
    assert!(reaches(&lab, "h1", h2_a));
    assert!(reaches(&lab, "h3", h1_b));
    assert!(!reaches(&lab, "h3", h2_a), "h3 and h2 share no segment");
    assert!(
        reaches(&lab, "h2", Ipv4Addr::LOCALHOST),
        "lo must be up in every host"
    );
}

#[test]
fn the_lab_refuses_what_would_leave_test_net_or_collide() {
    require_root();
    let mut lab = Lab::new("refuse", PathBuf::from("/bin/sh")).expect("lab");
    assert!(lab.add_segment("10.0.0.0/24").is_err());
    let seg = lab.add_segment("192.0.2.0/24").expect("segment");
    assert!(
        lab.add_host("h1", &[(seg, Ipv4Addr::new(10, 0, 0, 1))])
            .is_err()
    );
    assert!(lab.add_host("h1", &[]).is_err());
    assert!(
        lab.add_host("bad-name", &[(seg, Ipv4Addr::new(192, 0, 2, 1))])
            .is_err()
    );
    lab.add_host("h1", &[(seg, Ipv4Addr::new(192, 0, 2, 1))])
        .expect("h1");
    assert!(
        lab.add_host("h1", &[(seg, Ipv4Addr::new(192, 0, 2, 2))])
            .is_err()
    );
    assert!(
        lab.add_host("h2", &[(seg, Ipv4Addr::new(192, 0, 2, 1))])
            .is_err()
    );
    assert!(lab.add_container("nohost", "c1").is_err());
}

#[test]
fn commands_run_in_the_host_with_its_own_dirs_and_api_address() {
    require_root();
    let mut lab = Lab::new("env", PathBuf::from("/bin/sh")).expect("lab");
    let seg = lab.add_segment("192.0.2.0/24").expect("segment");
    lab.add_host("h1", &[(seg, Ipv4Addr::new(192, 0, 2, 1))])
        .expect("h1");
    let h1 = lab.host("h1");
    let mut cmd = h1.command(&["-c", "echo $MESHNET_RUN_DIR $MESHNET_DATA_DIR $MESHNET_HTTP_ADDR ${MESHNET_PASSWORD-unset}; ip -br addr"]);
    cmd.env("MESHNET_PASSWORD_UNRELATED", "x");
    let out = h1.run(&mut cmd).expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "{} {} 127.0.0.1:6784 unset",
        h1.run_dir().display(),
        h1.data_dir().display()
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert!(stdout.contains("192.0.2.1/24"), "{stdout}");
    assert!(h1.run_dir().is_dir() && h1.data_dir().is_dir());
}

#[test]
fn cleanup_removes_namespaces_processes_and_files_even_after_a_panic() {
    require_root();
    let leftovers = std::panic::catch_unwind(|| {
        let mut lab = Lab::new("panic", PathBuf::from("/bin/sh")).expect("lab");
        let seg = lab.add_segment("192.0.2.0/24").expect("segment");
        lab.add_host("h1", &[(seg, Ipv4Addr::new(192, 0, 2, 1))])
            .expect("h1");
        let container = lab.add_container("h1", "c1").expect("container");
        let pid = start_sleeper(&lab, "h1");
        let mut namespaces: Vec<String> = lab.hosts().map(|h| h.netns().to_owned()).collect();
        namespaces.extend([container, lab.segment(seg).netns().to_owned()]);
        assert!(namespaces.iter().all(|ns| netns_exists(ns)));
        std::panic::panic_any((namespaces, pid, lab.dir().to_owned()));
    })
    .expect_err("the closure panics");
    let (namespaces, pid, dir) = leftovers
        .downcast::<(Vec<String>, i32, PathBuf)>()
        .map(|b| *b)
        .unwrap_or_else(|other| std::panic::resume_unwind(other));

    for ns in &namespaces {
        assert!(!netns_exists(ns), "{ns} survived the lab");
    }
    assert!(!process_alive(pid), "process {pid} survived the lab");
    assert!(!dir.exists(), "{} survived the lab", dir.display());
}

#[test]
fn kill_router_waits_until_the_router_is_gone() {
    require_root();
    let mut lab = Lab::new("kill", PathBuf::from("/bin/sh")).expect("lab");
    let seg = lab.add_segment("192.0.2.0/24").expect("segment");
    lab.add_host("h1", &[(seg, Ipv4Addr::new(192, 0, 2, 1))])
        .expect("h1");
    let pid = start_sleeper(&lab, "h1");
    assert!(lab.host("h1").router_running());
    lab.host("h1")
        .kill_router(nix::sys::signal::Signal::SIGKILL as i32);
    assert!(!lab.host("h1").router_running());
    assert!(!process_alive(pid));
    lab.cleanup();
    lab.cleanup(); // idempotent
}

#[test]
fn sweep_stale_removes_leftovers_of_dead_processes_only() {
    require_root();
    // A pid that certainly belonged to a process that is gone now.
    let mut child = Command::new("true").spawn().expect("spawning true");
    let dead_pid = child.id();
    child.wait().expect("reaping true");
    let stale = format!("mnl-sweep-{dead_pid}-0-h1");
    let stale_dir = std::env::temp_dir().join(format!("meshnet-lab-sweep-{dead_pid}-0"));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["netns", "add", &stale]);
    std::fs::create_dir_all(&stale_dir).expect("stale dir");
    let sleeper = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "1000"])
        .spawn()
        .expect("sleeper in stale netns");

    // A live lab of this process must survive the sweep.
    let mut live = Lab::new("sweep", PathBuf::from("/bin/sh")).expect("lab");
    let seg = live.add_segment("192.0.2.0/24").expect("segment");
    live.add_host("h1", &[(seg, Ipv4Addr::new(192, 0, 2, 1))])
        .expect("h1");
    let live_ns = live.host("h1").netns().to_owned();
    // The sleeper must be inside the namespace before the sweep looks for it.
    wait_for(
        "sleeper to enter the stale netns",
        Duration::from_secs(10),
        || {
            let out = Command::new("ip")
                .args(["netns", "pids", &stale])
                .output()
                .ok()?;
            (!out.stdout.is_empty()).then_some(())
        },
    );

    Lab::sweep_stale();

    let mut sleeper = sleeper;
    let status = sleeper.wait().expect("waiting for sleeper");
    assert!(
        !status.success(),
        "the sleeper in the stale netns was killed"
    );
    assert!(!netns_exists(&stale), "{stale} was not swept");
    assert!(!stale_dir.exists(), "{} was not swept", stale_dir.display());
    assert!(netns_exists(&live_ns), "a live lab was swept");
    assert!(live.dir().exists(), "a live lab's dir was swept");
}
