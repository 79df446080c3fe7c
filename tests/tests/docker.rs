//! The seed's weave scenarios on the real Docker engine: two "hosts"
//! (routers in network namespaces, one mesh) and containers from the local
//! busybox image (scripts/busybox-image).
//!
//! 1. `docker run -dit` + `meshnet attach 10.0.0.11/24 box1` / `.12 box2`
//!    on the two hosts; box1 pings box2.
//! 2. `eval $(meshnet env)` on each host; `docker run -dit` gets `ethwe` in
//!    10.32.0.0/12 with MTU 1376 before its first process runs; box3 pings
//!    box4; `eval $(meshnet env --restore)` restores `DOCKER_HOST`.
//! 3. `docker exec -it` and `docker run -it` through the proxy, driven by a
//!    real pseudo-terminal (`script`).
//! 4. `meshnet ps` lists the containers with their MACs and addresses.
//! 5. Containers Docker restarts by itself are attached again; dead ones
//!    give their addresses back to IPAM after the grace period.
//! 6. The network plugin: dockerd lives in the root network namespace and
//!    moves plugin interfaces from there, so host A is a router in the root
//!    namespace (plugin on, its own run dir and API port, underlay veth into
//!    the lab's TEST-NET segment) and host B a namespace; `docker run
//!    --network meshnet` on A reaches a container on B.
//!
//! Without a Docker engine these tests fail, saying so. Containers get
//! names unique to this run and are removed even when a test panics.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshnet_tests::docker::{
    Containers, PLUGIN_SOCKET, ROOT_UNDERLAY, RootRouter, docker, docker_at, docker_ok,
    docker_ok_at, require_docker,
};
use meshnet_tests::{
    Host, TestLab, lab_on_one_segment, launch, meshnet_bin, report, view, wait_for,
};

/// Two hosts on 192.0.2.0/24, routers launched and connected (one IPAM ring).
fn two_hosts(tag: &str) -> TestLab {
    let lab = lab_on_one_segment(tag, &["a", "b"]);
    let init = "--ipalloc-init=consensus=2";
    launch(lab.host("a"), &["--nickname", "a", init]);
    let b = launch(lab.host("b"), &["--nickname", "b", init, "192.0.2.1"]);
    wait_for("a and b to connect", Duration::from_secs(30), || {
        view::established_with(&report(lab.host("a")), &b).then_some(())
    });
    lab
}

/// `meshnet args` on `host`, which must succeed; returns stdout.
fn meshnet_on(host: &Host, args: &[&str]) -> String {
    let out = host.meshnet(args).expect("running meshnet");
    assert!(
        out.status.success(),
        "meshnet {} on {} failed: {}",
        args.join(" "),
        host.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `from` pings `to` once, then asserts `ping -c 2` succeeds.
fn assert_pings(docker_host: Option<&str>, from: &str, to: Ipv4Addr) {
    let to = to.to_string();
    wait_for(
        &format!("{from} to ping {to}"),
        Duration::from_secs(30),
        || {
            let out = docker_at(
                docker_host,
                &["exec", from, "ping", "-c", "1", "-W", "1", &to],
            );
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    let out = docker_ok_at(docker_host, &["exec", from, "ping", "-c", "2", &to]);
    assert!(out.contains("2 packets received"), "{out}");
}

/// The IPv4 addresses of `ethwe` in a container, as CIDRs.
fn ethwe_addrs(docker_host: Option<&str>, container: &str) -> Vec<String> {
    let out = docker_ok_at(
        docker_host,
        &["exec", container, "ip", "-4", "-o", "addr", "show", "ethwe"],
    );
    out.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "inet")
        .map(|w| w[1].to_string())
        .collect()
}

fn ip_of(cidr: &str) -> Ipv4Addr {
    cidr.split('/')
        .next()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("not a CIDR: {cidr}"))
}

fn in_default_range(ip: Ipv4Addr) -> bool {
    u32::from(ip) & 0xfff0_0000 == u32::from(Ipv4Addr::new(10, 32, 0, 0))
}

/// `meshnet env` for `host`, evaluated by a shell that then runs `script`
/// (with the `DOCKER_HOST` it set); returns that shell's stdout.
fn with_env(host: &Host, docker_host: Option<&str>, script: &str) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("set -e; eval \"$(\"$MESHNET\" env)\"; {script}"))
        .env("MESHNET", meshnet_bin())
        .env("MESHNET_RUN_DIR", host.run_dir())
        .env_remove("ORIG_DOCKER_HOST")
        .stdin(Stdio::null());
    match docker_host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    let out = cmd.output().expect("running sh");
    assert!(
        out.status.success(),
        "eval $(meshnet env); {script} on {} failed: {}{}",
        host.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn proxy_of(host: &Host) -> String {
    format!("unix://{}/meshnet.sock", host.run_dir().display())
}

#[test]
fn attach_by_hand_then_ping_across_hosts() {
    require_docker();
    let mut names = Containers::new("attach");
    let lab = two_hosts("dk-attach");
    let (box1, box2) = (names.name("box1"), names.name("box2"));
    for b in [&box1, &box2] {
        docker_ok(&["run", "-dit", "--name", b, "busybox"]);
    }
    let printed = meshnet_on(lab.host("a"), &["attach", "10.0.0.11/24", &box1]);
    assert_eq!(printed.trim(), "10.0.0.11");
    meshnet_on(lab.host("b"), &["attach", "10.0.0.12/24", &box2]);
    assert_eq!(ethwe_addrs(None, &box1), ["10.0.0.11/24"]);
    assert_pings(None, &box1, Ipv4Addr::new(10, 0, 0, 12));

    // `meshnet ps` on a lists box1 with ethwe's MAC and address.
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &box1]);
    let mac = docker_ok(&["exec", &box1, "cat", "/sys/class/net/ethwe/address"]);
    let ps = meshnet_on(lab.host("a"), &["ps"]);
    let want = format!("{} {} 10.0.0.11/24", &id.trim()[..12], mac.trim());
    assert!(ps.lines().any(|l| l == want), "want {want:?} in:\n{ps}");
    assert!(!ps.contains("10.0.0.12/24"), "box2 is on b, not a:\n{ps}");
    let ps_one = meshnet_on(lab.host("b"), &["ps", &box2]);
    assert!(
        ps_one.starts_with(&format!("{box2} ")) && ps_one.trim_end().ends_with(" 10.0.0.12/24"),
        "{ps_one}"
    );
}

#[test]
fn proxy_attaches_containers_before_they_run() {
    require_docker();
    let mut names = Containers::new("proxy");
    let lab = two_hosts("dk-proxy");
    let (a, b) = (lab.host("a"), lab.host("b"));
    let (box3, box4) = (names.name("box3"), names.name("box4"));

    // The first process already sees ethwe: a one-shot container prints it.
    let first = with_env(
        a,
        None,
        "docker run --rm busybox sh -c 'ip -4 -o addr show ethwe; cat /sys/class/net/ethwe/mtu'",
    );
    let mut words = first.split_whitespace();
    let inet = words.by_ref().skip_while(|w| *w != "inet").nth(1);
    let ip = ip_of(inet.unwrap_or_else(|| panic!("no ethwe address in {first:?}")));
    assert!(in_default_range(ip), "{ip} is not in 10.32.0.0/12");
    assert_eq!(first.lines().last().map(str::trim), Some("1376"), "{first}");

    with_env(a, None, &format!("docker run -dit --name {box3} busybox"));
    with_env(b, None, &format!("docker run -dit --name {box4} busybox"));
    let mut ips = Vec::new();
    for (host, c) in [(a, &box3), (b, &box4)] {
        let addrs = ethwe_addrs(Some(&proxy_of(host)), c);
        assert_eq!(addrs.len(), 1, "{c}: {addrs:?}");
        let ip = ip_of(&addrs[0]);
        assert!(in_default_range(ip), "{c}: {ip} is not in 10.32.0.0/12");
        let mtu = docker_ok(&["exec", c, "cat", "/sys/class/net/ethwe/mtu"]);
        assert_eq!(mtu.trim(), "1376", "{c}");
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);
    assert_pings(Some(&proxy_of(a)), &box3, ips[1]);

    // Containers that opt out stay off the mesh, and Docker's own errors
    // come back untouched through the proxy.
    let off = with_env(
        a,
        None,
        "docker run --rm -e MESHNET_CIDR=none busybox sh -c 'test ! -e /sys/class/net/ethwe && echo off'",
    );
    assert_eq!(off.trim(), "off");
    let out = docker_at(
        Some(&proxy_of(a)),
        &["inspect", "meshnet-no-such-container"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `meshnet ps` on b shows box4 with its MAC and address.
    let ps = meshnet_on(b, &["ps", &box4]);
    let mac = docker_ok(&["exec", &box4, "cat", "/sys/class/net/ethwe/address"]);
    assert_eq!(ps.trim(), format!("{box4} {} {}/12", mac.trim(), ips[1]));

    // env --restore gives back the DOCKER_HOST from before `eval $(meshnet env)`.
    let restored = with_env(
        a,
        Some("unix:///var/run/docker.sock"),
        "echo \"during=$DOCKER_HOST\"; eval \"$(\"$MESHNET\" env --restore)\"; echo \"after=$DOCKER_HOST\"",
    );
    assert_eq!(
        restored.lines().collect::<Vec<_>>(),
        [
            format!("during={}", proxy_of(a)).as_str(),
            "after=unix:///var/run/docker.sock"
        ]
    );
    assert_eq!(
        meshnet_on(a, &["config"]).trim(),
        format!("-H={}", proxy_of(a))
    );
    let nothing = a
        .meshnet(&["env", "--restore"])
        .expect("meshnet env --restore");
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("Nothing to restore"));
}

/// Runs `command` under a pseudo-terminal (`script`), waits for the shell
/// prompt, types `echo hi-$((1+2))`, waits for `hi-3`, then `exit`.
/// Returns everything the terminal showed.
fn pty_session(command: &str, docker_host: &str) -> String {
    let mut child = Command::new("script")
        .args(["-qefc", command, "/dev/null"])
        .env("DOCKER_HOST", docker_host)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running script(1) for a pseudo-terminal; install util-linux");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    let wait_until = |seen: &mut String, what: &dyn Fn(&str) -> bool, step: &str| {
        while !what(seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("{command}: no {step} within 60 s; the terminal showed {seen:?}"),
            }
        }
    };
    wait_until(&mut seen, &|s| s.contains("# "), "shell prompt");
    stdin.write_all(b"echo hi-$((1+2))\r").expect("typing");
    let answered = |s: &str| s.lines().any(|l| l.trim_end_matches('\r') == "hi-3");
    wait_until(&mut seen, &answered, "hi-3");
    stdin.write_all(b"exit\r").expect("typing exit");
    drop(stdin);
    let status = child.wait().expect("waiting for script");
    assert!(status.success(), "{command} exited with {status}: {seen:?}");
    seen
}

#[test]
fn interactive_sessions_work_through_the_proxy() {
    require_docker();
    let mut names = Containers::new("tty");
    let lab = two_hosts("dk-tty");
    let proxy = proxy_of(lab.host("a"));
    let box5 = names.name("box5");
    docker_ok_at(Some(&proxy), &["run", "-dit", "--name", &box5, "busybox"]);
    pty_session(&format!("docker exec -it {box5} sh"), &proxy);
    let run = names.name("run-it");
    let seen = pty_session(
        &format!("docker run --rm -it --name {run} busybox sh"),
        &proxy,
    );
    assert!(seen.contains("hi-3"));
    // The hijacked session ended cleanly and the container is gone (--rm).
    wait_for(
        "the -it container to be removed",
        Duration::from_secs(20),
        || {
            let out = docker(&["inspect", &run]);
            (!out.status.success()).then_some(())
        },
    );
}

#[test]
fn plugin_network_reaches_another_host() {
    require_docker();
    let mut lab = meshnet_tests::lab("dk-plugin");
    let seg = lab.add_segment("198.51.100.0/24").expect("adding segment");
    lab.add_host("b", &[(seg, Ipv4Addr::new(198, 51, 100, 1))])
        .expect("adding host b");
    let root = RootRouter::start(
        &lab,
        seg,
        &["--proxy=false", "--plugin", "--ipalloc-init=consensus=2"],
    );
    let mut names = Containers::new("plugin");
    let b = lab.host("b");
    launch(
        b,
        &[
            "--nickname",
            "b",
            "--ipalloc-init=consensus=2",
            ROOT_UNDERLAY,
        ],
    );

    // `docker network ls` shows the network the router registered.
    let nets = wait_for("network meshnet", Duration::from_secs(30), || {
        let ls = docker_ok(&[
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}} {{.Scope}}",
        ]);
        ls.lines()
            .any(|l| l == "meshnet meshnet local")
            .then_some(ls.clone())
            .ok_or(ls)
    });
    assert!(nets.contains("meshnet meshnet local"));

    let on_a = names.name("a");
    let on_b = names.name("b");
    docker_ok(&[
        "run",
        "-d",
        "--network",
        "meshnet",
        "--name",
        &on_a,
        "busybox",
        "sleep",
        "600",
    ]);
    docker_ok_at(
        Some(&proxy_of(b)),
        &["run", "-dit", "--name", &on_b, "busybox"],
    );

    let a_out = docker_ok(&["exec", &on_a, "ip", "-4", "-o", "addr", "show", "ethwe0"]);
    let a_cidr = a_out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no address on ethwe0: {a_out}"))
        .to_string();
    let a_ip = ip_of(&a_cidr);
    assert!(in_default_range(a_ip), "{a_cidr}");
    let mtu = docker_ok(&["exec", &on_a, "cat", "/sys/class/net/ethwe0/mtu"]);
    assert_eq!(mtu.trim(), "1376");
    let b_ip = ip_of(&ethwe_addrs(None, &on_b)[0]);
    assert_ne!(a_ip, b_ip);
    assert_pings(None, &on_a, b_ip);
    assert_pings(None, &on_b, a_ip);

    // DNS: the plugin registered A's container, B's proxy B's; A's router
    // (DNS on docker0) answers both; a stopped container's name goes.
    for (name, ip) in [(&on_a, a_ip), (&on_b, b_ip)] {
        wait_for(
            "the container's name in DNS",
            Duration::from_secs(30),
            || (dig_docker0(&format!("{name}.weave.local")) == [ip]).then_some(()),
        );
    }
    docker_ok(&["stop", "-t", "0", &on_a]);
    wait_for(
        "a stopped container's name to go",
        Duration::from_secs(15),
        || {
            dig_docker0(&format!("{on_a}.weave.local"))
                .is_empty()
                .then_some(())
        },
    );

    // Containers go before the router, so that stop can remove the network.
    drop(names);
    drop(root);
    let ls = docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !ls.lines().any(|l| l == "meshnet"),
        "meshnet stop left the network:\n{ls}"
    );
    assert!(!Path::new(PLUGIN_SOCKET).exists());
}

/// `GET /ip/{id}` on `host`'s router: the addresses IPAM holds for `id`.
fn ipam_addrs(host: &Host, id: &str) -> Vec<String> {
    let url = format!("http://127.0.0.1:6784/ip/{id}");
    let out = host
        .exec(&["curl", "-s", "--max-time", "10", &url])
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| {
            w.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok()
            })
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn restarted_containers_are_reattached_and_dead_ones_give_addresses_back() {
    require_docker();
    let mut names = Containers::new("restart");
    let lab = lab_on_one_segment("dk-restart", &["a"]);
    let a = lab.host("a");
    launch(a, &["--nickname", "a", "--ipalloc-init=consensus=1"]);
    let proxy = proxy_of(a);

    // Docker restarts this one by itself (no start request through the
    // proxy): the first run fails, the second must see ethwe again.
    let flaky = names.name("flaky");
    let script =
        "ip -4 -o addr show ethwe >> /runs; test $(wc -l < /runs) -ge 2 && exec sleep 600; exit 1";
    docker_ok_at(
        Some(&proxy),
        &[
            "run",
            "-d",
            "--restart",
            "on-failure:5",
            "--name",
            &flaky,
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    let runs = wait_for(
        "the restarted container's second run",
        Duration::from_secs(60),
        || {
            let out = docker(&["exec", &flaky, "cat", "/runs"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.lines().count() >= 2)
                .then_some(text.clone())
                .ok_or(text)
        },
    );
    let addrs: Vec<&str> = runs
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .unwrap_or("")
        })
        .collect();
    assert!(addrs.iter().all(|a| a.starts_with("10.")), "{runs}");
    assert_eq!(
        addrs[0], addrs[1],
        "IPAM gives a container the same address again"
    );

    // A container that exits keeps its address for the grace period, then
    // gives it back.
    let done = names.name("done");
    docker_ok_at(Some(&proxy), &["run", "--name", &done, "busybox", "true"]);
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &done])
        .trim()
        .to_string();
    let held = ipam_addrs(a, &id);
    assert_eq!(
        held.len(),
        1,
        "IPAM should still hold the exited container's address: {held:?}"
    );
    wait_for(
        "the dead container's address to be released",
        Duration::from_secs(90),
        || {
            let now = ipam_addrs(a, &id);
            now.is_empty().then_some(()).ok_or(now)
        },
    );
    // The running container keeps its address.
    let flaky_id = docker_ok(&["inspect", "-f", "{{.Id}}", &flaky])
        .trim()
        .to_string();
    assert_eq!(ipam_addrs(a, &flaky_id), [addrs[0]]);
}

#[test]
fn everyday_commands_pass_through_the_proxy() {
    require_docker();
    let mut names = Containers::new("pass");
    let lab = lab_on_one_segment("dk-pass", &["a"]);
    let a = lab.host("a");
    launch(a, &["--nickname", "a", "--ipalloc-init=consensus=1"]);
    let proxy = proxy_of(a);
    let socket = a.run_dir().join("meshnet.sock");
    let p = Some(proxy.as_str());

    // /_ping and API version prefixes reach Docker unchanged.
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "--unix-socket"])
            .arg(&socket)
            .arg(format!("http://docker{path}"))
            .output()
            .expect("running curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("/_ping"), "OK");
    // The socket is no more open than Docker's own.
    {
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::metadata(&socket).expect("proxy socket");
        let docker = std::fs::metadata("/var/run/docker.sock").expect("docker socket");
        assert_eq!(
            (ours.uid(), ours.gid(), ours.mode() & 0o777),
            (docker.uid(), docker.gid(), docker.mode() & 0o777)
        );
    }
    assert!(curl("/v1.41/version").contains("\"ApiVersion\""));

    // A streaming container: attach and logs -f follow it to its end.
    let ticker = names.name("ticker");
    let script = "sleep 1; for i in 1 2 3; do echo tick$i; sleep 0.2; done";
    docker_ok_at(
        p,
        &[
            "run", "-d", "--name", &ticker, "busybox", "sh", "-c", script,
        ],
    );
    let attached = docker_ok_at(p, &["attach", &ticker]);
    assert!(attached.contains("tick3"), "{attached:?}");
    let logs = docker_ok_at(p, &["logs", "-f", &ticker]);
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        ["tick1", "tick2", "tick3"]
    );

    // cp both ways.
    let holder = names.name("holder");
    docker_ok_at(p, &["run", "-dit", "--name", &holder, "busybox"]);
    let file = lab.dir().join("cp-in.txt");
    std::fs::write(&file, "copied in\n").expect("writing a file");
    docker_ok_at(
        p,
        &["cp", &file.to_string_lossy(), &format!("{holder}:/cp.txt")],
    );
    assert_eq!(
        docker_ok(&["exec", &holder, "cat", "/cp.txt"]),
        "copied in\n"
    );
    let back = lab.dir().join("cp-out.txt");
    docker_ok_at(
        p,
        &["cp", &format!("{holder}:/cp.txt"), &back.to_string_lossy()],
    );
    assert_eq!(
        std::fs::read_to_string(&back).expect("reading"),
        "copied in\n"
    );

    // build (its RUN step is the daemon's, not the proxy's, business).
    let ctx = lab.dir().join("build");
    std::fs::create_dir_all(&ctx).expect("build dir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo built > /built\n",
    )
    .expect("Dockerfile");
    let tag = format!("{}-image", names.name("image"));
    docker_ok_at(p, &["build", "-q", "-t", &tag, &ctx.to_string_lossy()]);
    let built = docker_ok_at(p, &["run", "--rm", &tag, "cat", "/built"]);
    let _ = docker(&["rmi", "-f", &tag]);
    assert_eq!(built, "built\n");

    // events: a bounded window that contains this test's containers.
    let events = docker_ok_at(
        p,
        &[
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            &format!("container={holder}"),
        ],
    );
    assert!(events.contains(" start "), "{events}");
}

#[test]
fn containers_started_while_the_router_was_down_are_attached_at_launch() {
    require_docker();
    let mut names = Containers::new("relaunch");
    let lab = lab_on_one_segment("dk-relaunch", &["a"]);
    let a = lab.host("a");
    let args = ["--nickname", "a", "--ipalloc-init=consensus=1"];
    launch(a, &args);
    let late = names.name("late");
    let script = "ip -4 -o addr show ethwe; exec sleep 600";
    docker_ok_at(
        Some(&proxy_of(a)),
        &["create", "--name", &late, "busybox", "sh", "-c", script],
    );
    meshnet_on(a, &["stop"]);
    // Started behind meshnet's back: its wait shim holds the program back.
    docker_ok(&["start", &late]);
    assert_eq!(
        docker_ok(&["logs", &late]),
        "",
        "the program ran without ethwe"
    );
    launch(a, &args);
    let logs = wait_for(
        "the late container to be attached",
        Duration::from_secs(60),
        || {
            let logs = docker_ok(&["logs", &late]);
            logs.contains("inet 10.")
                .then_some(logs.clone())
                .ok_or(logs)
        },
    );
    let cidr = logs.split_whitespace().skip_while(|w| *w != "inet").nth(1);
    assert!(cidr.is_some_and(|c| in_default_range(ip_of(c))), "{logs}");
}

/// `dig @172.17.0.1 +short name` in the root namespace, against the
/// root-namespace test router's DNS server (docker0's address).
fn dig_docker0(name: &str) -> Vec<Ipv4Addr> {
    let out = Command::new("dig")
        .args(["@172.17.0.1", "+time=2", "+tries=2", "+short", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run dig: {e}; apt-get install bind9-dnsutils"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// weaveDNS on the real engine: host A is a router in the root namespace
/// (its DNS on docker0, its proxy on), host B a namespace. A container
/// named `pingme` started through B's proxy is found by name from a
/// container started through A's proxy (`ping pingme`, `ping
/// pingme.weave.local`); then five kill/start cycles of a container named
/// `web` leave exactly its live address each time.
#[test]
fn containers_find_each_other_by_name_across_hosts() {
    require_docker();
    let mut lab = meshnet_tests::lab("dk-dns");
    let seg = lab.add_segment("198.51.100.0/24").expect("adding segment");
    lab.add_host("b", &[(seg, Ipv4Addr::new(198, 51, 100, 1))])
        .expect("adding host b");
    let root = RootRouter::start(&lab, seg, &["--plugin=false", "--ipalloc-init=consensus=2"]);
    let mut names = Containers::new("dns");
    let b = lab.host("b");
    launch(
        b,
        &[
            "--nickname",
            "b",
            "--ipalloc-init=consensus=2",
            ROOT_UNDERLAY,
        ],
    );
    let a_proxy = root.proxy();
    let b_proxy = proxy_of(b);

    // `docker run -d --name pingme` on B; the name is the container's.
    let pingme = names.name("pingme");
    docker_ok_at(
        Some(&b_proxy),
        &["run", "-d", "--name", &pingme, "busybox", "sleep", "600"],
    );
    let ip = ip_of(&ethwe_addrs(None, &pingme)[0]);
    wait_for("A's DNS to know pingme", Duration::from_secs(30), || {
        (dig_docker0(&format!("{pingme}.weave.local")) == [ip]).then_some(())
    });
    // A container on A finds it by its bare name (the proxy set --dns and
    // --dns-search) and by its full name, and reaches it across the mesh.
    for target in [pingme.clone(), format!("{pingme}.weave.local")] {
        let out = docker_at(
            Some(&a_proxy),
            &["run", "--rm", "busybox", "ping", "-c1", "-W", "5", &target],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ping {target} from A failed:\n{text}");
        assert!(
            text.contains(&ip.to_string()),
            "ping {target} did not resolve to {ip}:\n{text}"
        );
    }
    let resolv = docker_ok_at(
        Some(&a_proxy),
        &["run", "--rm", "busybox", "cat", "/etc/resolv.conf"],
    );
    assert!(resolv.contains("nameserver 172.17.0.1"), "{resolv}");
    assert!(resolv.contains("search weave.local"), "{resolv}");

    // A container named `web` (by hostname) on B: killed, its name goes;
    // started, its new address is the only one.
    let web = names.name("web");
    docker_ok_at(
        Some(&b_proxy),
        &[
            "run", "-d", "--name", &web, "-h", "web", "busybox", "sleep", "600",
        ],
    );
    for round in 0..5 {
        let live = ip_of(&ethwe_addrs(None, &web)[0]);
        wait_for(
            "web to resolve to its live address",
            Duration::from_secs(30),
            || (dig_docker0("web.weave.local") == [live]).then_some(()),
        );
        docker_ok_at(Some(&b_proxy), &["kill", &web]);
        wait_for(
            "a killed container's name to go",
            Duration::from_secs(15),
            || dig_docker0("web.weave.local").is_empty().then_some(()),
        );
        docker_ok_at(Some(&b_proxy), &["start", &web]);
        let _ = round;
    }
    drop(names);
    drop(root);
}
