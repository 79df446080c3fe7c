//! weave's proxy tests (6xx) on our Docker engine: the router runs in a lab
//! namespace with its proxy, containers are real Docker containers made
//! through it.

use meshnet_tests::docker::{Containers, docker_ok_at, require_docker};
use meshnet_tests::lab_on_one_segment;

use super::{Host, ok, weave_link};

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
    require_docker();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w605", &["h1"]);
    let h1 = lab.host("h1");
    let mut containers = Containers::new("w605");
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
    require_docker();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("wpxf", &["h1"]);
    let h1 = lab.host("h1");
    let mut containers = Containers::new("wpxf");
    let dns = format!("--dns-listen-address={}:53", h1.addr());
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
