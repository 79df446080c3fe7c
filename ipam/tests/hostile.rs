//! A member with the password that forges or inflates IPAM gossip: each test is one attack
//! on a single peer, driven through its public inputs, and what must not happen.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use meshnet_ipam::ring::{Entry, MAX_RING_TOKENS, Ring};
use meshnet_ipam::wire::{GossipState, MAX_MESSAGE_BYTES, Message, Role, SpaceKind};
use meshnet_ipam::{AddrRange, Config, Event, Ident, Init, Ipam, PeerName};

fn name(i: u64) -> PeerName {
    PeerName::new(0x0a00_0000_0000 + i + 1).unwrap()
}

/// Us (peer 0) on a ring seeded among peers 0, 1 and 2, all known.
fn us(now: Instant) -> Ipam {
    let seeds: BTreeSet<PeerName> = (0..3).map(name).collect();
    let cfg = Config::new(name(0), "10.32.0.0/12".parse().unwrap(), Init::Seed(seeds));
    let mut ipam = Ipam::new(cfg, 7);
    let known: BTreeMap<PeerName, String> = (0..3).map(|i| (name(i), format!("h{i}"))).collect();
    ipam.handle_peers_changed(known, now);
    // An allocation makes the seeded ring exist.
    ipam.allocate(&Ident::new("c1"), None, false, now).unwrap();
    drain(&mut ipam);
    assert!(ipam.ring().is_some());
    ipam
}

fn drain(ipam: &mut Ipam) -> Vec<Event> {
    while ipam.poll_transmit().is_some() {}
    std::iter::from_fn(|| ipam.poll_event()).collect()
}

fn gossip(ring: Ring) -> Vec<u8> {
    Message::Gossip(GossipState {
        role: Role::Elector,
        wants_ring: false,
        paxos: None,
        ring: Some(ring),
    })
    .encode()
}

/// `ring` with every address of `range` (owned by someone else) its own token.
fn split_finely(ring: &Ring, range: AddrRange) -> Ring {
    let mut entries: BTreeMap<u32, Entry> = BTreeMap::new();
    for (r, e) in ring.iter() {
        entries.insert(r.start, *e);
        if r.overlaps(&range) {
            let from = r.start.max(range.start);
            let to = r.end.min(range.end);
            for a in from..to {
                entries.insert(
                    a,
                    Entry {
                        version: e.version,
                        ..*e
                    },
                );
            }
        }
    }
    Ring::from_parts(ring.range(), ring.lineage(), entries).unwrap()
}

fn problems(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerProblem { problem, .. } => Some(problem.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_rings_split_finely_never_push_our_state_over_the_message_limit() {
    let now = Instant::now();
    let mut ipam = us(now);
    let ring = ipam.ring().unwrap().clone();
    let theirs: Vec<AddrRange> = ring
        .iter()
        .filter(|(_, e)| e.peer != name(0))
        .map(|(r, _)| r)
        .collect();
    // Each message splits one other peer's space into single-address tokens; each is a
    // valid-looking message on its own.
    for r in theirs.iter().take(2) {
        let fine = split_finely(&ring, *r);
        let bytes = gossip(fine);
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        let _ = ipam.handle_gossip(name(1), &bytes, now);
        drain(&mut ipam);
    }
    assert!(ipam.ring().unwrap().len() <= MAX_RING_TOKENS);
    assert!(
        ipam.full_state().len() <= MAX_MESSAGE_BYTES,
        "our state is {} bytes",
        ipam.full_state().len()
    );
}

#[test]
fn a_merge_over_the_token_cap_is_refused_with_a_reason() {
    let now = Instant::now();
    let mut ipam = us(now);
    let ring = ipam.ring().unwrap().clone();
    let (other, _) = ring.iter().find(|(_, e)| e.peer != name(0)).unwrap();
    let within = AddrRange::new(other.start, other.start + (MAX_RING_TOKENS as u32 - 100));
    let _ = ipam.handle_gossip(name(1), &gossip(split_finely(&ring, within)), now);
    let events = drain(&mut ipam);
    assert!(problems(&events).is_empty(), "{events:?}");
    let before = ipam.ring().unwrap().clone();
    let more = AddrRange::new(within.end, within.end + 1000);
    let _ = ipam.handle_gossip(name(2), &gossip(split_finely(&ring, more)), now);
    let events = drain(&mut ipam);
    assert!(
        problems(&events).iter().any(|p| p.contains("tokens")),
        "{events:?}"
    );
    assert_eq!(ipam.ring().unwrap(), &before, "nothing merged");
}

#[test]
fn a_merge_taking_our_range_is_refused() {
    let now = Instant::now();
    let mut ipam = us(now);
    let ring = ipam.ring().unwrap().clone();
    let mine = ring.owned_by(name(0));
    // Peer 1 claims our first token with a newer version.
    let mut entries: BTreeMap<u32, Entry> = ring.iter().map(|(r, e)| (r.start, *e)).collect();
    let e = entries.get_mut(&mine[0].start).unwrap();
    e.peer = name(1);
    e.version += 1;
    let stolen = Ring::from_parts(ring.range(), ring.lineage(), entries).unwrap();
    let _ = ipam.handle_gossip(name(1), &gossip(stolen), now);
    let events = drain(&mut ipam);
    assert_eq!(ipam.ring().unwrap().owned_by(name(0)), mine);
    assert!(
        problems(&events).iter().any(|p| p.contains("we own")),
        "{events:?}"
    );
    // A new token inside our range, given to peer 2.
    let mut entries: BTreeMap<u32, Entry> = ring.iter().map(|(r, e)| (r.start, *e)).collect();
    let inside = mine[0].start + mine[0].size() / 2;
    entries.insert(
        inside,
        Entry {
            peer: name(2),
            version: 1,
            free: 0,
        },
    );
    let split = Ring::from_parts(ring.range(), ring.lineage(), entries).unwrap();
    let _ = ipam.handle_gossip(name(2), &gossip(split), now);
    drain(&mut ipam);
    assert_eq!(ipam.ring().unwrap().owned_by(name(0)), mine);
}

#[test]
fn a_space_request_from_a_phantom_peer_gives_nothing() {
    let now = Instant::now();
    let mut ipam = us(now);
    let mine = ipam.ring().unwrap().owned_by(name(0));
    let phantom = name(99);
    for kind in [SpaceKind::Donate, SpaceKind::Claim, SpaceKind::Reclaim] {
        let range = match kind {
            SpaceKind::Donate => mine[0],
            _ => AddrRange::new(mine[0].start + 10, mine[0].start + 20),
        };
        let req = Message::SpaceRequest { id: 1, range, kind };
        let _ = ipam.handle_unicast(phantom, &req.encode(), now);
        let events = drain(&mut ipam);
        assert!(
            problems(&events)
                .iter()
                .any(|p| p.contains("not a known peer")),
            "{kind:?}: {events:?}"
        );
        assert_eq!(ipam.ring().unwrap().owned_by(name(0)), mine, "{kind:?}");
        assert!(ipam.ring().unwrap().owned_by(phantom).is_empty());
    }
}
