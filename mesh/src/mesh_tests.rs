//! Unit tests that drive one [`Mesh`] by hand: the inputs a router gives and the outputs it
//! must act on.

use std::time::{Duration, Instant};

use crate::ids::{ConnId, PeerName, PeerUid, ShortId};
use crate::keys::PublicKey;
use crate::mesh::{
    ACCEPT_BURST, Action, CloseReason, Config, ConnError, ConnInfo, Event, HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT, Mesh, NoChannels, UPDATE_COALESCE,
};
use crate::wire::{GossipMsg, Hello, Message, TopologyMsg};

fn name(v: u64) -> PeerName {
    PeerName::new(v).unwrap()
}

fn mesh(now: Instant) -> Mesh {
    Mesh::new(
        Config {
            name: name(1),
            key: key(1),
            nickname: "one".into(),
            uid: PeerUid(11),
            short_id: ShortId::new(1).unwrap(),
            port: 6783,
            conn_limit: 2,
            discovery: true,
            seed: 1,
        },
        now,
    )
}

fn hello(n: u64, uid: u64, half: u64) -> Hello {
    Hello {
        name: name(n),
        name_derived: false,
        nickname: format!("p{n}"),
        uid: PeerUid(uid),
        conn_half: half,
        short_id: ShortId::new(n as u16).unwrap(),
        listen_port: 6783,
        trusted: false,
    }
}

/// Peer `n` holds key `[n; 32]`.
fn key(n: u64) -> PublicKey {
    PublicKey([n as u8; 32])
}

/// An inbound connection from peer `n` (who proved it holds `key(n)`).
fn inbound(port: u16, half: u64, n: u64) -> ConnInfo {
    ConnInfo {
        outbound: false,
        remote_addr: format!("192.0.2.9:{port}").parse().unwrap(),
        target: None,
        local_conn_half: half,
        remote_key: key(n),
    }
}

fn drain_actions(m: &mut Mesh) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

#[test]
fn accept_throttle_is_a_token_bucket() {
    let t0 = Instant::now();
    let mut m = mesh(t0);
    for _ in 0..ACCEPT_BURST {
        assert!(m.accept_allowed(t0));
    }
    assert!(!m.accept_allowed(t0));
    assert!(!m.accept_allowed(t0 + Duration::from_millis(49)));
    assert!(m.accept_allowed(t0 + Duration::from_millis(50)));
    assert!(!m.accept_allowed(t0 + Duration::from_millis(60)));
}

#[test]
fn connection_up_full_state_heartbeat_and_timeout() {
    let t0 = Instant::now();
    let mut m = mesh(t0);
    m.handle_connection(ConnId(1), inbound(1000, 5, 2), hello(2, 22, 7), t0)
        .unwrap();
    assert_eq!(m.poll_event(), Some(Event::PeerAdded(name(2))));
    assert_eq!(
        m.poll_event(),
        Some(Event::ConnectionUp {
            conn: ConnId(1),
            peer: name(2)
        })
    );
    // The first transmit is our topology digest (the neighbour pulls what it lacks).
    let t = m.poll_transmit().unwrap();
    let Ok(Message::Gossip(GossipMsg {
        channel, payload, ..
    })) = Message::decode(&t.bytes)
    else {
        panic!("not gossip")
    };
    assert_eq!(channel, "topology");
    assert!(matches!(TopologyMsg::decode(&payload), Ok(TopologyMsg::Digest(d)) if d.len() == 2));
    // Its digest names a peer we lack: we request it; its request for us gets our record.
    let topo = |msg: TopologyMsg| {
        Message::Gossip(GossipMsg {
            channel: "topology".into(),
            src: name(2),
            payload: msg.encode(),
        })
        .encode()
    };
    let digest = TopologyMsg::Digest(vec![(name(2), PeerUid(22), 5), (name(3), PeerUid(33), 1)]);
    m.handle_message(ConnId(1), &topo(digest), t0, &mut NoChannels);
    let req = m.poll_transmit().unwrap();
    assert_eq!(
        req.bytes,
        topo_from(name(1), TopologyMsg::Request(vec![name(2), name(3)]))
    );
    m.handle_message(
        ConnId(1),
        &topo(TopologyMsg::Request(vec![name(1), name(7)])),
        t0,
        &mut NoChannels,
    );
    let full = m.poll_transmit().unwrap();
    let Ok(Message::Gossip(g)) = Message::decode(&full.bytes) else {
        panic!("not gossip")
    };
    assert!(
        matches!(TopologyMsg::decode(&g.payload), Ok(TopologyMsg::Full(r)) if r.len() == 1 && r[0].name == name(1))
    );
    // One coalesced delta after 1 s.
    m.handle_timeout(t0 + UPDATE_COALESCE, &mut NoChannels);
    let delta = m.poll_transmit().unwrap();
    assert_eq!(delta.conn, ConnId(1));
    // A heartbeat at 30 s, then close at 60 s of silence.
    while m.poll_transmit().is_some() {}
    m.handle_timeout(t0 + HEARTBEAT_INTERVAL, &mut NoChannels);
    assert_eq!(m.poll_transmit().map(|t| t.bytes), Some(vec![0]));
    m.handle_message(
        ConnId(1),
        &[0],
        t0 + Duration::from_secs(40),
        &mut NoChannels,
    );
    m.handle_timeout(t0 + Duration::from_secs(99), &mut NoChannels);
    assert!(
        drain_actions(&mut m)
            .iter()
            .all(|a| !matches!(a, Action::Close { .. }))
    );
    m.handle_timeout(
        t0 + Duration::from_secs(40) + HEARTBEAT_TIMEOUT,
        &mut NoChannels,
    );
    let closes: Vec<_> = drain_actions(&mut m);
    assert_eq!(
        closes,
        vec![Action::Close {
            conn: ConnId(1),
            reason: CloseReason::HeartbeatTimeout(60)
        }]
    );
    assert!(m.poll_timeout().is_some());
}

#[test]
fn duplicate_smaller_uid_wins_and_loser_closes_at_once() {
    let t0 = Instant::now();
    let mut m = mesh(t0);
    // Shared uids: 5^7 = 2, then 8^1 = 9 (loses), then 3^2 = 1 (wins over 2).
    m.handle_connection(ConnId(1), inbound(1000, 5, 2), hello(2, 22, 7), t0)
        .unwrap();
    let lost = m.handle_connection(ConnId(2), inbound(1001, 8, 2), hello(2, 22, 1), t0);
    assert!(matches!(lost, Err(ConnError::Duplicate { .. })));
    assert!(drain_actions(&mut m).is_empty());
    m.handle_connection(ConnId(3), inbound(1002, 3, 2), hello(2, 22, 2), t0)
        .unwrap();
    let actions = drain_actions(&mut m);
    assert!(matches!(
        actions.as_slice(),
        [Action::Close {
            conn: ConnId(1),
            reason: CloseReason::Duplicate { .. }
        }]
    ));
    assert_eq!(m.conn_to(name(2)), Some(ConnId(3)));
    // The router reports the close of the loser; the winner stays.
    m.handle_closed(ConnId(1), "closed", t0);
    assert_eq!(m.conn_to(name(2)), Some(ConnId(3)));
    // Equal uids: both go.
    let equal = m.handle_connection(ConnId(4), inbound(1003, 1, 2), hello(2, 22, 0), t0);
    assert!(equal.is_err());
    assert!(matches!(
        drain_actions(&mut m).as_slice(),
        [Action::Close {
            conn: ConnId(3),
            ..
        }]
    ));
}

#[test]
fn self_collision_limit_and_protocol_violations() {
    let t0 = Instant::now();
    let mut m = mesh(t0);
    assert_eq!(
        m.handle_connection(ConnId(1), inbound(1, 0, 1), hello(1, 11, 0), t0),
        Err(ConnError::ConnectToSelf)
    );
    let collision = m
        .handle_connection(ConnId(1), inbound(1, 0, 1), hello(1, 99, 0), t0)
        .unwrap_err();
    assert!(collision.refusal().code.is_permanent());
    assert!(ConnError::ConnectToSelf.refusal().code.is_permanent());
    m.handle_connection(ConnId(2), inbound(2, 0, 2), hello(2, 22, 0), t0)
        .unwrap();
    m.handle_connection(ConnId(3), inbound(3, 0, 3), hello(3, 33, 0), t0)
        .unwrap();
    assert_eq!(
        m.handle_connection(ConnId(4), inbound(4, 0, 4), hello(4, 44, 0), t0),
        Err(ConnError::ConnLimit(2))
    );
    drain_actions(&mut m);
    // Garbage closes with a typed decode reason; a forged gossip source with a violation.
    m.handle_message(ConnId(2), &[4, 9], t0, &mut NoChannels);
    assert!(matches!(
        drain_actions(&mut m).as_slice(),
        [Action::Close {
            conn: ConnId(2),
            reason: CloseReason::Decode(_)
        }]
    ));
    let forged = Message::Gossip(GossipMsg {
        channel: "x".into(),
        src: name(9),
        payload: vec![],
    });
    m.handle_message(ConnId(3), &forged.encode(), t0, &mut NoChannels);
    assert!(matches!(
        drain_actions(&mut m).as_slice(),
        [Action::Close {
            conn: ConnId(3),
            reason: CloseReason::Protocol(_)
        }]
    ));
    // Empty and unknown-tag messages are ignored.
    let mut m = mesh(t0);
    m.handle_connection(ConnId(2), inbound(2, 0, 2), hello(2, 22, 0), t0)
        .unwrap();
    m.handle_message(ConnId(2), &[], t0, &mut NoChannels);
    m.handle_message(ConnId(2), &[2, 1, 2, 3], t0, &mut NoChannels);
    assert!(drain_actions(&mut m).is_empty());
}

#[test]
fn connect_validates_and_dials_with_backoff() {
    let t0 = Instant::now();
    let mut m = mesh(t0);
    let err = m
        .connect(&["192.0.2.1".into(), "bad host".into()], false, t0)
        .unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(m.targets(), vec!["192.0.2.1".to_string()]);
    assert_eq!(m.poll_event(), Some(Event::TargetsChanged));
    assert_eq!(
        drain_actions(&mut m),
        vec![Action::Dial {
            target: "192.0.2.1".into(),
            addr: "192.0.2.1:6783".into()
        }]
    );
    m.handle_dial_failed("192.0.2.1", "connect: connection refused".into(), t0);
    let retry = m.poll_timeout().unwrap();
    let wait = retry - t0;
    assert!(
        wait >= Duration::from_secs(1) && wait < Duration::from_secs(3),
        "{wait:?}"
    );
    m.handle_timeout(retry, &mut NoChannels);
    assert_eq!(drain_actions(&mut m).len(), 1);
    m.forget(&["192.0.2.1".into()], retry);
    assert!(m.targets().is_empty());
    m.connect(&["192.0.2.1".into(), "192.0.2.2:7000".into()], false, retry)
        .unwrap();
    m.connect(&["192.0.2.2:7000".into()], true, retry).unwrap();
    assert_eq!(m.targets(), vec!["192.0.2.2:7000".to_string()]);
}

#[test]
fn status_serialises_with_weave_field_names() {
    let t0 = Instant::now();
    let mut m = mesh(t0);
    m.handle_connection(ConnId(1), inbound(1000, 5, 2), hello(2, 22, 7), t0)
        .unwrap();
    let st = m.status(t0);
    let json = serde_json_like(&st);
    for key in [
        "\"Name\":\"00:00:00:00:00:01\"",
        "\"NickName\"",
        "\"UID\":11",
        "\"UnicastRoutes\"",
        "\"TerminationCount\"",
        "\"State\":\"established\"",
    ] {
        assert!(json.contains(key), "{key} missing in {json}");
    }
    assert_eq!(st.peers.len(), 2);
    assert_eq!(st.connections.len(), 1);
}

fn serde_json_like(st: &crate::Status) -> String {
    serde_json::to_string(st).unwrap()
}

fn topo_from(src: PeerName, msg: TopologyMsg) -> Vec<u8> {
    Message::Gossip(GossipMsg {
        channel: "topology".into(),
        src,
        payload: msg.encode(),
    })
    .encode()
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// A gossip message on `topology` from peer 2 with an arbitrary payload.
    fn topology_bytes(payload: Vec<u8>) -> Vec<u8> {
        Message::Gossip(GossipMsg {
            channel: "topology".into(),
            src: name(2),
            payload,
        })
        .encode()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever a connected peer sends, the mesh neither panics nor stops answering.
        #[test]
        fn arbitrary_input_never_panics(
            raw in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
            topo in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        ) {
            let t0 = Instant::now();
            let mut m = mesh(t0);
            m.handle_connection(ConnId(1), inbound(1, 0, 2), hello(2, 22, 0), t0).unwrap();
            for (i, bytes) in raw.iter().enumerate() {
                m.handle_message(ConnId(1), bytes, t0 + Duration::from_millis(i as u64), &mut NoChannels);
            }
            let mut m = mesh(t0);
            m.handle_connection(ConnId(1), inbound(1, 0, 2), hello(2, 22, 0), t0).unwrap();
            for (i, p) in topo.into_iter().enumerate() {
                let mut payload = vec![1u8];
                payload.extend(p);
                m.handle_message(ConnId(1), &topology_bytes(payload), t0 + Duration::from_millis(i as u64), &mut NoChannels);
                m.handle_timeout(t0 + Duration::from_secs(2 + i as u64), &mut NoChannels);
            }
            while m.poll_transmit().is_some() {}
            let _ = m.status(t0 + Duration::from_secs(60));
        }
    }

    fn summary() -> impl Strategy<Value = crate::wire::ConnSummary> {
        (any::<bool>(), any::<bool>()).prop_map(|(outbound, established)| {
            crate::wire::ConnSummary {
                remote_addr: "192.0.2.1:6783".into(),
                outbound,
                established,
            }
        })
    }

    fn small_name() -> impl Strategy<Value = PeerName> {
        (1u64..6).prop_map(name)
    }

    fn topology_msg() -> impl Strategy<Value = TopologyMsg> {
        let conns = || proptest::collection::vec((small_name(), summary()), 0..4);
        let delta = (
            small_name(),
            0u64..4,
            0u64..6,
            0u64..6,
            conns(),
            proptest::collection::vec(small_name(), 0..3),
        )
            .prop_map(
                |(n, uid, from, to, upserts, removed)| crate::wire::PeerDelta {
                    name: n,
                    uid: PeerUid(uid),
                    from_version: from,
                    to_version: to,
                    nickname: String::new(),
                    short_id: ShortId::new(1).unwrap(),
                    listen_port: 6783,
                    upserts,
                    removed,
                },
            );
        let record = (
            small_name(),
            0u64..4,
            prop_oneof![0u64..6, Just(u64::MAX)],
            conns(),
        )
            .prop_map(|(n, uid, version, conns)| crate::wire::PeerRecord {
                name: n,
                key: PublicKey([uid as u8; 32]),
                nickname: String::new(),
                uid: PeerUid(uid),
                version,
                short_id: ShortId::new(1).unwrap(),
                listen_port: 6783,
                conns,
            });
        prop_oneof![
            proptest::collection::vec(delta, 1..4).prop_map(TopologyMsg::Delta),
            proptest::collection::vec(record, 1..4).prop_map(TopologyMsg::Full),
            proptest::collection::vec(small_name(), 0..4).prop_map(TopologyMsg::Request),
            proptest::collection::vec((small_name(), (0u64..4).prop_map(PeerUid), 0u64..6), 0..4)
                .prop_map(TopologyMsg::Digest),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Well-formed but hostile topology gossip (records about us, stale and future
        /// versions, other incarnations) never panics and never replaces our own record.
        #[test]
        fn hostile_topology_keeps_our_record(msgs in proptest::collection::vec(topology_msg(), 1..12)) {
            let t0 = Instant::now();
            let mut m = mesh(t0);
            m.handle_connection(ConnId(1), inbound(1, 0, 2), hello(2, 22, 0), t0).unwrap();
            for (i, msg) in msgs.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(300 * i as u64);
                m.handle_message(ConnId(1), &topology_bytes(msg.encode()), now, &mut NoChannels);
                m.handle_timeout(now, &mut NoChannels);
            }
            let st = m.status(t0 + Duration::from_secs(10));
            let me = st.peers.iter().find(|p| p.name == name(1)).unwrap();
            prop_assert_eq!(me.uid, PeerUid(11));
            prop_assert_eq!(st.connections.iter().filter(|c| c.conn.is_some()).count(), 1);
        }
    }
}

#[test]
fn removing_a_key_from_the_allow_list_drops_its_connections() {
    let t0 = Instant::now();
    let mut m = mesh(t0);
    let list = |ns: &[u64]| {
        let text: String = ns
            .iter()
            .map(|n| key(*n).authorized_line("") + "\n")
            .collect();
        crate::keys::AuthorizedKeys::parse(&text).unwrap()
    };
    m.set_authorized_keys(Some(list(&[2])), t0);
    m.handle_connection(ConnId(1), inbound(1, 0, 2), hello(2, 22, 0), t0)
        .unwrap();
    let e = m
        .handle_connection(ConnId(2), inbound(2, 0, 3), hello(3, 33, 0), t0)
        .unwrap_err();
    assert!(matches!(e, ConnError::UnknownKey { .. }), "{e}");
    drain_actions(&mut m);
    assert_eq!(m.set_authorized_keys(Some(list(&[2, 3])), t0), vec![]);
    assert_eq!(m.set_authorized_keys(Some(list(&[3])), t0), vec![name(2)]);
    assert!(matches!(
        drain_actions(&mut m).as_slice(),
        [Action::Close {
            conn: ConnId(1),
            reason: CloseReason::KeyNotAuthorized(_)
        }]
    ));
    assert_eq!(m.conn_to(name(2)), None);
    // Clearing the list lets everyone in again.
    assert_eq!(m.set_authorized_keys(None, t0), vec![]);
    m.handle_connection(ConnId(3), inbound(3, 0, 4), hello(4, 44, 0), t0)
        .unwrap();
}

#[test]
fn a_refusal_is_believed_only_from_a_peer_that_passes_our_checks() {
    use crate::wire::{Refusal, RefusalCode};
    let t0 = Instant::now();
    let mut m = mesh(t0);
    // We know peer 2 under key(2).
    m.handle_connection(ConnId(1), inbound(1, 0, 2), hello(2, 22, 0), t0)
        .unwrap();
    m.connect(&["192.0.2.7".into()], false, t0).unwrap();
    let dial = drain_actions(&mut m);
    assert!(matches!(dial.as_slice(), [Action::Dial { .. }]), "{dial:?}");
    let info = |n: u64| ConnInfo {
        outbound: true,
        target: Some("192.0.2.7".into()),
        ..inbound(6783, 0, n)
    };
    let permanent = Refusal::new(RefusalCode::NameCollision, "taken");
    // An impostor claiming 2's name with key(9): its refusal is ignored and we retry.
    let ours = m.handle_refused(&info(9), &hello(2, 22, 0), &permanent, t0);
    assert!(matches!(ours, Err(ConnError::KeyMismatch { .. })));
    let st = m.status(t0);
    let t = st
        .connections
        .iter()
        .find(|c| c.address == "192.0.2.7:6783");
    assert!(t.unwrap().retry_in.is_some(), "{t:?}");
    // The same refusal from a peer that passes our checks stops the target.
    m.connect(&["192.0.2.7".into()], false, t0).unwrap();
    drain_actions(&mut m);
    assert_eq!(
        m.handle_refused(&info(5), &hello(5, 55, 0), &permanent, t0),
        Ok(())
    );
    let st = m.status(t0);
    let t = st
        .connections
        .iter()
        .find(|c| c.address == "192.0.2.7:6783");
    assert_eq!(t.unwrap().state, crate::status::ConnState::Failed);
}
