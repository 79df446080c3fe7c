//! Connection targets (weave's connection maker): direct targets from `connect` and,
//! with discovery, peers of peers. Each has a state and an exponential backoff with jitter.
//! This module holds the data and the rules; the [`crate::Mesh`] decides when to look.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;

use crate::ids::PeerName;

/// First retry interval (weave: 2 s).
pub const INITIAL_INTERVAL: Duration = Duration::from_secs(2);
/// Longest retry interval (weave: 6 min).
pub const MAX_INTERVAL: Duration = Duration::from_secs(6 * 60);
/// A connection that lived longer than this resets the backoff (weave: 1 min).
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// Most addresses dialled for one discovered peer. Weave dials every address any peer
/// reports; two covers a peer that moved or has two interfaces, while a member that reports
/// invented connections to a real peer cannot make us dial thousands of addresses.
pub const MAX_DISCOVERED_ADDRS_PER_PEER: usize = 2;
/// Most discovered targets in all: one per peer a router may know.
pub const MAX_DISCOVERED_TARGETS: usize = crate::mesh::MAX_PEERS;
/// Most direct targets (`connect`, `--peer`): one per peer a router may know.
pub const MAX_DIRECT_TARGETS: usize = crate::mesh::MAX_PEERS;

/// Where a target is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetState {
    /// Next attempt at the given time.
    Waiting(Instant),
    /// A dial is in flight.
    Attempting,
    /// A live connection serves it.
    Connected,
    /// Never retried (connect to self, name collision) until the user connects it again.
    Failed,
}

/// One target.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `host:port` to dial.
    pub addr: String,
    /// `addr` when it is a literal `ip:port` (to match live connections against).
    pub sock_addr: Option<SocketAddr>,
    /// From `connect` (persisted, kept when not dialable) rather than discovered.
    pub direct: bool,
    /// The user gave no port: an inbound connection from the same IP also serves it.
    pub port_implicit: bool,
    /// Discovered targets: the peer we expect to answer.
    pub expected: Option<PeerName>,
    /// The peer that answered last time.
    pub peer: Option<PeerName>,
    pub state: TargetState,
    pub interval: Duration,
    pub last_error: Option<String>,
    /// Whether any attempt failed yet (to tell "connecting" from "retrying").
    pub failed_before: bool,
}

impl Target {
    pub fn new(
        addr: String,
        direct: bool,
        port_implicit: bool,
        expected: Option<PeerName>,
        now: Instant,
    ) -> Target {
        Target {
            sock_addr: addr.parse().ok(),
            addr,
            direct,
            port_implicit,
            expected,
            peer: None,
            state: TargetState::Waiting(now),
            interval: INITIAL_INTERVAL,
            last_error: None,
            failed_before: false,
        }
    }

    /// Schedules the next attempt after a failure: `now + interval/2 + rand[0, interval)`,
    /// then grows the interval ×1.5 up to [`MAX_INTERVAL`].
    pub fn backoff(&mut self, error: Option<String>, now: Instant, rng: &mut Xoshiro256PlusPlus) {
        let interval_ms = self.interval.as_millis().max(1) as u64;
        let wait = Duration::from_millis(interval_ms / 2 + rng.random_range(0..interval_ms));
        self.state = TargetState::Waiting(now + wait);
        self.interval = (self.interval * 3 / 2).min(MAX_INTERVAL);
        if error.is_some() {
            self.last_error = error;
        }
        self.failed_before = true;
    }

    /// Retry now with a fresh interval (a long-lived connection ended, or the user asked).
    pub fn reset(&mut self, now: Instant) {
        self.state = TargetState::Waiting(now);
        self.interval = INITIAL_INTERVAL;
    }

    /// Never retry, remembering why.
    pub fn fail_forever(&mut self, error: String) {
        self.state = TargetState::Failed;
        self.last_error = Some(error);
        self.failed_before = true;
    }
}

/// Parses weave's `host[:port]` (also `[v6]:port` and a bare IPv6 address). Returns the
/// address to dial and whether the port was implicit.
pub(crate) fn parse_target(s: &str, default_port: u16) -> Result<(String, bool), String> {
    let bad = |why: &str| {
        format!("invalid peer {s:?}: {why}; expected host[:port], e.g. 192.0.2.1 or node1:6783")
    };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Ok((format!("[{s}]:{default_port}"), true));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        if h.parse::<Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address inside [ ]"));
        }
        match after {
            "" => (format!("[{h}]"), None),
            p => (
                format!("[{h}]"),
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h.to_owned(), Some(p)),
            Some(_) => return Err(bad("too many colons")),
            None => (s.to_owned(), None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_'));
    if !host_ok {
        return Err(bad("bad host name"));
    }
    match port {
        None => Ok((format!("{host}:{default_port}"), true)),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|c| c.is_ascii_digit()) => {
                Ok((format!("{host}:{n}"), false))
            }
            _ => Err(bad(&format!("port {p:?} is not a number from 1 to 65535"))),
        },
    }
}

/// Checks a peer argument (`host[:port]`) the way [`crate::Mesh::connect`]
/// will, so a command line can refuse it before anything starts.
pub fn check_peer(s: &str) -> Result<(), String> {
    parse_target(s, 6783).map(drop)
}

/// The IP of an `ip:port` / `[v6]:port` string, if it is one.
pub(crate) fn addr_ip(addr: &str) -> Option<IpAddr> {
    addr.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip())
        .or_else(|| {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
}

/// All targets, keyed by the user's string (direct) or by `ip:port` (discovered).
pub(crate) type Targets = BTreeMap<String, Target>;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parse_targets_like_weave() {
        assert_eq!(
            parse_target("192.0.2.1", 6783),
            Ok(("192.0.2.1:6783".into(), true))
        );
        assert_eq!(
            parse_target("node1:7000", 6783),
            Ok(("node1:7000".into(), false))
        );

        assert_eq!(parse_target("[::1]:5", 6783), Ok(("[::1]:5".into(), false)));
        assert_eq!(
            parse_target("[2001:db8::1]", 6783),
            Ok(("[2001:db8::1]:6783".into(), true))
        );
        assert_eq!(
            parse_target("2001:db8::1", 6783),
            Ok(("[2001:db8::1]:6783".into(), true))
        );
        for bad in [
            "", "a:", ":1", "a:1:2x", "a b", "a:1/2", "[::1", "[x]:1", "[::1]x", "a:-1", "a:99999",
            "a:abc", "a:0", "a:http", "a:+1",
        ] {
            assert!(parse_target(bad, 6783).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            addr_ip("192.0.2.1:6783"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(addr_ip("[::1]:6783"), Some("::1".parse().unwrap()));
        assert_eq!(addr_ip("node1:6783"), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let now = Instant::now();
        let mut t = Target::new("a:1".into(), true, false, None, now);
        let mut prev = Duration::ZERO;
        for i in 0..30 {
            let interval = t.interval;
            t.backoff(Some("x".into()), now, &mut rng);
            let TargetState::Waiting(at) = t.state else {
                panic!("not waiting")
            };
            let wait = at - now;
            assert!(
                wait >= interval / 2 && wait < interval * 3 / 2,
                "step {i}: {wait:?} vs {interval:?}"
            );
            assert!(t.interval >= prev && t.interval <= MAX_INTERVAL);
            prev = t.interval;
        }
        assert_eq!(t.interval, MAX_INTERVAL);
        t.reset(now);
        assert_eq!(t.interval, INITIAL_INTERVAL);
        assert_eq!(t.state, TargetState::Waiting(now));
    }
}
