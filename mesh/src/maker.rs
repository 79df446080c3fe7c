//! The connection maker half of [`Mesh`]: `connect`/`forget`, discovery of
//! peers of peers, dial scheduling with backoff, and how connection outcomes move targets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::ids::PeerName;
use crate::mesh::{Action, ConnError, ConnInfo, Event, Mesh, ROUTE_COALESCE};
use crate::targets::{
    MAX_DIRECT_TARGETS, MAX_DISCOVERED_ADDRS_PER_PEER, MAX_DISCOVERED_TARGETS, RESET_AFTER, Target,
    TargetState, addr_ip, parse_target,
};
use crate::wire::Hello;

impl Mesh {
    /// Adds direct targets (`host[:port]`). With `replace`, direct targets not
    /// listed are dropped first. Invalid entries are returned as messages; valid ones are
    /// added regardless. Connecting an existing target makes it retry now.
    pub fn connect(
        &mut self,
        peers: &[String],
        replace: bool,
        now: Instant,
    ) -> Result<(), Vec<String>> {
        self.touch_now(now);
        let mut errors = Vec::new();
        let mut parsed = BTreeMap::new();
        for p in peers {
            match parse_target(p, self.config.port) {
                Ok(v) => {
                    parsed.insert(p.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        if replace {
            self.targets
                .retain(|k, t| !t.direct || parsed.contains_key(k));
        }
        let mut direct = self.targets.values().filter(|t| t.direct).count();
        for (key, (addr, implicit)) in parsed {
            match self.targets.get_mut(&key) {
                Some(t) => {
                    t.direct = true;
                    t.expected = None;
                    if t.state != TargetState::Connected && t.state != TargetState::Attempting {
                        t.reset(now);
                    }
                }
                None if direct >= MAX_DIRECT_TARGETS => {
                    errors.push(format!(
                        "cannot add peer {key:?}: {MAX_DIRECT_TARGETS} peers are targets already; \
                         remove some with `forget` first"
                    ));
                }
                None => {
                    // A discovered target under the same address becomes this direct one.
                    direct += 1;
                    self.targets.retain(|_, t| t.direct || t.addr != addr);
                    self.targets
                        .insert(key, Target::new(addr, true, implicit, None, now));
                }
            }
        }
        self.events.push_back(Event::TargetsChanged);
        self.refresh_targets();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Removes direct targets; their live connections stay up but are not retried.
    pub fn forget(&mut self, peers: &[String], now: Instant) {
        self.touch_now(now);
        for p in peers {
            if self.targets.get(p).is_some_and(|t| t.direct) {
                self.targets.remove(p);
            }
        }
        self.events.push_back(Event::TargetsChanged);
        self.refresh_targets();
    }

    /// Direct targets as the user typed them (the router persists this list).
    pub fn targets(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(_, t)| t.direct)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A dial (or its handshake) for `target` failed before both ends were authenticated
    /// (I/O, timeout, wrong password, an unauthenticated refusal): retry with backoff. A
    /// refusal after an authenticated handshake goes to [`Mesh::handle_refused`] instead.
    pub fn handle_dial_failed(&mut self, target: &str, error: String, now: Instant) {
        self.touch_now(now);
        if let Some(t) = self.targets.get_mut(target)
            && t.state == TargetState::Attempting
        {
            t.backoff(Some(error), now, &mut self.rng);
        }
        self.refresh_targets();
    }

    fn touch_now(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// `handle_connection` refused a connection: update the target it was dialled for.
    pub(crate) fn target_refused(&mut self, info: &ConnInfo, hello: &Hello, err: &ConnError) {
        let Some(t) = info.target.as_ref().and_then(|k| self.targets.get_mut(k)) else {
            return;
        };
        match err {
            ConnError::ConnectToSelf | ConnError::NameCollision(..) => {
                t.fail_forever(err.to_string())
            }
            ConnError::Duplicate { .. } => {
                // Another connection serves this peer; remember who answers here.
                t.peer = Some(hello.name);
                t.state = TargetState::Connected;
            }
            ConnError::ConnLimit(_)
            | ConnError::UnknownPeer { .. }
            | ConnError::NameNotDerived { .. }
            | ConnError::UnknownKey { .. }
            | ConnError::KeyMismatch { .. } => {
                t.backoff(Some(err.to_string()), self.now, &mut self.rng);
            }
        }
    }

    /// A connection dialled for a target (or from its peer) came up.
    pub(crate) fn target_connected(&mut self, info: &ConnInfo, peer: PeerName) {
        if let Some(t) = info.target.as_ref().and_then(|k| self.targets.get_mut(k)) {
            t.peer = Some(peer);
            t.state = TargetState::Connected;
        }
    }

    /// A registered connection went away after living `lived`.
    pub(crate) fn target_lost(&mut self, info: &ConnInfo, peer: PeerName, lived: Duration) {
        let now = self.now;
        for (key, t) in self.targets.iter_mut() {
            let served = info.target.as_deref() == Some(key.as_str()) || t.peer == Some(peer);
            if !served || t.state != TargetState::Connected {
                continue;
            }
            if lived > RESET_AFTER {
                t.reset(now);
            } else {
                t.backoff(None, now, &mut self.rng);
            }
        }
    }

    /// Discovered targets (weave `addPeerTargets`): for every connection some peer reports
    /// to a peer we are not connected to, an outbound one gives its recorded address, an
    /// inbound one the remote IP with that peer's listen port. Bounded: at most
    /// [`MAX_DISCOVERED_ADDRS_PER_PEER`] addresses per peer and [`MAX_DISCOVERED_TARGETS`] in
    /// all, preferring the addresses the most peers report, so a member that invents
    /// connections cannot make us dial thousands of addresses or crowd out the real one.
    fn discovered(&self) -> BTreeMap<String, PeerName> {
        let ours = self.config.name;
        // remote → address → how many peers report it.
        let mut seen: BTreeMap<PeerName, BTreeMap<String, usize>> = BTreeMap::new();
        for (owner, p) in self.topo.peers() {
            if *owner == ours {
                continue;
            }
            for (remote, c) in &p.conns {
                if *remote == ours || self.by_peer.contains_key(remote) {
                    continue;
                }
                let addr = if c.outbound {
                    if c.remote_addr.is_empty() {
                        continue;
                    }
                    c.remote_addr.clone()
                } else {
                    let Some(ip) = addr_ip(&c.remote_addr) else {
                        continue;
                    };
                    let port = self
                        .topo
                        .peer(*remote)
                        .filter(|r| !r.is_placeholder() && r.listen_port != 0)
                        .map_or(self.config.port, |r| r.listen_port);
                    std::net::SocketAddr::new(ip, port).to_string()
                };
                *seen.entry(*remote).or_default().entry(addr).or_default() += 1;
            }
        }
        let mut ranked: Vec<(usize, PeerName, String)> = Vec::new();
        for (remote, addrs) in seen {
            let mut addrs: Vec<(usize, String)> = addrs.into_iter().map(|(a, n)| (n, a)).collect();
            addrs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            addrs.truncate(MAX_DISCOVERED_ADDRS_PER_PEER);
            ranked.extend(addrs.into_iter().map(|(n, a)| (n, remote, a)));
        }
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (a.1, &a.2).cmp(&(b.1, &b.2))));
        let mut out = BTreeMap::new();
        for (_, remote, addr) in ranked {
            if out.len() == MAX_DISCOVERED_TARGETS {
                break;
            }
            // Two peers claiming one address: the first (most reported) keeps it.
            out.entry(addr).or_insert(remote);
        }
        out
    }

    /// Re-evaluates every target and emits dials that are due.
    pub(crate) fn refresh_targets(&mut self) {
        let now = self.now;
        // Discovery walks every peer's connections: only redo it when something changed,
        // and at most every ROUTE_COALESCE (poll_timeout wakes us for the deferred run).
        let due = self
            .discovered_at
            .is_none_or(|at| now.saturating_duration_since(at) >= ROUTE_COALESCE);
        if self.config.discovery && self.targets_dirty && due {
            self.discovered_at = Some(now);
            self.targets_dirty = false;
            let wanted = self.discovered();
            let direct_addrs: BTreeSet<String> = self
                .targets
                .values()
                .filter(|t| t.direct)
                .map(|t| t.addr.clone())
                .collect();
            self.targets
                .retain(|k, t| t.direct || wanted.contains_key(k));
            for (addr, peer) in wanted {
                if !direct_addrs.contains(&addr) && !self.targets.contains_key(&addr) {
                    self.targets.insert(
                        addr.clone(),
                        Target::new(addr, false, false, Some(peer), now),
                    );
                }
            }
        } else if !self.config.discovery {
            self.targets.retain(|_, t| t.direct);
            self.targets_dirty = false;
        }
        let live_addrs: BTreeSet<std::net::SocketAddr> = self
            .conns
            .values()
            .filter(|c| !c.closing)
            .map(|c| c.info.remote_addr)
            .collect();
        let inbound_ips: BTreeSet<std::net::IpAddr> = self
            .conns
            .values()
            .filter(|c| !c.closing && !c.info.outbound)
            .map(|c| c.info.remote_addr.ip())
            .collect();
        let live = self.conns.values().filter(|c| !c.closing).count();
        let limit = self.config.conn_limit;
        let mut dials = Vec::new();
        for (key, t) in self.targets.iter_mut() {
            let served = t.peer.is_some_and(|p| self.by_peer.contains_key(&p))
                || t.expected.is_some_and(|p| self.by_peer.contains_key(&p))
                || t.sock_addr.is_some_and(|a| live_addrs.contains(&a))
                || (t.port_implicit && t.sock_addr.is_some_and(|a| inbound_ips.contains(&a.ip())));
            match t.state {
                TargetState::Failed | TargetState::Attempting => {}
                _ if served => t.state = TargetState::Connected,
                TargetState::Connected => t.reset(now),
                TargetState::Waiting(_) => {}
            }
            if let TargetState::Waiting(at) = t.state {
                if at > now || served {
                    continue;
                }
                if limit > 0 && live + dials.len() >= limit {
                    t.backoff(
                        Some(format!("Connection limit reached ({limit})")),
                        now,
                        &mut self.rng,
                    );
                    continue;
                }
                t.state = TargetState::Attempting;
                dials.push(Action::Dial {
                    target: key.clone(),
                    addr: t.addr.clone(),
                });
            }
        }
        self.actions.extend(dials);
    }
}
