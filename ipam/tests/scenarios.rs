//! Scenario tests: each reads as a story on the simulated mesh.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{Asked, Sim, name};
use meshnet_ipam::node::{Answer, RING_WAIT};
use meshnet_ipam::{
    Allocation, Cidr, Error, Event, Ident, Init, Ipam, PersistError, rmpeer_message,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn done(a: Option<Asked>) -> Cidr {
    match a {
        Some(Asked::Done(c)) => c,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn seeds(n: usize) -> Init {
    Init::Seed((0..n).map(name).collect())
}

#[test]
fn linear_idempotent_allocation_free_and_claims() {
    let mut sim = Sim::new(1, "10.32.0.0/12", vec![seeds(1)]);
    let a = Ident::new("a");
    let b = Ident::new("b");
    assert_eq!(done(sim.allocate(0, &a)).to_string(), "10.32.0.1/12");
    assert_eq!(done(sim.allocate(0, &b)).to_string(), "10.32.0.2/12");
    assert_eq!(
        done(sim.allocate(0, &a)).to_string(),
        "10.32.0.1/12",
        "idempotent"
    );
    let now = sim.now;
    let ipam = sim.nodes[0].ipam_mut().unwrap();
    // Explicit subnet, and the subnet rules.
    let sub = cidr("10.32.5.0/24");
    assert_eq!(
        ipam.allocate(&a, Some(sub), false, now),
        Ok(Allocation::Done(cidr("10.32.5.1/24")))
    );
    assert_eq!(ipam.lookup(&a, None).len(), 2);
    assert_eq!(
        ipam.allocate(&a, Some(cidr("10.32.5.1/24")), false, now)
            .unwrap_err()
            .to_string(),
        "invalid subnet 10.32.5.1/24 - bits after network prefix are not all zero"
    );
    assert!(matches!(
        ipam.allocate(&a, Some(cidr("10.32.5.0/31")), false, now),
        Err(Error::TooSmall(_))
    ));
    assert_eq!(
        ipam.allocate(&a, Some(cidr("192.168.0.0/24")), false, now)
            .unwrap_err()
            .to_string(),
        "range 192.168.0.0/24 out of bounds: 10.32.0.0/12"
    );
    // Claims: free address ok, taken address refused clearly, same ident ok.
    let c = Ident::new("c");
    assert_eq!(
        ipam.claim(&c, cidr("10.32.0.9/12"), true, false, now),
        Ok(Allocation::Done(cidr("10.32.0.9/12")))
    );
    assert_eq!(
        ipam.claim(&c, cidr("10.32.0.2/12"), true, false, now)
            .unwrap_err()
            .to_string(),
        "address 10.32.0.2 is already owned by b"
    );
    assert_eq!(
        ipam.claim(&b, cidr("10.32.0.2/12"), true, false, now),
        Ok(Allocation::Done(cidr("10.32.0.2/12")))
    );
    // Outside the universe: recorded only.
    assert!(
        ipam.claim(&c, cidr("192.168.1.1/24"), false, false, now)
            .is_ok()
    );
    // Free and reuse of the lowest address.
    ipam.free(&a, Ipv4Addr::new(10, 32, 0, 1)).unwrap();
    assert_eq!(
        ipam.free(&a, Ipv4Addr::new(10, 32, 0, 1))
            .unwrap_err()
            .to_string(),
        "Free: address 10.32.0.1 not found for a"
    );
    let d = Ident::new("d");
    assert_eq!(
        ipam.allocate(&d, None, false, now),
        Ok(Allocation::Done(cidr("10.32.0.1/12")))
    );
    assert_eq!(ipam.free_all(&d).unwrap().len(), 1);
    assert_eq!(
        ipam.free_all(&d).unwrap_err().to_string(),
        "Delete: no addresses for d"
    );
    ipam.check_invariants().unwrap();
    assert_eq!(ipam.status_string(), "ready");
}

#[test]
fn consensus_initialises_one_ring_everywhere() {
    let mut sim = Sim::new(2, "10.32.0.0/12", vec![Init::Consensus { peers: 3 }; 3]);
    assert_eq!(sim.nodes[1].ipam().unwrap().status_string(), "idle");
    assert!(sim.nodes[0].ipam().unwrap().status_lines().is_empty());
    // Node 1 alone cannot reach a quorum of 2.
    sim.nodes[1].group = 9;
    sim.peers_changed();
    let x = sim.new_ident();
    assert!(matches!(sim.allocate(1, &x), Some(Asked::Pending(_))));
    // Less than RING_WAIT, after which its caller would be told why it waits.
    sim.advance(RING_WAIT - secs(5));
    let ipam = sim.nodes[1].ipam().unwrap();
    assert_eq!(
        ipam.status_string(),
        "awaiting consensus (quorum: 2, known: 1)"
    );
    assert!(ipam.ring().is_none());
    sim.heal();
    sim.advance(secs(20));
    assert!(sim.converged());
    let ring = sim.nodes[0].ipam().unwrap().ring().unwrap().clone();
    assert_eq!(ring.peers().len(), 3, "all three electors share the range");
    assert_eq!(
        sim.nodes[1].containers.len(),
        1,
        "pending allocation completed"
    );
    let lines = sim.nodes[1].ipam().unwrap().status_lines();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with(&format!("{}(host1)", name(1))),
        "{lines:?}"
    );
    assert!(
        lines[0].ends_with("IPs (25.0% of total) (1 active)"),
        "{lines:?}"
    );
}

#[test]
fn donation_when_own_space_runs_out() {
    // 2 seeds on a /28: 8 addresses each, host range .1-.14.
    let mut sim = Sim::new(3, "10.9.0.0/28", vec![seeds(2); 2]);
    let mut got = Vec::new();
    for _ in 0..12 {
        let id = sim.new_ident();
        sim.allocate(0, &id);
        sim.advance(secs(2));
        got.push(sim.nodes[0].containers.get(&id).copied());
    }
    assert!(
        got.iter().all(|g| g.is_some()),
        "all allocated via donations: {got:?}"
    );
    sim.advance(secs(10));
    assert!(sim.converged());
    sim.check_unique();
    // Two addresses are left: the third of three more requests fails once
    // the other peer denied it, saying how full the range is, and waits no
    // more.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = sim.new_ident();
        sim.allocate(1, &id);
        sim.advance(secs(2));
        ids.push(id);
    }
    sim.advance(secs(10));
    let failed: Vec<String> = sim.nodes[1]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed,
        ["no free address in 10.9.0.0/28: 14 of 14 in use"],
        "a full range is said at once"
    );
    assert_eq!(sim.nodes[1].ipam().unwrap().status_string(), "ready");
    let got = ids
        .iter()
        .filter(|i| sim.nodes[1].containers.contains_key(*i))
        .count();
    assert_eq!(got, 2);
    sim.check_unique();
}

#[test]
fn a_full_range_with_nobody_to_ask_fails_at_once() {
    let mut sim = Sim::new(5, "10.99.0.0/29", vec![seeds(1)]);
    for _ in 0..6 {
        let id = sim.new_ident();
        done(sim.allocate(0, &id));
    }
    let id = sim.new_ident();
    let failed = match sim.allocate(0, &id) {
        Some(Asked::Other(Answer::Refused(e))) => Some(e.to_string()),
        _ => None,
    };
    assert_eq!(
        failed.as_deref(),
        Some("no free address in 10.99.0.0/29: 6 of 6 in use")
    );
}

#[test]
fn dead_container_released_after_grace_and_restart_keeps_address() {
    let mut sim = Sim::new(4, "10.32.0.0/12", vec![seeds(1)]);
    let a = Ident::new("a");
    let addr = done(sim.allocate(0, &a));
    let now = sim.now;
    sim.with(0, |x| x.handle_container_died(&a, now));
    sim.advance(secs(20));
    sim.with(0, |x| x.handle_container_started(&a));
    sim.advance(secs(60));
    assert_eq!(sim.nodes[0].ipam().unwrap().lookup(&a, None), vec![addr]);
    let now = sim.now;
    sim.with(0, |x| x.handle_container_died(&a, now));
    sim.advance(secs(29));
    assert_eq!(sim.nodes[0].ipam().unwrap().lookup(&a, None), vec![addr]);
    sim.advance(secs(6));
    assert!(sim.nodes[0].ipam().unwrap().lookup(&a, None).is_empty());
    assert!(
        sim.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Released { .. }))
    );
    // A new container gets the freed address (lowest free).
    let b = Ident::new("b");
    assert_eq!(done(sim.allocate(0, &b)), addr);
}

/// The running set (sent at startup and when the Docker watcher
/// reconnects) marks absent containers dead: their addresses go after the
/// grace, not at once, so a container created but not yet running (or
/// restarting) that shows up in a later running set, or starts, keeps its
/// address.
#[test]
fn containers_missing_from_the_running_set_go_after_the_grace() {
    let mut sim = Sim::new(4, "10.32.0.0/12", vec![seeds(1)]);
    let (gone, late, alive) = (Ident::new("gone"), Ident::new("late"), Ident::new("alive"));
    let gone_addr = done(sim.allocate(0, &gone));
    let late_addr = done(sim.allocate(0, &late));
    let alive_addr = done(sim.allocate(0, &alive));
    let now = sim.now;
    let running: std::collections::BTreeSet<Ident> = [alive.clone()].into();
    let marked = sim
        .with(0, |x| x.handle_containers_running(&running, now))
        .unwrap();
    assert_eq!(marked, vec![gone.clone(), late.clone()]);
    sim.advance(secs(10));
    let lookup = |sim: &Sim, i: &Ident| sim.nodes[0].ipam().unwrap().lookup(i, None);
    assert_eq!(
        lookup(&sim, &gone),
        vec![gone_addr],
        "released before the grace"
    );
    // `late` was only starting: the next running set has it.
    let now = sim.now;
    let running: std::collections::BTreeSet<Ident> = [alive.clone(), late.clone()].into();
    let marked = sim
        .with(0, |x| x.handle_containers_running(&running, now))
        .unwrap();
    assert!(
        marked.is_empty(),
        "already dead ones are not marked again: {marked:?}"
    );
    sim.advance(secs(25));
    assert!(lookup(&sim, &gone).is_empty(), "kept after the grace");
    assert_eq!(lookup(&sim, &late), vec![late_addr]);
    assert_eq!(lookup(&sim, &alive), vec![alive_addr]);
    // A non-container allocation (check-alive off) is never touched.
    let manual = Ident::new("manual");
    let now = sim.now;
    sim.with(0, |x| x.allocate(&manual, None, false, now).unwrap());
    let now = sim.now;
    sim.with(0, |x| x.handle_containers_running(&Default::default(), now));
    sim.advance(secs(60));
    assert_eq!(lookup(&sim, &manual).len(), 1);
    assert!(lookup(&sim, &late).is_empty());
}

#[test]
fn rmpeer_takes_over_dead_peer_space() {
    let mut sim = Sim::new(5, "10.32.0.0/12", vec![seeds(2); 2]);
    let a = sim.new_ident();
    sim.allocate(1, &a);
    sim.advance(secs(6));
    assert!(sim.converged());
    sim.kill(1);
    sim.nodes[1].removed = true;
    let lines = sim.nodes[0].ipam().unwrap().status_lines();
    assert!(lines[1].ends_with("- unreachable!"), "{lines:?}");
    let now = sim.now;
    let n = sim.with(0, |x| x.rmpeer("host1", now)).unwrap().unwrap();
    assert_eq!(n, 1 << 19);
    assert_eq!(
        rmpeer_message(n, "host1"),
        "524288 IPs taken over from host1\n"
    );
    let now = sim.now;
    assert_eq!(
        sim.with(0, |x| x.rmpeer(&name(0).to_string(), now))
            .unwrap(),
        Err(Error::IsSelf)
    );
    let ipam = sim.nodes[0].ipam().unwrap();
    assert_eq!(ipam.ring().unwrap().sizes().len(), 1);
    assert_eq!(ipam.metrics().unreachable_count, 0);
}

#[test]
fn persisted_state_survives_restart_and_refuses_other_peers() {
    let mut sim = Sim::new(6, "10.32.0.0/12", vec![seeds(2); 2]);
    let a = sim.new_ident();
    let addr = done(sim.allocate(0, &a));
    sim.kill(0);
    sim.restart(0);
    let b = sim.new_ident();
    let addr_b = done(sim.allocate(0, &b));
    assert_ne!(addr, addr_b);
    assert_eq!(sim.nodes[0].ipam().unwrap().lookup(&a, None), vec![addr]);
    // A clone: another peer started from node 0's disk must not reuse it.
    let disk = sim.nodes[0].disk.clone().unwrap();
    let cfg = sim.nodes[1].cfg.clone();
    match Ipam::from_persisted(cfg, disk.clone(), 1) {
        Err(PersistError::OtherPeer { persisted, me }) => {
            assert_eq!((persisted, me), (name(0), name(1)));
        }
        other => panic!("clone accepted: {other:?}"),
    }
    // Another range is refused too.
    let mut cfg = sim.nodes[0].cfg.clone();
    cfg.range = cidr("10.0.0.0/16");
    assert!(matches!(
        Ipam::from_persisted(cfg, disk, 1),
        Err(PersistError::OtherRange { .. })
    ));
}

#[test]
fn observer_primes_and_gets_space_by_donation() {
    let mut sim = Sim::new(
        7,
        "10.32.0.0/12",
        vec![
            Init::Consensus { peers: 2 },
            Init::Consensus { peers: 2 },
            Init::Observer,
        ],
    );
    let x = sim.new_ident();
    assert!(matches!(sim.allocate(2, &x), Some(Asked::Pending(_))));
    sim.advance(secs(30));
    assert!(sim.converged());
    assert!(sim.nodes[2].containers.contains_key(&x), "{:?}", sim.log);
    sim.check_unique();
}

#[test]
fn claim_of_an_address_owned_by_another_peer() {
    let mut sim = Sim::new(8, "10.32.0.0/12", vec![seeds(2); 2]);
    sim.advance(secs(1));
    let c = Ident::new("claimer");
    // 10.40.0.5 is in node 1's half.
    let r = sim.claim(0, &c, cidr("10.40.0.5/12"));
    let Some(Asked::Pending(_)) = r else {
        panic!("{r:?}")
    };
    sim.advance(secs(6));
    assert_eq!(sim.nodes[0].containers.get(&c), Some(&cidr("10.40.0.5/12")));
    // Node 1 has its own container on .6; claiming it from node 0 fails clearly.
    sim.claim(1, &Ident::new("owner"), cidr("10.40.0.6/12"));
    let r = sim.claim(0, &Ident::new("thief"), cidr("10.40.0.6/12"));
    let Some(Asked::Pending(ticket)) = r else {
        panic!("{r:?}")
    };
    sim.advance(secs(6));
    let failed = match sim.nodes[0].answers.get(&ticket) {
        Some(Answer::Refused(e)) => Some(e.to_string()),
        _ => None,
    };
    assert_eq!(
        failed.as_deref(),
        Some(format!("address 10.40.0.6 is owned by other peer {}", name(1)).as_str())
    );
    sim.check_unique();
}

#[test]
fn reset_hands_space_to_an_heir() {
    let mut sim = Sim::new(9, "10.32.0.0/12", vec![seeds(2); 2]);
    let now = sim.now;
    assert_eq!(sim.with(0, |x| x.prime(now)), Some(true));
    sim.advance(secs(6));
    let now = sim.now;
    let heir = sim
        .with(0, |x| x.leave(&BTreeSet::from([name(0), name(1)]), now))
        .unwrap();
    assert_eq!(heir, Some(name(1)));
    sim.deliver_all();
    let ring = sim.nodes[1].ipam().unwrap().ring().unwrap().clone();
    assert_eq!(
        ring.sizes().keys().copied().collect::<BTreeSet<_>>(),
        [name(1)].into()
    );
}

#[test]
fn report_json_has_weave_field_names() {
    let mut sim = Sim::new(10, "10.32.0.0/12", vec![seeds(1)]);
    sim.allocate(0, &Ident::new("a"));
    let st = sim.nodes[0].ipam().unwrap().status();
    assert_eq!(st.range, "10.32.0.0/12");
    assert_eq!(st.range_num_ips, 1 << 20);
    assert_eq!(st.active_ips, 1);
    assert_eq!(st.entries.len(), 1);
    assert_eq!(st.entries[0].token, "10.32.0.0");
    assert!(st.paxos.is_none());
    let m = sim.nodes[0].ipam().unwrap().metrics();
    assert_eq!((m.local_used, m.max_ips), (1, 1 << 20));
}

#[test]
fn opt_in_reclaim_of_long_unreachable_peers() {
    let mut sim = Sim::new(11, "10.32.0.0/12", vec![seeds(3); 3]);
    for i in 0..3 {
        sim.kill(i);
        sim.nodes[i].cfg.reclaim_unreachable_after = Some(secs(60));
        sim.restart(i);
    }
    for i in 0..3 {
        let id = sim.new_ident();
        sim.allocate(i, &id);
    }
    sim.advance(secs(10));
    assert!(sim.converged());
    sim.kill(2);
    sim.nodes[2].removed = true;
    sim.advance(secs(30));
    assert_eq!(
        sim.nodes[0].ipam().unwrap().ring().unwrap().peers().len(),
        3,
        "not before the timeout"
    );
    sim.advance(secs(60));
    assert!(sim.converged());
    let sizes = sim.nodes[1].ipam().unwrap().ring().unwrap().sizes();
    assert!(!sizes.contains_key(&name(2)), "{sizes:?}");
    // Only the designated peer (lowest name) took over.
    assert_eq!(sizes[&name(0)], 3 << 18, "{sizes:?}");
    sim.check_unique();
}

#[test]
fn persisted_state_and_report_as_json() {
    let mut sim = Sim::new(12, "10.32.0.0/12", vec![Init::Consensus { peers: 2 }; 2]);
    let a = sim.new_ident();
    sim.allocate(0, &a);
    sim.advance(secs(10));
    let disk = sim.nodes[0].disk.clone().unwrap();
    assert!(disk.ring.is_some());
    let json = serde_json::to_string_pretty(&disk).unwrap();
    assert!(json.contains("\"peer\": \"0a:00:00:00:00:01\""), "{json}");
    assert!(json.contains("\"range\": \"10.32.0.0/12\""), "{json}");
    let back: meshnet_ipam::Persisted = serde_json::from_str(&json).unwrap();
    assert_eq!(back, disk);
    let report = serde_json::to_value(sim.nodes[0].ipam().unwrap().status()).unwrap();
    for key in [
        "Range",
        "RangeNumIPs",
        "ActiveIPs",
        "DefaultSubnet",
        "Entries",
        "PendingAllocates",
        "PendingClaims",
        "Paxos",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    let e = &report["Entries"][0];
    for key in [
        "Token",
        "Size",
        "Peer",
        "Nickname",
        "IsKnownPeer",
        "Version",
    ] {
        assert!(e.get(key).is_some(), "missing {key}: {e}");
    }
}

#[test]
fn failed_persist_is_offered_again() {
    let mut sim = Sim::new(13, "10.32.0.0/12", vec![seeds(1)]);
    let now = sim.now;
    let ipam = sim.nodes[0].ipam_mut().unwrap();
    let _ = ipam.allocate(&Ident::new("a"), None, true, now).unwrap();
    let first = ipam.poll_persist().expect("state to write");
    assert!(ipam.poll_persist().is_none());
    ipam.persist_failed();
    let again = ipam.poll_persist().expect("offered again");
    assert_eq!(again.owned, first.owned);
    assert!(again.seq > first.seq);
}

#[test]
fn status_ipam_lines_match_weave_format() {
    // 16 seeds on a /12: 65536 addresses (6.25%) each; weave prints 06.2.
    let mut sim = Sim::new(14, "10.32.0.0/12", vec![seeds(16), seeds(16)]);
    let id = sim.new_ident();
    sim.allocate(0, &id);
    sim.advance(secs(6));
    let lines = sim.nodes[0].ipam().unwrap().status_lines();
    assert_eq!(lines.len(), 16);
    assert_eq!(
        lines[0],
        format!(
            "{:<37} {:>8} IPs (06.2% of total) (1 active)",
            format!("{}(host0)", name(0)),
            65536
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "{:<37} {:>8} IPs (06.2% of total) ",
            format!("{}(host1)", name(1)),
            65536
        )
    );
    assert!(
        lines[2].ends_with("IPs (06.2% of total) - unreachable!"),
        "{}",
        lines[2]
    );
}
