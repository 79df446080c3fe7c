//! The two datapath loops: they move bytes between the TAP, the UDP socket and the sans-IO
//! [`meshnet_mesh::sleeve::Endpoint`], and do what its [`Output`]s say. Neither allocates per packet: frames are read
//! into a scratch buffer, copied once into a send batch and sealed there; received datagrams
//! are opened in place in the receive buffers.
//!
//! - `sleeve-tx`: reads up to [`BATCH_FRAMES`] frames from the TAP, splits TSO super-frames
//!   to the size the endpoint names, and appends the sealed packets the endpoint asks for to a
//!   batch that is sent as one UDP GSO `sendmsg` while consecutive packets go to the same
//!   neighbour with the same size (a TCP stream's data segments do). It also runs the
//!   endpoint's timers.
//! - `sleeve-rx`: `recvmmsg` with GRO through quinn-udp, hands each datagram to the endpoint,
//!   writes the frames it delivers into the TAP (TCP segments coalesced) and sends the relays
//!   and answers.
//!
//! Both wait in `poll(2)` with a [`POLL_MS`] timeout so a stop request is seen promptly.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use meshnet_mesh::sleeve::{Discard, Inner, Neighbour, Output};
use quinn_udp::{RecvMeta, Transmit};
use tracing::{debug, trace};

use super::gro::{Coalescer, FrameSink};
use super::offload::{Splitter, VNET_LEN};
use super::{Shared, bump};

/// Frames taken from the TAP per wake-up: enough to fill a GSO batch, few enough that timers
/// and the stop flag are looked at often.
const BATCH_FRAMES: usize = 128;
/// Longest a loop sleeps before looking at the stop flag and timers.
const POLL_MS: i32 = 100;
/// One packet slot: the largest sealed packet (MTU ≤ 1416 + Ethernet + headers + tag) fits.
const SLOT: usize = 2048;
/// Bytes per GSO send: the UDP payloads of one `sendmsg` must fit one 64 KiB IP datagram.
const GSO_BYTES: usize = 65_000;
/// Receive slots per `recvmmsg`; each holds one GRO-coalesced run of up to 64 KiB.
const RX_SLOTS: usize = 16;
const RX_SLOT: usize = 65_536;

fn bump_n(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counts what the endpoint dropped.
fn count(s: &Shared, why: Discard) {
    trace!(?why, "sleeve drops a packet");
    let c = &s.counters;
    bump(match why {
        Discard::Malformed => &c.malformed,
        Discard::UnknownKey => &c.unknown_key,
        Discard::Auth => &c.auth,
        Discard::Replay => &c.replay,
        Discard::NoPath => &c.no_path,
        Discard::Forward(_) | Discard::TooBig => &c.forward,
    });
}

/// Waits until `fd` is ready for `events` or `ms` pass; true when ready.
fn wait(fd: RawFd, events: libc::c_short, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0 && p.revents != 0
}

/// Sends one transmit, waiting (bounded by the stop flag) while the socket buffer is full:
/// backpressure to the TAP reader rather than drops.
fn send(
    s: &Shared,
    destination: SocketAddr,
    contents: &[u8],
    segment_size: Option<usize>,
) -> io::Result<()> {
    let t = Transmit {
        destination,
        ecn: None,
        contents,
        segment_size,
        src_ip: None,
    };
    loop {
        match s.udp_state.try_send((&s.udp).into(), &t) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if s.stop.load(Ordering::Relaxed) {
                    return Err(e);
                }
                wait(s.udp.as_raw_fd(), libc::POLLOUT, POLL_MS);
            }
            r => return r,
        }
    }
}

/// Consecutive sealed packets for one neighbour, laid out back to back for UDP GSO.
struct Batch {
    buf: Vec<u8>,
    len: usize,
    seg: usize,
    count: usize,
    max_segments: usize,
    path: Option<Arc<Neighbour>>,
    /// The overlay MTU: a neighbour whose path MTU is below it gets no GSO batches.
    mtu: u32,
}

impl Batch {
    fn new(max_segments: usize, mtu: u32) -> Batch {
        Batch {
            buf: vec![0; GSO_BYTES + SLOT],
            len: 0,
            seg: 0,
            count: 0,
            max_segments: max_segments.max(1),
            path: None,
            mtu,
        }
    }

    /// True when a packet of `total` bytes for `path` may join: same neighbour, not larger
    /// than the segment size, and no shorter (final) segment appended yet. A neighbour behind
    /// a narrowed path gets one datagram per send: the sending host's own netfilter sees a GSO
    /// send as one packet of the batch's total length, so a length limit there (a common way
    /// to make such a path) would drop whole batches of packets that each fit.
    fn accepts(&self, path: &Arc<Neighbour>, total: usize) -> bool {
        let narrow = path.path_mtu().is_some_and(|m| u32::from(m) < self.mtu);
        self.count == 0
            || (!narrow
                && self.path.as_ref().is_some_and(|p| Arc::ptr_eq(p, path))
                && self.len.is_multiple_of(self.seg)
                && total <= self.seg
                && self.len + total <= GSO_BYTES
                && self.count < self.max_segments)
    }

    fn flush(&mut self, s: &Shared) {
        let Some(path) = self.path.take() else {
            return;
        };
        let seg = (self.count > 1).then_some(self.seg);
        let n = self.count as u64;
        match send(s, path.addr(), &self.buf[..self.len], seg) {
            Ok(()) => path.sent(n),
            Err(e) => {
                trace!(error = %e, to = %path.addr(), "sleeve send failed");
                path.dropped(n);
                bump_n(&s.counters.send, n);
            }
        }
        self.len = 0;
        self.count = 0;
        self.seg = 0;
    }

    /// Appends `inner` + `frame` sealed for `path`, flushing first if it cannot join.
    fn push(&mut self, s: &Shared, path: &Arc<Neighbour>, inner: &Inner, frame: &[u8]) {
        let total = path.packet_len(frame.len());
        if !self.accepts(path, total) {
            self.flush(s);
        }
        let Some(dst) = self.buf.get_mut(self.len..self.len + total) else {
            bump(&s.counters.forward);
            return;
        };
        if let Err(e) = path.seal_data(inner, frame, dst) {
            debug!(error = %e, "sleeve seal failed");
            path.dropped(1);
            return;
        }
        if self.count == 0 {
            self.seg = total;
            self.path = Some(path.clone());
        }
        self.len += total;
        self.count += 1;
    }
}

/// Sends one sealed datagram at once (control packets, relays). A PMTU probe the kernel
/// refuses as larger than its path MTU is reported to the endpoint.
fn send_now(s: &Shared, to: &Neighbour, packet: &[u8], probe: Option<u16>) {
    match send(s, to.addr(), packet, None) {
        Ok(()) => to.sent(1),
        Err(e) => {
            to.dropped(1);
            bump(&s.counters.send);
            if let Some(size) = probe
                && (quinn_udp::is_msg_size_err(&e) || e.raw_os_error() == Some(libc::EMSGSIZE))
            {
                s.endpoint
                    .handle_probe_error(to.peer(), size, Instant::now());
            }
        }
    }
}

/// Seals and sends one data packet at once (the endpoint asks for data packets only on the
/// send path, where they are batched; this serves any other).
fn send_data_now(s: &Shared, to: &Neighbour, inner: &Inner, frame: &[u8]) {
    let mut buf = [0u8; SLOT];
    match to.seal_data(inner, frame, &mut buf) {
        Ok(n) => send_now(s, to, &buf[..n], None),
        Err(e) => {
            debug!(error = %e, "sleeve seal failed");
            to.dropped(1);
        }
    }
}

/// Writes a frame the send path produced (an ICMP answer) to the TAP.
fn write_tap(s: &Shared, frame: &[u8]) {
    let r = if s.offload {
        (&s.tap).write_frame(&[IoSlice::new(&[0u8; VNET_LEN]), IoSlice::new(frame)])
    } else {
        s.tap.send(frame)
    };
    if r.is_err() {
        bump(&s.counters.tap_write);
    }
}

/// Does what the endpoint asks on the send path and in timers.
fn on_tx(s: &Shared, batch: &mut Batch, o: Output<'_>) {
    match o {
        Output::Data { to, inner, frame } => batch.push(s, to, inner, frame),
        Output::Udp { to, packet, probe } => send_now(s, to, packet, probe),
        Output::Tap(frame) => write_tap(s, frame),
        Output::Discard(why) => count(s, why),
    }
}

/// Runs the endpoint's timers; returns how long the caller may sleep (ms).
fn service_timers(s: &Shared, batch: &mut Batch, buf: &mut [u8]) -> i32 {
    let until = s
        .endpoint
        .handle_timeout(Instant::now(), buf, &mut |o: Output<'_>| on_tx(s, batch, o));
    batch.flush(s);
    match until {
        Some(t) => {
            let ms = t.saturating_duration_since(Instant::now()).as_millis();
            i32::try_from(ms).unwrap_or(POLL_MS).clamp(1, POLL_MS)
        }
        None => POLL_MS,
    }
}

/// TAP → UDP, plus timers.
pub(super) fn tx_loop(s: &Shared) {
    let mut scratch = vec![0u8; if s.offload { VNET_LEN + 65_536 } else { SLOT }];
    let mut splitter = s.offload.then(Splitter::default);
    let mut ctrl = vec![0u8; SLOT];
    let mut batch = Batch::new(s.udp_state.max_gso_segments(), s.endpoint.config().mtu);
    let tap_fd = s.tap.as_raw_fd();
    while !s.stop.load(Ordering::Relaxed) {
        let sleep = service_timers(s, &mut batch, &mut ctrl);
        if !wait(tap_fd, libc::POLLIN, sleep) {
            continue;
        }
        let now = Instant::now();
        let tx = s.endpoint.tx();
        let mut obey = |o: Output<'_>| on_tx(s, &mut batch, o);
        for _ in 0..BATCH_FRAMES {
            let n = match s.tap.recv(&mut scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "sleeve TAP read failed");
                    break;
                }
            };
            bump(&s.counters.tap_rx);
            let Some(read) = scratch.get_mut(..n) else {
                continue;
            };
            let frame = match splitter {
                None => &*read,
                Some(_) => read.get(VNET_LEN..).unwrap_or_default(),
            };
            // Every segment of a super-frame has the same Ethernet header: decide once.
            let route = match tx.route(frame, now) {
                Ok(r) => r,
                Err(why) => {
                    count(s, Discard::Forward(why));
                    continue;
                }
            };
            match &mut splitter {
                None => tx.encapsulate(&route, read, &mut obey),
                Some(sp) => {
                    let r = sp.split(read, tx.path_mtu(&route), |segment| {
                        tx.encapsulate(&route, segment, &mut obey)
                    });
                    if let Err(e) = r {
                        debug!(error = %e, "sleeve drops a TAP frame");
                        bump(&s.counters.malformed);
                    }
                }
            }
        }
        drop(tx);
        batch.flush(s);
    }
}

/// Does what the endpoint asks on the receive path: frames into the TAP (with offloads the TAP
/// takes a virtio header, and in-order TCP segments are merged into one TSO frame), datagrams
/// out.
fn on_rx(s: &Shared, gro: &mut Option<Coalescer>, o: Output<'_>) {
    match o {
        Output::Tap(frame) => {
            let r = match gro {
                Some(g) => g.push(frame, &mut &s.tap).map(|_| ()),
                None => s.tap.send(frame).map(|_| ()),
            };
            match r {
                Ok(()) => bump(&s.counters.tap_tx),
                Err(_) => bump(&s.counters.tap_write),
            }
        }
        Output::Udp { to, packet, probe } => send_now(s, to, packet, probe),
        Output::Data { to, inner, frame } => send_data_now(s, to, inner, frame),
        Output::Discard(why) => count(s, why),
    }
}

/// UDP → TAP and relays.
pub(super) fn rx_loop(s: &Shared) {
    let mut big = vec![0u8; RX_SLOTS * RX_SLOT];
    let mut metas = [RecvMeta::default(); RX_SLOTS];
    let mut relay = vec![0u8; SLOT];
    let mut gro = s.offload.then(Coalescer::default);
    let udp_fd = s.udp.as_raw_fd();
    while !s.stop.load(Ordering::Relaxed) {
        if !wait(udp_fd, libc::POLLIN, POLL_MS) {
            continue;
        }
        let n = {
            let mut chunks = big.chunks_mut(RX_SLOT);
            let mut iovs: [IoSliceMut<'_>; RX_SLOTS] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            match s.udp_state.recv((&s.udp).into(), &mut iovs, &mut metas) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    debug!(error = %e, "sleeve UDP receive failed");
                    continue;
                }
            }
        };
        let now = Instant::now();
        let mut rx = s.endpoint.rx();
        let mut obey = |o: Output<'_>| on_rx(s, &mut gro, o);
        for (meta, slot) in metas.iter().zip(big.chunks_mut(RX_SLOT)).take(n) {
            let Some(data) = slot.get_mut(..meta.len) else {
                continue;
            };
            for pkt in data.chunks_mut(meta.stride.max(1)) {
                rx.handle_udp(pkt, &mut relay, now, &mut obey);
            }
        }
        drop(rx);
        if let Some(g) = gro.as_mut()
            && g.flush(&mut &s.tap).is_err()
        {
            bump(&s.counters.tap_write);
        }
    }
}
