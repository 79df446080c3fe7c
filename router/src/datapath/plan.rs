//! Desired-state logic as pure functions.
//!
//! Kernel state is read, diffed against what we want here, and the diff is
//! applied by the I/O code. Keeping the diff pure makes idempotence and
//! ordering testable without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::Mac;

/// Linux `IFNAMSIZ` minus the trailing NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// What to do to a container's addresses on attach.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressPlan {
    /// Wanted and missing: add these, in the order asked.
    pub add: Vec<Ipv4Net>,
    /// Wanted and already present: nothing to do.
    pub keep: Vec<Ipv4Net>,
}

/// Splits `wanted` into addresses to add and ones already present.
///
/// Addresses compare as address *and* prefix, like the kernel does for IPv4
/// (`10.32.0.1/12` and `10.32.0.1/24` are different entries). Duplicates in
/// `wanted` collapse to their first occurrence.
pub fn plan_addresses(existing: &[Ipv4Net], wanted: &[Ipv4Net]) -> AddressPlan {
    let have: BTreeSet<Ipv4Net> = existing.iter().copied().collect();
    let mut seen = BTreeSet::new();
    let mut plan = AddressPlan::default();
    for &net in wanted {
        if !seen.insert(net) {
            continue;
        }
        if have.contains(&net) {
            plan.keep.push(net);
        } else {
            plan.add.push(net);
        }
    }
    plan
}

/// What to do to a container's addresses on detach.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DetachPlan {
    /// Present and asked to go: delete these.
    pub remove: Vec<Ipv4Net>,
    /// What the interface keeps; empty means delete the interface.
    pub remaining: Vec<Ipv4Net>,
}

/// Splits `existing` into addresses to remove and the ones that stay.
/// Asking to remove an address the container does not have is a no-op.
pub fn plan_detach(existing: &[Ipv4Net], remove: &[Ipv4Net]) -> DetachPlan {
    let gone: BTreeSet<Ipv4Net> = remove.iter().copied().collect();
    let mut plan = DetachPlan::default();
    for &net in existing {
        if gone.contains(&net) {
            if !plan.remove.contains(&net) {
                plan.remove.push(net);
            }
        } else {
            plan.remaining.push(net);
        }
    }
    plan
}

/// One forwarding-database entry of a device, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    /// The MAC; [`Mac::ZERO`] is VXLAN's default (flood) entry.
    pub mac: Mac,
    /// Remote VTEP address for VXLAN entries.
    pub dst: Option<Ipv4Addr>,
    /// NUD_PERMANENT (static) rather than learned.
    pub permanent: bool,
    /// NTF_SELF: the device's own table (VXLAN), not its bridge master's.
    pub device: bool,
}

/// The VXLAN forwarding table we want on one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FdbDesired {
    /// Known MAC → the VTEP behind which it lives (one destination each).
    pub unicast: BTreeMap<Mac, Ipv4Addr>,
    /// VTEPs that get a copy of broadcast/unknown frames (all-zeros entries).
    pub flood: BTreeSet<Ipv4Addr>,
}

/// One change to a VXLAN FDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FdbOp {
    /// Remove one (mac, dst) remote.
    Delete {
        /// MAC of the entry.
        mac: Mac,
        /// Which remote of that entry.
        dst: Ipv4Addr,
    },
    /// Point `mac` at `dst`, replacing any previous destination.
    Replace {
        /// MAC of the entry.
        mac: Mac,
        /// New remote.
        dst: Ipv4Addr,
    },
    /// Add one more all-zeros flood remote (NLM_F_APPEND).
    Append {
        /// The remote VTEP.
        dst: Ipv4Addr,
    },
}

/// Computes the operations that turn `existing` into `desired`.
///
/// Only device-owned entries with a destination are ours to manage; learned
/// entries and the bridge's own entries are left alone. Deletions come
/// first so that a MAC which had several remotes ends with exactly one, then
/// replacements, then flood appends; each group is sorted, so the same input
/// always yields the same operations.
pub fn plan_fdb(existing: &[FdbEntry], desired: &FdbDesired) -> Vec<FdbOp> {
    let mut have_unicast: BTreeMap<Mac, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let mut have_flood: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for e in existing.iter().filter(|e| e.device) {
        let Some(dst) = e.dst else { continue };
        if e.mac == Mac::ZERO {
            have_flood.insert(dst);
        } else {
            have_unicast.entry(e.mac).or_default().insert(dst);
        }
    }

    let mut deletes = BTreeSet::new();
    let mut replaces = BTreeSet::new();
    for (&mac, dsts) in &have_unicast {
        match desired.unicast.get(&mac) {
            None => deletes.extend(dsts.iter().map(|&dst| FdbOp::Delete { mac, dst })),
            Some(want) => {
                // Keep the wanted remote if present; delete every other one.
                deletes.extend(
                    dsts.iter()
                        .filter(|d| *d != want)
                        .map(|&dst| FdbOp::Delete { mac, dst }),
                );
            }
        }
    }
    for (&mac, &dst) in &desired.unicast {
        if mac == Mac::ZERO {
            continue; // flood entries are expressed through `flood`
        }
        let present = have_unicast.get(&mac).is_some_and(|d| d.contains(&dst));
        if !present {
            replaces.insert(FdbOp::Replace { mac, dst });
        }
    }
    for &dst in have_flood.difference(&desired.flood) {
        deletes.insert(FdbOp::Delete {
            mac: Mac::ZERO,
            dst,
        });
    }
    let appends = desired
        .flood
        .difference(&have_flood)
        .map(|&dst| FdbOp::Append { dst });

    deletes.into_iter().chain(replaces).chain(appends).collect()
}

/// True for names the kernel accepts as interface names.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// Host-side and temporary peer names of a container's veth pair, derived
/// from a per-container number (we use the netns inode, unique among live
/// namespaces), in base 36 so that a u32 fits the 15-byte limit.
pub fn veth_names(host_prefix: &str, peer_prefix: &str, id: u64) -> (String, String) {
    let room = MAX_IFNAME_LEN.saturating_sub(host_prefix.len().max(peer_prefix.len()));
    let suffix = base36(id, room);
    (
        format!("{host_prefix}{suffix}"),
        format!("{peer_prefix}{suffix}"),
    )
}

/// The low `width` base-36 digits of `n` (fewer if `n` is small).
fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(width);
    loop {
        if out.len() == width {
            break;
        }
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, last])
    }

    fn dev(mac: Mac, dst: &str) -> FdbEntry {
        FdbEntry {
            mac,
            dst: Some(ip(dst)),
            permanent: true,
            device: true,
        }
    }

    #[test]
    fn attaching_an_address_already_present_is_a_no_op() {
        let plan = plan_addresses(&[net("10.32.0.1/12")], &[net("10.32.0.1/12")]);
        assert!(plan.add.is_empty());
        assert_eq!(plan.keep, vec![net("10.32.0.1/12")]);
    }

    #[test]
    fn a_second_address_is_added_and_duplicates_collapse() {
        let plan = plan_addresses(
            &[net("10.32.0.1/12")],
            &[
                net("10.32.0.9/12"),
                net("10.32.0.1/12"),
                net("10.32.0.9/12"),
            ],
        );
        assert_eq!(plan.add, vec![net("10.32.0.9/12")]);
        assert_eq!(plan.keep, vec![net("10.32.0.1/12")]);
    }

    #[test]
    fn same_ip_other_prefix_is_a_different_address() {
        let plan = plan_addresses(&[net("10.32.0.1/12")], &[net("10.32.0.1/24")]);
        assert_eq!(plan.add, vec![net("10.32.0.1/24")]);
    }

    #[test]
    fn detach_keeps_the_rest_and_ignores_unknown() {
        let have = [net("10.32.0.1/12"), net("10.32.0.9/12")];
        let plan = plan_detach(&have, &[net("10.32.0.9/12"), net("10.40.0.1/12")]);
        assert_eq!(plan.remove, vec![net("10.32.0.9/12")]);
        assert_eq!(plan.remaining, vec![net("10.32.0.1/12")]);
        let plan = plan_detach(&have, &have);
        assert!(plan.remaining.is_empty());
        assert_eq!(plan.remove.len(), 2);
    }

    #[test]
    fn fdb_from_empty() {
        let mut want = FdbDesired::default();
        want.flood.insert(ip("192.0.2.2"));
        want.flood.insert(ip("192.0.2.3"));
        want.unicast.insert(mac(1), ip("192.0.2.2"));
        assert_eq!(
            plan_fdb(&[], &want),
            vec![
                FdbOp::Replace {
                    mac: mac(1),
                    dst: ip("192.0.2.2")
                },
                FdbOp::Append {
                    dst: ip("192.0.2.2")
                },
                FdbOp::Append {
                    dst: ip("192.0.2.3")
                },
            ]
        );
    }

    #[test]
    fn fdb_already_converged_is_empty() {
        let mut want = FdbDesired::default();
        want.flood.insert(ip("192.0.2.2"));
        want.unicast.insert(mac(1), ip("192.0.2.2"));
        let have = [dev(Mac::ZERO, "192.0.2.2"), dev(mac(1), "192.0.2.2")];
        assert!(plan_fdb(&have, &want).is_empty());
    }

    #[test]
    fn fdb_moves_removes_and_ignores_foreign_entries() {
        let mut want = FdbDesired::default();
        want.flood.insert(ip("192.0.2.3"));
        want.unicast.insert(mac(1), ip("192.0.2.3")); // moved from .2
        let have = [
            dev(Mac::ZERO, "192.0.2.2"),
            dev(mac(1), "192.0.2.2"),
            dev(mac(2), "192.0.2.2"),
            // Learned by the bridge, not ours: must survive.
            FdbEntry {
                mac: mac(7),
                dst: None,
                permanent: false,
                device: false,
            },
        ];
        assert_eq!(
            plan_fdb(&have, &want),
            vec![
                FdbOp::Delete {
                    mac: Mac::ZERO,
                    dst: ip("192.0.2.2")
                },
                FdbOp::Delete {
                    mac: mac(1),
                    dst: ip("192.0.2.2")
                },
                FdbOp::Delete {
                    mac: mac(2),
                    dst: ip("192.0.2.2")
                },
                FdbOp::Replace {
                    mac: mac(1),
                    dst: ip("192.0.2.3")
                },
                FdbOp::Append {
                    dst: ip("192.0.2.3")
                },
            ]
        );
    }

    #[test]
    fn fdb_extra_remotes_of_a_wanted_mac_are_pruned() {
        let mut want = FdbDesired::default();
        want.unicast.insert(mac(1), ip("192.0.2.2"));
        let have = [dev(mac(1), "192.0.2.2"), dev(mac(1), "192.0.2.9")];
        assert_eq!(
            plan_fdb(&have, &want),
            vec![FdbOp::Delete {
                mac: mac(1),
                dst: ip("192.0.2.9")
            }]
        );
    }

    /// Applying a plan to a model of the table reaches the desired state,
    /// for many random starting tables; prints the seed when it fails.
    #[test]
    fn fdb_plan_converges_randomized() {
        let seed: u64 = 0x5eed_f00d;
        let mut rng = seed;
        let mut next = move || {
            // xorshift64*: deterministic, no OS RNG.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for round in 0..500 {
            let mut table: BTreeSet<(Mac, Ipv4Addr)> = BTreeSet::new();
            for _ in 0..(next() % 8) {
                let m = if next() % 3 == 0 {
                    Mac::ZERO
                } else {
                    mac((next() % 4) as u8)
                };
                table.insert((m, Ipv4Addr::new(192, 0, 2, (next() % 4) as u8)));
            }
            let mut want = FdbDesired::default();
            for _ in 0..(next() % 4) {
                want.flood
                    .insert(Ipv4Addr::new(192, 0, 2, (next() % 4) as u8));
            }
            for _ in 0..(next() % 4) {
                want.unicast.insert(
                    mac(1 + (next() % 3) as u8),
                    Ipv4Addr::new(192, 0, 2, (next() % 4) as u8),
                );
            }
            let existing: Vec<FdbEntry> = table
                .iter()
                .map(|&(m, d)| FdbEntry {
                    mac: m,
                    dst: Some(d),
                    permanent: true,
                    device: true,
                })
                .collect();
            for op in plan_fdb(&existing, &want) {
                match op {
                    FdbOp::Delete { mac, dst } => {
                        assert!(
                            table.remove(&(mac, dst)),
                            "seed {seed:#x} round {round}: delete of absent {op:?}"
                        );
                    }
                    FdbOp::Replace { mac, dst } => {
                        // The kernel replaces the entry's first remote; the plan
                        // has already deleted every other one.
                        table.retain(|&(m, _)| m != mac);
                        table.insert((mac, dst));
                    }
                    FdbOp::Append { dst } => {
                        assert!(
                            table.insert((Mac::ZERO, dst)),
                            "seed {seed:#x} round {round}: duplicate append"
                        );
                    }
                }
            }
            let mut expect: BTreeSet<(Mac, Ipv4Addr)> =
                want.flood.iter().map(|&d| (Mac::ZERO, d)).collect();
            expect.extend(want.unicast.iter().map(|(&m, &d)| (m, d)));
            assert_eq!(table, expect, "seed {seed:#x} round {round}");
            // And a second plan on the result is empty (idempotence).
            let now: Vec<FdbEntry> = table
                .iter()
                .map(|&(m, d)| FdbEntry {
                    mac: m,
                    dst: Some(d),
                    permanent: true,
                    device: true,
                })
                .collect();
            assert!(
                plan_fdb(&now, &want).is_empty(),
                "seed {seed:#x} round {round}"
            );
        }
    }

    #[test]
    fn veth_names_fit_ifnamsiz() {
        let (h, p) = veth_names("vethwepl", "vethwepg", u64::from(u32::MAX));
        assert_eq!(h.len(), MAX_IFNAME_LEN);
        assert!(h.starts_with("vethwepl") && p.starts_with("vethwepg"));
        assert_eq!(h[8..], p[8..]);
        assert!(valid_ifname(&h) && valid_ifname(&p));
        let (h, _) = veth_names("vethwepl", "vethwepg", 4026532001);
        assert_eq!(h, format!("vethwepl{}", base36(4026532001, 7)));
        let (a, _) = veth_names("vethwepl", "vethwepg", 4026532001);
        let (b, _) = veth_names("vethwepl", "vethwepg", 4026532002);
        assert_ne!(a, b);
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0, 7), "0");
        assert_eq!(base36(35, 7), "z");
        assert_eq!(base36(36, 7), "10");
        assert_eq!(base36(36 * 36 * 36, 2), "00");
    }

    #[test]
    fn ifnames() {
        assert!(valid_ifname("ethwe"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("sixteen-chars-xx"));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a b"));
    }
}
