//! weaveDNS on real routers in network namespaces, asked with real `dig`
//! (bind9-dnsutils):
//!
//! 1. names registered on two hosts (`meshnet dns-add`) are answered by
//!    both: A with every address in varying order, case-insensitive,
//!    single-label qualified, PTR, NXDOMAIN (authoritative), NOERROR-empty
//!    for other types, TCP, truncation with TC on a record boundary;
//!    `dns-remove`, `dns-lookup`, `dns-args`, `status dns`, metrics.
//! 2. names outside the domain go to the servers of `--resolv-conf` (a
//!    file the test wrote, a dnsmasq the test runs in its own namespace),
//!    in order past a dead one; SERVFAIL when none answers; never to
//!    ourselves.
//! 3. three hosts with a `web` each: all three addresses; a host restarted
//!    without its container leaves no stale record anywhere.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshnet_tests::{Host, lab_on_one_segment, launch, meshnet_ok, report, view, wait_for};

/// How long names may take to cross the mesh.
const GOSSIP_WAIT: Duration = Duration::from_secs(30);

/// `dig @server args` on `host`; returns stdout (dig's exit status is
/// checked: it fails only when no reply came).
fn dig(host: &Host, server: Ipv4Addr, args: &[&str]) -> String {
    let at = format!("@{server}");
    let mut argv = vec!["dig", at.as_str(), "+time=2", "+tries=2"];
    argv.extend_from_slice(args);
    let out = host
        .exec(&argv)
        .unwrap_or_else(|e| panic!("{e:#}: install dig (apt-get install bind9-dnsutils)"));
    assert!(
        out.status.success(),
        "dig {} on {} failed: {}{}",
        argv.join(" "),
        host.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A addresses of a `+short` answer, in order.
fn short_addrs(text: &str) -> Vec<Ipv4Addr> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn status_of(full: &str) -> String {
    full.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{full}"))
        .to_string()
}

fn flags_of(full: &str) -> Vec<String> {
    full.split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no flags in dig output:\n{full}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn answer_count(full: &str) -> usize {
    full.split("ANSWER: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ANSWER count in dig output:\n{full}"))
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, 0, last)
}

/// Launch flags serving DNS on the host's underlay address, upstreams from `resolv`.
fn dns_flags(host: &Host, resolv: &std::path::Path) -> Vec<String> {
    vec![
        format!("--dns-listen-address={}:53", host.addr()),
        format!("--resolv-conf={}", resolv.display()),
        "--dns-fallback-timeout=1s".into(),
        "--ipalloc-range=".into(),
        format!("--nickname={}", host.name()),
    ]
}

#[test]
fn dig_answers_names_from_every_host() {
    let lab = lab_on_one_segment("dnsdig", &["a", "b"]);
    let (a, b) = (lab.host("a"), lab.host("b"));
    let resolv = lab.dir().join("resolv.conf");
    std::fs::write(&resolv, "# no upstream\n").expect("writing resolv.conf");
    launch(a, &dns_flags(a, &resolv));
    let mut flags = dns_flags(b, &resolv);
    flags.push(a.addr().to_string());
    let b_name = launch(b, &flags);
    wait_for("a and b to connect", GOSSIP_WAIT, || {
        view::established_with(&report(a), &b_name).then_some(())
    });

    meshnet_ok(a, &["dns-add", "10.32.0.1", "-h", "web"]);
    meshnet_ok(a, &["dns-add", "10.32.0.2", "-h", "Web.Weave.Local."]);
    meshnet_ok(
        a,
        &["dns-add", "10.32.0.3", "10.32.0.4", "-h", "db.weave.local"],
    );
    meshnet_ok(b, &["dns-add", "10.32.0.9", "-h", "web"]);
    let out = a
        .meshnet(&["dns-add", "10.32.0.5", "-h", "x.example.com"])
        .expect("run");
    assert!(
        !out.status.success(),
        "a name outside the domain is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the DNS domain"));

    // A: every address, from either host's server, in varying order.
    let want: BTreeSet<Ipv4Addr> = [ip(1), ip(2), ip(9)].into();
    for (host, server) in [(a, a.addr()), (b, b.addr())] {
        wait_for("web to have three addresses", GOSSIP_WAIT, || {
            let got: BTreeSet<_> = short_addrs(&dig(host, server, &["+short", "web.weave.local"]))
                .into_iter()
                .collect();
            (got == want).then_some(())
        });
    }
    let orders: BTreeSet<Vec<Ipv4Addr>> = (0..12)
        .map(|_| short_addrs(&dig(b, b.addr(), &["+short", "web.weave.local"])))
        .collect();
    assert!(orders.len() > 1, "the order never changed: {orders:?}");

    // Case, single label, TTL, authoritative.
    let full = dig(b, b.addr(), &["WEB.weave.LOCAL"]);
    assert_eq!(status_of(&full), "NOERROR");
    assert!(flags_of(&full).contains(&"aa".to_string()), "{full}");
    assert!(
        full.contains("WEB.weave.LOCAL.\t1\tIN\tA") || full.contains("WEB.weave.LOCAL. 1 IN A"),
        "{full}"
    );
    let got: BTreeSet<_> = short_addrs(&dig(b, b.addr(), &["+short", "web"]))
        .into_iter()
        .collect();
    assert_eq!(got, want, "single label");

    // PTR, NXDOMAIN, NOERROR-empty, TCP.
    wait_for("db to reach b", GOSSIP_WAIT, || {
        (dig(b, b.addr(), &["+short", "-x", "10.32.0.4"]).trim() == "db.weave.local.").then_some(())
    });
    let full = dig(b, b.addr(), &["nope.weave.local"]);
    assert_eq!(status_of(&full), "NXDOMAIN");
    assert!(flags_of(&full).contains(&"aa".to_string()), "{full}");
    let full = dig(b, b.addr(), &["web.weave.local", "AAAA"]);
    assert_eq!(status_of(&full), "NOERROR");
    assert_eq!(answer_count(&full), 0);
    let got: BTreeSet<_> = short_addrs(&dig(b, b.addr(), &["+tcp", "+short", "web.weave.local"]))
        .into_iter()
        .collect();
    assert_eq!(got, want, "over TCP");

    // Truncation: 60 addresses do not fit 512 bytes.
    let many: Vec<String> = (100..160).map(|i| ip(i).to_string()).collect();
    let mut args = vec!["dns-add"];
    args.extend(many.iter().map(String::as_str));
    args.extend(["-h", "many"]);
    meshnet_ok(a, &args);
    let full = dig(a, a.addr(), &["+noedns", "+ignore", "many.weave.local"]);
    assert!(flags_of(&full).contains(&"tc".to_string()), "{full}");
    let cut = answer_count(&full);
    assert!(cut > 0 && cut < 60, "{cut} answers in 512 bytes");
    let full = dig(
        a,
        a.addr(),
        &["+bufsize=4096", "+ignore", "many.weave.local"],
    );
    assert!(
        !flags_of(&full).contains(&"tc".to_string()),
        "EDNS0 4096 fits all: {full}"
    );
    assert_eq!(answer_count(&full), 60);
    let full = dig(a, a.addr(), &["+tcp", "+noedns", "many.weave.local"]);
    assert_eq!(answer_count(&full), 60, "TCP is not truncated");

    // Removal reaches the other host.
    meshnet_ok(a, &["dns-remove", "10.32.0.1", "-h", "web"]);
    wait_for("the removed address to go", GOSSIP_WAIT, || {
        let got: BTreeSet<_> = short_addrs(&dig(b, b.addr(), &["+short", "web.weave.local"]))
            .into_iter()
            .collect();
        (got == BTreeSet::from([ip(2), ip(9)])).then_some(())
    });

    // The CLI's views.
    let lookup: BTreeSet<_> = short_addrs(&meshnet_ok(b, &["dns-lookup", "web"]))
        .into_iter()
        .collect();
    assert_eq!(lookup, BTreeSet::from([ip(2), ip(9)]));
    assert_eq!(
        meshnet_ok(b, &["dns-args"]).trim(),
        format!("--dns={} --dns-search=weave.local.", b.addr())
    );
    let status = meshnet_ok(b, &["status", "dns"]);
    let web_lines: Vec<&str> = status.lines().filter(|l| l.starts_with("web ")).collect();
    assert_eq!(web_lines.len(), 2, "{status}");
    assert!(
        web_lines
            .iter()
            .any(|l| l.contains("10.32.0.9") && l.contains("weave:extern") && l.contains(&b_name)),
        "{status}"
    );
    let summary = meshnet_ok(b, &["status"]);
    assert!(
        summary.contains("Service: dns") && summary.contains("Domain: weave.local."),
        "{summary}"
    );
    let r = report(b);
    assert_eq!(r["DNS"]["Domain"], "weave.local.");
    assert!(
        r["DNS"]["Entries"].as_array().is_some_and(|e| e.len() >= 4),
        "{}",
        r["DNS"]
    );
    let metrics = String::from_utf8_lossy(
        &b.exec(&["curl", "-s", "http://127.0.0.1:6782/metrics"])
            .expect("curl")
            .stdout,
    )
    .into_owned();
    assert!(metrics.contains("meshnet_dns_queries_total"), "{metrics}");
    assert!(
        metrics.contains("meshnet_dns_answers_total{rcode=\"NXDOMAIN\"} 1"),
        "{metrics}"
    );
}

/// A dnsmasq in its own namespace answering `example.test`; killed on drop.
struct Resolver(Child);

impl Resolver {
    fn start(host: &Host) -> Resolver {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                host.netns(),
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
            ])
            .arg(format!("--listen-address={}", host.addr()))
            .arg("--address=/example.test/198.51.100.7")
            .arg("--pid-file=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dnsmasq: {e}; apt-get install dnsmasq-base"));
        Resolver(child)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn other_names_go_upstream_in_order_then_servfail() {
    let lab = lab_on_one_segment("dnsup", &["a", "r"]);
    let (a, r) = (lab.host("a"), lab.host("r"));
    let _resolver = Resolver::start(r);
    let resolv = lab.dir().join("resolv.conf");
    // Ourselves first (must be skipped), a dead server, then the live one.
    std::fs::write(
        &resolv,
        format!(
            "nameserver {}\nnameserver 192.0.2.99\nnameserver {}\n",
            a.addr(),
            r.addr()
        ),
    )
    .expect("writing resolv.conf");
    launch(a, &dns_flags(a, &resolv));
    wait_for("the upstream to answer through a", GOSSIP_WAIT, || {
        (short_addrs(&dig(
            a,
            a.addr(),
            &["+time=5", "+short", "host.example.test"],
        )) == [Ipv4Addr::new(198, 51, 100, 7)])
        .then_some(())
    });
    let summary = meshnet_ok(a, &["status"]);
    assert!(
        summary.contains(&format!("Upstream: 192.0.2.99, {}", r.addr())),
        "{summary}"
    );
    // Names in our domain never go upstream, even unknown ones.
    assert_eq!(
        status_of(&dig(a, a.addr(), &["nope.weave.local"])),
        "NXDOMAIN"
    );

    // The file changes: only the dead server is left.
    std::fs::write(&resolv, "nameserver 192.0.2.99\n").expect("rewriting resolv.conf");
    wait_for("SERVFAIL once no upstream answers", GOSSIP_WAIT, || {
        (status_of(&dig(a, a.addr(), &["+time=5", "host.example.test"])) == "SERVFAIL")
            .then_some(())
    });
    let metrics = String::from_utf8_lossy(
        &a.exec(&["curl", "-s", "http://127.0.0.1:6782/metrics"])
            .expect("curl")
            .stdout,
    )
    .into_owned();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshnet_dns_upstream_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no upstream failure counter:\n{metrics}"));
    assert!(failures >= 1, "{metrics}");
}

#[test]
fn a_restarted_host_leaves_no_stale_record() {
    let mut lab = lab_on_one_segment("dnsweb", &["a", "b", "c"]);
    let ctrs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|h| {
            lab.add_container(h, &format!("web{h}"))
                .expect("adding a container netns")
        })
        .collect();
    let resolv = lab.dir().join("resolv.conf");
    std::fs::write(&resolv, "# no upstream\n").expect("writing resolv.conf");
    let a = lab.host("a");
    launch(a, &dns_flags(a, &resolv));
    for name in ["b", "c"] {
        let h = lab.host(name);
        let mut flags = dns_flags(h, &resolv);
        flags.push(a.addr().to_string());
        launch(h, &flags);
    }
    for ((i, name), ctr) in (1u8..).zip(["a", "b", "c"]).zip(&ctrs) {
        let id = format!("netns:{ctr}");
        meshnet_ok(
            lab.host(name),
            &["dns-add", &ip(i).to_string(), &id, "-h", "web"],
        );
    }
    let all: BTreeSet<_> = [ip(1), ip(2), ip(3)].into();
    for h in ["a", "b", "c"].map(|n| lab.host(n)) {
        wait_for("web to have all three addresses", GOSSIP_WAIT, || {
            let got: BTreeSet<_> = short_addrs(&dig(h, h.addr(), &["+short", "web"]))
                .into_iter()
                .collect();
            (got == all).then_some(())
        });
    }
    // c's router restarts; its container did not survive.
    let c = lab.host("c");
    meshnet_ok(c, &["stop"]);
    let mut flags = dns_flags(c, &resolv);
    flags.push(a.addr().to_string());
    launch(c, &flags);
    let live: BTreeSet<_> = [ip(1), ip(2)].into();
    for h in ["a", "b", "c"].map(|n| lab.host(n)) {
        wait_for("the stale record to go everywhere", GOSSIP_WAIT, || {
            let got: BTreeSet<_> = short_addrs(&dig(h, h.addr(), &["+short", "web"]))
                .into_iter()
                .collect();
            (got == live).then_some(())
        });
    }
}
