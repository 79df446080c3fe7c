//! The two datapath loops. Neither allocates per packet: frames are read into a scratch buffer
//! at the offset where the plaintext belongs, copied once into a send batch and sealed there;
//! received datagrams are opened in place in the receive buffers.
//!
//! - `sleeve-tx`: reads up to [`BATCH_FRAMES`] frames from the TAP, decides each, and appends
//!   sealed packets to a batch that is sent as one UDP GSO `sendmsg` while consecutive packets
//!   go to the same neighbour with the same size (a TCP stream's data segments do). It also
//!   runs the heartbeat/PMTU timers.
//! - `sleeve-rx`: `recvmmsg` with GRO through quinn-udp, opens each datagram, injects into the
//!   TAP and/or relays, answers heartbeats and probes.
//!
//! Both wait in `poll(2)` with a [`POLL_MS`] timeout so a stop request is seen promptly.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use meshnet_mesh::PeerName;
use meshnet_mesh::sleeve::wire::{ETH_LEN, INNER_LEN, OUTER_LEN};
use meshnet_mesh::sleeve::{
    Control, CryptoError, Destination, Forwarding, INITIAL_TTL, Inner, Kind, LocalOut, Outer, Relay,
};
use meshnet_mesh::sleeve::{frag, icmp};
use quinn_udp::{RecvMeta, Transmit};
use tracing::{debug, trace};

use super::gro::{Coalescer, FrameSink};
use super::offload::{Splitter, VNET_LEN};
use super::{RecvKey, SendPath, Shared, lock};

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

type Senders = std::collections::BTreeMap<PeerName, Arc<SendPath>>;

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
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
    path: Option<Arc<SendPath>>,
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
    fn accepts(&self, path: &Arc<SendPath>, total: usize) -> bool {
        let pmtu = u32::from(path.pmtu.load(Ordering::Relaxed));
        let narrow = pmtu != 0 && pmtu < self.mtu;
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
        match send(s, path.addr, &self.buf[..self.len], seg) {
            Ok(()) => bump(&path.tx_packets, n),
            Err(e) => {
                trace!(error = %e, to = %path.addr, "sleeve send failed");
                bump(&path.drops, n);
                bump(&s.counters.send, n);
            }
        }
        self.len = 0;
        self.count = 0;
        self.seg = 0;
    }

    /// Appends `inner` + `frame` sealed for `path`, flushing first if it cannot join.
    fn push(&mut self, s: &Shared, path: &Arc<SendPath>, inner: &Inner, frame: &[u8]) {
        let plain = INNER_LEN + frame.len();
        let total = OUTER_LEN + plain + path.sealer.tag_len();
        if !self.accepts(path, total) {
            self.flush(s);
        }
        let Some(dst) = self.buf.get_mut(self.len..self.len + total) else {
            bump(&s.counters.forward, 1);
            return;
        };
        dst[OUTER_LEN..OUTER_LEN + INNER_LEN].copy_from_slice(&inner.to_bytes());
        dst[OUTER_LEN + INNER_LEN..OUTER_LEN + plain].copy_from_slice(frame);
        if let Err(e) = path.sealer.seal(Kind::Data, dst, plain) {
            debug!(error = %e, "sleeve seal failed");
            bump(&path.drops, 1);
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

/// Seals and sends one packet at once (control packets and relays).
fn send_one(
    s: &Shared,
    senders: &Senders,
    to: PeerName,
    kind: Kind,
    inner: &Inner,
    payload: PayloadSrc<'_>,
    buf: &mut [u8],
) -> io::Result<()> {
    let Some(path) = senders.get(&to) else {
        bump(&s.counters.no_path, 1);
        return Ok(());
    };
    let Some(head) = buf.get_mut(OUTER_LEN..OUTER_LEN + INNER_LEN) else {
        return Ok(());
    };
    head.copy_from_slice(&inner.to_bytes());
    let body = buf.get_mut(OUTER_LEN + INNER_LEN..).unwrap_or_default();
    let len = match payload {
        PayloadSrc::Control(c) => c.emit(body),
        PayloadSrc::Frame(f) => body.get_mut(..f.len()).map(|b| {
            b.copy_from_slice(f);
            f.len()
        }),
    };
    let Some(len) = len else {
        bump(&s.counters.forward, 1);
        return Ok(());
    };
    let total = match path.sealer.seal(kind, buf, INNER_LEN + len) {
        Ok(n) => n,
        Err(e) => {
            debug!(error = %e, "sleeve seal failed");
            bump(&path.drops, 1);
            return Ok(());
        }
    };
    match send(s, path.addr, &buf[..total], None) {
        Ok(()) => {
            bump(&path.tx_packets, 1);
            Ok(())
        }
        Err(e) => {
            bump(&path.drops, 1);
            bump(&s.counters.send, 1);
            Err(e)
        }
    }
}

enum PayloadSrc<'a> {
    Control(Control),
    Frame(&'a [u8]),
}

fn send_control(s: &Shared, senders: &Senders, to: PeerName, c: Control, buf: &mut [u8]) {
    let inner = Inner {
        originator: s.local,
        destination: Destination::Peer(to),
        ttl: 1,
    };
    let r = send_one(
        s,
        senders,
        to,
        c.kind(),
        &inner,
        PayloadSrc::Control(c),
        buf,
    );
    if let (Err(e), Control::PmtuProbe(size)) = (r, c)
        && (quinn_udp::is_msg_size_err(&e) || e.raw_os_error() == Some(libc::EMSGSIZE))
    {
        lock(&s.health).handle_probe_error(to, size, Instant::now());
    }
}

/// Sends due heartbeats and probes; returns how long the caller may sleep (ms).
fn service_timers(s: &Shared, buf: &mut [u8]) -> i32 {
    let now = Instant::now();
    let senders = s.senders.load();
    loop {
        let next = lock(&s.health).poll_transmit(now);
        let Some((peer, c)) = next else { break };
        send_control(s, &senders, peer, c, buf);
    }
    let until = {
        let health = lock(&s.health);
        for (peer, path) in senders.iter() {
            let mtu = health.status(*peer, now).and_then(|st| st.mtu).unwrap_or(0);
            path.pmtu.store(mtu, Ordering::Relaxed);
        }
        health.poll_timeout()
    };
    match until {
        Some(t) => {
            let ms = t.saturating_duration_since(Instant::now()).as_millis();
            i32::try_from(ms).unwrap_or(POLL_MS).clamp(1, POLL_MS)
        }
        None => POLL_MS,
    }
}

/// Where a frame from the local bridge goes: its inner header and next hops.
fn route<'a>(
    s: &Shared,
    fwd: &'a Forwarding,
    frame: &[u8],
    now: Instant,
) -> Option<(Inner, Relay<'a>)> {
    let out = {
        let macs = lock(&s.macs);
        fwd.on_local_frame(&macs, frame, now)
    };
    let (destination, hops) = match out {
        LocalOut::Drop(why) => {
            trace!(?why, "sleeve drops local frame");
            bump(&s.counters.forward, 1);
            return None;
        }
        LocalOut::Unicast {
            destination,
            next_hop,
        } => (Destination::Peer(destination), Relay::One(next_hop)),
        LocalOut::Broadcast(hops) => (Destination::Broadcast, Relay::Tree(hops)),
    };
    let inner = Inner {
        originator: s.local,
        destination,
        ttl: INITIAL_TTL,
    };
    Some((inner, hops))
}

/// A frame larger than the neighbour's verified path MTU. IPv4 with DF: tell its sender (ICMP
/// frag-needed with that MTU) and drop it, the sender's stack then sends smaller packets.
/// Other IPv4: cut it into fragments that fit and hand each to `push`. Anything else is
/// dropped.
fn too_big(s: &Shared, frame: &[u8], pmtu: u16, push: impl FnMut(&[u8])) {
    let mut out = [0u8; icmp::FRAG_NEEDED_MAX];
    let Some(n) = icmp::frag_needed(frame, pmtu, &mut out) else {
        // Slow path (a path narrower than the overlay): one buffer per oversized frame.
        let mut buf = vec![0u8; ETH_LEN + usize::from(pmtu)];
        if let Err(e) = frag::fragment(frame, pmtu, &mut buf, push) {
            trace!(error = %e, pmtu, "sleeve drops a frame too big for the path");
            bump(&s.counters.forward, 1);
        }
        return;
    };
    bump(&s.counters.forward, 1);
    let answer = &out[..n];
    let r = if s.offload {
        (&s.tap).write_frame(&[IoSlice::new(&[0u8; VNET_LEN]), IoSlice::new(answer)])
    } else {
        s.tap.send(answer)
    };
    if r.is_err() {
        bump(&s.counters.tap_write, 1);
    }
}

fn push_all(
    s: &Shared,
    senders: &Senders,
    batch: &mut Batch,
    inner: &Inner,
    hops: &Relay<'_>,
    frame: &[u8],
) {
    for hop in hops.hops(s.local, s.local) {
        match senders.get(&hop) {
            Some(path) => {
                let pmtu = path.pmtu.load(Ordering::Relaxed);
                if pmtu != 0 && frame.len().saturating_sub(ETH_LEN) > usize::from(pmtu) {
                    too_big(s, frame, pmtu, |f| batch.push(s, path, inner, f));
                } else {
                    batch.push(s, path, inner, frame)
                }
            }
            None => bump(&s.counters.no_path, 1),
        }
    }
}

/// TAP → UDP, plus timers.
pub(super) fn tx_loop(s: &Shared) {
    let mut scratch = vec![0u8; if s.offload { VNET_LEN + 65_536 } else { SLOT }];
    let mut splitter = s.offload.then(Splitter::default);
    let mut ctrl = vec![0u8; SLOT];
    let mut batch = Batch::new(s.udp_state.max_gso_segments(), s.mtu);
    let tap_fd = s.tap.as_raw_fd();
    let mut mac_sweep = Instant::now();
    while !s.stop.load(Ordering::Relaxed) {
        let sleep = service_timers(s, &mut ctrl);
        if !wait(tap_fd, libc::POLLIN, sleep) {
            continue;
        }
        let now = Instant::now();
        if now.saturating_duration_since(mac_sweep).as_secs() >= 60 {
            lock(&s.macs).expire(now);
            mac_sweep = now;
        }
        let fwd = s.forwarding.load();
        let senders = s.senders.load();
        for _ in 0..BATCH_FRAMES {
            let n = match s.tap.recv(&mut scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "sleeve TAP read failed");
                    break;
                }
            };
            bump(&s.counters.tap_rx, 1);
            let Some(read) = scratch.get_mut(..n) else {
                continue;
            };
            match &mut splitter {
                None => {
                    if let Some((inner, hops)) = route(s, &fwd, read, now) {
                        push_all(s, &senders, &mut batch, &inner, &hops, read);
                    }
                }
                Some(sp) => {
                    // Every segment of a super-frame has the same Ethernet header: decide once.
                    let Some((inner, hops)) =
                        route(s, &fwd, read.get(VNET_LEN..).unwrap_or_default(), now)
                    else {
                        continue;
                    };
                    // Segment to the smallest verified path MTU among the next hops, so a
                    // TSO stream fits a narrower path without ICMP round trips.
                    let pmtu = hops
                        .hops(s.local, s.local)
                        .filter_map(|h| senders.get(&h))
                        .map(|p| p.pmtu.load(Ordering::Relaxed))
                        .filter(|&m| m != 0)
                        .min();
                    let r = sp.split(read, pmtu, |frame| {
                        push_all(s, &senders, &mut batch, &inner, &hops, frame)
                    });
                    if let Err(e) = r {
                        debug!(error = %e, "sleeve drops a TAP frame");
                        bump(&s.counters.malformed, 1);
                    }
                }
            }
        }
        batch.flush(s);
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
        let fwd = s.forwarding.load();
        let senders = s.senders.load();
        let mut receivers = lock(&s.receivers);
        let mut heard: Option<PeerName> = None;
        for (meta, slot) in metas.iter().zip(big.chunks_mut(RX_SLOT)).take(n) {
            let Some(data) = slot.get_mut(..meta.len) else {
                continue;
            };
            for pkt in data.chunks_mut(meta.stride.max(1)) {
                let peer = handle_datagram(
                    s,
                    &mut receivers,
                    &fwd,
                    &senders,
                    pkt,
                    now,
                    &mut relay,
                    gro.as_mut(),
                );
                if let Some(p) = peer.filter(|p| heard != Some(*p)) {
                    lock(&s.health).handle_heard(p, now);
                    heard = Some(p);
                }
            }
        }
        drop(receivers);
        if let Some(g) = gro.as_mut()
            && g.flush(&mut &s.tap).is_err()
        {
            bump(&s.counters.tap_write, 1);
        }
    }
}

/// Opens and dispatches one datagram; returns the neighbour it authenticated as.
// The loop's per-batch state, passed apart so each borrow stays as narrow as it needs to be.
#[allow(clippy::too_many_arguments)]
fn handle_datagram(
    s: &Shared,
    receivers: &mut std::collections::BTreeMap<meshnet_mesh::sleeve::KeyId, RecvKey>,
    fwd: &meshnet_mesh::sleeve::Forwarding,
    senders: &Senders,
    pkt: &mut [u8],
    now: Instant,
    relay: &mut [u8],
    gro: Option<&mut Coalescer>,
) -> Option<PeerName> {
    let c = &s.counters;
    let Ok(outer) = Outer::parse(pkt) else {
        bump(&c.malformed, 1);
        return None;
    };
    let Some(rk) = receivers.get_mut(&outer.key_id) else {
        bump(&c.unknown_key, 1);
        return None;
    };
    let range = match rk.opener.open(&outer, pkt) {
        Ok(r) => r,
        Err(e) => {
            rk.drops += 1;
            bump(
                match e {
                    CryptoError::Replay(_) => &c.replay,
                    CryptoError::Auth => &c.auth,
                    _ => &c.malformed,
                },
                1,
            );
            return None;
        }
    };
    rk.rx_packets += 1;
    let peer = rk.peer;
    let body = pkt.get(range.clone()).unwrap_or_default();
    let Ok(inner) = Inner::parse(body) else {
        bump(&c.malformed, 1);
        return Some(peer);
    };
    let payload = body.get(INNER_LEN..).unwrap_or_default();
    match outer.kind {
        Kind::Data => {
            let out = {
                let mut macs = lock(&s.macs);
                fwd.on_remote(&mut macs, &inner, payload, now)
            };
            if let Some(why) = out.dropped {
                trace!(?why, originator = %inner.originator, "sleeve drops remote frame");
                bump(&c.forward, 1);
            }
            if out.inject {
                let frame = pkt
                    .get(range.start + INNER_LEN..range.end)
                    .unwrap_or_default();
                let r = match gro {
                    // With offloads the TAP takes a virtio header, and in-order TCP segments
                    // are merged into one TSO frame.
                    Some(g) => g.push(frame, &mut &s.tap).map(|_| ()),
                    None => s.tap.send(frame).map(|_| ()),
                };
                match r {
                    Ok(()) => bump(&c.tap_tx, 1),
                    Err(_) => bump(&c.tap_write, 1),
                }
            }
            let payload = pkt
                .get(range.start + INNER_LEN..range.end)
                .unwrap_or_default();
            let next = Inner {
                ttl: inner.ttl.saturating_sub(1),
                ..inner
            };
            for hop in out.relay.hops(inner.originator, peer) {
                let _ = send_one(
                    s,
                    senders,
                    hop,
                    Kind::Data,
                    &next,
                    PayloadSrc::Frame(payload),
                    relay,
                );
            }
        }
        Kind::Unknown(_) => bump(&c.malformed, 1),
        kind => {
            // Control travels between direct neighbours only.
            let control = Control::parse(kind, payload).filter(|_| inner.originator == peer);
            let Some(control) = control else {
                bump(&c.malformed, 1);
                return Some(peer);
            };
            let reply = lock(&s.health).handle_control(peer, control, now);
            if let Some(r) = reply {
                send_control(s, senders, peer, r, relay);
            }
        }
    }
    Some(peer)
}
