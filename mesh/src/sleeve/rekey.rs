//! When a sleeve receive key is due for rotation. Keys are chosen by the receiver, so each
//! router rotates the keys it receives with: a fresh [`crate::sleeve::SleeveHello`] goes over
//! the peer's control connection, the peer seals with the new key from then on, and the old key
//! stays valid for packets in flight (the router keeps two per peer). A key lives at most
//! [`REKEY_AFTER_TIME`] or [`REKEY_AFTER_PACKETS`] packets, whichever comes first, as WireGuard's.

use std::time::{Duration, Instant};

/// A receive key is replaced after this long (and never kept longer, whatever is configured).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A receive key is replaced once this many packets arrived under it (far below the sealer's
/// hard `COUNTER_LIMIT`, so the sender never runs out of nonces while the new key travels).
pub const REKEY_AFTER_PACKETS: u64 = 1 << 48;

/// The rotation schedule of one peer's receive key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rekey {
    interval: Duration,
    issued: Instant,
}

impl Rekey {
    /// A key issued at `now`, to be replaced after `interval` (capped at [`REKEY_AFTER_TIME`]).
    pub fn new(interval: Duration, now: Instant) -> Rekey {
        Rekey {
            interval: interval.min(REKEY_AFTER_TIME),
            issued: now,
        }
    }

    /// True when the key issued last must be replaced: it is `interval` old, or `packets`
    /// (received under it so far) reached [`REKEY_AFTER_PACKETS`].
    pub fn due(&self, now: Instant, packets: u64) -> bool {
        now >= self.deadline() || packets >= REKEY_AFTER_PACKETS
    }

    /// When the key expires by age (the packet limit is checked whenever the timer runs).
    pub fn deadline(&self) -> Instant {
        self.issued + self.interval
    }

    /// A new key was issued at `now`.
    pub fn rekeyed(&mut self, now: Instant) {
        self.issued = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_the_interval_or_the_packet_limit_whichever_first() {
        let t0 = Instant::now();
        let mut r = Rekey::new(Duration::from_secs(10), t0);
        assert!(!r.due(t0, 0));
        assert!(!r.due(t0 + Duration::from_secs(9), REKEY_AFTER_PACKETS - 1));
        assert!(r.due(t0 + Duration::from_secs(10), 0));
        assert!(r.due(t0 + Duration::from_secs(1), REKEY_AFTER_PACKETS));
        r.rekeyed(t0 + Duration::from_secs(10));
        assert!(!r.due(t0 + Duration::from_secs(19), 5));
        assert!(r.due(t0 + Duration::from_secs(20), 5));
        assert_eq!(r.deadline(), t0 + Duration::from_secs(20));
    }

    #[test]
    fn interval_never_exceeds_rekey_after_time() {
        let t0 = Instant::now();
        let r = Rekey::new(Duration::from_secs(3600), t0);
        assert_eq!(r.deadline(), t0 + REKEY_AFTER_TIME);
        assert!(r.due(t0 + REKEY_AFTER_TIME, 0));
        assert!(!r.due(t0 + REKEY_AFTER_TIME - Duration::from_millis(1), 0));
    }
}
