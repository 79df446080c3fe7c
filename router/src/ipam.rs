//! IPAM inside the router: a pump over the sans-IO [`Node`], which owns the
//! call protocol (persist, acknowledged, then transmit and events, then
//! replies). Here are only the real file write, the gossip send on the
//! mesh's `ipam` channel, and the HTTP answers ([`IpamService::drain`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshnet_ipam::node::{Answer, Node, Output, Request, Ticket};
use meshnet_ipam::{Cidr, Event, Ident, Ipam, Persisted, Transmit};
use meshnet_mesh::{Channels, Mesh, PeerName};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::persist;

/// The gossip channel name.
pub const CHANNEL: &str = "ipam";
/// File (in the data dir) holding the persisted ring and allocations.
pub const STATE_FILE: &str = "ipam.json";

pub use meshnet_ipam::node::RING_WAIT;

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
    node: Node,
    state_file: PathBuf,
    /// Set by the driver before each input: the `Channels` callbacks carry no time.
    now: Instant,
    /// Callers of requests the node has not answered yet.
    replies: BTreeMap<Ticket, Reply>,
    next_ticket: u64,
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
            node: Node::new(ipam),
            state_file,
            now,
            replies: BTreeMap::new(),
            next_ticket: 0,
        })
    }

    /// Sets the time the next `Channels` callbacks happen at.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// When [`IpamService::handle_timeout`] is due (see [`Node::poll_timeout`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
    }

    /// The mesh's peers changed: tell IPAM who is reachable.
    pub fn handle_peers(&mut self, mesh: &Mesh, now: Instant) {
        let known = mesh
            .status(now)
            .peers
            .into_iter()
            .map(|p| (p.name, p.nickname))
            .collect();
        self.node.handle_peers_changed(known, now);
    }

    pub fn snapshot(&self) -> IpamSnapshot {
        let ipam = self.node.ipam();
        IpamSnapshot {
            status: ipam.status(),
            lines: ipam.status_lines(),
            metrics: ipam.metrics(),
        }
    }

    /// Hands `req` to the node; `reply` is answered when it answers.
    fn request(&mut self, req: Request, reply: Reply, now: Instant) {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.replies.insert(ticket, reply);
        self.node.handle_request(ticket, req, now);
    }

    /// Handles one API request: questions at once, changes through the node
    /// (a `reset` hands our space to a peer `mesh` reaches now).
    pub fn handle_request(&mut self, req: IpamRequest, mesh: &Mesh, now: Instant) {
        self.now = now;
        let ipam = self.node.ipam();
        match req {
            IpamRequest::Allocate {
                ident,
                subnet,
                check_alive,
                reply,
            } => {
                let ident = Ident::new(ident);
                let req = Request::Allocate {
                    ident,
                    subnet,
                    check_alive,
                };
                self.request(req, reply, now);
            }
            IpamRequest::Claim {
                ident,
                addr,
                no_error_on_unknown,
                check_alive,
                reply,
            } => {
                let req = Request::Claim {
                    ident: Ident::new(ident),
                    addr,
                    no_error_on_unknown,
                    check_alive,
                };
                self.request(req, reply, now);
            }
            IpamRequest::Lookup {
                ident,
                subnet,
                reply,
            } => {
                let addrs = ipam.lookup(&Ident::new(ident), subnet);
                let body = addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = reply.send((200, body));
            }
            IpamRequest::Free { ident, addr, reply } => {
                let ident = Ident::new(ident);
                self.request(Request::Free { ident, addr }, reply, now);
            }
            IpamRequest::Prime { reply } => self.request(Request::Prime, reply, now),
            IpamRequest::RmPeer { peer, reply } => {
                self.request(Request::RmPeer { peer }, reply, now);
            }
            IpamRequest::Leave { reply } => {
                let reachable = mesh.reachable_peers().into_keys().collect();
                self.request(Request::Leave { reachable }, reply, now)
            }
            IpamRequest::DefaultSubnet { reply } => {
                let _ = reply.send((200, ipam.config().default_subnet.to_string()));
            }
            IpamRequest::Owner { addr, reply } => {
                let _ = match ipam.holder(addr) {
                    Some(ident) => reply.send((200, ident.to_string())),
                    None => reply.send((404, format!("{addr} is not allocated here\n"))),
                };
            }
            IpamRequest::Held { prefix, reply } => {
                let body: String = ipam
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
        let req = match event {
            ContainerEvent::Died(id) => Request::ContainerDied(Ident::new(id)),
            ContainerEvent::Started(id) => Request::ContainerStarted(Ident::new(id)),
            ContainerEvent::Destroyed(id) => Request::ContainerDestroyed(Ident::new(id)),
            ContainerEvent::Running(ids) => {
                Request::ContainersRunning(ids.into_iter().map(Ident::new).collect())
            }
        };
        self.request(req, reply, now);
    }

    /// Pumps the node: writes the state it asks for, sends, logs, answers.
    pub fn drain(&mut self, mesh: &mut Mesh) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Persist(state) => match persist::write_json(&self.state_file, &state) {
                    Ok(()) => self.node.persist_done(),
                    Err(e) => {
                        warn!(error = %e, "cannot persist IPAM state");
                        // The real clock: a stale `now` would retry at once.
                        self.node.persist_failed(&e.to_string(), Instant::now());
                    }
                },
                Output::Transmit(Transmit::Broadcast(bytes)) => {
                    mesh.gossip_broadcast(CHANNEL, bytes);
                }
                Output::Transmit(Transmit::Unicast(peer, bytes)) => {
                    // No route: IPAM retries on its own timer.
                    let _ = mesh.gossip_unicast(CHANNEL, peer, bytes);
                }
                Output::Event(event) => log_event(&event),
                Output::Reply(ticket, answer) => {
                    if let Some(reply) = self.replies.remove(&ticket) {
                        let _ = reply.send(http_answer(answer));
                    }
                }
            }
        }
    }
}

/// The HTTP status and body of a node's answer (weave's codes).
fn http_answer(answer: Answer) -> (u16, String) {
    match answer {
        Answer::Allocated(c) => (200, c.to_string()),
        Answer::Claimed(_) | Answer::Done => (204, String::new()),
        Answer::MarkedDead(gone) => {
            if !gone.is_empty() {
                info!(
                    containers = gone.len(),
                    "containers holding addresses are not running; their addresses go after the grace period"
                );
            }
            (204, String::new())
        }
        Answer::RingReady => (200, String::new()),
        Answer::Left { heir } => {
            match heir {
                Some(heir) => info!(%heir, "handed all IP space over"),
                None => info!("no peer to hand IP space to"),
            }
            (204, String::new())
        }
        Answer::RemovedPeer { peer, ips } => {
            info!(%peer, ips, "took over a removed peer's space");
            (200, meshnet_ipam::rmpeer_message(ips, &peer))
        }
        Answer::ClaimRefused(e) => (400, format!("Unable to claim: {e}\n")),
        Answer::Refused(e) => (400, format!("{e}\n")),
        Answer::Cancelled => (200, "cancelled".into()),
        Answer::NoRing(why) => (503, format!("{why}\n")),
        Answer::PersistFailed(e) => (500, format!("cannot persist IPAM state: {e}\n")),
    }
}

fn log_event(event: &Event) {
    match event {
        Event::RingReady => info!("IP allocation ring ready"),
        Event::RingAdopted { from } => info!(%from, "merged with another IP allocation ring"),
        Event::Conflict(c) => warn!(
            addr = %c.addr, ident = %c.ident, peer = %c.peer,
            "address is live here and on another peer: remove one of the two containers"
        ),
        Event::Released { ident, addrs } => {
            info!(%ident, count = addrs.len(), "released addresses of a dead container");
        }
        Event::PeerProblem { peer, problem } => warn!(%peer, %problem, "IPAM peer problem"),
        Event::Allocated { .. }
        | Event::Claimed { .. }
        | Event::Failed { .. }
        | Event::Cancelled { .. } => {}
    }
}

impl Channels for IpamService {
    fn names(&self) -> Vec<String> {
        vec![CHANNEL.to_string()]
    }

    fn full_state(&mut self, channel: &str) -> Option<Vec<u8>> {
        (channel == CHANNEL).then(|| self.node.full_state())
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
        self.node
            .handle_gossip(src, payload, self.now)
            .map_err(|e| e.to_string())
    }

    fn on_unicast(&mut self, channel: &str, src: PeerName, payload: &[u8]) -> Result<(), String> {
        if channel != CHANNEL {
            return Ok(());
        }
        self.node
            .handle_unicast(src, payload, self.now)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// weave's status codes and bodies, which its clients (the CNI plugin,
    /// the proxy) rely on.
    #[test]
    fn answers_map_to_weave_codes_and_bodies() {
        let c: Cidr = "10.32.0.1/12".parse().unwrap();
        let peer: PeerName = "aa:00:00:00:00:01".parse().unwrap();
        let cases = [
            (Answer::Allocated(c), 200, "10.32.0.1/12"),
            (Answer::Claimed(c), 204, ""),
            (Answer::Done, 204, ""),
            (Answer::MarkedDead(vec![Ident::new("x")]), 204, ""),
            (Answer::Left { heir: Some(peer) }, 204, ""),
            (Answer::RingReady, 200, ""),
            (Answer::Cancelled, 200, "cancelled"),
            (Answer::NoRing("waiting".into()), 503, "waiting\n"),
            (
                Answer::PersistFailed("disk full".into()),
                500,
                "cannot persist IPAM state: disk full\n",
            ),
            (
                Answer::ClaimRefused(meshnet_ipam::Error::NoRing),
                400,
                &format!("Unable to claim: {}\n", meshnet_ipam::Error::NoRing),
            ),
            (
                Answer::Refused(meshnet_ipam::Error::NoRing),
                400,
                &format!("{}\n", meshnet_ipam::Error::NoRing),
            ),
            (
                Answer::RemovedPeer {
                    peer: "host2".into(),
                    ips: 3,
                },
                200,
                &meshnet_ipam::rmpeer_message(3, "host2"),
            ),
        ];
        for (answer, code, body) in cases {
            let what = format!("{answer:?}");
            assert_eq!(http_answer(answer), (code, body.to_string()), "{what}");
        }
    }
}
