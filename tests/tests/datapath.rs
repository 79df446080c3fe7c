//! Data-plane scenarios against the real `meshnet` binary: hosts are network
//! namespaces running their own router on a TEST-NET underlay, containers are
//! namespaces attached with `meshnet attach ADDR netns:NAME`. Traffic is real:
//! `ping`, TCP transfers whose SHA-256 (from `sha256sum`) is compared at both
//! ends, UDP multicast counted per receiver, and a `tcpdump` capture on the
//! underlay that proves what an eavesdropper can and cannot read.
//!
//! Sockets for a container are opened by threads that joined its namespace
//! (`setns`), so the test binary itself needs no helper program.
//!
//! Needs root, `ping`, `tcpdump`, `nft`, `sha256sum` and a built binary (see
//! `meshnet_tests::meshnet_bin`). Each scenario owns its lab, which removes its
//! namespaces and files even when an assertion fails.

#[path = "datapath/pmtu.rs"]
mod pmtu;
#[path = "datapath/rekey.rs"]
mod rekey;
#[path = "datapath/traffic.rs"]
mod traffic;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshnet_tests::links;
use meshnet_tests::status::ConnectionLine;
use meshnet_tests::view::peer_names;
use meshnet_tests::{
    Host, TestLab, control_addr, lab, lab_on_one_segment, launch, meshnet_ok, require_root,
    status_connections, try_report, wait_for,
};
use traffic::*;

/// Bound on a small mesh converging and choosing its overlays.
const CONVERGE: Duration = Duration::from_secs(60);
/// The "200 MB TCP transfer".
const BIG_TRANSFER: u64 = 200 * 1_000_000;
/// Subnet the explicitly addressed containers live in (outside the IPAM range).
const OVERLAY_NET: &str = "10.2.1";
/// Password of the encrypted scenarios.
const PASSWORD: &str = "correct horse battery staple";
/// The sleeve's UDP port (its data and heartbeats).
const SLEEVE_PORT: u16 = 6783;
/// fastdp's VXLAN port.
const VXLAN_PORT: u16 = 6784;
/// Multicast group and port of the broadcast scenario.
const MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
const MCAST_PORT: u16 = 5000;
/// How long the multicast scenario watches for duplicates after the last datagram.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(3);

/// How the routers of a scenario are launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fastdp,
    Sleeve,
    EncryptedSleeve,
}

impl Mode {
    fn launch_args(self) -> Vec<&'static str> {
        match self {
            Mode::Fastdp => vec![],
            Mode::Sleeve => vec!["--no-fastdp"],
            Mode::EncryptedSleeve => vec!["--password", PASSWORD],
        }
    }

    fn overlay(self) -> &'static str {
        match self {
            Mode::Fastdp => "fastdp",
            Mode::Sleeve | Mode::EncryptedSleeve => "sleeve",
        }
    }
}

// ---------------------------------------------------------------- helpers --

/// Creates container `name` on `host` and attaches it with `addr` (or IPAM's
/// `net:default` when `None`); returns it with the address `attach` printed.
fn attached(lab: &mut TestLab, host: &str, name: &str, addr: Option<&str>) -> Container {
    let netns = lab
        .add_container(host, name)
        .unwrap_or_else(|e| panic!("adding container {name} on {host}: {e:#}"));
    let target = format!("netns:{netns}");
    let mut args = vec!["attach"];
    args.extend(addr);
    args.push(&target);
    let out = meshnet_ok(lab.host(host), &args);
    let ip = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("attach of {name} printed {out:?}, not one address"));
    Container { netns, ip }
}

/// Waits until `host` knows `peers` peers (itself included).
fn wait_for_peers(host: &Host, peers: usize) {
    wait_for(
        &format!("{} to know {peers} peers", host.name()),
        CONVERGE,
        || {
            let r = try_report(host).map_err(|e| e.to_string())?;
            let known = peer_names(&r).len();
            if known == peers {
                Ok(())
            } else {
                Err(format!("{known} peers"))
            }
        },
    );
}

/// Waits until `host` has exactly `n` established connections, each
/// satisfying `ok`; returns them.
fn wait_for_connections(
    host: &Host,
    n: usize,
    what: &str,
    ok: impl Fn(&ConnectionLine) -> bool,
) -> Vec<ConnectionLine> {
    wait_for(
        &format!("{} to show {n} established connections {what}", host.name()),
        CONVERGE,
        || {
            let lines = status_connections(host);
            let est: Vec<ConnectionLine> = lines
                .iter()
                .filter(|l| l.state == "established")
                .cloned()
                .collect();
            if est.len() == n && est.iter().all(&ok) {
                Ok(est)
            } else {
                Err(lines)
            }
        },
    )
}

/// Waits until every established connection of `host` (there are `n`) is on
/// `mode`'s overlay, with the encryption column `mode` implies.
fn wait_for_overlay(host: &Host, n: usize, mode: Mode) -> Vec<ConnectionLine> {
    let encryption = (mode == Mode::EncryptedSleeve).then(|| "encrypted".to_owned());
    wait_for_connections(host, n, &format!("on {}", mode.overlay()), |l| {
        l.overlay.as_deref() == Some(mode.overlay()) && l.encryption == encryption
    })
}

// -------------------------------------------------------------- scenarios --

/// Two hosts, two containers each: overlay shown in status, pings between
/// every pair across hosts, a 200 MB transfer with matching SHA-256, and the
/// underlay capture that shows (or, encrypted, never shows) a marker.
fn two_hosts_two_containers(tag: &str, mode: Mode) {
    require_root();
    let mut lab = lab_on_one_segment(tag, &["h1", "h2"]);
    let args = mode.launch_args();
    launch(lab.host("h1"), &args);
    let mut args2 = args.clone();
    let h1_addr = control_addr(lab.host("h1"));
    args2.push(&h1_addr);
    launch(lab.host("h2"), &args2);

    let a1 = attached(&mut lab, "h1", "a1", Some(&format!("{OVERLAY_NET}.11/24")));
    let a2 = attached(&mut lab, "h1", "a2", Some(&format!("{OVERLAY_NET}.12/24")));
    let b1 = attached(&mut lab, "h2", "b1", Some(&format!("{OVERLAY_NET}.21/24")));
    let b2 = attached(&mut lab, "h2", "b2", Some(&format!("{OVERLAY_NET}.22/24")));

    for host in ["h1", "h2"] {
        wait_for_overlay(lab.host(host), 1, mode);
        if mode == Mode::EncryptedSleeve {
            // Plaintext VXLAN must never carry an encrypted mesh's traffic,
            // and status says that this is why the link is on the sleeve.
            wait_for_connections(lab.host(host), 1, "saying encryption is required", |l| {
                l.fallback_reason.as_deref() == Some("fastdp: encryption required")
            });
        }
    }

    for (from, to) in [(&a1, &b1), (&a1, &b2), (&a2, &b1), (&a2, &b2), (&b2, &a1)] {
        assert_pings(from, to);
    }
    // Same-host traffic stays on the bridge but must work too.
    assert_pings(&a1, &a2);

    assert_tcp_transfer(&a1, &b1, BIG_TRANSFER);

    let capture = Capture::start(lab.host("h1"), lab.dir());
    let marker = unique_marker();
    send_marker(&a2, &b2, &marker);
    let pcap = capture.finish();
    // The tunnel port the marker must have crossed (VXLAN or the sleeve)
    // and the one it must not have.
    let (data_port, other_port) = match mode {
        Mode::Fastdp => (VXLAN_PORT, SLEEVE_PORT),
        Mode::Sleeve | Mode::EncryptedSleeve => (SLEEVE_PORT, VXLAN_PORT),
    };
    let on_data = udp_packets_to_with(&pcap, data_port, marker.as_bytes());
    let on_other = udp_packets_to_with(&pcap, other_port, marker.as_bytes());
    match mode {
        Mode::EncryptedSleeve => {
            assert!(
                !contains(&pcap, marker.as_bytes()),
                "the marker appears in clear on the underlay of an encrypted mesh"
            );
            // The marker arrived (send_marker checked), and not on VXLAN:
            // VXLAN carried nothing at all, so the sleeve carried it.
            let vxlan = udp_payloads_to(&pcap, VXLAN_PORT).len();
            assert_eq!(
                vxlan, 0,
                "an encrypted mesh sent {vxlan} packets on VXLAN (UDP {VXLAN_PORT})"
            );
            let sleeve = udp_payloads_to(&pcap, SLEEVE_PORT).len();
            assert!(
                sleeve > 0,
                "no sleeve packet in the capture: it proves nothing"
            );
            eprintln!(
                "encrypted: marker absent from {sleeve} captured sleeve packets, none on VXLAN"
            );
        }
        Mode::Fastdp | Mode::Sleeve => {
            assert!(
                on_data > 0,
                "the marker is in no packet to UDP {data_port} ({} such packets, {} bytes \
                 captured), so the {} datapath did not carry it",
                udp_payloads_to(&pcap, data_port).len(),
                pcap.len(),
                mode.overlay()
            );
            assert_eq!(
                on_other,
                0,
                "the marker went over UDP {other_port} too, not only over {}",
                mode.overlay()
            );
            eprintln!(
                "{}: marker in {on_data} packets to UDP {data_port}",
                mode.overlay()
            );
        }
    }
}

#[test]
fn fastdp_two_hosts_ping_and_200mb_transfer() {
    two_hosts_two_containers("dpfast", Mode::Fastdp);
}

#[test]
fn sleeve_two_hosts_ping_and_200mb_transfer_marker_visible() {
    two_hosts_two_containers("dpsleeve", Mode::Sleeve);
}

#[test]
fn encrypted_sleeve_two_hosts_transfer_and_marker_never_in_clear() {
    two_hosts_two_containers("dpcrypt", Mode::EncryptedSleeve);
}

#[test]
fn three_hosts_on_two_segments_relay_through_the_middle() {
    require_root();
    let mut lab = lab("dprelay");
    let s1 = lab.add_segment("192.0.2.0/24").expect("segment 1");
    let s2 = lab.add_segment("198.51.100.0/24").expect("segment 2");
    let h3_addr = Ipv4Addr::new(198, 51, 100, 3);
    lab.add_host("h1", &[(s1, Ipv4Addr::new(192, 0, 2, 1))])
        .expect("h1");
    lab.add_host(
        "h2",
        &[
            (s1, Ipv4Addr::new(192, 0, 2, 2)),
            (s2, Ipv4Addr::new(198, 51, 100, 2)),
        ],
    )
    .expect("h2");
    lab.add_host("h3", &[(s2, h3_addr)]).expect("h3");

    // The premise: h1 has no underlay path to h3.
    let out = lab
        .host("h1")
        .exec(&["ping", "-n", "-c", "1", "-W", "1", &h3_addr.to_string()])
        .expect("ping");
    assert!(!out.status.success(), "h1 reaches h3 directly");

    launch(lab.host("h1"), &["--nickname", "h1"]);
    launch(lab.host("h2"), &["--nickname", "h2", "192.0.2.1:6783"]);
    launch(lab.host("h3"), &["--nickname", "h3", "198.51.100.2:6783"]);
    for host in ["h1", "h2", "h3"] {
        wait_for_peers(lab.host(host), 3);
    }
    // Steady state first: each direct link settles on fastdp (a frame in
    // flight while a link switches overlay may be lost; the fallback
    // scenario covers switching under a TCP stream).
    for (host, links) in [("h1", 1), ("h2", 2), ("h3", 1)] {
        wait_for_overlay(lab.host(host), links, Mode::Fastdp);
    }

    let c1 = attached(&mut lab, "h1", "c1", Some(&format!("{OVERLAY_NET}.1/24")));
    let c3 = attached(&mut lab, "h3", "c3", Some(&format!("{OVERLAY_NET}.3/24")));
    assert_pings(&c1, &c3);
    assert_pings(&c3, &c1);
    assert_tcp_transfer(&c1, &c3, 50 * 1_000_000);
    assert_tcp_transfer(&c3, &c1, 10 * 1_000_000);
}

#[test]
fn arp_resolves_across_hosts_and_multicast_arrives_once_per_host() {
    require_root();
    let mut lab = lab_on_one_segment("dpbcast", &["h1", "h2", "h3"]);
    launch(lab.host("h1"), &["--nickname", "h1"]);
    let h1_addr = control_addr(lab.host("h1"));
    launch(lab.host("h2"), &["--nickname", "h2", &h1_addr]);
    launch(lab.host("h3"), &["--nickname", "h3", &h1_addr]);
    for host in ["h1", "h2", "h3"] {
        wait_for_overlay(lab.host(host), 2, Mode::Fastdp);
    }
    let c1 = attached(&mut lab, "h1", "c1", Some(&format!("{OVERLAY_NET}.1/24")));
    let c2 = attached(&mut lab, "h2", "c2", Some(&format!("{OVERLAY_NET}.2/24")));
    let c3 = attached(&mut lab, "h3", "c3", Some(&format!("{OVERLAY_NET}.3/24")));

    // ARP: with c1's neighbour table flushed, a ping must resolve c2's MAC
    // (an ARP broadcast crossing the mesh) to the MAC c2's ethwe really has.
    let flush = ns_exec(&c1.netns, &["ip", "neigh", "flush", "all"]);
    assert!(flush.status.success(), "{flush:?}");
    assert_pings(&c1, &c2);
    let mac_of = |c: &Container| {
        let out = ns_exec(&c.netns, &["cat", "/sys/class/net/ethwe/address"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let neigh = ns_exec(&c1.netns, &["ip", "neigh", "show", &c2.ip.to_string()]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    assert!(
        neigh.contains(&format!("lladdr {}", mac_of(&c2))),
        "c1 resolved {} as {neigh:?}, c2's MAC is {}",
        c2.ip,
        mac_of(&c2)
    );

    // Multicast: listeners in c2 and c3 join the group on ethwe. Warm-up
    // datagrams go out until both have heard one (joins propagate), then
    // numbered ones until both have heard one of those; no datagram may
    // arrive twice anywhere.
    let stop = Arc::new(AtomicBool::new(false));
    let heard: Vec<Arc<Mutex<Vec<String>>>> = (0..2).map(|_| Arc::default()).collect();
    let listeners: Vec<JoinHandle<()>> = [&c2, &c3]
        .into_iter()
        .zip(&heard)
        .map(|(c, heard)| {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (stop, heard, ip) = (Arc::clone(&stop), Arc::clone(heard), c.ip);
            let handle = spawn_in(&c.netns, move || {
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, MCAST_PORT)).expect("bind");
                sock.join_multicast_v4(&MCAST_GROUP, &ip)
                    .expect("join group");
                sock.set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("timeout");
                ready_tx.send(()).expect("ready");
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        heard.lock().expect("heard").push(text);
                    }
                }
            });
            ready_rx.recv().expect("listener ready");
            handle
        })
        .collect();
    let c1_ip = c1.ip;
    let send = move |sock: &UdpSocket, text: &str| {
        sock.send_to(text.as_bytes(), (MCAST_GROUP, MCAST_PORT))
            .expect("send multicast");
    };
    let heard_sender = heard.clone();
    join(spawn_in(&c1.netns, move || {
        let sock = UdpSocket::bind((c1_ip, 0)).expect("bind");
        // The 224.0.0.0/4 route `attach` installs sends the group out of ethwe.
        let all_heard = || {
            heard_sender
                .iter()
                .all(|h| !h.lock().expect("heard").is_empty())
        };
        let deadline = Instant::now() + FIRST_PING;
        let mut seq = 0;
        while !all_heard() {
            assert!(
                Instant::now() < deadline,
                "no multicast warm-up datagram arrived everywhere"
            );
            send(&sock, &format!("warmup-{seq}"));
            seq += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        // Counted datagrams, each with its own number, until both
        // listeners heard one (a datagram lost on a loaded machine is
        // retried, never a failure).
        let deadline = Instant::now() + FIRST_PING;
        let all_counted = || {
            heard_sender.iter().all(|h| {
                h.lock()
                    .expect("heard")
                    .iter()
                    .any(|t| t.starts_with("counted-"))
            })
        };
        let mut k = 0;
        while !all_counted() {
            assert!(
                Instant::now() < deadline,
                "no counted datagram arrived everywhere"
            );
            send(&sock, &format!("counted-{k}"));
            k += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
    }));
    // A window for a duplicate of any datagram to show up (what is checked
    // here is an absence, so a fixed window is the check).
    std::thread::sleep(DUPLICATE_WINDOW);
    stop.store(true, Ordering::Relaxed);
    for handle in listeners {
        join(handle);
    }
    for (who, heard) in ["c2 on h2", "c3 on h3"].into_iter().zip(&heard) {
        let heard = heard.lock().expect("heard");
        let counted = heard.iter().filter(|t| t.starts_with("counted-")).count();
        assert!(counted >= 1, "{who} heard no counted datagram: {heard:?}");
        let mut distinct: Vec<&String> = heard.iter().collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            heard.len(),
            distinct.len(),
            "{who} received a datagram more than once: {heard:?}"
        );
    }
}

/// The nft table the fallback scenario adds in one host.
const DROP_TABLE: &str = "dptest_drop";

fn nft(host: &Host, args: &[&str]) {
    let mut argv = vec!["nft"];
    argv.extend(args);
    let out = host.exec(&argv).expect("running nft");
    assert!(
        out.status.success(),
        "nft {} on {}: {}",
        args.join(" "),
        host.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `progress` grows by at least `more` bytes.
fn wait_for_progress(progress: &AtomicU64, more: u64, what: &str) {
    let start = progress.load(Ordering::Relaxed);
    wait_for(what, STALL, || {
        let now = progress.load(Ordering::Relaxed);
        (now >= start + more).then_some(()).ok_or(now - start)
    });
}

#[test]
fn fastdp_falls_back_to_sleeve_when_vxlan_is_dropped_and_returns() {
    require_root();
    let mut lab = lab_on_one_segment("dpfallbk", &["h1", "h2"]);
    launch(lab.host("h1"), &["--nickname", "h1"]);
    let h1_addr = control_addr(lab.host("h1"));
    launch(lab.host("h2"), &["--nickname", "h2", &h1_addr]);
    for host in ["h1", "h2"] {
        wait_for_overlay(lab.host(host), 1, Mode::Fastdp);
    }
    let c1 = attached(&mut lab, "h1", "c1", Some(&format!("{OVERLAY_NET}.1/24")));
    let c2 = attached(&mut lab, "h2", "c2", Some(&format!("{OVERLAY_NET}.2/24")));
    assert_pings(&c1, &c2);

    // A paced stream (about 6 MB/s) that runs through all three phases.
    let seed = 0x5eed_fa11;
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = start_receiver(&c2, Arc::clone(&progress));
    let sender = start_sender(
        &c1,
        c2.ip,
        Amount::UntilStopped {
            stop: Arc::clone(&stop),
            pace: Duration::from_millis(10),
        },
        seed,
    );
    wait_for_progress(&progress, 2_000_000, "the stream to flow on fastdp");

    // Drop VXLAN (UDP 6784) arriving at h1: the heartbeat over it dies.
    let h1 = lab.host("h1");
    nft(h1, &["add", "table", "inet", DROP_TABLE]);
    nft(
        h1,
        &[
            "add",
            "chain",
            "inet",
            DROP_TABLE,
            "input",
            "{ type filter hook input priority -10 ; }",
        ],
    );
    nft(
        h1,
        &[
            "add", "rule", "inet", DROP_TABLE, "input", "udp", "dport", "6784", "drop",
        ],
    );
    let during = wait_for_connections(h1, 1, "on sleeve after a heartbeat timeout", |l| {
        l.overlay.as_deref() == Some("sleeve")
            && l.fallback_reason
                .as_deref()
                .is_some_and(|r| r == "fastdp: heartbeat timeout")
    });
    eprintln!("during the drop, h1 shows: {during:#?}");
    wait_for_overlay(lab.host("h2"), 1, Mode::Sleeve);
    wait_for_progress(&progress, 2_000_000, "the stream to flow on sleeve");

    nft(h1, &["delete", "table", "inet", DROP_TABLE]);
    for host in ["h1", "h2"] {
        wait_for_overlay(lab.host(host), 1, Mode::Fastdp);
    }
    wait_for_progress(&progress, 2_000_000, "the stream to flow on fastdp again");

    stop.store(true, Ordering::Relaxed);
    let sent = join(sender);
    let received = join(receiver);
    assert_eq!(
        sent, received,
        "the stream did not survive the fallback intact (seed {seed})"
    );
    eprintln!("stream survived fallback and return: {} bytes", sent.bytes);
}

// ----------------------------------------------------- attach/detach/ps --

/// Whether `netns` has an `ethwe`, and its IPv4 CIDRs.
fn ethwe(netns: &str) -> Option<Vec<String>> {
    let out = ns_exec(netns, &["ip", "-o", "-4", "addr", "show", "dev", "ethwe"]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .collect()
    })
}

/// `meshnet ps` lines of `host`: `<id> <mac> <cidr>...`, each checked.
fn ps(host: &Host) -> Vec<(String, String, Vec<String>)> {
    let text = meshnet_ok(host, &["ps"]);
    text.lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let id = w.next().unwrap_or_default().to_owned();
            let mac = w.next().unwrap_or_default().to_owned();
            let cidrs: Vec<String> = w.map(str::to_owned).collect();
            assert!(
                meshnet_tests::status::is_peer_name(&mac),
                "ps line {l:?}: {mac:?} is not a MAC"
            );
            for c in &cidrs {
                assert!(
                    c.split_once('/').is_some_and(|(a, p)| {
                        a.parse::<Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32)
                    }),
                    "ps line {l:?}: {c:?} is not a CIDR"
                );
            }
            (id, mac, cidrs)
        })
        .collect()
}

/// Runs `meshnet args` on `host` expecting failure: exit ≠ 0, a one-line
/// error that mentions `hint`, and the host's links unchanged.
fn assert_refused(host: &Host, args: &[&str], hint: &str) {
    let before = links(host);
    let out = host.meshnet(args).expect("running meshnet");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(
        !out.status.success(),
        "meshnet {} succeeded: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "meshnet {}: error is not one line: {stderr:?}",
        args.join(" ")
    );
    assert!(
        stderr.to_lowercase().contains(&hint.to_lowercase()),
        "meshnet {}: error {stderr:?} does not mention {hint:?}",
        args.join(" ")
    );
    eprintln!("refused as expected: meshnet {}: {stderr}", args.join(" "));
    assert_eq!(
        links(host),
        before,
        "meshnet {} left links behind",
        args.join(" ")
    );
}

#[test]
fn attach_detach_ps_expose_hide_with_good_and_bad_input_and_reset_cleans_up() {
    require_root();
    let mut lab = lab_on_one_segment("dpattach", &["h1"]);
    launch(
        lab.host("h1"),
        &["--nickname", "h1", "--ipalloc-init=consensus=1"],
    );
    let c1 = attached(&mut lab, "h1", "c1", None);
    let c2_ns = lab.add_container("h1", "c2").expect("c2");
    let h1 = lab.host("h1");
    let c1_arg = format!("netns:{}", c1.netns);
    let c2_arg = format!("netns:{c2_ns}");

    // Good: a second and third address; ps shows them in weave's format.
    meshnet_ok(h1, &["attach", "10.2.5.1/24", &c1_arg]);
    meshnet_ok(h1, &["attach", "ip:10.2.6.1/24", &c1_arg]);
    let lines = ps(h1);
    let line = lines
        .iter()
        .find(|(id, _, _)| *id == c1_arg)
        .unwrap_or_else(|| panic!("ps does not list {c1_arg}: {lines:?}"));
    let mac = ns_exec(&c1.netns, &["cat", "/sys/class/net/ethwe/address"]);
    assert_eq!(line.1, String::from_utf8_lossy(&mac.stdout).trim());
    let mut want_cidrs = ethwe(&c1.netns).expect("c1 has ethwe");
    let mut got_cidrs = line.2.clone();
    want_cidrs.sort();
    got_cidrs.sort();
    assert_eq!(got_cidrs, want_cidrs);
    assert_eq!(want_cidrs.len(), 3, "{want_cidrs:?}");
    assert!(
        want_cidrs
            .iter()
            .any(|c| c.starts_with(&format!("{}/", c1.ip)))
    );

    // Bad input: refused with a one-line error, nothing left behind.
    assert_refused(h1, &["attach", "10.2.1.300/24", &c2_arg], "10.2.1.300");
    assert_refused(
        h1,
        &["attach", "net:10.2.0.1/16", &c2_arg],
        "net:10.2.0.0/16",
    );
    assert_refused(
        h1,
        &["attach", "10.2.1.5/24", "no_such_container"],
        "no_such_container",
    );
    assert_refused(
        h1,
        &["attach", "10.2.1.5/24", "netns:mnl-no-such-netns"],
        "mnl-no-such-netns",
    );
    let taken = format!("{}/12", c1.ip);
    assert_refused(h1, &["attach", &taken, &c2_arg], &c1.ip.to_string());
    assert_eq!(ethwe(&c2_ns), None, "a refused attach left ethwe in c2");
    assert_refused(h1, &["detach", "10.9.9.9/24", &c1_arg], "none of those");

    // Detach one address keeps ethwe; detaching all removes it.
    meshnet_ok(h1, &["detach", "10.2.5.1/24", &c1_arg]);
    let left = ethwe(&c1.netns).expect("ethwe must survive detaching one address");
    assert!(
        !left.iter().any(|c| c == "10.2.5.1/24") && left.len() == 2,
        "{left:?}"
    );
    let veths_before = links(h1)
        .into_iter()
        .filter(|l| l.starts_with("vethwe"))
        .count();
    meshnet_ok(h1, &["detach", &c1_arg]);
    assert_eq!(
        ethwe(&c1.netns),
        None,
        "detach of all addresses leaves ethwe"
    );
    let veths_after = links(h1)
        .into_iter()
        .filter(|l| l.starts_with("vethwe"))
        .count();
    assert_eq!(veths_after + 1, veths_before, "the host side veth stays");
    assert!(
        !ps(h1).iter().any(|(id, _, _)| *id == c1_arg),
        "ps still lists a detached container"
    );

    // Expose: the host gets an overlay address and reaches a container, ps
    // lists it as weave:expose, hide removes it; bad input is refused.
    let c3 = attached(&mut lab, "h1", "c3", Some("10.2.7.1/24"));
    let h1 = lab.host("h1");
    let bridge_addrs = || {
        let out = h1
            .exec(&["ip", "-o", "-4", "addr", "show", "dev", "meshnet"])
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        meshnet_ok(h1, &["expose", "10.2.7.254/24"]).trim(),
        "10.2.7.254"
    );
    assert!(
        bridge_addrs().contains(&"10.2.7.254/24".to_owned()),
        "{:?}",
        bridge_addrs()
    );
    wait_for(
        "the host to reach c3 over its exposed address",
        FIRST_PING,
        || {
            let out = h1
                .exec(&["ping", "-n", "-c", "1", "-W", "1", &c3.ip.to_string()])
                .expect("ping");
            out.status.success().then_some(()).ok_or(out.status)
        },
    );
    let lines = ps(h1);
    assert!(
        lines
            .iter()
            .any(|(id, _, cidrs)| id == "weave:expose"
                && cidrs.contains(&"10.2.7.254/24".to_owned())),
        "ps does not list the exposed address: {lines:?}"
    );
    let tables = h1.exec(&["nft", "list", "tables"]).expect("nft");
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains("meshnet"),
        "expose (with masquerading) made no meshnet nftables table"
    );
    assert_refused(h1, &["expose", "10.2.7.300/24"], "10.2.7.300");
    assert_refused(h1, &["hide", "bogus"], "bogus");
    assert_eq!(
        meshnet_ok(h1, &["hide", "10.2.7.254/24"]).trim(),
        "10.2.7.254"
    );
    assert!(
        !bridge_addrs().contains(&"10.2.7.254/24".to_owned()),
        "{:?}",
        bridge_addrs()
    );
    // Exposed again, so reset has addresses and firewall rules to remove.
    meshnet_ok(h1, &["expose", "10.2.7.254/24"]);

    // Reset: no meshnet bridge, no vethwe*, no meshnet nftables table.
    meshnet_ok(h1, &["reset"]);
    let left: Vec<String> = links(h1)
        .into_iter()
        .filter(|l| l == "meshnet" || l.starts_with("vethwe"))
        .collect();
    assert!(left.is_empty(), "reset left links: {left:?}");
    let tables = h1.exec(&["nft", "list", "tables"]).expect("nft");
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains("meshnet"),
        "reset left nft tables: {tables}"
    );
    assert_eq!(ethwe(&c3.netns), None, "reset left ethwe in a container");
}
