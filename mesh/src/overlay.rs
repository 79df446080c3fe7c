//! Overlay selection: which datapath carries each remote peer's frames.
//!
//! Every remote peer is served by exactly one path into the local bridge,
//! the kernel fast datapath (VXLAN) or the sleeve, or the bridge would
//! deliver duplicates (DESIGN §4). Fastdp is preferred when it is allowed
//! (no password, or both ends trust each other's subnet), the peer offered
//! it, and heartbeats that really cross the VXLAN device come back; when they
//! stop, the peer falls back to the sleeve with the reason kept for `status`,
//! and it returns to fastdp once heartbeats have flowed again for a while.
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
/// Length of a heartbeat frame: Ethernet header, magic, kind, name, seq.
pub const HEARTBEAT_LEN: usize = 14 + 4 + 1 + 6 + 8;

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
}

impl Heartbeat {
    /// The Ethernet frame from `src_mac` to `dst_mac`.
    pub fn encode(&self, dst_mac: [u8; 6], src_mac: [u8; 6]) -> [u8; HEARTBEAT_LEN] {
        let mut f = [0u8; HEARTBEAT_LEN];
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
}

impl fmt::Display for NoFastdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoFastdp::Disabled => "fastdp: disabled",
            NoFastdp::Encrypted => "fastdp: encryption required",
            NoFastdp::NotOffered => "fastdp: not offered by peer",
            NoFastdp::Waiting => "fastdp: waiting for heartbeat",
            NoFastdp::HeartbeatTimeout => "fastdp: heartbeat timeout",
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
    last_pong: Option<Instant>,
    /// Start of the current run of answered heartbeats.
    healthy_since: Option<Instant>,
    path: Path,
    reason: Option<NoFastdp>,
    /// Fastdp has worked at least once on this connection.
    was_up: bool,
}

/// Per-peer path selection. Call protocol: feed `handle_*`, then drain
/// [`Overlay::poll_change`]; arm a timer for [`Overlay::poll_timeout`].
#[derive(Debug, Default)]
pub struct Overlay {
    peers: BTreeMap<PeerName, PeerState>,
    changes: VecDeque<PathChange>,
}

impl Overlay {
    /// A selector with no peers.
    pub fn new() -> Overlay {
        Overlay::default()
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

    /// A pong from `peer` came back over the VXLAN path.
    pub fn handle_pong(&mut self, peer: PeerName, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            let fresh = p
                .last_pong
                .is_none_or(|t| now.duration_since(t) > FASTDP_TIMEOUT);
            if fresh {
                p.healthy_since = Some(now);
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
            .filter_map(|p| {
                let pong = p.last_pong?;
                Some(match p.path {
                    Path::Fastdp => pong + FASTDP_TIMEOUT,
                    Path::Sleeve => p.healthy_since? + FASTDP_UPGRADE_AFTER,
                })
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
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let alive = p
            .last_pong
            .is_some_and(|t| now.duration_since(t) <= FASTDP_TIMEOUT);
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
                // The first time, go as soon as a pong proves the path; after a
                // fallback, wait until it has been healthy for a while.
                if p.path == Path::Fastdp || !p.was_up || settled {
                    Ok(())
                } else {
                    Err(NoFastdp::HeartbeatTimeout)
                }
            }
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
        };
        let f = hb.encode([1; 6], [2; 6]);
        assert_eq!(&f[12..14], &[0x88, 0xb5]);
        assert_eq!(Heartbeat::decode(&f), Some(hb));
        let mut bad = f;
        bad[14] = b'X';
        assert_eq!(Heartbeat::decode(&bad), None);
        assert_eq!(Heartbeat::decode(&f[..20]), None);
        let mut arp = f;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(Heartbeat::decode(&arp), None);
    }

    #[test]
    fn peer_starts_on_sleeve_and_moves_to_fastdp_at_first_pong() {
        let t0 = Instant::now();
        let mut o = Overlay::new();
        let b = name(2);
        o.handle_peer_up(b, Ok(()));
        assert_eq!(drain(&mut o)[0].reason, Some(NoFastdp::NotOffered));
        o.handle_fastdp_hello(b, HELLO, t0);
        assert_eq!(o.path(b), Some((Path::Sleeve, Some(NoFastdp::Waiting))));
        assert_eq!(o.probe_targets(), vec![(b, HELLO)]);
        o.handle_pong(b, t0 + Duration::from_millis(10));
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
        let mut o = Overlay::new();
        let b = name(2);
        o.handle_peer_up(b, Ok(()));
        o.handle_fastdp_hello(b, HELLO, t0);
        o.handle_pong(b, t0);
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
        o.handle_pong(b, t1);
        assert!(drain(&mut o).is_empty());
        assert_eq!(
            o.path(b),
            Some((Path::Sleeve, Some(NoFastdp::HeartbeatTimeout)))
        );
        // ...a stable run of them is.
        for i in 1..=4 {
            o.handle_pong(b, t1 + FASTDP_HEARTBEAT * i);
        }
        o.handle_timeout(t1 + FASTDP_UPGRADE_AFTER);
        assert_eq!(drain(&mut o)[0].path, Path::Fastdp);
    }

    #[test]
    fn disallowed_fastdp_never_probes_and_says_why() {
        let t0 = Instant::now();
        let mut o = Overlay::new();
        let b = name(2);
        o.handle_peer_up(b, Err(NoFastdp::Encrypted));
        o.handle_fastdp_hello(b, HELLO, t0);
        o.handle_pong(b, t0);
        assert!(o.probe_targets().is_empty());
        assert_eq!(o.path(b), Some((Path::Sleeve, Some(NoFastdp::Encrypted))));
        assert_eq!(
            o.path(b).unwrap().1.unwrap().to_string(),
            "fastdp: encryption required"
        );
    }
}
