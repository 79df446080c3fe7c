//! The Noise layer of the control connection (docs/protocol.md §2–§3).
//!
//! After weave's 7-byte header each side sends one *password flag* byte
//! (0 = no password, 1 = password), so a mismatch is reported plainly instead
//! of as a decryption failure. Then an XX handshake, with a PSK derived from
//! the password when there is one:
//!
//! ```text
//! -> e
//! <- e, ee, s, es        + responder Hello
//! -> s, se (psk)         + initiator Hello
//! <- verdict             (plaintext: accepted, or refused with a reason)
//! ```
//!
//! Handshake frames are a 2-byte big-endian length followed by the bytes.
//! The verdict frame lets the responder tell the initiator *why* it refused
//! (wrong password, name collision, ...), so both ends log the same cause.
//! It is unauthenticated and only informative: an attacker who forges
//! "accepted" gains nothing, because every later frame must decrypt.

use std::time::Duration;

use snow::params::NoiseParams;
use snow::{Builder, HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Noise pattern with a password.
pub const PATTERN_PSK: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Noise pattern without a password.
pub const PATTERN_PLAIN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Bound into every handshake so a transcript cannot be replayed against
/// another protocol.
pub const PROLOGUE: &[u8] = b"meshnet/3";
/// Largest Noise message (the Noise spec's limit).
pub const MAX_NOISE_MSG: usize = 65535;
/// How long the whole handshake may take (weave allows 10 s for the header).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Verdict frame tags.
const VERDICT_ACCEPTED: u8 = 0;
const VERDICT_REFUSED: u8 = 1;

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

/// Why a handshake failed. Displayed to the user as is.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Header(#[from] meshnet_mesh::HeaderError),
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
    #[error("handshake failed: wrong password? ({0}); use the same --password on both hosts")]
    Crypto(snow::Error),
    #[error("bad handshake payload: {0}")]
    Hello(String),
    #[error(
        "peer claims name {claimed} but its key derives {derived}: refusing a peer that lies about its identity"
    )]
    NameMismatch { claimed: String, derived: String },
    #[error("refused by peer: {0}")]
    Refused(String),
    #[error("handshake frame of {0} bytes is too large")]
    Oversized(usize),
}

/// Builds a snow builder for our pattern. `psk` selects XXpsk3.
pub fn builder(psk: Option<&Psk>) -> Builder<'_> {
    let pattern = if psk.is_some() {
        PATTERN_PSK
    } else {
        PATTERN_PLAIN
    };
    // The pattern strings are constants that snow knows; parsing cannot fail.
    let params: NoiseParams = pattern
        .parse()
        .unwrap_or_else(|_| unreachable!("constant Noise pattern {pattern} parses"));
    Builder::new(params)
}

/// Computes the X25519 public key for a private key with snow's resolver.
pub fn public_from_private(private: &[u8]) -> Result<Vec<u8>, String> {
    use snow::resolvers::CryptoResolver;
    let mut dh = snow::resolvers::DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .ok_or_else(|| "no X25519 implementation".to_string())?;
    dh.set(private);
    Ok(dh.pubkey().to_vec())
}

/// What a finished handshake yields.
pub struct Established {
    pub transport: StatelessTransportState,
    pub remote_hello: meshnet_mesh::Hello,
    pub remote_static: Vec<u8>,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("remote_hello", &self.remote_hello)
            .finish_non_exhaustive()
    }
}

/// Writes one handshake frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(2 + bytes.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one handshake frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Exchanges the password flag byte.
pub async fn exchange_password_flag<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    have_password: bool,
) -> Result<(), HandshakeError> {
    s.write_all(&[u8::from(have_password)]).await?;
    s.flush().await?;
    let mut flag = [0u8; 1];
    s.read_exact(&mut flag).await?;
    match (have_password, flag[0]) {
        (true, 1) | (false, 0) => Ok(()),
        (true, 0) => Err(HandshakeError::PeerHasNoPassword),
        (false, 1) => Err(HandshakeError::PeerRequiresPassword),
        (_, other) => Err(HandshakeError::BadPasswordFlag(other)),
    }
}

fn crypto(e: snow::Error) -> HandshakeError {
    HandshakeError::Crypto(e)
}

fn decode_hello(
    hs: &HandshakeState,
    payload: &[u8],
) -> Result<(meshnet_mesh::Hello, Vec<u8>), HandshakeError> {
    let hello =
        meshnet_mesh::Hello::decode(payload).map_err(|e| HandshakeError::Hello(e.to_string()))?;
    let remote_static = hs
        .get_remote_static()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| HandshakeError::Hello("peer sent no static key".into()))?;
    if hello.name_derived {
        let derived = crate::identity::derive_name(&remote_static);
        if derived != hello.name {
            return Err(HandshakeError::NameMismatch {
                claimed: hello.name.to_string(),
                derived: derived.to_string(),
            });
        }
    }
    Ok((hello, remote_static))
}

/// A handshake state with our static key, the prologue and (with a
/// password) the PSK at position 3.
fn handshake_state(
    private_key: &[u8],
    psk: Option<&Psk>,
    initiator: bool,
) -> Result<HandshakeState, HandshakeError> {
    let mut b = builder(psk)
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

/// Runs the initiator side (after the header and password flag).
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    private_key: &[u8],
    psk: Option<&Psk>,
    hello: &meshnet_mesh::Hello,
) -> Result<Established, HandshakeError> {
    let mut hs = handshake_state(private_key, psk, true)?;
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let mut payload = vec![0u8; MAX_NOISE_MSG];

    let n = hs.write_message(&[], &mut buf).map_err(crypto)?;
    write_frame(s, &buf[..n]).await?;

    let msg2 = read_frame(s).await?;
    let n = hs.read_message(&msg2, &mut payload).map_err(crypto)?;
    let (remote_hello, remote_static) = decode_hello(&hs, &payload[..n])?;

    let n = hs
        .write_message(&hello.encode(), &mut buf)
        .map_err(crypto)?;
    write_frame(s, &buf[..n]).await?;

    let verdict = read_frame(s).await?;
    match verdict.split_first() {
        Some((&VERDICT_ACCEPTED, _)) => {}
        Some((&VERDICT_REFUSED, reason)) => {
            return Err(HandshakeError::Refused(
                String::from_utf8_lossy(reason).into_owned(),
            ));
        }
        _ => return Err(HandshakeError::Hello("bad verdict frame".into())),
    }
    Ok(Established {
        transport: hs.into_stateless_transport_mode().map_err(crypto)?,
        remote_hello,
        remote_static,
    })
}

/// A responder that has read the initiator's Hello and must now accept or
/// refuse it (the router asks the mesh first).
pub struct PendingResponder {
    hs: HandshakeState,
    pub remote_hello: meshnet_mesh::Hello,
    pub remote_static: Vec<u8>,
}

impl std::fmt::Debug for PendingResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingResponder")
            .field("remote_hello", &self.remote_hello)
            .finish_non_exhaustive()
    }
}

/// Runs the responder side up to the verdict.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    private_key: &[u8],
    psk: Option<&Psk>,
    hello: &meshnet_mesh::Hello,
) -> Result<PendingResponder, HandshakeError> {
    let mut hs = handshake_state(private_key, psk, false)?;
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let mut payload = vec![0u8; MAX_NOISE_MSG];

    let msg1 = read_frame(s).await?;
    hs.read_message(&msg1, &mut payload).map_err(crypto)?;

    let n = hs
        .write_message(&hello.encode(), &mut buf)
        .map_err(crypto)?;
    write_frame(s, &buf[..n]).await?;

    let msg3 = read_frame(s).await?;
    let n = match hs.read_message(&msg3, &mut payload) {
        Ok(n) => n,
        Err(e) => {
            let err = crypto(e);
            // Tell the initiator why; ignore a failure to do so.
            let _ = refuse(s, &err.to_string()).await;
            return Err(err);
        }
    };
    let (remote_hello, remote_static) = match decode_hello(&hs, &payload[..n]) {
        Ok(v) => v,
        Err(err) => {
            let _ = refuse(s, &err.to_string()).await;
            return Err(err);
        }
    };
    Ok(PendingResponder {
        hs,
        remote_hello,
        remote_static,
    })
}

impl PendingResponder {
    /// Accepts the connection.
    pub async fn accept<S: AsyncWrite + Unpin>(
        self,
        s: &mut S,
    ) -> Result<Established, HandshakeError> {
        write_frame(s, &[VERDICT_ACCEPTED]).await?;
        Ok(Established {
            transport: self.hs.into_stateless_transport_mode().map_err(crypto)?,
            remote_hello: self.remote_hello,
            remote_static: self.remote_static,
        })
    }
}

/// Sends a refusal verdict with a reason.
pub async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, reason: &str) -> std::io::Result<()> {
    let mut frame = vec![VERDICT_REFUSED];
    let reason = reason.as_bytes();
    frame.extend_from_slice(&reason[..reason.len().min(1000)]);
    write_frame(s, &frame).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshnet_mesh::{Hello, PeerName, PeerUid, ShortId};

    struct Side {
        key: snow::Keypair,
        hello: Hello,
    }

    fn side(nick: &str, derived: bool) -> Side {
        let key = builder(None).generate_keypair().unwrap();
        let name = if derived {
            crate::identity::derive_name(&key.public)
        } else {
            "8a:3e:3e:3e:3e:3e".parse::<PeerName>().unwrap()
        };
        let hello = Hello {
            name,
            name_derived: derived,
            nickname: nick.into(),
            uid: PeerUid(7),
            conn_half: 11,
            short_id: ShortId::from_low_bits(3),
            listen_port: 6783,
            overlays: vec![],
            trusted: false,
        };
        Side { key, hello }
    }

    /// Runs both ends of a handshake over an in-memory pipe; the responder
    /// accepts whatever it is offered.
    async fn handshake(
        i: &Side,
        i_psk: Option<&Psk>,
        r: &Side,
        r_psk: Option<&Psk>,
    ) -> (
        Result<Established, HandshakeError>,
        Result<Established, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let init = async {
            exchange_password_flag(&mut a, i_psk.is_some()).await?;
            initiate(&mut a, &i.key.private, i_psk, &i.hello).await
        };
        let resp = async {
            exchange_password_flag(&mut b, r_psk.is_some()).await?;
            let pending = respond(&mut b, &r.key.private, r_psk, &r.hello).await?;
            pending.accept(&mut b).await
        };
        tokio::join!(init, resp)
    }

    #[tokio::test]
    async fn same_password_establishes_and_exchanges_hellos() {
        let (i, r) = (side("h1", true), side("h2", true));
        let psk = Psk::derive("secret");
        let (ei, er) = handshake(&i, Some(&psk), &r, Some(&psk)).await;
        let (ei, er) = (ei.unwrap(), er.unwrap());
        assert_eq!(ei.remote_hello, r.hello);
        assert_eq!(er.remote_hello, i.hello);
        assert_eq!(ei.remote_static, r.key.public);
        // The transports interoperate.
        let mut ct = vec![0u8; 64];
        let n = ei.transport.write_message(0, b"ping", &mut ct).unwrap();
        let mut pt = vec![0u8; 64];
        let m = er.transport.read_message(0, &ct[..n], &mut pt).unwrap();
        assert_eq!(&pt[..m], b"ping");
    }

    #[tokio::test]
    async fn no_password_on_either_side_also_works() {
        let (i, r) = (side("h1", true), side("h2", true));
        let (ei, er) = handshake(&i, None, &r, None).await;
        assert!(ei.is_ok() && er.is_ok());
    }

    #[tokio::test]
    async fn wrong_password_is_refused_with_a_clear_error_on_both_sides() {
        let (i, r) = (side("h1", true), side("h2", true));
        let (good, bad) = (Psk::derive("secret"), Psk::derive("wrong"));
        let (ei, er) = handshake(&i, Some(&bad), &r, Some(&good)).await;
        let (ei, er) = (ei.unwrap_err().to_string(), er.unwrap_err().to_string());
        assert!(er.contains("wrong password"), "responder: {er}");
        assert!(
            ei.contains("refused by peer") && ei.contains("wrong password"),
            "initiator: {ei}"
        );
    }

    #[tokio::test]
    async fn password_on_one_side_only_is_named_as_such() {
        let (i, r) = (side("h1", true), side("h2", true));
        let psk = Psk::derive("secret");
        let (ei, er) = handshake(&i, Some(&psk), &r, None).await;
        assert!(matches!(ei, Err(HandshakeError::PeerHasNoPassword)));
        assert!(matches!(er, Err(HandshakeError::PeerRequiresPassword)));
    }

    #[tokio::test]
    async fn a_peer_lying_about_its_derived_name_is_refused() {
        let (mut i, r) = (side("h1", true), side("h2", true));
        i.hello.name = "02:00:00:00:00:01".parse().unwrap();
        let (_, er) = handshake(&i, None, &r, None).await;
        let er = er.unwrap_err().to_string();
        assert!(er.contains("lies about its identity"), "{er}");
    }

    #[tokio::test]
    async fn an_explicit_name_is_not_checked_against_the_key() {
        let (i, r) = (side("h1", false), side("h2", true));
        let (ei, er) = handshake(&i, None, &r, None).await;
        assert!(ei.is_ok() && er.is_ok());
    }

    #[test]
    fn psk_derivation_is_deterministic_and_password_dependent() {
        assert_eq!(Psk::derive("a").0, Psk::derive("a").0);
        assert_ne!(Psk::derive("a").0, Psk::derive("b").0);
        assert_eq!(format!("{:?}", Psk::derive("a")), "Psk(<redacted>)");
    }
}
