//! The control connection's framing (docs/protocol.md §3–§4): every Noise message on the TCP
//! stream is a 2-byte big-endian length followed by that many bytes, and a transport message's
//! plaintext is a chunk, a flag byte (0 = last, 1 = more follow) plus data. A message longer
//! than one chunk is cut into several, joined again by [`Reassembly`].
//!
//! [`FrameDecoder`] takes stream bytes in whatever pieces the socket returns and yields whole
//! frames; it never buffers more than one frame beyond what it was given.

/// Length of a frame's length prefix.
pub const FRAME_HEADER_LEN: usize = 2;
/// Largest frame body: the Noise protocol's message limit.
pub const MAX_FRAME_LEN: usize = 65535;

/// Chunk flag: this chunk ends its message.
pub const FLAG_LAST: u8 = 0;
/// Chunk flag: more chunks of this message follow.
pub const FLAG_MORE: u8 = 1;

/// Why a chunk sequence was refused; each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("empty frame after decryption")]
    Empty,
    #[error("bad chunk flag {0}")]
    BadFlag(u8),
    #[error("message exceeds {max} bytes: peer sends more than the protocol allows")]
    TooLarge { max: usize },
}

/// Appends one frame (length prefix and body) to `out`. `None` when `body` is longer than
/// [`MAX_FRAME_LEN`].
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let len = u16::try_from(body.len()).ok()?;
    out.reserve(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Some(())
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` before this were handed out already.
    start: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body, if one has arrived.
    pub fn frame(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        let header: [u8; FRAME_HEADER_LEN] = rest.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        let len = usize::from(u16::from_be_bytes(header));
        let end = FRAME_HEADER_LEN + len;
        if rest.len() < end {
            return None;
        }
        let body_start = self.start + FRAME_HEADER_LEN;
        self.start += end;
        Some(&self.buf[body_start..self.start])
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Joins decrypted chunks into messages, bounded in size.
#[derive(Debug)]
pub struct Reassembly {
    partial: Vec<u8>,
    max: usize,
}

impl Reassembly {
    /// Reassembles messages of at most `max` bytes.
    pub fn new(max: usize) -> Reassembly {
        Reassembly {
            partial: Vec::new(),
            max,
        }
    }

    /// Adds one chunk plaintext (flag byte + data); returns the message it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let (&flag, data) = chunk.split_first().ok_or(ChunkError::Empty)?;
        if self.partial.len() + data.len() > self.max {
            return Err(ChunkError::TooLarge { max: self.max });
        }
        match flag {
            FLAG_LAST => {
                self.partial.extend_from_slice(data);
                Ok(Some(std::mem::take(&mut self.partial)))
            }
            FLAG_MORE => {
                self.partial.extend_from_slice(data);
                Ok(None)
            }
            other => Err(ChunkError::BadFlag(other)),
        }
    }
}

/// Cuts `message` into chunk plaintexts of at most `max_data` data bytes each (an empty
/// message is one empty last chunk) and hands each to `sink`.
pub fn chunks<E>(
    message: &[u8],
    max_data: usize,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut plain = Vec::with_capacity(max_data.min(message.len()) + 1);
    let mut pieces = message.chunks(max_data.max(1)).peekable();
    if pieces.peek().is_none() {
        return sink(&[FLAG_LAST]);
    }
    while let Some(piece) = pieces.next() {
        plain.clear();
        plain.push(if pieces.peek().is_some() {
            FLAG_MORE
        } else {
            FLAG_LAST
        });
        plain.extend_from_slice(piece);
        sink(&plain)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut stream = Vec::new();
        encode_frame(b"abc", &mut stream).unwrap();
        encode_frame(b"", &mut stream).unwrap();
        encode_frame(&[7; 300], &mut stream).unwrap();
        assert_eq!(&stream[..5], &[0, 3, b'a', b'b', b'c']);
        assert_eq!(&stream[5..7], &[0, 0]);
        assert_eq!(&stream[7..9], &[1, 44]);
        for cut in 0..stream.len() {
            let mut d = FrameDecoder::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                d.push(piece);
                while let Some(f) = d.frame() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(
                got,
                vec![b"abc".to_vec(), vec![], vec![7; 300]],
                "cut {cut}"
            );
            assert!(d.buffered().is_empty());
        }
    }

    #[test]
    fn a_partial_frame_waits_and_stays_buffered() {
        let mut d = FrameDecoder::new();
        d.push(&[0, 5, 1, 2]);
        assert_eq!(d.frame(), None);
        assert_eq!(d.buffered(), &[0, 5, 1, 2]);
        d.push(&[3, 4, 5, 0]);
        assert_eq!(d.frame(), Some(&[1, 2, 3, 4, 5][..]));
        assert_eq!(d.frame(), None);
        assert_eq!(d.buffered(), &[0]);
    }

    #[test]
    fn the_largest_frame_encodes_and_one_more_byte_does_not() {
        let mut out = Vec::new();
        assert!(encode_frame(&vec![0; MAX_FRAME_LEN], &mut out).is_some());
        assert_eq!(&out[..2], &[0xff, 0xff]);
        assert!(encode_frame(&vec![0; MAX_FRAME_LEN + 1], &mut Vec::new()).is_none());
    }

    #[test]
    fn chunks_reassemble_to_the_message() {
        for len in [0usize, 1, 9, 10, 11, 35] {
            let message: Vec<u8> = (0..len as u8).collect();
            let mut pieces = Vec::new();
            chunks::<()>(&message, 10, |p| {
                pieces.push(p.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(pieces.len(), len.div_ceil(10).max(1), "len {len}");
            assert!(pieces.iter().all(|p| p.len() <= 11));
            let mut r = Reassembly::new(100);
            let mut out = Vec::new();
            for p in &pieces {
                if let Some(m) = r.push(p).unwrap() {
                    out.push(m);
                }
            }
            assert_eq!(out, vec![message]);
        }
    }

    #[test]
    fn reassembly_is_bounded_and_refuses_bad_chunks() {
        let mut r = Reassembly::new(10);
        assert_eq!(r.push(&[FLAG_MORE, 1, 2, 3, 4, 5, 6]).unwrap(), None);
        assert_eq!(
            r.push(&[FLAG_LAST, 1, 2, 3, 4, 5]),
            Err(ChunkError::TooLarge { max: 10 })
        );
        // Exactly the limit is allowed.
        let mut r = Reassembly::new(10);
        assert_eq!(r.push(&[FLAG_MORE, 1, 2, 3, 4, 5]).unwrap(), None);
        assert_eq!(
            r.push(&[FLAG_LAST, 6, 7, 8, 9, 10]).unwrap(),
            Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        );
        assert_eq!(Reassembly::new(10).push(&[]), Err(ChunkError::Empty));
        assert_eq!(
            Reassembly::new(10).push(&[7, 1]),
            Err(ChunkError::BadFlag(7))
        );
    }
}
