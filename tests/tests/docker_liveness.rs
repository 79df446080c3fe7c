//! Container liveness on the real Docker engine, with a router in Docker's
//! (the root) network namespace on a 198.51.100.0/24 lab veth
//! (`--no-discovery`):
//!
//! 1. Addresses of containers attached with `meshnet attach` come back when
//!    the containers go: at once when removed, after the grace period when
//!    they only die (a restart would get them back); a full range makes
//!    `attach` fail at once, in words; the dead container's DNS name goes
//!    at once.
//! 2. The network plugin after `kill -9` and relaunch of its router:
//!    ReleaseAddress frees exactly the released address, no address is
//!    leaked or given twice, and `status ipam` counts exactly the live ones.
//! 3. `meshnet launch` with the plugin returns only once `docker run
//!    --network meshnet` works, five times in a row.
//! 4. A container that died while the router was down gives its address
//!    back after the relaunch (after the grace), a live one keeps its own.
//! 5. A plugin container removed while the router was down (Docker's
//!    ReleaseAddress found no plugin) gives its address back after the
//!    relaunch; the running one keeps its own.
//!
//! Without a Docker engine these tests fail, saying so. Containers get names
//! unique to this run and are removed even when a test panics.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use meshnet_tests::docker::{
    Containers, ROOT_HTTP_ADDR, RootRouter, docker, docker_ok, require_docker,
};
use meshnet_tests::wait_for;

/// The range of the scenarios: 6 usable addresses.
const SMALL_RANGE: &str = "10.99.0.0/29";
/// IPAM's grace for dead containers (meshnet_ipam::DEFAULT_GRACE).
const GRACE: Duration = Duration::from_secs(30);
/// The grace plus IPAM's timer period and slack for a loaded machine.
const AFTER_GRACE: Duration = Duration::from_secs(75);

fn flags(range: &str, plugin: bool) -> Vec<&str> {
    vec![
        "--proxy=false",
        if plugin { "--plugin" } else { "--plugin=false" },
        "--ipalloc-range",
        range,
        "--ipalloc-init=consensus=1",
    ]
}

fn id_of(container: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.Id}}", container])
        .trim()
        .to_string()
}

/// `GET /ip/{id}` on the root router's read-only address: the addresses
/// IPAM holds for `id`.
fn held(id: &str) -> Vec<String> {
    let url = format!("http://{ROOT_HTTP_ADDR}/ip/{id}");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", &url])
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.contains('/'))
        .map(str::to_string)
        .collect()
}

/// The `(N active)` count of `status ipam`: addresses IPAM holds here.
fn active(root: &RootRouter) -> usize {
    let text = root.meshnet_ok(&["status", "ipam"]);
    text.lines()
        .next()
        .and_then(|l| l.rsplit_once('('))
        .and_then(|(_, t)| t.strip_suffix(" active)"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no active count in `status ipam`: {text}"))
}

/// The address Docker gave `container` on the network `meshnet`.
fn plugin_ip(container: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        "{{with index .NetworkSettings.Networks \"meshnet\"}}{{.IPAddress}}{{end}}",
        container,
    ])
    .trim()
    .to_string()
}

/// Who holds `ip` in the root router's IPAM (control socket), if anyone.
fn owner(root: &RootRouter, ip: &str) -> Option<String> {
    let socket = root.socket();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&socket)
        .arg(format!("http://x/ipinfo/owner/{ip}"))
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code == "200").then(|| body.trim().to_string())
}

#[test]
fn addresses_of_dead_attached_containers_come_back() {
    require_docker();
    let mut lab = meshnet_tests::lab("lv-attach");
    let seg = lab.add_segment("198.51.100.0/24").expect("adding segment");
    let root = RootRouter::start(&lab, seg, &flags(SMALL_RANGE, false));
    let mut names = Containers::new("lv-attach");
    let boxes: Vec<String> = (1..=7).map(|i| names.name(&format!("box{i}"))).collect();
    for b in &boxes {
        docker_ok(&["run", "-d", "--name", b, "busybox", "sleep", "600"]);
    }
    let ids: Vec<String> = boxes.iter().map(|b| id_of(b)).collect();
    let mut addrs = BTreeSet::new();
    for b in &boxes[..6] {
        let ip = root.meshnet_ok(&["attach", b]).trim().to_string();
        assert!(ip.starts_with("10.99.0."), "{ip}");
        addrs.insert(ip);
    }
    assert_eq!(addrs.len(), 6, "{addrs:?}");

    // The range is full: the 7th attach fails at once, saying so.
    let asked = Instant::now();
    let out = root.meshnet(&["attach", &boxes[6]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "attach to a full range succeeded");
    assert!(
        err.contains("no free address in 10.99.0.0/29: 6 of 6 in use"),
        "{err}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "took {:?}",
        asked.elapsed()
    );
    assert!(root.meshnet_ok(&["status", "dns"]).contains(&boxes[0]));

    // Three die (kept for the grace: a restart gets them back), three are
    // removed (freed at once).
    for b in &boxes[..3] {
        docker_ok(&["kill", b]);
    }
    let died = Instant::now();
    for b in &boxes[3..6] {
        docker_ok(&["rm", "-f", b]);
    }
    wait_for(
        "the removed containers' addresses to be free",
        Duration::from_secs(15),
        || {
            let n = active(&root);
            (n == 3).then_some(()).ok_or(n)
        },
    );
    for id in &ids[..3] {
        assert_eq!(held(id).len(), 1, "a dead container lost its address early");
    }
    assert!(
        died.elapsed() < GRACE,
        "the check came too late to mean anything"
    );
    // Its DNS name went at once.
    wait_for(
        "the dead container's name to go",
        Duration::from_secs(10),
        || {
            let dns = root.meshnet_ok(&["status", "dns"]);
            (!dns.contains(&boxes[0])).then_some(()).ok_or(dns)
        },
    );

    wait_for("the grace period to free the rest", AFTER_GRACE, || {
        let n = active(&root);
        (n == 0).then_some(()).ok_or(n)
    });
    assert!(
        died.elapsed() >= GRACE - Duration::from_secs(1),
        "freed after {:?}, before the grace",
        died.elapsed()
    );
    let ip = root.meshnet_ok(&["attach", &boxes[6]]).trim().to_string();
    assert!(
        addrs.contains(&ip),
        "{ip} is not one of the freed {addrs:?}"
    );
    assert_eq!(held(&ids[6]), [format!("{ip}/29")]);
}

#[test]
fn a_container_that_died_while_the_router_was_down_is_released() {
    require_docker();
    let mut lab = meshnet_tests::lab("lv-down");
    let seg = lab.add_segment("198.51.100.0/24").expect("adding segment");
    let flags = flags(SMALL_RANGE, false);
    let root = RootRouter::start(&lab, seg, &flags);
    let mut names = Containers::new("lv-down");
    let (dies, lives) = (names.name("dies"), names.name("lives"));
    for b in [&dies, &lives] {
        docker_ok(&["run", "-d", "--name", b, "busybox", "sleep", "600"]);
        root.meshnet_ok(&["attach", b]);
    }
    let (dies_id, lives_id) = (id_of(&dies), id_of(&lives));
    let kept = held(&lives_id);
    assert_eq!(kept.len(), 1);

    root.kill9();
    docker_ok(&["kill", &dies]);
    root.launch(&flags);
    let relaunched = Instant::now();
    assert_eq!(held(&dies_id).len(), 1, "released before the grace");
    wait_for(
        "the address of the container that died meanwhile to be freed",
        AFTER_GRACE,
        || {
            let h = held(&dies_id);
            h.is_empty().then_some(()).ok_or(h)
        },
    );
    assert!(relaunched.elapsed() >= GRACE - Duration::from_secs(1));
    assert_eq!(held(&lives_id), kept, "the live container lost its address");
    assert_eq!(active(&root), 1);
}

#[test]
fn plugin_addresses_survive_a_router_kill_without_leak_or_duplicate() {
    require_docker();
    let mut lab = meshnet_tests::lab("lv-plugin");
    let seg = lab.add_segment("198.51.100.0/24").expect("adding segment");
    let flags = flags("10.99.0.0/28", true);
    let root = RootRouter::start(&lab, seg, &flags);
    // Declared after the router: removed first, so stop can remove the network.
    let mut names = Containers::new("lv-plugin");
    let run = |name: &str| {
        docker_ok(&[
            "run",
            "-d",
            "--network",
            "meshnet",
            "--name",
            name,
            "busybox",
            "sleep",
            "600",
        ]);
        plugin_ip(name)
    };
    let first: Vec<String> = (1..=3).map(|i| names.name(&format!("c{i}"))).collect();
    let before: Vec<String> = first.iter().map(|c| run(c)).collect();
    assert_eq!(
        before.iter().collect::<BTreeSet<_>>().len(),
        3,
        "{before:?}"
    );
    assert_eq!(active(&root), 3);

    root.kill9();
    root.launch(&flags);
    docker_ok(&["rm", "-f", &first[0]]);
    let more: Vec<String> = (4..=5).map(|i| names.name(&format!("c{i}"))).collect();
    let mut live: Vec<(String, String)> = first[1..]
        .iter()
        .map(|c| (c.clone(), plugin_ip(c)))
        .collect();
    for c in &more {
        live.push((c.clone(), run(c)));
    }
    let ips: BTreeSet<&String> = live.iter().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), 4, "an address was given twice: {live:?}");
    assert_eq!(
        live[..2]
            .iter()
            .map(|(_, ip)| ip.clone())
            .collect::<Vec<_>>(),
        before[1..],
        "running containers kept their addresses"
    );
    for (c, ip) in &live {
        let held_by = owner(&root, ip);
        assert!(
            held_by
                .as_deref()
                .is_some_and(|o| o.starts_with("docker-plugin-")),
            "{c}'s {ip} is held by {held_by:?}"
        );
    }
    assert_eq!(
        active(&root),
        4,
        "IPAM holds an address no container has: {}",
        root.meshnet_ok(&["status", "ipam"])
    );
    // The removed container's address was freed, not leaked: it is live
    // again on a new container, or nobody holds it.
    if !ips.contains(&before[0]) {
        assert_eq!(owner(&root, &before[0]), None);
    }
}

#[test]
fn docker_run_on_the_plugin_network_works_right_after_launch() {
    require_docker();
    let mut lab = meshnet_tests::lab("lv-launch");
    let seg = lab.add_segment("198.51.100.0/24").expect("adding segment");
    let flags = flags("10.99.0.0/28", true);
    let root = RootRouter::start(&lab, seg, &flags);
    for round in 0..5 {
        if round > 0 {
            root.meshnet_ok(&["stop"]);
            root.launch(&flags);
        }
        let out = docker(&[
            "run",
            "--rm",
            "--network",
            "meshnet",
            "busybox",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "ethwe0",
        ]);
        assert!(
            out.status.success(),
            "round {round}: docker run --network meshnet right after launch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("inet 10.99.0."), "round {round}: {text}");
    }
}

#[test]
fn a_plugin_container_removed_while_the_router_was_down_gives_its_address_back() {
    require_docker();
    let mut lab = meshnet_tests::lab("lv-plugdown");
    let seg = lab.add_segment("198.51.100.0/24").expect("adding segment");
    let flags = flags("10.99.0.0/28", true);
    let root = RootRouter::start(&lab, seg, &flags);
    let mut names = Containers::new("lv-plugdown");
    let (gone, stays) = (names.name("gone"), names.name("stays"));
    for c in [&gone, &stays] {
        docker_ok(&[
            "run",
            "-d",
            "--network",
            "meshnet",
            "--name",
            c,
            "busybox",
            "sleep",
            "600",
        ]);
    }
    let (gone_ip, stays_ip) = (plugin_ip(&gone), plugin_ip(&stays));
    assert_eq!(active(&root), 2);

    root.kill9();
    // Docker's ReleaseAddress finds no plugin now.
    let out = docker(&["rm", "-f", &gone]);
    assert!(
        out.status.success(),
        "docker rm -f with the plugin down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root.launch(&flags);
    wait_for(
        "the removed container's address to be freed after the relaunch",
        Duration::from_secs(30),
        || owner(&root, &gone_ip).map_or(Ok(()), Err),
    );
    assert!(
        owner(&root, &stays_ip).is_some_and(|o| o.starts_with("docker-plugin-")),
        "the running container's address was freed"
    );
    assert_eq!(active(&root), 1);
}
