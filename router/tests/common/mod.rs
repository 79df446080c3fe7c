//! Helpers shared by the router's real-kernel integration tests
//! (`datapath`, `expose`, `sleeve`; all need root).
//!
//! Every test builds its "hosts", "containers" and "outside" networks as
//! network namespaces named `mnt-<tag>-<pid>-<n>-<role>`, owned by a
//! [`Namespaces`] guard that deletes them on drop, also when an assertion
//! panics; the interfaces, bridges and nftables tables inside go with them.
//! Traffic stays inside those namespaces: overlay 10.32.0.0/12, underlays on
//! TEST-NET-1 192.0.2.0/24 and TEST-NET-2 198.51.100.0/24. There is no `ping`
//! binary on these machines, so [`ping`] sends one ICMP echo from a raw
//! socket opened inside the source namespace.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use meshnet_router::datapath::{self, Attached, IfIndex, Netlink, Netns};
use socket2::{Domain, Protocol, Socket, Type};

/// The bridge every test host uses (weave's name is `weave`; ours, `meshnet`).
pub const BRIDGE: &str = "meshnet";
/// The overlay MTU the tests attach containers with.
pub const MTU: u32 = 1376;

/// Owns the namespaces a test creates; deletes them on drop.
pub struct Namespaces {
    /// Short per-binary tag (`dp`, `ex`, `sl`) so parallel test binaries
    /// never pick the same name.
    tag: &'static str,
    names: Vec<String>,
}

impl Namespaces {
    /// A guard whose namespaces are named `mnt-<tag>-<pid>-<n>-<role>`.
    pub fn new(tag: &'static str) -> Self {
        Self {
            tag,
            names: Vec::new(),
        }
    }

    /// Creates a uniquely named namespace and opens it.
    pub fn add(&mut self, role: &str) -> Netns {
        // One counter for the whole test binary: tests run in parallel.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("mnt-{}-{}-{n}-{role}", self.tag, std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed (are we root?)");
        self.names.push(name.clone());
        Netns::named(&name).expect("open the namespace we just created")
    }

    /// The `ip netns` name of a namespace this guard created.
    pub fn name_of(&self, ns: &Netns) -> String {
        ns.label()
            .strip_prefix("netns:")
            .expect("a named namespace")
            .to_owned()
    }

    /// A name in our prefix that does not exist.
    pub fn missing_name(&self) -> String {
        format!("mnt-{}-{}-missing", self.tag, std::process::id())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR")
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test IP")
}

/// Joins namespaces `a` and `b` with a veth pair named `names`, addresses
/// them `a_cidr` / `b_cidr` and brings both ends up. Returns the two ends'
/// indexes, each in its own namespace.
pub async fn underlay(
    a: &Netns,
    b: &Netns,
    names: (&str, &str),
    a_cidr: &str,
    b_cidr: &str,
) -> (IfIndex, IfIndex) {
    let anl = Netlink::connect(a).await.unwrap();
    let bnl = Netlink::connect(b).await.unwrap();
    let (ua, ub) = anl.create_veth(names.0, names.1).await.unwrap();
    anl.set_netns(ub.index, b).await.unwrap();
    let ub = bnl.link(names.1).await.unwrap();
    anl.add_address(ua.index, net(a_cidr)).await.unwrap();
    bnl.add_address(ub.index, net(b_cidr)).await.unwrap();
    anl.set_up(ua.index).await.unwrap();
    bnl.set_up(ub.index).await.unwrap();
    (ua.index, ub.index)
}

/// The first underlay of a multi-host test: `mnt-ul0` 192.0.2.1/24 in `a`,
/// `mnt-ul1` 192.0.2.2/24 in `b` (see [`underlay`]).
pub async fn test_net_1_underlay(a: &Netns, b: &Netns) -> (IfIndex, IfIndex) {
    underlay(a, b, ("mnt-ul0", "mnt-ul1"), "192.0.2.1/24", "192.0.2.2/24").await
}

/// Gives host `h` the [`BRIDGE`] and attaches container `c` to it at `addr`
/// (with or without weave's multicast route). Returns the host's netlink
/// handle and the attachment.
pub async fn bridged_container(
    h: &Netns,
    c: &Netns,
    addr: &str,
    multicast_route: bool,
) -> (Netlink, Attached) {
    let nl = Netlink::connect(h).await.expect("netlink in host");
    nl.ensure_bridge(BRIDGE, MTU).await.expect("bridge");
    let attached = attach_at(h, c, addr, multicast_route).await;
    (nl, attached)
}

/// Attaches container `c` to host `h`'s existing [`BRIDGE`] at `addr`,
/// which must succeed.
pub async fn attach_at(h: &Netns, c: &Netns, addr: &str, multicast_route: bool) -> Attached {
    datapath::attach(h, c, BRIDGE, &[net(addr)], MTU, multicast_route)
        .await
        .unwrap_or_else(|e| panic!("attach {addr}: {e}"))
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ICMP echo request from inside `from` to `to` and waits up to
/// two seconds for the matching reply (`ping -c 1 -W 2`). Failing to send at
/// all (no route) is a test failure, not a lost ping.
pub async fn ping(from: &Netns, to: Ipv4Addr) -> bool {
    echo(from, to, false).await
}

/// [`ping`], but "no route to the destination" counts as a failed ping
/// (before `expose` and after `hide` the host has no route at all).
pub async fn ping_or_no_route(from: &Netns, to: Ipv4Addr) -> bool {
    echo(from, to, true).await
}

async fn echo(from: &Netns, to: Ipv4Addr, no_route_fails: bool) -> bool {
    static SEQ: AtomicUsize = AtomicUsize::new(1);
    let seq = (SEQ.fetch_add(1, Ordering::SeqCst) & 0xffff) as u16;
    // A fresh ICMP id per ping: conntrack keys ICMP by id, and a reused id
    // would ride on an earlier ping's NAT binding.
    let id = ((std::process::id() & 0xffff) as u16 ^ 0x5a5a).wrapping_add(seq);
    from.run("ping", move || -> std::io::Result<bool> {
        // A raw ICMP socket; std's UdpSocket only wraps the fd for its
        // plain send_to/recv/timeouts, which work on any datagram-like fd.
        let sock: UdpSocket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?.into();
        let mut req = vec![8u8, 0, 0, 0];
        req.extend_from_slice(&id.to_be_bytes());
        req.extend_from_slice(&seq.to_be_bytes());
        req.extend_from_slice(b"meshnet-router-test");
        let ck = icmp_checksum(&req);
        req[2..4].copy_from_slice(&ck.to_be_bytes());
        if let Err(e) = sock.send_to(&req, SocketAddrV4::new(to, 0)) {
            return match e.kind() {
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable
                    if no_route_fails =>
                {
                    Ok(false)
                }
                _ => Err(e),
            };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            let pkt = &buf[..n];
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if pkt.len() < ihl + 8 {
                continue;
            }
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let icmp = &pkt[ihl..];
            if icmp[0] == 0
                && src == to
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
    .expect("ping thread")
    .expect("ping socket")
}
