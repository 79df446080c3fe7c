//! IPAM inside the router: the sans-IO [`Ipam`] wired to the mesh's `ipam`
//! gossip channel, to crash-safe persistence, and to API requests.
//!
//! The call protocol of [`Ipam`] is kept here in one place ([`IpamService::drain`]):
//! after every input, persist first, then send, then deliver events, and only
//! then answer callers. A kill -9 can therefore lose only what nobody was told.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshnet_ipam::{Allocation, Cidr, Event, Ident, Ipam, Persisted, RequestId, Transmit};
use meshnet_mesh::{Channels, Mesh, PeerName};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::persist;

/// The gossip channel name.
pub const CHANNEL: &str = "ipam";
/// File (in the data dir) holding the persisted ring and allocations.
pub const STATE_FILE: &str = "ipam.json";

/// How long an allocation waits for the ring (IPAM consensus) before its
/// caller is told, in words, what it waits for; under the API client's own
/// answer timeout, so callers never see a bare timeout.
pub const RING_WAIT: Duration = Duration::from_secs(20);

/// IPAM settings from `launch`.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub range: Cidr,
    pub default_subnet: Option<Cidr>,
    pub init: meshnet_ipam::Init,
    pub reclaim_after: Option<Duration>,
}

/// An API answer: HTTP status code and body.
pub type Reply = oneshot::Sender<(u16, String)>;

/// Requests the HTTP API forwards to IPAM (weave's IPAM routes).
#[derive(Debug)]
pub enum IpamRequest {
    /// `POST /ip/{id}[/{subnet}][?check-alive=true]`
    Allocate {
        ident: String,
        subnet: Option<Cidr>,
        /// Released when the container `ident` dies (weave's `check-alive`).
        check_alive: bool,
        reply: Reply,
    },
    /// `PUT /ip/{id}/{ip}/{len}[?check-alive=true]`
    Claim {
        ident: String,
        addr: Cidr,
        no_error_on_unknown: bool,
        check_alive: bool,
        reply: Reply,
    },
    /// `GET /ip/{id}[/{subnet}]`
    Lookup {
        ident: String,
        subnet: Option<Cidr>,
        reply: Reply,
    },
    /// `DELETE /ip/{id}[/{ip}]`
    Free {
        ident: String,
        addr: Option<std::net::Ipv4Addr>,
        reply: Reply,
    },
    /// `GET /ring`
    Prime { reply: Reply },
    /// `DELETE /peer/{name}`
    RmPeer { peer: String, reply: Reply },
    /// `DELETE /peer`
    Leave { reply: Reply },
    /// `GET /ipinfo/defaultsubnet`
    DefaultSubnet { reply: Reply },
    /// `GET /ipinfo/owner/{ip}`: the identity holding an address here.
    Owner {
        addr: std::net::Ipv4Addr,
        reply: Reply,
    },
    /// `GET /ipinfo/held?prefix=P`: `IDENT CIDR` lines for every address
    /// held here by an identity starting with `P`.
    Held { prefix: String, reply: Reply },
}

/// What the Docker watcher reports about containers (`POST
/// /containers/{id}/died|started|destroyed`, `PUT /containers/running`).
/// IPAM keeps a dead container's addresses for the grace period
/// ([`meshnet_ipam::DEFAULT_GRACE`]), DNS drops its names at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEvent {
    Died(String),
    Started(String),
    Destroyed(String),
    /// Every running container, sent whenever the watcher (re)connects to
    /// Docker: those that died while nobody watched are marked dead.
    Running(std::collections::BTreeSet<String>),
}

impl IpamRequest {
    /// Answers 404, as weave does when IPAM is off (its clients rely on it).
    pub fn refuse_disabled(self) {
        let reply = match self {
            IpamRequest::Allocate { reply, .. }
            | IpamRequest::Claim { reply, .. }
            | IpamRequest::Lookup { reply, .. }
            | IpamRequest::Free { reply, .. }
            | IpamRequest::Prime { reply }
            | IpamRequest::RmPeer { reply, .. }
            | IpamRequest::Leave { reply }
            | IpamRequest::DefaultSubnet { reply }
            | IpamRequest::Owner { reply, .. }
            | IpamRequest::Held { reply, .. } => reply,
        };
        let _ = reply.send((
            404,
            "IP address allocation is disabled: launch with --ipalloc-range CIDR to use it\n"
                .into(),
        ));
    }
}

/// What status, report and metrics show of IPAM.
#[derive(Debug, Clone)]
pub struct IpamSnapshot {
    pub status: meshnet_ipam::Status,
    pub lines: Vec<String>,
    pub metrics: meshnet_ipam::Metrics,
}

/// IPAM as the driver owns it.
#[derive(Debug)]
pub struct IpamService {
    ipam: Ipam,
    state_file: PathBuf,
    /// Set by the driver before each input: the `Channels` callbacks carry no time.
    now: Instant,
    /// Callers of pending requests, with when they asked.
    waiting: BTreeMap<RequestId, (Reply, Instant)>,
    ring_waiters: Vec<Reply>,
    /// Answers that wait for the next successful persist.
    ready: Vec<(Reply, (u16, String))>,
}

impl IpamService {
    /// Restores persisted state from `data_dir`, or starts fresh (logging why).
    pub fn start(
        cfg: IpamConfig,
        name: PeerName,
        nickname: &str,
        data_dir: &std::path::Path,
        seed: u64,
        now: Instant,
    ) -> Result<IpamService, persist::PersistError> {
        let state_file = data_dir.join(STATE_FILE);
        let mut icfg = meshnet_ipam::Config::new(name, cfg.range, cfg.init);
        if let Some(d) = cfg.default_subnet {
            icfg.default_subnet = d;
        }
        icfg.reclaim_unreachable_after = cfg.reclaim_after;
        let persisted: Option<Persisted> = persist::read_json(&state_file)?;
        let (mut ipam, problem) = Ipam::restore_or_new(icfg, persisted, seed);
        if let Some(e) = problem {
            warn!(file = %state_file.display(), error = %e, "not using persisted IPAM state");
        }
        ipam.set_nickname(nickname);
        Ok(IpamService {
            ipam,
            state_file,
            now,
            waiting: BTreeMap::new(),
            ring_waiters: Vec::new(),
            ready: Vec::new(),
        })
    }

    /// Sets the time the next `Channels` callbacks happen at.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// When [`IpamService::handle_timeout`] is due: IPAM's own timer, or
    /// the end of a caller's [`RING_WAIT`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wait_ends = self.waiting_for_ring().map(|t| t + RING_WAIT);
        match (self.ipam.poll_timeout(), wait_ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the oldest caller waiting for the ring asked, if any waits.
    fn waiting_for_ring(&self) -> Option<Instant> {
        if self.ipam.ring().is_some() {
            return None;
        }
        self.waiting.values().map(|(_, t)| *t).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ipam.poll_timeout().is_some_and(|t| t <= now) {
            self.ipam.handle_timeout(now);
        }
        if self.ipam.ring().is_some() {
            return;
        }
        let expired: Vec<RequestId> = self
            .waiting
            .iter()
            .filter(|(_, (_, t))| now.saturating_duration_since(*t) >= RING_WAIT)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return;
        }
        let why = self.ring_wait_reason();
        for id in expired {
            self.ipam.cancel(id);
            if let Some((reply, _)) = self.waiting.remove(&id) {
                let _ = reply.send((503, format!("{why}\n")));
            }
        }
    }

    /// Why there is no ring yet, and what to do, in words.
    fn ring_wait_reason(&self) -> String {
        match self.ipam.status().paxos {
            Some(p) if p.elector => {
                let peers = if p.known_nodes == 1 { "peer" } else { "peers" };
                format!(
                    "waiting for IPAM consensus: quorum {}, {} {peers} known — launch the other peers or use --ipalloc-init",
                    p.quorum, p.known_nodes
                )
            }
            _ => format!(
                "waiting for the IP allocation ring ({}): no peer with IP space is reachable — connect to one, or launch with --ipalloc-init",
                self.ipam.status_string()
            ),
        }
    }

    /// The mesh's peers changed: tell IPAM who is reachable.
    pub fn handle_peers(&mut self, mesh: &Mesh, now: Instant) {
        let known = mesh
            .status(now)
            .peers
            .into_iter()
            .map(|p| (p.name, p.nickname))
            .collect();
        self.ipam.handle_peers_changed(known, now);
    }

    /// Before a `reset`: tell IPAM only the peers we reach at this moment
    /// (a peer whose connections closed keeps its record until garbage
    /// collection), so that it hands our space to one that can take it.
    pub fn restrict_to_reachable(&mut self, mesh: &Mesh, now: Instant) {
        self.ipam.handle_peers_changed(mesh.reachable_peers(), now);
    }

    pub fn snapshot(&self) -> IpamSnapshot {
        IpamSnapshot {
            status: self.ipam.status(),
            lines: self.ipam.status_lines(),
            metrics: self.ipam.metrics(),
        }
    }

    /// Handles one API request.
    pub fn handle_request(&mut self, req: IpamRequest, now: Instant) {
        self.now = now;
        match req {
            IpamRequest::Allocate {
                ident,
                subnet,
                check_alive,
                reply,
            } => {
                let r = self
                    .ipam
                    .allocate(&Ident::new(ident), subnet, check_alive, now);
                self.answer_allocation(r, reply, 200, now);
            }
            IpamRequest::Claim {
                ident,
                addr,
                no_error_on_unknown,
                check_alive,
                reply,
            } => {
                let r = self.ipam.claim(
                    &Ident::new(ident),
                    addr,
                    check_alive,
                    no_error_on_unknown,
                    now,
                );
                match r {
                    Err(e) => self.later(reply, 400, format!("Unable to claim: {e}\n")),
                    other => self.answer_allocation(other, reply, 204, now),
                }
            }
            IpamRequest::Lookup {
                ident,
                subnet,
                reply,
            } => {
                let addrs = self.ipam.lookup(&Ident::new(ident), subnet);
                let body = addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = reply.send((200, body));
            }
            IpamRequest::Free { ident, addr, reply } => {
                let ident = Ident::new(ident);
                let r = match addr {
                    Some(a) => self.ipam.free(&ident, a),
                    None => self.ipam.free_all(&ident).map(drop),
                };
                match r {
                    Ok(()) => self.later(reply, 204, String::new()),
                    Err(e) => self.later(reply, 400, format!("{e}\n")),
                }
            }
            IpamRequest::Prime { reply } => {
                if self.ipam.prime(now) {
                    let _ = reply.send((200, String::new()));
                } else {
                    self.ring_waiters.push(reply);
                }
            }
            IpamRequest::RmPeer { peer, reply } => match self.ipam.rmpeer(&peer, now) {
                Ok(n) => {
                    info!(%peer, ips = n, "took over a removed peer's space");
                    self.later(reply, 200, meshnet_ipam::rmpeer_message(n, &peer));
                }
                Err(e) => self.later(reply, 400, format!("{e}\n")),
            },
            IpamRequest::Leave { reply } => {
                match self.ipam.leave(now) {
                    Some(heir) => info!(%heir, "handed all IP space over"),
                    None => info!("no peer to hand IP space to"),
                }
                self.later(reply, 204, String::new());
            }
            IpamRequest::DefaultSubnet { reply } => {
                let _ = reply.send((200, self.ipam.config().default_subnet.to_string()));
            }
            IpamRequest::Owner { addr, reply } => {
                let _ = match self.ipam.holder(addr) {
                    Some(ident) => reply.send((200, ident.to_string())),
                    None => reply.send((404, format!("{addr} is not allocated here\n"))),
                };
            }
            IpamRequest::Held { prefix, reply } => {
                let body: String = self
                    .ipam
                    .owned()
                    .iter()
                    .filter(|(i, _)| i.0.starts_with(&prefix))
                    .flat_map(|(i, o)| o.addrs.iter().map(move |c| format!("{i} {c}\n")))
                    .collect();
                let _ = reply.send((200, body));
            }
        }
    }

    /// A container started, died or is gone (from the Docker watcher);
    /// answers once the change is persisted.
    pub fn handle_container(&mut self, event: ContainerEvent, reply: Reply, now: Instant) {
        self.now = now;
        match event {
            ContainerEvent::Died(id) => self.ipam.handle_container_died(&Ident::new(id), now),
            ContainerEvent::Started(id) => self.ipam.handle_container_started(&Ident::new(id)),
            ContainerEvent::Destroyed(id) => self.ipam.handle_container_destroyed(&Ident::new(id)),
            ContainerEvent::Running(ids) => {
                let running = ids.into_iter().map(Ident::new).collect();
                let gone = self.ipam.handle_containers_running(&running, now);
                if !gone.is_empty() {
                    info!(
                        containers = gone.len(),
                        "containers holding addresses are not running; their addresses go after the grace period"
                    );
                }
            }
        }
        self.later(reply, 204, String::new());
    }

    fn answer_allocation(
        &mut self,
        r: Result<Allocation, meshnet_ipam::Error>,
        reply: Reply,
        done_code: u16,
        now: Instant,
    ) {
        match r {
            Ok(Allocation::Done(c)) => {
                let body = if done_code == 204 {
                    String::new()
                } else {
                    c.to_string()
                };
                self.later(reply, done_code, body);
            }
            Ok(Allocation::Pending(id)) => {
                // Completed by Event::Allocated (200 + address) or
                // Event::Claimed (204).
                self.waiting.insert(id, (reply, now));
            }
            Err(e) => self.later(reply, 400, format!("{e}\n")),
        }
    }

    /// Queues an answer until state is persisted.
    fn later(&mut self, reply: Reply, code: u16, body: String) {
        self.ready.push((reply, (code, body)));
    }

    /// Runs the call protocol: persist, send, deliver events, answer.
    pub fn drain(&mut self, mesh: &mut Mesh) {
        if let Some(state) = self.ipam.poll_persist()
            && let Err(e) = persist::write_json(&self.state_file, &state)
        {
            warn!(error = %e, "cannot persist IPAM state");
            // Offered again on the next drain; until a write succeeds nothing
            // that was not written may be sent or acknowledged.
            self.ipam.persist_failed();
            for (reply, _) in self.ready.drain(..) {
                let _ = reply.send((500, format!("cannot persist IPAM state: {e}\n")));
            }
            return;
        }
        while let Some(t) = self.ipam.poll_transmit() {
            match t {
                Transmit::Broadcast(bytes) => mesh.gossip_broadcast(CHANNEL, bytes),
                Transmit::Unicast(peer, bytes) => {
                    // No route: IPAM retries on its own timer.
                    let _ = mesh.gossip_unicast(CHANNEL, peer, bytes);
                }
            }
        }
        while let Some(event) = self.ipam.poll_event() {
            self.on_event(event);
        }
        for (reply, answer) in self.ready.drain(..) {
            let _ = reply.send(answer);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Allocated { request, addr } => {
                if let Some((reply, _)) = self.waiting.remove(&request) {
                    self.ready.push((reply, (200, addr.to_string())));
                }
            }
            Event::Claimed { request, .. } => {
                if let Some((reply, _)) = self.waiting.remove(&request) {
                    self.ready.push((reply, (204, String::new())));
                }
            }
            Event::Failed { request, error } => {
                if let Some((reply, _)) = self.waiting.remove(&request) {
                    self.ready.push((reply, (400, format!("{error}\n"))));
                }
            }
            Event::Cancelled { request } => {
                if let Some((reply, _)) = self.waiting.remove(&request) {
                    self.ready.push((reply, (200, "cancelled".into())));
                }
            }
            Event::RingReady => {
                info!("IP allocation ring ready");
                for reply in self.ring_waiters.drain(..) {
                    self.ready.push((reply, (200, String::new())));
                }
            }
            Event::RingAdopted { from } => {
                info!(%from, "merged with another IP allocation ring");
            }
            Event::Conflict(c) => warn!(
                addr = %c.addr, ident = %c.ident, peer = %c.peer,
                "address is live here and on another peer: remove one of the two containers"
            ),
            Event::Released { ident, addrs } => {
                info!(%ident, count = addrs.len(), "released addresses of a dead container");
            }
            Event::PeerProblem { peer, problem } => warn!(%peer, %problem, "IPAM peer problem"),
        }
    }
}

impl Channels for IpamService {
    fn names(&self) -> Vec<String> {
        vec![CHANNEL.to_string()]
    }

    fn full_state(&mut self, channel: &str) -> Option<Vec<u8>> {
        (channel == CHANNEL).then(|| self.ipam.full_state())
    }

    fn on_gossip(
        &mut self,
        channel: &str,
        src: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        self.on_broadcast(channel, src, payload).map(|()| None)
    }

    fn on_broadcast(&mut self, channel: &str, src: PeerName, payload: &[u8]) -> Result<(), String> {
        if channel != CHANNEL {
            return Ok(());
        }
        self.ipam
            .handle_gossip(src, payload, self.now)
            .map_err(|e| e.to_string())
    }

    fn on_unicast(&mut self, channel: &str, src: PeerName, payload: &[u8]) -> Result<(), String> {
        if channel != CHANNEL {
            return Ok(());
        }
        self.ipam
            .handle_unicast(src, payload, self.now)
            .map_err(|e| e.to_string())
    }
}
