//! Path-MTU black hole (weave's test 105): the underlay between two hosts
//! silently drops mesh UDP packets longer than [`CLAMP_BYTES`], no ICMP. Both
//! datapaths must notice within seconds (fastdp by its full-size heartbeats,
//! the sleeve by its acknowledged PMTU probes), carry big pings and TCP over
//! the narrow path, and get the full MTU back once the path heals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use meshnet_tests::status::ConnectionLine;
use meshnet_tests::{Host, control_addr, lab_on_one_segment, launch, require_root, wait_for};

use super::traffic::{Container, assert_pings, assert_tcp_transfer, ns_exec, spawn_in};
use super::{Mode, OVERLAY_NET, attached, nft, wait_for_connections, wait_for_overlay};

/// Mesh UDP packets (IP length) longer than this are dropped by the underlay.
const CLAMP_BYTES: u32 = 700;
/// The overlay MTU a sleeve packet of at most [`CLAMP_BYTES`] can carry (no
/// encryption): IPv4 20 + UDP 8 + sleeve header 13 + inner header 13 +
/// Ethernet 14 of overhead.
const CLAMP_FITS_MTU: u32 = CLAMP_BYTES - 20 - 8 - 13 - 13 - 14;
/// The lowest MTU a search may settle on.
const PMTU_FLOOR: u32 = 552;
/// The routers' overlay MTU (the default).
const FULL_MTU: u32 = 1376;
/// Everything must work again within this long of the clamp.
const RECOVER: Duration = Duration::from_secs(60);
/// ICMP payload of the big ping: several fragments even at the full MTU.
const BIG_PING: &str = "10000";
/// The TCP transfer across the narrow path.
const TRANSFER: u64 = 2 * 1_000_000;
/// The nft table of the clamp, in each host.
const CLAMP_TABLE: &str = "dptest_pmtu";

/// Drops mesh UDP (sleeve 6783, VXLAN 6784) longer than [`CLAMP_BYTES`] in
/// and out of `host`, as weave's test 105 does.
fn clamp(host: &Host) {
    nft(host, &["add", "table", "inet", CLAMP_TABLE]);
    for hook in ["input", "output"] {
        nft(
            host,
            &[
                "add",
                "chain",
                "inet",
                CLAMP_TABLE,
                hook,
                &format!("{{ type filter hook {hook} priority -10 ; }}"),
            ],
        );
        nft(
            host,
            &[
                "add",
                "rule",
                "inet",
                CLAMP_TABLE,
                hook,
                "udp",
                "dport",
                "{ 6783, 6784 }",
                "meta",
                "length",
                ">",
                &CLAMP_BYTES.to_string(),
                "drop",
            ],
        );
    }
}

fn unclamp(host: &Host) {
    nft(host, &["delete", "table", "inet", CLAMP_TABLE]);
}

/// The `mtu=` attribute of a connection line.
fn mtu_of(l: &ConnectionLine) -> Option<u32> {
    l.info
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mtu="))
        .and_then(|v| v.parse().ok())
}

/// One ping of [`BIG_PING`] bytes (fragmented by the sender's stack).
fn big_ping(from: &Container, to: &Container) -> Result<(), String> {
    let out = ns_exec(
        &from.netns,
        &[
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "2",
            "-s",
            BIG_PING,
            &to.ip.to_string(),
        ],
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The MTU `from`'s stack reports for a DF ping to `to` that does not fit:
/// the sleeve's ICMP "fragmentation needed" names it (`Frag needed and DF
/// set (mtu = N)`), and once the kernel has cached it, ping refuses locally
/// (`message too long, mtu=N`).
fn df_ping_mtu(from: &Container, to: &Container) -> Result<u32, String> {
    let out = ns_exec(
        &from.netns,
        &[
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1200",
            &to.ip.to_string(),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mtu = text.split("mtu").skip(1).find_map(|rest| {
        let digits: String = rest
            .trim_start_matches([' ', '=', ':'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    });
    mtu.ok_or(text)
}

/// The router's `/metrics` text, read from its status port inside `host`.
pub fn metrics(host: &Host) -> String {
    let text = super::traffic::join(spawn_in(host.netns(), || {
        let mut s = TcpStream::connect(("127.0.0.1", 6782)).expect("connecting to the status port");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("sending the metrics request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("reading /metrics");
        body
    }));
    assert!(text.starts_with("HTTP/1.1 200"), "/metrics: {text}");
    text
}

/// The value of the metric line starting with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn pmtu_black_hole(tag: &str, mode: Mode) {
    require_root();
    let mut lab = lab_on_one_segment(tag, &["h1", "h2"]);
    let args = mode.launch_args();
    launch(lab.host("h1"), &args);
    let mut args2 = args.clone();
    let h1_addr = control_addr(lab.host("h1"));
    args2.push(&h1_addr);
    launch(lab.host("h2"), &args2);
    let c1 = attached(&mut lab, "h1", "c1", Some(&format!("{OVERLAY_NET}.1/24")));
    let c2 = attached(&mut lab, "h2", "c2", Some(&format!("{OVERLAY_NET}.2/24")));
    for host in ["h1", "h2"] {
        wait_for_connections(
            lab.host(host),
            1,
            &format!("on {} at mtu={FULL_MTU}", mode.overlay()),
            |l| l.overlay.as_deref() == Some(mode.overlay()) && mtu_of(l) == Some(FULL_MTU),
        );
    }
    assert_pings(&c1, &c2);
    wait_for("a big ping before the clamp", RECOVER, || {
        big_ping(&c1, &c2)
    });

    for host in ["h1", "h2"] {
        clamp(lab.host(host));
    }
    let clamped = Instant::now();
    for host in ["h1", "h2"] {
        let lines = wait_for_connections(
            lab.host(host),
            1,
            &format!("on sleeve with {PMTU_FLOOR} <= mtu <= {CLAMP_FITS_MTU}"),
            |l| {
                let reason_ok = match mode {
                    Mode::Fastdp => l
                        .fallback_reason
                        .as_deref()
                        .is_some_and(|r| r.contains("path MTU below 1376")),
                    _ => true,
                };
                l.overlay.as_deref() == Some("sleeve")
                    && mtu_of(l).is_some_and(|m| (PMTU_FLOOR..=CLAMP_FITS_MTU).contains(&m))
                    && reason_ok
            },
        );
        eprintln!("{host} under the clamp: {lines:#?}");
    }
    let left = RECOVER.saturating_sub(clamped.elapsed());
    // A DF packet too big for the path is answered with the MTU the sleeve found.
    let told = wait_for("a DF ping to be told the path MTU", left, || {
        df_ping_mtu(&c1, &c2)
    });
    assert!(
        (PMTU_FLOOR..=CLAMP_FITS_MTU).contains(&told),
        "a DF ping was told mtu {told}, not the path's ({PMTU_FLOOR}..={CLAMP_FITS_MTU})"
    );
    eprintln!("a DF ping across the clamp was told mtu={told}");
    wait_for("a 10000-byte ping across the clamp", left, || {
        big_ping(&c1, &c2)
    });
    wait_for("a 10000-byte ping back across the clamp", left, || {
        big_ping(&c2, &c1)
    });
    assert_tcp_transfer(&c1, &c2, TRANSFER);
    assert_tcp_transfer(&c2, &c1, TRANSFER);
    assert!(
        clamped.elapsed() <= RECOVER,
        "big pings and transfers took {:?} after the clamp (bound {RECOVER:?})",
        clamped.elapsed()
    );
    if mode == Mode::Fastdp {
        let m = metrics(lab.host("h1"));
        let falls = metric(&m, "meshnet_fastdp_fallbacks_total{reason=\"path_mtu\"} ");
        assert!(
            falls.is_some_and(|n| n >= 1.0),
            "no path-MTU fallback counted in /metrics:\n{m}"
        );
    }

    for host in ["h1", "h2"] {
        unclamp(lab.host(host));
    }
    for host in ["h1", "h2"] {
        let lines = wait_for_overlay(lab.host(host), 1, mode);
        let healed = wait_for_connections(
            lab.host(host),
            1,
            &format!("back on {} at mtu={FULL_MTU}", mode.overlay()),
            |l| l.overlay.as_deref() == Some(mode.overlay()) && mtu_of(l) == Some(FULL_MTU),
        );
        eprintln!("{host} healed: {lines:#?} {healed:#?}");
    }
    wait_for("a big ping after the path healed", RECOVER, || {
        big_ping(&c1, &c2)
    });
}

#[test]
fn fastdp_pmtu_black_hole_falls_back_to_sleeve_and_returns() {
    pmtu_black_hole("dppmtuf", Mode::Fastdp);
}

#[test]
fn sleeve_pmtu_black_hole_finds_the_path_mtu_and_regains_it() {
    pmtu_black_hole("dppmtus", Mode::Sleeve);
}
