//! Fuzz target: the authorized-keys file parser; every key it accepts must print as a line
//! that parses back to the same key and comment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnet_mesh::keys::parse_line;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = meshnet_mesh::AuthorizedKeys::parse(text);
    if let Ok(Some((key, comment))) = parse_line(text, 1) {
        let line = key.authorized_line(&comment);
        let again = parse_line(&line, 1).expect("printed line must parse");
        assert_eq!(again, Some((key, comment)));
    }
});
