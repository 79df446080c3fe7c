//! Sealing and opening sleeve packets: AES-256-GCM from ring, the 64-bit counter as the nonce,
//! the outer header as associated data, and a replay window.
//!
//! A [`Sealer`] belongs to one (sender → receiver) direction and is shared by the sending threads
//! (the counter is atomic). An [`Opener`] belongs to the receiver and is used by one thread at a
//! time. Both work in place on a caller-owned buffer: nothing allocates per packet.
//!
//! Keys are random per direction and per hello (the receiver picks them), so a counter that
//! starts at 0 never repeats a nonce under one key; a sealer refuses to go past [`COUNTER_LIMIT`].

use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::wire::{KeyId, Kind, OUTER_LEN, Outer, TAG_LEN, WireError};

/// The sealer refuses counters from here on, long before the 64-bit space ends; a new hello
/// (new key, counter 0) is the way on.
pub const COUNTER_LIMIT: u64 = 1 << 62;
/// Bits in the replay window: a packet up to this many counters older than the newest seen is
/// still accepted once (reordering by GRO, multi-queue or relays stays inside it).
pub const WINDOW_BITS: u64 = 4096;
const WINDOW_WORDS: usize = (WINDOW_BITS / 64) as usize;

/// Why a packet could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The sender used up the key's counters.
    #[error("sleeve key {0} exhausted its counters; a new key exchange is needed")]
    CounterExhausted(KeyId),
    /// The buffer is too short for the header, body and tag.
    #[error("sleeve buffer too short")]
    BufferTooShort,
    /// Header or length is malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The tag did not verify: wrong key, or tampered.
    #[error("sleeve packet failed authentication")]
    Auth,
    /// Already seen, or older than the replay window.
    #[error("sleeve packet replayed or too old (counter {0})")]
    Replay(u64),
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals packets for one peer under the key it gave us.
pub struct Sealer {
    key_id: KeyId,
    cipher: Option<LessSafeKey>,
    next: AtomicU64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field("encrypted", &self.cipher.is_some())
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish()
    }
}

impl Sealer {
    /// A sealer for `key_id`; `key: None` sends the inner part in clear (no password).
    pub fn new(key_id: KeyId, key: Option<&[u8; 32]>) -> Sealer {
        Sealer {
            key_id,
            cipher: key.map(cipher),
            next: AtomicU64::new(0),
        }
    }

    /// The key id packets carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// True when packets are encrypted (a tag follows the body).
    pub fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Bytes a sealed packet adds after the plaintext.
    pub fn tag_len(&self) -> usize {
        if self.encrypted() { TAG_LEN } else { 0 }
    }

    /// Seals in place. `buf[OUTER_LEN..OUTER_LEN + plain_len]` holds the inner part; the outer
    /// header is written in front and the tag behind. Returns the packet length.
    pub fn seal(&self, kind: Kind, buf: &mut [u8], plain_len: usize) -> Result<usize, CryptoError> {
        let total = OUTER_LEN + plain_len + self.tag_len();
        if buf.len() < total {
            return Err(CryptoError::BufferTooShort);
        }
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        if counter >= COUNTER_LIMIT {
            // Keep it pinned so a wrap of the atomic can never happen.
            self.next.store(COUNTER_LIMIT, Ordering::Relaxed);
            return Err(CryptoError::CounterExhausted(self.key_id));
        }
        let outer = Outer {
            kind,
            key_id: self.key_id,
            counter,
        }
        .to_bytes();
        let (head, rest) = buf.split_at_mut(OUTER_LEN);
        head.copy_from_slice(&outer);
        if let Some(c) = &self.cipher {
            let (body, tail) = rest.split_at_mut(plain_len);
            let tag = c
                .seal_in_place_separate_tag(nonce(counter), Aad::from(&outer), body)
                .map_err(|_| CryptoError::BufferTooShort)?;
            tail.get_mut(..TAG_LEN)
                .ok_or(CryptoError::BufferTooShort)?
                .copy_from_slice(tag.as_ref());
        }
        Ok(total)
    }

    /// Test hook: continue from `next` (to test exhaustion without 2^62 packets).
    #[doc(hidden)]
    pub fn set_next_counter(&self, next: u64) {
        self.next.store(next, Ordering::Relaxed);
    }
}

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    // AES-256 accepts every 32-byte key, so this cannot fail.
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key"))
}

/// Opens packets sealed under one of our receive keys.
pub struct Opener {
    cipher: Option<LessSafeKey>,
    window: ReplayWindow,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("encrypted", &self.cipher.is_some())
            .field("window", &self.window)
            .finish()
    }
}

impl Opener {
    /// An opener for packets under `key` (`None`: inner part in clear).
    pub fn new(key: Option<&[u8; 32]>) -> Opener {
        Opener {
            cipher: key.map(cipher),
            window: ReplayWindow::default(),
        }
    }

    /// Opens `packet` in place (its outer header already parsed as `outer`) and returns the
    /// plaintext's range within `packet`. The replay window only moves once the tag verifies,
    /// so forged packets cannot advance it.
    pub fn open(
        &mut self,
        outer: &Outer,
        packet: &mut [u8],
    ) -> Result<std::ops::Range<usize>, CryptoError> {
        if !self.window.check(outer.counter) {
            return Err(CryptoError::Replay(outer.counter));
        }
        let aad = outer.to_bytes();
        let body = packet
            .get_mut(OUTER_LEN..)
            .ok_or(CryptoError::BufferTooShort)?;
        let plain_len = match &self.cipher {
            Some(c) => c
                .open_in_place(nonce(outer.counter), Aad::from(&aad), body)
                .map_err(|_| CryptoError::Auth)?
                .len(),
            None => body.len(),
        };
        self.window.update(outer.counter);
        Ok(OUTER_LEN..OUTER_LEN + plain_len)
    }
}

/// An RFC 6479-style sliding bitmap of counters seen.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted plus one (0: nothing yet).
    top: u64,
    bits: [u64; WINDOW_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; WINDOW_WORDS],
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplayWindow(top={})", self.top)
    }
}

impl ReplayWindow {
    fn slot(counter: u64) -> (usize, u64) {
        let word = ((counter / 64) % WINDOW_WORDS as u64) as usize;
        (word, 1u64 << (counter % 64))
    }

    /// True when `counter` is new and not too old; changes nothing.
    pub fn check(&self, counter: u64) -> bool {
        // No sender goes that far (COUNTER_LIMIT), and `top = counter + 1` must not wrap.
        if counter >= COUNTER_LIMIT {
            return false;
        }
        if counter >= self.top {
            return true;
        }
        // One word of slack is kept for the RFC 6479 block rotation, so the usable window is
        // WINDOW_BITS - 64 counters behind the newest.
        if self.top - counter > WINDOW_BITS - 64 {
            return false;
        }
        let (w, m) = Self::slot(counter);
        self.bits.get(w).is_some_and(|b| b & m == 0)
    }

    /// Records `counter` as seen; call only after `check` and authentication succeeded.
    pub fn update(&mut self, counter: u64) {
        if counter >= COUNTER_LIMIT {
            return;
        }
        if counter >= self.top {
            let old_block = if self.top == 0 {
                None
            } else {
                Some((self.top - 1) / 64)
            };
            let new_block = counter / 64;
            match old_block {
                None => self.bits = [0; WINDOW_WORDS],
                Some(old) => {
                    let diff = (new_block - old).min(WINDOW_WORDS as u64);
                    for i in 1..=diff {
                        let w = ((old + i) % WINDOW_WORDS as u64) as usize;
                        if let Some(b) = self.bits.get_mut(w) {
                            *b = 0;
                        }
                    }
                }
            }
            self.top = counter + 1;
        }
        let (w, m) = Self::slot(counter);
        if let Some(b) = self.bits.get_mut(w) {
            *b |= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sleeve::wire::{INNER_LEN, Outer};

    const KEY: [u8; 32] = [7; 32];

    fn seal(s: &Sealer, msg: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; OUTER_LEN + msg.len() + TAG_LEN];
        buf[OUTER_LEN..OUTER_LEN + msg.len()].copy_from_slice(msg);
        let n = s.seal(Kind::Data, &mut buf, msg.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn open(o: &mut Opener, pkt: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut p = pkt.to_vec();
        let outer = Outer::parse(&p)?;
        let r = o.open(&outer, &mut p)?;
        Ok(p[r].to_vec())
    }

    #[test]
    fn seal_open_round_trip_and_ciphertext_differs() {
        let s = Sealer::new(KeyId(9), Some(&KEY));
        let mut o = Opener::new(Some(&KEY));
        let msg = b"0123456789abc the frame payload";
        let pkt = seal(&s, msg);
        assert_eq!(pkt.len(), OUTER_LEN + msg.len() + TAG_LEN);
        assert_eq!(&pkt[..5], &[1, 0, 0, 0, 9]);
        assert!(!pkt.windows(8).any(|w| w == b"the fram"));
        assert_eq!(open(&mut o, &pkt).unwrap(), msg);
        // The second packet uses the next counter.
        let pkt2 = seal(&s, msg);
        assert_eq!(Outer::parse(&pkt2).unwrap().counter, 1);
        assert_ne!(pkt[OUTER_LEN..], pkt2[OUTER_LEN..]);
        assert_eq!(open(&mut o, &pkt2).unwrap(), msg);
    }

    #[test]
    fn plaintext_mode_has_no_tag() {
        let s = Sealer::new(KeyId(1), None);
        let mut o = Opener::new(None);
        let pkt = seal(&s, b"hello");
        assert_eq!(pkt.len(), OUTER_LEN + 5);
        assert_eq!(&pkt[OUTER_LEN..], b"hello");
        assert_eq!(open(&mut o, &pkt).unwrap(), b"hello");
        assert_eq!(open(&mut o, &pkt), Err(CryptoError::Replay(0)));
    }

    #[test]
    fn tampering_anywhere_fails_and_does_not_move_the_window() {
        let s = Sealer::new(KeyId(9), Some(&KEY));
        let pkt = seal(&s, &[0xab; INNER_LEN + 60]);
        for i in 0..pkt.len() {
            let mut o = Opener::new(Some(&KEY));
            let mut bad = pkt.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&mut o, &bad).is_err(),
                "flipping byte {i} went unnoticed"
            );
            // The genuine packet still opens: the forgery did not mark its counter.
            assert!(open(&mut o, &pkt).is_ok(), "byte {i}");
        }
        let mut wrong = Opener::new(Some(&[8; 32]));
        assert_eq!(open(&mut wrong, &pkt), Err(CryptoError::Auth));
        let mut o = Opener::new(Some(&KEY));
        assert!(open(&mut o, &pkt[..OUTER_LEN + 3]).is_err());
    }

    #[test]
    fn replay_reorder_and_too_old() {
        let s = Sealer::new(KeyId(2), Some(&KEY));
        let mut o = Opener::new(Some(&KEY));
        let pkts: Vec<Vec<u8>> = (0..5000).map(|_| seal(&s, b"x")).collect();
        // Out of order inside the window: each accepted once.
        for i in [10usize, 3, 7, 0, 4999, 4899, 1500] {
            assert!(open(&mut o, &pkts[i]).is_ok(), "packet {i}");
        }
        for i in [4899usize, 4999, 10, 1500] {
            assert_eq!(open(&mut o, &pkts[i]), Err(CryptoError::Replay(i as u64)));
        }
        // Newest is 4999 (top 5000): the oldest acceptable counter is 5000 - (WINDOW_BITS - 64).
        let edge = (5000 - (WINDOW_BITS - 64)) as usize;
        assert_eq!(
            open(&mut o, &pkts[edge - 1]),
            Err(CryptoError::Replay(edge as u64 - 1))
        );
        assert!(open(&mut o, &pkts[edge]).is_ok());
        assert!(open(&mut o, &pkts[900]).is_err(), "too old");
    }

    #[test]
    fn window_matches_a_set_model() {
        // A seeded walk of jumps and back-steps against a naive model.
        let mut seed: u64 = 0x5eed_1234;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top: u64 = 0;
        for step in 0..20_000 {
            let r = next();
            let c = match r % 4 {
                0 => top + r % 3000,
                1 => top.saturating_sub(r % 5000),
                _ => top + (r % 2),
            };
            let fresh = !seen.contains(&c);
            let in_window = c >= top || top - c <= WINDOW_BITS - 64;
            let want = fresh && in_window;
            assert_eq!(w.check(c), want, "step {step} counter {c} top {top}");
            if want {
                w.update(c);
                seen.insert(c);
                top = top.max(c + 1);
            }
        }
    }

    #[test]
    fn counters_beyond_the_limit_are_refused_by_receivers() {
        // Found by the fuzzer: counter u64::MAX made `top` wrap to 0, so a plaintext packet
        // could be replayed forever.
        let mut o = Opener::new(None);
        let mut pkt = Outer {
            kind: Kind::Data,
            key_id: KeyId(1),
            counter: u64::MAX,
        }
        .to_bytes()
        .to_vec();
        let outer = Outer::parse(&pkt).unwrap();
        assert_eq!(o.open(&outer, &mut pkt), Err(CryptoError::Replay(u64::MAX)));
        let mut w = ReplayWindow::default();
        assert!(!w.check(COUNTER_LIMIT));
        w.update(u64::MAX);
        assert!(w.check(0), "an out-of-range update changes nothing");
    }

    #[test]
    fn counter_exhaustion_is_refused() {
        let s = Sealer::new(KeyId(3), Some(&KEY));
        s.set_next_counter(COUNTER_LIMIT - 1);
        let mut buf = vec![0u8; 64];
        assert!(s.seal(Kind::Data, &mut buf, 10).is_ok());
        assert_eq!(
            s.seal(Kind::Data, &mut buf, 10),
            Err(CryptoError::CounterExhausted(KeyId(3)))
        );
        assert_eq!(
            s.seal(Kind::Data, &mut buf, 10),
            Err(CryptoError::CounterExhausted(KeyId(3)))
        );
        assert_eq!(
            s.seal(Kind::Data, &mut buf[..20], 10),
            Err(CryptoError::BufferTooShort)
        );
    }
}
