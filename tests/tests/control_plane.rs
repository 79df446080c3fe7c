//! Control-plane scenarios against the real `meshnet` binary: each host is a
//! network namespace running its own router, all on one TEST-NET segment.
//! They check what an operator sees (`launch` output, `status connections`,
//! `status peers`, `report`, the router log) rather than internals.
//!
//! Needs root and a built binary (`cargo build -p meshnet`; see
//! `meshnet_tests::meshnet_bin`). Each scenario owns its lab, which removes
//! its namespaces and files even when an assertion fails.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use meshnet_tests::status::ConnectionLine;
use meshnet_tests::view::{connection, connections_in, established_with, peer_names, peer_uid};
use meshnet_tests::{
    Host, TestLab, control_addr, lab_on_one_segment, launch, launch_with, report, require_root,
    router_cmdline, router_log, status_connections, status_peers, try_report, wait_for,
};

/// Bound on a small mesh converging (weave's first retry comes after 2 s).
const CONVERGE: Duration = Duration::from_secs(30);
/// Bound on a connection attempt failing and being reported.
const REPORTED: Duration = Duration::from_secs(30);

/// Words a refusal log line or status entry contains (any one of them).
const REFUSAL_WORDS: [&str; 6] = ["password", "handshake", "refus", "fail", "error", "reject"];

/// Launches h1, then h2 dialling h1, then h3 dialling h2; returns the peer
/// names in host order. Discovery must do the rest (h1 ↔ h3).
fn launch_chain(lab: &TestLab) -> [String; 3] {
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    let n1 = launch(h1, &["--nickname", "h1"]);
    let n2 = launch(h2, &chain_args("h2", h1));
    let n3 = launch(h3, &chain_args("h3", h2));
    [n1, n2, n3]
}

/// Arguments `h2`/`h3` are launched with in the chain (also used to relaunch).
fn chain_args(nickname: &str, dial: &Host) -> Vec<String> {
    vec![
        "--nickname".to_owned(),
        nickname.to_owned(),
        control_addr(dial),
    ]
}

/// Waits until `host` knows `peers` peers (itself included) and has
/// `established` established connections.
fn wait_for_mesh(host: &Host, peers: usize, established: usize) {
    wait_for(
        &format!(
            "{} to know {peers} peers over {established} established connections",
            host.name()
        ),
        CONVERGE,
        || {
            let r = try_report(host).map_err(|e| e.to_string())?;
            let (known, up) = (
                peer_names(&r).len(),
                connections_in(&r, "established").len(),
            );
            if known == peers && up == established {
                Ok(())
            } else {
                Err(format!(
                    "{known} peers, {up} established; Connections: {}",
                    r["Router"]["Connections"]
                ))
            }
        },
    );
}

/// The `status connections` line about `addr`, once it is in one of `states`.
fn wait_for_line(host: &Host, addr: &str, states: &[&str]) -> ConnectionLine {
    wait_for(
        &format!("{} to show {addr} as {}", host.name(), states.join("/")),
        REPORTED,
        || {
            let lines = status_connections(host);
            lines
                .iter()
                .find(|l| l.addr.to_string() == addr && states.contains(&l.state.as_str()))
                .cloned()
                .ok_or(lines)
        },
    )
}

#[test]
fn three_hosts_launched_as_a_chain_discover_each_other() {
    require_root();
    let lab = lab_on_one_segment("chain", &["h1", "h2", "h3"]);
    let names = launch_chain(&lab);
    let nicks = ["h1", "h2", "h3"];
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>().len(),
        3,
        "peer names collide: {names:?}"
    );

    for host in lab.hosts() {
        wait_for_mesh(host, 3, 2);
    }

    for (i, host) in lab.hosts().enumerate() {
        let lines = status_connections(host);
        let established: Vec<&ConnectionLine> =
            lines.iter().filter(|l| l.state == "established").collect();
        assert_eq!(established.len(), 2, "{}: {lines:#?}", host.name());
        let seen: BTreeSet<(String, String)> = established
            .iter()
            .map(|l| {
                (
                    l.peer_name.clone().unwrap_or_default(),
                    l.nickname.clone().unwrap_or_default(),
                )
            })
            .collect();
        let others: BTreeSet<(String, String)> = (0..3)
            .filter(|&j| j != i)
            .map(|j| (names[j].clone(), nicks[j].to_owned()))
            .collect();
        assert_eq!(
            seen,
            others,
            "{} is connected to the wrong peers",
            host.name()
        );
        assert!(
            lines.iter().all(|l| l.encryption.is_none()),
            "no password is set, so no encryption column: {lines:#?}"
        );

        let peers = status_peers(host);
        let listed: BTreeSet<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            listed,
            names.iter().map(String::as_str).collect(),
            "{}: {peers:#?}",
            host.name()
        );
        let me = peers
            .iter()
            .find(|p| p.name == names[i])
            .expect("own peer block");
        assert_eq!(me.nickname, nicks[i]);
        assert_eq!(me.connections.len(), 2, "{}: {peers:#?}", host.name());
        assert!(
            me.connections.iter().all(|c| c.established),
            "{}: {peers:#?}",
            host.name()
        );
    }
}

#[test]
fn a_router_killed_and_relaunched_keeps_its_name_and_rejoins() {
    require_root();
    let lab = lab_on_one_segment("restart", &["h1", "h2", "h3"]);
    let [_, n2, _] = launch_chain(&lab);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    for host in lab.hosts() {
        wait_for_mesh(host, 3, 2);
    }
    let old_uid = peer_uid(&report(h1), &n2).expect("h1 knows h2's UID");

    let old_pid = h2.router_pid().expect("h2 router pid");
    h2.kill_router(nix::sys::signal::Signal::SIGKILL as i32);
    assert!(
        !h2.router_running(),
        "h2's router {old_pid} survived SIGKILL"
    );

    let again = launch(h2, &chain_args("h2", h1));
    assert_eq!(again, n2, "a relaunched router must keep its peer name");
    assert_ne!(h2.router_pid(), Some(old_pid));

    for host in [h1, h3] {
        wait_for(
            &format!("{} to see h2 established again with a new UID", host.name()),
            CONVERGE,
            || {
                let r = try_report(host).map_err(|e| e.to_string())?;
                let uid = peer_uid(&r, &n2);
                if established_with(&r, &n2) && uid.as_ref().is_some_and(|u| *u != old_uid) {
                    Ok(())
                } else {
                    Err(format!(
                        "UID {uid:?} (was {old_uid}); Peers: {}",
                        r["Router"]["Peers"]
                    ))
                }
            },
        );
    }
    wait_for_mesh(h2, 3, 2);
}

#[test]
fn a_wrong_password_is_refused_and_the_right_one_connects() {
    require_root();
    let lab = lab_on_one_segment("password", &["h1", "h2", "h3"]);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    let h1_addr = control_addr(h1);
    let n1 = launch(h1, &["--password", "secret", "--nickname", "h1"]);
    let n2 = launch(h2, &["--password", "wrong", "--nickname", "h2", &h1_addr]);

    let refused = wait_for_line(h2, &h1_addr, &["failed", "retrying"]);
    let why = refused.info.to_lowercase();
    assert!(
        why.contains("password") || why.contains("handshake"),
        "h2's error should point at the password/handshake: {refused:?}"
    );
    let h2_ip = h2.addr().to_string();
    wait_for(
        "h1 to name the refused peer in its log or status",
        REPORTED,
        || {
            let log = router_log(h1);
            let status = h1
                .meshnet(&["status", "connections"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            let status = status.unwrap_or_default();
            // Not any mention of the address (an "accepted" line would do
            // that): one that says something went wrong with it.
            let names_refusal = |line: &&str| {
                let line = line.to_lowercase();
                line.contains(&h2_ip) && REFUSAL_WORDS.iter().any(|w| line.contains(w))
            };
            log.lines()
                .chain(status.lines())
                .find(names_refusal)
                .map(str::to_owned)
                .ok_or(status)
        },
    );

    let mut with_env = h3.command(&["launch", "--nickname", "h3", &h1_addr]);
    with_env.env("MESHNET_PASSWORD", "secret");
    let n3 = launch_with(h3, &mut with_env);
    wait_for_mesh(h3, 2, 1);
    wait_for("h1 to have h3 established", CONVERGE, || {
        established_with(&report(h1), &n3).then_some(())
    });
    let to_h1 = wait_for_line(h3, &h1_addr, &["established"]);
    assert_eq!(to_h1.encryption.as_deref(), Some("encrypted"), "{to_h1:?}");
    assert_eq!(to_h1.peer_name.as_deref(), Some(n1.as_str()));

    // h3's connection proves gossip flowed; h2 must still be a stranger.
    for (host, stranger) in [(h1, &n2), (h2, &n1), (h3, &n2)] {
        let known = report(host);
        assert!(
            !peer_names(&known).contains(&stranger.as_str()),
            "{} lists {stranger} although the passwords differ: {}",
            host.name(),
            known["Router"]["Peers"]
        );
    }
    for host in [h1, h2, h3] {
        let cmdline = router_cmdline(host);
        assert!(
            !cmdline.contains("secret") && !cmdline.contains("wrong"),
            "{}'s router has the password in its argv: {cmdline}",
            host.name()
        );
    }
}

#[test]
fn an_unreachable_target_shows_its_error() {
    require_root();
    let lab = lab_on_one_segment("target", &["h1"]);
    let h1 = lab.host("h1");
    // Nobody on the segment owns 192.0.2.99, so ARP fails and the dial errors.
    launch(h1, &["--nickname", "h1", "192.0.2.99"]);

    let line = wait_for_line(h1, "192.0.2.99:6783", &["failed", "retrying"]);
    assert!(line.outbound, "{line:?}");
    let r = report(h1);
    let entry = connection(&r, "192.0.2.99:6783").expect("report lists the target");
    assert!(
        matches!(entry["State"].as_str(), Some("failed" | "retrying")),
        "{entry}"
    );
    assert!(
        entry["Info"].as_str().is_some_and(|i| !i.is_empty()),
        "no error in {entry}"
    );
}

#[test]
fn a_weave_peer_is_told_which_protocol_it_speaks() {
    require_root();
    let lab = lab_on_one_segment("weave", &["h1", "h2"]);
    let (h1, h2) = (lab.host("h1"), lab.host("h2"));
    launch(h1, &["--nickname", "h1"]);

    // A weave 1..2 peer on h2 dials h1 and says hello the way weave does.
    let target: SocketAddr = control_addr(h1).parse().expect("socket address");
    let (reply, closed) = in_netns_exchange(h2, target, b"weave\x01\x02");
    assert!(
        reply.len() >= 7,
        "expected meshnet's 7-byte header, got {reply:?}"
    );
    assert_eq!(&reply[..5], b"weave", "reply {reply:?}");
    let (min, max) = (reply[5], reply[6]);
    assert!(
        min >= 3 && max >= min,
        "meshnet offers versions {min}..{max}, expected 3 and up"
    );
    assert!(
        closed,
        "h1 should close the connection after refusing, got {reply:?} and no EOF"
    );

    wait_for("h1 to log the refusal", REPORTED, || {
        router_log(h1)
            .lines()
            .find(|l| l.contains("speaks weave protocol 1..2"))
            .map(str::to_owned)
    });
}

/// From inside `host`, connects to `target`, writes `hello`, reads until the
/// peer closes (or 10 s pass). Returns what was read and whether it closed.
fn in_netns_exchange(host: &Host, target: SocketAddr, hello: &'static [u8]) -> (Vec<u8>, bool) {
    meshnet_tests::in_netns(host, move || {
        let timeout = Duration::from_secs(10);
        let mut stream = TcpStream::connect_timeout(&target, timeout).expect("connecting to h1");
        stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        stream.write_all(hello).expect("writing weave's header");
        let mut reply = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return (reply, true),
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                // A close with our bytes unread by the app may arrive as a reset.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return (reply, true),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return (reply, false);
                }
                Err(e) => panic!("reading from h1: {e}"),
            }
        }
    })
}
