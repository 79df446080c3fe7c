//! Answer semantics, byte level: what `dig` would see.

use std::collections::BTreeSet;

use hickory_proto::op::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn zone() -> Zone {
    Zone {
        domain: Name::from_ascii("weave.local.").expect("domain"),
        ttl: 1,
    }
}

fn names(n: u8) -> Names {
    let mut names = Names::default();
    let addrs: Vec<Ipv4Addr> = (1..=n).map(|i| Ipv4Addr::new(10, 32, 0, i)).collect();
    for a in &addrs {
        names
            .by_addr
            .insert(*a, Name::from_ascii("web.weave.local.").expect("name"));
    }
    names.by_name.insert("web.weave.local.".into(), addrs);
    names
}

fn ask(name: &str, rtype: RecordType, table: &Names, t: Transport) -> Message {
    let mut rng = StdRng::seed_from_u64(7);
    match answer(&query(name, rtype, 42), table, &zone(), t, &mut rng) {
        Outcome::Reply(bytes, _) => Message::from_vec(&bytes).expect("reply decodes"),
        Outcome::Forward => panic!("{name} was forwarded"),
    }
}

fn addrs(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0,
            other => panic!("not an A record: {other:?}"),
        })
        .collect()
}

#[test]
fn a_returns_every_address_authoritatively() {
    let m = ask("web.weave.local.", RecordType::A, &names(3), Transport::Udp);
    assert_eq!(m.metadata.id, 42);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    let got: BTreeSet<_> = addrs(&m).into_iter().collect();
    assert_eq!(got.len(), 3);
    assert_eq!(m.answers[0].ttl, 1);
    assert_eq!(m.answers[0].name.to_ascii(), "web.weave.local.");
}

#[test]
fn order_varies_between_responses() {
    let table = names(5);
    let mut rng = StdRng::seed_from_u64(1);
    let orders: BTreeSet<Vec<Ipv4Addr>> = (0..20)
        .map(|_| {
            let q = query("web.weave.local.", RecordType::A, 1);
            match answer(&q, &table, &zone(), Transport::Udp, &mut rng) {
                Outcome::Reply(b, _) => addrs(&Message::from_vec(&b).expect("decodes")),
                Outcome::Forward => panic!("forwarded"),
            }
        })
        .collect();
    assert!(orders.len() > 1, "always the same order: {orders:?}");
}

#[test]
fn case_insensitive_and_single_label_qualified() {
    let m = ask("WeB.WEAVE.local.", RecordType::A, &names(1), Transport::Udp);
    assert_eq!(addrs(&m), [Ipv4Addr::new(10, 32, 0, 1)]);
    // The owner name echoes the question's spelling.
    assert_eq!(m.answers[0].name.to_ascii(), "WeB.WEAVE.local.");
    let m = ask("web.", RecordType::A, &names(1), Transport::Udp);
    assert_eq!(addrs(&m), [Ipv4Addr::new(10, 32, 0, 1)]);
}

#[test]
fn other_types_of_existing_names_are_empty_noerror() {
    let m = ask(
        "web.weave.local.",
        RecordType::AAAA,
        &names(1),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(m.metadata.authoritative);
}

#[test]
fn unknown_names_in_the_domain_are_nxdomain() {
    for rtype in [RecordType::A, RecordType::MX] {
        let m = ask("nope.weave.local.", rtype, &names(1), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
    }
}

#[test]
fn ptr_from_entries_else_forwarded() {
    let m = ask(
        "1.0.32.10.in-addr.arpa.",
        RecordType::PTR,
        &names(1),
        Transport::Udp,
    );
    match &m.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.weave.local."),
        other => panic!("not a PTR: {other:?}"),
    }
    let mut rng = StdRng::seed_from_u64(1);
    let q = query("9.9.9.10.in-addr.arpa.", RecordType::PTR, 1);
    assert_eq!(
        answer(&q, &names(1), &zone(), Transport::Udp, &mut rng),
        Outcome::Forward
    );
    let q = query("example.com.", RecordType::A, 1);
    assert_eq!(
        answer(&q, &names(1), &zone(), Transport::Udp, &mut rng),
        Outcome::Forward
    );
}

#[test]
fn long_answers_truncate_on_a_record_boundary() {
    let table = names(100);
    let m = ask("web.weave.local.", RecordType::A, &table, Transport::Udp);
    assert!(m.metadata.truncation);
    assert!(!m.answers.is_empty() && m.answers.len() < 100);
    assert!(m.to_vec().expect("encodes").len() <= CLASSIC_UDP_REPLY);
    let m = ask("web.weave.local.", RecordType::A, &table, Transport::Tcp);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}

#[test]
fn edns_size_is_honoured_and_capped() {
    let mut req = Message::from_vec(&query("web.weave.local.", RecordType::A, 5)).expect("q");
    let mut e = Edns::new();
    e.set_max_payload(1232);
    req.set_edns(e);
    assert_eq!(udp_limit(&req), 1232);
    let mut e = Edns::new();
    e.set_max_payload(65_000);
    req.set_edns(e);
    assert_eq!(udp_limit(&req), MAX_UDP_REPLY);
    req.edns = None;
    assert_eq!(udp_limit(&req), CLASSIC_UDP_REPLY);
}

#[test]
fn garbage_gets_formerr_or_nothing() {
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(
        answer(&[], &names(1), &zone(), Transport::Udp, &mut rng),
        Outcome::Reply(Vec::new(), ResponseCode::FormErr)
    );
    match answer(
        &[0xab, 0xcd, 0xff],
        &names(1),
        &zone(),
        Transport::Udp,
        &mut rng,
    ) {
        Outcome::Reply(b, ResponseCode::FormErr) => {
            assert_eq!(Message::from_vec(&b).expect("decodes").metadata.id, 0xabcd);
        }
        other => panic!("{other:?}"),
    }
    let sf = Message::from_vec(&server_failure(&query("x.com.", RecordType::A, 9))).expect("sf");
    assert_eq!(sf.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(sf.metadata.id, 9);
}
