//! The [`Handshake`] state machine: header, password flag, Noise XX and both verdicts.
//!
//! Call protocol (quinn style): create it with [`Handshake::new`] (which queues our header),
//! then after every input (`handle_input` with the bytes the socket returned,
//! `handle_decision` with the application's answer to [`HandshakeEvent::Authenticated`],
//! `handle_timeout` once [`Handshake::poll_timeout`] has passed) drain
//! [`Handshake::poll_transmit`] onto the socket first, then [`Handshake::poll_event`]. The
//! application judges the peer (identity checks, the mesh's rules): this machine only enforces
//! the protocol's own rules (the password flags, the Noise authentication, the verdict frames).
//! It ends with exactly one [`HandshakeEvent::Established`] or [`HandshakeEvent::Failed`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use snow::{HandshakeState, StatelessTransportState};

use super::transport::Session;
use super::{HANDSHAKE_TIMEOUT, HandshakeError, MAX_NOISE_MSG, Psk, VERDICT_NONCE};
use crate::wire::frame::{FRAME_HEADER_LEN, FrameDecoder, encode_frame};
use crate::{HEADER_LEN, Header, Hello, PublicKey, Refusal, RefusalCode, Verdict, VerdictFrame};

/// Most bytes a peer may send before the handshake waits for them: one whole frame and
/// its prefix, twice (a legitimate peer never sends more than its next message).
pub const MAX_HANDSHAKE_INPUT: usize = 2 * (FRAME_HEADER_LEN + MAX_NOISE_MSG);

/// What a handshake starts from.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Our static private key.
    pub private_key: Vec<u8>,
    /// The password-derived key, when the mesh has a password.
    pub psk: Option<Psk>,
    /// The Hello we send.
    pub hello: Hello,
    /// Whether we dialled (initiator) or accepted (responder).
    pub outbound: bool,
    /// Seed of the ephemeral key's randomness (draw it from the OS for every handshake).
    pub seed: [u8; 32],
}

/// The application's answer to [`HandshakeEvent::Authenticated`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The peer may join: send "accepted".
    Accept,
    /// We refuse: send this refusal (sealed) and fail.
    Refuse(Refusal),
    /// The peer refused us and the application believes it: fail without a verdict.
    PeerRefused,
}

/// What the handshake tells the application.
#[derive(Debug)]
pub enum HandshakeEvent {
    /// Both ends authenticated: judge the peer and answer with [`Handshake::handle_decision`].
    /// `remote_verdict` is the responder's verdict (outbound connections only).
    Authenticated {
        remote_hello: Box<Hello>,
        remote_key: PublicKey,
        remote_verdict: Option<Verdict>,
    },
    /// Both verdicts said yes: move messages with this session.
    Established(Box<Session>),
    /// The handshake failed; `registered` says whether the application had accepted the peer
    /// already (then it must hear that the connection closed).
    Failed {
        error: HandshakeError,
        registered: bool,
    },
}

/// Where the handshake stands.
enum State {
    /// Waiting for the peer's 7-byte header.
    Header,
    /// Waiting for the peer's password flag byte.
    PasswordFlag,
    /// Responder: waiting for `-> e`.
    Msg1(Box<HandshakeState>),
    /// Initiator: waiting for `<- e, ee, s, es`.
    Msg2(Box<HandshakeState>),
    /// Responder: waiting for `-> s, se`.
    Msg3(Box<HandshakeState>),
    /// Initiator: waiting for the responder's verdict.
    TheirVerdictFirst(Authenticated),
    /// Waiting for the application's [`Decision`]; `remote_verdict` as in the event.
    Deciding(Authenticated, Option<Verdict>),
    /// Responder: accepted, waiting for the initiator's verdict.
    TheirVerdictLast(Authenticated),
    /// An event ended it.
    Done,
}

/// A finished Noise handshake whose verdicts are still to be exchanged.
struct Authenticated {
    transport: StatelessTransportState,
    remote_hello: Hello,
    remote_key: PublicKey,
}

/// One connection's handshake (see the module docs for the call protocol).
pub struct Handshake {
    config: HandshakeConfig,
    state: State,
    deadline: Instant,
    /// Bytes before the Noise messages (header, flag).
    raw: Vec<u8>,
    frames: FrameDecoder,
    transmit: Vec<u8>,
    events: VecDeque<HandshakeEvent>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("outbound", &self.config.outbound)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake at `now`; our header is the first transmit.
    pub fn new(config: HandshakeConfig, now: Instant) -> Handshake {
        Handshake {
            config,
            state: State::Header,
            deadline: now + HANDSHAKE_TIMEOUT,
            raw: Vec::new(),
            frames: FrameDecoder::new(),
            transmit: Header::OURS.encode().to_vec(),
            events: VecDeque::new(),
        }
    }

    /// Bytes to write to the socket, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| std::mem::take(&mut self.transmit))
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<HandshakeEvent> {
        self.events.pop_front()
    }

    /// When [`Handshake::handle_timeout`] must be called, while the handshake runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!matches!(self.state, State::Done)).then_some(self.deadline)
    }

    /// Whether the handshake waits for the application rather than the peer (read nothing
    /// from the socket meanwhile).
    pub fn is_deciding(&self) -> bool {
        matches!(self.state, State::Deciding(..))
    }

    /// The handshake has run out of time if `now` is past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && !matches!(self.state, State::Done) {
            let registered = matches!(self.state, State::TheirVerdictLast(_));
            self.fail(HandshakeError::Timeout(HANDSHAKE_TIMEOUT), registered);
        }
    }

    /// Bytes read from the socket.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.handle_timeout(now);
        match self.state {
            State::Done => return,
            State::Header | State::PasswordFlag => self.raw.extend_from_slice(bytes),
            _ => self.frames.push(bytes),
        }
        self.advance();
        // What is left once the machine waits again is more than the protocol lets a peer send.
        let n = self.raw.len() + self.frames.buffered().len();
        if n > MAX_HANDSHAKE_INPUT && !matches!(self.state, State::Done) {
            let registered = matches!(self.state, State::TheirVerdictLast(_));
            self.fail(HandshakeError::TooMuchInput(n), registered);
        }
    }

    /// The application's answer to [`HandshakeEvent::Authenticated`].
    pub fn handle_decision(&mut self, decision: Decision, now: Instant) {
        self.handle_timeout(now);
        let State::Deciding(auth, remote_verdict) = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let outbound = self.config.outbound;
        match decision {
            Decision::Accept => {
                self.send_verdict(&auth.transport, &Verdict::Accepted);
                if outbound {
                    self.establish(auth);
                } else {
                    self.state = State::TheirVerdictLast(auth);
                    self.advance();
                }
            }
            Decision::Refuse(r) => {
                self.send_verdict(&auth.transport, &Verdict::Refused(r.clone()));
                self.fail(HandshakeError::RefusedByUs(r), false);
            }
            Decision::PeerRefused if outbound => {
                let refusal = match remote_verdict {
                    Some(Verdict::Refused(r)) => r,
                    _ => Refusal::new(RefusalCode::Unknown(0), "refused without a reason"),
                };
                let peer = auth.remote_hello.name;
                self.fail(HandshakeError::RefusedByPeer { peer, refusal }, false);
            }
            Decision::PeerRefused => self.fail(
                HandshakeError::RefusedByUs(Refusal::new(
                    RefusalCode::Unknown(0),
                    "no verdict to believe on an inbound connection",
                )),
                false,
            ),
        }
    }

    fn fail(&mut self, error: HandshakeError, registered: bool) {
        self.state = State::Done;
        self.events
            .push_back(HandshakeEvent::Failed { error, registered });
    }

    fn establish(&mut self, auth: Authenticated) {
        self.state = State::Done;
        let leftover = self.frames.buffered().to_vec();
        let session = Session::new(Arc::new(auth.transport), &leftover);
        self.events
            .push_back(HandshakeEvent::Established(Box::new(session)));
    }

    fn send_frame(&mut self, body: &[u8]) {
        // Every body here is at most one Noise message, which fits a frame.
        let _ = encode_frame(body, &mut self.transmit);
    }

    fn send_verdict(&mut self, transport: &StatelessTransportState, verdict: &Verdict) {
        let mut ct = vec![0u8; MAX_NOISE_MSG];
        if let Ok(n) = transport.write_message(VERDICT_NONCE, &verdict.encode(), &mut ct) {
            self.send_frame(&VerdictFrame::sealed(&ct[..n]));
        }
    }

    /// Runs the state machine as far as the buffered input allows.
    fn advance(&mut self) {
        loop {
            let state = std::mem::replace(&mut self.state, State::Done);
            match self.step(state) {
                Ok(Some(next)) => self.state = next,
                // Waiting for input (the state was put back) or finished.
                Ok(None) => return,
                Err((error, registered)) => return self.fail(error, registered),
            }
        }
    }

    /// One transition. `Ok(None)` when more input is needed (then `self.state` is restored)
    /// or an event ended the handshake.
    fn step(&mut self, state: State) -> Result<Option<State>, (HandshakeError, bool)> {
        let early = |e: HandshakeError| (e, false);
        match state {
            State::Header => {
                if self.raw.len() < HEADER_LEN {
                    self.state = State::Header;
                    return Ok(None);
                }
                let theirs =
                    Header::decode(&self.raw[..HEADER_LEN]).map_err(|e| early(e.into()))?;
                Header::negotiate(Header::OURS, theirs).map_err(|e| early(e.into()))?;
                self.raw.drain(..HEADER_LEN);
                self.transmit.push(u8::from(self.config.psk.is_some()));
                Ok(Some(State::PasswordFlag))
            }
            State::PasswordFlag => {
                let Some(&flag) = self.raw.first() else {
                    self.state = State::PasswordFlag;
                    return Ok(None);
                };
                match (self.config.psk.is_some(), flag) {
                    (true, 1) | (false, 0) => {}
                    (true, 0) => return Err(early(HandshakeError::PeerHasNoPassword)),
                    (false, 1) => return Err(early(HandshakeError::PeerRequiresPassword)),
                    (_, other) => return Err(early(HandshakeError::BadPasswordFlag(other))),
                }
                let rest = self.raw.split_off(1);
                self.raw.clear();
                self.frames.push(&rest);
                let c = &self.config;
                let hs = super::handshake_state(&c.private_key, c.psk.as_ref(), c.outbound, c.seed)
                    .map_err(early)?;
                if self.config.outbound {
                    let mut hs = Box::new(hs);
                    let mut buf = vec![0u8; MAX_NOISE_MSG];
                    let n = hs.write_message(&[], &mut buf).map_err(crypto)?;
                    self.send_frame(&buf[..n]);
                    Ok(Some(State::Msg2(hs)))
                } else {
                    Ok(Some(State::Msg1(Box::new(hs))))
                }
            }
            State::Msg1(mut hs) => {
                let Some(msg1) = self.frames.frame() else {
                    self.state = State::Msg1(hs);
                    return Ok(None);
                };
                let mut payload = vec![0u8; MAX_NOISE_MSG];
                hs.read_message(msg1, &mut payload).map_err(crypto)?;
                let n = hs
                    .write_message(&self.config.hello.encode(), &mut payload)
                    .map_err(crypto)?;
                self.send_frame(&payload[..n]);
                Ok(Some(State::Msg3(hs)))
            }
            State::Msg2(mut hs) => {
                let Some(msg2) = self.frames.frame() else {
                    self.state = State::Msg2(hs);
                    return Ok(None);
                };
                let mut payload = vec![0u8; MAX_NOISE_MSG];
                let n = hs.read_message(msg2, &mut payload).map_err(crypto)?;
                let (remote_hello, remote_key) = remote_identity(&hs, &payload[..n])?;
                let n = hs
                    .write_message(&self.config.hello.encode(), &mut payload)
                    .map_err(crypto)?;
                self.send_frame(&payload[..n]);
                let transport = hs.into_stateless_transport_mode().map_err(crypto)?;
                Ok(Some(State::TheirVerdictFirst(Authenticated {
                    transport,
                    remote_hello,
                    remote_key,
                })))
            }
            State::Msg3(mut hs) => {
                let Some(msg3) = self.frames.frame() else {
                    self.state = State::Msg3(hs);
                    return Ok(None);
                };
                let mut payload = vec![0u8; MAX_NOISE_MSG];
                let n = match hs.read_message(msg3, &mut payload) {
                    Ok(n) => n,
                    Err(e) => {
                        let err = if self.config.psk.is_some() {
                            HandshakeError::WrongPassword
                        } else {
                            HandshakeError::Crypto(e)
                        };
                        // Tell the initiator why; we cannot seal it, so it is only a hint.
                        let hint = VerdictFrame::hint(&Verdict::Refused(err.refusal()));
                        self.send_frame(&hint);
                        return Err(early(err));
                    }
                };
                let remote = remote_identity(&hs, &payload[..n]);
                let transport = hs.into_stateless_transport_mode().map_err(crypto)?;
                match remote {
                    Ok((remote_hello, remote_key)) => {
                        let auth = Authenticated {
                            transport,
                            remote_hello,
                            remote_key,
                        };
                        Ok(Some(self.ask(auth, None)))
                    }
                    Err((err, _)) => {
                        self.send_verdict(&transport, &Verdict::Refused(err.refusal()));
                        Err(early(err))
                    }
                }
            }
            State::TheirVerdictFirst(auth) => {
                let Some(verdict) = self.read_verdict(&auth) else {
                    self.state = State::TheirVerdictFirst(auth);
                    return Ok(None);
                };
                let verdict = verdict.map_err(early)?;
                Ok(Some(self.ask(auth, Some(verdict))))
            }
            State::Deciding(auth, v) => {
                self.state = State::Deciding(auth, v);
                Ok(None)
            }
            State::TheirVerdictLast(auth) => {
                let Some(verdict) = self.read_verdict(&auth) else {
                    self.state = State::TheirVerdictLast(auth);
                    return Ok(None);
                };
                match verdict.map_err(|e| (e, true))? {
                    Verdict::Accepted => {
                        self.establish(auth);
                        Ok(None)
                    }
                    Verdict::Refused(refusal) => {
                        let peer = auth.remote_hello.name;
                        Err((HandshakeError::RefusedByPeer { peer, refusal }, true))
                    }
                }
            }
            State::Done => Ok(None),
        }
    }

    /// Hands the authenticated peer to the application.
    fn ask(&mut self, auth: Authenticated, remote_verdict: Option<Verdict>) -> State {
        self.events.push_back(HandshakeEvent::Authenticated {
            remote_hello: Box::new(auth.remote_hello.clone()),
            remote_key: auth.remote_key,
            remote_verdict: remote_verdict.clone(),
        });
        State::Deciding(auth, remote_verdict)
    }

    /// The peer's verdict, once its frame has arrived. A refusal is `Ok(Verdict::Refused)`
    /// when it was sealed (authenticated), [`HandshakeError::Unauthenticated`] when not.
    fn read_verdict(&mut self, auth: &Authenticated) -> Option<Result<Verdict, HandshakeError>> {
        let frame = self.frames.frame()?;
        let verdict = match VerdictFrame::decode(frame) {
            Err(e) => Err(HandshakeError::Verdict(e.to_string())),
            Ok(VerdictFrame::Hint(Verdict::Refused(refusal))) => {
                Err(HandshakeError::Unauthenticated(refusal))
            }
            Ok(VerdictFrame::Hint(Verdict::Accepted)) => Err(HandshakeError::Verdict(
                "an unauthenticated acceptance".into(),
            )),
            Ok(VerdictFrame::Sealed(ct)) => {
                let mut plain = vec![0u8; ct.len()];
                match auth.transport.read_message(VERDICT_NONCE, ct, &mut plain) {
                    Ok(n) => Verdict::decode(&plain[..n])
                        .map_err(|e| HandshakeError::Verdict(e.to_string())),
                    Err(_) => Err(HandshakeError::Verdict(
                        "a verdict that does not open (forged?)".into(),
                    )),
                }
            }
        };
        Some(verdict)
    }
}

fn crypto(e: snow::Error) -> (HandshakeError, bool) {
    (HandshakeError::Crypto(e), false)
}

/// The remote's Hello and the static key it proved it holds.
fn remote_identity(
    hs: &HandshakeState,
    payload: &[u8],
) -> Result<(Hello, PublicKey), (HandshakeError, bool)> {
    let hello = Hello::decode(payload).map_err(|e| (HandshakeError::Hello(e), false))?;
    let key = hs
        .get_remote_static()
        .and_then(PublicKey::from_slice)
        .ok_or_else(|| {
            (
                HandshakeError::Verdict("peer sent no 32-byte static key".into()),
                false,
            )
        })?;
    Ok((hello, key))
}
