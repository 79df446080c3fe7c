//! Scenarios for the DNS table: two or three peers exchanging payloads by hand.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;

fn peer(i: u64) -> PeerName {
    PeerName::new(i).expect("peer name")
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, 0, last)
}

/// A table that knows peers 1..=3.
fn table(me: u64) -> Dns {
    let mut d = Dns::new(peer(me));
    d.handle_peers((1..=3).filter(|&p| p != me).map(peer).collect());
    d
}

/// Moves every pending delta from `from` into `to` as a broadcast.
fn deliver(from: &mut Dns, to: &mut Dns, now: Instant) {
    while let Some(bytes) = from.poll_transmit() {
        to.handle_broadcast(from.me, &bytes, now)
            .expect("delta decodes");
    }
}

#[test]
fn add_is_visible_remotely_and_case_insensitive() {
    let now = Instant::now();
    let (mut a, mut b) = (table(1), table(2));
    assert_eq!(a.add("c1", ip(1), "Web.Weave.Local", now), Ok(true));
    assert_eq!(a.add("c1", ip(1), "web.weave.local.", now), Ok(false));
    deliver(&mut a, &mut b, now);
    assert_eq!(b.lookup("web.weave.local."), [ip(1)]);
    assert_eq!(b.reverse(ip(1)), Some("web.weave.local."));
    assert!(b.exists("web.weave.local."));
    assert!(!b.exists("db.weave.local."));
}

#[test]
fn removal_tombstones_and_revival_raises_the_version() {
    let now = Instant::now();
    let (mut a, mut b) = (table(1), table(2));
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    deliver(&mut a, &mut b, now);
    assert_eq!(a.remove(Some("c1"), None, None, now), 1);
    assert_eq!(a.remove(Some("c1"), None, None, now), 0);
    deliver(&mut a, &mut b, now);
    assert!(b.lookup("web.weave.local.").is_empty());
    assert_eq!(b.entries()[0].version, 2);
    assert!(b.entries()[0].tombstone);
    a.add("c1", ip(1), "web.weave.local.", now).expect("revive");
    deliver(&mut a, &mut b, now);
    assert_eq!(b.lookup("web.weave.local."), [ip(1)]);
    assert_eq!(b.entries()[0].version, 3);
}

#[test]
fn remove_narrows_by_address_and_name() {
    let now = Instant::now();
    let mut a = table(1);
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    a.add("c1", ip(2), "web.weave.local.", now).expect("add");
    a.add("c1", ip(1), "www.weave.local.", now).expect("add");
    assert_eq!(a.remove(Some("c1"), Some(ip(2)), None, now), 1);
    assert_eq!(a.remove(Some("c1"), None, Some("WWW.weave.local"), now), 1);
    assert_eq!(a.lookup("web.weave.local."), [ip(1)]);
    assert_eq!(a.remove(Some("c2"), None, None, now), 0);
}

#[test]
fn gossip_relays_only_news() {
    let now = Instant::now();
    let (mut a, mut b) = (table(1), table(2));
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    let state = a.full_state();
    let relay = b.handle_gossip(peer(1), &state, now).expect("decodes");
    assert!(relay.is_some(), "new entries are relayed");
    assert_eq!(b.handle_gossip(peer(1), &state, now), Ok(None));
}

#[test]
fn unknown_origins_are_dropped() {
    let now = Instant::now();
    let mut a = Dns::new(peer(1));
    let mut b = Dns::new(peer(2)); // knows nobody yet
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    b.handle_gossip(peer(1), &a.full_state(), now)
        .expect("decodes");
    assert!(b.lookup("web.weave.local.").is_empty());
    assert_eq!(b.counters().unknown_origin, 1);
    b.handle_peers([peer(1)].into());
    b.handle_gossip(peer(1), &a.full_state(), now)
        .expect("decodes");
    assert_eq!(b.lookup("web.weave.local."), [ip(1)]);
}

#[test]
fn a_gone_peer_takes_its_entries_along() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = (table(1), table(2), table(3));
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    c.add("c3", ip(3), "web.weave.local.", now).expect("add");
    deliver(&mut a, &mut b, now);
    deliver(&mut c, &mut b, now);
    assert_eq!(b.lookup("web.weave.local.").len(), 2);
    assert_eq!(b.handle_peers([peer(3)].into()), 1);
    assert_eq!(b.lookup("web.weave.local."), [ip(3)]);
    assert_eq!(b.forget_peer(peer(3)), 1);
    assert!(b.lookup("web.weave.local.").is_empty());
    // Our own entries never go.
    b.add("c2", ip(2), "web.weave.local.", now).expect("add");
    b.handle_peers(BTreeSet::new());
    assert_eq!(b.forget_peer(peer(2)), 0);
    assert_eq!(b.lookup("web.weave.local."), [ip(2)]);
}

#[test]
fn a_restarted_peer_kills_what_it_no_longer_has() {
    let now = Instant::now();
    let (mut a, mut b) = (table(1), table(2));
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    a.add("c9", ip(9), "old.weave.local.", now).expect("add");
    deliver(&mut a, &mut b, now);
    // Peer 1 restarts with only c1 running (re-registered at start).
    let mut a = table(1);
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    while a.poll_transmit().is_some() {}
    // The neighbour's full state reaches the restarted peer.
    a.handle_gossip(peer(2), &b.full_state(), now)
        .expect("decodes");
    assert!(a.counters().reasserted >= 1);
    deliver(&mut a, &mut b, now);
    assert!(
        b.lookup("old.weave.local.").is_empty(),
        "stale record stays dead"
    );
    assert_eq!(b.lookup("web.weave.local."), [ip(1)]);
    // And both agree from here on.
    b.handle_gossip(peer(1), &a.full_state(), now)
        .expect("decodes");
    a.handle_gossip(peer(2), &b.full_state(), now)
        .expect("decodes");
    assert_eq!(a.entries(), b.entries());
    assert!(a.poll_transmit().is_none());
}

#[test]
fn a_forged_change_to_our_entry_is_overridden() {
    let now = Instant::now();
    let (mut a, mut b) = (table(1), table(2));
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    while a.poll_transmit().is_some() {}
    let forged = DnsMsg {
        entries: vec![WireEntry {
            name: "web.weave.local.".into(),
            origin: peer(1),
            container: "c1".into(),
            addr: ip(1),
            version: 7,
            tombstone: true,
        }],
    }
    .encode();
    a.handle_broadcast(peer(2), &forged, now).expect("decodes");
    assert_eq!(a.lookup("web.weave.local."), [ip(1)]);
    assert_eq!(a.entries()[0].version, 8);
    deliver(&mut a, &mut b, now);
    assert_eq!(b.lookup("web.weave.local."), [ip(1)]);
}

#[test]
fn tombstones_are_purged_after_the_ttl() {
    let t0 = Instant::now();
    let mut a = table(1);
    a.add("c1", ip(1), "web.weave.local.", t0).expect("add");
    assert_eq!(a.poll_timeout(), None);
    a.remove(Some("c1"), None, None, t0);
    assert_eq!(a.poll_timeout(), Some(t0 + TOMBSTONE_TTL));
    a.handle_timeout(t0 + TOMBSTONE_TTL - Duration::from_secs(1));
    assert_eq!(a.entries().len(), 1);
    a.handle_timeout(t0 + TOMBSTONE_TTL);
    assert!(a.entries().is_empty());
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn retain_containers_tombstones_the_dead_only() {
    let now = Instant::now();
    let mut a = table(1);
    a.add("c1", ip(1), "web.weave.local.", now).expect("add");
    a.add("c2", ip(2), "db.weave.local.", now).expect("add");
    a.add(EXTERN_CONTAINER, ip(3), "ext.weave.local.", now)
        .expect("add");
    assert_eq!(a.retain_containers(&["c1".to_string()].into(), now), 1);
    assert!(a.lookup("db.weave.local.").is_empty());
    assert_eq!(a.lookup("ext.weave.local."), [ip(3)]);
}

#[test]
fn invalid_registrations_say_why() {
    let now = Instant::now();
    let mut a = table(1);
    assert!(matches!(
        a.add("c1", ip(1), "bad name.weave.local", now),
        Err(DnsError::Name(_))
    ));
    assert!(matches!(
        a.add("", ip(1), "web", now),
        Err(DnsError::Container(_))
    ));
}

#[test]
fn per_origin_bound_holds() {
    let now = Instant::now();
    let mut a = table(1);
    for i in 0..MAX_ENTRIES_PER_ORIGIN {
        a.add(&format!("c{i}"), ip(1), "web.weave.local.", now)
            .expect("within the bound");
    }
    assert_eq!(
        a.add("one-more", ip(1), "web.weave.local.", now),
        Err(DnsError::Full(MAX_ENTRIES_PER_ORIGIN))
    );
    let mut b = table(2);
    b.handle_gossip(peer(1), &a.full_state(), now)
        .expect("decodes");
    // A forged oversize set from one origin is cut at the bound.
    let mut forged = DnsMsg::decode(&a.full_state()).expect("decodes");
    forged.entries[0].container = "extra".into();
    b.handle_gossip(peer(1), &forged.encode(), now)
        .expect("decodes");
    assert_eq!(b.counters().over_limit, 1);
    assert_eq!(b.entries().len(), MAX_ENTRIES_PER_ORIGIN);
}

#[test]
fn a_full_table_fits_one_gossip_message() {
    let worst = WireEntry {
        name: format!(
            "{}.",
            [
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ]
            .join(".")
        ),
        origin: PeerName::new((1 << 48) - 1).expect("name"),
        container: "x".repeat(wire::MAX_CONTAINER_LEN),
        addr: ip(1),
        version: u64::MAX,
        tombstone: true,
    };
    let one = DnsMsg {
        entries: vec![worst],
    }
    .encode()
    .len();
    assert!(one * MAX_TABLE_ENTRIES < wire::MAX_MESSAGE_BYTES);
}
