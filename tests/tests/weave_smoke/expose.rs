//! weave 130_expose_2 in lab namespaces: `expose` / `hide` make overlay
//! subnets reachable from the host and back, idempotently, and with the
//! masquerade an outside peer reaches a container through a DNAT.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use meshnet_tests::{in_netns, join, lab_on_one_segment, require_root, spawn_in};

use super::router::{container, ping, wait_ping};
use super::{launch, ok, weave_link};

/// The port weave's test forwards.
const PORT: u16 = 5555;

/// A host reaches `ip` (or, with `!reach`, does not, three times in a row).
fn host_pings(host: &super::Host, ip: &str, reach: bool) {
    let once = || {
        host.exec(&["ping", "-c", "1", "-W", "1", ip])
            .expect("ping")
            .status
            .success()
    };
    if reach {
        meshnet_tests::wait_for(
            &format!("{} to reach {ip}", host.name()),
            super::CONVERGE,
            || once().then_some(()),
        );
    } else {
        for _ in 0..3 {
            assert!(!once(), "{} reaches {ip}", host.name());
        }
    }
}

/// weave 130_expose_2.
#[test]
fn weave_130_expose() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w130", &["h1", "h2"]);
    launch(lab.host("h1"), &link, &["--ipalloc-range", "10.2.3.0/24"]);
    let mut c = Vec::new();
    for (name, addr) in [
        ("c1", Some("10.2.1.34/24")),
        ("c2", Some("10.2.1.37/24")),
        ("c3", Some("10.2.2.34/24")),
        ("c4", Some("10.2.2.37/24")),
        ("c5", None),
        ("c6", None),
    ] {
        c.push(container(&mut lab, &link, "h1", name, addr));
    }
    let h1 = lab.host("h1");
    let (c1, c3, c5) = (&c[0].1, &c[2].1, &c[4].1);
    let connectivity = || {
        for (a, b) in [(0, 1), (2, 3), (4, 5)] {
            wait_ping(&c[a].0, &c[b].1, true);
        }
        for (a, b) in [(0, 2), (2, 4), (4, 0)] {
            assert!(!ping(&c[a].0, &c[b].1), "c{} reaches c{}", a + 1, b + 1);
        }
    };
    host_pings(h1, c3, false);
    host_pings(h1, c5, false);
    connectivity();

    let exp = "10.2.2.101/24";
    for _ in 0..2 {
        assert_eq!(ok(h1, &link, &["expose", exp], &[]).trim(), "10.2.2.101");
    }
    host_pings(h1, c1, false);
    host_pings(h1, c3, true);
    host_pings(h1, c5, false);
    for _ in 0..2 {
        ok(h1, &link, &["expose"], &[]);
    }
    host_pings(h1, c1, false);
    host_pings(h1, c3, true);
    host_pings(h1, c5, true);
    connectivity();

    for _ in 0..2 {
        ok(h1, &link, &["hide", exp], &[]);
    }
    host_pings(h1, c3, false);
    host_pings(h1, c5, true);
    for _ in 0..2 {
        ok(h1, &link, &["hide"], &[]);
    }
    host_pings(h1, c5, false);

    // From h2, through a DNAT on h1 to c3: the masquerade of `expose`
    // gives c3 a source it can answer.
    let c3_ip: Ipv4Addr = c3.parse().unwrap();
    let listener = join(spawn_in(&c[2].0, move || {
        TcpListener::bind(SocketAddrV4::new(c3_ip, PORT)).expect("listen in c3")
    }));
    ok(h1, &link, &["expose", exp], &[]);
    let rule = format!("tcp dport {PORT} dnat to {c3}:{PORT}");
    for cmd in [
        "add table ip w130".to_string(),
        "add chain ip w130 pre { type nat hook prerouting priority -100; }".to_string(),
        format!("add rule ip w130 pre {rule}"),
    ] {
        let out = h1.exec(&["nft", &cmd]).expect("nft");
        assert!(
            out.status.success(),
            "nft {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept in c3");
        let mut got = String::new();
        s.read_to_string(&mut got).expect("read");
        got
    });
    let target = SocketAddrV4::new(h1.addr(), PORT);
    in_netns(lab.host("h2"), move || {
        let mut s = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
            .expect("h2 connects through the DNAT");
        s.write_all(b"hello\n").expect("write");
    });
    assert_eq!(server.join().expect("server"), "hello\n");
    ok(h1, &link, &["hide"], &[]);
    ok(h1, &link, &["stop"], &[]);
}

/// weave 510_detach_hide_no_ipalloc: `detach` and `hide` in every form
/// answer within 10 s while IPAM waits for a quorum it never gets
/// (`consensus=2` with one peer). As in weave's script, only the time is
/// asserted (an address that is not there may be an error), and that the
/// first of each removes what is there.
#[test]
fn weave_510_detach_hide_no_ipalloc() {
    require_root();
    let (_dir, link) = weave_link();
    let mut lab = lab_on_one_segment("w510", &["h1"]);
    launch(
        lab.host("h1"),
        &link,
        &[
            "--ipalloc-range",
            "10.2.3.0/24",
            "--ipalloc-init",
            "consensus=2",
        ],
    );
    let (c1, _) = container(&mut lab, &link, "h1", "c1", Some("10.2.1.1/24"));
    let c1 = format!("netns:{c1}");
    let h1 = lab.host("h1");
    let within = |args: &[&str]| {
        let start = std::time::Instant::now();
        let out = super::weave(h1, &link, args, &[]);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "weave {args:?} took {:?}",
            start.elapsed()
        );
        out.status.success()
    };
    assert!(within(&["detach", "10.2.1.1/24", &c1]));
    within(&["detach", "net:10.2.3.0/24", &c1]);
    within(&["detach", &c1]);
    ok(h1, &link, &["expose", "10.2.1.2/24"], &[]);
    assert!(within(&["hide", "10.2.1.2/24"]));
    within(&["hide", "net:10.2.3.0/24"]);
    within(&["hide"]);
    ok(h1, &link, &["stop"], &[]);
}
