//! Status for `meshnet status`, `status ipam`, `report` and `/metrics`,
//! with weave's strings and JSON field names.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::addr::PeerName;
use crate::allocator::Ipam;

/// Paxos progress (`null` once the ring exists).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaxosStatus {
    /// We vote.
    pub elector: bool,
    /// Electors heard from.
    pub known_nodes: usize,
    /// Needed.
    pub quorum: u32,
}

/// One ring token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryStatus {
    /// First address.
    pub token: String,
    /// Addresses up to the next token.
    pub size: u32,
    /// Owner.
    pub peer: String,
    /// Owner's nickname.
    pub nickname: String,
    /// Owner reachable.
    pub is_known_peer: bool,
    /// Entry version.
    pub version: u32,
}

/// A pending claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClaimStatus {
    /// Claimer.
    pub ident: String,
    /// Address.
    #[serde(rename = "CIDR")]
    pub cidr: String,
}

/// A conflicting address (meshnet addition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConflictStatus {
    /// Address.
    pub address: String,
    /// Our holder.
    pub ident: String,
    /// The other peer that has it live.
    pub peer: String,
}

/// The `IPAM` object of `report`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    /// Consensus progress.
    pub paxos: Option<PaxosStatus>,
    /// Universe CIDR.
    pub range: String,
    /// Its size.
    #[serde(rename = "RangeNumIPs")]
    pub range_num_ips: u64,
    /// Allocated here.
    #[serde(rename = "ActiveIPs")]
    pub active_ips: usize,
    /// Default subnet.
    pub default_subnet: String,
    /// The ring.
    pub entries: Vec<EntryStatus>,
    /// Waiting claims.
    pub pending_claims: Vec<ClaimStatus>,
    /// Waiting allocations, `"<ident> <cidr>"`.
    pub pending_allocates: Vec<String>,
    /// Addresses live here and on another peer.
    pub conflicts: Vec<ConflictStatus>,
    /// The `Status:` line.
    pub status: String,
}

/// Numbers for `/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// `weave_ips{state="local-used"}`.
    pub local_used: u64,
    /// `weave_max_ips`.
    pub max_ips: u64,
    /// `weave_ipam_unreachable_count`: peers owning space that are not known.
    pub unreachable_count: u64,
    /// `weave_ipam_unreachable_percentage`.
    pub unreachable_percentage: f64,
    /// `weave_ipam_pending_allocates`.
    pub pending_allocates: u64,
    /// `weave_ipam_pending_claims`.
    pub pending_claims: u64,
    /// meshnet addition: conflicting addresses.
    pub conflicts: u64,
}

/// The body `rmpeer` prints, as weave.
pub fn rmpeer_message(n: u64, peer: &str) -> String {
    format!("{n} IPs taken over from {peer}\n")
}

impl Ipam {
    fn peer_label(&self, p: PeerName) -> String {
        format!(
            "{}({})",
            p,
            self.nicknames.get(&p).map(String::as_str).unwrap_or("")
        )
    }

    /// Our nickname (shown in status lines).
    pub fn set_nickname(&mut self, nick: &str) {
        self.known.insert(self.cfg.name, nick.to_string());
        self.nicknames.insert(self.cfg.name, nick.to_string());
    }

    /// The `Status:` value, exactly weave's strings.
    pub fn status_string(&self) -> String {
        match &self.ring {
            Some(ring) => {
                let any_known = ring
                    .iter()
                    .any(|(r, e)| r.size() > 0 && self.known.contains_key(&e.peer));
                if !any_known {
                    "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead"
                        .into()
                } else if !self.pending_allocs.is_empty() || !self.pending_claims.is_empty() {
                    "waiting for IP(s) to become available".into()
                } else {
                    "ready".into()
                }
            }
            None if self.initialising && self.paxos.is_elector() => format!(
                "awaiting consensus (quorum: {}, known: {})",
                self.paxos.quorum(),
                self.paxos.known()
            ),
            None if self.initialising => "priming".into(),
            None => "idle".into(),
        }
    }

    /// `status ipam` lines (no trailing newline), own peer first; empty
    /// while there is no ring.
    pub fn status_lines(&self) -> Vec<String> {
        let Some(ring) = &self.ring else {
            return Vec::new();
        };
        let total = u64::from(ring.range().size()).max(1) as f64;
        let sizes = ring.sizes();
        let me = self.cfg.name;
        let mut out = Vec::new();
        let mine = sizes.get(&me).copied().unwrap_or(0);
        out.push(format!(
            "{:<37} {:>8} IPs ({:04.1}% of total) ({} active)",
            self.peer_label(me),
            mine,
            mine as f64 * 100.0 / total,
            self.active()
        ));
        for (p, n) in &sizes {
            if *p == me {
                continue;
            }
            let info = if self.known.contains_key(p) {
                ""
            } else {
                "- unreachable!"
            };
            out.push(format!(
                "{:<37} {:>8} IPs ({:04.1}% of total) {}",
                self.peer_label(*p),
                n,
                *n as f64 * 100.0 / total,
                info
            ));
        }
        out
    }

    /// The `report` object.
    pub fn status(&self) -> Status {
        let paxos = self.ring.is_none().then(|| PaxosStatus {
            elector: self.paxos.is_elector(),
            known_nodes: self.paxos.known(),
            quorum: self.paxos.quorum(),
        });
        let entries = self
            .ring
            .iter()
            .flat_map(|r| r.iter())
            .map(|(r, e)| EntryStatus {
                token: Ipv4Addr::from(r.start).to_string(),
                size: r.size(),
                peer: e.peer.to_string(),
                nickname: self.nicknames.get(&e.peer).cloned().unwrap_or_default(),
                is_known_peer: self.known.contains_key(&e.peer),
                version: e.version,
            })
            .collect();
        Status {
            paxos,
            range: self.cfg.range.to_string(),
            range_num_ips: self.cfg.range.size(),
            active_ips: self.active(),
            default_subnet: self.cfg.default_subnet.to_string(),
            entries,
            pending_claims: self
                .pending_claims
                .values()
                .map(|c| ClaimStatus {
                    ident: c.ident.to_string(),
                    cidr: c.addr.to_string(),
                })
                .collect(),
            pending_allocates: self
                .pending_allocs
                .values()
                .map(|p| format!("{} {}", p.ident, p.subnet))
                .collect(),
            conflicts: self
                .conflicts()
                .into_iter()
                .map(|c| ConflictStatus {
                    address: c.addr.to_string(),
                    ident: c.ident.to_string(),
                    peer: c.peer.to_string(),
                })
                .collect(),
            status: self.status_string(),
        }
    }

    /// Metric values.
    pub fn metrics(&self) -> Metrics {
        let (mut count, mut ips) = (0u64, 0u64);
        if let Some(ring) = &self.ring {
            for (p, n) in ring.sizes() {
                if !self.known.contains_key(&p) {
                    count += 1;
                    ips += n;
                }
            }
        }
        let max = self.cfg.range.size();
        Metrics {
            local_used: self.active() as u64,
            max_ips: max,
            unreachable_count: count,
            unreachable_percentage: ips as f64 * 100.0 / max.max(1) as f64,
            pending_allocates: self.pending_allocs.len() as u64,
            pending_claims: self.pending_claims.len() as u64,
            conflicts: self.conflicts().len() as u64,
        }
    }
}
