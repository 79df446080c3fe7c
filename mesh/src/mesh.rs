//! The mesh state machine: connections, heartbeats, the topology gossip and timers.
//!
//! Call protocol (quinn style): feed inputs with `handle_*(.., now)`; after every input drain
//! `poll_transmit` (bytes for connections), `poll_action` (dials and closes), `poll_event`
//! (for the application), then arm a timer for `poll_timeout` and call `handle_timeout` when
//! it fires. Every randomness comes from `Config::seed`, so a seed and an input script give
//! identical output. Message dispatch lives in `gossip.rs`, the connection maker in
//! `maker.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

pub use crate::admission::ConnError;
use crate::ids::{ConnId, PeerName, PeerUid, ShortId};
use crate::keys::{AuthorizedKeys, PublicKey};
use crate::routes::{self, Unicast};
use crate::targets::{TargetState, Targets};
use crate::topology::{HelloOutcome, Topology};
use crate::wire::{ConnSummary, GossipMsg, Hello, Message, TopologyMsg};

/// Heartbeat interval per connection (weave: 30 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// A connection silent this long is closed (weave: 60 s, two missed heartbeats).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// Local topology changes are coalesced this long before a delta goes out (weave: 1 s).
pub const UPDATE_COALESCE: Duration = Duration::from_secs(1);
/// Garbage collection runs this long after a change (weave: 1 s).
pub const GC_DELAY: Duration = Duration::from_secs(1);
/// Periodic anti-entropy and channel full-state gossip (weave: 30 s).
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(30);
/// Routes are recomputed at most this often (weave: 100 ms).
pub const ROUTE_COALESCE: Duration = Duration::from_millis(100);
/// Accept throttle: bucket size (weave: 20).
pub const ACCEPT_BURST: u32 = 20;
/// Accept throttle: one token per this long (weave: 50 ms).
pub const ACCEPT_REFILL: Duration = Duration::from_millis(50);
/// Default connection limit (weave: 200).
pub const DEFAULT_CONN_LIMIT: usize = 200;
/// How long relayed gossip of unknown channels is remembered to stop loops (weave: 30 s).
pub const SURROGATE_TTL: Duration = Duration::from_secs(30);
/// Most distinct unknown-channel messages remembered at once (see [`SURROGATE_TTL`]). Past it,
/// further unknown-channel gossip is dropped, not relayed, until entries expire: a member
/// inventing channels cannot grow our memory nor make us amplify its flood.
pub const MAX_SURROGATE_SEEN: usize = 4096;
/// Most broadcast sources whose next hops are cached between route recomputations. Only
/// known peers' broadcasts are relayed, so this is never reached unless the limit on peers is
/// raised above it; then the extra sources' hops are computed per message.
pub const MAX_BROADCAST_ROUTES: usize = MAX_PEERS;
/// The internal topology channel.
pub const TOPOLOGY_CHANNEL: &str = "topology";
/// Most peers one router keeps records of (placeholders included). meshnet aims at
/// 1,000-peer meshes; 4× that leaves room for growth and for records of departed peers that
/// linger until GC, while bounding memory and route work. Gossip that would take us past it
/// is refused whole and its connection closed.
pub const MAX_PEERS: usize = 4096;
/// Most entries (records, deltas, names, digest triples) in one topology message, and most
/// connections in one record: an honest peer never names more peers than a router may know.
pub const MAX_TOPOLOGY_ENTRIES: usize = MAX_PEERS;

/// Static configuration of one mesh peer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our peer name.
    pub name: PeerName,
    /// Our static Noise public key (gossiped in our record).
    pub key: PublicKey,
    /// Our nickname.
    pub nickname: String,
    /// Our incarnation uid (random, non-zero).
    pub uid: PeerUid,
    /// Our initial short id.
    pub short_id: ShortId,
    /// Our TCP listen port (default port for targets without one).
    pub port: u16,
    /// Connection limit, 0 = unlimited.
    pub conn_limit: usize,
    /// Dial peers of peers.
    pub discovery: bool,
    /// Seed for all randomness.
    pub seed: u64,
}

/// What the router knows about a connection when it hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// True when we dialled.
    pub outbound: bool,
    /// The remote TCP address.
    pub remote_addr: SocketAddr,
    /// For outbound: the target string it was dialled for.
    pub target: Option<String>,
    /// The conn_half we sent in our Hello.
    pub local_conn_half: u64,
    /// The static key the remote proved it holds in the handshake.
    pub remote_key: PublicKey,
}

/// Bytes for the router to send on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection.
    pub conn: ConnId,
    /// One encoded [`crate::Message`].
    pub bytes: Vec<u8>,
}

/// Why the mesh asks the router to close a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// Another connection to the same peer won the tie-break.
    #[error("Multiple connections to {peer} added to {ours}")]
    Duplicate {
        /// The remote peer.
        peer: PeerName,
        /// Us.
        ours: PeerName,
    },
    /// Nothing received for the heartbeat timeout.
    #[error("no message received for {0} s (heartbeat timeout)")]
    HeartbeatTimeout(u64),
    /// The peer sent bytes we cannot decode.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer sent more than a named limit allows (see [`MAX_PEERS`] and friends).
    #[error(
        "{what}: {count} exceeds the limit of {limit}; the peer is buggy or hostile, check its version and logs"
    )]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// How many there were (or would have been).
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer's key was removed from the authorized keys.
    #[error("key {0} is no longer in --authorized-keys")]
    KeyNotAuthorized(PublicKey),
}

/// Output for the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Resolve `addr` ("host:port"), connect, handshake, then call `handle_connection` with
    /// `ConnInfo::target = Some(target)`, or `handle_dial_failed(target, ..)` on any failure.
    Dial {
        /// The target key.
        target: String,
        /// Where to connect.
        addr: String,
    },
    /// Close the socket, then call `handle_closed`.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
}

/// Output for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer became known.
    PeerAdded(PeerName),
    /// A peer was garbage-collected.
    PeerRemoved(PeerName),
    /// A known peer came back with a new uid.
    PeerRestarted(PeerName),
    /// A connection passed all checks.
    ConnectionUp {
        /// The connection.
        conn: ConnId,
        /// The remote peer.
        peer: PeerName,
    },
    /// A registered connection went away.
    ConnectionDown {
        /// The connection.
        conn: ConnId,
        /// The remote peer.
        peer: PeerName,
        /// Why.
        reason: String,
    },
    /// The direct target list changed: persist `Mesh::targets()`.
    TargetsChanged,
    /// An overlay control message (tag 7) for the datapath.
    OverlayControl {
        /// The connection it came on.
        conn: ConnId,
        /// The peer that sent it.
        peer: PeerName,
        /// Its bytes (after the tag).
        bytes: Vec<u8>,
    },
}

/// `gossip_unicast` found no route to the destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no route to peer {0}")]
pub struct NoRoute(pub PeerName);

/// Application gossip channels (IPAM, DNS). The `topology` channel is internal.
pub trait Channels {
    /// Channel names this application handles.
    fn names(&self) -> Vec<String>;
    /// Complete state of a channel, sent to new neighbours and periodically.
    fn full_state(&mut self, channel: &str) -> Option<Vec<u8>>;
    /// Gossip received; returns the part that was new to us, to relay.
    fn on_gossip(
        &mut self,
        channel: &str,
        src: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String>;
    /// Broadcast received.
    fn on_broadcast(&mut self, channel: &str, src: PeerName, payload: &[u8]) -> Result<(), String>;
    /// Unicast addressed to us received.
    fn on_unicast(&mut self, channel: &str, src: PeerName, payload: &[u8]) -> Result<(), String>;
}

/// No application channels.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoChannels;

impl Channels for NoChannels {
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn full_state(&mut self, _channel: &str) -> Option<Vec<u8>> {
        None
    }
    fn on_gossip(&mut self, _: &str, _: PeerName, _: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn on_broadcast(&mut self, _: &str, _: PeerName, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
    fn on_unicast(&mut self, _: &str, _: PeerName, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// One registered connection.
#[derive(Debug, Clone)]
pub(crate) struct LocalConn {
    pub peer: PeerName,
    pub nickname: String,
    pub info: ConnInfo,
    /// Shared connection uid: our half XOR theirs (identical on both ends).
    pub uid: u64,
    pub since: Instant,
    pub last_recv: Instant,
    pub next_heartbeat: Instant,
    /// A close was requested; waiting for the router's `handle_closed`.
    pub closing: bool,
}

/// The sans-IO mesh. See the module docs for the call protocol.
#[derive(Debug)]
pub struct Mesh {
    pub(crate) config: Config,
    pub(crate) rng: Xoshiro256PlusPlus,
    pub(crate) now: Instant,
    pub(crate) topo: Topology,
    pub(crate) conns: BTreeMap<ConnId, LocalConn>,
    pub(crate) by_peer: BTreeMap<PeerName, ConnId>,
    pub(crate) targets: Targets,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) events: VecDeque<Event>,
    /// Connections that still need the application's channel states.
    pub(crate) pending_full: BTreeSet<ConnId>,
    pub(crate) delta_at: Option<Instant>,
    pub(crate) gc_at: Option<Instant>,
    pub(crate) next_gossip: Instant,
    pub(crate) routes_dirty: bool,
    /// The topology or our connections changed since discovered targets were computed.
    pub(crate) targets_dirty: bool,
    /// When discovered targets were last computed.
    pub(crate) discovered_at: Option<Instant>,
    pub(crate) routes_at: Option<Instant>,
    pub(crate) unicast: Unicast,
    pub(crate) unicast_all: Unicast,
    pub(crate) broadcast_all: BTreeMap<PeerName, Vec<PeerName>>,
    pub(crate) surrogate_seen: BTreeMap<u64, Instant>,
    pub(crate) accept_tokens: u32,
    pub(crate) accept_refilled: Instant,
    pub(crate) termination_count: u64,
    /// Unknown-channel gossip dropped because [`MAX_SURROGATE_SEEN`] was reached.
    pub(crate) surrogate_dropped: u64,
    /// Relayed unicasts and broadcasts dropped for a forged originator.
    pub(crate) forged_dropped: u64,
    /// `--authorized-keys`: when set, only these keys may connect.
    pub(crate) authorized: Option<AuthorizedKeys>,
    /// The routes of the last status, with the topology generation they were searched at.
    pub(crate) status_routes: std::sync::Mutex<Option<std::sync::Arc<crate::status::RouteCache>>>,
}

impl Mesh {
    /// A new mesh that knows only itself.
    pub fn new(config: Config, now: Instant) -> Mesh {
        let topo = Topology::new(
            config.name,
            config.key,
            config.nickname.clone(),
            config.uid,
            config.short_id,
            config.port,
        );
        Mesh {
            rng: Xoshiro256PlusPlus::seed_from_u64(config.seed),
            config,
            now,
            topo,
            conns: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            targets: Targets::new(),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            pending_full: BTreeSet::new(),
            delta_at: None,
            gc_at: None,
            next_gossip: now + GOSSIP_INTERVAL,
            routes_dirty: false,
            targets_dirty: true,
            discovered_at: None,
            routes_at: None,
            unicast: Unicast::new(),
            unicast_all: Unicast::new(),
            broadcast_all: BTreeMap::new(),
            surrogate_seen: BTreeMap::new(),
            accept_tokens: ACCEPT_BURST,
            accept_refilled: now,
            termination_count: 0,
            surrogate_dropped: 0,
            forged_dropped: 0,
            authorized: None,
            status_routes: std::sync::Mutex::new(None),
        }
    }

    /// Our peer name.
    pub fn name(&self) -> PeerName {
        self.config.name
    }

    /// The peers we can reach now over reported connections (ourselves
    /// included), with their nicknames. Unlike [`Mesh::status`], a peer
    /// whose last connection went away is left out at once, not only when
    /// garbage collection removes its record.
    pub fn reachable_peers(&self) -> BTreeMap<PeerName, String> {
        self.topo
            .reachable()
            .into_iter()
            .filter_map(|n| {
                let p = self.topo.peer(n)?;
                (!p.is_placeholder()).then(|| (n, p.nickname.clone()))
            })
            .collect()
    }

    /// Our static public key.
    pub fn key(&self) -> PublicKey {
        self.config.key
    }

    /// The handshake payload to send on a new connection. The router fills `name_derived`
    /// afterwards.
    pub fn hello(&self, conn_half: u64, trusted: bool) -> Hello {
        Hello {
            name: self.config.name,
            name_derived: false,
            nickname: self.config.nickname.clone(),
            uid: self.config.uid,
            conn_half,
            short_id: self.topo.our_short_id(),
            listen_port: self.config.port,
            trusted,
        }
    }

    /// Accept throttle: a token bucket of [`ACCEPT_BURST`] refilled one per [`ACCEPT_REFILL`].
    /// The router calls it after each accept and waits (or drops) when it says false.
    pub fn accept_allowed(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.accept_refilled);
        let fresh = (elapsed.as_nanos() / ACCEPT_REFILL.as_nanos()) as u64;
        if fresh > 0 {
            let tokens = (u64::from(self.accept_tokens) + fresh).min(u64::from(ACCEPT_BURST));
            self.accept_tokens = tokens as u32;
            self.accept_refilled = if tokens == u64::from(ACCEPT_BURST) {
                now
            } else {
                self.accept_refilled + ACCEPT_REFILL * fresh as u32
            };
        }
        if self.accept_tokens > 0 {
            self.accept_tokens -= 1;
            true
        } else {
            false
        }
    }

    fn touch(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// A connection finished its handshake. On `Err` the router closes the socket with
    /// `err.to_string()` and does not call `handle_closed`.
    pub fn handle_connection(
        &mut self,
        conn: ConnId,
        info: ConnInfo,
        hello: Hello,
        now: Instant,
    ) -> Result<(), ConnError> {
        self.touch(now);
        let result = self.admit(conn, &info, &hello);
        if let Err(e) = &result {
            if !matches!(e, ConnError::ConnectToSelf) {
                self.termination_count += 1;
            }
            self.target_refused(&info, &hello, e);
            self.refresh_targets();
            return result;
        }
        let conn_uid = info.local_conn_half ^ hello.conn_half;
        match self.topo.note_hello(&hello, info.remote_key) {
            HelloOutcome::Restarted => self.events.push_back(Event::PeerRestarted(hello.name)),
            HelloOutcome::New | HelloOutcome::Known => {}
        }
        for name in self.topo.drain_added() {
            self.events.push_back(Event::PeerAdded(name));
        }
        self.topo.set_local_conn(
            hello.name,
            Some(ConnSummary {
                remote_addr: info.remote_addr.to_string(),
                outbound: info.outbound,
                established: true,
            }),
        );
        self.target_connected(&info, hello.name);
        self.conns.insert(
            conn,
            LocalConn {
                peer: hello.name,
                nickname: hello.nickname.clone(),
                info,
                uid: conn_uid,
                since: now,
                last_recv: now,
                next_heartbeat: now + HEARTBEAT_INTERVAL,
                closing: false,
            },
        );
        self.by_peer.insert(hello.name, conn);
        self.events.push_back(Event::ConnectionUp {
            conn,
            peer: hello.name,
        });
        // A new neighbour learns what we know by pulling: it gets our digest and requests
        // the records it lacks or holds older. Sending every record instead would cost
        // O(N·degree) per connection, O(N²) in a full mesh, mostly for records it has.
        let digest = TopologyMsg::Digest(self.topo.digest());
        self.send_topology(conn, &digest);
        self.pending_full.insert(conn);
        self.topology_changed();
        Ok(())
    }

    /// The checks weave makes before adding a connection, including the duplicate
    /// tie-break, which closes the losing existing connection right away.
    fn admit(&mut self, conn: ConnId, info: &ConnInfo, hello: &Hello) -> Result<(), ConnError> {
        self.check_identity(info, hello)?;
        if hello.name == self.config.name {
            return Err(if hello.uid == self.config.uid {
                ConnError::ConnectToSelf
            } else {
                ConnError::NameCollision(hello.name, hello.uid)
            });
        }
        if self.conns.contains_key(&conn) {
            return Err(ConnError::Duplicate {
                peer: hello.name,
                ours: self.config.name,
            });
        }
        let live = self.conns.values().filter(|c| !c.closing).count();
        if self.config.conn_limit > 0 && live >= self.config.conn_limit {
            return Err(ConnError::ConnLimit(self.config.conn_limit));
        }
        if info.outbound {
            let expected = info
                .target
                .as_ref()
                .and_then(|t| self.targets.get(t))
                .filter(|t| !t.direct)
                .and_then(|t| t.expected);
            if let Some(e) = expected
                && e != hello.name
                && self.topo.peer(hello.name).is_none()
            {
                return Err(ConnError::UnknownPeer {
                    name: hello.name,
                    addr: info.remote_addr,
                });
            }
        }
        let new_uid = info.local_conn_half ^ hello.conn_half;
        if let Some(&old) = self.by_peer.get(&hello.name) {
            let old_uid = self.conns.get(&old).map_or(u64::MAX, |c| c.uid);
            let ours = self.config.name;
            let dup = || ConnError::Duplicate {
                peer: hello.name,
                ours,
            };
            // The smaller shared uid wins on both ends; equal uids lose on both ends.
            if new_uid >= old_uid {
                if new_uid == old_uid {
                    self.close_conn(
                        old,
                        CloseReason::Duplicate {
                            peer: hello.name,
                            ours: self.config.name,
                        },
                    );
                }
                return Err(dup());
            }
            self.close_conn(
                old,
                CloseReason::Duplicate {
                    peer: hello.name,
                    ours: self.config.name,
                },
            );
        }
        Ok(())
    }

    /// Asks the router to close `conn` and forgets it at once, so that nothing (routes,
    /// topology, a replacement connection) waits for the socket to go away.
    pub(crate) fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        self.actions.push_back(Action::Close {
            conn,
            reason: reason.clone(),
        });
        self.unregister(conn, &reason.to_string());
    }

    /// Removes a connection from the topology and the peer index.
    fn unregister(&mut self, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let peer = c.peer;
        if self.by_peer.get(&peer) != Some(&conn) {
            return;
        }
        self.by_peer.remove(&peer);
        self.topo.set_local_conn(peer, None);
        self.termination_count += 1;
        self.events.push_back(Event::ConnectionDown {
            conn,
            peer,
            reason: reason.to_owned(),
        });
        let lived = self.now.saturating_duration_since(c.since);
        let info = c.info.clone();
        self.target_lost(&info, peer, lived);
        self.topology_changed();
    }

    /// The router closed a connection (after our `Action::Close`, or on its own: EOF,
    /// error). Unknown ids are ignored.
    pub fn handle_closed(&mut self, conn: ConnId, reason: &str, now: Instant) {
        self.touch(now);
        if self.conns.contains_key(&conn) {
            self.unregister(conn, reason);
            self.conns.remove(&conn);
            self.pending_full.remove(&conn);
        }
        self.refresh_targets();
    }

    /// Something in the topology changed: schedule routes, GC, target refresh, the delta.
    pub(crate) fn topology_changed(&mut self) {
        self.routes_dirty = true;
        self.targets_dirty = true;
        self.gc_at.get_or_insert(self.now + GC_DELAY);
        if self.topo.has_pending() && self.delta_at.is_none() {
            self.delta_at = Some(self.now + UPDATE_COALESCE);
        }
        for name in self.topo.drain_added() {
            self.events.push_back(Event::PeerAdded(name));
        }
        self.check_short_id();
    }

    /// As in weave: if someone with a lower name has our short id, we pick a free one.
    fn check_short_id(&mut self) {
        let ours = self.topo.our_short_id();
        let lower_has_it = self
            .topo
            .peers()
            .iter()
            .any(|(n, p)| *n < self.config.name && !p.is_placeholder() && p.short_id == ours);
        if !lower_has_it {
            return;
        }
        let used: BTreeSet<u16> = self
            .topo
            .peers()
            .values()
            .filter(|p| !p.is_placeholder())
            .map(|p| p.short_id.as_u16())
            .collect();
        use rand::RngExt;
        for _ in 0..64 {
            let candidate = ShortId::from_low_bits(self.rng.random::<u64>());
            if !used.contains(&candidate.as_u16()) {
                self.topo.set_local_short_id(candidate);
                if self.delta_at.is_none() {
                    self.delta_at = Some(self.now + UPDATE_COALESCE);
                }
                return;
            }
        }
    }

    /// Recomputes routes if stale (at most every [`ROUTE_COALESCE`]).
    pub(crate) fn ensure_routes(&mut self) {
        let due = self
            .routes_at
            .is_none_or(|at| self.now.saturating_duration_since(at) >= ROUTE_COALESCE);
        if self.routes_dirty && due {
            self.unicast = routes::unicast(&self.topo, self.config.name, true);
            self.unicast_all = routes::unicast(&self.topo, self.config.name, false);
            self.broadcast_all.clear();
            self.routes_dirty = false;
            self.routes_at = Some(self.now);
        }
    }

    /// Timers: heartbeats, dead connections, the coalesced delta, GC, periodic gossip,
    /// target retries, and channel states owed to new connections.
    pub fn handle_timeout(&mut self, now: Instant, channels: &mut dyn Channels) {
        self.touch(now);
        let mut beats = Vec::new();
        let mut dead = Vec::new();
        for (id, c) in &mut self.conns {
            if c.closing {
                continue;
            }
            if now.saturating_duration_since(c.last_recv) >= HEARTBEAT_TIMEOUT {
                dead.push(*id);
            } else if now >= c.next_heartbeat {
                c.next_heartbeat = now + HEARTBEAT_INTERVAL;
                beats.push(*id);
            }
        }
        for id in beats {
            self.send(id, &Message::Heartbeat);
        }
        for id in dead {
            self.close_conn(
                id,
                CloseReason::HeartbeatTimeout(HEARTBEAT_TIMEOUT.as_secs()),
            );
        }
        if self.delta_at.is_some_and(|at| now >= at) {
            self.delta_at = None;
            if let Some(d) = self.topo.take_delta() {
                self.gossip_topology(&TopologyMsg::Delta(vec![d]), None);
            }
        }
        if self.gc_at.is_some_and(|at| now >= at) {
            self.gc_at = None;
            let keep: BTreeSet<PeerName> = self.by_peer.keys().copied().collect();
            let removed = self.topo.garbage_collect(&keep);
            if !removed.is_empty() {
                self.routes_dirty = true;
                self.targets_dirty = true;
                for n in removed {
                    self.events.push_back(Event::PeerRemoved(n));
                }
                self.refresh_targets();
            }
        }
        if now >= self.next_gossip {
            self.next_gossip = now + GOSSIP_INTERVAL;
            self.periodic_gossip(channels);
        }
        let owed: Vec<ConnId> = std::mem::take(&mut self.pending_full).into_iter().collect();
        for conn in owed {
            self.send_channel_states(conn, channels);
        }
        self.surrogate_seen.retain(|_, until| *until > now);
        self.refresh_targets();
    }

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        if !self.pending_full.is_empty() {
            consider(self.now);
        }
        consider(self.next_gossip);
        self.delta_at.into_iter().for_each(&mut consider);
        if self.config.discovery && self.targets_dirty {
            consider(
                self.discovered_at
                    .map_or(self.now, |at| at + ROUTE_COALESCE),
            );
        }
        self.gc_at.into_iter().for_each(&mut consider);
        for c in self.conns.values().filter(|c| !c.closing) {
            consider(c.next_heartbeat.min(c.last_recv + HEARTBEAT_TIMEOUT));
        }
        for t in self.targets.values() {
            if let TargetState::Waiting(at) = t.state {
                consider(at);
            }
        }
        next
    }

    /// Next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next dial or close for the router.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn send(&mut self, conn: ConnId, msg: &Message) {
        self.transmits.push_back(Transmit {
            conn,
            bytes: msg.encode(),
        });
    }

    pub(crate) fn send_topology(&mut self, conn: ConnId, msg: &TopologyMsg) {
        let m = Message::Gossip(GossipMsg {
            channel: TOPOLOGY_CHANNEL.to_owned(),
            src: self.config.name,
            payload: msg.encode(),
        });
        self.send(conn, &m);
    }

    /// Sends an overlay control message (tag 7) on a connection.
    pub fn send_overlay_control(&mut self, conn: ConnId, bytes: Vec<u8>) {
        if self.conns.contains_key(&conn) {
            self.send(conn, &Message::OverlayControl(bytes));
        }
    }

    /// The live connection to `peer`, if any.
    pub fn conn_to(&self, peer: PeerName) -> Option<ConnId> {
        self.by_peer.get(&peer).copied()
    }
}
