//! The mesh state machine (stub while the behaviour is being written).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::ids::{ConnId, PeerName, PeerUid, ShortId};
use crate::status::Status;
use crate::wire::Hello;

/// Static configuration of one mesh peer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our peer name.
    pub name: PeerName,
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
}

/// Why `handle_connection` refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// We dialled ourselves.
    #[error("cannot connect to ourself")]
    ConnectToSelf,
    /// Someone else uses our name.
    #[error(
        "Peer name collision: {0} is used by another router (uid {1}); give each host its own --name or identity"
    )]
    NameCollision(PeerName, PeerUid),
    /// Too many connections.
    #[error("Connection limit reached ({0})")]
    ConnLimit(usize),
    /// A discovered target answered with a name we did not expect.
    #[error("Found unknown remote name: {name} at {addr}")]
    UnknownPeer {
        /// The name it gave.
        name: PeerName,
        /// Where.
        addr: SocketAddr,
    },
    /// Lost the duplicate-connection tie-break.
    #[error("Multiple connections to {peer} added to {ours}")]
    Duplicate {
        /// The remote peer.
        peer: PeerName,
        /// Us.
        ours: PeerName,
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

/// The sans-IO mesh.
#[derive(Debug)]
pub struct Mesh {
    config: Config,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

#[allow(unused_variables, clippy::todo)]
impl Mesh {
    /// A new mesh.
    pub fn new(config: Config, now: Instant) -> Mesh {
        Mesh {
            config,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }
    /// Our name.
    pub fn name(&self) -> PeerName {
        self.config.name
    }
    /// Our handshake payload.
    pub fn hello(&self, conn_half: u64, trusted: bool) -> Hello {
        Hello {
            name: self.config.name,
            name_derived: false,
            nickname: self.config.nickname.clone(),
            uid: self.config.uid,
            conn_half,
            short_id: self.config.short_id,
            listen_port: self.config.port,
            overlays: Vec::new(),
            trusted,
        }
    }
    /// Accept throttle.
    pub fn accept_allowed(&mut self, now: Instant) -> bool {
        true
    }
    /// Add targets.
    pub fn connect(
        &mut self,
        peers: &[String],
        replace: bool,
        now: Instant,
    ) -> Result<(), Vec<String>> {
        Ok(())
    }
    /// Remove targets.
    pub fn forget(&mut self, peers: &[String], now: Instant) {}
    /// Direct targets.
    pub fn targets(&self) -> Vec<String> {
        Vec::new()
    }
    /// A dial failed.
    pub fn handle_dial_failed(&mut self, target: &str, error: String, now: Instant) {}
    /// A connection completed its handshake.
    pub fn handle_connection(
        &mut self,
        conn: ConnId,
        info: ConnInfo,
        hello: Hello,
        now: Instant,
    ) -> Result<(), ConnError> {
        Ok(())
    }
    /// A message arrived.
    pub fn handle_message(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        now: Instant,
        channels: &mut dyn Channels,
    ) {
    }
    /// A connection closed.
    pub fn handle_closed(&mut self, conn: ConnId, reason: &str, now: Instant) {}
    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant, channels: &mut dyn Channels) {}
    /// Next transmit.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
    /// Next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
    /// Next timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// Gossip to a neighbour subset.
    pub fn gossip(&mut self, channel: &str, payload: Vec<u8>) {}
    /// Broadcast.
    pub fn gossip_broadcast(&mut self, channel: &str, payload: Vec<u8>) {}
    /// Unicast.
    pub fn gossip_unicast(
        &mut self,
        channel: &str,
        dst: PeerName,
        payload: Vec<u8>,
    ) -> Result<(), NoRoute> {
        Err(NoRoute(dst))
    }
    /// Status.
    pub fn status(&self, now: Instant) -> Status {
        todo!()
    }
}
