//! The node's output order: persist first and acknowledged, then transmits
//! and events, then replies; a failed write answers with an error, keeps the
//! state to write again, and holds transmits back.

use std::collections::BTreeSet;
use std::time::Instant;

use super::*;
use crate::types::{Config, Init};

fn peer(i: u64) -> PeerName {
    PeerName::new(0x0a00_0000_0000 + i).expect("fits in 48 bits")
}

fn node(init: Init) -> Node {
    let range: Cidr = "10.0.0.0/24".parse().expect("range");
    Node::new(Ipam::new(Config::new(peer(1), range, init), 7))
}

/// A peer that owns the whole range alone.
fn alone() -> Node {
    node(Init::Seed(BTreeSet::from([peer(1)])))
}

/// Every output until the node stops, acknowledging each persist.
fn drain_ok(n: &mut Node) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = n.poll_output() {
        if matches!(o, Output::Persist(_)) {
            n.persist_done();
        }
        out.push(o);
    }
    out
}

fn allocate(ident: &str) -> Request {
    Request::Allocate {
        ident: Ident::new(ident),
        subnet: None,
        check_alive: true,
    }
}

fn replies(out: &[Output]) -> Vec<(Ticket, Answer)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply(t, a) => Some((*t, a.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reply_waits_until_its_persist_is_acknowledged() {
    let mut n = alone();
    drain_ok(&mut n);
    let now = Instant::now();
    n.handle_request(Ticket(1), allocate("c1"), now);
    let Some(Output::Persist(state)) = n.poll_output() else {
        panic!("the allocation's state comes out first");
    };
    assert!(state.owned.contains_key(&Ident::new("c1")), "{state:?}");
    assert_eq!(
        n.poll_output(),
        None,
        "nothing before the write is reported"
    );
    assert_eq!(n.poll_output(), None);
    n.persist_done();
    let out = drain_ok(&mut n);
    let r = replies(&out);
    assert_eq!(r.len(), 1, "{out:?}");
    assert_eq!(r[0].0, Ticket(1));
    let Answer::Allocated(c) = r[0].1 else {
        panic!("{r:?}");
    };
    assert_eq!(n.ipam().lookup(&Ident::new("c1"), None), vec![c]);
}

#[test]
fn a_failed_persist_answers_with_the_error_and_loses_nothing() {
    let mut n = alone();
    drain_ok(&mut n);
    let now = Instant::now();
    n.handle_request(Ticket(1), allocate("c1"), now);
    assert!(matches!(n.poll_output(), Some(Output::Persist(_))));
    n.persist_failed("disk full", now);
    assert_eq!(
        n.poll_output(),
        Some(Output::Reply(
            Ticket(1),
            Answer::PersistFailed("disk full".into())
        ))
    );
    // Not offered again at once (a pump would spin on a dead disk) ...
    assert_eq!(n.poll_output(), None);
    assert_eq!(n.poll_timeout(), Some(now + PERSIST_RETRY));
    // ... but on the retry timer, with the allocation still in it.
    n.handle_timeout(now + PERSIST_RETRY);
    let Some(Output::Persist(state)) = n.poll_output() else {
        panic!("the state is offered again after PERSIST_RETRY");
    };
    assert!(state.owned.contains_key(&Ident::new("c1")));
    n.persist_done();
    assert!(
        replies(&drain_ok(&mut n)).is_empty(),
        "the failed answer was the only one"
    );
    // Asking again is safe: the same address, acknowledged this time.
    let held = n.ipam().lookup(&Ident::new("c1"), None);
    n.handle_request(Ticket(2), allocate("c1"), now);
    let r = replies(&drain_ok(&mut n));
    assert_eq!(r, vec![(Ticket(2), Answer::Allocated(held[0]))]);
}

#[test]
fn an_input_after_a_failed_persist_offers_the_state_again() {
    let mut n = alone();
    drain_ok(&mut n);
    let now = Instant::now();
    n.handle_request(Ticket(1), allocate("c1"), now);
    assert!(matches!(n.poll_output(), Some(Output::Persist(_))));
    n.persist_failed("EIO", now);
    assert!(matches!(n.poll_output(), Some(Output::Reply(..))));
    n.handle_request(Ticket(2), allocate("c2"), now);
    let Some(Output::Persist(state)) = n.poll_output() else {
        panic!("a new input retries the write");
    };
    assert!(state.owned.contains_key(&Ident::new("c1")));
    assert!(state.owned.contains_key(&Ident::new("c2")));
}

#[test]
fn transmits_wait_for_the_persist_and_a_failed_one_holds_them_back() {
    // A consensus peer's first allocation starts Paxos: its promise is
    // state, written before the proposal leaves.
    let mut n = node(Init::Consensus { peers: 2 });
    drain_ok(&mut n);
    let now = Instant::now();
    n.handle_peers_changed([(peer(1), "a".into()), (peer(2), "b".into())].into(), now);
    drain_ok(&mut n);
    n.handle_request(Ticket(1), allocate("c1"), now);
    assert!(
        matches!(n.poll_output(), Some(Output::Persist(_))),
        "the proposal's state comes out first"
    );
    n.persist_failed("EIO", now);
    assert_eq!(n.poll_output(), None, "no transmit after a failed write");
    n.handle_timeout(now + PERSIST_RETRY);
    assert!(matches!(n.poll_output(), Some(Output::Persist(_))));
    assert_eq!(n.poll_output(), None);
    n.persist_done();
    let out = drain_ok(&mut n);
    assert!(
        out.iter().any(|o| matches!(o, Output::Transmit(_))),
        "{out:?}"
    );
    assert!(
        replies(&out).is_empty(),
        "the allocation waits for the ring"
    );
}

#[test]
fn a_caller_waiting_for_the_ring_is_told_why_after_ring_wait() {
    let mut n = node(Init::Consensus { peers: 3 });
    drain_ok(&mut n);
    let now = Instant::now();
    n.handle_request(Ticket(9), allocate("c1"), now);
    drain_ok(&mut n);
    assert!(n.poll_timeout().is_some_and(|t| t <= now + RING_WAIT));
    n.handle_timeout(now + RING_WAIT);
    let r = replies(&drain_ok(&mut n));
    assert_eq!(r.len(), 1, "{r:?}");
    let (Ticket(9), Answer::NoRing(why)) = &r[0] else {
        panic!("{r:?}");
    };
    assert!(why.contains("quorum 2"), "{why}");
}

#[test]
fn prime_is_answered_when_the_ring_is_ready() {
    let mut n = alone();
    n.handle_request(Ticket(3), Request::Prime, Instant::now());
    let r = replies(&drain_ok(&mut n));
    assert_eq!(r, vec![(Ticket(3), Answer::RingReady)]);
}

#[test]
fn refusals_are_answered_after_the_persist_too() {
    let mut n = alone();
    drain_ok(&mut n);
    let now = Instant::now();
    n.handle_request(
        Ticket(4),
        Request::Free {
            ident: Ident::new("nobody"),
            addr: None,
        },
        now,
    );
    let r = replies(&drain_ok(&mut n));
    assert!(matches!(r[..], [(Ticket(4), Answer::Refused(_))]), "{r:?}");
}
