//! weave's proxy tests (6xx, and 255 whose names only the proxy gives) on
//! our Docker engine: the router runs in a lab namespace with its proxy,
//! containers are real Docker containers made through it.

use meshnet_tests::docker::{Containers, docker_at, docker_ok_at, require_docker};
use meshnet_tests::{TestLab, lab_on_one_segment, wait_for};

use super::{CONVERGE, Host, ok, weave, weave_link};

/// What every test here starts from: the Docker engine, the `weave`
/// link, a lab with one host `h1`, and this run's container names (all
/// removed at the end, panic or not).
struct Setup {
    /// Holds the `weave` link (and room for sockets).
    dir: tempfile::TempDir,
    link: std::path::PathBuf,
    lab: TestLab,
    containers: Containers,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        require_docker();
        let (dir, link) = weave_link();
        Setup {
            dir,
            link,
            lab: lab_on_one_segment(tag, &["h1"]),
            containers: Containers::new(tag),
        }
    }
}

/// `--dns-listen-address` for DNS served on `host`'s underlay address
/// (a lab host has no docker0).
fn dns_flag(host: &Host) -> String {
    format!("--dns-listen-address={}:53", host.addr())
}

/// The `DOCKER_HOST` that `eval $(weave env)` would set on `host`.
fn proxy_host(host: &Host, link: &std::path::Path) -> String {
    let env = ok(host, link, &["env"], &[]);
    env.split_whitespace()
        .find_map(|w| w.strip_prefix("DOCKER_HOST="))
        .unwrap_or_else(|| panic!("weave env printed no DOCKER_HOST: {env:?}"))
        .to_string()
}

/// What weave 605 asks `docker inspect` for.
const INSPECT_FORMAT: &str = "{{.Name}} {{.NetworkSettings.MacAddress}} {{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}}";

/// weave 605_proxy_inspect: with `--rewrite-inspect`, `docker inspect`
/// through the proxy shows the container's mesh MAC and address, exactly
/// what `weave ps` shows; the engine itself, and a proxy launched without
/// the flag, still show Docker's own.
#[test]
fn weave_605_proxy_inspect() {
    let Setup {
        dir: _dir,
        link,
        lab,
        mut containers,
    } = Setup::new("w605");
    let h1 = lab.host("h1");
    let c1 = containers.name("c1");

    ok(h1, &link, &["launch", "--rewrite-inspect"], &[]);
    let proxy = proxy_host(h1, &link);
    docker_ok_at(
        Some(&proxy),
        &["run", "-dt", "--name", &c1, "busybox", "/bin/sh"],
    );
    let via_proxy = docker_ok_at(Some(&proxy), &["inspect", "--format", INSPECT_FORMAT, &c1]);
    let ps = ok(h1, &link, &["ps", &c1], &[]);
    assert_eq!(
        via_proxy.trim(),
        format!("/{}", ps.trim()),
        "weave ps: {ps}"
    );

    // weave's exec-inspect interceptor: `docker exec` reads its exit code
    // from the exec inspect, which goes through the proxy too (today's
    // engines embed no container in it, so it passes unchanged).
    let exec = docker_at(Some(&proxy), &["exec", &c1, "sh", "-c", "exit 3"]);
    assert_eq!(exec.status.code(), Some(3), "docker exec through the proxy");

    let direct = docker_ok_at(None, &["inspect", "--format", INSPECT_FORMAT, &c1]);
    assert_ne!(direct, via_proxy, "the engine itself is not rewritten");

    ok(h1, &link, &["stop"], &[]);
    ok(h1, &link, &["launch"], &[]);
    let plain = docker_ok_at(Some(&proxy), &["inspect", "--format", INSPECT_FORMAT, &c1]);
    assert_eq!(plain, direct, "without --rewrite-inspect, Docker's answer");
    ok(h1, &link, &["stop"], &[]);
}

/// weave's proxy flags `--without-dns` and `--no-multicast-route` (weave's
/// 195_no_multicast_route, its proxy and attach halves): a container
/// made through the default proxy has meshnet's DNS server and the
/// 224.0.0.0/4 route on `ethwe`; through a proxy launched with both flags,
/// neither.
#[test]
fn weave_proxy_without_dns_and_multicast_route() {
    let Setup {
        dir: _dir,
        link,
        lab,
        mut containers,
    } = Setup::new("wpxf");
    let h1 = lab.host("h1");
    let dns = dns_flag(h1);
    for (flags, served) in [
        (vec!["launch", &dns], true),
        (
            vec!["launch", &dns, "--without-dns", "--no-multicast-route"],
            false,
        ),
    ] {
        ok(h1, &link, &flags, &[]);
        let proxy = proxy_host(h1, &link);
        let c = containers.name(if served { "plain" } else { "flags" });
        docker_ok_at(
            Some(&proxy),
            &["run", "-dt", "--name", &c, "busybox", "/bin/sh"],
        );
        let servers = docker_ok_at(None, &["inspect", "--format", "{{.HostConfig.Dns}}", &c]);
        assert_eq!(
            servers.contains(&h1.addr().to_string()),
            served,
            "{flags:?}: Dns {servers}"
        );
        let routes = docker_ok_at(None, &["exec", &c, "ip", "route"]);
        assert_eq!(
            routes.contains("224.0.0.0/4 dev ethwe"),
            served,
            "{flags:?}: routes\n{routes}"
        );
        if !served {
            // 195: `weave attach --no-multicast-route` on a container the
            // engine made.
            let c1 = containers.name("c1");
            docker_ok_at(None, &["run", "-dt", "--name", &c1, "busybox", "/bin/sh"]);
            ok(
                h1,
                &link,
                &["attach", "--no-multicast-route", "10.2.1.5/24", &c1],
                &[],
            );
            let routes = docker_ok_at(None, &["exec", &c1, "ip", "route"]);
            assert!(routes.contains("10.2.1.0/24 dev ethwe"), "{routes}");
            assert!(!routes.contains("224.0.0.0/4"), "{routes}");
        }
        ok(h1, &link, &["stop"], &[]);
    }
}

/// `hostname -i` in a container run through `h1`'s proxy with mesh address
/// `ip` (as `user`, None: the image's).
fn image_ip(proxy: &str, ip: &str, user: Option<&str>) -> String {
    let cidr = format!("WEAVE_CIDR={ip}/24");
    let mut args = vec!["run", "--rm", "-e", &cidr];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    args.extend(["busybox", "hostname", "-i"]);
    let out = docker_ok_at(Some(proxy), &args);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// weave 615_proxy_rewrite_hosts: a container's /etc/hosts names its mesh
/// address, so `hostname -i` gives it (also for a user who is not root;
/// weave builds an image with one, `--user` is the same here);
/// `--no-rewrite-hosts` leaves Docker's file.
#[test]
fn weave_615_proxy_rewrite_hosts() {
    let Setup {
        dir: _dir,
        link,
        lab,
        containers: _containers,
    } = Setup::new("w615");
    let h1 = lab.host("h1");
    // weave reuses one address; meshnet keeps a dead container's address
    // for RELEASE_GRACE, so each run has its own.
    ok(h1, &link, &["launch"], &[]);
    let proxy = proxy_host(h1, &link);
    assert_eq!(image_ip(&proxy, "10.2.1.1", None), "10.2.1.1");
    assert_eq!(image_ip(&proxy, "10.2.1.2", Some("1000:1000")), "10.2.1.2");
    ok(h1, &link, &["stop"], &[]);

    ok(h1, &link, &["launch", "--no-rewrite-hosts"], &[]);
    let docker_ip = image_ip(&proxy, "10.2.1.3", None);
    assert_ne!(
        docker_ip, "10.2.1.3",
        "--no-rewrite-hosts: Docker's address"
    );
    assert!(
        docker_ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "{docker_ip:?}"
    );
    ok(h1, &link, &["stop"], &[]);
}

/// The addresses `weave dns-lookup name` prints on `host`, each once (a
/// container just removed may still hold the same address under the name
/// until its death is handled).
fn lookup(host: &Host, link: &std::path::Path, name: &str) -> Vec<String> {
    let out = weave(host, link, &["dns-lookup", name], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let set: std::collections::BTreeSet<String> =
        text.split_whitespace().map(str::to_string).collect();
    set.into_iter().collect()
}

/// weave 255_dns_restart: a name registered by the proxy for a container
/// (`-h seetwo.weave.local`) is served again after the router restarts,
/// with nothing but the proxy to register it. weave asks from inside
/// another container; here `weave dns-lookup` asks the same server from
/// the host (the lab's DNS listens on the host's underlay address, which
/// Docker's containers do not reach).
#[test]
fn weave_255_dns_restart() {
    let Setup {
        dir: _dir,
        link,
        lab,
        mut containers,
    } = Setup::new("w255");
    let h1 = lab.host("h1");
    let (c1_ip, c2_ip, fqdn) = ("10.2.0.78", "10.2.0.34", "seetwo.weave.local");
    let dns = dns_flag(h1);
    ok(h1, &link, &["launch", &dns], &[]);
    let proxy = proxy_host(h1, &link);
    for (short, ip, extra) in [("c2", c2_ip, Some(fqdn)), ("c1", c1_ip, None)] {
        let name = containers.name(short);
        let cidr = format!("WEAVE_CIDR={ip}/24");
        let mut run = vec!["run", "-dt", "-e", &cidr, "--name", &name];
        if let Some(h) = extra {
            run.extend(["-h", h]);
        }
        run.extend(["busybox", "/bin/sh"]);
        docker_ok_at(Some(&proxy), &run);
    }
    wait_for("seetwo's record", CONVERGE, || {
        let got = lookup(h1, &link, fqdn);
        (got == [c2_ip]).then_some(()).ok_or(got)
    });
    ok(h1, &link, &["stop"], &[]);
    ok(h1, &link, &["launch", &dns], &[]);
    wait_for("seetwo's record after the restart", CONVERGE, || {
        let got = lookup(h1, &link, fqdn);
        (got == [c2_ip]).then_some(()).ok_or(got)
    });
    ok(h1, &link, &["stop"], &[]);
}

/// The containers of weave 680: names (or label values) and the hostnames
/// they must give, and their addresses.
const W680: [(&str, &str, u8); 3] = [
    ("qiuds71y827hdi-seeone-1io9qd9i0wd", "seeone", 78),
    ("124DJKSNK812-seetwo-128hbaJ881", "seetwo", 34),
    ("doesnotmatchpattern", "doesnotmatchpattern", 57),
];

/// One `check_dns_records` of weave 680: (by label?, expanded names?).
type Check = (bool, bool);

/// weave 680's `check_dns_records`: three containers through `proxy`,
/// named (or, `by_label`, labelled `hostname-label=`) with the expanded
/// names or the hostnames themselves; each gets its hostname, which
/// resolves to it in `h1`'s DNS. Check `n` uses 10.2.`n`.x (weave reuses
/// 10.2.0.x; meshnet keeps a dead container's address for RELEASE_GRACE).
fn check_dns_records(
    h1: &Host,
    link: &std::path::Path,
    containers: &mut Containers,
    n: usize,
    (by_label, expanded): Check,
) {
    let proxy = proxy_host(h1, link);
    for (long, host, last) in W680 {
        let ip = &format!("10.2.{n}.{last}");
        let given = if expanded { long } else { host };
        let name = if by_label {
            containers.name(host)
        } else {
            containers.exact(given)
        };
        let cidr = format!("WEAVE_CIDR={ip}/24");
        let label = format!("hostname-label={given}");
        let mut run = vec!["run", "-dt", "-e", &cidr, "--name", &name];
        if by_label {
            run.extend(["--label", &label]);
        }
        run.extend(["busybox", "/bin/sh"]);
        docker_ok_at(Some(&proxy), &run);
        let what = format!("{} {given}", if by_label { "label" } else { "name" });
        let got = docker_ok_at(
            None,
            &["inspect", "--format", "{{.Config.Hostname}}", &name],
        );
        assert_eq!(got.trim(), host, "{what}");
        assert_eq!(lookup(h1, link, host), [ip.as_str()], "{what}");
        docker_ok_at(None, &["rm", "-f", &name]);
    }
}

/// weave 680_proxy_hostname_derivation: `--hostname-match` /
/// `--hostname-replacement` derive a hostname from the container's name,
/// `--hostname-from-label` from a label when it is set (then the match
/// too); each name resolves to the container in DNS.
#[test]
fn weave_680_proxy_hostname_derivation() {
    let Setup {
        dir: _dir,
        link,
        lab,
        mut containers,
    } = Setup::new("w680");
    let h1 = lab.host("h1");
    let dns = dns_flag(h1);
    let pattern = "--hostname-match=^[^-]+-(?P<appname>[^-]*)-[^-]+$";
    let replacement = "--hostname-replacement=$appname";
    let label = "--hostname-from-label=hostname-label";
    // Launch flags, then (by label?, expanded names?) for each check.
    let with_pattern: &[&str] = &[pattern, replacement];
    let with_both: &[&str] = &[label, pattern, replacement];
    let cases: [(&[&str], &[Check]); 3] = [
        (with_pattern, &[(false, false), (false, true)]),
        (&[label], &[(false, false), (true, false)]),
        (
            with_both,
            &[(false, false), (false, true), (true, false), (true, true)],
        ),
    ];
    let mut n = 0;
    for (flags, checks) in cases {
        let mut args = vec!["launch", &dns];
        args.extend(flags);
        ok(h1, &link, &args, &[]);
        for &check in checks {
            n += 1;
            check_dns_records(h1, &link, &mut containers, n, check);
        }
        ok(h1, &link, &["stop"], &[]);
    }
}

/// weave's `launch -H` (690_proxy_config's explicit addresses): the proxy
/// listens on each address given, a unix socket of our choosing and a TCP
/// address, and not on its default socket; `weave env` and `weave config`
/// name the first, `status` lists both; a container made through either
/// is attached. (690's TLS and DOCKER_HOST-dependent defaults do not
/// apply: no TLS, and the default is always the unix socket.)
#[test]
fn weave_launch_h_listen_addresses() {
    let Setup {
        dir,
        link,
        lab,
        mut containers,
    } = Setup::new("wlh");
    let h1 = lab.host("h1");
    let unix = format!("unix://{}", dir.path().join("other.sock").display());
    let tcp = "tcp://127.0.0.1:12375";
    ok(
        h1,
        &link,
        &["launch", "-H", &unix, &format!("-H{tcp}")],
        &[],
    );
    assert_eq!(proxy_host(h1, &link), unix);
    assert_eq!(ok(h1, &link, &["config"], &[]).trim(), format!("-H={unix}"));
    let status = ok(h1, &link, &["status"], &[]);
    assert!(status.contains(&unix) && status.contains(tcp), "{status}");
    assert!(
        !h1.run_dir().join("meshnet.sock").exists(),
        "the default socket is not made when -H is given"
    );
    let c1 = containers.name("c1");
    docker_ok_at(
        Some(&unix),
        &["run", "-dt", "--name", &c1, "busybox", "/bin/sh"],
    );
    let routes = docker_ok_at(None, &["exec", &c1, "ip", "-4", "addr", "show", "ethwe"]);
    assert!(routes.contains("inet "), "{routes}");
    // The TCP address is in h1's namespace: the client runs there.
    let c2 = containers.name("c2");
    let out = h1
        .exec(&[
            "docker", "-H", tcp, "run", "-dt", "--name", &c2, "busybox", "/bin/sh",
        ])
        .expect("docker in h1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = docker_ok_at(None, &["exec", &c2, "ip", "-4", "addr", "show", "ethwe"]);
    assert!(addr.contains("inet "), "{addr}");
    ok(h1, &link, &["stop"], &[]);
    assert!(
        !dir.path().join("other.sock").exists(),
        "stop removes the socket"
    );

    let bad = weave(h1, &link, &["launch", "-H", "http://x"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unix:///PATH or tcp://HOST:PORT"));
}

/// weave 270_use_name_as_hostname: a container's name becomes its host in
/// the DNS domain; a hostname given with `-h`/`--hostname` (before or after
/// `--name`) wins, and an FQDN gets no domain behind it.
#[test]
fn weave_270_use_name_as_hostname() {
    let Setup {
        dir: _dir,
        link,
        lab,
        mut containers,
    } = Setup::new("w270");
    let h1 = lab.host("h1");
    let dns = dns_flag(h1);
    ok(
        h1,
        &link,
        &["launch", "--ipalloc-range", "10.2.0.0/24", &dns],
        &[],
    );
    let proxy = proxy_host(h1, &link);
    let name = containers.name("c1");
    let given = "c1-hostname.weave.local";
    let by_name = format!("{name}.weave.local");
    let name_eq = format!("--name={name}");
    let h_eq = format!("--hostname={given}");
    let cases: [(&[&str], &str); 8] = [
        (&[&name_eq], &by_name),
        (&["--name", &name], &by_name),
        (&[&name_eq, "-h", given], given),
        (&[&name_eq, &h_eq], given),
        (&[&name_eq, "--hostname", given], given),
        (&["-h", given, &name_eq], given),
        (&[&h_eq, &name_eq], given),
        (&["--hostname", given, &name_eq], given),
    ];
    for (flags, want) in cases {
        let mut run = vec!["run", "-dt"];
        run.extend(flags);
        run.extend(["busybox", "/bin/sh"]);
        docker_ok_at(Some(&proxy), &run);
        let fqdn = docker_ok_at(
            None,
            &[
                "inspect",
                "--format",
                "{{.Config.Hostname}}.{{.Config.Domainname}}",
                &name,
            ],
        );
        assert_eq!(fqdn.trim().trim_end_matches('.'), want, "{flags:?}");
        docker_ok_at(None, &["rm", "-f", &name]);
    }
    ok(h1, &link, &["stop"], &[]);
}

/// weave 260_dns_removal: a container's name goes when it dies, whether
/// the proxy made it (`-h seetwo.weave.local`) or `weave attach` put an
/// engine-made one on the mesh.
#[test]
fn weave_260_dns_removal() {
    let Setup {
        dir: _dir,
        link,
        lab,
        mut containers,
    } = Setup::new("w260");
    let h1 = lab.host("h1");
    let fqdn = "seetwo.weave.local";
    let dns = dns_flag(h1);
    ok(h1, &link, &["launch", &dns], &[]);
    let proxy = proxy_host(h1, &link);
    let check = |c2: &str, ip: &str| {
        wait_for("seetwo's record", CONVERGE, || {
            let got = lookup(h1, &link, fqdn);
            (got == [ip]).then_some(()).ok_or(got)
        });
        docker_ok_at(None, &["rm", "-f", c2]);
        wait_for("seetwo's record to go", CONVERGE, || {
            let got = lookup(h1, &link, fqdn);
            got.is_empty().then_some(()).ok_or(got)
        });
    };
    let c2 = containers.name("c2");
    let cidr = "WEAVE_CIDR=10.2.0.43/24";
    docker_ok_at(
        Some(&proxy),
        &[
            "run", "-dt", "-e", cidr, "--name", &c2, "-h", fqdn, "busybox", "/bin/sh",
        ],
    );
    check(&c2, "10.2.0.43");
    let c2b = containers.name("c2b");
    docker_ok_at(
        None,
        &[
            "run", "-dt", "--name", &c2b, "-h", fqdn, "busybox", "/bin/sh",
        ],
    );
    ok(h1, &link, &["attach", "10.2.0.44/24", &c2b], &[]);
    check(&c2b, "10.2.0.44");
    ok(h1, &link, &["stop"], &[]);
}

/// `launch --no-default-ipalloc`: a container created through the proxy
/// without `WEAVE_CIDR` stays off the mesh (no `ethwe`), one with an address
/// in `WEAVE_CIDR` still gets it; without the flag a plain container is
/// attached from IPAM.
#[test]
fn weave_proxy_no_default_ipalloc() {
    let Setup {
        dir: _dir,
        link,
        lab,
        mut containers,
    } = Setup::new("wpxn");
    let h1 = lab.host("h1");
    for (flags, default_attached) in [
        (vec!["launch", "--no-default-ipalloc"], false),
        (vec!["launch"], true),
    ] {
        ok(h1, &link, &flags, &[]);
        let proxy = proxy_host(h1, &link);
        let (round, addr) = if default_attached {
            ("default", "10.2.1.8/24")
        } else {
            ("nodefault", "10.2.1.7/24")
        };
        let cidr = format!("WEAVE_CIDR={addr}");
        let plain = containers.name(&format!("{round}-plain"));
        docker_ok_at(
            Some(&proxy),
            &["run", "-dt", "--name", &plain, "busybox", "/bin/sh"],
        );
        let links = docker_ok_at(None, &["exec", &plain, "ip", "-o", "link"]);
        assert_eq!(
            links.contains("ethwe"),
            default_attached,
            "{flags:?}: a container without WEAVE_CIDR\n{links}"
        );
        let given = containers.name(&format!("{round}-given"));
        docker_ok_at(
            Some(&proxy),
            &[
                "run", "-dt", "--name", &given, "-e", &cidr, "busybox", "/bin/sh",
            ],
        );
        let addrs = docker_ok_at(
            None,
            &["exec", &given, "ip", "-4", "-o", "addr", "show", "ethwe"],
        );
        assert!(
            addrs.contains(addr),
            "{flags:?}: a container with WEAVE_CIDR\n{addrs}"
        );
        ok(h1, &link, &["stop"], &[]);
    }
}
