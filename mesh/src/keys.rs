//! Peer keys: the static X25519 public key a router proves it holds in the Noise handshake,
//! its fingerprint, the peer name derived from it, and the authorized-keys file format.
//!
//! One line of an authorized-keys file (also what `meshnet identity` prints):
//!
//! ```text
//! meshnet-x25519 <base64 of the 32-byte key> [comment, e.g. 8a:3e:3e:3e:3e:3e(host1)]
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. Parsing is pure: the router reads
//! the file and hands its text to [`AuthorizedKeys::parse`].

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::ids::PeerName;

/// Length of an X25519 public key.
pub const KEY_LEN: usize = 32;
/// The key type word that starts every authorized-keys line.
pub const KEY_TYPE: &str = "meshnet-x25519";
/// Longest authorized-keys file accepted, in lines (a bound on what a typo can cost).
pub const MAX_AUTHORIZED_KEYS: usize = 100_000;
/// Longest comment kept per key, in bytes.
pub const MAX_COMMENT_LEN: usize = 255;

/// A router's static Noise public key (X25519).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The key from a byte slice; `None` unless it is exactly [`KEY_LEN`] bytes.
    pub fn from_slice(b: &[u8]) -> Option<PublicKey> {
        <[u8; KEY_LEN]>::try_from(b).ok().map(PublicKey)
    }

    /// The peer name this key stands for: the first six bytes of its SHA-256, made a locally
    /// administered unicast MAC.
    pub fn derived_name(&self) -> PeerName {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut six = [0u8; 6];
        six.copy_from_slice(&digest.as_ref()[..6]);
        PeerName::from_digest(six)
    }

    /// `SHA256:<base64>` of the key, as `ssh-keygen -l` prints fingerprints.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        format!("SHA256:{}", STANDARD_NO_PAD.encode(digest.as_ref()))
    }

    /// The key in base64 (the second word of an authorized-keys line).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// This key as one authorized-keys line with `comment`.
    pub fn authorized_line(&self, comment: &str) -> String {
        if comment.is_empty() {
            format!("{KEY_TYPE} {}", self.to_base64())
        } else {
            format!("{KEY_TYPE} {} {comment}", self.to_base64())
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// Why an authorized-keys file was rejected. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizedKeysError {
    /// The line does not start with the key type.
    #[error(
        "line {line}: expected `{KEY_TYPE} <base64 key> [comment]`, found {found:?}; copy the line `meshnet identity` prints on the peer"
    )]
    KeyType {
        /// Line number.
        line: usize,
        /// The first word found.
        found: String,
    },
    /// The key is missing, not base64, or not 32 bytes.
    #[error(
        "line {line}: the key is not {KEY_LEN} bytes of base64 ({detail}); copy the line `meshnet identity` prints on the peer"
    )]
    BadKey {
        /// Line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// More lines than [`MAX_AUTHORIZED_KEYS`].
    #[error("more than {MAX_AUTHORIZED_KEYS} lines: split the mesh or trim the file")]
    TooManyLines,
}

/// The keys allowed to connect, each with its comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    keys: BTreeMap<PublicKey, String>,
}

impl AuthorizedKeys {
    /// Parses the text of an authorized-keys file (see the module docs).
    pub fn parse(text: &str) -> Result<AuthorizedKeys, AuthorizedKeysError> {
        let mut keys = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            if i >= MAX_AUTHORIZED_KEYS {
                return Err(AuthorizedKeysError::TooManyLines);
            }
            if let Some((key, comment)) = parse_line(raw, i + 1)? {
                keys.insert(key, comment);
            }
        }
        Ok(AuthorizedKeys { keys })
    }

    /// Whether `key` is listed.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains_key(key)
    }

    /// How many keys are listed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is listed (then nobody may connect).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The comment of a listed key.
    pub fn comment(&self, key: &PublicKey) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }
}

/// One line: `Ok(None)` for blank and comment lines.
pub fn parse_line(
    raw: &str,
    line: usize,
) -> Result<Option<(PublicKey, String)>, AuthorizedKeysError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let (kind, rest) = split_word(trimmed);
    if kind != KEY_TYPE {
        let found: String = kind.chars().take(40).collect();
        return Err(AuthorizedKeysError::KeyType { line, found });
    }
    let (b64, rest) = split_word(rest);
    let bad = |detail: String| AuthorizedKeysError::BadKey { line, detail };
    if b64.is_empty() {
        return Err(bad("no key after the key type".into()));
    }
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| bad(format!("not base64: {e}")))?;
    let key = PublicKey::from_slice(&bytes).ok_or_else(|| bad(format!("{} bytes", bytes.len())))?;
    let comment = rest.trim();
    let mut end = comment.len().min(MAX_COMMENT_LEN);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    let comment = comment[..end].trim_end();
    Ok(Some((key, comment.to_owned())))
}

/// The first whitespace-separated word of `s` (after leading whitespace) and the rest.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; KEY_LEN])
    }

    #[test]
    fn a_line_round_trips_and_comments_are_kept() {
        let line = key(7).authorized_line("8a:3e:3e:3e:3e:3e(host1)");
        assert_eq!(
            line,
            "meshnet-x25519 BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc= 8a:3e:3e:3e:3e:3e(host1)"
        );
        let keys = AuthorizedKeys::parse(&format!("# mesh\n\n  {line}  \n")).unwrap();
        let spaced = line.replacen(' ', " \t  ", 2);
        assert_eq!(AuthorizedKeys::parse(&spaced).unwrap(), keys);
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&key(7)) && !keys.contains(&key(8)));
        assert_eq!(keys.comment(&key(7)), Some("8a:3e:3e:3e:3e:3e(host1)"));
        let bare = AuthorizedKeys::parse(&key(8).authorized_line("")).unwrap();
        assert_eq!(bare.comment(&key(8)), Some(""));
    }

    #[test]
    fn bad_lines_name_their_number() {
        let good = key(1).authorized_line("a");
        let e = AuthorizedKeys::parse(&format!("{good}\nssh-ed25519 AAAA x\n")).unwrap_err();
        assert!(
            matches!(e, AuthorizedKeysError::KeyType { line: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("line 2: "), "{e}");
        let e = AuthorizedKeys::parse("\n\nmeshnet-x25519 !!!\n").unwrap_err();
        assert!(
            matches!(e, AuthorizedKeysError::BadKey { line: 3, .. }),
            "{e}"
        );
        let e = AuthorizedKeys::parse("meshnet-x25519 AAAA\n").unwrap_err();
        assert!(e.to_string().contains("3 bytes"), "{e}");
        let e = AuthorizedKeys::parse("meshnet-x25519\n").unwrap_err();
        assert!(
            matches!(e, AuthorizedKeysError::BadKey { line: 1, .. }),
            "{e}"
        );
        assert_eq!(AuthorizedKeys::parse("").unwrap().len(), 0);
    }

    #[test]
    fn too_many_lines_is_refused() {
        let text = "#\n".repeat(MAX_AUTHORIZED_KEYS + 1);
        assert_eq!(
            AuthorizedKeys::parse(&text),
            Err(AuthorizedKeysError::TooManyLines)
        );
        assert!(AuthorizedKeys::parse(&"#\n".repeat(MAX_AUTHORIZED_KEYS)).is_ok());
    }

    #[test]
    fn long_comments_are_cut_on_a_char_boundary() {
        let line = key(2).authorized_line(&"é".repeat(200));
        let keys = AuthorizedKeys::parse(&line).unwrap();
        let c = keys.comment(&key(2)).unwrap();
        assert!(c.len() <= MAX_COMMENT_LEN && c.starts_with('é'));
    }

    #[test]
    fn name_derivation_golden_vector() {
        // SHA-256 of 32 zero bytes starts 66 68 7a ad f8 62: multicast bit cleared, local set.
        assert_eq!(key(0).derived_name().to_string(), "66:68:7a:ad:f8:62");
        // SHA-256 of 32 bytes 0x02 starts 75:87:7b:b4:1d:39 (multicast bit set, local bit
        // clear) and of 0x04 starts 9f:4f:b6:8f:3e:1d (both set): the first byte becomes a
        // locally administered unicast MAC byte, the other five are kept.
        assert_eq!(key(2).derived_name().to_string(), "76:87:7b:b4:1d:39");
        assert_eq!(key(4).derived_name().to_string(), "9e:4f:b6:8f:3e:1d");
        assert_eq!(
            key(0).fingerprint(),
            "SHA256:Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU"
        );
    }
}
