//! The router's life cycle and what the CLI says when things go wrong, with
//! routers in network namespaces:
//!
//! - `kill -9` at any instant (while it starts up, right after `launch`
//!   returned, a little later) followed at once by `launch` always works.
//! - A `launch` that fails removes what it made and says why.
//! - Peers that are not `host[:port]` (port 99999, port `abc`) are refused
//!   when given, by `launch` and `connect`, and never saved.
//! - Every command that needs the router says so when none runs.
//! - `status ipam` always prints its state, and `attach` while IPAM awaits
//!   consensus names the cause instead of timing out.
//! - A full range is said at once in words; `detach` gives back exactly the
//!   addresses it removes.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use meshnet::lab::Host;
use meshnet_tests::{TestLab, lab_on_one_segment, launch, require_root, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn meshnet(host: &Host, args: &[&str]) -> Output {
    host.meshnet(args).expect("running meshnet")
}

fn ok(host: &Host, args: &[&str]) -> String {
    let out = meshnet(host, args);
    assert!(
        out.status.success(),
        "meshnet {} failed: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(host: &Host, args: &[&str]) -> String {
    let out = meshnet(host, args);
    assert!(
        !out.status.success(),
        "meshnet {} should fail: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Names of meshnet's links in `host` (the bridge and the VXLAN device).
fn links(host: &Host) -> String {
    let out = host.exec(&["ip", "-o", "link", "show"]).expect("ip link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_tables(host: &Host) -> String {
    let out = host.exec(&["nft", "list", "tables"]).expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ARGS: [&str; 4] = ["launch", "--nickname", "a", "--ipalloc-init=consensus=1"];

#[test]
fn kill_9_at_any_instant_then_launch_at_once_always_works() {
    require_root();
    let lab = lab_on_one_segment("kill9", &["a"]);
    let a = lab.host("a");
    launch(a, &ARGS[1..]);
    for round in 0..20u64 {
        let pid = a.router_pid().expect("the router's pid");
        if round % 4 == 3 {
            // While it starts up: kill the new router as soon as it wrote
            // its pid; the `launch` that started it must end, not hang.
            kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
            let mut child = a
                .command(&ARGS)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning launch");
            let new = wait_for("the new router's pid", Duration::from_secs(30), || {
                a.router_pid()
                    .filter(|p| *p != pid && meshnet::lab::process_alive(*p))
            });
            let _ = kill(Pid::from_raw(new), Signal::SIGKILL);
            let _ = child.wait();
        } else {
            // Right after launch returned, or a little later.
            std::thread::sleep(Duration::from_millis(40 * (round % 4)));
            kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
        }
        let out = meshnet(a, &ARGS);
        assert!(
            out.status.success(),
            "round {round}: launch right after kill -9 failed: {}",
            text(&out)
        );
        let status = meshnet(a, &["status"]);
        assert!(
            status.status.success(),
            "round {round}: status after relaunch: {}",
            text(&status)
        );
    }
}

#[test]
fn a_failed_launch_removes_what_it_made_and_says_why() {
    require_root();
    let lab = lab_on_one_segment("badlaunch", &["a"]);
    let a = lab.host("a");
    // As in a fresh namespace, loopback is down (and has no address): the
    // API cannot be reached.
    a.exec(&["ip", "addr", "flush", "dev", "lo"]).expect("ip");
    a.exec(&["ip", "link", "set", "lo", "down"]).expect("ip");
    let started = Instant::now();
    let err = fails(a, &ARGS);
    assert!(
        err.contains("loopback") && err.contains("ip link set lo up"),
        "launch must say why it failed: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "launch waited its whole timeout for an API it can never reach"
    );
    let l = links(a);
    assert!(
        !l.contains(" meshnet:") && !l.contains("vethwe-vxlan"),
        "a failed launch left links behind:\n{l}"
    );
    assert!(
        !nft_tables(a).contains("meshnet"),
        "a failed launch left the nft table"
    );
    for f in ["router.pid", "meshnet.sock"] {
        assert!(
            !a.run_dir().join(f).exists(),
            "a failed launch left {f} behind"
        );
    }
    a.exec(&["ip", "link", "set", "lo", "up"]).expect("ip");
    launch(a, &ARGS[1..]);

    // A router that exits during start-up (its peer port is taken by the
    // first one): the error is the log's last error, not its last line.
    let second = a.run_dir().join("other");
    let out = a
        .run(
            a.command(&[
                "launch",
                "--nickname",
                "b",
                "--status-addr=",
                "--proxy=false",
            ])
            .env("MESHNET_HTTP_ADDR", "127.0.0.1:6798")
            .env("MESHNET_RUN_DIR", &second),
        )
        .expect("running launch");
    let err = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("6783") && err.contains("in use"),
        "launch must quote the router's error: {err}"
    );
    assert!(!second.join("router.pid").exists());
}

#[test]
fn invalid_peers_are_refused_when_given_and_never_saved() {
    require_root();
    let lab = lab_on_one_segment("badpeer", &["a"]);
    let a = lab.host("a");
    for bad in ["192.0.2.9:99999", "192.0.2.9:abc", "192.0.2.9:0"] {
        let err = fails(a, &["launch", "--nickname", "a", bad]);
        assert!(
            err.contains(bad) && err.contains("host[:port]"),
            "launch {bad}: {err}"
        );
        assert!(!a.router_running(), "launch {bad} started a router");
    }
    launch(a, &ARGS[1..]);
    for bad in ["192.0.2.9:99999", "192.0.2.9:abc"] {
        let err = fails(a, &["connect", bad]);
        assert!(err.contains(bad), "connect {bad}: {err}");
    }
    let targets = ok(a, &["status", "targets"]);
    assert!(!targets.contains("192.0.2.9"), "{targets}");
    ok(a, &["stop"]);
    launch(a, &["--nickname", "a"]);
    let targets = ok(a, &["status", "targets"]);
    assert!(!targets.contains("192.0.2.9"), "saved: {targets}");
}

#[test]
fn commands_that_need_the_router_say_so_when_it_is_not_running() {
    require_root();
    let mut lab = lab_on_one_segment("norouter", &["a"]);
    let c1 = container_ns(&mut lab, "a", "c1");
    let a = lab.host("a");
    for args in [
        &["ps"][..],
        &["status"],
        &["status", "ipam"],
        &["report"],
        &["connect", "192.0.2.2"],
        &["forget", "192.0.2.2"],
        &["expose"],
        &["hide"],
        &["rmpeer", "x"],
        &["prime"],
        &["attach", &c1],
        &["detach", &c1],
    ] {
        let err = fails(a, args);
        assert!(
            err.contains("not running") && err.contains("meshnet launch"),
            "meshnet {}: {err}",
            args.join(" ")
        );
    }
}

#[test]
fn plugin_forced_on_outside_dockers_namespace_is_refused() {
    require_root();
    let lab = lab_on_one_segment("plugns", &["a"]);
    let a = lab.host("a");
    let err = fails(a, &["launch", "--nickname", "a", "--plugin"]);
    assert!(
        err.contains("--plugin") && err.contains("Docker's network namespace"),
        "{err}"
    );
    assert!(!a.router_running());
    assert!(!links(a).contains(" meshnet:"), "it made a bridge");
}

/// The netns name of a lab container.
fn container_ns(lab: &mut TestLab, host: &str, name: &str) -> String {
    format!(
        "netns:{}",
        lab.add_container(host, name).expect("adding container")
    )
}

#[test]
fn ipam_waits_and_full_ranges_are_said_in_words() {
    require_root();
    let mut lab = lab_on_one_segment("ipamsay", &["a", "b"]);
    let c1 = container_ns(&mut lab, "a", "c1");
    let a = lab.host("a");
    launch(a, &["--nickname", "a", "--ipalloc-init=consensus=2"]);
    // `status ipam` always prints its state, before and while it awaits
    // consensus.
    let st = ok(a, &["status", "ipam"]);
    assert!(!st.trim().is_empty(), "status ipam printed nothing");
    let err = fails(a, &["attach", &c1]);
    assert!(
        err.contains("waiting for IPAM consensus")
            && err.contains("quorum 2, 1 peer known")
            && err.contains("--ipalloc-init"),
        "attach while IPAM awaits consensus: {err}"
    );
    let st = ok(a, &["status", "ipam"]);
    assert!(
        st.contains("awaiting consensus (quorum: 2, known: 1)"),
        "status ipam: {st:?}"
    );
    ok(a, &["stop"]);

    // /29: six usable addresses.
    let b = lab.host("b");
    launch(
        b,
        &[
            "--nickname",
            "b",
            "--ipalloc-init=consensus=1",
            "--ipalloc-range=10.99.0.0/29",
        ],
    );
    let mut cs = Vec::new();
    for i in 0..7 {
        cs.push(container_ns(&mut lab, "b", &format!("f{i}")));
    }
    let b = lab.host("b");
    for c in &cs[..6] {
        ok(b, &["attach", c]);
    }
    let started = Instant::now();
    let err = fails(b, &["attach", &cs[6]]);
    assert!(
        err.contains("no free address in 10.99.0.0/29: 6 of 6 in use"),
        "a full range must be said in words: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a full range must be said at once"
    );
    let st = ok(b, &["status", "ipam"]);
    assert!(st.contains("(6 active)"), "{st}");

    // detach gives back exactly what it removes, explicit addresses too.
    ok(b, &["attach", "10.2.1.1/24", &cs[0]]);
    ok(b, &["detach", "10.2.1.1/24", &cs[0]]);
    ok(b, &["attach", "10.2.1.1/24", &cs[1]]);
    // The IPAM address of cs[0] is still in use: never given to another.
    let err = fails(b, &["attach", &cs[6]]);
    assert!(err.contains("6 of 6 in use"), "{err}");
    // Detaching cs[0] entirely frees its IPAM address for the next one.
    ok(b, &["detach", &cs[0]]);
    let got = ok(b, &["attach", &cs[6]]);
    assert!(got.trim().starts_with("10.99.0."), "{got}");
}
