//! Routes over the topology: breadth-first search from us with every layer
//! sorted by name, so all peers compute the same answer; per-source broadcast trees; and the
//! weighted random neighbour subset used for gossip.

use std::collections::BTreeMap;

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;

use crate::ids::PeerName;
use crate::topology::Topology;

/// Destination → first hop.
pub(crate) type Unicast = BTreeMap<PeerName, PeerName>;

/// Neighbours of `peer` that BFS may follow. With `symmetric`, only established connections
/// that the other end also reports as established (data routes); otherwise every reported
/// connection (gossip routes).
fn neighbours(
    topo: &Topology,
    peer: PeerName,
    symmetric: bool,
) -> impl Iterator<Item = PeerName> + '_ {
    topo.peer(peer)
        .into_iter()
        .flat_map(|p| p.conns.iter())
        .filter(move |(remote, c)| {
            !symmetric
                || (c.established
                    && topo
                        .peer(**remote)
                        .and_then(|r| r.conns.get(&peer))
                        .is_some_and(|back| back.established))
        })
        .map(|(remote, _)| *remote)
}

/// BFS from `start`; stops when `stop_at` is about to be expanded. Returns whether it was
/// reached and, for every peer reached, its first hop from `start` (`None` for `start`).
fn bfs(
    topo: &Topology,
    start: PeerName,
    stop_at: Option<PeerName>,
    symmetric: bool,
) -> (bool, BTreeMap<PeerName, Option<PeerName>>) {
    topo.count_search();
    let mut routes: BTreeMap<PeerName, Option<PeerName>> = BTreeMap::from([(start, None)]);
    let mut layer = vec![start];
    while !layer.is_empty() {
        layer.sort_unstable();
        let mut next = Vec::new();
        for cur in layer {
            if Some(cur) == stop_at {
                return (true, routes);
            }
            let hop = routes.get(&cur).copied().flatten();
            for remote in neighbours(topo, cur, symmetric) {
                if routes.contains_key(&remote) {
                    continue;
                }
                routes.insert(remote, Some(hop.unwrap_or(remote)));
                next.push(remote);
            }
        }
        layer = next;
    }
    (false, routes)
}

/// Unicast routes from `ours`.
pub(crate) fn unicast(topo: &Topology, ours: PeerName, symmetric: bool) -> Unicast {
    bfs(topo, ours, None, symmetric)
        .1
        .into_iter()
        .filter_map(|(d, hop)| hop.map(|h| (d, h)))
        .collect()
}

/// Our next hops for broadcasts originated by `source`: run the BFS from `source` until it
/// reaches us; our neighbours it has not reached by then are ours to serve.
pub(crate) fn broadcast(
    topo: &Topology,
    ours: PeerName,
    source: PeerName,
    symmetric: bool,
) -> Vec<PeerName> {
    if topo.peer(source).is_none() {
        return Vec::new();
    }
    let (found, reached) = bfs(topo, source, Some(ours), symmetric);
    if !found {
        return Vec::new();
    }
    neighbours(topo, ours, symmetric)
        .filter(|n| !reached.contains_key(n))
        .collect()
}

/// Picks `min(2·log2(#peers), #hops)` distinct first hops, weighted by how many destinations
/// route through each (weave's `randomNeighbours`), never `except`.
pub(crate) fn random_neighbours(
    routes: &Unicast,
    except: Option<PeerName>,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<PeerName> {
    let peers = routes.len() + 1;
    let count = (2.0 * (peers as f64).log2()).floor() as usize;
    let mut weights: BTreeMap<PeerName, u64> = BTreeMap::new();
    for hop in routes.values() {
        if Some(*hop) != except {
            *weights.entry(*hop).or_default() += 1;
        }
    }
    let mut chosen = Vec::new();
    while chosen.len() < count && !weights.is_empty() {
        let total: u64 = weights.values().sum();
        let mut pick = rng.random_range(0..total);
        let mut hit = None;
        for (hop, w) in &weights {
            if pick < *w {
                hit = Some(*hop);
                break;
            }
            pick -= w;
        }
        let Some(hop) = hit else { break };
        weights.remove(&hop);
        chosen.push(hop);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PeerUid, ShortId};
    use crate::wire::{ConnSummary, PeerRecord};
    use rand::SeedableRng;

    fn name(v: u64) -> PeerName {
        PeerName::new(v).unwrap()
    }

    /// Builds a topology seen from peer 1 with the given directed connections.
    fn topo(edges: &[(u64, u64, bool)]) -> Topology {
        let mut t = Topology::new(
            name(1),
            crate::keys::PublicKey([1; 32]),
            "p1".into(),
            PeerUid(1),
            ShortId::default(),
            1,
        );
        let mut by_peer: BTreeMap<u64, Vec<(PeerName, ConnSummary)>> = BTreeMap::new();
        for (a, b, est) in edges {
            let c = ConnSummary {
                remote_addr: String::new(),
                outbound: true,
                established: *est,
            };
            if *a == 1 {
                t.set_local_conn(name(*b), Some(c));
            } else {
                by_peer.entry(*a).or_default().push((name(*b), c));
            }
        }
        for (p, conns) in by_peer {
            t.apply_full(&PeerRecord {
                name: name(p),
                key: crate::keys::PublicKey([p as u8; 32]),
                nickname: String::new(),
                uid: PeerUid(p),
                version: 1,
                short_id: ShortId::default(),
                listen_port: 1,
                conns,
            });
        }
        t
    }

    fn both(a: u64, b: u64) -> [(u64, u64, bool); 2] {
        [(a, b, true), (b, a, true)]
    }

    #[test]
    fn unicast_bfs_sorted_layers_and_symmetry() {
        // 1-2, 1-3, 2-4, 3-4, 4-5; 1-6 only reported by 1 (asymmetric).
        let mut e: Vec<_> = [both(1, 2), both(1, 3), both(2, 4), both(3, 4), both(4, 5)].concat();
        e.push((1, 6, true));
        let t = topo(&e);
        let u = unicast(&t, name(1), true);
        assert_eq!(u.get(&name(4)), Some(&name(2)), "layer sorted: 2 before 3");
        assert_eq!(u.get(&name(5)), Some(&name(2)));
        assert_eq!(u.get(&name(6)), None, "asymmetric link unused for data");
        let all = unicast(&t, name(1), false);
        assert_eq!(all.get(&name(6)), Some(&name(6)));
    }

    #[test]
    fn broadcast_tree_each_peer_once() {
        // Square 1-2-4-3-1: a broadcast from 2 reaches 1 directly; 1 must relay to 3 only if
        // 3 was not reached before 1 in 2's BFS (it was not: 3 is two hops from 2, like 1).
        let e: Vec<_> = [both(1, 2), both(2, 4), both(4, 3), both(3, 1)].concat();
        let t = topo(&e);
        assert_eq!(broadcast(&t, name(1), name(2), true), vec![name(3)]);
        // From 1 itself, we serve all our neighbours.
        assert_eq!(
            broadcast(&t, name(1), name(1), true),
            vec![name(2), name(3)]
        );
        // From 4: 2 and 3 are reached at the same layer as us, so we relay to nobody.
        assert!(broadcast(&t, name(1), name(4), true).is_empty());
    }

    #[test]
    fn random_neighbours_bounded_and_excluding() {
        let routes: Unicast = (2..=40).map(|d| (name(d), name(2 + d % 5))).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let got = random_neighbours(&routes, Some(name(2)), &mut rng);
        assert_eq!(
            got.len(),
            4,
            "5 hops minus the excluded one, under 2·log2(40)"
        );
        assert!(!got.contains(&name(2)));
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), got.len());
        assert!(random_neighbours(&Unicast::new(), None, &mut rng).is_empty());
    }
}
