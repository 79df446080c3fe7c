//! Text renderings of a [`Snapshot`] (`status` and its sub-forms), in
//! weave's formats so a weave user's eyes and scripts still
//! work. The JSON report is [`crate::report`].

use std::fmt::Write as _;

use meshnet_mesh::{ConnState, LocalConnStatus, PeerName};

use serde_json::{Value, json};

use crate::driver::Snapshot;

/// The overlay serving `peer`, and why it is not fastdp when it is not.
pub(crate) fn overlay_of(snap: &Snapshot, peer: Option<PeerName>) -> (String, Option<String>) {
    match peer.and_then(|p| snap.paths.get(&p)) {
        Some((path, reason)) => (path.to_string(), reason.map(|r| r.to_string())),
        None => ("none".to_string(), None),
    }
}

/// The MTU in use on a link: the sleeve's discovered path MTU when the peer
/// is on the sleeve and probing finished, else the overlay MTU.
pub(crate) fn link_mtu(snap: &Snapshot, peer: PeerName, overlay: &str) -> Option<u32> {
    let probed = snap.sleeve.get(&peer).and_then(|s| s.mtu).map(u32::from);
    match overlay {
        "sleeve" => probed.or(snap.mtu),
        _ => snap.mtu,
    }
}

pub(crate) fn name_nick(name: PeerName, nick: &str) -> String {
    format!("{name}({nick})")
}

/// `meshnet status`.
pub fn summary(snap: &Snapshot) -> String {
    let m = &snap.mesh;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: &str| {
        let _ = writeln!(out, "{label:>15}: {value}");
    };
    out.push('\n');
    line(
        &mut out,
        "Version",
        &format!(
            "meshnet {} ({})",
            env!("CARGO_PKG_VERSION"),
            crate::report::VersionCheck::disabled().summary()
        ),
    );
    out.push('\n');
    line(&mut out, "Service", "router");
    line(
        &mut out,
        "Protocol",
        &protocol_range(meshnet_mesh::PROTOCOL_MIN, meshnet_mesh::PROTOCOL_MAX),
    );
    line(&mut out, "Name", &name_nick(m.name, &m.nickname));
    line(&mut out, "Encryption", enabled(snap.encryption));
    line(&mut out, "PeerDiscovery", enabled(m.discovery));
    line(&mut out, "Targets", &m.targets.len().to_string());
    line(&mut out, "Connections", &connection_counts(&m.connections));
    line(&mut out, "Peers", &peer_counts(snap));
    let trusted = if snap.trusted_subnets.is_empty() {
        "none".to_string()
    } else {
        snap.trusted_subnets.join(", ")
    };
    line(&mut out, "TrustedSubnets", &trusted);
    if let Some(ipam) = &snap.ipam {
        out.push('\n');
        line(&mut out, "Service", "ipam");
        line(&mut out, "Status", &ipam.status.status);
        line(&mut out, "Range", &ipam.status.range);
        line(&mut out, "DefaultSubnet", &ipam.status.default_subnet);
    }
    if let Some(dns) = &snap.dns {
        out.push('\n');
        line(&mut out, "Service", "dns");
        line(&mut out, "Domain", &dns.domain);
        let address = match &dns.address {
            Ok(a) => a.to_string(),
            Err(why) => why.clone(),
        };
        line(&mut out, "Address", &address);
        let upstream: Vec<String> = dns.upstream.iter().map(|a| a.ip().to_string()).collect();
        let upstream = if upstream.is_empty() {
            "none".to_string()
        } else {
            upstream.join(", ")
        };
        line(&mut out, "Upstream", &upstream);
        line(&mut out, "TTL", &dns.ttl.to_string());
        let live = dns.entries.iter().filter(|e| !e.tombstone).count();
        line(&mut out, "Entries", &live.to_string());
    }
    if let Some(addrs) = &snap.services.proxy {
        out.push('\n');
        line(&mut out, "Service", "proxy");
        line(&mut out, "Address", &addrs.join(", "));
    }
    if let Some(driver) = &snap.services.plugin {
        out.push('\n');
        line(&mut out, "Service", "plugin (legacy)");
        line(&mut out, "DriverName", driver);
    }
    out.push('\n');
    out
}

/// `meshnet status dns`: live entries in table order, weave's columns
/// (name without the domain, address, container id cut to 12, origin).
pub fn dns(snap: &Snapshot) -> String {
    let Some(dns) = &snap.dns else {
        return String::new();
    };
    let suffix = format!(".{}", dns.domain);
    dns.entries
        .iter()
        .filter(|e| !e.tombstone)
        .map(|e| {
            let name = e.name.strip_suffix(&suffix).unwrap_or(&e.name);
            format!(
                "{name:<12} {:<15} {:>12.12} {}\n",
                e.addr.to_string(),
                e.container,
                e.origin
            )
        })
        .collect()
}

/// The entries as weave's `GET /name` shows them.
pub fn dns_entries_json(dns: &crate::dns::DnsSnapshot) -> Value {
    dns.entries
        .iter()
        .map(|e| {
            json!({
                "ContainerID": e.container,
                "Origin": e.origin.as_u64(),
                "Addr": e.addr.to_string(),
                "Hostname": e.name,
                "Version": e.version,
                "Tombstone": u8::from(e.tombstone),
            })
        })
        .collect()
}

/// `meshnet status ipam`: one line per ring owner; before the ring exists
/// (where weave prints nothing), the state it is in, e.g.
/// `awaiting consensus (quorum: 2, known: 1)`.
pub fn ipam(snap: &Snapshot) -> String {
    match &snap.ipam {
        Some(i) if i.lines.is_empty() => format!("{}\n", i.status.status),
        Some(i) => i.lines.iter().map(|l| format!("{l}\n")).collect(),
        None => "IP address allocation is disabled (launch with --ipalloc-range CIDR)\n".into(),
    }
}

fn protocol_range(min: u8, max: u8) -> String {
    if min == max {
        format!("meshnet {min}")
    } else {
        format!("meshnet {min}..{max}")
    }
}

fn enabled(b: bool) -> &'static str {
    if b { "enabled" } else { "disabled" }
}

fn connection_counts(conns: &[LocalConnStatus]) -> String {
    let order = [
        ConnState::Established,
        ConnState::Pending,
        ConnState::Retrying,
        ConnState::Failed,
        ConnState::Connecting,
        ConnState::Waiting,
    ];
    let parts: Vec<String> = order
        .iter()
        .filter_map(|s| {
            let n = conns.iter().filter(|c| c.state == *s).count();
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect();
    if parts.is_empty() {
        conns.len().to_string()
    } else {
        format!("{} ({})", conns.len(), parts.join(", "))
    }
}

fn peer_counts(snap: &Snapshot) -> String {
    let peers = &snap.mesh.peers;
    let (mut est, mut pending) = (0, 0);
    for p in peers {
        for c in &p.connections {
            if c.established {
                est += 1;
            } else {
                pending += 1;
            }
        }
    }
    match (est, pending) {
        // weave leaves the parenthesis out when there is nothing to count.
        (0, 0) => peers.len().to_string(),
        (e, 0) => format!("{} (with {e} established connections)", peers.len()),
        (e, p) => format!(
            "{} (with {e} established, {p} pending connections)",
            peers.len()
        ),
    }
}

/// `meshnet status connections`: one line per connection or target.
pub fn connections(snap: &Snapshot) -> String {
    let mut out = String::new();
    for c in &snap.mesh.connections {
        let _ = writeln!(out, "{}", connection_line(snap, c));
    }
    out
}

fn connection_line(snap: &Snapshot, c: &LocalConnStatus) -> String {
    let dir = if c.outbound { "->" } else { "<-" };
    let info = match (c.state, &c.peer) {
        (ConnState::Established | ConnState::Pending, Some((name, nick))) => {
            let mut info = String::new();
            if snap.encryption {
                let word = if snap.conn_encrypted(c) {
                    "encrypted"
                } else {
                    "unencrypted"
                };
                let _ = write!(info, "{word:<11} ");
            }
            let (overlay, reason) = overlay_of(snap, Some(*name));
            let _ = write!(info, "{overlay:<6} {}", name_nick(*name, nick));
            if let Some(mtu) = link_mtu(snap, *name, &overlay) {
                let _ = write!(info, " mtu={mtu}");
            }
            let mut why: Vec<String> = reason.into_iter().collect();
            if overlay == "sleeve" && snap.sleeve.get(name).is_some_and(|s| !s.healthy) {
                why.push("sleeve: no heartbeat yet".into());
            }
            if !why.is_empty() {
                let _ = write!(info, " ({})", why.join("; "));
            }
            info
        }
        (ConnState::Failed, _) => {
            let err = c.error.as_deref().unwrap_or("failed");
            match c.retry_in {
                Some(d) => format!("{err}, retry: {}", retry_time(snap, d)),
                None => format!("{err}, not retried"),
            }
        }
        (ConnState::Retrying, _) => c.error.clone().unwrap_or_default(),
        _ => String::new(),
    };
    format!("{dir} {:<21} {:<11} {info}", c.address, c.state.to_string())
        .trim_end()
        .to_string()
}

fn retry_time(snap: &Snapshot, after: std::time::Duration) -> String {
    humantime::format_rfc3339_seconds(snap.taken_at + after).to_string()
}

/// `meshnet identity`: our key as one authorized-keys line, commented with
/// our name and nickname.
pub fn identity_line(snap: &Snapshot) -> String {
    let m = &snap.mesh;
    let line = snap
        .public_key
        .authorized_line(&name_nick(m.name, &m.nickname));
    format!("{line}\n")
}

/// `meshnet status peers` (`-v`: with each peer's key fingerprint).
pub fn peers(snap: &Snapshot, verbose: bool) -> String {
    let mut out = String::new();
    for p in &snap.mesh.peers {
        match (&p.key, verbose) {
            (Some(key), true) => {
                let _ = writeln!(out, "{} key {key}", name_nick(p.name, &p.nickname));
            }
            (None, true) => {
                let _ = writeln!(out, "{} key unknown", name_nick(p.name, &p.nickname));
            }
            (_, false) => {
                let _ = writeln!(out, "{}", name_nick(p.name, &p.nickname));
            }
        }
        for c in &p.connections {
            let dir = if c.outbound { "->" } else { "<-" };
            let state = if c.established {
                "established"
            } else {
                "pending"
            };
            let _ = writeln!(
                out,
                "   {dir} {:<21} {:<37} {state}",
                c.address,
                name_nick(c.name, &c.nickname)
            );
        }
    }
    out
}

/// `meshnet status targets`.
pub fn targets(snap: &Snapshot) -> String {
    snap.mesh.targets.iter().map(|t| format!("{t}\n")).collect()
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
