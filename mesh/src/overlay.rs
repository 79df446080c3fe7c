//! Overlay selection: which datapath carries each remote peer's frames.
//!
//! Every remote peer is served by exactly one path into the local bridge,
//! the kernel fast datapath (VXLAN) or the sleeve, or the bridge would
//! deliver duplicates. Fastdp is preferred when it is allowed
//! (no password, or both ends trust each other's subnet), the peer offered
//! it, and heartbeats that really cross the VXLAN device come back; when they
//! stop, the peer falls back to the sleeve with the reason kept for `status`,
//! and it returns to fastdp once heartbeats have flowed again for a while.
//! Heartbeats come in two sizes: small ones prove the path is there, full-size
//! ones (an Ethernet frame of the overlay MTU) prove it carries the MTU the
//! bridge promises. A path that passes only small frames (a PMTU black hole)
//! is not fastdp-worthy: the kernel would lose every full-size frame silently.
//!
//! Also here: the overlay control messages the routers exchange over their
//! TCP connection (mesh tag 7, first byte a sub-tag), and the fastdp
//! heartbeat frame. Sans-IO: time comes in as `now`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ids::PeerName;
use crate::wire::{DecodeError, postcard_exact, postcard_with_prefix};

/// Sub-tag of an overlay control message carrying a sleeve hello.
pub const SUBTAG_SLEEVE: u8 = 1;
/// Sub-tag of an overlay control message carrying a [`FastdpHello`].
pub const SUBTAG_FASTDP: u8 = 2;
/// Format version of [`FastdpHello`].
pub const FASTDP_HELLO_FORMAT: u8 = 1;

/// How often fastdp heartbeats are sent to each peer.
pub const FASTDP_HEARTBEAT: Duration = Duration::from_millis(500);
/// No heartbeat answer for this long: fall back to the sleeve.
pub const FASTDP_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeats must have flowed this long before a fallen-back peer returns
/// to fastdp, so a flapping path does not flap the datapath.
pub const FASTDP_UPGRADE_AFTER: Duration = Duration::from_secs(2);

/// Ethertype of fastdp heartbeat frames (IEEE 802 local experimental).
/// The sleeve never carries frames of this type.
pub const HEARTBEAT_ETHERTYPE: u16 = 0x88b5;
/// Magic after the Ethernet header of a heartbeat frame.
pub const HEARTBEAT_MAGIC: [u8; 4] = *b"MNFD";
/// Length of a small heartbeat frame: Ethernet header, magic, kind, name, seq.
/// Longer frames carry zero padding after `seq`.
pub const HEARTBEAT_LEN: usize = 14 + 4 + 1 + 6 + 8;
/// Ethernet header bytes in front of the overlay MTU in a full-size heartbeat.
pub const ETH_HEADER_LEN: usize = 14;

/// "I can do fastdp; my bridge answers heartbeats at this MAC."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastdpHello {
    /// MAC of the sender's bridge device (heartbeats are addressed to it).
    pub bridge_mac: [u8; 6],
    /// VXLAN network identifier the sender uses.
    pub vni: u32,
    /// UDP port of the sender's VXLAN device.
    pub port: u16,
}

impl FastdpHello {
    /// The overlay control payload: sub-tag, format, postcard body.
    pub fn encode(&self) -> Vec<u8> {
        postcard_with_prefix(&[SUBTAG_FASTDP, FASTDP_HELLO_FORMAT], self)
    }

    /// Parses an overlay control payload carrying a fastdp hello.
    pub fn decode(b: &[u8]) -> Result<FastdpHello, DecodeError> {
        let (&sub, rest) = b.split_first().ok_or(DecodeError::Empty)?;
        if sub != SUBTAG_FASTDP {
            return Err(DecodeError::UnknownVersion {
                what: "fastdp hello sub-tag",
                version: sub,
                supported: SUBTAG_FASTDP,
            });
        }
        let (&format, body) = rest.split_first().ok_or(DecodeError::Empty)?;
        if format != FASTDP_HELLO_FORMAT {
            return Err(DecodeError::UnknownVersion {
                what: "fastdp hello",
                version: format,
                supported: FASTDP_HELLO_FORMAT,
            });
        }
        postcard_exact("fastdp hello", body)
    }
}

/// Heartbeat kinds: a ping is answered by a pong on the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatKind {
    /// Sent every [`FASTDP_HEARTBEAT`].
    Ping,
    /// The answer; receiving it proves the path works both ways.
    Pong,
}

/// A decoded fastdp heartbeat frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Ping or pong.
    pub kind: HeartbeatKind,
    /// The peer that sent it.
    pub from: PeerName,
    /// Sequence number (echoed by the pong).
    pub seq: u64,
    /// Length of the whole Ethernet frame, padding included (at least
    /// [`HEARTBEAT_LEN`]); a pong has the length of the ping it answers.
    pub len: usize,
}

impl Heartbeat {
    /// The Ethernet frame from `src_mac` to `dst_mac`, zero-padded to `len`.
    pub fn encode(&self, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; self.len.max(HEARTBEAT_LEN)];
        f[0..6].copy_from_slice(&dst_mac);
        f[6..12].copy_from_slice(&src_mac);
        f[12..14].copy_from_slice(&HEARTBEAT_ETHERTYPE.to_be_bytes());
        f[14..18].copy_from_slice(&HEARTBEAT_MAGIC);
        f[18] = match self.kind {
            HeartbeatKind::Ping => 1,
            HeartbeatKind::Pong => 2,
        };
        f[19..25].copy_from_slice(&self.from.to_bytes());
        f[25..33].copy_from_slice(&self.seq.to_be_bytes());
        f
    }

    /// Parses a received Ethernet frame; `None` for anything that is not
    /// a well-formed heartbeat (the socket may see other traffic).
    pub fn decode(frame: &[u8]) -> Option<Heartbeat> {
        if frame.len() < HEARTBEAT_LEN
            || frame[12..14] != HEARTBEAT_ETHERTYPE.to_be_bytes()
            || frame[14..18] != HEARTBEAT_MAGIC
        {
            return None;
        }
        let kind = match frame[18] {
            1 => HeartbeatKind::Ping,
            2 => HeartbeatKind::Pong,
            _ => return None,
        };
        let name: [u8; 6] = frame[19..25].try_into().ok()?;
        let seq = u64::from_be_bytes(frame[25..33].try_into().ok()?);
        Some(Heartbeat {
            kind,
            from: PeerName::from_bytes(name),
            seq,
            len: frame.len(),
        })
    }
}

/// The datapath serving a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Path {
    /// Kernel VXLAN.
    Fastdp,
    /// Userspace TAP + UDP.
    Sleeve,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Fastdp => "fastdp",
            Path::Sleeve => "sleeve",
        })
    }
}

/// Why fastdp is not (or no longer) used for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFastdp {
    /// `--no-fastdp` here.
    Disabled,
    /// A password is set and the peer is not trusted both ways.
    Encrypted,
    /// The peer did not offer fastdp.
    NotOffered,
    /// Offered, but no heartbeat has come back yet.
    Waiting,
    /// Heartbeats stopped.
    HeartbeatTimeout,
    /// Small heartbeats pass but full-size ones (an Ethernet frame of `mtu`)
    /// do not: the path silently drops frames the bridge's MTU allows.
    PathMtu {
        /// The overlay MTU the path failed to carry.
        mtu: u16,
    },
}

impl NoFastdp {
    /// A short label for metrics (`reason="path_mtu"`).
    pub fn label(&self) -> &'static str {
        match self {
            NoFastdp::Disabled => "disabled",
            NoFastdp::Encrypted => "encrypted",
            NoFastdp::NotOffered => "not_offered",
            NoFastdp::Waiting => "waiting",
            NoFastdp::HeartbeatTimeout => "heartbeat_timeout",
            NoFastdp::PathMtu { .. } => "path_mtu",
        }
    }
}

impl fmt::Display for NoFastdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoFastdp::Disabled => "fastdp: disabled",
            NoFastdp::Encrypted => "fastdp: encryption required",
            NoFastdp::NotOffered => "fastdp: not offered by peer",
            NoFastdp::Waiting => "fastdp: waiting for heartbeat",
            NoFastdp::HeartbeatTimeout => "fastdp: heartbeat timeout",
            NoFastdp::PathMtu { mtu } => return write!(f, "fastdp: path MTU below {mtu}"),
        })
    }
}

/// A change the datapath must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    /// The peer.
    pub peer: PeerName,
    /// Its new path.
    pub path: Path,
    /// Why, when it is not fastdp.
    pub reason: Option<NoFastdp>,
}

#[derive(Debug, Clone)]
struct PeerState {
    allowed: Result<(), NoFastdp>,
    hello: Option<FastdpHello>,
    /// The last pong of any size.
    last_pong: Option<Instant>,
    /// The last full-size pong.
    last_full_pong: Option<Instant>,
    /// Start of the current run of answered full-size heartbeats.
    healthy_since: Option<Instant>,
    path: Path,
    reason: Option<NoFastdp>,
    /// Fastdp has worked at least once on this connection.
    was_up: bool,
}

/// How often peers fell back from fastdp to the sleeve, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fallbacks {
    /// All heartbeats stopped.
    pub heartbeat_timeout: u64,
    /// Only full-size heartbeats stopped.
    pub path_mtu: u64,
}

/// Per-peer path selection. Call protocol: feed `handle_*`, then drain
/// [`Overlay::poll_change`]; arm a timer for [`Overlay::poll_timeout`].
/// Each heartbeat round sends one small ping and one of
/// [`Overlay::full_heartbeat_len`] bytes to every [`Overlay::probe_targets`].
#[derive(Debug)]
pub struct Overlay {
    mtu: u16,
    peers: BTreeMap<PeerName, PeerState>,
    changes: VecDeque<PathChange>,
    fallbacks: Fallbacks,
}

impl Overlay {
    /// A selector with no peers, for a bridge of overlay MTU `mtu`.
    pub fn new(mtu: u16) -> Overlay {
        Overlay {
            mtu,
            peers: BTreeMap::new(),
            changes: VecDeque::new(),
            fallbacks: Fallbacks::default(),
        }
    }

    /// Frame length of a full-size heartbeat: an Ethernet frame carrying the
    /// overlay MTU, the largest frame the bridge lets into the VXLAN device.
    pub fn full_heartbeat_len(&self) -> usize {
        ETH_HEADER_LEN + usize::from(self.mtu)
    }

    /// How often peers fell back from fastdp, by reason.
    pub fn fallbacks(&self) -> Fallbacks {
        self.fallbacks
    }

    /// A connection to `peer` came up. `allowed` says whether fastdp may be
    /// used at all (configuration, encryption).
    pub fn handle_peer_up(&mut self, peer: PeerName, allowed: Result<(), NoFastdp>) {
        let reason = allowed.err().unwrap_or(NoFastdp::NotOffered);
        self.peers.insert(
            peer,
            PeerState {
                allowed,
                hello: None,
                last_pong: None,
                last_full_pong: None,
                healthy_since: None,
                path: Path::Sleeve,
                reason: Some(reason),
                was_up: false,
            },
        );
        self.changes.push_back(PathChange {
            peer,
            path: Path::Sleeve,
            reason: Some(reason),
        });
    }

    /// The connection to `peer` went away.
    pub fn handle_peer_down(&mut self, peer: PeerName) {
        self.peers.remove(&peer);
    }

    /// The peer offered fastdp.
    pub fn handle_fastdp_hello(&mut self, peer: PeerName, hello: FastdpHello, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.hello = Some(hello);
            self.reevaluate(peer, now);
        }
    }

    /// A pong of `len` frame bytes from `peer` came back over the VXLAN path.
    pub fn handle_pong(&mut self, peer: PeerName, len: usize, now: Instant) {
        let full = len >= self.full_heartbeat_len();
        if let Some(p) = self.peers.get_mut(&peer) {
            if full {
                let fresh = p
                    .last_full_pong
                    .is_none_or(|t| now.duration_since(t) > FASTDP_TIMEOUT);
                if fresh {
                    p.healthy_since = Some(now);
                }
                p.last_full_pong = Some(now);
            }
            p.last_pong = Some(now);
            self.reevaluate(peer, now);
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let names: Vec<PeerName> = self.peers.keys().copied().collect();
        for peer in names {
            self.reevaluate(peer, now);
        }
    }

    /// When [`Overlay::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| match p.path {
                Path::Fastdp => Some(p.last_full_pong? + FASTDP_TIMEOUT),
                Path::Sleeve => {
                    let upgrade = p.healthy_since.map(|s| s + FASTDP_UPGRADE_AFTER);
                    // A path-MTU reason turns into a timeout when small pongs stop too.
                    let small = p
                        .last_pong
                        .filter(|_| matches!(p.reason, Some(NoFastdp::PathMtu { .. })))
                        .map(|t| t + FASTDP_TIMEOUT);
                    upgrade.into_iter().chain(small).min()
                }
            })
            .min()
    }

    /// Next change to apply.
    pub fn poll_change(&mut self) -> Option<PathChange> {
        self.changes.pop_front()
    }

    /// The peers fastdp heartbeats go to, with their bridge MACs.
    pub fn probe_targets(&self) -> Vec<(PeerName, FastdpHello)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.allowed.is_ok())
            .filter_map(|(n, p)| Some((*n, p.hello?)))
            .collect()
    }

    /// The current path of `peer`, and why when it is not fastdp.
    pub fn path(&self, peer: PeerName) -> Option<(Path, Option<NoFastdp>)> {
        self.peers.get(&peer).map(|p| (p.path, p.reason))
    }

    /// The peers currently on fastdp.
    pub fn fastdp_peers(&self) -> Vec<PeerName> {
        self.peers
            .iter()
            .filter(|(_, p)| p.path == Path::Fastdp)
            .map(|(n, _)| *n)
            .collect()
    }

    fn reevaluate(&mut self, peer: PeerName, now: Instant) {
        let mtu = self.mtu;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.duration_since(t) <= FASTDP_TIMEOUT);
        let alive = recent(p.last_full_pong);
        let small_alive = recent(p.last_pong);
        if !alive {
            p.healthy_since = None;
        }
        let want = match (p.allowed, p.hello) {
            (Err(why), _) => Err(why),
            (Ok(()), None) => Err(NoFastdp::NotOffered),
            (Ok(()), Some(_)) if alive => {
                let settled = p
                    .healthy_since
                    .is_some_and(|s| now.duration_since(s) >= FASTDP_UPGRADE_AFTER);
                // The first time, go as soon as a full-size pong proves the
                // path; after a fallback, wait until it has been healthy for a
                // while (still showing why it fell back).
                if p.path == Path::Fastdp || !p.was_up || settled {
                    Ok(())
                } else {
                    Err(p.reason.unwrap_or(NoFastdp::HeartbeatTimeout))
                }
            }
            (Ok(()), Some(_)) if small_alive => Err(NoFastdp::PathMtu { mtu }),
            (Ok(()), Some(_)) if p.was_up => Err(NoFastdp::HeartbeatTimeout),
            (Ok(()), Some(_)) => Err(NoFastdp::Waiting),
        };
        let (path, reason) = match want {
            Ok(()) => (Path::Fastdp, None),
            Err(why) => (Path::Sleeve, Some(why)),
        };
        if path == Path::Fastdp {
            p.was_up = true;
        }
        if (path, reason) != (p.path, p.reason) {
            let path_changed = path != p.path;
            p.path = path;
            p.reason = reason;
            if path_changed {
                match reason {
                    Some(NoFastdp::HeartbeatTimeout) => self.fallbacks.heartbeat_timeout += 1,
                    Some(NoFastdp::PathMtu { .. }) => self.fallbacks.path_mtu += 1,
                    _ => {}
                }
                self.changes.push_back(PathChange { peer, path, reason });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(b: u8) -> PeerName {
        PeerName::from_bytes([0x02, 0, 0, 0, 0, b])
    }

    const MTU: u16 = 1376;
    /// A full-size pong's frame length.
    const FULL: usize = 14 + 1376;

    const HELLO: FastdpHello = FastdpHello {
        bridge_mac: [0x02, 1, 2, 3, 4, 5],
        vni: 0x6d6e,
        port: 6784,
    };

    fn drain(o: &mut Overlay) -> Vec<PathChange> {
        std::iter::from_fn(|| o.poll_change()).collect()
    }

    #[test]
    fn fastdp_hello_round_trips_with_exact_bytes() {
        let bytes = HELLO.encode();
        assert_eq!(
            bytes,
            [
                SUBTAG_FASTDP,
                FASTDP_HELLO_FORMAT,
                2,
                1,
                2,
                3,
                4,
                5,
                0xee,
                0xda,
                0x01,
                0x80,
                0x35
            ]
        );
        assert_eq!(FastdpHello::decode(&bytes), Ok(HELLO));
        assert!(FastdpHello::decode(&[]).is_err());
        assert!(FastdpHello::decode(&[SUBTAG_SLEEVE, 1]).is_err());
        assert!(FastdpHello::decode(&[SUBTAG_FASTDP, 9]).is_err());
        assert!(FastdpHello::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn heartbeat_frames_round_trip_and_reject_strangers() {
        let hb = Heartbeat {
            kind: HeartbeatKind::Pong,
            from: name(9),
            seq: 77,
            len: HEARTBEAT_LEN,
        };
        let f = hb.encode([1; 6], [2; 6]);
        assert_eq!(
            f,
            [
                1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x88, 0xb5, b'M', b'N', b'F', b'D', 2, 2, 0, 0,
                0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 77
            ]
        );
        assert_eq!(Heartbeat::decode(&f), Some(hb));
        // Padded to a full frame: the same fields, zeros after, the length kept.
        let full = Heartbeat { len: FULL, ..hb };
        let padded = full.encode([1; 6], [2; 6]);
        assert_eq!(padded.len(), FULL);
        assert_eq!(&padded[..HEARTBEAT_LEN], &f[..]);
        assert!(padded[HEARTBEAT_LEN..].iter().all(|&b| b == 0));
        assert_eq!(Heartbeat::decode(&padded), Some(full));
        // A length below the minimum still encodes the whole heartbeat.
        assert_eq!(Heartbeat { len: 3, ..hb }.encode([1; 6], [2; 6]), f);
        let mut bad = f.clone();
        bad[14] = b'X';
        assert_eq!(Heartbeat::decode(&bad), None);
        assert_eq!(Heartbeat::decode(&f[..20]), None);
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(Heartbeat::decode(&arp), None);
    }

    #[test]
    fn peer_starts_on_sleeve_and_moves_to_fastdp_at_first_pong() {
        let t0 = Instant::now();
        let mut o = Overlay::new(MTU);
        let b = name(2);
        o.handle_peer_up(b, Ok(()));
        assert_eq!(drain(&mut o)[0].reason, Some(NoFastdp::NotOffered));
        o.handle_fastdp_hello(b, HELLO, t0);
        assert_eq!(o.path(b), Some((Path::Sleeve, Some(NoFastdp::Waiting))));
        assert_eq!(o.probe_targets(), vec![(b, HELLO)]);
        o.handle_pong(b, FULL, t0 + Duration::from_millis(10));
        assert_eq!(
            drain(&mut o),
            vec![PathChange {
                peer: b,
                path: Path::Fastdp,
                reason: None
            }]
        );
    }

    #[test]
    fn heartbeat_timeout_falls_back_and_heals_after_a_stable_run() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut o = Overlay::new(MTU);
        let b = name(2);
        o.handle_peer_up(b, Ok(()));
        o.handle_fastdp_hello(b, HELLO, t0);
        o.handle_pong(b, FULL, t0);
        drain(&mut o);
        // Pongs stop: after the timeout the peer is on the sleeve, with the reason.
        let due = o.poll_timeout().unwrap();
        assert_eq!(due, t0 + FASTDP_TIMEOUT);
        o.handle_timeout(due + ms(1));
        let c = drain(&mut o);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].path, c[0].reason),
            (Path::Sleeve, Some(NoFastdp::HeartbeatTimeout))
        );
        // One pong is not enough to go back...
        let t1 = due + ms(5000);
        o.handle_pong(b, FULL, t1);
        assert!(drain(&mut o).is_empty());
        assert_eq!(
            o.path(b),
            Some((Path::Sleeve, Some(NoFastdp::HeartbeatTimeout)))
        );
        // ...a stable run of them is.
        for i in 1..=4 {
            o.handle_pong(b, FULL, t1 + FASTDP_HEARTBEAT * i);
        }
        o.handle_timeout(t1 + FASTDP_UPGRADE_AFTER);
        assert_eq!(drain(&mut o)[0].path, Path::Fastdp);
    }

    #[test]
    fn disallowed_fastdp_never_probes_and_says_why() {
        let t0 = Instant::now();
        let mut o = Overlay::new(MTU);
        let b = name(2);
        o.handle_peer_up(b, Err(NoFastdp::Encrypted));
        o.handle_fastdp_hello(b, HELLO, t0);
        o.handle_pong(b, FULL, t0);
        assert!(o.probe_targets().is_empty());
        assert_eq!(o.path(b), Some((Path::Sleeve, Some(NoFastdp::Encrypted))));
        assert_eq!(
            o.path(b).unwrap().1.unwrap().to_string(),
            "fastdp: encryption required"
        );
    }

    #[test]
    fn small_pongs_without_full_ones_never_make_fastdp_and_say_why() {
        let t0 = Instant::now();
        let mut o = Overlay::new(MTU);
        let b = name(2);
        o.handle_peer_up(b, Ok(()));
        o.handle_fastdp_hello(b, HELLO, t0);
        drain(&mut o);
        assert_eq!(o.full_heartbeat_len(), FULL);
        o.handle_pong(b, HEARTBEAT_LEN, t0);
        o.handle_pong(b, FULL - 1, t0);
        assert!(drain(&mut o).is_empty(), "a small pong proves no MTU");
        assert_eq!(
            o.path(b),
            Some((Path::Sleeve, Some(NoFastdp::PathMtu { mtu: MTU })))
        );
        assert_eq!(
            NoFastdp::PathMtu { mtu: MTU }.to_string(),
            "fastdp: path MTU below 1376"
        );
        o.handle_pong(b, FULL, t0 + Duration::from_millis(5));
        assert_eq!(drain(&mut o)[0].path, Path::Fastdp);
    }

    #[test]
    fn losing_full_pongs_falls_back_counts_it_and_heals() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut o = Overlay::new(MTU);
        let b = name(2);
        o.handle_peer_up(b, Ok(()));
        o.handle_fastdp_hello(b, HELLO, t0);
        o.handle_pong(b, FULL, t0);
        drain(&mut o);
        // The black hole: only small pongs come back, every heartbeat round.
        let mut t = t0;
        while t < t0 + FASTDP_TIMEOUT + ms(600) {
            t += FASTDP_HEARTBEAT;
            o.handle_pong(b, HEARTBEAT_LEN, t);
            o.handle_timeout(t);
        }
        let c = drain(&mut o);
        assert_eq!(
            c,
            vec![PathChange {
                peer: b,
                path: Path::Sleeve,
                reason: Some(NoFastdp::PathMtu { mtu: MTU })
            }]
        );
        assert_eq!(
            o.fallbacks(),
            Fallbacks {
                heartbeat_timeout: 0,
                path_mtu: 1
            }
        );
        // Small pongs stop too: the reason becomes a heartbeat timeout, on its own timer.
        let due = o.poll_timeout().unwrap();
        assert_eq!(due, t + FASTDP_TIMEOUT);
        o.handle_timeout(due + ms(1));
        assert_eq!(
            o.path(b),
            Some((Path::Sleeve, Some(NoFastdp::HeartbeatTimeout)))
        );
        // The path heals: full pongs for a stable run bring fastdp back.
        let t1 = due + ms(1000);
        for i in 0..4 {
            o.handle_pong(b, HEARTBEAT_LEN, t1 + FASTDP_HEARTBEAT * i);
            o.handle_pong(b, FULL, t1 + FASTDP_HEARTBEAT * i);
        }
        assert!(drain(&mut o).is_empty());
        o.handle_timeout(o.poll_timeout().unwrap());
        assert_eq!(drain(&mut o)[0].path, Path::Fastdp);
        assert_eq!(o.fallbacks().path_mtu, 1, "a return is no fallback");
    }
}
