//! README promises that no other scenario checks, each through the CLI on
//! real routers in lab hosts (network namespaces): a second `launch` is
//! refused and says how to stop the first, `--mtu` sets the bridge and
//! `ethwe` MTU, `pid:N` containers attach and detach, `expose`/`hide`
//! without arguments take an address from IPAM and give it back,
//! `--conn-limit` turns away the connection past it and the refused peer
//! says why, `--no-discovery` keeps a router to the peers it was given, and
//! `meshnet demo` runs, prints its mesh and pings, and removes what it made.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshnet_tests::view::{established_with, peer_names};
use meshnet_tests::{
    Host, control_addr, lab_on_one_segment, launch, meshnet_ok, require_root, router_log,
    status_connections, tail, try_report, wait_for,
};

/// Bound on a small mesh converging.
const CONVERGE: Duration = Duration::from_secs(60);
/// The MTU the `--mtu` scenario asks for (not the default 1376).
const MTU: u32 = 1400;
/// How long the `--no-discovery` scenario watches for a link that must not form.
const NO_DIAL_WINDOW: Duration = Duration::from_secs(15);
/// Bound on the whole demo (three routers, containers, pings, clean-up).
const DEMO_TIMEOUT: Duration = Duration::from_secs(600);

fn fails(host: &Host, args: &[&str]) -> String {
    let out = host.meshnet(args).expect("running meshnet");
    assert!(
        !out.status.success(),
        "meshnet {} on {} succeeded: {}",
        args.join(" "),
        host.name(),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The MTU of `ifname` in `host`'s namespace.
fn mtu_of(host: &Host, ifname: &str) -> u32 {
    let out = host
        .exec(&["cat", &format!("/sys/class/net/{ifname}/mtu")])
        .expect("reading an MTU");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no {ifname} on {}: {out:?}", host.name()))
}

/// The IPv4 addresses (CIDR) of `ifname` in the network namespace of `pid`.
fn addrs_in_pid(pid: u32, ifname: &str) -> Vec<String> {
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
        ])
        .output()
        .expect("running nsenter");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(ifname))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// A process in its own network namespace, started from `host`'s; killed on drop.
struct Unshared(Child);

impl Unshared {
    fn start(host: &Host) -> Unshared {
        // `ip netns exec` and `unshare` (without --fork) exec in place, so
        // the child's pid is the sleeper in the new namespace.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                host.netns(),
                "unshare",
                "--net",
                "sleep",
                "600",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("running unshare");
        let pid = child.id();
        let host_ns = std::fs::read_link(format!("/run/netns/{}", host.netns())).ok();
        wait_for("the sleeper in its own namespace", CONVERGE, || {
            let own =
                std::fs::read_link(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string())?;
            if cmd.starts_with(b"sleep\0") && Some(&own) != host_ns.as_ref() {
                Ok(())
            } else {
                Err(format!("{own:?}, {}", String::from_utf8_lossy(&cmd)))
            }
        });
        Unshared(child)
    }
}

impl Drop for Unshared {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_launch_is_refused_mtu_applies_pid_containers_and_bare_expose_hide() {
    require_root();
    let lab = lab_on_one_segment("promise", &["h1"]);
    let h1 = lab.host("h1");
    launch(
        h1,
        &[
            "--nickname",
            "h1",
            "--mtu",
            &MTU.to_string(),
            "--ipalloc-init=consensus=1",
        ],
    );
    let pid = h1.router_pid().expect("router pid");

    // A second launch: refused, says how to stop the first, leaves it be.
    let err = fails(h1, &["launch", "--nickname", "again"]);
    assert!(
        err.contains("already running") && err.contains("meshnet stop"),
        "a second launch must say it is running and how to stop it: {err:?}"
    );
    assert_eq!(h1.router_pid(), Some(pid), "the first router was replaced");
    assert!(h1.router_running(), "the first router died");

    // --mtu: the bridge, and every ethwe attached to it.
    assert_eq!(mtu_of(h1, "meshnet"), MTU, "bridge MTU");

    // pid:N.
    let sleeper = Unshared::start(h1);
    let target = format!("pid:{}", sleeper.0.id());
    let out = meshnet_ok(h1, &["attach", "10.2.5.1/24", &target]);
    assert_eq!(out.trim(), "10.2.5.1", "attach {target} printed {out:?}");
    assert_eq!(addrs_in_pid(sleeper.0.id(), "ethwe"), ["10.2.5.1/24"]);
    // (sysfs shows the test's own namespace, so ask ip inside the container.)
    let link = Command::new("nsenter")
        .args([
            "-t",
            &sleeper.0.id().to_string(),
            "-n",
            "ip",
            "-o",
            "link",
            "show",
            "ethwe",
        ])
        .output()
        .expect("nsenter");
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    assert!(link.contains(&format!(" mtu {MTU} ")), "ethwe MTU: {link}");
    meshnet_ok(h1, &["detach", &target]);
    assert!(
        addrs_in_pid(sleeper.0.id(), "ethwe").is_empty(),
        "detach {target} left ethwe"
    );
    drop(sleeper);

    // expose / hide with no argument: an IPAM address on the bridge, back.
    let out = meshnet_ok(h1, &["expose"]);
    let exposed = out.trim().to_owned();
    assert!(
        exposed.starts_with("10.") && exposed.parse::<std::net::Ipv4Addr>().is_ok(),
        "expose printed {out:?}, not one address"
    );
    let bridge = || {
        let out = h1
            .exec(&["ip", "-o", "-4", "addr", "show", "dev", "meshnet"])
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        bridge().contains(&format!("inet {exposed}/12 ")),
        "{exposed}/12 (the default range's prefix) on the bridge: {}",
        bridge()
    );
    let ps = meshnet_ok(h1, &["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("weave:expose ") && l.contains(&format!("{exposed}/12"))),
        "ps shows weave:expose with {exposed}: {ps}"
    );
    meshnet_ok(h1, &["hide"]);
    assert!(
        !bridge().contains(&exposed),
        "hide left {exposed} on the bridge: {}",
        bridge()
    );
    let ps = meshnet_ok(h1, &["ps"]);
    assert!(
        !ps.lines().any(|l| l.contains(&exposed)),
        "ps still shows {exposed}: {ps}"
    );
    // The address went back to IPAM: expose again gets one, hide again.
    let again = meshnet_ok(h1, &["expose"]);
    assert!(again.trim().starts_with("10."), "{again}");
    meshnet_ok(h1, &["hide"]);
}

#[test]
fn conn_limit_turns_away_the_connection_past_it() {
    require_root();
    let lab = lab_on_one_segment("connlim", &["h1", "h2", "h3"]);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    launch(h1, &["--nickname", "h1", "--conn-limit", "1"]);
    let n1_addr = control_addr(h1);
    let n2 = launch(h2, &["--nickname", "h2", &n1_addr]);
    let report = try_report(h1).expect("report");
    assert_eq!(report["Router"]["ConnLimit"], 1, "{}", report["Router"]);
    wait_for("h1 established with h2", CONVERGE, || {
        let r = try_report(h1).map_err(|e| e.to_string())?;
        established_with(&r, &n2)
            .then_some(())
            .ok_or(r["Router"]["Connections"].to_string())
    });
    // h3 gives only h1 (no discovery: it must not go round through h2).
    launch(h3, &["--nickname", "h3", "--no-discovery", &n1_addr]);
    let line = wait_for(
        "h3 to say h1 refused it for its connection limit",
        CONVERGE,
        || {
            let lines = status_connections(h3);
            lines
                .iter()
                .find(|l| {
                    l.addr.to_string() == n1_addr && l.info.contains("Connection limit reached (1)")
                })
                .cloned()
                .ok_or(lines)
        },
    );
    assert!(
        matches!(line.state.as_str(), "failed" | "retrying" | "waiting"),
        "{line:?}"
    );
    let r = try_report(h1).expect("report");
    let established = r["Router"]["Connections"].as_array().map_or(0, |c| {
        c.iter().filter(|c| c["State"] == "established").count()
    });
    assert_eq!(
        established, 1,
        "h1 went past its limit: {}",
        r["Router"]["Connections"]
    );
}

#[test]
fn no_discovery_keeps_each_router_to_the_peers_it_was_given() {
    require_root();
    let lab = lab_on_one_segment("nodisc", &["h1", "h2", "h3"]);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    let n1 = launch(h1, &["--nickname", "h1", "--no-discovery"]);
    launch(
        h2,
        &["--nickname", "h2", "--no-discovery", &control_addr(h1)],
    );
    let n3 = launch(
        h3,
        &["--nickname", "h3", "--no-discovery", &control_addr(h2)],
    );
    // Gossip still tells everyone about everyone ...
    for h in [h1, h3] {
        wait_for(&format!("{} to know 3 peers", h.name()), CONVERGE, || {
            let r = try_report(h).map_err(|e| e.to_string())?;
            let n = peer_names(&r).len();
            (n == 3).then_some(()).ok_or(format!("{n} peers"))
        });
    }
    let status = meshnet_ok(h1, &["status"]);
    assert!(
        status.contains("  PeerDiscovery: disabled\n"),
        "status: {status}"
    );
    // ... but h1 and h3 never dial each other (with discovery they do, see
    // control_plane.rs's chain).
    let start = Instant::now();
    while start.elapsed() < NO_DIAL_WINDOW {
        let r1 = try_report(h1).expect("report h1");
        let r3 = try_report(h3).expect("report h3");
        assert!(
            !established_with(&r1, &n3) && !established_with(&r3, &n1),
            "h1 and h3 connected without discovery:\n{}\n{}",
            r1["Router"]["Connections"],
            tail(&router_log(h1), 20)
        );
        let targets = meshnet_ok(h1, &["status", "targets"]);
        assert_eq!(targets, "", "h1 was given no peers");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Network namespaces whose name contains `needle`.
fn netns_with(needle: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Lab temp dirs whose name contains `needle`.
fn lab_dirs_with(needle: &str) -> Vec<String> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn meshnet_demo_runs_pings_across_its_mesh_and_removes_everything() {
    require_root();
    // The demo names its lab `demo` after its own pid.
    let mut child = Command::new(meshnet_tests::meshnet_bin())
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running meshnet demo");
    let needle = format!("-demo-{}-", child.id());
    let deadline = Instant::now() + DEMO_TIMEOUT;
    // Seen while it runs, so that "none left" afterwards means something.
    let mut saw_namespaces = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the demo") {
            break s;
        }
        saw_namespaces |= !netns_with(&needle).is_empty();
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("meshnet demo did not finish within {DEMO_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = child.wait_with_output().expect("demo output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "demo failed ({status}):\n{stdout}\n{stderr}"
    );
    for want in [
        "host1$ meshnet launch --nickname host1",
        "host3$ meshnet launch --nickname host3 192.0.2.2",
        "Full mesh after ",
        "host3$ meshnet status peers",
        "host1$ meshnet ps",
        "The demo's namespaces, processes and files are removed.",
    ] {
        assert!(
            stdout.contains(want),
            "{want:?} missing from the demo:\n{stdout}"
        );
    }
    let pings = stdout.matches("host1's container$ ping -c 2 ").count();
    assert_eq!(pings, 2, "a ping to each other host's container:\n{stdout}");
    let answered = stdout.matches(" 0% packet loss").count();
    assert!(answered >= 2, "every demo ping answered:\n{stdout}");
    // Its clean-up: no namespace (its hosts, their routers, containers and
    // segment live in them) and no lab dir left.
    assert!(saw_namespaces, "never saw the demo's namespaces ({needle})");
    assert_eq!(netns_with(&needle), Vec::<String>::new(), "namespaces left");
    assert_eq!(
        lab_dirs_with(&needle),
        Vec::<String>::new(),
        "lab dirs left"
    );
}
