//! The router's data plane: the `meshnet` bridge, the fast datapath and the
//! per-peer overlay selection, glued to the driver's connection events.
//!
//! Everything decided here is decided by [`Overlay`] (sans-IO); this module
//! feeds it connection events, fastdp hellos and heartbeats, sends the
//! heartbeats it asks for, and hands its path changes to the kernel task.
//! It also computes the fastdp admission set (the underlay addresses of
//! connected peers allowed on fastdp) that [`crate::admission`] keeps in the
//! kernel: no VXLAN device exists until that filter is in place, and none
//! at all when a password is set without trusted subnets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use meshnet_mesh::overlay::{
    FASTDP_HEARTBEAT, Fallbacks, FastdpHello, HEARTBEAT_LEN, Heartbeat, HeartbeatKind, NoFastdp,
    Overlay, Path, SUBTAG_FASTDP, SUBTAG_SLEEVE,
};
use meshnet_mesh::{ConnId, Mesh, PeerName};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use meshnet_mesh::sleeve::{Forwarding, PeerPath, SleeveHello};

use crate::datapath::{self, LinkInfo, Mac, Netlink, Netns};
use crate::fastdp::{self, Fastdp, KernelCmd};
use crate::sleeve::{Sleeve, SleeveConfig, SleevePeerStatus};

/// Name of the bridge containers attach to (weave's is `weave`).
pub const BRIDGE_NAME: &str = "meshnet";

/// Why the data plane could not start; each keeps its own advice.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Datapath(#[from] datapath::DatapathError),
    #[error(transparent)]
    Sleeve(#[from] crate::sleeve::SleeveError),
}

/// Data-plane settings from `launch`.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Overlay MTU of the bridge and container interfaces.
    pub mtu: u32,
    /// `--no-fastdp` turns the kernel fast datapath off.
    pub fastdp: bool,
    /// UDP port of the sleeve (the TCP control port's number, as weave).
    pub sleeve_port: u16,
    /// How long a sleeve receive key lives before it is rotated (capped at
    /// [`meshnet_mesh::sleeve::REKEY_AFTER_TIME`]; shorter only to test rotation).
    pub sleeve_rekey_after: std::time::Duration,
}

/// What the driver knows about a connection when it comes up.
#[derive(Debug, Clone, Copy)]
pub struct ConnMeta {
    pub remote_ip: std::net::IpAddr,
    /// The remote trusts our address (its Hello said so).
    pub remote_trusts_us: bool,
    /// We trust the remote's address (`--trusted-subnets`).
    pub we_trust_remote: bool,
}

#[derive(Debug)]
struct DpPeer {
    conn: ConnId,
    ip: Option<Ipv4Addr>,
    remote_ip: std::net::IpAddr,
    hello: Option<FastdpHello>,
    /// The sleeve UDP port the peer told us.
    sleeve_port: Option<u16>,
    /// Its VXLAN is let in (connected, allowed on fastdp, IPv4).
    admitted: bool,
}

/// The data plane of one router.
#[derive(Debug)]
pub struct Dataplane {
    cfg: DataplaneConfig,
    encryption: bool,
    pub bridge: LinkInfo,
    fastdp: Option<Fastdp>,
    sleeve: Sleeve,
    /// The last routing snapshot given to the sleeve.
    forwarding: Forwarding,
    kernel: mpsc::UnboundedSender<KernelCmd>,
    /// The fastdp admission set, kept in the kernel by [`crate::admission::run`].
    admission: watch::Sender<BTreeSet<Ipv4Addr>>,
    /// Plaintext VXLAN is possible at all: no password, or trusted subnets.
    plaintext: bool,
    overlay: Overlay,
    peers: BTreeMap<PeerName, DpPeer>,
    local: PeerName,
    seq: u64,
    next_heartbeat: Option<Instant>,
    /// Routes can change without a local event (a link between two other
    /// peers): the sleeve's snapshot is refreshed on this tick too.
    next_forwarding: Instant,
}

/// How often the sleeve's routing snapshot is refreshed without an event.
const FORWARDING_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Heartbeats received on the bridge, with the sending bridge's MAC.
pub type Heartbeats = mpsc::UnboundedReceiver<(Heartbeat, [u8; 6])>;

impl Dataplane {
    /// Creates the bridge and (unless disabled, or impossible because a
    /// password is set and no subnet is trusted) the VXLAN device behind its
    /// admission filter, and starts the kernel and heartbeat tasks.
    pub async fn setup(
        cfg: DataplaneConfig,
        local: PeerName,
        encryption: bool,
        trusted_subnets: bool,
    ) -> Result<(Dataplane, Heartbeats), DataplaneError> {
        let netns = Netns::current()?;
        let nl = Netlink::connect(&netns).await?;
        let bridge = nl.ensure_bridge(BRIDGE_NAME, cfg.mtu).await?;
        // A bridge takes the lowest MAC of its ports unless one is set; fix it
        // to the peer name so the fastdp hello stays true as ports come and go.
        nl.set_mac(bridge.index, Mac(local.to_bytes())).await?;
        let bridge = nl.link(BRIDGE_NAME).await?;
        // Where a firewall drops forwarded traffic by default (Docker sets
        // FORWARD to DROP in the root namespace), let the bridge's own
        // traffic through, as weave does.
        if let Err(e) =
            crate::expose::ensure_bridge_forwarding(&Netns::current()?, BRIDGE_NAME).await
        {
            warn!(error = %e, "cannot add forwarding rules for the bridge; bridged traffic may be dropped by the host firewall");
        }
        let (kernel, cmds) = mpsc::unbounded_channel();
        let (hb_tx, hb_rx) = mpsc::unbounded_channel();
        let plaintext = !encryption || trusted_subnets;
        let (admission, admitted) = watch::channel(BTreeSet::new());
        // Nothing may be admitted before the filter is in: install it (empty)
        // first, and run without fastdp if that fails.
        let filtered = if cfg.fastdp || !plaintext {
            match crate::admission::sync(&netns, &BTreeSet::new()).await {
                Ok(_) => true,
                Err(e) => {
                    warn!(error = %e, "fast datapath off: cannot install its admission filter (nftables); peers use the sleeve");
                    false
                }
            }
        } else {
            false
        };
        let fastdp = if cfg.fastdp && plaintext && filtered {
            let f = Fastdp::setup(&nl, &bridge, cfg.mtu).await?;
            tokio::spawn(f.heartbeats.clone().receive(hb_tx));
            tokio::spawn(fastdp::run_kernel(nl.clone(), f.vxlan.index, cmds));
            tokio::spawn(crate::admission::run(netns, admitted));
            Some(f)
        } else {
            // A VXLAN device left by an earlier run must not keep listening.
            if let Some(old) = nl.link_by_name(fastdp::VXLAN_NAME).await? {
                nl.delete_link(old.index).await?;
            }
            None
        };
        let sleeve = Sleeve::start(SleeveConfig {
            bridge: BRIDGE_NAME.into(),
            tap_name: crate::sleeve::TAP_NAME.into(),
            udp_port: cfg.sleeve_port,
            mtu: cfg.mtu,
            encrypt: encryption,
            local,
            rekey_after: cfg.sleeve_rekey_after,
            netns: None,
        })
        .await?;
        info!(
            bridge = BRIDGE_NAME,
            mtu = cfg.mtu,
            fastdp = fastdp.is_some(),
            "data plane ready"
        );
        let overlay_mtu = u16::try_from(cfg.mtu).unwrap_or(u16::MAX);
        Ok((
            Dataplane {
                cfg,
                encryption,
                bridge,
                fastdp,
                sleeve,
                forwarding: Forwarding {
                    local,
                    ..Forwarding::default()
                },
                kernel,
                admission,
                plaintext,
                overlay: Overlay::new(overlay_mtu),
                peers: BTreeMap::new(),
                local,
                seq: 0,
                next_heartbeat: None,
                next_forwarding: Instant::now(),
            },
            hb_rx,
        ))
    }

    /// The MTU of the overlay.
    pub fn mtu(&self) -> u32 {
        self.cfg.mtu
    }

    /// A connection to `peer` is up: offer fastdp if we may use it.
    pub fn on_connection_up(
        &mut self,
        mesh: &mut Mesh,
        conn: ConnId,
        peer: PeerName,
        meta: ConnMeta,
    ) {
        let ip = match meta.remote_ip {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        };
        let allowed = if !self.plaintext
            || (self.encryption && !(meta.remote_trusts_us && meta.we_trust_remote))
        {
            Err(NoFastdp::Encrypted)
        } else if self.fastdp.is_none() {
            Err(NoFastdp::Disabled)
        } else if ip.is_none() {
            Err(NoFastdp::NotOffered)
        } else {
            Ok(())
        };
        if let Some(old) = self.peers.insert(
            peer,
            DpPeer {
                conn,
                ip,
                remote_ip: meta.remote_ip,
                hello: None,
                sleeve_port: None,
                admitted: allowed.is_ok(),
            },
        ) {
            self.forget_kernel(&old);
        }
        self.publish_admission();
        self.send_sleeve_key(mesh, conn, peer);
        self.overlay.handle_peer_up(peer, allowed);
        if allowed.is_ok()
            && let Some(f) = &self.fastdp
        {
            mesh.send_overlay_control(conn, f.hello.encode());
        }
        self.apply_changes();
    }

    /// Makes a fresh sleeve receive key for `peer` and sends its hello on `conn`.
    fn send_sleeve_key(&self, mesh: &mut Mesh, conn: ConnId, peer: PeerName) {
        match self.sleeve.new_recv_key(peer) {
            Ok(hello) => {
                let mut bytes = vec![SUBTAG_SLEEVE];
                bytes.extend_from_slice(&hello.encode());
                mesh.send_overlay_control(conn, bytes);
            }
            Err(e) => warn!(%peer, error = %e, "cannot make a sleeve key"),
        }
    }

    /// Rotates every receive key that is old or used enough (the peer keeps sending with the
    /// previous one until our hello arrives; that one stays valid meanwhile).
    fn rotate_sleeve_keys(&mut self, mesh: &mut Mesh, now: Instant) {
        for peer in self.sleeve.keys_due(now) {
            if let Some(conn) = self.peers.get(&peer).map(|p| p.conn) {
                self.send_sleeve_key(mesh, conn, peer);
            }
        }
    }

    /// The connection `conn` to `peer` went down.
    pub fn on_connection_down(&mut self, conn: ConnId, peer: PeerName) {
        if self.peers.get(&peer).is_some_and(|p| p.conn == conn)
            && let Some(old) = self.peers.remove(&peer)
        {
            self.forget_kernel(&old);
            self.overlay.handle_peer_down(peer);
            self.sleeve.forget_peer(peer);
            self.publish_admission();
        }
    }

    /// The underlay addresses whose VXLAN is let in.
    pub fn admitted(&self) -> BTreeSet<Ipv4Addr> {
        self.peers
            .values()
            .filter(|p| p.admitted)
            .filter_map(|p| p.ip)
            .collect()
    }

    fn publish_admission(&self) {
        let want = self.admitted();
        self.admission.send_if_modified(|cur| {
            let changed = *cur != want;
            *cur = want;
            changed
        });
    }

    fn forget_kernel(&self, old: &DpPeer) {
        if let (Some(ip), Some(hello)) = (old.ip, old.hello) {
            let _ = self.kernel.send(KernelCmd::RemovePeer {
                ip,
                mac: Mac(hello.bridge_mac),
            });
        }
    }

    /// An overlay control message (mesh tag 7) arrived from `peer`.
    pub fn on_overlay_control(&mut self, peer: PeerName, bytes: &[u8], now: Instant) {
        match bytes.first() {
            Some(&SUBTAG_FASTDP) => match FastdpHello::decode(bytes) {
                Ok(hello) => {
                    // A hello from a peer we do not admit changes nothing:
                    // no plaintext VXLAN is ever sent to it.
                    let Some(p) = self.peers.get_mut(&peer).filter(|p| p.admitted) else {
                        warn!(%peer, "ignoring a fastdp hello from a peer not allowed on fastdp");
                        return;
                    };
                    p.hello = Some(hello);
                    if let Some(ip) = p.ip {
                        let _ = self.kernel.send(KernelCmd::AddPeer {
                            ip,
                            mac: Mac(hello.bridge_mac),
                        });
                    }
                    self.overlay.handle_fastdp_hello(peer, hello, now);
                    self.arm_heartbeat(now);
                    self.apply_changes();
                }
                Err(e) => warn!(%peer, error = %e, "bad fastdp hello"),
            },
            Some(&SUBTAG_SLEEVE) => match SleeveHello::decode(&bytes[1..]) {
                Ok(hello) => {
                    let Some(p) = self.peers.get_mut(&peer) else {
                        return;
                    };
                    p.sleeve_port = Some(hello.udp_port);
                    if let Err(e) = self.sleeve.handle_hello(peer, p.remote_ip, &hello) {
                        warn!(%peer, error = %e, "sleeve hello refused");
                    }
                }
                Err(e) => warn!(%peer, error = %e, "bad sleeve hello"),
            },
            other => warn!(%peer, subtag = ?other, "unknown overlay control message"),
        }
    }

    /// A heartbeat frame arrived on the bridge.
    pub fn on_heartbeat(&mut self, hb: Heartbeat, src_mac: [u8; 6], now: Instant) {
        let announced = self
            .peers
            .get(&hb.from)
            .and_then(|p| p.hello)
            .is_some_and(|h| h.bridge_mac == src_mac);
        if !announced {
            return;
        }
        match hb.kind {
            HeartbeatKind::Ping => {
                // As long as the ping, so a full-size pong proves the way back too (never
                // longer than our own bridge could send).
                let pong = Heartbeat {
                    kind: HeartbeatKind::Pong,
                    from: self.local,
                    seq: hb.seq,
                    len: hb.len.min(self.overlay.full_heartbeat_len()),
                };
                if let Some(f) = &self.fastdp
                    && let Err(e) = f.heartbeats.send(&pong, src_mac)
                {
                    warn!(error = %e, "cannot send fastdp heartbeat");
                }
            }
            HeartbeatKind::Pong => {
                self.overlay.handle_pong(hb.from, hb.len, now);
                self.apply_changes();
            }
        }
    }

    fn arm_heartbeat(&mut self, now: Instant) {
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now);
        }
    }

    /// When [`Dataplane::on_timer`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.overlay.poll_timeout(),
            self.next_heartbeat,
            Some(self.next_forwarding),
            self.sleeve.rotation_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sends due heartbeats, rotates due sleeve keys and lets the overlay time out silent
    /// paths.
    pub fn on_timer(&mut self, mesh: &mut Mesh, now: Instant) {
        if self.next_forwarding <= now {
            self.next_forwarding = now + FORWARDING_REFRESH;
            self.update_forwarding(mesh, now);
        }
        self.rotate_sleeve_keys(mesh, now);
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            let targets = self.overlay.probe_targets();
            if let Some(f) = &self.fastdp {
                // A small ping proves the path is there, a full-size one that it carries the
                // overlay MTU (the overlay tells a PMTU black hole from a dead path by them).
                let sizes = [HEARTBEAT_LEN, self.overlay.full_heartbeat_len()];
                for (_, hello) in &targets {
                    for len in sizes {
                        self.seq += 1;
                        let ping = Heartbeat {
                            kind: HeartbeatKind::Ping,
                            from: self.local,
                            seq: self.seq,
                            len,
                        };
                        if let Err(e) = f.heartbeats.send(&ping, hello.bridge_mac) {
                            warn!(error = %e, len, "cannot send fastdp heartbeat");
                        }
                    }
                }
            }
            self.next_heartbeat = (!targets.is_empty()).then(|| now + FASTDP_HEARTBEAT);
        }
        self.overlay.handle_timeout(now);
        self.apply_changes();
    }

    fn apply_changes(&mut self) {
        while let Some(c) = self.overlay.poll_change() {
            let Some(ip) = self.peers.get(&c.peer).and_then(|p| p.ip) else {
                continue;
            };
            match (c.path, c.reason) {
                (Path::Fastdp, _) => info!(peer = %c.peer, "using fast datapath"),
                (Path::Sleeve, Some(why)) => info!(peer = %c.peer, reason = %why, "using sleeve"),
                (Path::Sleeve, None) => info!(peer = %c.peer, "using sleeve"),
            }
            // Tell the sleeve first (which frames it may deliver), then the
            // kernel: the sleeve must never refuse a peer's frames while the
            // bridge still sends them its way.
            self.refresh_fastdp_flags();
            if self.fastdp.is_some() {
                let _ = self.kernel.send(KernelCmd::SetPath { ip, path: c.path });
            }
        }
    }

    /// Brings the sleeve snapshot's per-peer fastdp flags in line with the
    /// overlay at once, without waiting for the next routing refresh.
    fn refresh_fastdp_flags(&mut self) {
        let fastdp: std::collections::BTreeSet<PeerName> =
            self.overlay.fastdp_peers().into_iter().collect();
        let mut f = self.forwarding.clone();
        for (name, path) in f.peers.iter_mut() {
            path.fastdp = fastdp.contains(name);
        }
        if f != self.forwarding {
            self.sleeve.set_forwarding(f.clone());
            self.forwarding = f;
        }
    }

    /// Recomputes the sleeve's routing snapshot from the mesh's routes and
    /// the overlay's choices; publishes it when it changed.
    pub fn update_forwarding(&mut self, mesh: &Mesh, now: Instant) {
        let status = mesh.status(now);
        let mut f = Forwarding {
            local: self.local,
            ..Forwarding::default()
        };
        let fastdp: std::collections::BTreeSet<PeerName> =
            self.overlay.fastdp_peers().into_iter().collect();
        for p in &status.peers {
            if p.name == self.local {
                continue;
            }
            let udp = self
                .peers
                .get(&p.name)
                .and_then(|d| Some(std::net::SocketAddr::new(d.remote_ip, d.sleeve_port?)));
            f.peers.insert(
                p.name,
                PeerPath {
                    udp,
                    fastdp: fastdp.contains(&p.name),
                },
            );
        }
        for r in &status.unicast_routes {
            f.unicast.insert(r.dest, r.via);
        }
        for r in &status.broadcast_routes {
            f.broadcast.insert(r.source, r.via.clone());
        }
        if f != self.forwarding {
            self.sleeve.set_forwarding(f.clone());
            self.forwarding = f;
        }
    }

    /// The sleeve's view of each peer (health, path MTU).
    pub fn sleeve_status(&self) -> BTreeMap<PeerName, SleevePeerStatus> {
        self.sleeve.status()
    }

    /// Sleeve key rotations: (receive keys we replaced, send keys peers replaced).
    pub fn sleeve_rekeys(&self) -> (u64, u64) {
        let c = self.sleeve.counters();
        (c.rekeys_sent, c.rekeys_received)
    }

    /// Source MACs the sleeve did not learn because its MAC table was at a limit.
    pub fn macs_refused(&self) -> u64 {
        self.sleeve.macs_refused()
    }

    /// How often peers fell back from fastdp to the sleeve, by reason.
    pub fn fastdp_fallbacks(&self) -> Fallbacks {
        self.overlay.fallbacks()
    }

    /// The path serving each connected peer, and why when not fastdp.
    pub fn paths(&self) -> BTreeMap<PeerName, (Path, Option<NoFastdp>)> {
        self.peers
            .keys()
            .filter_map(|p| Some((*p, self.overlay.path(*p)?)))
            .collect()
    }
}
