//! A small version of the real-router scale benchmark (`scale-routers`,
//! `benches/README.md`): routers launched one after another against the first reach
//! full connectivity through discovery, and keep every link while nothing changes.
//!
//! Needs root and a built binary (`cargo build -p meshnet --bins`). Every wait is bounded
//! and polls; the lab removes its namespaces and routers even when an assertion fails.

use std::time::Duration;

use meshnet_mesh::mesh::GOSSIP_INTERVAL;
use meshnet_tests::scale::{RouterMesh, min_max_links, terminations};
use meshnet_tests::{meshnet_bin, require_root, router_log, tail};

/// Routers in the mesh: enough that most links come from discovery (seven of the eight
/// routers dial only the first).
const ROUTERS: usize = 8;
/// Bound on reaching full connectivity after the last launch, generous for a loaded
/// 2-core machine (weave's first retry comes after 2 s; the benchmark's goal is 60 s
/// for 50 routers).
const CONVERGE: Duration = Duration::from_secs(120);
/// How long the links are watched afterwards: past one round of periodic gossip (every
/// peer's digest and IPAM/DNS state), which must not disturb a settled mesh.
const HOLD: Duration = GOSSIP_INTERVAL.saturating_add(Duration::from_secs(5));

#[test]
fn routers_launched_against_one_seed_reach_full_connectivity_and_keep_it() {
    require_root();
    let mesh = RouterMesh::new("scale", ROUTERS, meshnet_bin()).expect("building the lab");
    mesh.launch_all(&[], |_| {});
    let want = ROUTERS - 1;
    let (_, full) = mesh.wait_full(CONVERGE).unwrap_or_else(|last| {
        panic!("not every router got {want} links within {CONVERGE:?} of the last launch: {last:?}")
    });
    let ((lo, hi), last) = mesh.watch(HOLD);
    assert_eq!(
        (lo, hi),
        (want, want),
        "links changed while nothing happened (fewest, most over {HOLD:?}); last sample {last:?}"
    );
    assert!(
        last.iter().all(Result::is_ok),
        "a router stopped answering: {last:?}"
    );
    let dropped = terminations(&last) - terminations(&full);
    let logs: Vec<String> = mesh
        .lab()
        .hosts()
        .map(|h| format!("{}:\n{}", h.name(), tail(&router_log(h), 10)))
        .collect();
    assert_eq!(
        dropped,
        0,
        "connections were terminated (and replaced) during the hold; logs:\n{}",
        logs.join("\n")
    );
    assert_eq!(min_max_links(&last), (want, want));
}
