//! weave's DNS tests (2xx) in lab namespaces: every router serves
//! `weave.local.` on its underlay address (`--dns-listen-address`; there is
//! no docker0 in a namespace) with no upstream servers, names come from
//! `weave dns-add` for namespace containers and `weave expose -h`, and are
//! asked with real `dig` from the host (weave asks `getent` in a container:
//! the same server, the same records).

use std::net::Ipv4Addr;
use std::path::Path;

use meshnet_tests::{TestLab, lab_on_one_segment, require_root, wait_for};

use super::router::container;
use super::{CONVERGE, Host, ok, weave, weave_link};

/// `weave launch` flags serving DNS on `host`'s underlay address, with an
/// empty resolv.conf (tests never ask the machine's resolvers).
fn dns_launch(lab: &TestLab, host: &Host, extra: &[&str]) -> Vec<String> {
    let resolv = lab.dir().join("resolv.conf");
    std::fs::write(&resolv, "# no upstream\n").expect("resolv.conf");
    let mut v = vec![
        "launch".to_string(),
        "--proxy=false".into(),
        format!("--dns-listen-address={}:53", host.addr()),
        format!("--resolv-conf={}", resolv.display()),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn launch(lab: &TestLab, link: &Path, host: &str, extra: &[&str]) {
    let h = lab.host(host);
    let args = dns_launch(lab, h, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(h, link, &args, &[]);
}

/// `dig @host args` from `host`; stdout (dig must get a reply).
fn dig(host: &Host, args: &[&str]) -> String {
    let at = format!("@{}", host.addr());
    let mut argv = vec!["dig", at.as_str(), "+time=2", "+tries=2"];
    argv.extend_from_slice(args);
    let out = host
        .exec(&argv)
        .unwrap_or_else(|e| panic!("{e:#}: install dig (bind9-dnsutils)"));
    assert!(
        out.status.success(),
        "dig {argv:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A records `host` answers for `name`, sorted.
fn a_records(host: &Host, name: &str) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = dig(host, &["+short", name, "A"])
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    v.sort();
    v
}

/// weave's `assert_dns_record`: `name` resolves to exactly `ips` on `host`
/// (waiting for gossip), and each of them back to `name`.
fn assert_dns_record(host: &Host, name: &str, ips: &[&str]) {
    let mut want: Vec<Ipv4Addr> = ips
        .iter()
        .map(|i| {
            i.parse()
                .unwrap_or_else(|_| panic!("not an address: {i:?}"))
        })
        .collect();
    want.sort();
    wait_for(
        &format!("{name} -> {ips:?} on {}", host.name()),
        CONVERGE,
        || {
            let got = a_records(host, name);
            if got == want { Ok(()) } else { Err(got) }
        },
    );
    let fqdn = format!("{}.", name.trim_end_matches('.').to_lowercase());
    for ip in ips {
        let ptr = dig(host, &["+short", "-x", ip]);
        assert!(
            ptr.lines().any(|l| l.trim().to_lowercase() == fqdn),
            "{ip} -> {ptr:?}, not {fqdn}"
        );
    }
}

/// weave's `assert_no_dns_record`.
fn assert_no_dns_record(host: &Host, name: &str) {
    wait_for(
        &format!("{name} to go on {}", host.name()),
        CONVERGE,
        || {
            let got = a_records(host, name);
            if got.is_empty() { Ok(()) } else { Err(got) }
        },
    );
}

/// The `status:` of a full dig answer.
fn rcode(host: &Host, args: &[&str]) -> String {
    let full = dig(host, args);
    full.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in:\n{full}"))
        .to_string()
}

/// weave 200_dns (names on one host, `expose -h`) and 265_dns_reverse (one
/// address named in turn by three containers, PTR following; weave's
/// container removal is a `detach` here).
#[test]
fn weave_200_265_dns_on_one_host() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w200", &["h1"]);
    launch(&lab, &link, "h1", &[]);
    let (c2, c2_ip) = container(&mut lab, &link, "h1", "c2", Some("10.2.0.34/24"));
    let h1 = lab.host("h1");
    let c2 = format!("netns:{c2}");
    ok(
        h1,
        &link,
        &["dns-add", &c2, "-h", "seetwo.weave.local"],
        &[],
    );
    assert_dns_record(h1, "seetwo.weave.local", &[&c2_ip]);

    ok(h1, &link, &["expose"], &[]);
    let exposed = ok(h1, &link, &["expose", "-h", "testexpose1.weave.local"], &[]);
    ok(h1, &link, &["expose", "-h", "testexpose2.weave.local"], &[]);
    assert_dns_record(h1, "testexpose1.weave.local", &[exposed.trim()]);
    assert_eq!(a_records(h1, "testexpose2.weave.local").len(), 1);

    // 265: the same address named by one container after another.
    let ip = "10.2.0.67";
    for name in ["acontainer", "bcontainer", "ccontainer"] {
        let (ns, _) = container(&mut lab, &link, "h1", name, Some(&format!("{ip}/24")));
        let h1 = lab.host("h1");
        let c = format!("netns:{ns}");
        let fqdn = format!("{name}.weave.local");
        ok(h1, &link, &["dns-add", &c, "-h", &fqdn], &[]);
        assert_dns_record(h1, &fqdn, &[ip]);
        ok(h1, &link, &["detach", &c], &[]);
        assert_no_dns_record(h1, &fqdn);
    }
    ok(lab.host("h1"), &link, &["stop"], &[]);
}

/// weave 205_dns_disabled: with `--no-dns`, `dns-args` prints nothing.
#[test]
fn weave_205_dns_disabled() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w205", &["h1"]);
    let h1 = lab.host("h1");
    ok(h1, &link, &["launch", "--proxy=false", "--no-dns"], &[]);
    assert_eq!(ok(h1, &link, &["dns-args"], &[]), "");
    let lookup = weave(h1, &link, &["dns-lookup", "x"], &[]);
    assert!(!lookup.status.success(), "dns-lookup with DNS off");
    ok(h1, &link, &["stop"], &[]);
}

/// weave 210_dns_cross_hosts_3: names registered on every host are
/// answered everywhere with every address; removed (weave: the containers
/// killed) they go everywhere, and come back, five times; more addresses
/// for one name add up.
#[test]
fn weave_210_dns_cross_hosts() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w210", &["h1", "h2", "h3"]);
    let all: Vec<String> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| format!("{}", lab.host(h).addr()))
        .collect();
    for h in ["h1", "h2", "h3"] {
        let peers: Vec<&str> = all.iter().map(String::as_str).collect();
        launch(
            &lab,
            &link,
            h,
            &[&["--ipalloc-range", "10.2.4.0/24"][..], &peers].concat(),
        );
    }
    let (c2, c2_ip) = container(&mut lab, &link, "h2", "c2", Some("10.2.3.34/24"));
    let c2 = format!("netns:{c2}");
    ok(
        lab.host("h2"),
        &link,
        &["dns-add", &c2, "-h", "seetwo.weave.local"],
        &[],
    );
    assert_dns_record(lab.host("h1"), "seetwo.weave.local", &[&c2_ip]);

    let mut foo = Vec::new();
    for (i, h) in ["h1", "h2", "h3"].into_iter().enumerate() {
        let (ns, ip) = container(&mut lab, &link, h, &format!("foo{i}"), None);
        foo.push((h, format!("netns:{ns}"), ip));
    }
    let foo_ips: Vec<&str> = foo.iter().map(|(_, _, ip)| ip.as_str()).collect();
    for _ in 0..5 {
        for (h, c, _) in &foo {
            ok(
                lab.host(h),
                &link,
                &["dns-add", c, "-h", "foo.weave.local"],
                &[],
            );
        }
        assert_dns_record(lab.host("h1"), "foo.weave.local", &foo_ips);
        for (h, c, _) in &foo {
            ok(
                lab.host(h),
                &link,
                &["dns-remove", c, "-h", "foo.weave.local"],
                &[],
            );
        }
        assert_no_dns_record(lab.host("h1"), "foo.weave.local");
    }
    let h2 = lab.host("h2");
    for extra in ["10.2.3.35", "10.2.3.36"] {
        ok(
            h2,
            &link,
            &["dns-add", extra, &c2, "-h", "seetwo.weave.local"],
            &[],
        );
    }
    assert_dns_record(
        lab.host("h1"),
        "seetwo.weave.local",
        &[&c2_ip, "10.2.3.35", "10.2.3.36"],
    );
    for h in ["h1", "h2", "h3"] {
        ok(lab.host(h), &link, &["stop"], &[]);
    }
}

/// weave 220_dns_custom: `--dns-domain foo.bar.` and `foo.bar` alike.
#[test]
fn weave_220_dns_custom_domain() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w220", &["h1"]);
    for (i, domain) in ["foo.bar.", "foo.bar"].into_iter().enumerate() {
        launch(&lab, &link, "h1", &["--dns-domain", domain]);
        let (ns, ip) = container(
            &mut lab,
            &link,
            "h1",
            &format!("c2{i}"),
            Some("10.2.54.91/24"),
        );
        let h1 = lab.host("h1");
        let c = format!("netns:{ns}");
        ok(h1, &link, &["dns-add", &c, "-h", "seetwo.foo.bar"], &[]);
        assert_dns_record(h1, "seetwo.foo.bar", &[&ip]);
        ok(h1, &link, &["detach", &c], &[]);
        ok(h1, &link, &["stop"], &[]);
    }
}

/// weave 230_dns_unqualified: a single-label name is looked up in the
/// domain (`weave dns-lookup seeone`, and `dig seeone`).
#[test]
fn weave_230_dns_unqualified() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w230", &["h1"]);
    launch(&lab, &link, "h1", &[]);
    let (ns, c1_ip) = container(&mut lab, &link, "h1", "c1", Some("10.2.0.78/24"));
    let h1 = lab.host("h1");
    let c1 = format!("netns:{ns}");
    ok(
        h1,
        &link,
        &["dns-add", &c1, "-h", "seeone.weave.local"],
        &[],
    );
    assert_dns_record(h1, "seeone.weave.local", &[&c1_ip]);
    assert_eq!(ok(h1, &link, &["dns-lookup", "seeone"], &[]).trim(), c1_ip);
    ok(
        h1,
        &link,
        &["dns-add", &c1_ip, &c1, "-h", "mysql.weave.local"],
        &[],
    );
    assert_eq!(ok(h1, &link, &["dns-lookup", "mysql"], &[]).trim(), c1_ip);
    ok(h1, &link, &["stop"], &[]);
}

/// weave 240_dns_add_name: every form of `dns-add` / `dns-remove`.
#[test]
fn weave_240_dns_add_remove() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w240", &["h1"]);
    launch(&lab, &link, "h1", &[]);
    let (n1, c1_ip) = container(&mut lab, &link, "h1", "c1", Some("10.2.0.78/24"));
    let (n2, c2_ip) = container(&mut lab, &link, "h1", "c2", Some("10.2.0.34/24"));
    let h1 = lab.host("h1");
    let (c1, c2) = (format!("netns:{n1}"), format!("netns:{n2}"));
    let (name1, name2, name3) = (
        "seeone.weave.local",
        "seetwo.weave.local",
        "seethree.weave.local",
    );
    let weave_ok = |args: &[&str]| ok(h1, &link, args, &[]);
    weave_ok(&["dns-add", &c2_ip, &c2, "-h", name2]);
    assert_dns_record(h1, name2, &[&c2_ip]);
    weave_ok(&["dns-add", &c1_ip, &c1, "-h", name1]);
    weave_ok(&["dns-add", &c1, "-h", name3]);
    assert_eq!(a_records(h1, name1), [c1_ip.parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(a_records(h1, name3), [c1_ip.parse::<Ipv4Addr>().unwrap()]);
    weave_ok(&["dns-remove", &c1_ip, &c1, "-h", name1]);
    assert_no_dns_record(h1, name1);
    assert_eq!(a_records(h1, name3), [c1_ip.parse::<Ipv4Addr>().unwrap()]);
    weave_ok(&["dns-remove", &c1, "-h", name3]);
    assert_no_dns_record(h1, name3);
    let c3 = "10.2.0.12";
    weave_ok(&["dns-add", c3, "-h", name1]);
    assert_dns_record(h1, name1, &[c3]);
    weave_ok(&["dns-remove", c3, "-h", name1]);
    assert_no_dns_record(h1, name1);
    weave_ok(&["stop"]);
}

/// weave 245_dns_case_insensitive: names and PTR queries in any case;
/// names differing only in case are one name with both addresses.
#[test]
fn weave_245_dns_case_insensitive() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w245", &["h1"]);
    launch(&lab, &link, "h1", &[]);
    let h1 = lab.host("h1");
    ok(
        h1,
        &link,
        &["dns-add", "10.2.0.78", "-h", "seeone.weave.local"],
        &[],
    );
    for name in ["seeone", "SeeOne", "SEEONE"] {
        assert_dns_record(h1, &format!("{name}.weave.local"), &["10.2.0.78"]);
    }
    for ptr in ["78.0.2.10.in-addr.arpa", "78.0.2.10.IN-ADDR.ARPA"] {
        assert_eq!(
            dig(h1, &["+short", "-t", "PTR", ptr]).trim(),
            "seeone.weave.local."
        );
    }
    ok(
        h1,
        &link,
        &["dns-add", "10.2.0.79", "-h", "SeEtWo.weave.local"],
        &[],
    );
    ok(
        h1,
        &link,
        &["dns-add", "10.2.0.80", "-h", "seetwo.weave.local"],
        &[],
    );
    for name in ["seetwo", "SeeTwo", "SEETWO"] {
        assert_dns_record(
            h1,
            &format!("{name}.weave.local"),
            &["10.2.0.79", "10.2.0.80"],
        );
    }
    ok(h1, &link, &["stop"], &[]);
}

/// weave 250_dns_negative: another type of a known name is NOERROR (empty),
/// an unknown name in the domain NXDOMAIN. (weave's third query,
/// `xx.invalid`, needs a real upstream server: tests/dns.rs asks a dnsmasq
/// of its own for names outside the domain.)
#[test]
fn weave_250_dns_negative() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w250", &["h1"]);
    launch(&lab, &link, "h1", &[]);
    let h1 = lab.host("h1");
    ok(
        h1,
        &link,
        &["dns-add", "10.2.0.5", "-h", "c1.weave.local"],
        &[],
    );
    assert_dns_record(h1, "c1.weave.local", &["10.2.0.5"]);
    assert_eq!(rcode(h1, &["MX", "c1.weave.local"]), "NOERROR");
    assert_eq!(rcode(h1, &["A", "xx.weave.local"]), "NXDOMAIN");
    ok(h1, &link, &["stop"], &[]);
}

/// weave 295_dns_large_response: 50 addresses for one name all come back,
/// over UDP and TCP, with a 700-byte EDNS buffer too.
#[test]
fn weave_295_dns_large_response() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w295", &["h1"]);
    launch(&lab, &link, "h1", &[]);
    let (ns, _) = container(&mut lab, &link, "h1", "c0", Some("10.2.1.100/24"));
    let h1 = lab.host("h1");
    let mut args = vec!["dns-add".to_string()];
    args.extend((1..=50).map(|i| format!("10.2.1.{i}")));
    args.extend([
        format!("netns:{ns}"),
        "-h".into(),
        "seetwo.weave.local".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(h1, &link, &args, &[]);
    for opts in [
        &[][..],
        &["+tcp"],
        &["+bufsize=700"],
        &["+tcp", "+bufsize=700"],
    ] {
        let mut q = vec!["+short"];
        q.extend_from_slice(opts);
        q.extend(["seetwo.weave.local", "A"]);
        let answer = dig(h1, &q);
        let n = answer.lines().filter(|l| !l.starts_with(";;")).count();
        assert_eq!(n, 50, "dig {opts:?}:\n{answer}");
    }
    ok(h1, &link, &["stop"], &[]);
}
