//! `--authorized-keys`: reading the allow-list file (the format and the checks are
//! `meshnet_mesh::keys` and `meshnet_mesh::admission`). The file is read at start-up and
//! again on SIGHUP or `meshnet reload`; a bad file keeps the list in force and says which
//! line is wrong.

use std::path::Path;

use meshnet_mesh::AuthorizedKeys;

/// Largest authorized-keys file read, in bytes (100,000 lines of about 100 bytes).
pub const MAX_FILE_LEN: u64 = 10 * 1024 * 1024;

/// Reads and parses an authorized-keys file. The error names the file and, for a bad line,
/// its number.
pub fn load(path: &Path) -> Result<AuthorizedKeys, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read --authorized-keys {shown}: {e}"))?
        .len();
    if len > MAX_FILE_LEN {
        return Err(format!(
            "--authorized-keys {shown} is {len} bytes, more than {MAX_FILE_LEN}: trim it"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --authorized-keys {shown}: {e}"))?;
    AuthorizedKeys::parse(&text).map_err(|e| format!("--authorized-keys {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let key = meshnet_mesh::PublicKey([1; 32]);
        std::fs::write(
            &path,
            format!("# ok\n{}\nbogus\n", key.authorized_line("a")),
        )
        .unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains("keys: line 3:"), "{e}");
        std::fs::write(&path, key.authorized_line("a")).unwrap();
        assert!(load(&path).unwrap().contains(&key));
        let e = load(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot read --authorized-keys"), "{e}");
    }
}
