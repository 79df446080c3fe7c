//! The few kernel calls that are not netlink: AF_PACKET send, SIOCETHTOOL
//! and per-namespace sysctls.
//!
//! Every function here is blocking and acts on the namespace of the calling
//! thread, so callers run them through [`super::Netns::run`].

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::Mac;
use super::arp::{ETH_P_ARP, gratuitous_arp};

/// `SIOCETHTOOL` from `<linux/sockios.h>`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GTXCSUM`: get TX checksum offload.
const ETHTOOL_GTXCSUM: u32 = 0x16;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is checked and then owned.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one gratuitous ARP per address out of interface `ifindex`.
pub(crate) fn send_gratuitous_arps(ifindex: u32, mac: Mac, ips: &[Ipv4Addr]) -> io::Result<()> {
    if ips.is_empty() {
        return Ok(());
    }
    let proto = ETH_P_ARP.to_be();
    let sock = socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto))?;
    // SAFETY: sockaddr_ll is plain old data; all-zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::sa_family_t;
    addr.sll_protocol = proto;
    addr.sll_ifindex =
        i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for &ip in ips {
        let frame = gratuitous_arp(mac, ip);
        // SAFETY: `frame` and `addr` outlive the call; lengths match the buffers.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether TX checksum offload is on for `ifname` (`ethtool -k IF`).
pub(crate) fn tx_checksum(ifname: &str) -> io::Result<bool> {
    ethtool_value(ifname, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
}

/// One `struct ethtool_value` SIOCETHTOOL round trip; returns `data`.
fn ethtool_value(ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain old data; all-zeros is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: `ifr` points at `value`, both live across the call; for the
    // value commands used here the kernel reads/writes exactly a
    // `struct ethtool_value`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &raw mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Writes a sysctl under `/proc/sys/net/` in the calling thread's namespace.
pub(crate) fn write_net_sysctl(rel: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/net/{rel}"), value)
}

/// Reads a sysctl under `/proc/sys/net/` in the calling thread's namespace.
pub(crate) fn read_net_sysctl(rel: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(format!("/proc/sys/net/{rel}"))?
        .trim()
        .to_owned())
}
