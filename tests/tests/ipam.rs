//! IPAM scenarios against real routers: hosts are network namespaces, each
//! running `meshnet`; containers are network namespaces attached with
//! `meshnet attach netns:NAME` (no address = `net:default`).
//!
//! What must hold (issue: "never handing out an address twice"): addresses
//! are unique and inside 10.32.0.0/12 under concurrent allocation on three
//! hosts, across a kill -9 and relaunch of a router, and across a partition
//! that outlasts the heartbeat timeout (every router has dropped the links
//! across it) during which both sides allocate; `status ipam` always sums
//! to the range.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meshnet::lab::Host;
use meshnet_tests::view::{connections_in, established_with, peer_names};
use meshnet_tests::{
    TestLab, control_addr, lab_on_one_segment, launch, require_root, try_report, wait_for,
};

/// The default allocation range.
const RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 32, 0, 0), 12);
/// Addresses in it.
const RANGE_SIZE: u64 = 1 << 20;
const CONVERGE: Duration = Duration::from_secs(30);
/// Bound on every router noticing a partition: the mesh's heartbeat
/// timeout plus slack for a loaded machine.
const PARTITION_NOTICED: Duration =
    Duration::from_secs(meshnet_mesh::mesh::HEARTBEAT_TIMEOUT.as_secs() * 2 + 30);
/// Bound on the mesh re-forming after the partition heals: a target that
/// failed through the partition backs off up to its longest retry
/// interval (the mesh's 6 minutes), plus slack.
const HEAL: Duration = Duration::from_secs(7 * 60);
/// kill -9.
const SIGKILL: i32 = 9;

fn in_range(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - RANGE.1);
    u32::from(ip) & mask == u32::from(RANGE.0)
}

/// Waits until `host` has `n - 1` established connections and knows `n` peers.
fn wait_for_full_mesh(host: &Host, n: usize) {
    wait_for_full_mesh_within(host, n, CONVERGE);
}

fn wait_for_full_mesh_within(host: &Host, n: usize, bound: Duration) {
    wait_for(
        &format!("{} in a full mesh of {n}", host.name()),
        bound,
        || {
            let r = try_report(host).map_err(|e| e.to_string())?;
            let (peers, up) = (
                peer_names(&r).len(),
                connections_in(&r, "established").len(),
            );
            if peers == n && up == n - 1 {
                Ok(())
            } else {
                Err(format!("{peers} peers, {up} established"))
            }
        },
    );
}

/// Attaches every container concurrently (one `meshnet attach` process each)
/// and returns container → address.
fn attach_all(host: &Host, containers: &[String]) -> BTreeMap<String, Ipv4Addr> {
    std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let out = host
                        .meshnet(&["attach", &format!("netns:{c}")])
                        .expect("running meshnet attach");
                    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    assert!(
                        out.status.success(),
                        "attach {c} on {} failed: {}",
                        host.name(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let ip: Ipv4Addr = stdout
                        .parse()
                        .unwrap_or_else(|_| panic!("attach printed {stdout:?}, not an address"));
                    (c.clone(), ip)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("attach thread"))
            .collect()
    })
}

/// `meshnet ps` of a host: container arg → addresses.
fn ps(host: &Host) -> BTreeMap<String, Vec<String>> {
    let out = host.meshnet(&["ps"]).expect("running meshnet ps");
    assert!(
        out.status.success(),
        "ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let id = w.next()?.to_string();
            let _mac = w.next()?;
            Some((id, w.map(str::to_string).collect()))
        })
        .collect()
}

/// Sum of the IPs column of `meshnet status ipam`, and the number of lines.
fn ipam_total(host: &Host) -> (u64, usize) {
    let out = host.meshnet(&["status", "ipam"]).expect("status ipam");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut sum = 0;
    let mut lines = 0;
    for l in text.lines() {
        let Some(n) = l
            .split(" IPs")
            .next()
            .and_then(|h| h.split_whitespace().last())
        else {
            continue;
        };
        sum += n
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("bad status ipam line {l:?}"));
        lines += 1;
    }
    (sum, lines)
}

fn containers(lab: &mut TestLab, host: &str, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            lab.add_container(host, &format!("{host}{prefix}{i}"))
                .unwrap_or_else(|e| panic!("adding container on {host}: {e:#}"))
        })
        .collect()
}

/// The host's underlay interface (the one holding its TEST-NET address).
fn underlay_if(host: &Host) -> String {
    let out = host
        .exec(&["ip", "-o", "-4", "addr", "show"])
        .expect("ip addr");
    let want = host.addr().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&format!("inet {want}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no interface with {want} on {}", host.name()))
}

fn set_link(host: &Host, ifname: &str, state: &str) {
    let out = host
        .exec(&["ip", "link", "set", "dev", ifname, state])
        .expect("ip link set");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_unique(all: &BTreeMap<String, Ipv4Addr>) {
    let distinct: BTreeSet<_> = all.values().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "an address was handed out twice: {all:?}"
    );
    for (c, ip) in all {
        assert!(in_range(*ip), "{c} got {ip}, outside 10.32.0.0/12");
    }
}

#[test]
fn addresses_stay_unique_under_concurrency_restarts_and_partitions() {
    require_root();
    let mut lab = lab_on_one_segment("ipam", &["h1", "h2", "h3"]);
    let init = "--ipalloc-init=consensus=3";
    let n1 = launch(lab.host("h1"), &["--nickname", "h1", init]);
    let h1_addr = control_addr(lab.host("h1"));
    let n2 = launch(lab.host("h2"), &["--nickname", "h2", init, &h1_addr]);
    let h2_addr = control_addr(lab.host("h2"));
    let n3 = launch(lab.host("h3"), &["--nickname", "h3", init, &h2_addr]);
    for h in ["h1", "h2", "h3"] {
        wait_for_full_mesh(lab.host(h), 3);
    }

    // 1. Fifty containers per host, all attached at once.
    let per_host: BTreeMap<&str, Vec<String>> = ["h1", "h2", "h3"]
        .into_iter()
        .map(|h| (h, containers(&mut lab, h, "c", 50)))
        .collect();
    let mut all = BTreeMap::new();
    std::thread::scope(|s| {
        let lab = &lab;
        let handles: Vec<_> = per_host
            .iter()
            .map(|(h, cs)| s.spawn(move || attach_all(lab.host(h), cs)))
            .collect();
        for h in handles {
            all.extend(h.join().expect("host thread"));
        }
    });
    assert_eq!(all.len(), 150);
    assert_unique(&all);
    eprintln!("150 concurrent attaches on 3 hosts: 150 distinct addresses in 10.32.0.0/12");
    for h in ["h1", "h2", "h3"] {
        let (sum, lines) = ipam_total(lab.host(h));
        assert_eq!(
            (sum, lines),
            (RANGE_SIZE, 3),
            "status ipam on {h} must cover the range"
        );
        let listed = ps(lab.host(h));
        for c in &per_host[h] {
            let want = format!("{}/12", all[c]);
            assert_eq!(
                listed.get(&format!("netns:{c}")),
                Some(&vec![want]),
                "ps on {h}"
            );
        }
    }

    // 2. kill -9 h2's router and relaunch it: its containers keep their
    //    addresses, and new allocations never collide with them.
    let h2 = lab.host("h2");
    h2.kill_router(SIGKILL);
    wait_for("h2's router to die", CONVERGE, || {
        if h2.router_running() {
            Err("still running")
        } else {
            Ok(())
        }
    });
    launch(h2, &["--nickname", "h2", init, &h1_addr]);
    wait_for_full_mesh(h2, 3);
    for c in &per_host["h2"] {
        let out = h2
            .meshnet(&["attach", &format!("netns:{c}")])
            .expect("re-attach");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            all[c].to_string(),
            "after kill -9, {c} must keep its address (idempotent allocation from persisted state)"
        );
    }
    let more_h2 = containers(&mut lab, "h2", "r", 10);
    let more_h1 = containers(&mut lab, "h1", "r", 10);
    all.extend(attach_all(lab.host("h2"), &more_h2));
    all.extend(attach_all(lab.host("h1"), &more_h1));
    assert_unique(&all);

    // 3. Partition h3 from the others, allocate on both sides at once and
    //    again after every router has noticed the partition (which takes
    //    up to the heartbeat timeout), then heal.
    let h3 = lab.host("h3");
    let h3_if = underlay_if(h3);
    set_link(h3, &h3_if, "down");
    let cut_h3 = containers(&mut lab, "h3", "p", 5);
    let cut_h1 = containers(&mut lab, "h1", "p", 5);
    all.extend(attach_all(lab.host("h3"), &cut_h3));
    all.extend(attach_all(lab.host("h1"), &cut_h1));
    let cut_at = Instant::now();
    wait_for(
        "every router to notice the partition (no established link across it)",
        PARTITION_NOTICED,
        || {
            let mut seen = Vec::new();
            for (h, others) in [
                ("h1", &[&n3][..]),
                ("h2", &[&n3][..]),
                ("h3", &[&n1, &n2][..]),
            ] {
                let r = try_report(lab.host(h)).map_err(|e| e.to_string())?;
                for o in others {
                    if established_with(&r, o) {
                        seen.push(format!("{h} still established with {o}"));
                    }
                }
            }
            if seen.is_empty() {
                Ok(())
            } else {
                Err(seen.join("; "))
            }
        },
    );
    eprintln!("partition noticed everywhere after {:?}", cut_at.elapsed());
    let late_h3 = containers(&mut lab, "h3", "q", 5);
    let late_h1 = containers(&mut lab, "h1", "q", 5);
    all.extend(attach_all(lab.host("h3"), &late_h3));
    all.extend(attach_all(lab.host("h1"), &late_h1));
    assert_unique(&all);
    let h3 = lab.host("h3");
    set_link(h3, &h3_if, "up");
    for h in ["h1", "h2", "h3"] {
        wait_for_full_mesh_within(lab.host(h), 3, HEAL);
    }
    assert_unique(&all);
    for h in ["h1", "h2", "h3"] {
        let (sum, _) = ipam_total(lab.host(h));
        assert_eq!(
            sum, RANGE_SIZE,
            "status ipam on {h} after the partition healed"
        );
    }
    eprintln!(
        "{} containers, all addresses distinct after kill -9 and a partition",
        all.len()
    );
}
