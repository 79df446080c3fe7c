//! Two [`Handshake`]s wired back to back in memory, each judging the other as the router
//! does, with the bytes delivered whole or one at a time.

use std::time::{Duration, Instant};

use super::*;
use crate::wire::frame::{FrameDecoder, encode_frame};
use crate::{
    AuthorizedKeys, HEADER_LEN, Header, Hello, PeerName, PeerUid, PublicKey, Refusal, RefusalCode,
    ShortId, Verdict, VerdictFrame,
};

struct Side {
    private: Vec<u8>,
    public: PublicKey,
    hello: Hello,
    psk: Option<Psk>,
    /// `--authorized-keys` of this side.
    authorized: Option<AuthorizedKeys>,
    /// The key this side's mesh knows the other's name under.
    knows: Option<PublicKey>,
    seed: [u8; 32],
}

fn side(nick: &str, derived: bool, seed: u8) -> Side {
    let (private, public) = generate_keypair([seed; 32]).unwrap();
    let name = if derived {
        public.derived_name()
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
        private,
        public,
        hello,
        psk: None,
        authorized: None,
        knows: None,
        seed: [seed.wrapping_add(100); 32],
    }
}

impl Side {
    fn start(&self, outbound: bool, now: Instant) -> Handshake {
        Handshake::new(
            HandshakeConfig {
                private_key: self.private.clone(),
                psk: self.psk.clone(),
                hello: self.hello.clone(),
                outbound,
                seed: self.seed,
            },
            now,
        )
    }

    /// What this side's router decides (the identity checks only, as the mesh does).
    fn decide(&self, hello: &Hello, key: &PublicKey, theirs: Option<&Verdict>) -> Decision {
        match crate::check_identity(hello, key, self.knows, self.authorized.as_ref()) {
            Err(e) => Decision::Refuse(e.refusal()),
            Ok(()) if matches!(theirs, Some(Verdict::Refused(_))) => Decision::PeerRefused,
            Ok(()) => Decision::Accept,
        }
    }
}

type Outcome = Result<(Box<Session>, Hello), HandshakeError>;

/// Where one end of a pumped handshake stands.
struct End<'a> {
    side: &'a Side,
    hs: Handshake,
    remote: Option<Hello>,
    outcome: Option<Outcome>,
}

impl End<'_> {
    /// Drains events, answering `Authenticated` at once.
    fn events(&mut self, now: Instant) {
        while let Some(ev) = self.hs.poll_event() {
            match ev {
                HandshakeEvent::Authenticated {
                    remote_hello,
                    remote_key,
                    remote_verdict,
                } => {
                    let d = self
                        .side
                        .decide(&remote_hello, &remote_key, remote_verdict.as_ref());
                    self.remote = Some(*remote_hello);
                    self.hs.handle_decision(d, now);
                }
                HandshakeEvent::Established(s) => {
                    let hello = self
                        .remote
                        .clone()
                        .expect("established before authenticated");
                    assert!(self.outcome.replace(Ok((s, hello))).is_none());
                }
                HandshakeEvent::Failed { error, .. } => {
                    assert!(self.outcome.replace(Err(error)).is_none());
                }
            }
        }
    }
}

/// Runs both ends until neither has anything to send; `piece` bytes per delivery.
/// Returns (initiator, responder) outcomes and the bytes each sent.
fn pump(i: &Side, r: &Side, piece: usize) -> (Outcome, Outcome, Vec<u8>, Vec<u8>) {
    let now = Instant::now();
    let mut a = End {
        side: i,
        hs: i.start(true, now),
        remote: None,
        outcome: None,
    };
    let mut b = End {
        side: r,
        hs: r.start(false, now),
        remote: None,
        outcome: None,
    };
    let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        a.events(now);
        b.events(now);
        let (ta, tb) = (a.hs.poll_transmit(), b.hs.poll_transmit());
        if ta.is_none() && tb.is_none() {
            break;
        }
        for bytes in ta.iter().flat_map(|t| t.chunks(piece)) {
            sent_a.extend_from_slice(bytes);
            b.hs.handle_input(bytes, now);
            b.events(now);
        }
        for bytes in tb.iter().flat_map(|t| t.chunks(piece)) {
            sent_b.extend_from_slice(bytes);
            a.hs.handle_input(bytes, now);
            a.events(now);
        }
    }
    let outcome = |e: End| e.outcome.expect("the handshake ended with an event");
    (outcome(a), outcome(b), sent_a, sent_b)
}

fn handshake(i: &Side, r: &Side) -> (Outcome, Outcome) {
    let (whole_i, whole_r, sa, sb) = pump(i, r, usize::MAX);
    // Byte by byte, the same bytes go out and the same outcome comes back.
    let (bytewise_i, bytewise_r, sa1, sb1) = pump(i, r, 1);
    assert_eq!((sa, sb), (sa1, sb1), "transcripts differ when split");
    assert_eq!(
        format!("{:?}", whole_i.as_ref().map(|x| &x.1)),
        format!("{:?}", bytewise_i.as_ref().map(|x| &x.1))
    );
    assert_eq!(
        format!("{:?}", whole_r.as_ref().map(|x| &x.1)),
        format!("{:?}", bytewise_r.as_ref().map(|x| &x.1))
    );
    (whole_i, whole_r)
}

fn code(e: &HandshakeError) -> Option<RefusalCode> {
    match e {
        HandshakeError::RefusedByUs(r)
        | HandshakeError::RefusedByPeer { refusal: r, .. }
        | HandshakeError::Unauthenticated(r) => Some(r.code),
        _ => None,
    }
}

#[test]
fn same_password_establishes_and_exchanges_hellos_and_messages() {
    let (mut i, mut r) = (side("h1", true, 1), side("h2", true, 2));
    i.psk = Some(Psk::derive("secret"));
    r.psk = i.psk.clone();
    let (ei, er) = handshake(&i, &r);
    let ((mut si, hi), (mut sr, hr)) = (ei.unwrap(), er.unwrap());
    assert_eq!(hi, r.hello);
    assert_eq!(hr, i.hello);
    // The transports interoperate after the verdict nonce, both ways.
    let mut wire = Vec::new();
    si.sealer.seal(b"ping", &mut wire).unwrap();
    sr.opener.handle_input(&wire);
    assert_eq!(sr.opener.poll_message(), Some(Ok(b"ping".to_vec())));
    assert_eq!(sr.opener.poll_message(), None);
    let mut wire = Vec::new();
    sr.sealer.seal(b"pong", &mut wire).unwrap();
    si.opener.handle_input(&wire);
    assert_eq!(si.opener.poll_message(), Some(Ok(b"pong".to_vec())));
}

#[test]
fn the_remote_key_is_the_one_the_peer_proved() {
    let (i, r) = (side("h1", true, 1), side("h2", true, 2));
    let now = Instant::now();
    let mut a = i.start(true, now);
    let mut b = r.start(false, now);
    let mut keys = Vec::new();
    for _ in 0..10 {
        if let Some(t) = a.poll_transmit() {
            b.handle_input(&t, now);
        }
        if let Some(t) = b.poll_transmit() {
            a.handle_input(&t, now);
        }
        for hs in [&mut a, &mut b] {
            if let Some(HandshakeEvent::Authenticated { remote_key, .. }) = hs.poll_event() {
                keys.push(remote_key);
                hs.handle_decision(Decision::Accept, now);
            }
        }
    }
    // The responder authenticates first (msg3), the initiator after the verdict.
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&i.public) && keys.contains(&r.public));
}

#[test]
fn no_password_on_either_side_also_works() {
    let (i, r) = (side("h1", true, 1), side("h2", true, 2));
    let (ei, er) = handshake(&i, &r);
    assert!(ei.is_ok() && er.is_ok());
}

#[test]
fn same_seeds_give_the_same_bytes_and_other_seeds_other_bytes() {
    let (i, r) = (side("h1", true, 1), side("h2", true, 2));
    let (_, _, a1, b1) = pump(&i, &r, usize::MAX);
    let (_, _, a2, b2) = pump(&i, &r, usize::MAX);
    assert_eq!((&a1, &b1), (&a2, &b2));
    let mut i2 = side("h1", true, 1);
    i2.seed = [77; 32];
    let (_, _, a3, _) = pump(&i2, &r, usize::MAX);
    assert_eq!(a1[..HEADER_LEN + 1], a3[..HEADER_LEN + 1]);
    assert_ne!(a1, a3, "the ephemeral key comes from the seed");
}

#[test]
fn wrong_password_gives_a_distinct_reason_on_both_sides() {
    let (mut i, mut r) = (side("h1", true, 1), side("h2", true, 2));
    i.psk = Some(Psk::derive("wrong"));
    r.psk = Some(Psk::derive("secret"));
    let (ei, er) = handshake(&i, &r);
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

#[test]
fn password_on_one_side_only_is_named_as_such() {
    let (mut i, r) = (side("h1", true, 1), side("h2", true, 2));
    i.psk = Some(Psk::derive("secret"));
    let (ei, er) = handshake(&i, &r);
    assert!(matches!(ei, Err(HandshakeError::PeerHasNoPassword)));
    assert!(matches!(er, Err(HandshakeError::PeerRequiresPassword)));
}

#[test]
fn a_password_flag_other_than_0_or_1_is_refused() {
    let r = side("h2", true, 2);
    let now = Instant::now();
    let mut b = r.start(false, now);
    b.handle_input(&Header::OURS.encode(), now);
    b.handle_input(&[2], now);
    assert!(matches!(
        b.poll_event(),
        Some(HandshakeEvent::Failed {
            error: HandshakeError::BadPasswordFlag(2),
            registered: false
        })
    ));
}

#[test]
fn a_weave_router_is_told_why_and_nothing_more_is_sent() {
    let r = side("h2", true, 2);
    let now = Instant::now();
    let mut b = r.start(false, now);
    assert_eq!(b.poll_transmit(), Some(Header::OURS.encode().to_vec()));
    b.handle_input(b"weave\x01\x02", now);
    match b.poll_event() {
        Some(HandshakeEvent::Failed { error, .. }) => {
            assert!(
                error.to_string().contains("run meshnet on every host"),
                "{error}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        b.poll_transmit(),
        None,
        "no password flag after a bad header"
    );
}

#[test]
fn a_peer_lying_about_its_derived_name_is_refused_on_both_ends() {
    let (mut i, r) = (side("h1", true, 1), side("h2", true, 2));
    i.hello.name = "02:00:00:00:00:01".parse().unwrap();
    let (ei, er) = handshake(&i, &r);
    let (ei, er) = (ei.unwrap_err(), er.unwrap_err());
    assert_eq!(code(&er), Some(RefusalCode::NameNotDerived));
    assert!(matches!(ei, HandshakeError::RefusedByPeer { .. }), "{ei}");
    assert_eq!(code(&ei), Some(RefusalCode::NameNotDerived));
    assert!(er.to_string().contains("lies about its identity"), "{er}");
}

#[test]
fn an_explicit_name_is_not_checked_against_the_key() {
    let (i, r) = (side("h1", false, 1), side("h2", true, 2));
    let (ei, er) = handshake(&i, &r);
    assert!(ei.is_ok() && er.is_ok());
}

#[test]
fn an_unlisted_key_is_refused_with_the_reason_on_both_ends() {
    let (i, mut r) = (side("h1", true, 1), side("h2", true, 2));
    r.authorized = Some(AuthorizedKeys::parse(&r.public.authorized_line("me")).unwrap());
    let (ei, er) = handshake(&i, &r);
    let (ei, er) = (ei.unwrap_err(), er.unwrap_err());
    assert_eq!(code(&er), Some(RefusalCode::UnknownKey));
    assert_eq!(code(&ei), Some(RefusalCode::UnknownKey));
    assert!(ei.to_string().contains("--authorized-keys"), "{ei}");
    assert!(ei.to_string().contains("meshnet reload"), "{ei}");
    // Listed, it joins.
    let line = i.public.authorized_line("h1");
    r.authorized = Some(AuthorizedKeys::parse(&line).unwrap());
    let (ei, er) = handshake(&i, &r);
    assert!(ei.is_ok() && er.is_ok());
}

#[test]
fn a_name_known_under_another_key_is_refused_on_both_ends() {
    // The dialler claims a name the responder's mesh knows under another key.
    let (i, mut r) = (side("h1", false, 1), side("h2", true, 2));
    r.knows = Some(PublicKey([9; 32]));
    let (ei, er) = handshake(&i, &r);
    let (ei, er) = (ei.unwrap_err(), er.unwrap_err());
    assert_eq!(code(&er), Some(RefusalCode::NameKeyMismatch));
    assert_eq!(code(&ei), Some(RefusalCode::NameKeyMismatch));
    assert!(er.to_string().contains("meshnet rmpeer"), "{er}");
    assert!(ei.to_string().contains("meshnet rmpeer"), "{ei}");
    // And the other way round: the responder is the one with a stolen name.
    let (mut i, r) = (side("h1", true, 1), side("h2", false, 2));
    i.knows = Some(PublicKey([9; 32]));
    let (ei, er) = handshake(&i, &r);
    assert_eq!(code(&ei.unwrap_err()), Some(RefusalCode::NameKeyMismatch));
    assert_eq!(code(&er.unwrap_err()), Some(RefusalCode::NameKeyMismatch));
}

/// The responder half of a Noise handshake done by hand, answering `hs`'s header, flag and
/// `-> e`; returns the snow state after `-> s, se` and the initiator's msg3 payload.
fn impostor_until_msg3(hs: &mut Handshake, r: &Side, now: Instant) -> snow::HandshakeState {
    let mut noise = super::handshake_state(&r.private, None, false, r.seed).unwrap();
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let mut frames = FrameDecoder::new();
    let mut input = Header::OURS.encode().to_vec();
    input.push(0);
    hs.handle_input(&input, now);
    frames.push(&hs.poll_transmit().unwrap()[HEADER_LEN + 1..]);
    noise
        .read_message(frames.frame().unwrap(), &mut buf)
        .unwrap();
    let n = noise.write_message(&r.hello.encode(), &mut buf).unwrap();
    let mut msg2 = Vec::new();
    encode_frame(&buf[..n], &mut msg2).unwrap();
    hs.handle_input(&msg2, now);
    frames.push(&hs.poll_transmit().unwrap());
    noise
        .read_message(frames.frame().unwrap(), &mut buf)
        .unwrap();
    noise
}

/// An impostor that answers the dialler without completing the Noise
/// handshake can only send hints or frames that do not open.
#[test]
fn a_forged_verdict_cannot_pass_for_an_authenticated_refusal() {
    let (i, r) = (side("h1", true, 1), side("h2", true, 2));
    let now = Instant::now();
    for forged in [
        VerdictFrame::sealed(&[0u8; 40]),
        VerdictFrame::hint(&Verdict::Refused(Refusal::new(
            RefusalCode::NameCollision,
            "go away forever",
        ))),
        VerdictFrame::hint(&Verdict::Accepted),
    ] {
        let mut hs = i.start(true, now);
        let _ = impostor_until_msg3(&mut hs, &r, now);
        let mut frame = Vec::new();
        encode_frame(&forged, &mut frame).unwrap();
        hs.handle_input(&frame, now);
        match hs.poll_event() {
            Some(HandshakeEvent::Failed { error, registered }) => {
                assert!(!registered);
                assert!(
                    matches!(
                        error,
                        HandshakeError::Verdict(_) | HandshakeError::Unauthenticated(_)
                    ),
                    "{error}"
                );
            }
            other => panic!("a forged verdict gave {other:?}"),
        }
    }
}

/// A dialler whose Hello is in a format this build does not speak is
/// refused as a protocol mismatch, sealed, so both ends name the cause.
#[test]
fn a_newer_hello_format_is_a_protocol_mismatch_on_both_ends() {
    let (i, r) = (side("h1", true, 1), side("h2", true, 2));
    let now = Instant::now();
    let mut b = r.start(false, now);
    let mut noise = super::handshake_state(&i.private, None, true, i.seed).unwrap();
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let mut input = Header::OURS.encode().to_vec();
    input.push(0);
    let n = noise.write_message(&[], &mut buf).unwrap();
    encode_frame(&buf[..n], &mut input).unwrap();
    b.handle_input(&input, now);
    let mut frames = FrameDecoder::new();
    frames.push(&b.poll_transmit().unwrap()[HEADER_LEN + 1..]);
    noise
        .read_message(frames.frame().unwrap(), &mut buf)
        .unwrap();
    let mut newer = i.hello.encode();
    newer[0] = crate::wire::HELLO_FORMAT + 1;
    let n = noise.write_message(&newer, &mut buf).unwrap();
    let mut msg3 = Vec::new();
    encode_frame(&buf[..n], &mut msg3).unwrap();
    b.handle_input(&msg3, now);
    let ours = match b.poll_event() {
        Some(HandshakeEvent::Failed { error, .. }) => error,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert_eq!(ours.refusal().code, RefusalCode::ProtocolMismatch);
    assert!(ours.to_string().contains("upgrade meshnet"), "{ours}");
    let transport = noise.into_stateless_transport_mode().unwrap();
    frames.push(&b.poll_transmit().unwrap());
    let Ok(VerdictFrame::Sealed(ct)) = VerdictFrame::decode(frames.frame().unwrap()) else {
        panic!("the refusal is not sealed");
    };
    let n = transport.read_message(VERDICT_NONCE, ct, &mut buf).unwrap();
    match Verdict::decode(&buf[..n]).unwrap() {
        Verdict::Refused(r) => {
            assert_eq!(r.code, RefusalCode::ProtocolMismatch);
            assert!(r.code.is_permanent());
            assert!(r.code.advice().contains("upgrade meshnet"));
        }
        Verdict::Accepted => panic!("a hello in an unknown format was accepted"),
    }
}

#[test]
fn the_handshake_times_out_at_its_deadline_and_not_before() {
    let r = side("h2", true, 2);
    let now = Instant::now();
    let mut b = r.start(false, now);
    assert!(b.poll_transmit().is_some(), "our header");
    assert_eq!(b.poll_timeout(), Some(now + HANDSHAKE_TIMEOUT));
    b.handle_timeout(now + HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert!(b.poll_event().is_none());
    b.handle_timeout(now + HANDSHAKE_TIMEOUT);
    match b.poll_event() {
        Some(HandshakeEvent::Failed { error, registered }) => {
            assert!(!registered);
            assert_eq!(error.to_string(), "handshake timed out after 10s");
            assert!(!error.is_refusal());
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(b.poll_timeout(), None);
    // Later input is ignored.
    b.handle_input(&Header::OURS.encode(), now + HANDSHAKE_TIMEOUT);
    assert!(b.poll_event().is_none() && b.poll_transmit().is_none());
}

/// While the router decides, a peer has nothing to send; whatever it sends is buffered up to
/// the named limit, and one byte more fails the handshake.
#[test]
fn a_peer_flooding_the_handshake_is_cut_off_at_the_named_limit() {
    let (i, r) = (side("h1", true, 1), side("h2", true, 2));
    let now = Instant::now();
    let mut a = i.start(true, now);
    let mut b = r.start(false, now);
    while !b.is_deciding() {
        if let Some(t) = a.poll_transmit() {
            b.handle_input(&t, now);
        }
        if let Some(t) = b.poll_transmit() {
            a.handle_input(&t, now);
        }
    }
    assert!(matches!(
        b.poll_event(),
        Some(HandshakeEvent::Authenticated { .. })
    ));
    b.handle_input(&vec![0; MAX_HANDSHAKE_INPUT], now);
    assert!(b.poll_event().is_none(), "at the limit, it still waits");
    b.handle_input(&[0], now);
    assert!(matches!(
        b.poll_event(),
        Some(HandshakeEvent::Failed {
            error: HandshakeError::TooMuchInput(n),
            registered: false,
        }) if n == MAX_HANDSHAKE_INPUT + 1
    ));
}

/// The dialler sends its verdict and its first message back to back: the responder's
/// session gets the message from the bytes that arrived with the verdict.
#[test]
fn bytes_after_the_last_verdict_reach_the_session() {
    let (i, r) = (side("h1", true, 1), side("h2", true, 2));
    let now = Instant::now();
    let mut a = i.start(true, now);
    let mut b = r.start(false, now);
    let (mut session_a, mut session_b) = (None, None);
    for _ in 0..10 {
        let mut to_b = Vec::new();
        while let Some(ev) = a.poll_event() {
            match ev {
                HandshakeEvent::Authenticated { .. } => a.handle_decision(Decision::Accept, now),
                HandshakeEvent::Established(mut s) => {
                    // The verdict first, then the message, in one delivery.
                    to_b.extend(a.poll_transmit().unwrap());
                    s.sealer.seal(b"first", &mut to_b).unwrap();
                    session_a = Some(s);
                }
                HandshakeEvent::Failed { error, .. } => panic!("{error}"),
            }
        }
        to_b.extend(a.poll_transmit().unwrap_or_default());
        b.handle_input(&to_b, now);
        while let Some(ev) = b.poll_event() {
            match ev {
                HandshakeEvent::Authenticated { .. } => b.handle_decision(Decision::Accept, now),
                HandshakeEvent::Established(s) => session_b = Some(s),
                HandshakeEvent::Failed { error, .. } => panic!("{error}"),
            }
        }
        if let Some(t) = b.poll_transmit() {
            a.handle_input(&t, now);
        }
    }
    assert!(session_a.is_some());
    let mut s = session_b.expect("the responder established");
    assert_eq!(s.opener.poll_message(), Some(Ok(b"first".to_vec())));
}

#[test]
fn psk_derivation_is_deterministic_and_password_dependent() {
    assert_eq!(Psk::derive("a").0, Psk::derive("a").0);
    assert_ne!(Psk::derive("a").0, Psk::derive("b").0);
    assert_eq!(format!("{:?}", Psk::derive("a")), "Psk(<redacted>)");
}

#[test]
fn public_from_private_matches_the_generated_pair_and_checks_the_length() {
    let (private, public) = generate_keypair([5; 32]).unwrap();
    assert_eq!(public_from_private(&private).unwrap(), public);
    assert!(
        public_from_private(&[1; 31])
            .unwrap_err()
            .contains("32 bytes")
    );
}

mod transport {
    use super::super::transport::*;
    use super::*;
    use std::sync::Arc;

    fn pair() -> (
        Arc<snow::StatelessTransportState>,
        Arc<snow::StatelessTransportState>,
    ) {
        // The keys the machine builds, without its verdict exchange.
        let (i, r) = (side("h1", true, 1), side("h2", true, 2));
        let mut hi = super::super::handshake_state(&i.private, None, true, i.seed).unwrap();
        let mut hr = super::super::handshake_state(&r.private, None, false, r.seed).unwrap();
        let (mut m, mut p) = (vec![0u8; 65535], vec![0u8; 65535]);
        let n = hi.write_message(&[], &mut m).unwrap();
        hr.read_message(&m[..n], &mut p).unwrap();
        let n = hr.write_message(&[], &mut m).unwrap();
        hi.read_message(&m[..n], &mut p).unwrap();
        let n = hi.write_message(&[], &mut m).unwrap();
        hr.read_message(&m[..n], &mut p).unwrap();
        (
            Arc::new(hi.into_stateless_transport_mode().unwrap()),
            Arc::new(hr.into_stateless_transport_mode().unwrap()),
        )
    }

    #[test]
    fn large_message_is_chunked_and_reassembled() {
        let (i, r) = pair();
        let mut sealer = Sealer::new(i);
        let mut opener = Opener::new(r, 1 << 20);
        let message: Vec<u8> = (0..200_000u32).map(|x| x as u8).collect();
        let mut out = Vec::new();
        sealer.seal(&message, &mut out).unwrap();
        sealer.seal(b"", &mut out).unwrap();
        let mut frames = FrameDecoder::new();
        frames.push(&out);
        let mut n = 0;
        while frames.frame().is_some() {
            n += 1;
        }
        assert_eq!(n, 4 + 1, "200 kB needs 4 chunks, plus one empty message");
        // Delivered in odd pieces, the stream still yields both messages.
        let mut got = Vec::new();
        for piece in out.chunks(999) {
            opener.handle_input(piece);
            while let Some(m) = opener.poll_message() {
                got.push(m.unwrap());
            }
        }
        assert_eq!(got, vec![message, Vec::new()]);
    }

    #[test]
    fn a_tampered_frame_fails_where_the_same_frame_untampered_opens() {
        let (i, r) = pair();
        let mut sealer = Sealer::new(i);
        let mut out = Vec::new();
        sealer.seal(b"hello", &mut out).unwrap();
        let mut frames = FrameDecoder::new();
        frames.push(&out);
        let frame = frames.frame().unwrap().to_vec();
        // Same keys, same nonce: the untampered frame opens...
        assert_eq!(
            Opener::new(r.clone(), 100).open(&frame),
            Ok(Some(b"hello".to_vec()))
        );
        // ...and every single flipped bit makes it fail.
        for bit in 0..frame.len() * 8 {
            let mut tampered = frame.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                Opener::new(r.clone(), 100).open(&tampered),
                Err(TransportError::Decrypt { nonce: 1 }),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_replayed_frame_is_refused_and_ends_the_stream() {
        let (i, r) = pair();
        let mut sealer = Sealer::new(i);
        let mut opener = Opener::new(r, 100);
        let mut out = Vec::new();
        sealer.seal(b"hello", &mut out).unwrap();
        opener.handle_input(&out);
        opener.handle_input(&out);
        sealer.seal(b"after", &mut out).unwrap();
        assert_eq!(opener.poll_message(), Some(Ok(b"hello".to_vec())));
        assert_eq!(
            opener.poll_message(),
            Some(Err(TransportError::Decrypt { nonce: 2 }))
        );
        assert_eq!(opener.poll_message(), None, "nothing after a failure");
    }

    #[test]
    fn a_message_over_the_limit_is_refused() {
        let (i, r) = pair();
        let mut sealer = Sealer::new(i);
        let mut opener = Opener::new(r, 100);
        let mut out = Vec::new();
        sealer.seal(&[1; 100], &mut out).unwrap();
        sealer.seal(&[1; 101], &mut out).unwrap();
        opener.handle_input(&out);
        assert_eq!(opener.poll_message(), Some(Ok(vec![1; 100])));
        assert_eq!(
            opener.poll_message(),
            Some(Err(TransportError::Chunk(
                crate::wire::frame::ChunkError::TooLarge { max: 100 }
            )))
        );
    }
}
