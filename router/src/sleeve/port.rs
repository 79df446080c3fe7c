//! The sleeve's kernel objects: the TAP device (opened inside the host namespace) and its
//! bridge port (enslaved, MTU, up, isolated), plus the UDP socket.
//!
//! The TAP port and the VXLAN port are both bridge-port `isolated`: the bridge never forwards
//! between two isolated ports, so a frame never goes VXLAN → TAP or TAP → VXLAN inside a host
//! (each remote peer is served by exactly one of the two paths).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use crate::datapath::{DatapathError, Netlink, Netns};

/// Socket buffer size asked for on the sleeve's UDP socket. Default buffers (208 KiB) overflow
/// within a millisecond at multi-Gb/s (BoringTun lost 36k datagrams in 5 s that way); 8 MiB
/// holds ~5 ms at 10 Gb/s. Set with the *FORCE variants (we are root) so `rmem_max` does not cap it.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Opens the TAP `name` with `mtu` in the calling thread's namespace, non-blocking; with
/// `offload`, frames carry a virtio-net header and may be TSO/USO super-frames.
pub fn open_tap(name: &str, mtu: u32, offload: bool) -> io::Result<SyncDevice> {
    let mtu = u16::try_from(mtu).map_err(|_| io::Error::other(format!("MTU {mtu} too large")))?;
    let dev = DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .mtu(mtu)
        .offload(offload)
        .build_sync()?;
    dev.set_nonblocking(true)?;
    Ok(dev)
}

/// Opens the sleeve UDP socket on `0.0.0.0:port` in the calling thread's namespace, with large
/// buffers; quinn-udp then turns on GRO and DF (IP_PMTUDISC_PROBE) and makes it non-blocking.
pub fn open_udp(port: u16) -> io::Result<(UdpSocket, quinn_udp::UdpSocketState)> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    force_buffer(&sock, libc::SO_RCVBUFFORCE, SOCKET_BUFFER)
        .or_else(|_| sock.set_recv_buffer_size(SOCKET_BUFFER))?;
    force_buffer(&sock, libc::SO_SNDBUFFORCE, SOCKET_BUFFER)
        .or_else(|_| sock.set_send_buffer_size(SOCKET_BUFFER))?;
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    let udp: UdpSocket = sock.into();
    let state = quinn_udp::UdpSocketState::new((&udp).into())?;
    Ok((udp, state))
}

fn force_buffer(sock: &Socket, opt: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams the kernel dropped on `sock` for lack of receive buffer (SO_MEMINFO drops).
pub fn socket_drops(sock: &UdpSocket) -> u64 {
    // SK_MEMINFO_DROPS is index 8 of the u32 array.
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r == 0 && len as usize >= std::mem::size_of_val(&info) {
        u64::from(info[8])
    } else {
        0
    }
}

/// Enslaves the TAP `tap` to `bridge`, sets its MTU, isolates the port and brings it up.
pub async fn attach_port(
    netns: &Netns,
    bridge: &str,
    tap: &str,
    mtu: u32,
) -> Result<(), DatapathError> {
    let nl = Netlink::connect(netns).await?;
    let br = nl.link(bridge).await?;
    let port = nl.link(tap).await?;
    nl.set_mtu(port.index, mtu).await?;
    nl.set_master(port.index, br.index).await?;
    nl.set_isolated(port.index, true).await?;
    nl.set_up(port.index).await?;
    Ok(())
}
