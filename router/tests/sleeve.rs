//! Real-kernel tests of the sleeve datapath (needs root).
//!
//! Each test builds "hosts" and "containers" as network namespaces named
//! `mnt-sl-<pid>-<n>-<role>`, which the [`Namespaces`] guard deletes on drop, also when an
//! assertion panics (the TAPs, veths and bridges inside go with them). Hosts are joined by veth
//! underlays on TEST-NET-1 192.0.2.0/24 and TEST-NET-2 198.51.100.0/24; containers use
//! 10.32.0.0/12. One `Sleeve` runs per host, its TAP and UDP socket created inside the host
//! namespace. Hellos are exchanged directly, as the router would over TCP. The guard, the
//! underlay, the bridge set-up and [`ping`] live in [`common`].

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{MTU, Namespaces, bridged_container, ip, ping, test_net_1_underlay, underlay};
use meshnet_mesh::PeerName;
use meshnet_mesh::sleeve::{Forwarding, PeerPath};
use meshnet_router::datapath::{Netlink, Netns};
use meshnet_router::sleeve::{Sleeve, SleeveConfig, TAP_NAME, UDP_PORT};
use socket2::Socket;

fn peer(n: u64) -> PeerName {
    PeerName::new(0x0200_0000_0000 | n).expect("48-bit name")
}

/// A host with its bridge and one attached container at `addr`, and its sleeve.
async fn host(h: &Netns, c: &Netns, addr: &str, name: PeerName, encrypt: bool) -> Sleeve {
    bridged_container(h, c, addr, false).await;
    Sleeve::start(SleeveConfig {
        bridge: common::BRIDGE.into(),
        tap_name: TAP_NAME.into(),
        udp_port: UDP_PORT,
        mtu: MTU,
        encrypt,
        local: name,
        rekey_after: meshnet_mesh::sleeve::REKEY_AFTER_TIME,
        netns: Some(h.try_clone().unwrap()),
    })
    .await
    .expect("sleeve starts")
}

/// Each side makes a receive key for the other and the other installs it.
fn introduce(
    a: &mut Sleeve,
    a_name: PeerName,
    a_ip: &str,
    b: &mut Sleeve,
    b_name: PeerName,
    b_ip: &str,
) {
    let for_a = b.new_recv_key(a_name).unwrap();
    a.handle_hello(b_name, IpAddr::V4(ip(b_ip)), &for_a)
        .unwrap();
    let for_b = a.new_recv_key(b_name).unwrap();
    b.handle_hello(a_name, IpAddr::V4(ip(a_ip)), &for_b)
        .unwrap();
}

/// The snapshot for `local` given direct neighbours (with underlay IPs), unicast next hops and
/// broadcast next hops per source.
fn fwd(
    local: PeerName,
    direct: &[(PeerName, &str)],
    unicast: &[(PeerName, PeerName)],
    broadcast: &[(PeerName, Vec<PeerName>)],
) -> Forwarding {
    let mut peers = BTreeMap::new();
    for (p, a) in direct {
        peers.insert(
            *p,
            PeerPath {
                udp: Some(SocketAddr::new(IpAddr::V4(ip(a)), UDP_PORT)),
                fastdp: false,
            },
        );
    }
    for (d, _) in unicast {
        peers.entry(*d).or_default();
    }
    Forwarding {
        local,
        peers,
        unicast: unicast.iter().copied().collect(),
        broadcast: broadcast.iter().cloned().collect(),
    }
}

/// Pings until one answer or `tries` attempts (the first ones also resolve ARP and let
/// heartbeats settle).
async fn ping_eventually(from: &Netns, to: Ipv4Addr, tries: usize) -> bool {
    for _ in 0..tries {
        if ping(from, to).await {
            return true;
        }
    }
    false
}

/// Deterministic pseudo-random bytes (xorshift64*) so both ends can check the stream.
fn fill(seed: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        let v = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Sends `total` bytes over TCP from `client` to a server in `server` at `addr`:5000 and
/// returns (sha256 sent, sha256 received, seconds).
async fn tcp_transfer(
    client: &Netns,
    server: &Netns,
    addr: Ipv4Addr,
    total: usize,
) -> ([u8; 32], [u8; 32], f64) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = server.try_clone().unwrap();
    let srv = async move {
        server
            .run("tcp server", move || -> std::io::Result<[u8; 32]> {
                let l = TcpListener::bind((addr, 5000))?;
                let _ = ready_tx.send(());
                let (mut s, _) = l.accept()?;
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    ctx.update(&buf[..n]);
                }
                let mut out = [0u8; 32];
                out.copy_from_slice(ctx.finish().as_ref());
                Ok(out)
            })
            .await
    };
    let srv = tokio::spawn(srv);
    tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("server listening");
    let sent = client
        .run("tcp client", move || -> std::io::Result<([u8; 32], f64)> {
            let start = Instant::now();
            let mut s = TcpStream::connect_timeout(
                &SocketAddr::from((addr, 5000)),
                Duration::from_secs(5),
            )?;
            s.set_write_timeout(Some(Duration::from_secs(20)))?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut seed = 0x005e_ed0f_5ee1_u64;
            let mut buf = vec![0u8; 1 << 16];
            let mut left = total;
            while left > 0 {
                let n = left.min(buf.len());
                fill(&mut seed, &mut buf[..n]);
                ctx.update(&buf[..n]);
                s.write_all(&buf[..n])?;
                left -= n;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            // Wait for the server to close so the timing covers delivery.
            let mut one = [0u8; 1];
            let _ = s.read(&mut one);
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            Ok((out, start.elapsed().as_secs_f64()))
        })
        .await
        .unwrap()
        .expect("client transfer");
    let got = srv.await.unwrap().unwrap().expect("server transfer");
    (sent.0, got, sent.1)
}

/// What a running [`capture`] has seen so far.
#[derive(Debug, Default)]
struct CaptureProgress {
    /// The socket is bound: frames from now on are captured.
    listening: AtomicBool,
    /// Sleeve datagrams captured.
    sleeve_frames: AtomicUsize,
}

/// Captures frames on `ifname` in `ns` (AF_PACKET) until `stop` is set.
fn capture(
    ns: &Netns,
    ifname: &str,
    stop: Arc<AtomicBool>,
    progress: Arc<CaptureProgress>,
) -> tokio::task::JoinHandle<Vec<Vec<u8>>> {
    let ifname = ifname.to_owned();
    let ns = ns.try_clone().unwrap();
    tokio::spawn(async move {
        ns.run("capture", move || -> std::io::Result<Vec<Vec<u8>>> {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh socket we own.
            let sock = unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let cname = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: valid C string.
            let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = index as i32;
            // SAFETY: sll is a valid sockaddr_ll of the given size.
            let r = unsafe {
                libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            progress.listening.store(true, Ordering::SeqCst);
            let mut frames = Vec::new();
            let mut buf = [MaybeUninit::<u8>::uninit(); 65536];
            while !stop.load(Ordering::SeqCst) {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let frame: Vec<u8> = buf[..n]
                            .iter()
                            // SAFETY: recv initialised the first n bytes.
                            .map(|b| unsafe { b.assume_init() })
                            .collect();
                        if is_sleeve_udp(&frame) {
                            progress.sleeve_frames.fetch_add(1, Ordering::SeqCst);
                        }
                        frames.push(frame);
                    }
                    Err(_) => continue,
                }
            }
            Ok(frames)
        })
        .await
        .unwrap()
        .unwrap()
    })
}

/// Bound on [`wait_until`].
const WAIT_BOUND: Duration = Duration::from_secs(30);

/// Polls `f` every 10 ms until it holds; panics after [`WAIT_BOUND`].
async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT_BOUND;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_BOUND:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends UDP datagrams carrying `marker` from `from` to `to`:9999.
async fn send_marker(from: &Netns, to: Ipv4Addr, marker: &'static [u8]) {
    from.run("marker", move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..20 {
            s.send_to(marker, (to, 9999)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn is_sleeve_udp(f: &[u8]) -> bool {
    // Ethernet + IPv4 (no options on our underlay) + UDP dst port 6783.
    f.len() > 42 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f[36..38] == UDP_PORT.to_be_bytes()
}

/// Two hosts on one underlay (`mnt-ul0` 192.0.2.1/24 in h1, `mnt-ul1` 192.0.2.2/24 in h2;
/// both ends' MTU set to `underlay_mtu` if given), each with a container (10.32.0.1/12,
/// 10.32.0.2/12) and a running sleeve that has the other host as its direct neighbour.
struct Pair {
    h1: Netns,
    c1: Netns,
    c2: Netns,
    p2: PeerName,
    s1: Sleeve,
    s2: Sleeve,
}

async fn pair(ns: &mut Namespaces, underlay_mtu: Option<u32>, encrypt: bool) -> Pair {
    let (h1, h2) = (ns.add("h1"), ns.add("h2"));
    let (c1, c2) = (ns.add("c1"), ns.add("c2"));
    let (u1, u2) = test_net_1_underlay(&h1, &h2).await;
    if let Some(mtu) = underlay_mtu {
        for (h, l) in [(&h1, u1), (&h2, u2)] {
            let nl = Netlink::connect(h).await.unwrap();
            nl.set_mtu(l, mtu).await.unwrap();
        }
    }
    let (p1, p2) = (peer(1), peer(2));
    let mut s1 = host(&h1, &c1, "10.32.0.1/12", p1, encrypt).await;
    let mut s2 = host(&h2, &c2, "10.32.0.2/12", p2, encrypt).await;
    introduce(&mut s1, p1, "192.0.2.1", &mut s2, p2, "192.0.2.2");
    s1.set_forwarding(fwd(
        p1,
        &[(p2, "192.0.2.2")],
        &[(p2, p2)],
        &[(p1, vec![p2]), (p2, vec![])],
    ));
    s2.set_forwarding(fwd(
        p2,
        &[(p1, "192.0.2.1")],
        &[(p1, p1)],
        &[(p2, vec![p1]), (p1, vec![])],
    ));
    Pair {
        h1,
        c1,
        c2,
        p2,
        s1,
        s2,
    }
}

/// Polls `s`'s status of `p` every 100 ms, `tries` times, for the path MTU PMTU discovery
/// verified.
async fn verified_mtu(s: &Sleeve, p: PeerName, tries: usize) -> Option<u16> {
    let mut mtu = None;
    for _ in 0..tries {
        mtu = s.status()[&p].mtu;
        if mtu.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mtu
}

/// Two hosts; ping, a marker that must (encrypted) or must not (plain) be readable on the
/// underlay, and a 50 MB TCP transfer with matching checksums.
async fn two_hosts(encrypt: bool) {
    let mut ns = Namespaces::new("sl");
    let t = pair(&mut ns, None, encrypt).await;

    assert!(
        ping_eventually(&t.c1, ip("10.32.0.2"), 5).await,
        "c1 -> c2 over the sleeve"
    );
    assert!(
        ping(&t.c2, ip("10.32.0.1")).await,
        "c2 -> c1 over the sleeve"
    );

    // The marker on the underlay.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(CaptureProgress::default());
    let cap = capture(&t.h1, "mnt-ul0", stop.clone(), progress.clone());
    wait_until("the capture to listen", || {
        progress.listening.load(Ordering::SeqCst)
    })
    .await;
    const MARKER: &[u8] = b"MESHNET-SECRET-MARKER-7f3a9c";
    send_marker(&t.c1, ip("10.32.0.2"), MARKER).await;
    // Each of the 20 marker datagrams is one sleeve datagram.
    wait_until("20 sleeve datagrams in the capture", || {
        progress.sleeve_frames.load(Ordering::SeqCst) >= 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let frames = cap.await.unwrap();
    let sleeve_frames = frames.iter().filter(|f| is_sleeve_udp(f)).count();
    assert!(
        sleeve_frames >= 20,
        "captured {sleeve_frames} sleeve datagrams"
    );
    let seen = frames.iter().any(|f| contains(f, MARKER));
    assert_eq!(
        seen, !encrypt,
        "marker readable on the underlay: {seen} (encrypt={encrypt})"
    );

    // 50 MB of TCP.
    let total = 50 << 20;
    let (sent, got, secs) = tcp_transfer(&t.c1, &t.c2, ip("10.32.0.2"), total).await;
    assert_eq!(sent, got, "stream checksums");
    eprintln!(
        "sleeve (encrypt={encrypt}): 50 MiB in {secs:.2} s = {:.2} Gb/s (debug builds are slow)",
        (total as f64 * 8.0) / secs / 1e9
    );

    // PMTU discovery verifies the full MTU on this 1500-byte underlay.
    assert_eq!(
        verified_mtu(&t.s1, t.p2, 50).await,
        Some(MTU as u16),
        "verified path MTU"
    );
    let st1 = t.s1.status();
    let st = &st1[&t.p2];
    assert!(st.tx_packets > 1000 && st.rx_packets > 100, "{st:?}");
    assert!(st.healthy, "heartbeats acknowledged: {st:?}");
    let c = t.s1.counters();
    assert_eq!((c.auth, c.replay, c.malformed), (0, 0, 0), "{c:?}");
    // TSO on the TAP: the sender read far fewer (super-)frames than it sent packets.
    assert!(
        c.tap_rx * 2 < st.tx_packets,
        "offload inactive? {} TAP reads for {} packets",
        c.tap_rx,
        st.tx_packets
    );

    // Stopping removes the TAP.
    t.s1.stop();
    let nl = Netlink::connect(&t.h1).await.unwrap();
    assert!(
        nl.link_by_name(TAP_NAME).await.unwrap().is_none(),
        "TAP removed"
    );
    t.s2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_plain() {
    two_hosts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_encrypted() {
    two_hosts(true).await;
}

/// h1 – h2 – h3 on two underlay segments: c1 reaches c3 only through h2's relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_relay_through_the_middle() {
    let mut ns = Namespaces::new("sl");
    let (h1, h2, h3) = (ns.add("h1"), ns.add("h2"), ns.add("h3"));
    let (c1, c2, c3) = (ns.add("c1"), ns.add("c2"), ns.add("c3"));
    test_net_1_underlay(&h1, &h2).await;
    underlay(
        &h2,
        &h3,
        ("mnt-ul2", "mnt-ul3"),
        "198.51.100.2/24",
        "198.51.100.3/24",
    )
    .await;
    let (p1, p2, p3) = (peer(1), peer(2), peer(3));
    let mut s1 = host(&h1, &c1, "10.32.0.1/12", p1, true).await;
    let mut s2 = host(&h2, &c2, "10.32.0.2/12", p2, true).await;
    let mut s3 = host(&h3, &c3, "10.32.0.3/12", p3, true).await;
    introduce(&mut s1, p1, "192.0.2.1", &mut s2, p2, "192.0.2.2");
    introduce(&mut s2, p2, "198.51.100.2", &mut s3, p3, "198.51.100.3");
    s1.set_forwarding(fwd(
        p1,
        &[(p2, "192.0.2.2")],
        &[(p2, p2), (p3, p2)],
        &[(p1, vec![p2]), (p2, vec![]), (p3, vec![])],
    ));
    s2.set_forwarding(fwd(
        p2,
        &[(p1, "192.0.2.1"), (p3, "198.51.100.3")],
        &[(p1, p1), (p3, p3)],
        &[(p1, vec![p3]), (p2, vec![p1, p3]), (p3, vec![p1])],
    ));
    s3.set_forwarding(fwd(
        p3,
        &[(p2, "198.51.100.2")],
        &[(p2, p2), (p1, p2)],
        &[(p3, vec![p2]), (p2, vec![]), (p1, vec![])],
    ));
    // The premise: h1 has no underlay route to h3, so whatever reaches c3
    // from c1 went through h2.
    let no_route = h1
        .run("route", || {
            std::process::Command::new("ip")
                .args(["route", "get", "198.51.100.3"])
                .output()
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        !no_route.status.success(),
        "h1 routes to h3's underlay: {no_route:?}"
    );
    assert!(
        ping_eventually(&c1, ip("10.32.0.3"), 5).await,
        "c1 -> c3 via h2"
    );
    assert!(
        ping_eventually(&c3, ip("10.32.0.1"), 5).await,
        "c3 -> c1 via h2"
    );
    assert!(
        ping_eventually(&c1, ip("10.32.0.2"), 5).await,
        "c1 -> c2 directly"
    );
    // The relay carried the stream: h2 sent h1 (and got from h3) at least
    // one packet per MTU of the transfer, far beyond its heartbeats.
    let total = 5 << 20;
    let before = (s2.status()[&p1].tx_packets, s2.status()[&p3].rx_packets);
    let (sent, got, _) = tcp_transfer(&c3, &c1, ip("10.32.0.1"), total).await;
    assert_eq!(sent, got, "5 MiB through the relay");
    let after = (s2.status()[&p1].tx_packets, s2.status()[&p3].rx_packets);
    let at_least = (total / MTU as usize) as u64;
    assert!(
        after.0 - before.0 >= at_least && after.1 - before.1 >= at_least,
        "h2 relayed {} packets to h1 and took {} from h3 for a {total}-byte stream \
         (at least {at_least} each)",
        after.0 - before.0,
        after.1 - before.1
    );
    for s in [s1, s2, s3] {
        s.stop();
    }
}

/// An underlay with MTU 1200: probes of the full overlay MTU fail (EMSGSIZE locally, DF set)
/// and the search settles on the largest overlay MTU that fits, 1200 − 84 = 1116.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pmtu_follows_a_small_underlay() {
    let mut ns = Namespaces::new("sl");
    let t = pair(&mut ns, Some(1200), true).await;
    assert!(
        ping_eventually(&t.c1, ip("10.32.0.2"), 5).await,
        "small frames still pass"
    );
    assert_eq!(
        verified_mtu(&t.s1, t.p2, 100).await,
        Some(1116),
        "verified path MTU"
    );
    // Full-size TCP segments no longer fit: the sleeve segments TSO frames to the path MTU
    // and answers single oversized DF packets with ICMP frag-needed, so TCP still flows.
    let (sent, got, _) = tcp_transfer(&t.c1, &t.c2, ip("10.32.0.2"), 5 << 20).await;
    assert_eq!(sent, got, "5 MiB over the narrow path");
    t.s1.stop();
    t.s2.stop();
}

/// A re-key (a fresh receive key sent while the path works) changes the key only: the path
/// stays healthy with its verified MTU, traffic keeps flowing, and both ends count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_keeps_health_and_path_mtu() {
    let mut ns = Namespaces::new("sl");
    let t = pair(&mut ns, None, true).await;
    let p1 = peer(1);
    assert!(
        ping_eventually(&t.c1, ip("10.32.0.2"), 5).await,
        "c1 -> c2 over the sleeve"
    );
    assert_eq!(
        verified_mtu(&t.s1, t.p2, 50).await,
        Some(MTU as u16),
        "verified path MTU"
    );
    for round in 1..=3 {
        let hello = t.s2.new_recv_key(p1).unwrap();
        t.s1.handle_hello(t.p2, IpAddr::V4(ip("192.0.2.2")), &hello)
            .unwrap();
        let st = &t.s1.status()[&t.p2];
        assert_eq!(
            st.mtu,
            Some(MTU as u16),
            "re-key {round} reset the path MTU: {st:?}"
        );
        assert!(st.healthy, "re-key {round} reset health: {st:?}");
        assert!(
            ping(&t.c1, ip("10.32.0.2")).await,
            "c1 -> c2 after re-key {round}"
        );
        assert_eq!(t.s1.counters().rekeys_received, round);
        assert_eq!(t.s2.counters().rekeys_sent, round);
    }
    let c = t.s2.counters();
    assert_eq!((c.auth, c.replay, c.malformed), (0, 0, 0), "{c:?}");
}
