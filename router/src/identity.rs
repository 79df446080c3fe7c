//! The router's persistent identity: a Noise static key pair kept in
//! `$MESHNET_DATA_DIR/identity.key`, and the peer name derived from it.
//!
//! Deriving the name from the key (rather than from machine-id, as weave did)
//! means cloned machines without cloned state never collide (weave #2427,
//! #2606), and a remote can check that a peer's claimed name belongs to the
//! key it proved it holds.

use std::path::Path;

use meshnet_mesh::PeerName;

use crate::persist::{self, PersistError};

/// File name of the static key inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// A Noise static key pair (X25519).
pub struct Identity {
    pub private: Vec<u8>,
    pub public: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("private", &"<redacted>")
            .field("public", &hex(&self.public))
            .finish()
    }
}

impl Identity {
    /// Loads the key pair from `data_dir`, creating and persisting a new one
    /// on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, PersistError> {
        let path = data_dir.join(KEY_FILE);
        if let Some(bytes) = persist::read_optional(&path)? {
            let private = bytes
                .get(..32)
                .filter(|_| bytes.len() == 32)
                .ok_or_else(|| PersistError::Corrupt {
                    path: path.clone(),
                    reason: format!("expected 32 bytes, found {}", bytes.len()),
                })?;
            let public = public_key(private).map_err(|reason| PersistError::Corrupt {
                path: path.clone(),
                reason,
            })?;
            return Ok(Identity {
                private: private.to_vec(),
                public,
            });
        }
        let keypair = crate::control::noise::builder(None)
            .generate_keypair()
            .map_err(|e| PersistError::Corrupt {
                path: path.clone(),
                reason: format!("cannot generate a key pair: {e}"),
            })?;
        persist::write_atomic(&path, &keypair.private)?;
        Ok(Identity {
            private: keypair.private,
            public: keypair.public,
        })
    }

    /// The peer name this key stands for.
    pub fn peer_name(&self) -> PeerName {
        derive_name(&self.public)
    }
}

/// The peer name belonging to a static public key: the first six bytes of
/// its SHA-256, made a locally administered unicast MAC.
pub fn derive_name(public: &[u8]) -> PeerName {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    let mut six = [0u8; 6];
    six.copy_from_slice(&digest.as_ref()[..6]);
    PeerName::from_digest(six)
}

fn public_key(private: &[u8]) -> Result<Vec<u8>, String> {
    if private.len() != 32 {
        return Err(format!(
            "private key must be 32 bytes, found {}",
            private.len()
        ));
    }
    crate::control::noise::public_from_private(private)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
