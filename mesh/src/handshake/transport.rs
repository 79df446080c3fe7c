//! Encrypted message transport of an established control connection (docs/protocol.md §4).
//!
//! A message (one encoded [`Message`](crate::Message), up to [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN))
//! is cut into chunks ([`crate::wire::frame`]); each chunk's plaintext is encrypted as one Noise
//! transport message and framed. Nonces are implicit counters per direction starting at 1
//! (0 sealed the verdict; TCP keeps order), so a replayed, dropped or reordered frame fails to
//! decrypt and closes the connection.

use std::sync::Arc;

use snow::StatelessTransportState;

use super::{MAX_NOISE_MSG, VERDICT_NONCE};
use crate::wire::frame::{ChunkError, FrameDecoder, Reassembly, chunks, encode_frame};

/// AEAD tag length of ChaChaPoly.
const TAG_LEN: usize = 16;
/// Largest data per chunk: a Noise message minus tag and flag byte.
pub const MAX_CHUNK_DATA: usize = MAX_NOISE_MSG - TAG_LEN - 1;

/// Nonce of the first message in each direction: nonce 0 carried the verdict.
const FIRST_NONCE: u64 = VERDICT_NONCE + 1;

/// Errors on the receive side (and the impossible send-side one); each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("cannot decrypt frame {nonce}: corrupted or forged traffic")]
    Decrypt { nonce: u64 },
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
}

/// Both halves of an established connection, and the bytes that arrived after the last
/// handshake frame (already fed to the opener).
#[derive(Debug)]
pub struct Session {
    pub sealer: Sealer,
    pub opener: Opener,
}

impl Session {
    /// A session over `transport`; `leftover` is what the socket returned beyond the handshake.
    pub fn new(transport: Arc<StatelessTransportState>, leftover: &[u8]) -> Session {
        let mut opener = Opener::new(transport.clone(), crate::MAX_MESSAGE_LEN);
        opener.handle_input(leftover);
        Session {
            sealer: Sealer::new(transport),
            opener,
        }
    }
}

/// The sending half: encrypts and frames messages.
pub struct Sealer {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish()
    }
}

impl Sealer {
    pub fn new(transport: Arc<StatelessTransportState>) -> Sealer {
        Sealer {
            transport,
            nonce: FIRST_NONCE,
            scratch: vec![0u8; MAX_NOISE_MSG],
        }
    }

    /// Appends the framed, encrypted chunks of `message` to `out`.
    pub fn seal(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), TransportError> {
        chunks(message, MAX_CHUNK_DATA, |plain| {
            let n = self
                .transport
                .write_message(self.nonce, plain, &mut self.scratch)
                .map_err(|e| TransportError::Encrypt(e.to_string()))?;
            self.nonce += 1;
            // n ≤ MAX_NOISE_MSG by construction (plain ≤ MAX_CHUNK_DATA + 1).
            encode_frame(&self.scratch[..n], out)
                .ok_or_else(|| TransportError::Encrypt(format!("sealed chunk of {n} bytes")))
        })
    }
}

/// The receiving half: splits the stream into frames, decrypts them and reassembles
/// messages. Feed it with [`Opener::handle_input`], drain it with [`Opener::poll_message`].
#[derive(Debug)]
pub struct Opener {
    frames: FrameDecoder,
    decrypt: Decrypt,
    failed: bool,
}

/// Decryption and reassembly of frame bodies, in nonce order.
struct Decrypt {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    reassembly: Reassembly,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Decrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypt")
            .field("nonce", &self.nonce)
            .finish()
    }
}

impl Decrypt {
    /// Decrypts one frame body; returns a complete message when this was its last chunk.
    fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
        let n = self
            .transport
            .read_message(self.nonce, frame, &mut self.scratch)
            .map_err(|_| TransportError::Decrypt { nonce: self.nonce })?;
        self.nonce += 1;
        Ok(self.reassembly.push(&self.scratch[..n])?)
    }
}

impl Opener {
    /// An opener for messages of at most `max_message` bytes.
    pub fn new(transport: Arc<StatelessTransportState>, max_message: usize) -> Opener {
        Opener {
            frames: FrameDecoder::new(),
            decrypt: Decrypt {
                transport,
                nonce: FIRST_NONCE,
                reassembly: Reassembly::new(max_message),
                scratch: vec![0u8; MAX_NOISE_MSG],
            },
            failed: false,
        }
    }

    /// Bytes read from the socket.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
    }

    /// The next complete message; an error ends the connection (and every later call returns
    /// `None`).
    pub fn poll_message(&mut self) -> Option<Result<Vec<u8>, TransportError>> {
        while !self.failed {
            let frame = self.frames.frame()?;
            match self.decrypt.open(frame) {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    /// Decrypts one frame body (without its length prefix); returns a complete message when
    /// this was its last chunk.
    pub fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
        self.decrypt.open(frame)
    }
}
