//! Per-neighbour sleeve health: heartbeats and path-MTU discovery.
//!
//! Call protocol (quinn style): feed every authenticated packet from a neighbour with
//! [`Health::handle_heard`], its control payloads with [`Health::handle_control`] (which may
//! return an answer to send at once), then drain [`Health::poll_transmit`] until `None` and sleep
//! until [`Health::poll_timeout`]. Heartbeats go every [`HEARTBEAT_FAST`] until one is
//! acknowledged, then every [`HEARTBEAT_SLOW`]; a neighbour whose acks stop for
//! [`UNHEALTHY_AFTER`] is unhealthy and fast heartbeats resume. Once healthy, path MTU is found
//! by binary search with DF probes; the largest acknowledged size is the link's `mtu`.
//!
//! A path can shrink without telling anyone (a firewall or tunnel that drops big packets and
//! sends no ICMP), so a found MTU is never trusted for long: every [`PMTU_CHECK`] one probe of
//! exactly that size must be acknowledged, or the search starts again from [`PMTU_MIN`]. A path
//! can also heal, so while the found MTU is below the overlay MTU a search between the two runs
//! every [`PMTU_RAISE`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::Control;
use crate::ids::PeerName;

/// Heartbeat interval until the neighbour answers (weave: 500 ms).
pub const HEARTBEAT_FAST: Duration = Duration::from_millis(500);
/// Heartbeat interval while it answers: cheap, and a failure is still seen within 15 s.
pub const HEARTBEAT_SLOW: Duration = Duration::from_secs(5);
/// Without an acknowledged heartbeat for this long a neighbour is unhealthy (three slow beats).
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(15);
/// The smallest MTU assumed to work (weave's lowest-good, the IPv4 minimum datagram 576 − 24).
pub const PMTU_MIN: u16 = 552;
/// How long to wait for a probe's ack; a veth or LAN answers in well under a millisecond.
pub const PMTU_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Probes per candidate before it counts as too big (one loss must not shrink the MTU).
pub const PMTU_TRIES: u8 = 3;
/// How often the found MTU is re-verified by one probe of its size: a path that starts
/// dropping it silently is noticed within this plus [`PMTU_TRIES`] probe timeouts.
pub const PMTU_CHECK: Duration = Duration::from_secs(5);
/// How often a link below the overlay MTU searches upward again, so a healed path gets its
/// full MTU back (one probe when it has, about ten when it has not).
pub const PMTU_RAISE: Duration = Duration::from_secs(10);

/// What the status shows for one neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// A heartbeat was acknowledged within [`UNHEALTHY_AFTER`].
    pub healthy: bool,
    /// The verified path MTU (overlay MTU the path carries), once the search finished.
    pub mtu: Option<u16>,
    /// When we last got an authenticated packet from it.
    pub last_heard: Option<Instant>,
}

/// What the outstanding probe is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Binary search between `lo` (assumed to pass) and `hi` (known not to).
    Search,
    /// Re-verifying the found MTU: a loss restarts the search from the bottom.
    Check,
}

#[derive(Clone, Debug)]
struct Pmtu {
    max: u16,
    lo: u16,
    hi: u16,
    candidate: Option<u16>,
    phase: Phase,
    tries: u8,
    deadline: Instant,
    verified: Option<u16>,
    /// When the found MTU is probed again ([`PMTU_CHECK`]).
    check_at: Option<Instant>,
    /// When a search upward starts ([`PMTU_RAISE`]), while below `max`.
    raise_at: Option<Instant>,
    /// When a check failed. The search waits for a heartbeat acknowledged after it: a
    /// neighbour that went silent altogether loses every probe, and that says nothing about
    /// the path's MTU.
    suspect: Option<Instant>,
}

impl Pmtu {
    fn new(max: u16, now: Instant) -> Pmtu {
        Pmtu {
            max,
            lo: PMTU_MIN.min(max),
            hi: max.saturating_add(1),
            candidate: None,
            phase: Phase::Search,
            tries: 0,
            deadline: now,
            verified: None,
            check_at: None,
            raise_at: None,
            suspect: None,
        }
    }

    /// Searches between `from` (assumed to pass) and `max`, trying `max` first.
    fn search(&mut self, from: u16, now: Instant) {
        self.lo = from.min(self.max);
        self.hi = self.max.saturating_add(1);
        self.probe(self.max, Phase::Search, now);
    }

    fn probe(&mut self, size: u16, phase: Phase, now: Instant) {
        self.candidate = Some(size);
        self.phase = phase;
        self.tries = 0;
        self.deadline = now;
        self.check_at = None;
        if phase == Phase::Search {
            self.raise_at = None;
        }
    }

    /// Starts whatever is due when no probe is outstanding; `last_ack` is the neighbour's
    /// last acknowledged heartbeat.
    fn start_due(&mut self, last_ack: Option<Instant>, now: Instant) {
        if self.candidate.is_some() {
            return;
        }
        if let Some(t) = self.suspect {
            if last_ack.is_none_or(|a| a < t) {
                return;
            }
            self.suspect = None;
            self.search(PMTU_MIN, now);
            return;
        }
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.verified {
            None => self.search(PMTU_MIN, now),
            Some(v) if due(self.raise_at) => self.search(v, now),
            Some(v) if due(self.check_at) => self.probe(v, Phase::Check, now),
            Some(_) => {}
        }
    }

    /// The search interval closed: `lo` is the path MTU.
    fn finish(&mut self, now: Instant) {
        let mtu = self.lo;
        self.verified = Some(mtu);
        self.candidate = None;
        self.check_at = Some(now + PMTU_CHECK);
        self.raise_at = (mtu < self.max).then_some(now + PMTU_RAISE);
    }

    /// Moves to the next candidate, or finishes.
    fn next(&mut self, now: Instant) {
        if self.hi.saturating_sub(self.lo) <= 1 {
            self.finish(now);
        } else {
            self.probe(self.lo + (self.hi - self.lo) / 2, Phase::Search, now);
        }
    }

    fn acked(&mut self, size: u16, now: Instant) {
        if self.candidate != Some(size) {
            return;
        }
        match self.phase {
            Phase::Search => {
                self.lo = size;
                self.next(now);
            }
            Phase::Check => {
                // Still good; a passed check does not postpone the search upward.
                self.candidate = None;
                self.check_at = Some(now + PMTU_CHECK);
            }
        }
    }

    fn failed(&mut self, size: u16, now: Instant) {
        if self.candidate != Some(size) {
            return;
        }
        match self.phase {
            Phase::Search => {
                self.hi = size;
                self.next(now);
            }
            // The found MTU no longer passes: once a heartbeat shows the neighbour is
            // there, search again from the bottom.
            Phase::Check => {
                self.candidate = None;
                self.check_at = None;
                self.suspect = Some(now);
            }
        }
    }

    /// The link is unhealthy: drop the outstanding probe (its loss would prove nothing) and
    /// check again as soon as it is healthy.
    fn pause(&mut self, now: Instant) {
        if self.candidate.take().is_some()
            && let Some(v) = self.verified
        {
            self.check_at = Some(now);
            if v < self.max {
                self.raise_at = Some(now + PMTU_RAISE);
            }
        }
    }

    fn timeout(&self) -> Option<Instant> {
        match self.candidate {
            Some(_) => Some(self.deadline),
            None => [self.check_at, self.raise_at].into_iter().flatten().min(),
        }
    }
}

#[derive(Clone, Debug)]
struct Link {
    last_heard: Option<Instant>,
    last_ack: Option<Instant>,
    next_heartbeat: Instant,
    token: u64,
    pmtu: Pmtu,
}

impl Link {
    fn healthy(&self, now: Instant) -> bool {
        self.last_ack
            .is_some_and(|t| now.saturating_duration_since(t) < UNHEALTHY_AFTER)
    }
}

/// Heartbeat and PMTU state of every direct neighbour.
#[derive(Clone, Debug, Default)]
pub struct Health {
    links: BTreeMap<PeerName, Link>,
}

impl Health {
    /// No neighbours.
    pub fn new() -> Health {
        Health::default()
    }

    /// Starts heartbeats to `peer` (we can now send to it); `max_mtu` bounds the PMTU search.
    /// Re-adding a known peer restarts its search but keeps what was heard.
    pub fn add_peer(&mut self, peer: PeerName, max_mtu: u16, now: Instant) {
        let link = self.links.entry(peer).or_insert(Link {
            last_heard: None,
            last_ack: None,
            next_heartbeat: now,
            token: 0,
            pmtu: Pmtu::new(max_mtu, now),
        });
        link.next_heartbeat = now;
        link.pmtu = Pmtu::new(max_mtu, now);
    }

    /// Stops tracking `peer`.
    pub fn remove_peer(&mut self, peer: PeerName) {
        self.links.remove(&peer);
    }

    /// An authenticated packet arrived from `peer`.
    pub fn handle_heard(&mut self, peer: PeerName, now: Instant) {
        if let Some(l) = self.links.get_mut(&peer) {
            l.last_heard = Some(now);
        }
    }

    /// A control payload arrived from `peer`; returns the answer to send back, if any.
    /// Heartbeats and probes are answered even before we track the peer, so a one-sided
    /// start still converges.
    pub fn handle_control(
        &mut self,
        peer: PeerName,
        control: Control,
        now: Instant,
    ) -> Option<Control> {
        match control {
            Control::Heartbeat(t) => Some(Control::HeartbeatAck(t)),
            Control::PmtuProbe(size) => Some(Control::PmtuAck(size)),
            Control::HeartbeatAck(t) => {
                let l = self.links.get_mut(&peer)?;
                // Only an answer to one of our last two beats counts (one may be in flight).
                if t != 0 && (t == l.token || t + 1 == l.token) {
                    let was_healthy = l.healthy(now);
                    l.last_ack = Some(now);
                    if !was_healthy {
                        // The PMTU search may start now: pull the next poll forward.
                        l.next_heartbeat = now + HEARTBEAT_SLOW;
                        l.pmtu.deadline = now;
                    }
                }
                None
            }
            Control::PmtuAck(size) => {
                if let Some(l) = self.links.get_mut(&peer) {
                    l.pmtu.acked(size, now);
                }
                None
            }
        }
    }

    /// Sending a probe of `size` to `peer` failed locally (EMSGSIZE: bigger than the kernel's
    /// path MTU): counts as a lost probe at once.
    pub fn handle_probe_error(&mut self, peer: PeerName, size: u16, now: Instant) {
        if let Some(l) = self.links.get_mut(&peer) {
            l.pmtu.failed(size, now);
        }
    }

    /// The next control packet due, with its neighbour.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(PeerName, Control)> {
        for (&peer, l) in &mut self.links {
            if l.next_heartbeat <= now {
                let interval = if l.healthy(now) {
                    HEARTBEAT_SLOW
                } else {
                    HEARTBEAT_FAST
                };
                l.next_heartbeat = now + interval;
                l.token += 1;
                return Some((peer, Control::Heartbeat(l.token)));
            }
            if !l.healthy(now) {
                l.pmtu.pause(now);
                continue;
            }
            l.pmtu.start_due(l.last_ack, now);
            let Some(mut c) = l.pmtu.candidate.filter(|_| l.pmtu.deadline <= now) else {
                continue;
            };
            if l.pmtu.tries >= PMTU_TRIES {
                l.pmtu.failed(c, now);
                if l.pmtu.suspect.is_some() {
                    // Ask at once whether the neighbour is there at all.
                    l.next_heartbeat = now + HEARTBEAT_SLOW;
                    l.token += 1;
                    return Some((peer, Control::Heartbeat(l.token)));
                }
                match l.pmtu.candidate {
                    Some(next) => c = next,
                    None => continue,
                }
            }
            l.pmtu.tries += 1;
            l.pmtu.deadline = now + PMTU_PROBE_TIMEOUT;
            return Some((peer, Control::PmtuProbe(c)));
        }
        None
    }

    /// When `poll_transmit` next has something to say.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .values()
            .flat_map(|l| {
                // Probes wait for a healthy link: a timer past its health is left to the
                // heartbeat, which wakes us anyway.
                let probe = l
                    .pmtu
                    .timeout()
                    .filter(|&t| l.last_ack.is_some_and(|a| t < a + UNHEALTHY_AFTER));
                [Some(l.next_heartbeat), probe]
            })
            .flatten()
            .min()
    }

    /// The status of one neighbour.
    pub fn status(&self, peer: PeerName, now: Instant) -> Option<LinkStatus> {
        self.links.get(&peer).map(|l| LinkStatus {
            healthy: l.healthy(now),
            mtu: l.pmtu.verified,
            last_heard: l.last_heard,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: u64) -> PeerName {
        PeerName::new(v).unwrap()
    }

    /// Two neighbours a, b over a path that carries probes up to `path_mtu`; runs `secs`
    /// seconds of virtual time in 10 ms steps, optionally with b silent.
    struct Pair {
        a: Health,
        b: Health,
        now: Instant,
        path_mtu: u16,
        b_alive: bool,
        heartbeats_a_sent: u32,
    }

    impl Pair {
        fn new(path_mtu: u16) -> Pair {
            let now = Instant::now();
            let mut a = Health::new();
            let mut b = Health::new();
            a.add_peer(p(2), 1376, now);
            b.add_peer(p(1), 1376, now);
            Pair {
                a,
                b,
                now,
                path_mtu,
                b_alive: true,
                heartbeats_a_sent: 0,
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                while let Some((to, c)) = self.a.poll_transmit(self.now) {
                    assert_eq!(to, p(2));
                    if matches!(c, Control::Heartbeat(_)) {
                        self.heartbeats_a_sent += 1;
                    }
                    let arrives = match c {
                        Control::PmtuProbe(s) => s <= self.path_mtu,
                        _ => true,
                    };
                    if arrives && self.b_alive {
                        self.b.handle_heard(p(1), self.now);
                        if let Some(reply) = self.b.handle_control(p(1), c, self.now) {
                            self.a.handle_heard(p(2), self.now);
                            assert_eq!(self.a.handle_control(p(2), reply, self.now), None);
                        }
                    }
                }
                let t = self.a.poll_timeout().unwrap();
                assert!(t > self.now, "poll_timeout must move forward");
                self.now += Duration::from_millis(10);
            }
        }
    }

    #[test]
    fn heartbeats_make_the_link_healthy_and_slow_down() {
        let mut pair = Pair::new(1376);
        let st = pair.a.status(p(2), pair.now).unwrap();
        assert!(!st.healthy);
        assert_eq!(st.mtu, None);
        pair.run(Duration::from_secs(1));
        assert!(pair.a.status(p(2), pair.now).unwrap().healthy);
        pair.heartbeats_a_sent = 0;
        pair.run(Duration::from_secs(20));
        // 20 s at one beat per 5 s.
        assert!(
            (3..=5).contains(&pair.heartbeats_a_sent),
            "{} heartbeats in 20 s",
            pair.heartbeats_a_sent
        );
        assert_eq!(pair.a.status(p(2), pair.now).unwrap().mtu, Some(1376));
    }

    #[test]
    fn silence_makes_it_unhealthy_and_fast_again() {
        let mut pair = Pair::new(1376);
        pair.run(Duration::from_secs(2));
        // The last ack was at 0 s (the next beat is due at 5 s).
        pair.b_alive = false;
        pair.run(Duration::from_secs(12));
        assert!(
            pair.a.status(p(2), pair.now).unwrap().healthy,
            "still < 15 s"
        );
        pair.run(Duration::from_secs(2));
        assert!(!pair.a.status(p(2), pair.now).unwrap().healthy);
        pair.heartbeats_a_sent = 0;
        pair.run(Duration::from_secs(2));
        assert!(pair.heartbeats_a_sent >= 3, "back to 500 ms beats");
        pair.b_alive = true;
        pair.run(Duration::from_secs(1));
        assert!(pair.a.status(p(2), pair.now).unwrap().healthy);
    }

    #[test]
    fn pmtu_search_finds_the_largest_size_that_gets_through() {
        for path in [552u16, 600, 1000, 1375, 1376, 1400] {
            let mut pair = Pair::new(path);
            pair.run(Duration::from_secs(10));
            let st = pair.a.status(p(2), pair.now).unwrap();
            assert_eq!(st.mtu, Some(path.min(1376)), "path mtu {path}");
        }
    }

    /// Runs until `a` reports `mtu` for b, at most `limit`; returns how long it took.
    fn until_mtu(pair: &mut Pair, mtu: u16, limit: Duration) -> Duration {
        let start = pair.now;
        while pair.a.status(p(2), pair.now).unwrap().mtu != Some(mtu) {
            assert!(
                pair.now - start < limit,
                "mtu {:?} after {limit:?}, want {mtu}",
                pair.a.status(p(2), pair.now).unwrap().mtu
            );
            pair.run(Duration::from_millis(100));
        }
        pair.now - start
    }

    #[test]
    fn a_path_that_starts_dropping_big_packets_silently_is_measured_again() {
        let mut pair = Pair::new(1376);
        until_mtu(&mut pair, 1376, Duration::from_secs(5));
        // The black hole: from now on probes above 616 vanish, no error, no ICMP.
        pair.path_mtu = 616;
        let took = until_mtu(&mut pair, 616, Duration::from_secs(30));
        // One check interval, its lost tries, then a search (each loss costs the tries).
        let bound = PMTU_CHECK + PMTU_PROBE_TIMEOUT * u32::from(PMTU_TRIES) * 12;
        assert!(took <= bound, "found after {took:?}, bound {bound:?}");
        // It stays there while the path does.
        pair.run(PMTU_CHECK * 4);
        assert_eq!(pair.a.status(p(2), pair.now).unwrap().mtu, Some(616));
    }

    #[test]
    fn a_healed_path_gets_its_full_mtu_back() {
        let mut pair = Pair::new(700);
        until_mtu(&mut pair, 700, Duration::from_secs(10));
        pair.path_mtu = 1376;
        let took = until_mtu(&mut pair, 1376, PMTU_RAISE * 2);
        assert!(took <= PMTU_RAISE + Duration::from_secs(1), "{took:?}");
        // At the full MTU no upward search runs: only heartbeats and a check per interval.
        let mut h = pair.a.clone();
        let mut probes = 0;
        let mut now = pair.now;
        let end = now + PMTU_RAISE * 3;
        while now < end {
            while let Some((_, c)) = h.poll_transmit(now) {
                if let Control::PmtuProbe(size) = c {
                    assert_eq!(size, 1376);
                    probes += 1;
                    h.handle_control(p(2), Control::PmtuAck(size), now);
                }
                if let Control::Heartbeat(t) = c {
                    h.handle_control(p(2), Control::HeartbeatAck(t), now);
                }
            }
            now += Duration::from_millis(100);
        }
        let checks = (PMTU_RAISE * 3).as_secs() / PMTU_CHECK.as_secs();
        assert!(
            (checks - 1..=checks + 1).contains(&probes),
            "{probes} probes in {:?}",
            PMTU_RAISE * 3
        );
    }

    #[test]
    fn an_unhealthy_link_pauses_probing_and_checks_when_back() {
        let mut pair = Pair::new(1376);
        until_mtu(&mut pair, 1376, Duration::from_secs(5));
        pair.b_alive = false;
        pair.run(UNHEALTHY_AFTER + Duration::from_secs(1));
        assert!(!pair.a.status(p(2), pair.now).unwrap().healthy);
        assert_eq!(
            pair.a.status(p(2), pair.now).unwrap().mtu,
            Some(1376),
            "lost probes of an unhealthy link prove nothing"
        );
        // While unhealthy only heartbeats wake the loop (Pair asserts progress).
        pair.path_mtu = 800;
        pair.b_alive = true;
        until_mtu(&mut pair, 800, Duration::from_secs(15));
    }

    #[test]
    fn probe_error_counts_as_loss_and_stale_acks_are_ignored() {
        let now = Instant::now();
        let mut h = Health::new();
        h.add_peer(p(2), 1376, now);
        let (_, hb) = h.poll_transmit(now).unwrap();
        let Control::Heartbeat(t) = hb else {
            panic!("expected a heartbeat, got {hb:?}")
        };
        assert_eq!(
            h.handle_control(p(2), Control::HeartbeatAck(t + 5), now),
            None
        );
        assert!(!h.status(p(2), now).unwrap().healthy, "a bogus token");
        h.handle_control(p(2), Control::HeartbeatAck(t), now);
        assert!(h.status(p(2), now).unwrap().healthy);
        assert_eq!(h.poll_transmit(now), Some((p(2), Control::PmtuProbe(1376))));
        h.handle_probe_error(p(2), 1376, now);
        let (_, c) = h.poll_transmit(now).unwrap();
        assert_eq!(c, Control::PmtuProbe(552 + (1377 - 552) / 2));
        // An ack for a size we are not probing changes nothing.
        h.handle_control(p(2), Control::PmtuAck(1376), now);
        assert_eq!(h.status(p(2), now).unwrap().mtu, None);
        h.remove_peer(p(2));
        assert_eq!(h.status(p(2), now), None);
        assert_eq!(h.poll_timeout(), None);
    }
}
