//! A snapshot of the mesh for `meshnet status` and `/report`, serialised with weave's JSON
//! field names (PascalCase) where a weave field exists. Peer names are rendered as
//! `8a:3e:3e:3e:3e:3e` strings here (on the wire they are integers).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::ids::{ConnId, PeerName, PeerUid, ShortId};
use crate::mesh::Mesh;
use crate::routes;
use crate::targets::TargetState;
use std::time::Instant;

fn name_str<S: Serializer>(n: &PeerName, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(n)
}

fn names_str<S: Serializer>(ns: &[PeerName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ns.iter().map(|n| n.to_string()))
}

fn opt_peer<S: Serializer>(p: &Option<(PeerName, String)>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some((n, nick)) => s.serialize_some(&(n.to_string(), nick)),
        None => s.serialize_none(),
    }
}

fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// A nickname as every status, report and log shows it: control characters (terminal
/// escapes among them) and the invisible direction overrides that can make text read
/// differently than it is are shown as `\u{..}` escapes, a backslash as `\\`. Nicknames
/// come from the wire, so a peer must not be able to write to the operator's terminal.
/// Their length is bounded on decode ([`crate::wire::MAX_NICKNAME_LEN`]).
pub fn display_nickname(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The whole mesh as seen from this peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Our name.
    #[serde(rename = "Name", serialize_with = "name_str")]
    pub name: PeerName,
    /// Our nickname.
    #[serde(rename = "NickName")]
    pub nickname: String,
    /// Our incarnation uid.
    #[serde(rename = "UID")]
    pub uid: PeerUid,
    /// Our short id.
    #[serde(rename = "ShortID")]
    pub short_id: ShortId,
    /// Our topology version.
    #[serde(rename = "Version")]
    pub version: u64,
    /// Our TCP listen port.
    #[serde(rename = "Port")]
    pub port: u16,
    /// Whether peers of peers are dialled.
    #[serde(rename = "PeerDiscovery")]
    pub discovery: bool,
    /// Connection limit (0 = unlimited).
    #[serde(rename = "ConnLimit")]
    pub conn_limit: usize,
    /// Every known peer, ourselves included, sorted by name.
    #[serde(rename = "Peers")]
    pub peers: Vec<PeerStatus>,
    /// Live connections and pending targets.
    #[serde(rename = "Connections")]
    pub connections: Vec<LocalConnStatus>,
    /// Destination → first hop over established symmetric links.
    #[serde(rename = "UnicastRoutes")]
    pub unicast_routes: Vec<RouteStatus>,
    /// Per source, the neighbours we relay its broadcasts to.
    #[serde(rename = "BroadcastRoutes")]
    pub broadcast_routes: Vec<BroadcastRouteStatus>,
    /// Direct targets as the user typed them.
    #[serde(rename = "Targets")]
    pub targets: Vec<String>,
    /// Connections terminated so far (except connect-to-self).
    #[serde(rename = "TerminationCount")]
    pub termination_count: u64,
}

/// One peer in the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its name.
    #[serde(rename = "Name", serialize_with = "name_str")]
    pub name: PeerName,
    /// Its nickname.
    #[serde(rename = "NickName")]
    pub nickname: String,
    /// Its incarnation.
    #[serde(rename = "UID")]
    pub uid: PeerUid,
    /// Its short id.
    #[serde(rename = "ShortID")]
    pub short_id: ShortId,
    /// Its topology version.
    #[serde(rename = "Version")]
    pub version: u64,
    /// The fingerprint of its static key (`SHA256:...`), when known.
    #[serde(rename = "KeyFingerprint")]
    pub key: Option<String>,
    /// Its connections as it reports them.
    #[serde(rename = "Connections")]
    pub connections: Vec<PeerConnStatus>,
}

/// One connection of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerConnStatus {
    /// Remote peer.
    #[serde(rename = "Name", serialize_with = "name_str")]
    pub name: PeerName,
    /// Remote nickname (empty when unknown).
    #[serde(rename = "NickName")]
    pub nickname: String,
    /// Remote address as the owner sees it.
    #[serde(rename = "Address")]
    pub address: String,
    /// True when the owner dialled.
    #[serde(rename = "Outbound")]
    pub outbound: bool,
    /// True when established.
    #[serde(rename = "Established")]
    pub established: bool,
}

/// State of a local connection or target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    /// Connected and handshaken.
    Established,
    /// Handshaken, overlay not yet ready (reserved for the datapath).
    Pending,
    /// First dial in progress.
    Connecting,
    /// Dial in progress after an earlier failure.
    Retrying,
    /// Last attempt failed; see error and retry_in.
    Failed,
    /// Waiting for its next attempt, or suspended.
    Waiting,
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnState::Established => "established",
            ConnState::Pending => "pending",
            ConnState::Connecting => "connecting",
            ConnState::Retrying => "retrying",
            ConnState::Failed => "failed",
            ConnState::Waiting => "waiting",
        })
    }
}

/// A live connection or a target not connected yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalConnStatus {
    /// `ip:port` of a live connection, or the target's `host:port`.
    #[serde(rename = "Address")]
    pub address: String,
    /// True when we dialled (targets are always outbound).
    #[serde(rename = "Outbound")]
    pub outbound: bool,
    /// State.
    #[serde(rename = "State")]
    pub state: ConnState,
    /// Remote peer and nickname, for live connections.
    #[serde(rename = "Peer", serialize_with = "opt_peer")]
    pub peer: Option<(PeerName, String)>,
    /// Last error of a target.
    #[serde(rename = "Error")]
    pub error: Option<String>,
    /// Time until the next attempt; `None` when connected or never retried.
    #[serde(rename = "RetryIn", serialize_with = "opt_secs")]
    pub retry_in: Option<Duration>,
    /// Router handle of a live connection.
    #[serde(rename = "Conn")]
    pub conn: Option<ConnId>,
}

/// A unicast route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// Destination.
    #[serde(rename = "Dest", serialize_with = "name_str")]
    pub dest: PeerName,
    /// First hop.
    #[serde(rename = "Via", serialize_with = "name_str")]
    pub via: PeerName,
}

/// A broadcast route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BroadcastRouteStatus {
    /// Originator.
    #[serde(rename = "Source", serialize_with = "name_str")]
    pub source: PeerName,
    /// Neighbours we relay to.
    #[serde(rename = "Via", serialize_with = "names_str")]
    pub via: Vec<PeerName>,
}

/// The routes a [`Status`] shows, for one topology generation.
#[derive(Debug)]
pub(crate) struct RouteCache {
    generation: u64,
    unicast: Vec<RouteStatus>,
    broadcast: Vec<BroadcastRouteStatus>,
}

impl Mesh {
    /// Route searches (breadth-first searches over the topology) run so far: the work
    /// routes and status cost.
    pub fn route_searches(&self) -> u64 {
        self.topo.searches()
    }

    /// The data routes of the current topology version, searched at most once per version:
    /// the router asks for a status on every peer event (and a burst of events follows one
    /// message), and once a second while nothing changes.
    fn status_routes(&self) -> Arc<RouteCache> {
        let generation = self.topo.generation();
        let mut cache = self
            .status_routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cache.as_ref().filter(|c| c.generation == generation) {
            return Arc::clone(c);
        }
        let ours = self.config.name;
        let fresh = Arc::new(RouteCache {
            generation,
            unicast: routes::unicast(&self.topo, ours, true)
                .into_iter()
                .map(|(dest, via)| RouteStatus { dest, via })
                .collect(),
            broadcast: self
                .topo
                .peers()
                .keys()
                .map(|s| BroadcastRouteStatus {
                    source: *s,
                    via: routes::broadcast(&self.topo, ours, *s, true),
                })
                .collect(),
        });
        *cache = Some(Arc::clone(&fresh));
        fresh
    }

    /// A snapshot for `status` and `/report`.
    pub fn status(&self, now: Instant) -> Status {
        let nick = |n: &PeerName| {
            self.topo
                .peer(*n)
                .map(|p| display_nickname(&p.nickname))
                .unwrap_or_default()
        };
        let peers = self
            .topo
            .peers()
            .iter()
            .map(|(name, p)| PeerStatus {
                name: *name,
                nickname: display_nickname(&p.nickname),
                uid: p.uid,
                short_id: p.short_id,
                version: p.version,
                key: p.key.map(|k| k.fingerprint()),
                connections: p
                    .conns
                    .iter()
                    .map(|(r, c)| PeerConnStatus {
                        name: *r,
                        nickname: nick(r),
                        address: c.remote_addr.clone(),
                        outbound: c.outbound,
                        established: c.established,
                    })
                    .collect(),
            })
            .collect();
        let mut connections: Vec<LocalConnStatus> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .map(|(id, c)| LocalConnStatus {
                address: c.info.remote_addr.to_string(),
                outbound: c.info.outbound,
                state: ConnState::Established,
                peer: Some((c.peer, display_nickname(&c.nickname))),
                error: None,
                retry_in: None,
                conn: Some(*id),
            })
            .collect();
        for t in self.targets.values() {
            let (state, retry_in) = match t.state {
                TargetState::Connected => continue,
                TargetState::Attempting if t.failed_before => (ConnState::Retrying, None),
                TargetState::Attempting => (ConnState::Connecting, None),
                TargetState::Failed => (ConnState::Failed, None),
                TargetState::Waiting(at) => (
                    if t.last_error.is_some() {
                        ConnState::Failed
                    } else {
                        ConnState::Waiting
                    },
                    Some(at.saturating_duration_since(now)),
                ),
            };
            connections.push(LocalConnStatus {
                address: t.addr.clone(),
                outbound: true,
                state,
                peer: None,
                error: t.last_error.clone(),
                retry_in,
                conn: None,
            });
        }
        let ours = self.config.name;
        let cached = self.status_routes();
        let (unicast_routes, broadcast_routes) = (cached.unicast.clone(), cached.broadcast.clone());
        Status {
            name: ours,
            nickname: display_nickname(&self.config.nickname),
            uid: self.config.uid,
            short_id: self.topo.our_short_id(),
            version: self.topo.our_version(),
            port: self.config.port,
            discovery: self.config.discovery,
            conn_limit: self.config.conn_limit,
            peers,
            connections,
            unicast_routes,
            broadcast_routes,
            targets: self.targets(),
            termination_count: self.termination_count,
        }
    }
}
