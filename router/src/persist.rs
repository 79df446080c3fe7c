//! Crash-safe files in `$MESHNET_DATA_DIR`.
//!
//! Every write goes to a temporary file that is fsynced, renamed over the
//! target and followed by an fsync of the directory (atomic-write-file does
//! the dance), so a `kill -9` at any instant leaves either the old or the new
//! content, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors reading or writing persisted state.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(
        "cannot write {path}: {source} (check that the directory is writable, or set MESHNET_DATA_DIR)"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid meshnet state ({reason}); move it aside to start afresh")]
    Corrupt { path: PathBuf, reason: String },
}

/// Atomically replaces `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = atomic_write_file::AtomicWriteFile::options()
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.commit().map_err(err)
}

/// Writes `bytes` to `path` atomically, readable by its owner only (0600),
/// whatever mode an earlier file had: for secrets such as the identity key.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    use atomic_write_file::unix::OpenOptionsExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = atomic_write_file::AtomicWriteFile::options()
        .preserve_mode(false)
        .mode(PRIVATE_MODE)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.commit().map_err(err)
}

/// Mode of files written by [`write_private`].
pub const PRIVATE_MODE: u32 = 0o600;

/// Reads `path`, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PersistError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PersistError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| PersistError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Reads a JSON file written by [`write_json`], or `None` when absent.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, PersistError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PersistError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.json");
        assert_eq!(read_json::<Vec<String>>(&path).unwrap(), None);
        write_json(&path, &vec!["a".to_string()]).unwrap();
        write_json(&path, &vec!["b".to_string(), "c".to_string()]).unwrap();
        assert_eq!(
            read_json::<Vec<String>>(&path).unwrap(),
            Some(vec!["b".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn corrupt_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = read_json::<Vec<String>>(&path).unwrap_err().to_string();
        assert!(err.contains("targets.json"), "{err}");
        assert!(err.contains("move it aside"), "{err}");
    }
}
