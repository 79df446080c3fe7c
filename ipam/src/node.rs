//! The call protocol of [`Ipam`] in one sans-IO type: [`Node`] wraps the
//! state machine, takes requests with a caller's [`Ticket`], and yields
//! [`Output`]s in the only order that is crash-safe. The router pumps it
//! (file write, gossip send, HTTP answer); the simulators in `ipam/tests`
//! drive the very same type with failing disks, crashes and lossy delivery.
//!
//! The order, enforced here rather than by each caller:
//! 1. [`Output::Persist`] first, whenever the state changed. Nothing else
//!    comes out until the caller reports the write with
//!    [`Node::persist_done`] or [`Node::persist_failed`].
//! 2. Then [`Output::Transmit`]s and [`Output::Event`]s (which may give
//!    space away or complete a caller's request: both rest on that state).
//! 3. Last, [`Output::Reply`]s: an answer is released only once the state it
//!    reports is on disk.
//!
//! A failed write loses nothing: the state stays dirty and is offered again
//! on the next input or after [`PERSIST_RETRY`]; transmits and events stay
//! queued; the answers that waited for it become [`Answer::PersistFailed`].
//! A crash at any point (the caller simply drops the node) can therefore
//! lose only what nobody was told. No I/O, no clock: `now` is a parameter.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::addr::{Cidr, Ident, PeerName};
use crate::allocator::Ipam;
use crate::persist::Persisted;
use crate::types::{Allocation, Error, Event, RequestId, Transmit};
use crate::wire::WireError;

/// How long an allocation waits for the ring (IPAM consensus) before its
/// caller is told, in words, what it waits for; under the API client's own
/// answer timeout, so callers never see a bare timeout.
pub const RING_WAIT: Duration = Duration::from_secs(20);

/// After a failed write, how long until the state is offered again when no
/// input comes first.
pub const PERSIST_RETRY: Duration = Duration::from_secs(1);

/// The caller's handle for one request; [`Output::Reply`] carries it back.
/// Chosen by the caller (the router numbers its pending HTTP answers).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Ticket(pub u64);

/// Requests that change state, each answered once by an [`Output::Reply`].
/// Read-only questions go to [`Node::ipam`] directly.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Request {
    /// An address for `ident` in `subnet` (the default subnet when `None`);
    /// `check_alive` marks it as a container's (released when it dies).
    Allocate {
        ident: Ident,
        subnet: Option<Cidr>,
        check_alive: bool,
    },
    /// A given address for `ident`.
    Claim {
        ident: Ident,
        addr: Cidr,
        no_error_on_unknown: bool,
        check_alive: bool,
    },
    /// One address of `ident`, or all of them when `addr` is `None`.
    Free {
        ident: Ident,
        addr: Option<Ipv4Addr>,
    },
    /// Answered once the ring exists (starting consensus if need be).
    Prime,
    /// Take over a dead peer's space (by name or nickname).
    RmPeer { peer: String },
    /// Hand all space to another peer and stop: one of `reachable`, the
    /// peers the mesh reaches now, when there is one (see [`Ipam::leave`]).
    Leave {
        /// The peers reachable at this moment.
        reachable: BTreeSet<PeerName>,
    },
    /// The container died: its addresses go after the grace period.
    ContainerDied(Ident),
    /// The container runs again (a restart within the grace period).
    ContainerStarted(Ident),
    /// The container is gone for good.
    ContainerDestroyed(Ident),
    /// Every running container: the others holding addresses are dead.
    ContainersRunning(BTreeSet<Ident>),
}

/// The answer to a [`Request`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Answer {
    /// [`Request::Allocate`] handed out this address.
    Allocated(Cidr),
    /// [`Request::Claim`] holds this address.
    Claimed(Cidr),
    /// Done; nothing to report.
    Done,
    /// [`Request::Prime`]: the ring exists.
    RingReady,
    /// [`Request::Leave`]: all space went to `heir` (none when no peer
    /// could take it).
    Left { heir: Option<PeerName> },
    /// [`Request::ContainersRunning`]: these held addresses and are not
    /// running; their addresses go after the grace period.
    MarkedDead(Vec<Ident>),
    /// [`Request::RmPeer`] took over `ips` addresses of `peer`.
    RemovedPeer { peer: String, ips: u64 },
    /// A claim refused at once (the address is not ours to give).
    ClaimRefused(Error),
    /// Refused, or failed while pending.
    Refused(Error),
    /// The pending request was cancelled (its container died).
    Cancelled,
    /// No ring after [`RING_WAIT`]: what it waits for, and what to do.
    NoRing(String),
    /// The state this answer rests on could not be written (the error the
    /// caller reported). Nothing is lost: asking again is safe.
    PersistFailed(String),
}

/// What the caller must do, in the order [`Node::poll_output`] yields it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output {
    /// Write this state durably, then call [`Node::persist_done`] (or
    /// [`Node::persist_failed`]); nothing else comes out before.
    Persist(Persisted),
    /// Send on the `ipam` gossip channel.
    Transmit(Transmit),
    /// For the log (requests' completions are also answered by a reply).
    Event(Event),
    /// Answer the caller holding the ticket.
    Reply(Ticket, Answer),
}

/// [`Ipam`] with its call protocol. See the module docs.
#[derive(Debug)]
pub struct Node {
    ipam: Ipam,
    /// Callers of pending allocations and claims, with when they asked.
    waiting: BTreeMap<RequestId, (Ticket, Instant)>,
    /// Callers of [`Request::Prime`] before the ring existed.
    ring_waiters: Vec<Ticket>,
    /// Answers that wait for the next successful write.
    held: Vec<(Ticket, Answer)>,
    /// Outputs released and not yet polled.
    outbox: VecDeque<Output>,
    /// A [`Output::Persist`] is out and not yet reported.
    persisting: bool,
    /// After a failed write: when to offer the state again (an input
    /// offers it sooner).
    retry_at: Option<Instant>,
}

impl Node {
    /// Wraps a restored or fresh [`Ipam`]. Whatever it needs written (a
    /// fresh start's state) comes out of the first [`Node::poll_output`].
    pub fn new(ipam: Ipam) -> Node {
        Node {
            ipam,
            waiting: BTreeMap::new(),
            ring_waiters: Vec::new(),
            held: Vec::new(),
            outbox: VecDeque::new(),
            persisting: false,
            retry_at: None,
        }
    }

    /// The state machine, for read-only questions (lookup, status).
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// The state machine, for inputs this type has no request for (tests
    /// set up situations with it). Their outputs still leave through
    /// [`Node::poll_output`], in the same safe order.
    pub fn ipam_mut(&mut self) -> &mut Ipam {
        self.retry_at = None;
        &mut self.ipam
    }

    /// Handles one request; its answer comes out as an [`Output::Reply`]
    /// with `ticket`, once what it reports is persisted.
    pub fn handle_request(&mut self, ticket: Ticket, req: Request, now: Instant) {
        self.retry_at = None;
        match req {
            Request::Allocate {
                ident,
                subnet,
                check_alive,
            } => {
                let r = self.ipam.allocate(&ident, subnet, check_alive, now);
                self.answer_allocation(ticket, r, Answer::Allocated, now);
            }
            Request::Claim {
                ident,
                addr,
                no_error_on_unknown,
                check_alive,
            } => {
                let r = self
                    .ipam
                    .claim(&ident, addr, check_alive, no_error_on_unknown, now);
                match r {
                    Err(e) => self.held.push((ticket, Answer::ClaimRefused(e))),
                    other => self.answer_allocation(ticket, other, Answer::Claimed, now),
                }
            }
            Request::Free { ident, addr } => {
                let r = match addr {
                    Some(a) => self.ipam.free(&ident, a),
                    None => self.ipam.free_all(&ident).map(drop),
                };
                self.held
                    .push((ticket, r.map_or_else(Answer::Refused, |()| Answer::Done)));
            }
            Request::Prime => {
                if self.ipam.prime(now) {
                    self.held.push((ticket, Answer::RingReady));
                } else {
                    self.ring_waiters.push(ticket);
                }
            }
            Request::RmPeer { peer } => {
                let a = match self.ipam.rmpeer(&peer, now) {
                    Ok(ips) => Answer::RemovedPeer { peer, ips },
                    Err(e) => Answer::Refused(e),
                };
                self.held.push((ticket, a));
            }
            Request::Leave { reachable } => {
                let heir = self.ipam.leave(&reachable, now);
                self.held.push((ticket, Answer::Left { heir }));
            }
            Request::ContainerDied(id) => {
                self.ipam.handle_container_died(&id, now);
                self.held.push((ticket, Answer::Done));
            }
            Request::ContainerStarted(id) => {
                self.ipam.handle_container_started(&id);
                self.held.push((ticket, Answer::Done));
            }
            Request::ContainerDestroyed(id) => {
                self.ipam.handle_container_destroyed(&id);
                self.held.push((ticket, Answer::Done));
            }
            Request::ContainersRunning(ids) => {
                let gone = self.ipam.handle_containers_running(&ids, now);
                self.held.push((ticket, Answer::MarkedDead(gone)));
            }
        }
    }

    fn answer_allocation(
        &mut self,
        ticket: Ticket,
        r: Result<Allocation, Error>,
        done: fn(Cidr) -> Answer,
        now: Instant,
    ) {
        match r {
            Ok(Allocation::Done(c)) => self.held.push((ticket, done(c))),
            // Answered by Event::Allocated / Claimed / Failed / Cancelled.
            Ok(Allocation::Pending(id)) => {
                self.waiting.insert(id, (ticket, now));
            }
            Err(e) => self.held.push((ticket, Answer::Refused(e))),
        }
    }

    /// A gossip message (broadcast or full state) from `src`.
    pub fn handle_gossip(
        &mut self,
        src: PeerName,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), WireError> {
        self.retry_at = None;
        self.ipam.handle_gossip(src, payload, now)
    }

    /// A unicast message from `src`.
    pub fn handle_unicast(
        &mut self,
        src: PeerName,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), WireError> {
        self.retry_at = None;
        self.ipam.handle_unicast(src, payload, now)
    }

    /// The peers reachable now, with their nicknames.
    pub fn handle_peers_changed(&mut self, known: BTreeMap<PeerName, String>, now: Instant) {
        self.retry_at = None;
        self.ipam.handle_peers_changed(known, now);
    }

    /// What to send on the mesh's periodic full-state gossip.
    pub fn full_state(&self) -> Vec<u8> {
        self.ipam.full_state()
    }

    /// When [`Node::handle_timeout`] is due: IPAM's own timer, the end of a
    /// caller's [`RING_WAIT`], or a write to retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wait_ends = self.waiting_for_ring().map(|t| t + RING_WAIT);
        [self.ipam.poll_timeout(), wait_ends, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the oldest caller waiting for the ring asked, if any waits.
    fn waiting_for_ring(&self) -> Option<Instant> {
        if self.ipam.ring().is_some() {
            return None;
        }
        self.waiting.values().map(|(_, t)| *t).min()
    }

    /// Fires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
        }
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
            if let Some((ticket, _)) = self.waiting.remove(&id) {
                self.held.push((ticket, Answer::NoRing(why.clone())));
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

    /// The next thing to do; `None` when there is nothing, or while a
    /// [`Output::Persist`] waits for its report, or after a failed write
    /// until the next input or [`PERSIST_RETRY`].
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.outbox.pop_front() {
                return Some(o);
            }
            if self.persisting || self.retry_at.is_some() {
                return None;
            }
            if let Some(state) = self.ipam.poll_persist() {
                self.persisting = true;
                return Some(Output::Persist(state));
            }
            // Everything the state machine did is on disk: release it.
            while let Some(t) = self.ipam.poll_transmit() {
                self.outbox.push_back(Output::Transmit(t));
            }
            while let Some(e) = self.ipam.poll_event() {
                self.on_event(&e);
                self.outbox.push_back(Output::Event(e));
            }
            for (ticket, answer) in self.held.drain(..) {
                self.outbox.push_back(Output::Reply(ticket, answer));
            }
            if self.outbox.is_empty() {
                return None;
            }
        }
    }

    /// The state of the last [`Output::Persist`] is on disk.
    pub fn persist_done(&mut self) {
        self.persisting = false;
    }

    /// Writing the state of the last [`Output::Persist`] failed with
    /// `error`: the answers that waited for it say so, everything else
    /// stays queued, and the state is offered again on the next input or
    /// at `now` + [`PERSIST_RETRY`].
    pub fn persist_failed(&mut self, error: &str, now: Instant) {
        self.persisting = false;
        self.ipam.persist_failed();
        self.retry_at = Some(now + PERSIST_RETRY);
        for (ticket, _) in self.held.drain(..) {
            self.outbox.push_back(Output::Reply(
                ticket,
                Answer::PersistFailed(error.to_string()),
            ));
        }
    }

    fn on_event(&mut self, event: &Event) {
        let (request, answer) = match event {
            Event::Allocated { request, addr } => (request, Answer::Allocated(*addr)),
            Event::Claimed { request, addr } => (request, Answer::Claimed(*addr)),
            Event::Failed { request, error } => (request, Answer::Refused(error.clone())),
            Event::Cancelled { request } => (request, Answer::Cancelled),
            Event::RingReady => {
                for ticket in self.ring_waiters.drain(..) {
                    self.held.push((ticket, Answer::RingReady));
                }
                return;
            }
            _ => return,
        };
        if let Some((ticket, _)) = self.waiting.remove(request) {
            self.held.push((ticket, answer));
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
