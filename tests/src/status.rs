//! Parsers for `meshnet status connections` and `meshnet status peers`, which
//! follow weave's column layout. Each parser checks
//! the exact layout (direction, padded columns, allowed states) and returns a
//! description of what is wrong, so a scenario can assert "every line is
//! well-formed" and then assert on the fields.

use std::net::SocketAddr;

/// Connection states `status connections` may show.
pub const STATES: [&str; 6] = [
    "established",
    "pending",
    "connecting",
    "retrying",
    "failed",
    "waiting",
];
/// Overlay names: `none` until the overlay has chosen a forwarder.
pub const OVERLAYS: [&str; 3] = ["fastdp", "sleeve", "none"];

/// Width of the padded address column (`%-21v`).
const ADDR_WIDTH: usize = 21;
/// Width of the padded state and encryption columns (`%-11v`).
const STATE_WIDTH: usize = 11;
/// Width of the padded overlay column (`%-6v`).
const OVERLAY_WIDTH: usize = 6;
/// Width of the padded `name(nick)` column in `status peers` (`%-37v`).
const PEER_WIDTH: usize = 37;

/// One line of `meshnet status connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLine {
    pub outbound: bool,
    pub addr: SocketAddr,
    pub state: String,
    /// `encrypted`/`unencrypted`: present exactly when a password is configured.
    pub encryption: Option<String>,
    /// For established/pending lines: overlay, peer name and nickname.
    pub overlay: Option<String>,
    pub peer_name: Option<String>,
    pub nickname: Option<String>,
    /// For established/pending: the `key=value` attributes; otherwise the
    /// info text (the error for failed/retrying).
    pub info: String,
    /// Why this established/pending connection is not on fastdp, if the
    /// line says (`(fastdp: encryption required)`).
    pub fallback_reason: Option<String>,
}

/// Whether `s` is a MAC-style peer name (`8a:3e:3e:3e:3e:3e`).
pub fn is_peer_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| {
            p.len() == 2
                && p.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
}

/// Splits `name(nick)` into its parts, checking the name.
pub fn parse_name_nick(s: &str) -> Result<(String, String), String> {
    let (name, nick) = s
        .strip_suffix(')')
        .and_then(|s| s.split_once('('))
        .ok_or_else(|| format!("{s:?} is not name(nick)"))?;
    if !is_peer_name(name) {
        return Err(format!("{name:?} is not a peer name"));
    }
    Ok((name.to_owned(), nick.to_owned()))
}

/// Takes a column padded to `width` plus the separating space; returns it trimmed and the rest.
fn column(s: &str, width: usize) -> Result<(&str, &str), String> {
    // The last column of a line may end early (`connecting` with no info).
    let (col, rest) = s.split_at_checked(width).unwrap_or((s, ""));
    let value = col.trim_end();
    if value.is_empty() || value.contains(' ') {
        return Err(format!("column {col:?} is not one padded word"));
    }
    let rest = match rest.strip_prefix(' ') {
        Some(rest) => rest,
        None if rest.is_empty() => rest,
        None => return Err(format!("no space after column {col:?}")),
    };
    Ok((value, rest))
}

/// Parses one `status connections` line:
/// `<dir> <addr %-21> <state %-11> [<encryption %-11> ]<overlay %-6> <name(nick)> <attrs>`
/// for established/pending, `<dir> <addr %-21> <state %-11> <info>` otherwise.
pub fn parse_connection_line(line: &str) -> Result<ConnectionLine, String> {
    let fail = |why: String| format!("{why} in status connections line {line:?}");
    let (dir, rest) = line
        .split_at_checked(3)
        .ok_or_else(|| fail("too short".into()))?;
    let outbound = match dir {
        "-> " => true,
        "<- " => false,
        _ => return Err(fail(format!("direction {dir:?} is not \"-> \" or \"<- \""))),
    };
    let (addr, rest) = column(rest, ADDR_WIDTH).map_err(&fail)?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| fail(format!("{addr:?} is not ip:port")))?;
    let (state, rest) = column(rest, STATE_WIDTH).map_err(&fail)?;
    if !STATES.contains(&state) {
        return Err(fail(format!("unknown state {state:?}")));
    }
    let mut parsed = ConnectionLine {
        outbound,
        addr,
        state: state.to_owned(),
        encryption: None,
        overlay: None,
        peer_name: None,
        nickname: None,
        info: String::new(),
        fallback_reason: None,
    };
    if state != "established" && state != "pending" {
        parsed.info = rest.trim_end().to_owned();
        let needs_error = state == "failed" || state == "retrying";
        if needs_error && parsed.info.is_empty() {
            return Err(fail(format!("a {state} target must say why")));
        }
        if state == "failed" && !parsed.info.contains(", retry: ") {
            return Err(fail("failed target without \", retry: <time>\"".into()));
        }
        return Ok(parsed);
    }
    let mut rest = rest;
    if rest.starts_with("encrypted ") || rest.starts_with("unencrypted ") {
        let (enc, r) = column(rest, STATE_WIDTH).map_err(&fail)?;
        parsed.encryption = Some(enc.to_owned());
        rest = r;
    }
    let (overlay, rest) = column(rest, OVERLAY_WIDTH).map_err(&fail)?;
    if !OVERLAYS.contains(&overlay) {
        return Err(fail(format!("unknown overlay {overlay:?}")));
    }
    let (name_nick, attrs) = rest.split_once(' ').unwrap_or((rest, ""));
    let (name, nick) = parse_name_nick(name_nick).map_err(&fail)?;
    // When fastdp is not (yet) used, the reason follows the attrs
    // in parentheses, e.g. `mtu=1376 (fastdp: waiting for heartbeat)`.
    let (attrs, reason) = match attrs.trim_end().split_once(" (") {
        Some((attrs, reason)) => {
            let reason = reason
                .strip_suffix(')')
                .filter(|r| !r.is_empty())
                .ok_or_else(|| fail(format!("reason {reason:?} is not \"(...)\"")))?;
            (attrs, Some(reason.to_owned()))
        }
        None if attrs.starts_with('(') => {
            return Err(fail("a reason needs the attributes before it".into()));
        }
        None => (attrs.trim_end(), None),
    };
    if let Some(bad) = attrs.split_whitespace().find(|a| !a.contains('=')) {
        return Err(fail(format!("attribute {bad:?} is not key=value")));
    }
    parsed.overlay = Some(overlay.to_owned());
    parsed.peer_name = Some(name);
    parsed.nickname = Some(nick);
    parsed.info = attrs.to_owned();
    parsed.fallback_reason = reason;
    Ok(parsed)
}

/// Parses every non-empty line of `status connections` output.
pub fn parse_connections(text: &str) -> Result<Vec<ConnectionLine>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_connection_line)
        .collect()
}

/// One peer block of `meshnet status peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerBlock {
    pub name: String,
    pub nickname: String,
    pub connections: Vec<PeerConnection>,
}

/// `   -> 192.168.10.11:6783    8a:3e:3e:3e:3e:3e(server0)            established`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnection {
    pub outbound: bool,
    pub addr: String,
    pub name: String,
    pub nickname: String,
    pub established: bool,
}

/// Parses `status peers`: a `name(nick)` header line per peer, then one
/// indented line per connection of that peer.
pub fn parse_peers(text: &str) -> Result<Vec<PeerBlock>, String> {
    let mut blocks: Vec<PeerBlock> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fail = |why: String| format!("{why} in status peers line {line:?}");
        if let Some(conn) = line.strip_prefix("   ") {
            let block = blocks
                .last_mut()
                .ok_or_else(|| fail("connection before any peer".into()))?;
            let (dir, rest) = conn
                .split_at_checked(3)
                .ok_or_else(|| fail("too short".into()))?;
            let outbound = match dir {
                "-> " => true,
                "<- " => false,
                _ => return Err(fail(format!("direction {dir:?}"))),
            };
            let (addr, rest) = column(rest, ADDR_WIDTH).map_err(&fail)?;
            let (name_nick, rest) = column(rest, PEER_WIDTH).map_err(&fail)?;
            let (name, nickname) = parse_name_nick(name_nick).map_err(&fail)?;
            let established = match rest.trim_end() {
                "established" => true,
                "pending" => false,
                other => return Err(fail(format!("state {other:?}"))),
            };
            block.connections.push(PeerConnection {
                outbound,
                addr: addr.to_owned(),
                name,
                nickname,
                established,
            });
        } else {
            let (name, nickname) = parse_name_nick(line.trim_end()).map_err(&fail)?;
            blocks.push(PeerBlock {
                name,
                nickname,
                connections: Vec::new(),
            });
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_lines_in_weave_layout_parse() {
        let l = parse_connection_line(
            "-> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e:5f(h2) mtu=1376",
        )
        .unwrap();
        assert!(l.outbound);
        assert_eq!(l.addr.to_string(), "192.0.2.2:6783");
        assert_eq!(l.state, "established");
        assert_eq!(l.encryption, None);
        assert_eq!(l.overlay.as_deref(), Some("sleeve"));
        assert_eq!(l.peer_name.as_deref(), Some("5a:1b:2c:3d:4e:5f"));
        assert_eq!(l.nickname.as_deref(), Some("h2"));
        assert_eq!(l.info, "mtu=1376");
        assert_eq!(l.fallback_reason, None);

        let l = parse_connection_line(
            "<- 192.0.2.3:52892       established sleeve 0e:25:0f:4e:90:e0(h3) mtu=1376 (fastdp: waiting for heartbeat)",
        )
        .unwrap();
        assert_eq!(l.info, "mtu=1376");
        assert_eq!(
            l.fallback_reason.as_deref(),
            Some("fastdp: waiting for heartbeat")
        );

        let l = parse_connection_line(
            "<- 192.168.10.13:49619   established encrypted   fastdp e2:7e:49:7e:0f:1b(server1) encrypted=truemtu=1414",
        )
        .unwrap();
        assert!(!l.outbound);
        assert_eq!(l.encryption.as_deref(), Some("encrypted"));
        assert_eq!(l.overlay.as_deref(), Some("fastdp"));
        // weave's trailing space on a line without attrs is accepted
        let l = parse_connection_line(
            "-> 192.0.2.2:6783        pending     none   5a:1b:2c:3d:4e:5f(h2) ",
        )
        .unwrap();
        assert_eq!(l.info, "");
    }

    #[test]
    fn target_lines_carry_their_error() {
        let l = parse_connection_line(
            "-> 192.0.2.9:6783        failed      connect: no route to host, retry: 2026-11-27 20:00:02 UTC",
        )
        .unwrap();
        assert_eq!(l.state, "failed");
        assert!(l.info.starts_with("connect: no route to host"));
        assert!(
            parse_connection_line("-> 192.0.2.9:6783        retrying    handshake: bad password")
                .is_ok()
        );
        assert!(parse_connection_line("-> 192.168.48.16:6783    connecting").is_ok());
        assert!(parse_connection_line("-> 192.168.48.16:6783    connecting ").is_ok());
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in [
            "",
            "=> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e:5f(h2) mtu=1376",
            "-> 192.0.2.2:6783 established sleeve 5a:1b:2c:3d:4e:5f(h2) mtu=1376",
            "-> 192.0.2.2:6783        establishd  sleeve 5a:1b:2c:3d:4e:5f(h2) mtu=1376",
            "-> 192.0.2.2:6783        established sleev  5a:1b:2c:3d:4e:5f(h2) mtu=1376",
            "-> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e(h2) mtu=1376",
            "-> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e:5f mtu=1376",
            "-> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e:5f(h2) mtu",
            "-> 192.0.2.2             established sleeve 5a:1b:2c:3d:4e:5f(h2) mtu=1376",
            "-> 192.0.2.9:6783        failed      ",
            "-> 192.0.2.9:6783        failed      no route to host",
            "-> 192.0.2.9:6783        retrying",
            "-> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e:5f(h2) mtu=1376 (fastdp: x",
            "-> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e:5f(h2) mtu=1376 ()",
            "-> 192.0.2.2:6783        established sleeve 5a:1b:2c:3d:4e:5f(h2) (fastdp: x)",
        ] {
            assert!(parse_connection_line(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn peers_blocks_parse() {
        let text = "e2:7e:49:7e:0f:1b(server1)\n   -> 192.168.10.11:6783    8a:3e:3e:3e:3e:3e(server0)            established\n   <- 192.168.10.13:49619   5a:1b:2c:3d:4e:5f(server2)            pending\n8a:3e:3e:3e:3e:3e(server0)\n";
        let blocks = parse_peers(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].nickname, "server1");
        assert_eq!(blocks[0].connections.len(), 2);
        assert!(blocks[0].connections[0].established && blocks[0].connections[0].outbound);
        assert!(!blocks[0].connections[1].established && !blocks[0].connections[1].outbound);
        assert_eq!(blocks[0].connections[1].name, "5a:1b:2c:3d:4e:5f");
        assert!(blocks[1].connections.is_empty());
        assert!(parse_peers("   -> 1.2.3.4:5 8a:3e:3e:3e:3e:3e(x) established").is_err());
        assert!(parse_peers("server1\n").is_err());
    }

    #[test]
    fn peer_names_are_lowercase_mac_style() {
        assert!(is_peer_name("8a:3e:3e:3e:3e:3e"));
        for bad in [
            "8A:3E:3E:3E:3E:3E",
            "8a:3e:3e:3e:3e",
            "8a:3e:3e:3e:3e:3e:00",
            "8a-3e-3e-3e-3e-3e",
            "",
        ] {
            assert!(!is_peer_name(bad), "{bad}");
        }
    }
}
