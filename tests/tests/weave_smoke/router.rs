//! weave's router tests (1xx, 3xx) in lab namespaces: encryption and trust,
//! discovery, connect/forget, target persistence, rmpeer, peer names.
//! Containers are namespaces attached with `weave attach ADDR netns:NAME`.

use std::time::Duration;

use meshnet_tests::status::parse_connections;
use meshnet_tests::{
    TestLab, control_addr, lab_on_one_segment, links, ns_exec, require_root, wait_for,
};

use super::{CONVERGE, Host, launch, ok, weave, weave_link};

/// meshnet's bridge (weave's is `weave`).
const BRIDGE: &str = "meshnet";

/// How long a ping that must fail is given, and how long connectivity may
/// take to change after a topology change.
const SETTLE: Duration = Duration::from_secs(30);

/// A namespace "container" `name` on `host`, attached with `addr` (or IPAM's
/// default); returns its namespace and the address `attach` printed.
pub(super) fn container(
    lab: &mut TestLab,
    link: &std::path::Path,
    host: &str,
    name: &str,
    addr: Option<&str>,
) -> (String, String) {
    let netns = lab
        .add_container(host, name)
        .unwrap_or_else(|e| panic!("adding container {name} on {host}: {e:#}"));
    let target = format!("netns:{netns}");
    let mut args = vec!["attach"];
    args.extend(addr);
    args.push(&target);
    let ip = ok(lab.host(host), link, &args, &[]).trim().to_string();
    (netns, ip)
}

/// A [`container`] with IPAM's default address, which must take less
/// than `limit` (weave: `timeout N start_container`).
fn container_within(
    lab: &mut TestLab,
    link: &std::path::Path,
    host: &str,
    name: &str,
    limit: Duration,
) {
    let start = std::time::Instant::now();
    let (_, ip) = container(lab, link, host, name, None);
    assert!(
        start.elapsed() < limit,
        "{name} on {host} took {:?} to get {ip}",
        start.elapsed()
    );
}

/// One ping from container namespace `from` to `ip`.
pub(super) fn ping(from: &str, ip: &str) -> bool {
    ns_exec(from, &["ping", "-c", "1", "-W", "1", ip])
        .status
        .success()
}

/// Waits until `from` reaches (or, with `!reach`, stops reaching) `ip`.
pub(super) fn wait_ping(from: &str, ip: &str, reach: bool) {
    let what = if reach { "reach" } else { "no longer reach" };
    wait_for(&format!("{from} to {what} {ip}"), SETTLE, || {
        (ping(from, ip) == reach).then_some(())
    });
}

/// `from` does not reach `ip`, now and for a few more tries.
fn assert_no_ping(from: &str, ip: &str) {
    for _ in 0..3 {
        assert!(!ping(from, ip), "{from} reaches {ip}");
    }
}

/// weave's `report -f '{{range .Router.Targets}}{{.}}\n{{end}}'`, sorted.
fn targets(host: &Host, link: &std::path::Path) -> Vec<String> {
    let text = ok(
        host,
        link,
        &["report", "-f", "{{range .Router.Targets}}{{.}}\n{{end}}"],
        &[],
    );
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Waits until `host` has `n` established connections; their lines.
fn established(
    host: &Host,
    link: &std::path::Path,
    n: usize,
) -> Vec<meshnet_tests::status::ConnectionLine> {
    wait_for(
        &format!("{} to have {n} established connections", host.name()),
        CONVERGE,
        || {
            let text = ok(host, link, &["status", "connections"], &[]);
            let lines = parse_connections(&text).map_err(|e| format!("{e}: {text}"))?;
            let est: Vec<_> = lines
                .into_iter()
                .filter(|l| l.state == "established")
                .collect();
            if est.len() == n { Ok(est) } else { Err(text) }
        },
    )
}

/// The value of `weave_connections{state="established", encryption=enc}`
/// on `host`'s status address.
fn established_metric(host: &Host, enc: &str) -> u64 {
    let out = host
        .exec(&["curl", "-s", "http://127.0.0.1:6782/metrics"])
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with("weave_connections{"))
        .filter(|l| l.contains("state=\"established\""))
        .filter(|l| l.contains(&format!("encryption=\"{enc}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// weave 115_optional_encryption_2: with a password, a connection only one
/// end trusts is `encrypted` on both ends (and in `weave_connections`);
/// when both trust each other's subnet it is `unencrypted`. A peer with
/// another password never gets a connection.
#[test]
fn weave_115_optional_encryption() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w115", &["h1", "h2", "h3"]);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    let cidr = |h: &Host| format!("{}/24", h.addr());
    let pw = "wfvAwt7sj";
    launch(
        h1,
        &link,
        &["--password", pw, "--trusted-subnets", &cidr(h2)],
    );
    launch(h2, &link, &["--password", pw, &control_addr(h1)]);
    for h in [h1, h2] {
        let lines = established(h, &link, 1);
        assert_eq!(
            lines[0].encryption.as_deref(),
            Some("encrypted"),
            "{lines:?}"
        );
    }
    assert_eq!(established_metric(h1, "yes"), 1);
    for h in [h1, h2] {
        ok(h, &link, &["stop"], &[]);
    }

    launch(
        h1,
        &link,
        &["--password", pw, "--trusted-subnets", &cidr(h2)],
    );
    let trusted = [
        "--password",
        pw,
        "--trusted-subnets",
        &cidr(h1),
        &control_addr(h1),
    ];
    launch(h2, &link, &trusted);
    for h in [h1, h2] {
        let lines = established(h, &link, 1);
        assert_eq!(
            lines[0].encryption.as_deref(),
            Some("unencrypted"),
            "{lines:?}"
        );
    }
    assert_eq!(established_metric(h1, ""), 1);
    assert_eq!(established_metric(h1, "yes"), 0);

    // Another password: h3's attempts fail, h1 keeps its one connection.
    launch(
        h3,
        &link,
        &["--password", "not-the-same", &control_addr(h1)],
    );
    wait_for("h3's connection attempt to fail", CONVERGE, || {
        let text = ok(h3, &link, &["status", "connections"], &[]);
        text.lines()
            .any(|l| l.contains("failed") || l.contains("retrying"))
            .then_some(())
            .ok_or(text)
    });
    let h3_conns = ok(h3, &link, &["status", "connections"], &[]);
    assert!(!h3_conns.contains("established"), "{h3_conns}");
    assert_eq!(established(h1, &link, 1).len(), 1);
    for h in [h1, h2, h3] {
        ok(h, &link, &["stop"], &[]);
    }
}

/// weave 120_discovery_3: h3 knows only h2, h2 only h1; with discovery h1
/// and h3 connect directly, so c1 (h1) still reaches c3 (h3) when h2 stops;
/// with `--no-discovery` traffic goes through h2, IPAM works across it,
/// and when h2 stops c1 no longer reaches c3.
#[test]
fn weave_120_discovery() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w120", &["h1", "h2", "h3"]);
    let launch_all = |lab: &TestLab, extra: &[&str]| {
        let (h1, h2) = (lab.host("h1"), lab.host("h2"));
        launch(h1, &link, extra);
        launch(
            h2,
            &link,
            &[extra, &["--ipalloc-range=", &control_addr(h1)]].concat(),
        );
        launch(
            lab.host("h3"),
            &link,
            &[extra, &[&control_addr(h2)]].concat(),
        );
    };
    launch_all(&lab, &[]);
    let (c1, _) = container(&mut lab, &link, "h1", "c1", Some("10.2.1.41/24"));
    let (_c3, c3_ip) = container(&mut lab, &link, "h3", "c3", Some("10.2.1.71/24"));
    wait_ping(&c1, &c3_ip, true);
    // h3 learnt h1 from h2 and connected to it.
    established(lab.host("h3"), &link, 2);
    ok(lab.host("h2"), &link, &["stop"], &[]);
    wait_ping(&c1, &c3_ip, true);
    ok(lab.host("h1"), &link, &["stop"], &[]);
    ok(lab.host("h3"), &link, &["stop"], &[]);

    launch_all(&lab, &["--no-discovery"]);
    established(lab.host("h2"), &link, 2);
    wait_ping(&c1, &c3_ip, true);
    // IPAM across h2: h1 and h3 both get addresses.
    container(&mut lab, &link, "h1", "c1b", None);
    container(&mut lab, &link, "h3", "c3b", None);
    assert_eq!(
        established(lab.host("h3"), &link, 1)[0].addr,
        control_addr(lab.host("h2")).parse().unwrap(),
        "h3 connects to nobody but h2"
    );
    ok(lab.host("h2"), &link, &["stop"], &[]);
    wait_ping(&c1, &c3_ip, false);
    assert_no_ping(&c1, &c3_ip);
    for h in ["h1", "h3"] {
        ok(lab.host(h), &link, &["stop"], &[]);
    }
}

/// weave 150_connect_forget_2: `connect` adds targets as typed (unreachable
/// ones too), `connect --replace` replaces them and brings the hosts
/// together, `forget` drops them so a restarted peer is not dialled again.
#[test]
fn weave_150_connect_forget() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w150", &["h1", "h2"]);
    for h in ["h1", "h2"] {
        launch(lab.host(h), &link, &[]);
    }
    let (c1, _) = container(&mut lab, &link, "h1", "c1", Some("10.2.1.4/24"));
    let (_c2, c2_ip) = container(&mut lab, &link, "h2", "c2", Some("10.2.1.7/24"));
    let (h1, h2) = (lab.host("h1"), lab.host("h2"));
    let (a1, a2) = (h1.addr().to_string(), h2.addr().to_string());

    ok(h2, &link, &["connect", "10.2.2.1", "10.2.2.2"], &[]);
    assert_eq!(targets(h2, &link), ["10.2.2.1", "10.2.2.2"]);
    assert_no_ping(&c1, &c2_ip);

    ok(h2, &link, &["connect", "--replace", &a1, &a2], &[]);
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(targets(h2, &link), want);
    wait_ping(&c1, &c2_ip, true);

    ok(h2, &link, &["forget", &a1, &a2], &[]);
    ok(h1, &link, &["stop"], &[]);
    launch(h1, &link, &[]);
    assert_eq!(targets(h2, &link), Vec::<String>::new());
    wait_ping(&c1, &c2_ip, false);
    assert_no_ping(&c1, &c2_ip);
    for h in [h1, h2] {
        ok(h, &link, &["stop"], &[]);
    }
}

/// weave 175_target_peer_persistence_3: the targets after `forget` and
/// `connect` are persisted; a router that died (weave: Docker restarted
/// its container) or was stopped comes back with them on `launch --resume`
/// or a launch without peers; peers given to `launch` replace them.
#[test]
fn weave_175_target_peer_persistence() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w175", &["h1", "h2", "h3"]);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    let (a1, a2, a3) = (
        h1.addr().to_string(),
        h2.addr().to_string(),
        h3.addr().to_string(),
    );
    launch(h1, &link, &[&a1, &a2]);
    ok(h1, &link, &["forget", &a1], &[]);
    ok(h1, &link, &["connect", &a3], &[]);
    let persisted = vec![a2.clone(), a3.clone()];
    assert_eq!(targets(h1, &link), persisted);

    h1.kill_router(nix::libc::SIGKILL);
    launch(h1, &link, &["--resume"]);
    assert_eq!(targets(h1, &link), persisted, "after the router died");
    ok(h1, &link, &["stop"], &[]);
    launch(h1, &link, &["--resume"]);
    assert_eq!(targets(h1, &link), persisted, "launch --resume");
    ok(h1, &link, &["stop"], &[]);

    launch(h1, &link, &[&a1, &a2]);
    let given = vec![a1.clone(), a2.clone()];
    assert_eq!(targets(h1, &link), given, "launch with peers");
    h1.kill_router(nix::libc::SIGKILL);
    launch(h1, &link, &[]);
    assert_eq!(targets(h1, &link), given, "relaunch without peers");
    let refused = weave(
        h1,
        &link,
        &["launch", "--proxy=false", "--resume", &a3],
        &[],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "--resume with peers is refused"
    );
    ok(h1, &link, &["stop"], &[]);
}

/// weave 335_rmpeer_3: h1 owns the whole range and dies; `rmpeer` on h2
/// takes its space over, so h2 and h3 allocate again at once.
#[test]
fn weave_335_rmpeer() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w335", &["h1", "h2", "h3"]);
    let peer1 = launch(lab.host("h1"), &link, &[]);
    container(&mut lab, &link, "h1", "c1", None);
    let a1 = control_addr(lab.host("h1"));
    for h in ["h2", "h3"] {
        launch(lab.host(h), &link, &[&a1]);
        ok(lab.host(h), &link, &["prime"], &[]);
    }
    // h2 and h3 found each other through h1.
    established(lab.host("h2"), &link, 2);
    lab.host("h1").kill_router(nix::libc::SIGKILL);

    let took = ok(lab.host("h2"), &link, &["rmpeer", &peer1], &[]);
    assert!(took.contains("IPs taken over from"), "rmpeer said {took:?}");
    for (h, c) in [("h2", "c2"), ("h3", "c3")] {
        container_within(&mut lab, &link, h, c, Duration::from_secs(5));
    }
    for h in ["h2", "h3"] {
        ok(lab.host(h), &link, &["stop"], &[]);
    }
}

/// weave 390_peer_name: the peer name survives `stop`/`launch` and the loss
/// of the bridge; `reset` makes a new one. (weave derives it from
/// /etc/machine-id; meshnet from its identity key, so that part of the
/// test has no counterpart: a machine-id change changes nothing here.)
#[test]
fn weave_390_peer_name() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w390", &["h1"]);
    let h1 = lab.host("h1");
    let name = || ok(h1, &link, &["report", "-f", "{{.Router.Name}}"], &[]);
    launch(h1, &link, &[]);
    ok(h1, &link, &["prime"], &[]);
    let first = name();
    ok(h1, &link, &["stop"], &[]);
    launch(h1, &link, &[]);
    assert_eq!(name(), first, "after stop and launch");
    ok(h1, &link, &["stop"], &[]);
    let del = h1
        .exec(&["ip", "link", "del", BRIDGE])
        .expect("ip link del");
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    launch(h1, &link, &[]);
    assert_eq!(name(), first, "after the bridge was removed");
    ok(h1, &link, &["reset"], &[]);
    // reset removes every interface it made, the bridge first (as the
    // README says).
    let left: Vec<String> = links(h1)
        .into_iter()
        .filter(|l| l == BRIDGE || l.starts_with("vethwe"))
        .collect();
    assert!(left.is_empty(), "reset left {left:?}");
    launch(h1, &link, &[]);
    assert_ne!(name(), first, "reset makes a new name");
    ok(h1, &link, &["stop"], &[]);
}

/// weave 330_reset_2: a rolling restart with `reset`: each router gives
/// its space away and comes back, and a container still gets an address
/// within 10 s.
#[test]
fn weave_330_reset() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w330", &["h1", "h2"]);
    let (a1, a2) = (control_addr(lab.host("h1")), control_addr(lab.host("h2")));
    launch(lab.host("h1"), &link, &[]);
    launch(lab.host("h2"), &link, &[&a1]);
    container(&mut lab, &link, "h1", "c1", None);
    container(&mut lab, &link, "h2", "c2", None);
    for (h, peer) in [("h1", &a2), ("h2", &a1)] {
        ok(lab.host(h), &link, &["reset"], &[]);
        launch(lab.host(h), &link, &[peer]);
        // Rolling: the other resets only once this one is back in the mesh
        // (a peer that resets alone hands its space to nobody).
        established(lab.host(h), &link, 1);
    }
    container_within(&mut lab, &link, "h1", "c3", Duration::from_secs(10));
    for h in ["h1", "h2"] {
        ok(lab.host(h), &link, &["stop"], &[]);
    }
}

/// weave's other `launch` flags: `--log-level` sets the router's log level
/// (by default info lines; with `warning` none, but the warning a
/// connection to ourself gives; with `error` not that either; a bad level
/// is a usage error); `--token` is accepted with a warning that Weave
/// Cloud discovery is not supported; `--no-detect-tls` is accepted.
#[test]
fn weave_launch_log_level_token_and_tls_flags() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("wlog", &["h1"]);
    let h1 = lab.host("h1");
    // The router log of a launch with `flags` that dials itself.
    let log_of = |flags: &[&str]| {
        let from = meshnet_tests::router_log(h1).len();
        launch(h1, &link, flags);
        ok(h1, &link, &["connect", &control_addr(h1)], &[]);
        wait_for("the connection to ourself to fail", CONVERGE, || {
            let text = ok(h1, &link, &["status", "connections"], &[]);
            (!text.contains("connecting")).then_some(()).ok_or(text)
        });
        ok(h1, &link, &["forget", &control_addr(h1)], &[]);
        ok(h1, &link, &["stop"], &[]);
        meshnet_tests::router_log(h1)[from..].to_string()
    };
    let default = log_of(&[]);
    assert!(default.contains(" INFO "), "{default}");
    assert!(default.contains(" WARN "), "{default}");
    let warning = log_of(&["--log-level=warning"]);
    assert!(!warning.contains(" INFO "), "{warning}");
    assert!(warning.contains(" WARN "), "{warning}");
    let error = log_of(&["--log-level=error"]);
    assert!(
        !error.contains(" INFO ") && !error.contains(" WARN "),
        "{error}"
    );

    let bad = weave(
        h1,
        &link,
        &["launch", "--proxy=false", "--log-level=loud"],
        &[],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("debug, info, warning or error"));

    let out = weave(
        h1,
        &link,
        &[
            "launch",
            "--proxy=false",
            "--token=abc123",
            "--no-detect-tls",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("--token") && warned.contains("not supported"),
        "{warned}"
    );
    assert!(
        !meshnet_tests::router_cmdline(h1).contains("abc123"),
        "the token reaches the router"
    );
    ok(h1, &link, &["stop"], &[]);
}
