//! The scale harness at 30 peers (debug build): every figure is produced and plausible.

use meshnet_benches::alloc::{Counting, live_bytes};
use meshnet_benches::scale::{ScaleConfig, run};

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn thirty_peers_give_every_figure_within_sane_bounds() {
    let cfg = ScaleConfig {
        peers: 30,
        ..ScaleConfig::default()
    };
    let f = run(&cfg, live_bytes).unwrap_or_else(|e| panic!("{e}"));
    let lines = f.lines();
    assert_eq!(lines[0], "peers = 30");
    for (line, name) in lines[1..].iter().zip([
        "join_convergence_s",
        "join_bytes_per_peer",
        "router_state_bytes",
        "idle_bytes_per_peer_per_min",
    ]) {
        assert!(line.starts_with(&format!("scale: {name} = ")), "{line}");
    }
    // Links are 1–50 ms: a join takes at least one round trip and, at 30 peers, well under
    // the 5 s goal for 1,000.
    assert!(
        f.join_convergence_s > 0.001 && f.join_convergence_s < 5.0,
        "{f:?}"
    );
    // Some bytes moved (the joiner's records), far less than every peer's full state.
    assert!(
        f.join_bytes_per_peer > 10.0 && f.join_bytes_per_peer < 2048.0,
        "{f:?}"
    );
    // One router's state: more than an empty mesh, far less than a megabyte at 30 peers.
    assert!(
        f.router_state_bytes > 10_000 && f.router_state_bytes < 1 << 20,
        "{f:?}"
    );
    // Idle peers still heartbeat and send digests.
    assert!(
        f.idle_bytes_per_peer_per_min > 10.0 && f.idle_bytes_per_peer_per_min < 100_000.0,
        "{f:?}"
    );
}
