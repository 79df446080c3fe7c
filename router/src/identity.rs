//! The router's persistent identity: a Noise static key pair kept in
//! `$MESHNET_DATA_DIR/identity.key`, and the peer name derived from it.
//!
//! Deriving the name from the key (rather than from machine-id, as weave did)
//! means cloned machines without cloned state never collide (weave #2427,
//! #2606), and a remote can check that a peer's claimed name belongs to the
//! key it proved it holds.

use std::path::Path;

use meshnet_mesh::{PeerName, PublicKey};

use crate::persist::{self, PersistError};

/// File name of the static key inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// A Noise static key pair (X25519).
pub struct Identity {
    pub private: Vec<u8>,
    pub public: PublicKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("private", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

impl Identity {
    /// Loads the key pair from `data_dir`, creating and persisting a new one
    /// on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, PersistError> {
        let path = data_dir.join(KEY_FILE);
        if let Some(bytes) = persist::read_optional(&path)? {
            // A key written by an older version may be world-readable.
            use std::os::unix::fs::PermissionsExt as _;
            let private = std::fs::Permissions::from_mode(persist::PRIVATE_MODE);
            std::fs::set_permissions(&path, private).map_err(|source| PersistError::Write {
                path: path.clone(),
                source,
            })?;
            let private = bytes
                .get(..32)
                .filter(|_| bytes.len() == 32)
                .ok_or_else(|| PersistError::Corrupt {
                    path: path.clone(),
                    reason: format!("expected 32 bytes, found {}", bytes.len()),
                })?;
            let public =
                meshnet_mesh::handshake::public_from_private(private).map_err(|reason| {
                    PersistError::Corrupt {
                        path: path.clone(),
                        reason,
                    }
                })?;
            return Ok(Identity {
                private: private.to_vec(),
                public,
            });
        }
        let (private, public) =
            meshnet_mesh::handshake::generate_keypair(rand::random()).map_err(|reason| {
                PersistError::Corrupt {
                    path: path.clone(),
                    reason,
                }
            })?;
        persist::write_private(&path, &private)?;
        Ok(Identity { private, public })
    }

    /// The peer name this key stands for.
    pub fn peer_name(&self) -> PeerName {
        self.public.derived_name()
    }
}
