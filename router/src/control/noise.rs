//! The Noise layer of the control connection (docs/protocol.md §2–§3).
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
//! Handshake frames are a 2-byte big-endian length followed by the bytes.
//! Verdicts are [`VerdictFrame`]s sealed with the transport keys (nonce 0 of
//! each direction), so they are sent only once the handshake has authenticated
//! both ends and a forged verdict fails to open. The one exception: a
//! responder that cannot authenticate the initiator (wrong password) says so
//! in a plaintext hint, which the dialler reports but never treats as final.
//! What each side decides (identity checks, the mesh's rules, whether to
//! believe a refusal) is `meshnet_mesh::admission`; this module moves bytes.

use std::time::Duration;

use meshnet_mesh::{Refusal, RefusalCode, Verdict, VerdictFrame};
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
    #[error(
        "wrong password: the peer's handshake does not authenticate under ours; set the same --password on both hosts"
    )]
    WrongPassword,
    #[error("handshake failed: {0}")]
    Crypto(snow::Error),
    #[error("bad handshake payload: {0}; upgrade meshnet so both hosts run the same version")]
    Hello(meshnet_mesh::DecodeError),
    #[error("bad verdict from peer: {0}")]
    Verdict(String),
    #[error("peer refused us before authenticating (unverified, will retry): {}; {}", .0.detail, .0.code.advice())]
    Unauthenticated(Refusal),
    #[error("refused by peer {peer}: {}; {}", .refusal.detail, .refusal.code.advice())]
    RefusedByPeer {
        peer: meshnet_mesh::PeerName,
        refusal: Refusal,
    },
    #[error("{0}")]
    RefusedByUs(Refusal),
}

impl HandshakeError {
    /// Whether one end refused the other (as opposed to a network failure):
    /// an operator must act on these, so they are logged as warnings.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            HandshakeError::Io(_) | HandshakeError::Timeout(_) | HandshakeError::Crypto(_)
        )
    }

    /// The refusal a responder sends for a failure before its verdict: unauthenticated
    /// (a hint) for a wrong password, sealed otherwise.
    fn refusal(&self) -> Refusal {
        let code = match self {
            HandshakeError::WrongPassword => RefusalCode::WrongPassword,
            HandshakeError::Hello(meshnet_mesh::DecodeError::UnknownVersion { .. }) => {
                RefusalCode::ProtocolMismatch
            }
            _ => RefusalCode::BadHello,
        };
        Refusal::new(code, self.to_string())
    }
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

/// The remote's Hello and the static key it proved it holds.
fn remote_identity(
    hs: &HandshakeState,
    payload: &[u8],
) -> Result<(meshnet_mesh::Hello, meshnet_mesh::PublicKey), HandshakeError> {
    let hello = meshnet_mesh::Hello::decode(payload).map_err(HandshakeError::Hello)?;
    let key = hs
        .get_remote_static()
        .and_then(meshnet_mesh::PublicKey::from_slice)
        .ok_or_else(|| HandshakeError::Verdict("peer sent no 32-byte static key".into()))?;
    Ok((hello, key))
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

/// A finished Noise handshake whose verdicts are still to be exchanged.
pub struct Authenticated {
    pub transport: StatelessTransportState,
    pub remote_hello: meshnet_mesh::Hello,
    pub remote_key: meshnet_mesh::PublicKey,
}

impl std::fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticated")
            .field("remote_hello", &self.remote_hello)
            .field("remote_key", &self.remote_key)
            .finish_non_exhaustive()
    }
}

impl Authenticated {
    /// Sends our verdict, sealed.
    pub async fn send_verdict<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        verdict: &Verdict,
    ) -> Result<(), HandshakeError> {
        let mut buf = vec![0u8; MAX_NOISE_MSG];
        let n = self
            .transport
            .write_message(VERDICT_NONCE, &verdict.encode(), &mut buf)
            .map_err(crypto)?;
        write_frame(w, &VerdictFrame::sealed(&buf[..n])).await?;
        Ok(())
    }

    /// Reads the peer's verdict. A refusal is returned as `Ok(Verdict::Refused)` when it
    /// was sealed (authenticated), as [`HandshakeError::Unauthenticated`] when it was not.
    pub async fn read_verdict<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
    ) -> Result<Verdict, HandshakeError> {
        let frame = read_frame(r).await?;
        match VerdictFrame::decode(&frame).map_err(|e| HandshakeError::Verdict(e.to_string()))? {
            VerdictFrame::Hint(Verdict::Refused(refusal)) => {
                Err(HandshakeError::Unauthenticated(refusal))
            }
            VerdictFrame::Hint(Verdict::Accepted) => Err(HandshakeError::Verdict(
                "an unauthenticated acceptance".into(),
            )),
            VerdictFrame::Sealed(ct) => {
                let mut plain = vec![0u8; ct.len()];
                let n = self
                    .transport
                    .read_message(VERDICT_NONCE, ct, &mut plain)
                    .map_err(|_| {
                        HandshakeError::Verdict("a verdict that does not open (forged?)".into())
                    })?;
                Verdict::decode(&plain[..n]).map_err(|e| HandshakeError::Verdict(e.to_string()))
            }
        }
    }
}

/// Runs the initiator side (after the header and password flag) up to the
/// responder's verdict, which is returned for the mesh to judge.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    private_key: &[u8],
    psk: Option<&Psk>,
    hello: &meshnet_mesh::Hello,
) -> Result<(Authenticated, Verdict), HandshakeError> {
    let mut hs = handshake_state(private_key, psk, true)?;
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let mut payload = vec![0u8; MAX_NOISE_MSG];

    let n = hs.write_message(&[], &mut buf).map_err(crypto)?;
    write_frame(s, &buf[..n]).await?;

    let msg2 = read_frame(s).await?;
    let n = hs.read_message(&msg2, &mut payload).map_err(crypto)?;
    let (remote_hello, remote_key) = remote_identity(&hs, &payload[..n])?;

    let n = hs
        .write_message(&hello.encode(), &mut buf)
        .map_err(crypto)?;
    write_frame(s, &buf[..n]).await?;

    let auth = Authenticated {
        transport: hs.into_stateless_transport_mode().map_err(crypto)?,
        remote_hello,
        remote_key,
    };
    let verdict = auth.read_verdict(s).await?;
    Ok((auth, verdict))
}

/// Runs the responder side up to its verdict (the router asks the mesh
/// first). A failure to authenticate the initiator is answered with a hint;
/// an undecodable Hello with a sealed refusal.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    private_key: &[u8],
    psk: Option<&Psk>,
    hello: &meshnet_mesh::Hello,
) -> Result<Authenticated, HandshakeError> {
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
            let err = if psk.is_some() {
                HandshakeError::WrongPassword
            } else {
                crypto(e)
            };
            // Tell the initiator why; we cannot seal it, so it is only a hint.
            let hint = VerdictFrame::hint(&Verdict::Refused(err.refusal()));
            let _ = write_frame(s, &hint).await;
            return Err(err);
        }
    };
    let remote = remote_identity(&hs, &payload[..n]);
    let transport = hs.into_stateless_transport_mode().map_err(crypto)?;
    match remote {
        Ok((remote_hello, remote_key)) => Ok(Authenticated {
            transport,
            remote_hello,
            remote_key,
        }),
        Err(err) => {
            let refusal = err.refusal();
            let mut ct = vec![0u8; MAX_NOISE_MSG];
            let verdict = Verdict::Refused(refusal).encode();
            if let Ok(n) = transport.write_message(VERDICT_NONCE, &verdict, &mut ct) {
                let _ = write_frame(s, &VerdictFrame::sealed(&ct[..n])).await;
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshnet_mesh::{AuthorizedKeys, Hello, PeerName, PeerUid, PublicKey, ShortId};

    struct Side {
        key: snow::Keypair,
        hello: Hello,
        psk: Option<Psk>,
        /// `--authorized-keys` of this side.
        authorized: Option<AuthorizedKeys>,
        /// The key this side's mesh knows the other's name under.
        knows: Option<PublicKey>,
    }

    fn side(nick: &str, derived: bool) -> Side {
        let key = builder(None).generate_keypair().unwrap();
        let name = if derived {
            PublicKey::from_slice(&key.public).unwrap().derived_name()
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
            trusted: false,
        };
        Side {
            key,
            hello,
            psk: None,
            authorized: None,
            knows: None,
        }
    }

    impl Side {
        fn public(&self) -> PublicKey {
            PublicKey::from_slice(&self.key.public).unwrap()
        }

        /// What this side's mesh says about the other (the identity checks only).
        fn judge(&self, auth: &Authenticated) -> Verdict {
            match meshnet_mesh::check_identity(
                &auth.remote_hello,
                &auth.remote_key,
                self.knows,
                self.authorized.as_ref(),
            ) {
                Ok(()) => Verdict::Accepted,
                Err(e) => Verdict::Refused(e.refusal()),
            }
        }
    }

    /// Runs both ends over an in-memory pipe, each judging the other as the
    /// router does; returns what each end ends up with.
    async fn handshake(
        i: &Side,
        r: &Side,
    ) -> (
        Result<Authenticated, HandshakeError>,
        Result<Authenticated, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let init = async {
            exchange_password_flag(&mut a, i.psk.is_some()).await?;
            let (auth, theirs) = initiate(&mut a, &i.key.private, i.psk.as_ref(), &i.hello).await?;
            let ours = i.judge(&auth);
            let peer = auth.remote_hello.name;
            match (ours, theirs) {
                (Verdict::Refused(r), _) => {
                    auth.send_verdict(&mut a, &Verdict::Refused(r.clone()))
                        .await?;
                    Err(HandshakeError::RefusedByUs(r))
                }
                (Verdict::Accepted, Verdict::Refused(refusal)) => {
                    Err(HandshakeError::RefusedByPeer { peer, refusal })
                }
                (Verdict::Accepted, Verdict::Accepted) => {
                    auth.send_verdict(&mut a, &Verdict::Accepted).await?;
                    Ok(auth)
                }
            }
        };
        let resp = async {
            exchange_password_flag(&mut b, r.psk.is_some()).await?;
            let auth = respond(&mut b, &r.key.private, r.psk.as_ref(), &r.hello).await?;
            let peer = auth.remote_hello.name;
            match r.judge(&auth) {
                Verdict::Refused(r) => {
                    auth.send_verdict(&mut b, &Verdict::Refused(r.clone()))
                        .await?;
                    Err(HandshakeError::RefusedByUs(r))
                }
                Verdict::Accepted => {
                    auth.send_verdict(&mut b, &Verdict::Accepted).await?;
                    match auth.read_verdict(&mut b).await? {
                        Verdict::Accepted => Ok(auth),
                        Verdict::Refused(refusal) => {
                            Err(HandshakeError::RefusedByPeer { peer, refusal })
                        }
                    }
                }
            }
        };
        tokio::join!(init, resp)
    }

    fn code(e: &HandshakeError) -> Option<RefusalCode> {
        match e {
            HandshakeError::RefusedByUs(r)
            | HandshakeError::RefusedByPeer { refusal: r, .. }
            | HandshakeError::Unauthenticated(r) => Some(r.code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn same_password_establishes_and_exchanges_hellos() {
        let (mut i, mut r) = (side("h1", true), side("h2", true));
        i.psk = Some(Psk::derive("secret"));
        r.psk = i.psk.clone();
        let (ei, er) = handshake(&i, &r).await;
        let (ei, er) = (ei.unwrap(), er.unwrap());
        assert_eq!(ei.remote_hello, r.hello);
        assert_eq!(er.remote_hello, i.hello);
        assert_eq!(ei.remote_key, r.public());
        assert_eq!(er.remote_key, i.public());
        // The transports interoperate after the verdict nonce.
        let mut ct = vec![0u8; 64];
        let n = ei.transport.write_message(1, b"ping", &mut ct).unwrap();
        let mut pt = vec![0u8; 64];
        let m = er.transport.read_message(1, &ct[..n], &mut pt).unwrap();
        assert_eq!(&pt[..m], b"ping");
    }

    #[tokio::test]
    async fn no_password_on_either_side_also_works() {
        let (i, r) = (side("h1", true), side("h2", true));
        let (ei, er) = handshake(&i, &r).await;
        assert!(ei.is_ok() && er.is_ok());
    }

    #[tokio::test]
    async fn wrong_password_gives_a_distinct_reason_on_both_sides() {
        let (mut i, mut r) = (side("h1", true), side("h2", true));
        i.psk = Some(Psk::derive("wrong"));
        r.psk = Some(Psk::derive("secret"));
        let (ei, er) = handshake(&i, &r).await;
        let (ei, er) = (ei.unwrap_err(), er.unwrap_err());
        assert!(
            matches!(er, HandshakeError::WrongPassword),
            "responder: {er}"
        );
        // The dialler only gets an unauthenticated hint: reported, never final.
        assert_eq!(
            code(&ei),
            Some(RefusalCode::WrongPassword),
            "initiator: {ei}"
        );
        assert!(matches!(ei, HandshakeError::Unauthenticated(_)));
        let (ei, er) = (ei.to_string(), er.to_string());
        assert!(
            er.contains("wrong password") && er.contains("--password"),
            "{er}"
        );
        assert!(
            ei.contains("unverified") && ei.contains("--password"),
            "{ei}"
        );
        assert!(!ei.contains('\n') && !er.contains('\n'));
    }

    #[tokio::test]
    async fn password_on_one_side_only_is_named_as_such() {
        let (mut i, r) = (side("h1", true), side("h2", true));
        i.psk = Some(Psk::derive("secret"));
        let (ei, er) = handshake(&i, &r).await;
        assert!(matches!(ei, Err(HandshakeError::PeerHasNoPassword)));
        assert!(matches!(er, Err(HandshakeError::PeerRequiresPassword)));
    }

    #[tokio::test]
    async fn a_peer_lying_about_its_derived_name_is_refused_on_both_ends() {
        let (mut i, r) = (side("h1", true), side("h2", true));
        i.hello.name = "02:00:00:00:00:01".parse().unwrap();
        let (ei, er) = handshake(&i, &r).await;
        let (ei, er) = (ei.unwrap_err(), er.unwrap_err());
        assert_eq!(code(&er), Some(RefusalCode::NameNotDerived));
        assert!(matches!(ei, HandshakeError::RefusedByPeer { .. }), "{ei}");
        assert_eq!(code(&ei), Some(RefusalCode::NameNotDerived));
        assert!(er.to_string().contains("lies about its identity"), "{er}");
    }

    #[tokio::test]
    async fn an_explicit_name_is_not_checked_against_the_key() {
        let (i, r) = (side("h1", false), side("h2", true));
        let (ei, er) = handshake(&i, &r).await;
        assert!(ei.is_ok() && er.is_ok());
    }

    #[tokio::test]
    async fn an_unlisted_key_is_refused_with_the_reason_on_both_ends() {
        let (i, mut r) = (side("h1", true), side("h2", true));
        r.authorized = Some(AuthorizedKeys::parse(&r.public().authorized_line("me")).unwrap());
        let (ei, er) = handshake(&i, &r).await;
        let (ei, er) = (ei.unwrap_err(), er.unwrap_err());
        assert_eq!(code(&er), Some(RefusalCode::UnknownKey));
        assert_eq!(code(&ei), Some(RefusalCode::UnknownKey));
        assert!(ei.to_string().contains("--authorized-keys"), "{ei}");
        assert!(ei.to_string().contains("meshnet reload"), "{ei}");
        // Listed, it joins.
        let line = i.public().authorized_line("h1");
        r.authorized = Some(AuthorizedKeys::parse(&line).unwrap());
        let (ei, er) = handshake(&i, &r).await;
        assert!(ei.is_ok() && er.is_ok());
    }

    #[tokio::test]
    async fn a_name_known_under_another_key_is_refused_on_both_ends() {
        // The dialler claims a name the responder's mesh knows under another key.
        let (i, mut r) = (side("h1", false), side("h2", true));
        r.knows = Some(PublicKey([9; 32]));
        let (ei, er) = handshake(&i, &r).await;
        let (ei, er) = (ei.unwrap_err(), er.unwrap_err());
        assert_eq!(code(&er), Some(RefusalCode::NameKeyMismatch));
        assert_eq!(code(&ei), Some(RefusalCode::NameKeyMismatch));
        assert!(er.to_string().contains("meshnet rmpeer"), "{er}");
        assert!(ei.to_string().contains("meshnet rmpeer"), "{ei}");
        // And the other way round: the responder is the one with a stolen name.
        let (mut i, r) = (side("h1", true), side("h2", false));
        i.knows = Some(PublicKey([9; 32]));
        let (ei, er) = handshake(&i, &r).await;
        assert_eq!(code(&ei.unwrap_err()), Some(RefusalCode::NameKeyMismatch));
        assert_eq!(code(&er.unwrap_err()), Some(RefusalCode::NameKeyMismatch));
    }

    /// An impostor that answers the dialler without completing the Noise
    /// handshake can only send hints or frames that do not open.
    #[tokio::test]
    async fn a_forged_verdict_cannot_pass_for_an_authenticated_refusal() {
        let i = side("h1", true);
        let r = side("h2", true);
        for forged in [
            VerdictFrame::sealed(&[0u8; 40]),
            VerdictFrame::hint(&Verdict::Refused(Refusal::new(
                RefusalCode::NameCollision,
                "go away forever",
            ))),
            VerdictFrame::hint(&Verdict::Accepted),
        ] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let init = initiate(&mut a, &i.key.private, None, &i.hello);
            let impostor = async {
                let mut hs = handshake_state(&r.key.private, None, false).unwrap();
                let mut buf = vec![0u8; MAX_NOISE_MSG];
                let msg1 = read_frame(&mut b).await.unwrap();
                hs.read_message(&msg1, &mut buf).unwrap();
                let n = hs.write_message(&r.hello.encode(), &mut buf).unwrap();
                write_frame(&mut b, &buf[..n]).await.unwrap();
                let _msg3 = read_frame(&mut b).await.unwrap();
                write_frame(&mut b, &forged).await.unwrap();
            };
            let (ei, ()) = tokio::join!(init, impostor);
            let e = ei.unwrap_err();
            assert!(
                matches!(
                    e,
                    HandshakeError::Verdict(_) | HandshakeError::Unauthenticated(_)
                ),
                "{e}"
            );
        }
    }

    /// A dialler whose Hello is in a format this build does not speak is
    /// refused as a protocol mismatch, sealed, so both ends name the cause.
    #[tokio::test]
    async fn a_newer_hello_format_is_a_protocol_mismatch_on_both_ends() {
        let (i, r) = (side("h1", true), side("h2", true));
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let dialler = async {
            let mut hs = handshake_state(&i.key.private, None, true).unwrap();
            let mut buf = vec![0u8; MAX_NOISE_MSG];
            let n = hs.write_message(&[], &mut buf).unwrap();
            write_frame(&mut a, &buf[..n]).await.unwrap();
            let msg2 = read_frame(&mut a).await.unwrap();
            let mut payload = vec![0u8; MAX_NOISE_MSG];
            hs.read_message(&msg2, &mut payload).unwrap();
            let mut newer = i.hello.encode();
            newer[0] = meshnet_mesh::wire::HELLO_FORMAT + 1;
            let n = hs.write_message(&newer, &mut buf).unwrap();
            write_frame(&mut a, &buf[..n]).await.unwrap();
            let auth = Authenticated {
                transport: hs.into_stateless_transport_mode().unwrap(),
                remote_hello: r.hello.clone(),
                remote_key: r.public(),
            };
            auth.read_verdict(&mut a).await
        };
        let responder = respond(&mut b, &r.key.private, None, &r.hello);
        let (theirs, ours) = tokio::join!(dialler, responder);
        let ours = ours.unwrap_err();
        assert_eq!(ours.refusal().code, RefusalCode::ProtocolMismatch);
        assert!(ours.to_string().contains("upgrade meshnet"), "{ours}");
        match theirs.unwrap() {
            Verdict::Refused(r) => {
                assert_eq!(r.code, RefusalCode::ProtocolMismatch);
                assert!(r.code.is_permanent());
                assert!(r.code.advice().contains("upgrade meshnet"));
            }
            Verdict::Accepted => panic!("a hello in an unknown format was accepted"),
        }
    }

    #[test]
    fn psk_derivation_is_deterministic_and_password_dependent() {
        assert_eq!(Psk::derive("a").0, Psk::derive("a").0);
        assert_ne!(Psk::derive("a").0, Psk::derive("b").0);
        assert_eq!(format!("{:?}", Psk::derive("a")), "Psk(<redacted>)");
    }
}
