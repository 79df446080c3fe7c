//! The driver: one tokio task that owns the sans-IO [`Mesh`] and moves its
//! inputs (connection reports, API requests, timers) in and its outputs
//! (transmits, dials, closes, events) out. It makes no protocol decision.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use meshnet_mesh::{Action, Channels, ConnId, Event, Mesh, PeerName, Verdict};

use crate::dataplane::{ConnMeta, Dataplane, Heartbeats};
use crate::dns::{DnsRequest, DnsService, DnsSnapshot};
use crate::ipam::{ContainerEvent, IpamRequest, IpamService, IpamSnapshot};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::conn::{self, Answer, ConnReport, Local, MAX_QUEUED_BYTES_PER_CONN, SendQueue};
use crate::persist;

/// A consistent view of the router for status, report and metrics.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub mesh: meshnet_mesh::Status,
    /// Our static public key.
    pub public_key: meshnet_mesh::PublicKey,
    /// How many keys `--authorized-keys` lists, when it is set.
    pub authorized_keys: Option<usize>,
    pub encryption: bool,
    pub trusted_subnets: Vec<String>,
    /// Connections whose two ends trust each other (`--trusted-subnets` on
    /// both): their data may travel unencrypted.
    pub trusted_conns: std::collections::BTreeSet<ConnId>,
    /// IPAM, when enabled.
    pub ipam: Option<IpamSnapshot>,
    /// DNS, when enabled.
    pub dns: Option<DnsSnapshot>,
    /// The datapath serving each connected peer (empty without a data plane).
    pub paths: std::collections::BTreeMap<
        meshnet_mesh::PeerName,
        (
            meshnet_mesh::overlay::Path,
            Option<meshnet_mesh::overlay::NoFastdp>,
        ),
    >,
    /// Overlay MTU, when there is a data plane.
    pub mtu: Option<u32>,
    /// Underlay addresses let in on the fast datapath (UDP 6784).
    pub fastdp_admitted: Vec<std::net::Ipv4Addr>,
    /// How often peers fell back from fastdp to the sleeve, by reason.
    pub fastdp_fallbacks: meshnet_mesh::overlay::Fallbacks,
    /// Sleeve key rotations: (receive keys we replaced, send keys peers replaced).
    pub sleeve_rekeys: (u64, u64),
    /// The sleeve's view of each peer (health, path MTU, counters).
    pub sleeve: std::collections::BTreeMap<meshnet_mesh::PeerName, crate::sleeve::SleevePeerStatus>,
    /// Wall-clock time the snapshot was taken (to render retry times).
    pub taken_at: SystemTime,
    /// The other services running with the router (proxy, plugin).
    pub services: crate::report::Services,
    /// Connections dropped because the peer passed a limit, by what it passed.
    pub limit_disconnects: BTreeMap<String, u64>,
    /// Input dropped (not stored, not relayed) because a table was at its limit, by table.
    pub limit_drops: BTreeMap<String, u64>,
}

impl Snapshot {
    /// Whether connection `c` is encrypted: a password is set and its two
    /// ends do not both trust each other (weave's per-connection
    /// `encrypted` / `unencrypted`).
    pub fn conn_encrypted(&self, c: &meshnet_mesh::LocalConnStatus) -> bool {
        self.encryption && !c.conn.is_some_and(|id| self.trusted_conns.contains(&id))
    }
}

/// The `limit_disconnects` reason of a peer whose send queue passed
/// [`MAX_QUEUED_BYTES_PER_CONN`].
pub const SEND_QUEUE_LIMIT: &str = "queued bytes";

/// Requests from the HTTP API.
#[derive(Debug)]
pub enum ApiRequest {
    Snapshot(oneshot::Sender<Snapshot>),
    Connect {
        peers: Vec<String>,
        replace: bool,
        reply: oneshot::Sender<Result<(), Vec<String>>>,
    },
    Forget {
        peers: Vec<String>,
        reply: oneshot::Sender<()>,
    },
    Ipam(IpamRequest),
    Dns(DnsRequest),
    /// From the Docker watcher: IPAM and DNS follow containers' lives.
    Container {
        event: ContainerEvent,
        reply: crate::ipam::Reply,
    },
    /// Re-read `--authorized-keys` (SIGHUP or `meshnet reload`); the reply says what
    /// changed, or why the file was not taken.
    Reload(Option<oneshot::Sender<Result<String, String>>>),
}

/// Fixed facts the driver needs besides the mesh.
#[derive(Debug)]
pub struct DriverParts {
    pub mesh: Mesh,
    pub local: Arc<Local>,
    pub name_derived: bool,
    /// `--authorized-keys`, re-read on reload.
    pub authorized_keys_file: Option<PathBuf>,
    pub encryption: bool,
    pub trusted_subnets: Vec<ipnet::IpNet>,
    pub targets_file: PathBuf,
    pub ipam: Option<IpamService>,
    pub dns: Option<DnsService>,
    pub dataplane: Option<(Dataplane, Heartbeats)>,
    /// Shown by `status` and `report`.
    pub services: crate::report::Services,
}

/// The driver state.
struct Driver {
    parts: DriverParts,
    writers: HashMap<ConnId, SendQueue>,
    /// Connections dropped because the peer passed a limit, by what it passed.
    limit_disconnects: BTreeMap<String, u64>,
    conn_meta: HashMap<ConnId, ConnMeta>,
    dataplane: Option<Dataplane>,
    reports_tx: conn::Reports,
    next_conn: u64,
}

/// Runs the driver until `shutdown` fires.
pub async fn run(
    mut parts: DriverParts,
    listener: TcpListener,
    mut api: mpsc::Receiver<ApiRequest>,
    shutdown: CancellationToken,
) {
    let (reports_tx, mut reports) = conn::reports();
    let (accepted_tx, mut accepted) = mpsc::channel::<(TcpStream, std::net::SocketAddr)>(64);
    let accept_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok(pair) => { if accepted_tx.send(pair).await.is_err() { break; } }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                _ = accept_shutdown.cancelled() => break,
            }
        }
    });

    let (dataplane, mut heartbeats) = match parts.dataplane.take() {
        Some((dp, hb)) => (Some(dp), Some(hb)),
        None => (None, None),
    };
    let mut d = Driver {
        parts,
        conn_meta: HashMap::new(),
        dataplane,
        writers: HashMap::new(),
        limit_disconnects: BTreeMap::new(),
        reports_tx,
        next_conn: 1,
    };
    loop {
        d.drain();
        let ipam_deadline = d.parts.ipam.as_ref().and_then(IpamService::poll_timeout);
        let dns_deadline = d.parts.dns.as_ref().and_then(DnsService::poll_timeout);
        let dp_deadline = d.dataplane.as_ref().and_then(Dataplane::poll_timeout);
        let deadline = [
            d.parts.mesh.poll_timeout(),
            ipam_deadline,
            dns_deadline,
            dp_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        let heartbeat = async {
            match &mut heartbeats {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(report) = reports.recv() => d.on_report(report),
            Some((stream, addr)) = accepted.recv() => d.on_accept(stream, addr),
            Some(req) = api.recv() => d.on_api(req),
            Some((hb, src)) = heartbeat => {
                if let Some(dp) = &mut d.dataplane {
                    dp.on_heartbeat(hb, src, Instant::now());
                }
            }
            _ = sleep => d.on_timer(),
            _ = shutdown.cancelled() => break,
        }
    }
    info!("router stopping");
    d.drain();
    d.flush_connections(&mut reports).await;
}

/// How long a stopping router waits for its connections to write what is queued (the
/// gossip of a `reset`'s IP space handover among it) before it closes them anyway.
pub const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// The gossip channels of the application: IPAM and DNS, each when enabled.
struct AppChannels<'a> {
    ipam: Option<&'a mut IpamService>,
    dns: Option<&'a mut DnsService>,
}

impl<'a> AppChannels<'a> {
    fn new(
        ipam: &'a mut Option<IpamService>,
        dns: &'a mut Option<DnsService>,
        now: Instant,
    ) -> AppChannels<'a> {
        if let Some(s) = ipam.as_mut() {
            s.set_now(now);
        }
        if let Some(s) = dns.as_mut() {
            s.set_now(now);
        }
        let (ipam, dns) = (ipam.as_mut(), dns.as_mut());
        AppChannels { ipam, dns }
    }
}

impl Channels for AppChannels<'_> {
    fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(i) = &self.ipam {
            v.extend(i.names());
        }
        if self.dns.is_some() {
            v.push(crate::dns::CHANNEL.to_string());
        }
        v
    }

    fn full_state(&mut self, channel: &str) -> Option<Vec<u8>> {
        match (channel, &mut self.ipam, &mut self.dns) {
            (crate::dns::CHANNEL, _, Some(d)) => Some(d.full_state()),
            (_, Some(i), _) => i.full_state(channel),
            _ => None,
        }
    }

    fn on_gossip(
        &mut self,
        channel: &str,
        src: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        match (channel, &mut self.ipam, &mut self.dns) {
            (crate::dns::CHANNEL, _, Some(d)) => d.on_gossip(src, payload),
            (_, Some(i), _) => i.on_gossip(channel, src, payload),
            _ => Ok(None),
        }
    }

    fn on_broadcast(&mut self, channel: &str, src: PeerName, payload: &[u8]) -> Result<(), String> {
        match (channel, &mut self.ipam, &mut self.dns) {
            (crate::dns::CHANNEL, _, Some(d)) => d.on_broadcast(src, payload),
            (_, Some(i), _) => i.on_broadcast(channel, src, payload),
            _ => Ok(()),
        }
    }

    fn on_unicast(&mut self, channel: &str, src: PeerName, payload: &[u8]) -> Result<(), String> {
        match (channel, &mut self.ipam) {
            (crate::dns::CHANNEL, _) => Ok(()),
            (_, Some(i)) => i.on_unicast(channel, src, payload),
            _ => Ok(()),
        }
    }
}

impl Driver {
    /// Closes every connection once its queue is written, waiting at most
    /// [`SHUTDOWN_FLUSH`] for all of them; what is still unwritten then is dropped.
    async fn flush_connections(&mut self, reports: &mut mpsc::Receiver<ConnReport>) {
        let mut open: std::collections::HashSet<ConnId> = self.writers.keys().copied().collect();
        let tokens: Vec<CancellationToken> =
            self.writers.drain().map(|(_, q)| q.finish()).collect();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH;
        while !open.is_empty() {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(ConnReport::Closed { conn, .. })) => {
                    open.remove(&conn);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        connections = open.len(),
                        "stopping with unwritten messages: peers did not read within {SHUTDOWN_FLUSH:?}"
                    );
                    break;
                }
            }
        }
        for t in tokens {
            t.cancel();
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.parts.mesh.poll_timeout().is_some_and(|t| t <= now) {
            let mut ch = AppChannels::new(&mut self.parts.ipam, &mut self.parts.dns, now);
            self.parts.mesh.handle_timeout(now, &mut ch);
        }
        if let Some(dns) = &mut self.parts.dns
            && dns.poll_timeout().is_some_and(|t| t <= now)
        {
            dns.handle_timeout(now);
        }
        if let Some(ipam) = &mut self.parts.ipam
            && ipam.poll_timeout().is_some_and(|t| t <= now)
        {
            ipam.handle_timeout(now);
        }
        if let Some(dp) = &mut self.dataplane
            && dp.poll_timeout().is_some_and(|t| t <= now)
        {
            dp.on_timer(&mut self.parts.mesh, now);
        }
    }

    fn conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    fn hello(&self) -> meshnet_mesh::Hello {
        let mut hello = self.parts.mesh.hello(rand::random::<u64>(), false);
        hello.name_derived = self.parts.name_derived;
        hello
    }

    fn on_accept(&mut self, stream: TcpStream, addr: std::net::SocketAddr) {
        if !self.parts.mesh.accept_allowed(Instant::now()) {
            warn!(peer_addr = %addr, "too many incoming connections; dropping one");
            return;
        }
        let conn = self.conn_id();
        let hello = self.hello();
        tokio::spawn(conn::accept(
            conn,
            stream,
            addr,
            self.parts.local.clone(),
            hello,
            self.reports_tx.clone(),
        ));
    }

    fn on_report(&mut self, report: ConnReport) {
        let now = Instant::now();
        match report {
            ConnReport::Handshaked {
                conn,
                info,
                hello,
                remote,
                reply,
            } => {
                let peer = hello.name;
                if reply.is_closed() {
                    // The connection task stopped waiting for us (its handshake deadline
                    // passed while this report queued behind others, as on an overloaded
                    // machine): registering it now would announce a link that is already
                    // gone, a ConnectionUp and a topology delta to every peer followed at
                    // once by a ConnectionDown and another delta. The task reports its
                    // failure itself (a dialled target backs off).
                    info!(peer = %peer, conn = conn.0, "handshake given up before the mesh saw it");
                    return;
                }
                if let Some(Verdict::Refused(refusal)) = &remote {
                    let answer = match self.parts.mesh.handle_refused(&info, &hello, refusal, now) {
                        Ok(()) => Answer::PeerRefused,
                        Err(e) => {
                            warn!(peer = %peer, error = %e, "ignoring the refusal of a peer we refuse");
                            Answer::Refuse(e.refusal())
                        }
                    };
                    let _ = reply.send(answer);
                    return;
                }
                let meta = ConnMeta {
                    remote_ip: info.remote_addr.ip(),
                    remote_trusts_us: hello.trusted,
                    we_trust_remote: self.parts.local.trusts(info.remote_addr.ip()),
                };
                match self.parts.mesh.handle_connection(conn, info, *hello, now) {
                    Ok(()) => {
                        self.conn_meta.insert(conn, meta);
                        let (tx, rx) = conn::send_queue(MAX_QUEUED_BYTES_PER_CONN);
                        self.writers.insert(conn, tx);
                        if reply.send(Answer::Accept(rx)).is_err() {
                            self.writers.remove(&conn);
                            self.parts
                                .mesh
                                .handle_closed(conn, "connection task ended", now);
                        }
                    }
                    Err(e) => {
                        warn!(peer = %peer, error = %e, "connection refused");
                        let _ = reply.send(Answer::Refuse(e.refusal()));
                    }
                }
            }
            ConnReport::DialFailed { target, error } => {
                self.parts.mesh.handle_dial_failed(&target, error, now);
            }
            ConnReport::InboundFailed { .. } => {}
            ConnReport::Message {
                conn,
                bytes,
                budget,
            } => {
                let mut ch = AppChannels::new(&mut self.parts.ipam, &mut self.parts.dns, now);
                self.parts.mesh.handle_message(conn, &bytes, now, &mut ch);
                // Handled: the reader may take that much more from the socket.
                drop(budget);
            }
            ConnReport::Closed { conn, reason } => {
                self.conn_meta.remove(&conn);
                if self.writers.remove(&conn).is_some() {
                    self.parts.mesh.handle_closed(conn, &reason, now);
                }
            }
        }
    }

    fn on_api(&mut self, req: ApiRequest) {
        let now = Instant::now();
        match req {
            ApiRequest::Snapshot(reply) => {
                let _ = reply.send(Snapshot {
                    mesh: self.parts.mesh.status(now),
                    public_key: self.parts.mesh.key(),
                    authorized_keys: self.parts.mesh.authorized_keys().map(|k| k.len()),
                    encryption: self.parts.encryption,
                    trusted_subnets: self
                        .parts
                        .trusted_subnets
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    trusted_conns: self
                        .conn_meta
                        .iter()
                        .filter(|(_, m)| m.remote_trusts_us && m.we_trust_remote)
                        .map(|(id, _)| *id)
                        .collect(),
                    ipam: self.parts.ipam.as_ref().map(IpamService::snapshot),
                    dns: self.parts.dns.as_ref().map(DnsService::snapshot),
                    paths: self
                        .dataplane
                        .as_ref()
                        .map(Dataplane::paths)
                        .unwrap_or_default(),
                    mtu: self.dataplane.as_ref().map(Dataplane::mtu),
                    fastdp_admitted: self
                        .dataplane
                        .as_ref()
                        .map(|d| d.admitted().into_iter().collect())
                        .unwrap_or_default(),
                    fastdp_fallbacks: self
                        .dataplane
                        .as_ref()
                        .map(Dataplane::fastdp_fallbacks)
                        .unwrap_or_default(),
                    sleeve_rekeys: self
                        .dataplane
                        .as_ref()
                        .map(Dataplane::sleeve_rekeys)
                        .unwrap_or_default(),
                    sleeve: self
                        .dataplane
                        .as_ref()
                        .map(Dataplane::sleeve_status)
                        .unwrap_or_default(),
                    taken_at: SystemTime::now(),
                    services: self.parts.services.clone(),
                    limit_disconnects: self.limit_disconnects.clone(),
                    limit_drops: self.limit_drops(),
                });
            }
            ApiRequest::Connect {
                peers,
                replace,
                reply,
            } => {
                let _ = reply.send(self.parts.mesh.connect(&peers, replace, now));
            }
            ApiRequest::Forget { peers, reply } => {
                self.parts.mesh.forget(&peers, now);
                let _ = reply.send(());
            }
            ApiRequest::Reload(reply) => {
                let result = self.reload(now);
                match &result {
                    Ok(m) => info!(result = %m, "reloaded"),
                    Err(e) => warn!(error = %e, "reload failed; the previous key list stays"),
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            ApiRequest::Ipam(req) => {
                if let IpamRequest::RmPeer { peer, .. } = &req {
                    let named = self.peers_named(peer, now);
                    if let Some(dns) = &mut self.parts.dns {
                        named.into_iter().for_each(|p| dns.forget_peer(p));
                    }
                }
                match &mut self.parts.ipam {
                    Some(ipam) => ipam.handle_request(req, &self.parts.mesh, now),
                    None => req.refuse_disabled(),
                }
            }
            ApiRequest::Dns(req) => match &mut self.parts.dns {
                Some(dns) => dns.handle_request(req, now),
                None => req.refuse_disabled(),
            },
            ApiRequest::Container { event, reply } => {
                // A dead container's names go at once (tombstoned on every
                // peer; a restart registers them again), its addresses only
                // after IPAM's grace period.
                if let (Some(dns), ContainerEvent::Died(id) | ContainerEvent::Destroyed(id)) =
                    (&mut self.parts.dns, &event)
                {
                    dns.container_died(id, now);
                }
                match &mut self.parts.ipam {
                    Some(ipam) => ipam.handle_container(event, reply, now),
                    None => {
                        let _ = reply.send((204, String::new()));
                    }
                }
            }
        }
    }

    /// Re-reads `--authorized-keys` and drops connections whose key left it.
    fn reload(&mut self, now: Instant) -> Result<String, String> {
        let Some(path) = &self.parts.authorized_keys_file else {
            return Err(
                "nothing to reload: the router was launched without --authorized-keys".into(),
            );
        };
        let keys = crate::authorized::load(path)?;
        let n = keys.len();
        let dropped = self.parts.mesh.set_authorized_keys(Some(keys), now);
        let mut msg = format!("{n} authorized keys from {}", path.display());
        if !dropped.is_empty() {
            let names: Vec<String> = dropped.iter().map(ToString::to_string).collect();
            msg.push_str(&format!(
                "; dropped the connections of {}",
                names.join(", ")
            ));
        }
        Ok(msg)
    }

    /// Moves everything the mesh wants done out to the world.
    fn drain(&mut self) {
        let now = Instant::now();
        loop {
            let mut progressed = false;
            while let Some(t) = self.parts.mesh.poll_transmit() {
                progressed = true;
                let Some(tx) = self.writers.get(&t.conn) else {
                    continue;
                };
                if let Err(e) = tx.push(t.bytes) {
                    if matches!(e, conn::SendError::Full { .. }) {
                        warn!(conn = t.conn.0, error = %e, "peer passed a limit; closing");
                        self.count_limit_disconnect(SEND_QUEUE_LIMIT);
                    }
                    self.writers.remove(&t.conn);
                    self.parts.mesh.handle_closed(t.conn, &e.to_string(), now);
                }
            }
            while let Some(action) = self.parts.mesh.poll_action() {
                progressed = true;
                match action {
                    Action::Dial { target, addr } => {
                        let conn = self.conn_id();
                        let hello = self.hello();
                        tokio::spawn(conn::dial(
                            conn,
                            target,
                            addr,
                            self.parts.local.clone(),
                            hello,
                            self.reports_tx.clone(),
                        ));
                    }
                    Action::Close { conn, reason } => {
                        if let meshnet_mesh::CloseReason::LimitExceeded { what, .. } = &reason {
                            warn!(conn = conn.0, %reason, "peer passed a limit; closing");
                            self.count_limit_disconnect(what);
                        }
                        // Dropping the queue ends the writer, which shuts the socket.
                        if self.writers.remove(&conn).is_some() {
                            self.parts
                                .mesh
                                .handle_closed(conn, &reason.to_string(), now);
                        }
                    }
                }
            }
            while let Some(event) = self.parts.mesh.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            if let Some(ipam) = &mut self.parts.ipam {
                ipam.drain(&mut self.parts.mesh);
            }
            if let Some(dns) = &mut self.parts.dns {
                dns.drain(&mut self.parts.mesh);
            }
            if !progressed {
                break;
            }
        }
    }

    fn limit_drops(&self) -> BTreeMap<String, u64> {
        let mut drops = BTreeMap::new();
        drops.insert(
            "unknown-channel gossip".to_string(),
            self.parts.mesh.surrogate_dropped(),
        );
        if let Some(dp) = &self.dataplane {
            drops.insert("sleeve MACs".to_string(), dp.macs_refused());
        }
        drops
    }

    fn count_limit_disconnect(&mut self, what: &str) {
        *self.limit_disconnects.entry(what.to_string()).or_default() += 1;
    }

    /// The peers `name` means: a peer name, or every peer with that nickname.
    fn peers_named(&self, name: &str, now: Instant) -> Vec<PeerName> {
        if let Ok(p) = name.parse::<PeerName>() {
            return vec![p];
        }
        self.parts
            .mesh
            .status(now)
            .peers
            .into_iter()
            .filter(|p| p.nickname == name)
            .map(|p| p.name)
            .collect()
    }

    fn peers_changed(&mut self) {
        let now = Instant::now();
        if let Some(ipam) = &mut self.parts.ipam {
            ipam.handle_peers(&self.parts.mesh, now);
        }
        if let Some(dns) = &mut self.parts.dns {
            dns.handle_peers(&self.parts.mesh, now);
        }
        if let Some(dp) = &mut self.dataplane {
            dp.update_forwarding(&self.parts.mesh, now);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::PeerAdded(p) => {
                info!(peer = %p, "peer added");
                self.peers_changed();
            }
            Event::PeerRemoved(p) => {
                info!(peer = %p, "removed unreachable peer");
                self.peers_changed();
            }
            Event::PeerRestarted(p) => {
                info!(peer = %p, "peer restarted");
                self.peers_changed();
            }
            Event::ConnectionUp { conn, peer } => {
                info!(peer = %peer, conn = conn.0, "connection established");
                if let (Some(dp), Some(meta)) = (&mut self.dataplane, self.conn_meta.get(&conn)) {
                    dp.on_connection_up(&mut self.parts.mesh, conn, peer, *meta);
                    dp.update_forwarding(&self.parts.mesh, Instant::now());
                }
            }
            Event::ConnectionDown { conn, peer, reason } => {
                info!(peer = %peer, conn = conn.0, %reason, "connection down");
                if let Some(dp) = &mut self.dataplane {
                    dp.on_connection_down(conn, peer);
                    dp.update_forwarding(&self.parts.mesh, Instant::now());
                }
            }
            Event::OverlayControl { peer, bytes, .. } => {
                if let Some(dp) = &mut self.dataplane {
                    dp.on_overlay_control(peer, &bytes, Instant::now());
                }
            }
            Event::TargetsChanged => {
                let targets = self.parts.mesh.targets();
                if let Err(e) = persist::write_json(&self.parts.targets_file, &targets) {
                    warn!(error = %e, "cannot persist the target list");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshnet_mesh::{Config, ConnInfo, Hello, PeerUid, PublicKey, ShortId};

    fn name(v: u64) -> PeerName {
        PeerName::new(v).unwrap()
    }

    fn driver(now: Instant) -> Driver {
        let mesh = Mesh::new(
            Config {
                name: name(1),
                key: PublicKey([1; 32]),
                nickname: "one".into(),
                uid: PeerUid(11),
                short_id: ShortId::new(1).unwrap(),
                port: 6783,
                conn_limit: 0,
                discovery: false,
                seed: 1,
            },
            now,
        );
        let parts = DriverParts {
            mesh,
            local: Arc::new(Local {
                private_key: vec![0; 32],
                psk: None,
                trusted_subnets: Vec::new(),
            }),
            name_derived: false,
            authorized_keys_file: None,
            encryption: false,
            trusted_subnets: Vec::new(),
            targets_file: std::env::temp_dir().join("meshnet-driver-test-targets.json"),
            ipam: None,
            dns: None,
            dataplane: None,
            services: crate::report::Services::default(),
        };
        let (reports_tx, _) = conn::reports();
        Driver {
            parts,
            writers: HashMap::new(),
            limit_disconnects: BTreeMap::new(),
            conn_meta: HashMap::new(),
            dataplane: None,
            reports_tx,
            next_conn: 1,
        }
    }

    fn handshaked(reply: oneshot::Sender<Answer>) -> ConnReport {
        ConnReport::Handshaked {
            conn: ConnId(7),
            info: ConnInfo {
                outbound: false,
                remote_addr: "192.0.2.2:40000".parse().unwrap(),
                target: None,
                local_conn_half: 5,
                remote_key: PublicKey([2; 32]),
            },
            hello: Box::new(Hello {
                name: name(2),
                name_derived: false,
                nickname: "two".into(),
                uid: PeerUid(22),
                conn_half: 9,
                short_id: ShortId::new(2).unwrap(),
                listen_port: 6783,
                trusted: false,
            }),
            remote: None,
            reply,
        }
    }

    /// A connection whose task gave up before the driver got to its report never reaches
    /// the mesh: no ConnectionUp/Down pair, and our record (so every peer's) unchanged.
    #[test]
    fn a_handshake_given_up_while_queued_is_not_registered() {
        let now = Instant::now();
        let mut d = driver(now);
        let version = d.parts.mesh.status(now).version;
        let (reply, answer) = oneshot::channel();
        drop(answer);
        d.on_report(handshaked(reply));
        let events: Vec<Event> = std::iter::from_fn(|| d.parts.mesh.poll_event()).collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::ConnectionUp { .. })),
            "{events:?}"
        );
        assert_eq!(d.parts.mesh.status(now).version, version);
        assert!(d.writers.is_empty());
    }

    /// The same report with its task still waiting is registered and answered.
    #[test]
    fn a_waiting_handshake_is_registered() {
        let now = Instant::now();
        let mut d = driver(now);
        let (reply, mut answer) = oneshot::channel();
        d.on_report(handshaked(reply));
        assert!(matches!(answer.try_recv(), Ok(Answer::Accept(_))));
        assert_eq!(d.parts.mesh.conn_to(name(2)), Some(ConnId(7)));
    }
}
