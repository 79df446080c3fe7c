//! The control connection's handshake and encrypted transport, sans-IO (docs/protocol.md §2–§4).
//!
//! After weave's 7-byte header each side sends one *password flag* byte
//! (0 = no password, 1 = password), so a mismatch is reported plainly instead
//! of as a decryption failure. Then an XX handshake, with a PSK derived from
//! the password when there is one, and one verdict each way:
//!
//! ```text
//! -> e
//! <- e, ee, s, es        + responder Hello
//! -> s, se (psk)         + initiator Hello
//! <- verdict             (sealed: accepted, or refused with a typed reason)
//! -> verdict             (sealed; only after the responder accepted)
//! ```
//!
//! Handshake frames use the stream framing of [`crate::wire::frame`]. Verdicts are
//! [`VerdictFrame`](crate::VerdictFrame)s sealed with the transport keys (nonce 0 of each
//! direction), so they are sent only once the handshake has authenticated both ends and a
//! forged verdict fails to open. The one exception: a responder that cannot authenticate the
//! initiator (wrong password) says so in a plaintext hint, which the dialler reports but never
//! treats as final.
//!
//! Layout:
//! - [`machine`]: the [`Handshake`] state machine (bytes in, bytes out, `now` as a parameter;
//!   its doc states the call protocol).
//! - [`transport`]: the [`Sealer`]/[`Opener`] of the established connection.
//! - this file: constants, the password-derived [`Psk`], [`HandshakeError`] and the Noise
//!   builder with a seeded RNG, so a seed and an input script give the same bytes.

pub mod machine;
#[cfg(test)]
mod tests;
pub mod transport;

pub use machine::{Decision, Handshake, HandshakeConfig, HandshakeEvent, MAX_HANDSHAKE_INPUT};
pub use transport::{Opener, Sealer, Session, TransportError};

use std::time::Duration;

use rand::{Rng, SeedableRng};
use snow::params::NoiseParams;
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver, FallbackResolver};
use snow::{Builder, HandshakeState};

use crate::{DecodeError, HeaderError, PeerName, Refusal, RefusalCode};

/// Noise pattern with a password.
pub const PATTERN_PSK: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Noise pattern without a password.
pub const PATTERN_PLAIN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Bound into every handshake so a transcript cannot be replayed against
/// another protocol.
pub const PROLOGUE: &[u8] = b"meshnet/3";
/// Largest Noise message (the Noise spec's limit).
pub const MAX_NOISE_MSG: usize = crate::wire::frame::MAX_FRAME_LEN;
/// How long the whole handshake may take (weave allows 10 s for the header).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The transport nonce of each direction that carries its verdict; messages start after it.
pub const VERDICT_NONCE: u64 = 0;

/// PBKDF2 iterations for the password → PSK derivation. Slow on purpose:
/// guessing a password offline from a captured handshake costs this much
/// per guess; a router pays it once at start.
const PBKDF2_ITERATIONS: u32 = 200_000;
const PSK_SALT: &[u8] = b"meshnet psk v3";

/// A 32-byte pre-shared key derived from the mesh password.
#[derive(Clone)]
pub struct Psk([u8; 32]);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

impl Psk {
    /// Derives the PSK from a password (PBKDF2-HMAC-SHA256).
    pub fn derive(password: &str) -> Psk {
        let mut out = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(PBKDF2_ITERATIONS).unwrap_or(std::num::NonZeroU32::MIN),
            PSK_SALT,
            password.as_bytes(),
            &mut out,
        );
        Psk(out)
    }
}

/// Why a handshake failed. Displayed to the user as is (one line).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Header(#[from] HeaderError),
    #[error(
        "password specified here, but the peer has none: set the same --password on both hosts"
    )]
    PeerHasNoPassword,
    #[error(
        "no password specified here, but the peer requires one: set the same --password on both hosts"
    )]
    PeerRequiresPassword,
    #[error("bad password flag {0} from peer")]
    BadPasswordFlag(u8),
    #[error(
        "wrong password: the peer's handshake does not authenticate under ours; set the same --password on both hosts"
    )]
    WrongPassword,
    #[error("handshake failed: {0}")]
    Crypto(snow::Error),
    #[error("bad handshake payload: {0}; upgrade meshnet so both hosts run the same version")]
    Hello(DecodeError),
    #[error("bad verdict from peer: {0}")]
    Verdict(String),
    #[error(
        "peer sent {0} bytes during the handshake without waiting for an answer; it does not speak this protocol"
    )]
    TooMuchInput(usize),
    #[error("peer refused us before authenticating (unverified, will retry): {}; {}", .0.detail, .0.code.advice())]
    Unauthenticated(Refusal),
    #[error("refused by peer {peer}: {}; {}", .refusal.detail, .refusal.code.advice())]
    RefusedByPeer { peer: PeerName, refusal: Refusal },
    #[error("{0}")]
    RefusedByUs(Refusal),
}

impl HandshakeError {
    /// Whether one end refused the other (as opposed to a network failure):
    /// an operator must act on these, so they are logged as warnings.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, HandshakeError::Timeout(_) | HandshakeError::Crypto(_))
    }

    /// The refusal a responder sends for a failure before its verdict: unauthenticated
    /// (a hint) for a wrong password, sealed otherwise.
    pub fn refusal(&self) -> Refusal {
        let code = match self {
            HandshakeError::WrongPassword => RefusalCode::WrongPassword,
            HandshakeError::Hello(DecodeError::UnknownVersion { .. }) => {
                RefusalCode::ProtocolMismatch
            }
            _ => RefusalCode::BadHello,
        };
        Refusal::new(code, self.to_string())
    }
}

/// Hands snow a CSPRNG seeded by the caller instead of the operating system's, so the
/// handshake never reads OS randomness itself (the router draws the seed).
struct SeededRng(rand::rngs::StdRng);

impl snow::types::Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

struct SeededResolver([u8; 32]);

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(SeededRng(rand::rngs::StdRng::from_seed(self.0))))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        None
    }
    fn resolve_cipher(
        &self,
        _: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        None
    }
}

/// The primitives snow would pick itself (ring where it has them).
fn primitives() -> BoxedCryptoResolver {
    Box::new(FallbackResolver::new(
        Box::new(snow::resolvers::RingResolver),
        Box::new(DefaultResolver),
    ))
}

/// A snow builder for our pattern (`psk` selects XXpsk3) whose randomness comes from `seed`.
pub fn builder(psk: Option<&Psk>, seed: [u8; 32]) -> Builder<'_> {
    let pattern = if psk.is_some() {
        PATTERN_PSK
    } else {
        PATTERN_PLAIN
    };
    // The pattern strings are constants that snow knows; parsing cannot fail.
    let params: NoiseParams = pattern
        .parse()
        .unwrap_or_else(|_| unreachable!("constant Noise pattern {pattern} parses"));
    let resolver = FallbackResolver::new(Box::new(SeededResolver(seed)), primitives());
    Builder::with_resolver(params, Box::new(resolver))
}

/// A new static key pair (private, public) drawn from `seed`.
pub fn generate_keypair(seed: [u8; 32]) -> Result<(Vec<u8>, crate::PublicKey), String> {
    let keypair = builder(None, seed)
        .generate_keypair()
        .map_err(|e| format!("cannot generate a key pair: {e}"))?;
    let public = crate::PublicKey::from_slice(&keypair.public)
        .ok_or_else(|| "generated public key is not 32 bytes".to_string())?;
    Ok((keypair.private, public))
}

/// Computes the X25519 public key for a private key.
pub fn public_from_private(private: &[u8]) -> Result<crate::PublicKey, String> {
    if private.len() != crate::keys::KEY_LEN {
        return Err(format!(
            "private key must be {} bytes, found {}",
            crate::keys::KEY_LEN,
            private.len()
        ));
    }
    let mut dh = primitives()
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .ok_or_else(|| "no X25519 implementation".to_string())?;
    dh.set(private);
    crate::PublicKey::from_slice(dh.pubkey()).ok_or_else(|| "public key is not 32 bytes".into())
}

/// A handshake state with our static key, the prologue and (with a
/// password) the PSK at position 3.
fn handshake_state(
    private_key: &[u8],
    psk: Option<&Psk>,
    initiator: bool,
    seed: [u8; 32],
) -> Result<HandshakeState, HandshakeError> {
    let crypto = HandshakeError::Crypto;
    let mut b = builder(psk, seed)
        .local_private_key(private_key)
        .map_err(crypto)?
        .prologue(PROLOGUE)
        .map_err(crypto)?;
    if let Some(psk) = psk {
        b = b.psk(3, &psk.0).map_err(crypto)?;
    }
    if initiator {
        b.build_initiator().map_err(crypto)
    } else {
        b.build_responder().map_err(crypto)
    }
}
